"""``bundle fleet status``: one row per enrolled device from its newest accepted report,
totals per ring and version, stale devices flagged, rejected reports counted by reason."""

from __future__ import annotations

import time
from typing import Any

from bundler.fleet.reports import REASONS, Collected

DAY = 86400


def _iso(t: int | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _version(r: dict[str, Any] | None) -> str | None:
    return None if not r else f"{r.get('name')} {r.get('version')}"


def row(dev: str, enrolled: dict[str, Any], entry: dict[str, Any] | None, *, now: int,
        stale_days: int) -> dict[str, Any]:
    """A device's row; ``entry`` is its ledger entry (None: it never reported)."""
    if entry is None:
        return {"device_id": dev, "hostname": enrolled.get("hostname"),
                "ring": enrolled.get("ring"), "arch": None, "version": None,
                "previous": None, "gate": "missing", "gate_output": None, "failed": [],
                "last_seen": None, "sequence": None, "metadata_expires": None,
                "stale": True, "reported": False, "digest": None}
    r = entry["report"]
    gate = r.get("gate") or {}
    installed = r.get("installed") or {}
    gate_state = str(gate.get("state", "unknown"))
    if gate_state == "passed" and gate.get("digest") != installed.get("digest"):
        gate_state = "unknown"
    expires = r.get("metadata_expires")    # the ledger's compact form (reports.compact)
    return {"device_id": dev, "hostname": r.get("hostname"), "ring": r.get("ring"),
            "arch": r.get("arch"), "name": installed.get("name"),
            "version": installed.get("version"), "manifest": installed.get("digest"),
            "previous": (r.get("previous") or {}).get("version"), "gate": gate_state,
            "gate_version": gate.get("version"), "gate_at": gate.get("at"),
            "gate_output": gate.get("output") or None,
            "failed": sorted({str(f.get("version")) for f in r.get("failed") or []}),
            "last_seen": _iso(r["time"]), "last_seen_time": r["time"],
            "sequence": r["sequence"], "event": r.get("event"),
            "metadata_expires": _iso(expires) if isinstance(expires, int) else None,
            "stale": now - int(r["time"]) > stale_days * DAY, "reported": True,
            "rollout_id": r.get("rollout_id"), "digest": entry["digest"]}


def failing(row_: dict[str, Any]) -> bool:
    """Its last health gate failed (versions that failed earlier stay listed in ``failed``)."""
    return bool(row_["gate"] == "failed")


def status(collected: Collected, enrolled: dict[str, Any], *, now: int,
           stale_days: int = 7) -> dict[str, Any]:
    rows = [row(dev, enrolled[dev], collected.latest.get(dev), now=now, stale_days=stale_days)
            for dev in sorted(enrolled)]
    # failing first, then stale, then by ring and hostname
    rows.sort(key=lambda r: (not failing(r), not r["stale"], str(r["ring"]),
                             str(r["hostname"]), r["device_id"]))
    rings: dict[str, Any] = {}
    for r in rows:
        ring = rings.setdefault(str(r["ring"]), {"devices": 0, "versions": {}, "failing": 0,
                                                 "stale": 0, "passed": 0})
        ring["devices"] += 1
        key = str(r["version"]) if r["version"] else "never reported"
        ring["versions"][key] = ring["versions"].get(key, 0) + 1
        ring["failing"] += failing(r)
        ring["stale"] += r["stale"]
        ring["passed"] += r["gate"] == "passed"
    by_reason = {reason: 0 for reason in REASONS}
    for rej in collected.rejected:
        by_reason[rej["reason"]] = by_reason.get(rej["reason"], 0) + 1
    unknown = [{"device_id": d, "hostname": s.get("hostname"), "ring": s.get("ring"),
                "version": (s.get("installed") or {}).get("version"),
                "last_seen": _iso(s.get("time"))} for d, s in sorted(collected.unknown.items())]
    return {"devices": rows, "rejected": collected.rejected, "unknown": unknown,
            "totals": {"devices": len(rows), "failing": sum(failing(r) for r in rows),
                       "stale": sum(r["stale"] for r in rows), "rings": rings,
                       "accepted": collected.accepted, "duplicates": collected.duplicates,
                       "rejected": len(collected.rejected), "rejected_by_reason": by_reason},
            "stale_days": stale_days, "generated": _iso(now)}


def text(report: dict[str, Any]) -> list[str]:
    t = report["totals"]
    lines = [f"{t['devices']} enrolled device(s): {t['failing']} failing, {t['stale']} stale "
             f"(no report for {report['stale_days']} days); {t['accepted']} new report(s) "
             f"accepted, {t['rejected']} rejected"]
    for ring, info in sorted(t["rings"].items()):
        versions = ", ".join(f"{v}: {n}" for v, n in sorted(info["versions"].items()))
        lines.append(f"ring {ring}: {info['devices']} device(s) ({versions}); "
                     f"{info['failing']} failing, {info['stale']} stale")
    lines.append(f"{'DEVICE':<16}  {'HOSTNAME':<14} {'RING':<8} {'ARCH':<6} {'VERSION':<10} "
                 f"{'PREVIOUS':<10} {'GATE':<8} LAST SEEN")
    for r in report["devices"]:
        flags = (" STALE" if r["stale"] else "") + (
            f" FAILED {','.join(r['failed'])}" if r["failed"] else "")
        lines.append(f"{r['device_id'][:16]}  {str(r['hostname']):<14} {str(r['ring']):<8} "
                     f"{r['arch'] or '-':<6} {r['version'] or '-':<10} {r['previous'] or '-':<10} "
                     f"{r['gate']:<8} {r['last_seen'] or 'never'}{flags}")
    for u in report["unknown"]:
        lines.append(f"unknown device {u['device_id'][:16]} ({u['hostname']}, ring "
                     f"{u['ring']}): not enrolled, its reports do not count")
    by = t["rejected_by_reason"]
    if t["rejected"]:
        lines.append("rejected: " + ", ".join(f"{k} {v}" for k, v in by.items() if v))
        lines += [f"  {r['file']}: {r['reason']} ({r['detail']})" for r in report["rejected"]]
    return lines
