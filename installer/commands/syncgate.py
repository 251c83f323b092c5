"""The health gate of ``airgap-install sync`` under faults (THREATS 46, 47).

A gate is recorded as pending in the sync record before the install starts: if the installer
dies before the gate passed, the next sync finds the pending release still installed and
re-runs its gate first (``resume_gate``). On failure the release is recorded as failed, then
rolled back, unless the way back is a yanked release or there is none (a first install): then
it stays and every later sync says the device is degraded (exit 7, ``refuse_degraded``) until
the ring lists something newer.
"""

import os
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, NoReturn, Optional

from installer.commands import install, syncstate
from installer.commands.results import Synced
from installer.errors import HealthGateFailed, InstallerError, PolicyRefusal
from installer.host.layout import Layout
from installer.host.state import RunLock, load_state
from installer.trust import rings, tufclient

Report = Callable[[str], None]


@dataclass(frozen=True)


class GateSpec:
    """The health command and how long to give it (``sync --health-cmd/--health-timeout``)."""

    cmd: str
    timeout: float
    interval: float
    wait: bool


DEFAULT_HEALTH = ("k3s kubectl get --raw=/readyz && k3s kubectl -n kube-system wait "
                  "--for=condition=Available deployment --all --timeout=30s")


def health(layout: Layout, cmd: str, timeout: float, *, interval: float,
            env_extra: Dict[str, str]) -> Optional[str]:
    """Run ``cmd`` until it exits 0 (None) or ``timeout`` passes (the last failure)."""
    env = dict(os.environ)
    env["PATH"] = layout.path("usr/local/bin") + os.pathsep + env.get("PATH", "")
    env.update(env_extra)
    deadline = time.monotonic() + timeout
    last = "never ran"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return last
        try:
            done = subprocess.run(["/bin/sh", "-c", cmd], env=env, capture_output=True,
                                  text=True, timeout=left)
            if done.returncode == 0:
                return None
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            last = f"exit {done.returncode}" + (f": {tail[0]}" if tail else "")
        except subprocess.TimeoutExpired:
            return f"still running after {timeout:g}s"
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


def pending_gate(entry: tufclient.Entry, digest: str, *, yanked: Any,
                 clock: int) -> Dict[str, Any]:
    return {"digest": digest, "name": str(entry.custom.get("name")),
            "version": str(entry.custom.get("version")), "since": clock,
            "yanked": [{"name": str(y.get("name")), "version": str(y.get("version"))}
                       for y in yanked]}


def run_gate(layout: Layout, spec: GateSpec, *, ring: str, version: str) -> Optional[str]:
    return health(layout, spec.cmd, spec.timeout,
                   interval=spec.interval,
                   env_extra={"AIRGAP_RING": ring, "AIRGAP_VERSION": version,
                              "AIRGAP_ROOT": layout.root})


def resume_gate(layout: Layout, spec: GateSpec, *, report: Report,
                 clock: int) -> Optional[Synced]:
    """Re-run the gate a killed sync left pending; None when there is none."""
    with RunLock(layout, wait=spec.wait):
        record = syncstate.read_record(layout)
        gate = record.get("pending")
        if gate is None:
            return None
        cur = load_state(layout)[0].current
        if cur is None or cur.digest != gate["digest"]:
            record.pop("pending")  # the install it guarded never committed
            syncstate.save_record(layout, record)
            return None
        cfg = syncstate.read_config(layout)
    label = f"{gate['name']} {gate['version']}"
    failed = [f for f in record["failed"] if f.get("digest") == gate["digest"]]
    if failed:  # failed before the kill: finish what that run started
        failure: Optional[str] = str(failed[-1].get("why"))
    else:
        report(f"the health gate of {label} was interrupted: running it again")
        failure = run_gate(layout, spec, ring=cfg["ring"], version=gate["version"])
    if failure is None:
        syncstate.note_result(layout, f"installed {label} (its interrupted health gate passed)",
              clear_pending=True)
        return Synced(action="installed", ring=cfg["ring"], gate="passed",
                      reason=f"the interrupted health gate of {label} passed",
                      current=cur.summary(), metadata=record.get("metadata") or {},
                      override=record.get("override"))
    gate_failed(layout, spec, gate, failure=failure, report=report, clock=clock)


def gate_failed(layout: Layout, spec: GateSpec, gate: Dict[str, Any], *, failure: str,
                report: Report, clock: int) -> NoReturn:
    """Record the release as failed, then roll back unless the way back is yanked or
    there is none: then stay, degraded. Either way exit 7."""
    label = f"{gate['name']} {gate['version']}"
    with RunLock(layout, wait=True):
        record = syncstate.read_record(layout)
        record["failed"] = [f for f in record["failed"] if f.get("digest") != gate["digest"]]
        record["failed"].append({"digest": gate["digest"], "name": gate["name"],
                                 "version": gate["version"], "at": clock, "why": failure})
        record["result"] = f"health check of {label} failed"
        syncstate.save_record(layout, record)
        prev = load_state(layout)[0].previous
    stay = None
    if prev is None:
        stay = "there is no previous release to go back to"
    elif rings.is_yanked(gate.get("yanked", []), prev.name, prev.version):
        stay = f"the previous release {prev.name} {prev.version} is yanked"
    if stay is not None:
        syncstate.note_result(
            layout, f"degraded: {label} failed its health check and stays ({stay})",
            clear_pending=True)
        raise HealthGateFailed(
            f"health check of {label} failed ({failure}); not rolled back: {stay}; this "
            "device is degraded until the ring lists something newer",
            hint="fix the release and publish a newer version, or install a good bundle "
                 "by hand with `airgap-install install`")
    report(f"health check of {label} failed ({failure}): rolling back")
    back = install.rollback(layout, wait=spec.wait, report=report)
    syncstate.note_result(layout, f"health check of {label} failed; rolled back",
                          clear_pending=True)
    raise HealthGateFailed(
        f"health check of {label} failed after {spec.timeout:g}s ({failure}); rolled "
        f"back to {back.current['name']} {back.current['version']}; {label} will not be "
        "retried until the ring lists something newer",
        hint="fix the release and publish a newer version")


def refuse_degraded(layout: Layout, record: Dict[str, Any], cur: Any, *,
                    yanked: Any) -> None:
    """Nothing to install, but the release running here failed its gate or is yanked:
    say so, non-zero, never "up to date" (THREATS 47)."""
    if cur is None:
        return
    failed = [f for f in record["failed"] if f.get("digest") == cur.digest]
    if failed:
        why = f"{cur.name} {cur.version} failed its health check ({failed[-1].get('why')})"
        err: InstallerError = HealthGateFailed(
            f"degraded: {why} and the ring lists nothing newer to install",
            hint="publish a fixed, newer version to the ring, or install a good bundle by "
                 "hand with `airgap-install install`")
    elif rings.is_yanked(yanked, cur.name, cur.version):
        why = f"{cur.name} {cur.version} is yanked"
        err = PolicyRefusal(f"degraded: {why} and the ring lists nothing to go back to",
                            hint="publish a good version to the ring, or install one by hand "
                                 "with `airgap-install install`")
    else:
        return
    record["result"] = f"degraded: {why}"
    syncstate.save_record(layout, record)
    raise err
