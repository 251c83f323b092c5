"""``installer.commands.syncgate`` called in-process (issue #24 mutation run, THREATS 46/47):
the health command loop under a fake clock, the pending gate a killed sync left, the failed
gate's three ends (rolled back; stays on a first install; stays when the way back is yanked)
and the degraded refusal. The installed state and ``install.rollback`` are stand-ins here; the
CLI tests (tests/test_commands_sync_gate.py) run the real ones."""

import dataclasses
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional

import pytest

from installer.commands import syncgate, syncstate
from installer.errors import EnvironmentProblem, HealthGateFailed, PolicyRefusal
from installer.host.layout import Layout
from installer.trust import tufclient
from tests.runlock import lock_held

D1, D2 = "1" * 64, "2" * 64


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    lay = Layout(str(tmp_path))
    syncstate.set_ring(lay, "canary")
    return lay


class FakeTime:
    """``time.monotonic``/``time.sleep`` of a clock that only sleeping advances."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: List[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(round(s, 6))
        assert len(self.sleeps) < 50, "the health loop does not wait between runs"
        self.now += s


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    clock = FakeTime()
    runs: List[float] = []
    outcome = {"done": subprocess.CompletedProcess([], 1, "", "")}

    def run(argv: List[str], **kw: Any) -> "subprocess.CompletedProcess[str]":
        runs.append(round(kw["timeout"], 6))
        return outcome["done"]
    monkeypatch.setattr(syncgate, "time", clock)
    monkeypatch.setattr(syncgate.subprocess, "run", run)
    yield SimpleNamespace(clock=clock, runs=runs, outcome=outcome)


def _health(layout: Layout, cmd: str = "x", timeout: float = 1.0,
            interval: float = 0.3) -> Optional[str]:
    return syncgate.health(layout, cmd, timeout, interval=interval, env_extra={})


# ---------------------------------------------------------------------------- health()

def test_the_health_loop_waits_the_interval_then_the_rest(layout: Layout, fake: Any) -> None:
    fake.outcome["done"] = subprocess.CompletedProcess([], 3, "", "first\nlast line\n")
    assert _health(layout) == "exit 3: last line"
    assert fake.clock.sleeps == [0.3, 0.3, 0.3, 0.1]
    assert fake.runs == [1.0, 0.7, 0.4, 0.1]   # each run gets what is left


def test_a_zero_timeout_never_runs(layout: Layout, fake: Any) -> None:
    assert _health(layout, timeout=0) == "never ran"
    assert fake.runs == []


def test_exit_0_passes_at_once(layout: Layout, fake: Any) -> None:
    fake.outcome["done"] = subprocess.CompletedProcess([], 0, "", "")
    assert _health(layout) is None and fake.clock.sleeps == []


@pytest.mark.parametrize("out,err,want", [("", "", "exit 1"), ("a\nb\n", "", "exit 1: b"),
                                           ("a\n", "c\n", "exit 1: c")])
def test_the_last_failure_names_the_last_line(layout: Layout, fake: Any, out: str, err: str,
                                              want: str) -> None:
    fake.outcome["done"] = subprocess.CompletedProcess([], 1, out, err)
    assert _health(layout) == want


def test_a_command_still_running_at_the_deadline(layout: Layout) -> None:
    assert _health(layout, "sleep 5", timeout=0.3) == "still running after 0.3s"


def test_the_command_sees_the_roots_bin_and_the_gate_env(layout: Layout) -> None:
    bin_dir = Path(layout.root) / "usr/local/bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "gate-check").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "gate-check").chmod(0o755)
    assert _health(layout, "gate-check", timeout=5) is None
    spec = syncgate.GateSpec(cmd='test "$AIRGAP_RING/$AIRGAP_VERSION/$AIRGAP_ROOT" = '
                                 f'"canary/1.0/{layout.root}"', timeout=2, interval=0.1,
                             wait=False)
    assert syncgate.run_gate(layout, spec, ring="canary", version="1.0") is None
    assert syncgate.run_gate(layout, dataclasses.replace(spec, timeout=1, interval=1),
                             ring="stable", version="1.0") == "exit 1"


def test_a_real_failing_command_is_named_by_its_last_line_of_text(layout: Layout) -> None:
    assert _health(layout, "echo one >&2; echo bad >&2; exit 3", timeout=1,
                   interval=1) == "exit 3: bad"


def test_the_gate_spec_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _spec().cmd = "true"  # type: ignore[misc]


def test_pending_gate() -> None:
    entry = tufclient.Entry(path="p", length=1, hashes={"sha256": "s"}, custom={"name": "edge",
                                                                    "version": "2"})
    assert syncgate.pending_gate(entry, D1, yanked=[{"name": "e", "version": "1", "x": 1}],
                                 clock=7) == {
        "digest": D1, "name": "edge", "version": "2", "since": 7,
        "yanked": [{"name": "e", "version": "1"}]}


# ---------------------------------------------------------------------------- the gate states

class Rel:
    def __init__(self, digest: str, version: str) -> None:
        self.digest, self.name, self.version = digest, "edge", version

    def summary(self) -> Dict[str, Any]:
        return {"name": self.name, "version": self.version, "digest": self.digest}


@pytest.fixture
def device(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The installed releases and ``install.rollback`` as stand-ins."""
    dev = SimpleNamespace(current=Rel(D2, "2.0"), previous=Rel(D1, "1.0"), rolled=[])

    def rollback(layout: Layout, *, wait: bool, report: Any) -> Any:
        dev.rolled.append(wait)
        return SimpleNamespace(current=dev.previous.summary())
    monkeypatch.setattr(syncgate, "load_state", lambda layout: (dev, None))
    monkeypatch.setattr(syncgate.install, "rollback", rollback)
    return dev


def _gate(**changes: Any) -> Dict[str, Any]:
    return dict({"digest": D2, "name": "edge", "version": "2.0", "since": 1, "yanked": []},
                **changes)


def _spec(cmd: str = "exit 1", wait: bool = False, timeout: float = 0.2) -> syncgate.GateSpec:
    return syncgate.GateSpec(cmd=cmd, timeout=timeout, interval=timeout, wait=wait)


@pytest.fixture
def held(layout: Layout) -> Iterator[None]:
    """The run lock held by someone else for 0.3 s."""
    with lock_held(layout.lock, release_after=0.3):
        yield


def test_no_pending_gate_is_nothing_to_resume(layout: Layout, device: Any) -> None:
    syncstate.save_record(layout, {"ratchet": 0, "failed": [], "result": "r"})
    assert syncgate.resume_gate(layout, _spec(), report=print, clock=5) is None
    assert syncstate.read_record(layout)["result"] == "r"


@pytest.mark.parametrize("current", [None, Rel(D1, "1.0")])
def test_a_pending_gate_of_an_install_that_never_committed_is_dropped(
        layout: Layout, device: Any, current: Any) -> None:
    device.current = current
    syncstate.save_record(layout, {"ratchet": 0, "failed": [], "pending": _gate()})
    assert syncgate.resume_gate(layout, _spec(), report=print, clock=5) is None
    assert "pending" not in syncstate.read_record(layout)


def test_an_interrupted_gate_that_passes_keeps_the_release(layout: Layout,
                                                            device: Any) -> None:
    syncstate.save_record(layout, {"ratchet": 0, "failed": [], "pending": _gate(),
                                   "metadata": {"t": {"version": 1, "expires": 2}},
                                   "override": {"v": 1}})
    said: List[str] = []
    got = syncgate.resume_gate(layout, _spec("true", timeout=5), report=said.append, clock=5)
    assert got is not None and got.to_json() == {
        "action": "installed", "ring": "canary", "gate": "passed",
        "reason": "the interrupted health gate of edge 2.0 passed",
        "current": device.current.summary(), "previous": None,
        "metadata": {"t": {"version": 1, "expires": 2}}, "override": {"v": 1}}
    assert said == ["the health gate of edge 2.0 was interrupted: running it again"]
    record = syncstate.read_record(layout)
    assert "pending" not in record and "passed" in record["result"] and not device.rolled


def test_an_interrupted_gate_that_fails_rolls_back(layout: Layout, device: Any) -> None:
    syncstate.save_record(layout, {"ratchet": 0, "failed": [], "pending": _gate()})
    with pytest.raises(HealthGateFailed, match="rolled back to edge 1.0"):
        syncgate.resume_gate(layout, _spec("exit 4", timeout=1), report=print, clock=5)
    assert device.rolled == [False]
    record = syncstate.read_record(layout)
    assert record["failed"] == [{"digest": D2, "name": "edge", "version": "2.0", "at": 5,
                                 "why": "exit 4"}]
    assert "pending" not in record and record["result"].endswith("failed; rolled back")


def test_a_gate_that_failed_before_the_kill_is_not_run_again(layout: Layout,
                                                              device: Any) -> None:
    old = {"digest": D2, "name": "edge", "version": "2.0", "at": 1, "why": "first"}
    other = dict(old, digest=D1, why="other release")
    syncstate.save_record(layout, {"ratchet": 0, "pending": _gate(),
                                   "failed": [old, dict(old, why="second"), other]})
    said: List[str] = []
    with pytest.raises(HealthGateFailed, match=r"\(second\)"):
        syncgate.resume_gate(layout, _spec("true"), report=said.append, clock=9)
    assert not any("interrupted" in s for s in said)
    record = syncstate.read_record(layout)
    assert record["failed"] == [other, dict(old, at=9, why="second")]


def test_resume_waits_for_the_lock_when_asked(layout: Layout, device: Any,
                                              held: None) -> None:
    syncstate.save_record(layout, {"ratchet": 0, "failed": []})
    assert syncgate.resume_gate(layout, _spec(wait=True), report=print, clock=5) is None


def test_gate_failed_waits_for_the_lock(layout: Layout, device: Any, held: None) -> None:
    syncstate.save_record(layout, {"ratchet": 0, "failed": [], "pending": _gate()})
    with pytest.raises(HealthGateFailed, match="after 0.2s \\(bad\\); rolled back"):
        syncgate.gate_failed(layout, _spec(), _gate(), failure="bad", report=print, clock=3)


def test_resume_without_wait_refuses_a_held_lock(layout: Layout, device: Any) -> None:
    with lock_held(layout.lock), pytest.raises(EnvironmentProblem):
        syncgate.resume_gate(layout, _spec(), report=print, clock=5)


def test_a_first_install_whose_gate_fails_stays_degraded(layout: Layout,
                                                          device: Any) -> None:
    device.previous = None
    syncstate.save_record(layout, {"ratchet": 0, "failed": [], "pending": _gate()})
    with pytest.raises(HealthGateFailed, match="no previous release") as e:
        syncgate.gate_failed(layout, _spec(), _gate(), failure="bad", report=print, clock=3)
    assert e.value.exit_code == 7 and not device.rolled
    record = syncstate.read_record(layout)
    assert record["result"].startswith("degraded: edge 2.0 failed") and "pending" not in record
    assert [f["digest"] for f in record["failed"]] == [D2]


def test_never_back_onto_a_yanked_release(layout: Layout, device: Any) -> None:
    gate = _gate(yanked=[{"name": "edge", "version": "1.0"}])
    syncstate.save_record(layout, {"ratchet": 0, "failed": [], "pending": gate})
    with pytest.raises(HealthGateFailed, match="previous release edge 1.0 is yanked"):
        syncgate.gate_failed(layout, _spec(), gate, failure="bad", report=print, clock=3)
    assert not device.rolled
    assert "degraded" in syncstate.read_record(layout)["result"]


def test_a_yanked_other_version_does_not_stop_the_rollback(layout: Layout,
                                                            device: Any) -> None:
    gate = _gate(yanked=[{"name": "edge", "version": "0.9"}])
    syncstate.save_record(layout, {"ratchet": 0, "failed": [], "pending": gate})
    with pytest.raises(HealthGateFailed, match="rolled back"):
        syncgate.gate_failed(layout, _spec(wait=True), gate, failure="bad", report=print,
                             clock=3)
    assert device.rolled == [True]


# ---------------------------------------------------------------------------- refuse_degraded

def _record(*failed: str) -> Dict[str, Any]:
    return {"ratchet": 0, "result": "up to date",
            "failed": [{"digest": d, "name": "edge", "version": "x", "at": 1, "why": w}
                       for d, w in zip(failed, ("one", "two", "three"), strict=False)]}


def test_nothing_installed_or_nothing_wrong_is_not_degraded(layout: Layout) -> None:
    syncgate.refuse_degraded(layout, _record(D1), None, yanked=[])
    syncgate.refuse_degraded(layout, _record(D1), Rel(D2, "2.0"),
                             yanked=[{"name": "edge", "version": "1.0"}])
    assert not os.path.exists(os.path.join(syncstate.tuf_dir(layout), "sync.json"))


def test_a_failed_current_release_is_degraded_exit_7(layout: Layout) -> None:
    with pytest.raises(HealthGateFailed, match=r"edge 2.0 failed its health check \(two\)"):
        syncgate.refuse_degraded(layout, _record(D2, D2, D1), Rel(D2, "2.0"), yanked=[])
    assert syncstate.read_record(layout)["result"].startswith("degraded: edge 2.0 failed")


def test_a_yanked_current_release_is_degraded(layout: Layout) -> None:
    with pytest.raises(PolicyRefusal, match="edge 2.0 is yanked"):
        syncgate.refuse_degraded(layout, _record(D1), Rel(D2, "2.0"),
                                 yanked=[{"name": "edge", "version": "2.0"}])
    assert syncstate.read_record(layout)["result"] == "degraded: edge 2.0 is yanked"
