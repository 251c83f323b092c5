"""Operator-facing installer behaviour (issue #10 defects 3 and 5, `--json` errors, help,
progress, change summary) and fast device starts (issue #15: K3s's import cache, archives named
by content, old archives removed only after the commit)."""

import ast
import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import List

import pytest

from installer import errors, zipapp
from installer.trust import rootmeta
from tests.bundles import (
    REPO,
    KeyDir,
    cli,
    default_spec,
    live,
    live_image,
    popen,
    wait_stopped,
    write_sparse_bundle,
    write_spec,
)

IMAGES = "var/lib/rancher/k3s/agent/images"


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture
def host(tmp_path: Path, keydir: KeyDir) -> Path:
    root = tmp_path / "root"
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    return root


def _fp(path: Path) -> str:
    return rootmeta.root_fingerprint(rootmeta.parse_root(path.read_bytes()))


# ---------------------------------------------------------------------------- #10 defect 5


def test_root_fingerprint_in_trust_status_and_signature_errors(tmp_path: Path, keydir: KeyDir,
                                                               host: Path) -> None:
    mine = _fp(keydir.root_json)
    assert len(mine) == 12 and int(mine, 16) >= 0
    doc = json.loads(keydir.root_json.read_bytes())  # whitespace does not change it
    assert rootmeta.root_fingerprint(rootmeta.parse_root(json.dumps(doc).encode())) == mine
    r = cli("trust", keydir.root_json, "--root", host)
    assert r.returncode == 0 and f"fingerprint {mine}" in r.stdout
    st = json.loads(cli("status", "--root", host, "--json").stdout)
    assert st["trust_root_fingerprint"] == mine
    assert f"fingerprint {mine}" in cli("status", "--root", host).stdout
    other = KeyDir(tmp_path / "other")
    theirs = _fp(other.root_json)
    assert theirs != mine
    r = cli("install", write_spec(default_spec(), other, tmp_path), "--root", host, "--server")
    assert r.returncode == 3
    assert f"signed for root {theirs}, this host trusts {mine}" in r.stderr, r.stderr
    r = cli("trust", other.root_json, "--root", host)
    assert r.returncode == 2 and mine in r.stderr and theirs in r.stderr


# ---------------------------------------------------------------------------- --json errors


def test_json_errors_are_one_documented_object(tmp_path: Path, keydir: KeyDir,
                                               host: Path) -> None:
    def err(*args: object) -> dict:
        r = cli(*args, "--json")
        body = json.loads(r.stdout)
        assert set(body) == {"error"}
        assert set(body["error"]) == {"code", "kind", "message", "hint"}
        assert body["error"]["code"] == r.returncode
        return body["error"]  # type: ignore[no-any-return]

    e = err("install", tmp_path / "missing.tar", "--root", host)
    assert (e["code"], e["kind"]) == (2, "ConfigError") and "missing.tar" in e["message"]
    e = err("install", "--no-such-flag", "x", "--root", host)
    assert (e["code"], e["kind"]) == (2, "UsageError") and "--no-such-flag" in e["message"]
    other = KeyDir(tmp_path / "other")
    e = err("verify", write_spec(default_spec(), other, tmp_path), "--root", host)
    assert (e["code"], e["kind"]) == (3, "SignatureError") and "this host trusts" in e["message"]
    e = err("rollback", "--root", host)
    assert e["code"] == 2 and e["hint"]
    doc = (REPO / "docs" / "exit-codes.md").read_text()
    assert '{"error": {"code": 3, "kind": "SignatureError"' in doc


def test_help_lists_every_exit_code() -> None:
    r = cli("--help")
    assert r.returncode == 0
    for code, meaning in errors.EXIT_CODES.items():
        assert f"{code}  {meaning}" in r.stdout, (code, r.stdout)
    assert "reconfigure" in r.stdout


# ---------------------------------------------------------------------------- #10 defect 3


def _interpreter(version: str) -> str:
    for base in (Path.home() / ".pyenv" / "versions", Path("/root/.pyenv/versions")):
        for p in sorted(base.glob(version + ".*/bin/python" + version.split(".")[0])):
            return str(p)
    pytest.skip(f"no Python {version} on this machine")


@pytest.mark.parametrize("version", ["2.7", "3.6", "3.7"])
def test_zipapp_on_old_python_says_which_version(tmp_path: Path, version: str) -> None:
    """A real old interpreter runs the .pyz (and ``-m installer``): one sentence, exit 6."""
    python = _interpreter(version)
    pyz = tmp_path / "airgap-install.pyz"
    zipapp.build_zipapp(str(pyz))
    for args, env in (([str(pyz), "status"], {}),
                      (["-m", "installer", "--version"], {"PYTHONPATH": str(REPO)})):
        r = subprocess.run([python] + args, capture_output=True, text=True, cwd=str(tmp_path),
                           env={"PATH": os.environ["PATH"], **env}, timeout=60)
        assert r.returncode == errors.EnvironmentProblem.exit_code == 6, r.stderr
        assert r.stderr.startswith(
            f"airgap-install: needs Python 3.8 or newer (found {version}."), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr


def test_entry_points_parse_on_old_grammar() -> None:
    """The gate itself uses nothing newer than Python 2.7/3.0 can parse: no f-strings, no
    annotations, no imports of the package before the check."""
    for source in (zipapp.VERSION_GATE.decode(), (REPO / "installer" / "__main__.py").read_text()):
        tree = ast.parse(source, feature_version=(3, 4))
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.JoinedStr, ast.AnnAssign))]
        first_if = next(i for i, n in enumerate(tree.body) if isinstance(n, ast.If))
        before = tree.body[:first_if]
        assert all(isinstance(n, (ast.Import, ast.Expr)) for n in before)


# ---------------------------------------------------------------------------- progress, plan


def test_meter_emits_a_line_every_few_percent() -> None:
    from installer.commands.progress import Meter
    seen: List[str] = []
    ticks = iter(range(100))
    m = Meter(1000, "copied", seen.append, step=25, clock=lambda: float(next(ticks)))
    for _ in range(10):
        m(100)
    assert [s.split(" (")[0] for s in seen] == ["copied 25%", "copied 50%", "copied 75%",
                                                "copied 100%"]
    assert "1000 B of 1000 B" in seen[-1]


def test_install_progress_on_stderr_off_with_json_or_quiet(tmp_path: Path, keydir: KeyDir,
                                                           host: Path) -> None:
    big = write_sparse_bundle(default_spec("1.0.0"), keydir, tmp_path / "edge-1.0.0-amd64.tar",
                              big_name="big.tar", big_size=80 << 20)
    r = cli("verify", big, "--root", host)
    lines = [x for x in r.stderr.splitlines() if "verified " in x and "%" in x]
    assert r.returncode == 0 and len(lines) >= 10 and "verified 100%" in lines[-1], r.stderr
    r = cli("install", big, "--root", host, "--server", "--skip-start")
    assert r.returncode == 0, r.stderr
    copied = [x for x in r.stderr.splitlines() if "copied " in x and "%" in x]
    assert len(copied) >= 10 and "copied 100%" in copied[-1]
    for flag in ("--json", "--quiet"):
        r = cli("verify", big, "--root", host, flag)
        assert r.returncode == 0 and "%" not in r.stderr, r.stderr


def test_change_summary_before_placing(tmp_path: Path, keydir: KeyDir, host: Path) -> None:
    v1 = default_spec("1.0.0")
    v2 = default_spec("1.1.0", k3s_version="v1.34.1+k3s1")
    assert cli("install", write_spec(v1, keydir, tmp_path), "--root", host, "--server",
               "--skip-start").returncode == 0
    r = cli("install", write_spec(v2, keydir, tmp_path), "--root", host, "--json")
    assert r.returncode == 0, r.stderr
    err = r.stderr
    assert "change: K3s v1.33.5+k3s1 -> v1.34.1+k3s1" in err
    assert err.index("change: K3s") < err.index("placing bundle")
    new_app = live_image("app-1.1.0.tar", v2.images["app-1.1.0.tar"]).rsplit("/", 1)[1]
    old_app = live_image("app-1.0.0.tar", v1.images["app-1.0.0.tar"]).rsplit("/", 1)[1]
    assert f"+ {new_app}; - {old_app}; 1 unchanged" in err
    assert "+ demo-1.1.0.tgz; - demo-1.0.0.tgz" in err and "~ demo.yaml" in err
    plan = json.loads(r.stdout)["changes"]
    assert plan["k3s"] == {"old": "v1.33.5+k3s1", "new": "v1.34.1+k3s1"}
    assert plan["images"]["added"] == [new_app] and plan["images"]["removed"] == [old_app]
    assert plan["manifests"]["replaced"] == ["demo.yaml"]


# ---------------------------------------------------------------------------- #15 device start


def test_import_cache_opt_in_created_never_edited(tmp_path: Path, keydir: KeyDir,
                                                  host: Path) -> None:
    assert cli("install", write_spec(default_spec("1.0.0"), keydir, tmp_path), "--root", host,
               "--server", "--skip-start").returncode == 0
    cache = host / IMAGES / ".cache.json"
    assert cache.read_bytes() == b"{}" and json.loads(cache.read_bytes()) == {}
    k3s_wrote = json.dumps({str(host / IMAGES / "x.tar"): {
        "size": 3, "modTime": "2026-06-23T18:05:52Z", "images": ["docker.io/library/x:1"]}})
    cache.write_text(k3s_wrote)  # K3s's entries
    assert cli("install", write_spec(default_spec("1.1.0"), keydir, tmp_path), "--root", host,
               "--skip-start").returncode == 0
    assert cli("rollback", "--root", host).returncode == 0
    assert cache.read_text() == k3s_wrote
    st = json.loads(cli("status", "--root", host, "--json").stdout)
    assert st["foreign_images"] == []  # dotfiles are not archives


def test_replaced_archive_of_same_size_gets_a_new_name(tmp_path: Path, keydir: KeyDir,
                                                       host: Path) -> None:
    """k3s#14284: K3s 1.34.3 misses a replaced archive of the same size. Named by content, a
    new archive is a new file; an unchanged one keeps its name and inode (no re-import)."""
    shared = b"shared images " * 300
    a = default_spec("1.0.0", images={"edge-images-amd64.tar": b"A" * 4096,
                                      "k3s-airgap-images-amd64.tar.zst": shared})
    b = default_spec("1.1.0", images={"edge-images-amd64.tar": b"B" * 4096,
                                      "k3s-airgap-images-amd64.tar.zst": shared})
    assert cli("install", write_spec(a, keydir, tmp_path), "--root", host, "--server",
               "--skip-start").returncode == 0
    old_name = host / live_image("edge-images-amd64.tar", b"A" * 4096)
    kept = host / live_image("k3s-airgap-images-amd64.tar.zst", shared)
    assert old_name.name == "edge-images-amd64-" + hashlib.sha256(b"A" * 4096).hexdigest()[:12] \
        + ".tar"
    inode = kept.stat().st_ino
    assert cli("install", write_spec(b, keydir, tmp_path), "--root", host).returncode == 0
    new_name = host / live_image("edge-images-amd64.tar", b"B" * 4096)
    assert new_name.read_bytes() == b"B" * 4096 and new_name.name != old_name.name
    assert not old_name.exists()
    assert kept.stat().st_ino == inode
    assert sorted(p.name for p in (host / IMAGES).iterdir()) == sorted(
        [".cache.json", new_name.name, kept.name])


def test_old_archives_removed_only_after_commit(tmp_path: Path, keydir: KeyDir,
                                                host: Path) -> None:
    v1, v2 = default_spec("1.0.0"), default_spec("1.1.0")
    assert cli("install", write_spec(v1, keydir, tmp_path), "--root", host, "--server",
               "--skip-start").returncode == 0
    old_app = host / live_image("app-1.0.0.tar", v1.images["app-1.0.0.tar"])
    new_app = host / live_image("app-1.1.0.tar", v2.images["app-1.1.0.tar"])
    b2 = write_spec(v2, keydir, tmp_path)
    proc = popen("install", b2, "--root", host, "--skip-start",
                 env={"AIRGAP_INSTALL_FAILPOINT": "after-install-sh:stop"})
    try:
        wait_stopped(proc)
        assert old_app.exists() and new_app.exists()  # not committed yet: both there
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert not old_app.exists() and new_app.exists()
    # killed after the commit, before the removal: the next run finishes it
    r = cli("rollback", "--root", host, env={"AIRGAP_INSTALL_FAILPOINT": "after-state"})
    assert r.returncode == -9
    assert old_app.exists() and new_app.exists()
    assert cli("recover", "--root", host).returncode == 0
    assert old_app.exists() and not new_app.exists()
    st = json.loads(cli("status", "--root", host, "--json").stdout)
    assert st["installed"]["version"] == "1.0.0" and st["pending"] is None
    assert live_image("app-1.0.0.tar", v1.images["app-1.0.0.tar"]) in live(host)


def test_install_sh_failure_keeps_old_archives_untouched(tmp_path: Path, keydir: KeyDir,
                                                         host: Path) -> None:
    v1 = default_spec("1.0.0")
    assert cli("install", write_spec(v1, keydir, tmp_path), "--root", host, "--server",
               "--skip-start").returncode == 0
    old_app = host / live_image("app-1.0.0.tar", v1.images["app-1.0.0.tar"])
    inode = old_app.stat().st_ino
    before = live(host)
    r = cli("install", write_spec(default_spec("1.1.0"), keydir, tmp_path), "--root", host,
            env={"AIRGAP_TEST_SCRIPT_FAIL": "1"})
    assert r.returncode == 6
    assert live(host) == before and old_app.stat().st_ino == inode


def test_internal_error_is_the_same_json_object(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    """A bug (any unexpected exception) still gives one JSON object, code 1, with --json."""
    from installer import cli as installer_cli
    from installer.commands import install

    def broken(layout: object, **_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(install, "status", broken)
    code = installer_cli.main(["status", "--root", str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" in err
    assert json.loads(out) == {"error": {"code": 1, "kind": "InternalError",
                                         "message": "RuntimeError: boom",
                                         "hint": "please report it with the output on stderr"}}
