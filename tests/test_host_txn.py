"""The install transaction (installer/host/txn.py): install.sh output, failure and restore,
recovery, timeouts.

Moved unchanged from test_installer_gaps.py / test_installer_mutants.py."""

import json
import os
from pathlib import Path
from typing import Any, Dict

import pytest

from installer.host.layout import (
    Layout,
)
from tests.bundles import KeyDir, cli, default_spec, installed_host, write_spec

_SPEC11 = default_spec("1.1.0")


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture
def host(tmp_path: Path, keydir: KeyDir) -> Dict[str, Any]:
    return installed_host(tmp_path, keydir)


def test_install_sh_output_goes_to_stderr_so_json_stays_clean(host: Dict[str, Any],
                                                              keydir: KeyDir) -> None:
    """txn.py line 79 (``output is not None`` -> ``is None``): install.sh's own output goes to
    stderr, so ``--json`` leaves exactly one JSON object on stdout (the stand-in writes its
    record to its stdout here)."""
    r = cli("install", write_spec(_SPEC11, keydir, host["tmp"]), "--root", host["root"],
            "--skip-start", "--json", env={"AIRGAP_TEST_RECORD": "/dev/stdout"})
    assert r.returncode == 0, r.stderr
    assert "--- " in r.stderr and "INSTALL_K3S_EXEC=server" in r.stderr
    assert json.loads(r.stdout)["current"]["version"] == "1.1.0"


def test_failed_upgrade_runs_the_old_install_sh_again(host: Dict[str, Any],
                                                      keydir: KeyDir) -> None:
    """txn.py line 140 (``old is not None`` -> ``is None``): when the new install.sh fails,
    the files are put back AND the old release's install.sh is run again, so its service
    settings are the old ones (here the stand-in records both runs)."""
    record = host["tmp"] / "record"
    r = cli("install", write_spec(_SPEC11, keydir, host["tmp"]), "--root", host["root"],
            "--skip-start", env={"AIRGAP_TEST_SCRIPT_FAIL": "1", "AIRGAP_TEST_RECORD": str(record)})
    assert r.returncode == 6, r.stderr
    assert "running install.sh of edge 1.0.0 again" in r.stderr
    runs = [line for line in record.read_text().splitlines() if line.startswith("--- ")]
    assert runs == ["--- edge 1.1.0", "--- edge 1.0.0"]


def test_failed_first_install_sh_is_a_clear_error(tmp_path: Path, keydir: KeyDir) -> None:
    """txn.py line 140 the other way: with no installed release nothing is re-run, and the
    failure is exit 6 without a traceback, nothing installed."""
    root = tmp_path / "root"
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    r = cli("install", write_spec(default_spec("1.0.0"), keydir, tmp_path), "--root", root,
            "--skip-start", "--server", env={"AIRGAP_TEST_SCRIPT_FAIL": "1"})
    assert r.returncode == 6, r.stderr
    assert "Traceback" not in r.stderr and "again" not in r.stderr
    assert json.loads(cli("status", "--root", root, "--json").stdout)["installed"] is None


def test_recovery_of_a_committed_change_only_cleans_up(host: Dict[str, Any],
                                                       keydir: KeyDir) -> None:
    """txn.py line 242 (``is not None`` -> ``is None``; ``==`` -> ``!=``): killed after the
    state commit, recovery sees the change committed and only cleans up: install.sh is not
    run a second time."""
    record = host["tmp"] / "record"
    r = cli("install", write_spec(_SPEC11, keydir, host["tmp"]), "--root", host["root"],
            "--skip-start", env={"AIRGAP_INSTALL_FAILPOINT": "after-state:kill",
                                 "AIRGAP_TEST_RECORD": str(record)})
    assert r.returncode == -9, r.stderr
    r = cli("recover", "--root", host["root"], env={"AIRGAP_TEST_RECORD": str(record)})
    assert r.returncode == 0, r.stderr
    assert "cleaned up after the committed install of edge 1.1.0" in r.stdout + r.stderr
    runs = [line for line in record.read_text().splitlines() if line.startswith("--- ")]
    assert runs == ["--- edge 1.1.0"]


def test_txn_install_sh_past_its_timeout_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """txn.py line 86 (``raise`` -> ``pass`` on ``TimeoutExpired``): an install.sh that
    outlives the timeout is an EnvironmentProblem naming the release and the limit, not an
    UnboundLocalError. The real script runs; only the limit is shortened (3600 s -> 1 s)."""
    from types import SimpleNamespace

    from installer import errors
    from installer.host import txn
    layout = Layout(root=str(tmp_path))
    digest = "a" * 64
    script = Path(layout.release_file(digest, "bin/install.sh"))
    script.parent.mkdir(parents=True)
    script.write_text("sleep 30\n")
    release = SimpleNamespace(digest=digest, name="edge", version="1.0.0", role="server",
                              script=SimpleNamespace(member="bin/install.sh"),
                              options=SimpleNamespace(exec_args="", url=None, token_file=None,
                                                      skip_start=True))
    monkeypatch.setattr(txn, "SCRIPT_TIMEOUT", 1)
    with open(os.devnull, "w") as sink, \
            pytest.raises(errors.EnvironmentProblem, match="did not finish in 1 s"):
        txn.run_script(layout, release, sink)  # type: ignore[arg-type]
