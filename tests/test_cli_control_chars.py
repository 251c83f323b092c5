"""Control characters (newline, NUL, ESC) in option values are refused at the CLI and when
read back from the state; whatever reaches the terminal is escaped (THREATS 52, issue #24
row 11 and "also seen": a ring-signed target name holding a newline)."""

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any, Dict

import pytest

from installer import cli as installer_cli
from installer import errors
from installer.format import canonjson, safetext
from tests.bundles import KeyDir, cli, default_spec, tree, write_spec

AIRGAP = "var/lib/rancher/airgap"
EVIL_URL = "https://10.0.0.1:6443\nK3S_TOKEN=evil"


def test_safetext() -> None:
    assert safetext.escape("a\nb\x1b[31mc\x00\x7f\x85é") == "a\\nb\\x1b[31mc\\x00\\x7f\\x85é"
    assert safetext.control_char("plain text, é") is None
    assert safetext.control_char("a\tb") == "\\t"
    assert safetext.control_char("a\tb", allow="\t") is None
    with pytest.raises(errors.ConfigError, match=r"--url holds a control character \(\\n\)"):
        safetext.check_value(EVIL_URL, what="--url")


@pytest.mark.parametrize("args", [
    ("install", "B", "--agent", "--url", EVIL_URL, "--token-file", "T"),
    ("install", "B", "--server", "--exec=--cluster-init\nK3S_TOKEN=evil"),
    ("install", "B", "--server", "--exec", "--node-name \x1b]0;pwned\x07"),
    ("install", "B", "--agent", "--url", "https://s:6443", "--token-file", "T\nX=1"),
    ("reconfigure", "--exec", "a\x9bb"),
    ("sync", "--source", "S", "--agent", "--url", EVIL_URL, "--token-file", "T"),
    ("sync", "--source", "S\x1b[2J"),
    ("trust", "R", "--ring", "canary\nx"),
])
def test_option_values_with_control_characters_refused(tmp_path: Path, args: tuple) -> None:  # type: ignore[type-arg]
    (tmp_path / "T").write_text("token\n")
    full = [a if a not in ("B", "T", "S", "R") else str(tmp_path / a) for a in args]
    r = cli(*full, "--root", tmp_path / "root", timeout=30)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert "control character" in r.stderr and "Traceback" not in r.stderr
    assert "\x1b" not in r.stderr and "\x00" not in r.stderr
    assert "\nK3S_TOKEN" not in r.stderr and "\nX=1" not in r.stderr
    assert not (tmp_path / "root").exists()


def test_health_cmd_may_span_lines(tmp_path: Path) -> None:
    ns = argparse.Namespace(health_cmd="true\necho ok", url=None, root="/")
    installer_cli.check_args(ns)
    with pytest.raises(errors.ConfigError):
        installer_cli.check_args(argparse.Namespace(health_cmd="a\x1bb"))


def _edit_options(root: Path, **options: Any) -> None:
    for name in ("state.json", "state.json.bak"):
        path = root / AIRGAP / name
        outer = json.loads(path.read_bytes())
        doc: Dict[str, Any] = outer["doc"]
        doc["current"]["options"].update(options)
        outer["sha256"] = hashlib.sha256(canonjson.encode(doc)).hexdigest()
        path.write_bytes(canonjson.encode(outer))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    base = tmp_path_factory.mktemp("ctl")
    keys = KeyDir(base / "keys")
    root = base / "root"
    assert cli("trust", keys.root_json, "--root", root).returncode == 0
    r = cli("install", write_spec(default_spec("1.0.0"), keys, base), "--root", root,
            "--server", "--skip-start")
    assert r.returncode == 0, r.stderr
    return {"root": root, "next": write_spec(default_spec("1.1.0"), keys, base)}


# a raw C0 character never reads back (canonical JSON refuses it: the state is unreadable);
# C1 characters do: NEL (\x85) ends a line for some readers, CSI (\x9b) starts an escape
@pytest.mark.parametrize("field,value", [("url", "https://s:6443\x85K3S_TOKEN=evil"),
                                         ("exec", "--node-name \x9b2J"),
                                         ("token_file", "/t\x7f"), ("exec", 5)])
def test_control_characters_in_recorded_options_refused(installed: Dict[str, Path],
                                                        tmp_path: Path, field: str,
                                                        value: Any) -> None:
    import shutil
    root = tmp_path / "root"
    shutil.copytree(str(installed["root"]), str(root), symlinks=True)
    _edit_options(root, **{field: value})
    before = tree(root)
    for args in (("install", installed["next"], "--skip-start"), ("reconfigure",),
                 ("status",)):
        r = cli(*args, "--root", root, timeout=60)
        assert r.returncode == 3, (args, r.stdout, r.stderr)
        assert "state.json is refused" in r.stderr and "Traceback" not in r.stderr
        assert not any(c in r.stderr for c in "\x1b\x85\x9b\x7f")
        assert tree(root) == before


def test_error_printer_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    e = errors.PolicyRefusal("ring lists edge\n1.0.0\x1b[31m", hint="see\x07 this")
    code = installer_cli._fail(argparse.Namespace(json=False), e)
    err = capsys.readouterr().err
    assert code == 4
    assert err == ("airgap-install: error: ring lists edge\\n1.0.0\\x1b[31m\n"
                   "  hint: see\\x07 this\n")
