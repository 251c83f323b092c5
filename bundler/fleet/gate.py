"""Evidence-gated promotion: ``bundle promote ... --reports SRC``.

A promotion of NAME VERSION from ring R1 is allowed when at least ``require_healthy`` enrolled
devices of R1 (and at least ``require_fraction`` of the enrolled devices of R1 that reported)
run VERSION with a passed health gate for at least ``min_soak`` seconds. The soak a report
proves is its own time minus the time the gate passed: a device shows it has stayed healthy by
reporting again later (`airgap-install report --report-to SINK`, e.g. from cron).

Each enrolled device of R1 is, for the refusal message and the record:

- ``healthy``: runs VERSION (same manifest as the ring lists), gate passed, soaked enough;
- ``failing``: its gate failed on VERSION, or VERSION is in its failed list;
- ``pending``: reported, but not (yet) on VERSION with a passed gate and enough soak;
- ``missing``: enrolled in R1 and never reported.

The record (``evidence``) goes into the promoted entries' signed ``custom["promotion"]``:
the rule, the counts, and the sha256 of every report used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.fleet.reports import Collected, load_enrolled, load_reports
from bundler.fleet.status import DAY, row
from bundler.repo.repostore import Repo, RepoRefusal
from installer.sources import ocidist
from installer.trust import rings


@dataclass(frozen=True)
class Rule:
    name: str
    version: str
    source: str
    require_healthy: int = 1
    require_fraction: float = 1.0
    min_soak: int = 0


def _label(r: dict[str, Any]) -> str:
    return f"{r['hostname']} ({r['device_id'][:12]})"


def classify(r: dict[str, Any], rule: Rule, *, digests: set[str]) -> tuple[str, str]:
    """``(verdict, why)`` for one device row of ring ``rule.source``."""
    if not r["reported"]:
        return "missing", "never reported"
    if rule.version in r["failed"] or (r["gate"] == "failed"
                                       and r.get("gate_version") == rule.version):
        return "failing", f"health gate failed on {rule.version}: {r.get('gate_output') or ''}"
    on = r.get("name") == rule.name and r["version"] == rule.version and (
        not digests or r.get("manifest") in digests)
    if not on:
        return "pending", f"runs {r['version'] or 'nothing'}"
    if r["gate"] != "passed":
        return "pending", f"gate {r['gate']} on {rule.version}"
    soak = int(r["last_seen_time"]) - int(r.get("gate_at") or r["last_seen_time"])
    if soak < rule.min_soak:
        return "pending", (f"healthy for {soak}s by its last report, --min-soak is "
                           f"{rule.min_soak}s")
    return "healthy", f"healthy for {soak // 3600}h{soak % 3600 // 60:02d}m"


def evaluate(collected: Collected, enrolled: dict[str, Any], rule: Rule, *, now: int,
             digests: set[str]) -> dict[str, Any]:
    """Every enrolled device of the source ring, judged; ``allowed`` and the record."""
    rows = [row(d, enrolled[d], collected.latest.get(d), now=now, stale_days=10 ** 6)
            for d in sorted(enrolled)]
    members = [r for r in rows if r["ring"] == rule.source]
    verdicts: dict[str, list[dict[str, Any]]] = {k: [] for k in
                                                 ("healthy", "failing", "pending", "missing")}
    for r in members:
        verdict, why = classify(r, rule, digests=digests)
        verdicts[verdict].append({"device_id": r["device_id"], "hostname": r["hostname"],
                                  "why": why, "report": r["digest"]})
    healthy = len(verdicts["healthy"])
    reported = healthy + len(verdicts["failing"]) + len(verdicts["pending"])
    fraction = healthy / reported if reported else 0.0
    allowed = healthy >= rule.require_healthy and fraction >= rule.require_fraction
    reason = (f"{healthy} of {len(members)} enrolled device(s) of ring {rule.source} "
              f"({reported} reported) run {rule.name} {rule.version} with a passed health "
              f"gate for at least {rule.min_soak}s; required {rule.require_healthy} and "
              f"{rule.require_fraction:.0%} of those that reported")
    used = sorted(v["report"] for vs in verdicts.values() for v in vs if v["report"])
    return {"allowed": allowed, "reason": reason, "verdicts": verdicts,
            "record": {"from": rule.source, "reason": reason, "healthy": healthy,
                       "reported": reported, "enrolled": len(members),
                       "require_healthy": rule.require_healthy,
                       "require_fraction_percent": int(round(rule.require_fraction * 100)),
                       "min_soak": rule.min_soak, "reports": used}}


def refusal(result: dict[str, Any], rule: Rule) -> RepoRefusal:
    v = result["verdicts"]
    parts = [f"{kind}: " + "; ".join(f"{_label(d)} {d['why']}" for d in v[kind])
             for kind in ("failing", "pending", "missing") if v[kind]]
    return RepoRefusal(f"promotion of {rule.name} {rule.version} from ring {rule.source} "
                       f"refused: {result['reason']}" + ("; " if parts else "")
                       + "; ".join(parts),
                       hint="fix or wait for the devices named, let them report again "
                            "(`airgap-install report --report-to`), then promote again")


def movers(collected: Collected, enrolled: dict[str, Any], *, name: str, version: str,
           dest: str, percent: int, entries: dict[str, str], now: int) -> list[dict[str, Any]]:
    """Enrolled devices of ``dest`` that would take NAME VERSION at ``percent``
    (``entries``: arch -> manifest sha256 the source ring lists)."""
    out = []
    for d in sorted(enrolled):
        r = row(d, enrolled[d], collected.latest.get(d), now=now, stale_days=10 ** 6)
        if r["ring"] != dest:
            continue
        digest = entries.get(str(r["arch"]))
        rid = r.get("rollout_id")
        if digest is None or not isinstance(rid, str):
            why, moves = (f"no {r['arch']} entry" if r["reported"] else "never reported"), False
        elif r.get("version") == version and r.get("name") == name:
            why, moves = "already runs it", False
        else:
            b = rings.bucket(rid, digest)
            moves = b < percent
            why = f"bucket {b} {'<' if moves else '>='} {percent}%"
        out.append({"device_id": d, "hostname": r["hostname"], "version": r["version"],
                    "moves": moves, "why": why})
    return out




def check(*, repo_dir: Path, sources: list[str], rule: Rule, dest: str, percent: int,
          now: int, ca_file: str | None = None,
          credentials: ocidist.Credentials | None = None) -> dict[str, Any]:
    """Read the reports and judge the promotion (writes nothing): ``evaluate``'s answer plus
    ``movers`` (who in ``dest`` would take it) and ``collected`` (for ``remember``)."""
    md = Repo(repo_dir, keys_dir=".").ring(rule.source)
    entries = {str(t.custom.get("arch")): str(t.custom.get("manifest_sha256"))
               for t in md.signed.targets.values()
               if t.custom.get("name") == rule.name and t.custom.get("version") == rule.version}
    if not entries:
        raise RepoRefusal(f"ring {rule.source} does not list {rule.name} {rule.version}")
    enrolled = load_enrolled(repo_dir)
    collected = load_reports(repo_dir, sources, ca_file=ca_file, credentials=credentials)
    result = evaluate(collected, enrolled, rule, now=now, digests=set(entries.values()))
    result["movers"] = movers(collected, enrolled, name=rule.name, version=rule.version,
                              dest=dest, percent=percent, entries=entries, now=now)
    result["collected"] = collected
    return result


def plan_text(result: dict[str, Any], *, dest: str, percent: int) -> list[str]:
    """``bundle promote --dry-run``: the verdict and who would move."""
    lines = [("would promote: " if result["allowed"] else "would refuse: ") + result["reason"]]
    for kind, found in result["verdicts"].items():
        lines += [f"  {kind}: {_label(d)} {d['why']}" for d in found]
    moving = [m for m in result["movers"] if m["moves"]]
    lines.append(f"ring {dest} at {percent}%: {len(moving)} of {len(result['movers'])} "
                 "enrolled device(s) would move")
    lines += [f"  {'moves' if m['moves'] else 'stays'}: {_label(m)} on {m['version']} "
              f"({m['why']})" for m in result["movers"]]
    return lines


__all__ = ["DAY", "Rule", "check", "classify", "evaluate", "movers", "plan_text", "refusal"]
