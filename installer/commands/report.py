"""Signed device reports: what this device runs, for the desk (``bundle fleet status``).

A report is made after every install, sync, rollback and repair, after a failed health gate,
and by ``airgap-install report``; one small canonical-JSON file each
(``installer/trust/devicereport.py``), numbered by a sequence the desk uses to refuse
replays. It is kept on the device (``device/last-report.json``) and, with ``--report-to SINK``,
written to a folder (a USB stick that collects the reports of every device it visits) as
``<device id>-<sequence>.json``, or pushed to ``oci://HOST/REPO`` with the device's own
credentials (``installer/sources/ocireports.py``; https only off loopback).

The health gate's last verdict is kept in ``device/gate.json`` (a ``sync`` that installed
and passed its gate, a failed gate, or ``none`` after a manual install or rollback), so a
report says whether the running version passed and when.
"""

import os
import platform
import shutil
import time
from typing import Any, Dict, Optional

from installer import __version__, policy
from installer.commands import sync, syncstate
from installer.errors import InstallerError
from installer.fsio import write_verified
from installer.host import identity
from installer.host.layout import Layout
from installer.host.state import load_state
from installer.sources import ocidist, ocireports
from installer.trust import devicereport

# what a command's result says happened -> the report's event (None: no report)
_EVENTS = {("install", "installed"): "install", ("install", "repaired"): "repair",
           ("sync", "installed"): "sync", ("sync", "rolled-back"): "sync",
           ("sync", "up-to-date"): "sync", ("rollback", "rolled-back"): "rollback"}


def event_for(command: str, result: Optional[Dict[str, Any]],
              error: Optional[InstallerError]) -> Optional[str]:
    """The report a command ends with: ``gate-failed`` for a failed health gate."""
    if error is not None:
        return "gate-failed" if error.exit_code == 7 and command == "sync" else None
    action = str((result or {}).get("action", "rolled-back" if command == "rollback" else ""))
    return _EVENTS.get((command, action))


def _release(r: Any) -> Optional[Dict[str, Any]]:
    if r is None:
        return None
    return {"name": r.name, "version": r.version, "digest": r.digest}


def record_gate(layout: Layout, event: str, *, now: int) -> None:
    """Keep the health gate's verdict for the running version (``device/gate.json``)."""
    state, _ = load_state(layout)
    cur = state.current
    if event == "gate-failed":
        failed = sync.sync_status(layout).get("failed") or []
        last = failed[-1] if failed else {}
        gate = {"state": "failed", "name": last.get("name"), "version": last.get("version"),
                "digest": last.get("digest"), "at": last.get("at", now),
                "output": str(last.get("why") or "")[-300:]}
    elif cur is None:
        return
    elif event == "sync-passed":
        gate = dict(_release(cur) or {}, state="passed", at=now, output="")
    elif event in ("install", "rollback"):
        gate = dict(_release(cur) or {}, state="none", at=now, output="")
    else:
        return
    identity.write_json(layout, "gate.json", gate)


def _gate(layout: Layout, cur: Any) -> Dict[str, Any]:
    pending = syncstate.read_record(layout).get("pending")  # a gate a killed sync left (sync.py)
    if isinstance(pending, dict) and cur is not None and pending.get("digest") == cur.digest:
        return {"state": "pending", "name": cur.name, "version": cur.version,
                "digest": cur.digest, "at": pending.get("since"), "output": ""}
    gate = identity.read_json(layout, "gate.json")
    if gate is None:
        return {"state": "none"}
    if gate.get("state") != "failed" and (cur is None or gate.get("digest") != cur.digest):
        return {"state": "unknown"}   # changed since by something that kept no verdict
    return gate


def _free_bytes(layout: Layout) -> Optional[int]:
    path = layout.airgap
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def build(layout: Layout, event: str, *, now: int) -> Dict[str, Any]:
    """The signed part of a new report (takes the next sequence number)."""
    ident = identity.ensure(layout, now=now)
    state, _ = load_state(layout)
    cur = state.current
    info = sync.sync_status(layout)
    arch = cur.arch if cur else policy.machine_to_arch(platform.machine())
    return {
        "device_id": ident["device_id"], "public_key": ident["public_key"],
        "hostname": identity.hostname(layout), "arch": arch, "ring": info.get("ring"),
        "rollout_id": info.get("rollout_id"), "event": event,
        "installed": _release(cur), "previous": _release(state.previous),
        "gate": _gate(layout, cur),
        "failed": [{"name": f.get("name"), "version": f.get("version"),
                    "digest": f.get("digest"), "at": f.get("at")}
                   for f in info.get("failed") or []],
        "metadata": info.get("metadata") or {}, "last_sync": info.get("last_sync"),
        "free_bytes": _free_bytes(layout), "installer_version": __version__,
        "time": now, "sequence": identity.next_sequence(layout),
    }


def make(layout: Layout, event: str, *, now: Optional[int] = None) -> Dict[str, Any]:
    """Build, sign and keep a report; ``{"data", "name", "signed"}``."""
    clock = int(time.time()) if now is None else now
    signed = build(layout, event, now=clock)
    data = devicereport.seal(signed, identity.seed(layout))
    identity.write_json(layout, "last-report.json", {"file": data.decode()})
    name = f"{signed['device_id']}-{signed['sequence']}.json"
    return {"data": data, "name": name, "signed": signed}


def deliver(made: Dict[str, Any], sink: str, *, ca_file: Optional[str] = None,
            credentials: Optional[ocidist.Credentials] = None) -> str:
    """Write the report into a folder or push it to ``oci://HOST/REPO``; where it went."""
    data, name = made["data"], made["name"]
    if sink.startswith("oci://"):
        signed = made["signed"]
        return ocireports.push_report(
            sink, name, data, ca_file=ca_file, credentials=credentials,
            tag=ocireports.report_tag(signed["device_id"], signed["sequence"]))
    os.makedirs(sink, exist_ok=True)
    dest = os.path.join(sink, name)
    write_verified(dest, [data], mode=0o644)
    return dest


def after_command(layout: Layout, command: str, result: Optional[Dict[str, Any]], *,
                  error: Optional[InstallerError], sink: Optional[str],
                  ca_file: Optional[str] = None,
                  credentials: Optional[ocidist.Credentials] = None) -> Optional[str]:
    """The hook ``cli`` calls after install, sync and rollback: record the gate, make the
    report, deliver it. Returns where it went (or the kept copy's name)."""
    event = event_for(command, result, error)
    if event is None or not os.path.exists(layout.trust_anchor):
        return None
    now = int(time.time())
    action = (result or {}).get("action")
    if event == "sync" and action in ("installed", "rolled-back"):
        record_gate(layout, "sync-passed", now=now)
    else:
        record_gate(layout, event, now=now)
    made = make(layout, event, now=now)
    if sink is None:
        return str(made["name"])
    return deliver(made, sink, ca_file=ca_file, credentials=credentials)
