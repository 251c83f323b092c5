"""The health gate of `airgap-install sync` under faults (THREATS 46, 47, issue #24 rows 3-5).

- kill -9 while the gate runs: the gate is recorded as pending before the install, so the
  next sync re-runs it and rolls back on failure (exit 7);
- a yanked release is never returned to by itself: when the release a device went back to
  fails its gate and the only way back is the yanked one, the device stays, says it is
  degraded and every sync exits non-zero until the ring lists something newer;
- a failing gate on a first install: exit 7, recorded as failed, never reported as good.

The health command ``kill -9 $PPID`` kills the installer itself while the gate runs (the
shell's parent is the installer process)."""

import json
from pathlib import Path
from typing import Any, Dict

import pytest

from bundler.repo import ringops
from tests.bundles import KeyDir, cli, default_spec, write_spec
from tests.test_rings_e2e import do_sync, installed, ok

FAIL = ("--health-cmd", "echo not ready >&2; exit 1", "--health-timeout", "0.5",
        "--health-interval", "0.1")
PASS = ("--health-cmd", "true")
KILL = ("--health-cmd", "kill -9 $PPID; sleep 5")


class Ring:
    def __init__(self, tmp_path: Path) -> None:
        self.kd = KeyDir(tmp_path / "keys")
        self.b = tmp_path / "b"
        self.b.mkdir()
        self.repo = tmp_path / "repo"
        ringops.init_repo(self.repo, self.kd.path)
        self.root = tmp_path / "dev"
        ok(cli("trust", self.repo / "metadata" / "1.root.json", "--root", self.root,
               "--ring", "canary"))

    def publish(self, version: str) -> None:
        ringops.publish([write_spec(default_spec(version), self.kd, self.b)],
                        directory=self.repo, keys_dir=self.kd.path, ring="canary")

    def yank(self, version: str) -> None:
        ringops.yank("edge", version, directory=self.repo, keys_dir=self.kd.path,
                     ring="canary", reason="bad")

    def sync(self, *extra: str) -> Any:
        return do_sync(self.root, self.repo, *extra)

    def status(self) -> Dict[str, Any]:
        return json.loads(ok(cli("status", "--root", self.root, "--json")))


@pytest.fixture
def ring(tmp_path: Path) -> Ring:
    return Ring(tmp_path)


def test_kill9_during_the_gate_reruns_it_and_rolls_back(ring: Ring) -> None:
    ring.publish("1.0.0")
    ok(ring.sync("--server", "--skip-start", *PASS))
    ring.publish("2.0.0")
    p = ring.sync(*KILL)
    assert p.returncode == -9, p.stdout + p.stderr
    assert installed(ring.root) == "2.0.0"
    assert "pending" in str(ring.status()["sync"]["result"])
    p = ring.sync(*FAIL)
    assert p.returncode == 7, p.stdout + p.stderr
    assert "rolled back to edge 1.0.0" in p.stderr and "Traceback" not in p.stderr
    assert installed(ring.root) == "1.0.0"
    assert [f["version"] for f in ring.status()["sync"]["failed"]] == ["2.0.0"]
    assert json.loads(ok(ring.sync(*PASS)))["action"] == "up-to-date"


def test_kill9_during_the_gate_then_passing_gate_keeps_the_release(ring: Ring) -> None:
    ring.publish("1.0.0")
    ok(ring.sync("--server", "--skip-start", *PASS))
    ring.publish("2.0.0")
    assert ring.sync(*KILL).returncode == -9
    res = json.loads(ok(ring.sync(*PASS)))
    assert installed(ring.root) == "2.0.0"
    assert res["gate"] == "passed" and res["current"]["version"] == "2.0.0"
    assert "pending" not in str(ring.status()["sync"]["result"])
    assert ring.status()["sync"]["failed"] == []


def test_never_back_to_a_yanked_release_and_degraded_is_non_zero(ring: Ring) -> None:
    ring.publish("1.0.0")
    ok(ring.sync("--server", "--skip-start", *PASS))
    ring.publish("2.0.0")
    ok(ring.sync(*PASS))
    ring.yank("2.0.0")
    p = ring.sync(*FAIL)  # back to 1.0.0, whose gate fails; 2.0.0 is yanked: stay
    assert p.returncode == 7, p.stdout + p.stderr
    assert "degraded" in p.stderr and "yanked" in p.stderr and "Traceback" not in p.stderr
    assert installed(ring.root) == "1.0.0"
    for extra in (FAIL, PASS):
        p = ring.sync(*extra)
        assert p.returncode == 7, p.stdout + p.stderr
        assert "degraded" in p.stderr and "up to date" not in p.stdout + p.stderr
        assert installed(ring.root) == "1.0.0"
    assert "degraded" in str(ring.status()["sync"]["result"])
    ring.publish("3.0.0")  # something newer: the way out
    assert json.loads(ok(ring.sync(*PASS)))["action"] == "installed"
    assert installed(ring.root) == "3.0.0"


def test_failing_gate_on_a_first_install_is_exit_7_and_recorded(ring: Ring) -> None:
    ring.publish("1.0.0")
    p = ring.sync("--server", "--skip-start", *FAIL)
    assert p.returncode == 7, p.stdout + p.stderr
    assert "no previous release" in p.stderr and "Traceback" not in p.stderr
    st = ring.status()
    assert [f["version"] for f in st["sync"]["failed"]] == ["1.0.0"]
    assert "degraded" in str(st["sync"]["result"])
    p = ring.sync(*PASS)
    assert p.returncode == 7 and "degraded" in p.stderr, p.stdout + p.stderr
    assert "up to date" not in p.stdout + p.stderr
