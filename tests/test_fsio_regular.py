"""One regular-file opener (``installer.fsio.open_regular``) for everything the installer
reads (THREATS 50, issue #24 row 10): a FIFO, a device or a folder where a state file, the
journal, the trust anchor or a credentials file should be is refused at once, never waited
on."""

import json
import os
import shutil
from pathlib import Path

import pytest

from installer import errors, fsio
from tests.bundles import KeyDir, cli, default_spec, write_spec

AIRGAP = "var/lib/rancher/airgap"


def test_read_regular(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"0123456789")
    assert fsio.read_regular(str(tmp_path / "f"), what="x", limit=4) == b"0123"
    assert fsio.read_regular(str(tmp_path / "none"), what="x", limit=4) is None
    os.mkfifo(tmp_path / "fifo")
    for bad in ("fifo", ""):
        with pytest.raises(errors.ConfigError, match="not a regular file") as e:
            fsio.read_regular(str(tmp_path / bad), what="state file", limit=4, hint="H")
        assert e.value.hint == "H"
    with pytest.raises(FileNotFoundError):
        fsio.open_regular(str(tmp_path / "none"), what="x", must_exist=False)
    with pytest.raises(errors.ConfigError, match="does not exist"):
        fsio.open_regular(str(tmp_path / "none"), what="x")
    with pytest.raises(errors.ConfigError, match="a device"):
        fsio.open_regular("/dev/zero", what="x")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("fifo")
    keys = KeyDir(base / "keys")
    root = base / "root"
    assert cli("trust", keys.root_json, "--root", root).returncode == 0
    r = cli("install", write_spec(default_spec("1.0.0"), keys, base), "--root", root,
            "--server", "--skip-start")
    assert r.returncode == 0, r.stderr
    return root


def _copy(installed: Path, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(str(installed), str(root), symlinks=True)
    return root


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def test_state_copy_as_fifo_uses_the_other(installed: Path, tmp_path: Path) -> None:
    root = _copy(installed, tmp_path)
    _fifo(root / AIRGAP / "state.json")
    r = cli("status", "--root", root, "--json", timeout=20)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["installed"]["version"] == "1.0.0"


@pytest.mark.parametrize("command", [("status",), ("status", "--verify"), ("rollback",),
                                     ("recover",)])
def test_both_state_copies_fifos_refused_at_once(installed: Path, tmp_path: Path,
                                                 command: tuple) -> None:  # type: ignore[type-arg]
    root = _copy(installed, tmp_path)
    _fifo(root / AIRGAP / "state.json")
    _fifo(root / AIRGAP / "state.json.bak")
    r = cli(*command, "--root", root, timeout=20)
    assert r.returncode == 6, r.stdout + r.stderr
    assert "unreadable" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("is a FIFO, not a regular file") == 2, r.stderr  # says why, per copy


def test_trust_anchor_fifo_refused_at_once(installed: Path, tmp_path: Path) -> None:
    root = _copy(installed, tmp_path)
    _fifo(root / "etc/rancher/airgap/root.json")
    bundle = next(installed.parent.glob("*.tar"))
    r = cli("install", bundle, "--root", root, "--skip-start", timeout=20)
    assert r.returncode == 2 and "FIFO" in r.stderr, r.stdout + r.stderr
    assert cli("status", "--root", root, timeout=20).returncode == 0


def test_credentials_file_fifo_refused_before_any_connection(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "creds")
    r = cli("sync", "--source", "oci://127.0.0.1:9/rings/x", "--root", tmp_path / "root",
            "--credentials-file", tmp_path / "creds", timeout=20)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "FIFO" in r.stderr and "Traceback" not in r.stderr
