"""``bundle repo status``: what each ring offers, and when every role expires (read-only)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bundler.repo import ringdeltas
from bundler.repo.ringops import YANKED, Repo, _iso
from installer import policy
from installer.errors import ExpiryCheckFailed, InstallerError
from installer.trust import rootmeta, tufoverride

WARN_DAYS = 7


def status(directory: Path | str, *, now: int | None = None,
           warn_days: int = WARN_DAYS) -> dict[str, Any]:
    repo = Repo(directory, keys_dir=".")
    now = int(time.time()) if now is None else int(now)
    root = repo.root()
    ts = repo.timestamp()
    snap = repo.snapshot()
    top = repo.targets(snap)
    roles: dict[str, Any] = {}
    warnings: list[str] = []

    def role(name: str, version: int, expires: int) -> None:
        days = (expires - now) / 86400
        roles[name] = {"version": version, "expires": _iso(expires),
                       "expires_in_days": round(days, 1), "expired": days <= 0,
                       "expiring": days < warn_days}
        if days < warn_days:
            what = "EXPIRED" if days <= 0 else f"expires in {days:.1f} days"
            fix = {"timestamp": "repo refresh", "snapshot": "repo refresh",
                   "root": "keys rotate"}.get(name, "publish, promote or yank")
            warnings.append(f"{name} v{version} {what} ({_iso(expires)}): run `bundle {fix}`")

    for name, md in (("root", root), ("timestamp", ts), ("snapshot", snap), ("targets", top)):
        role(name, md.signed.version, int(md.signed.expires.timestamp()))
    rings: dict[str, Any] = {}
    for ring in repo.rings():
        md = repo.ring(ring, snap)
        role(ring, md.signed.version, int(md.signed.expires.timestamp()))
        arches: dict[str, Any] = {}
        deltas: list[dict[str, Any]] = []
        for path, t in sorted(md.signed.targets.items()):
            c = t.custom
            if ringdeltas.is_delta(t):
                deltas.append({"target": path, "for": c[ringdeltas.DELTA_FOR],
                               "base": c.get(ringdeltas.DELTA_BASE),
                               "base_version": c.get("base_version"), "length": t.length,
                               "full_length": c.get("full_length")})
                continue
            best = arches.get(c.get("arch"))
            if best is None or policy.compare_versions(c["version"], best["version"]) > 0:
                arches[c["arch"]] = {"name": c["name"], "version": c["version"],
                                     "since": _iso(int(c["entered"])),
                                     "percent": c["percent"], "target": path,
                                     "sha256": t.hashes["sha256"],
                                     "promotion": c.get("promotion")}
        rings[ring] = {"arches": arches, "deltas": deltas,
                       "listed": sorted(md.signed.targets),
                       "yanked": list(md.signed.unrecognized_fields.get(YANKED, []))}
    override = _override(repo, now, warnings)
    if repo.txn.interrupted():
        warnings.append(f"a command was interrupted mid-switch ({repo.txn.stage}): any "
                        "writing command finishes it, e.g. `bundle repo refresh`")
    pending = _pending(repo)
    return {"repository": str(repo.dir), "roles": roles, "rings": rings, "override": override,
            "pending": pending, "warn_days": warn_days, "warnings": warnings}


def _pending(repo: Repo) -> list[dict[str, Any]]:
    """The staged change, if any: what it is, and per document the signatures present and
    needed (``bundle repo sign`` adds them)."""
    found = repo.pending_status()
    if not found:
        return []
    return [{"what": found["what"], "created": _iso(int(found["created"])),
             "signatures": found["signatures"], "targets": found.get("targets", [])}]


def expiry_check(report: dict[str, Any]) -> None:
    """``repo status --check``: exit 10 naming every role expired or expiring."""
    bad = [f"{name} v{r['version']} {'EXPIRED' if r['expired'] else 'expires'} "
           f"{r['expires']}" for name, r in report["roles"].items() if r["expiring"]]
    if bad:
        raise ExpiryCheckFailed(f"{len(bad)} role(s) expired or expiring within "
                                f"{report['warn_days']} days: {'; '.join(bad)}",
                                hint="`bundle repo refresh` (timestamp, snapshot), publish/"
                                     "promote/yank (rings), `bundle keys rotate` (root)")


def _override(repo: Repo, now: int, warnings: list[str]) -> dict[str, Any] | None:
    """``metadata/override.json`` as devices would judge it now (``bundle repo extend``)."""
    path = repo.meta / tufoverride.FILE
    if not path.is_file():
        return None
    try:
        anchor = (repo.meta / f"{repo.root().signed.version}.root.json").read_bytes()
        found = tufoverride.parse(path.read_bytes(), rootmeta.load_trusted_root(anchor))
    except InstallerError as e:
        warnings.append(f"{path} is refused by devices: {e.message}")
        return {"valid": False, "error": e.message}
    if now >= found.expires:
        warnings.append(f"override v{found.version} expired at {_iso(found.expires)}")
    return {"valid": True, "version": found.version, "expires": _iso(found.expires),
            "reason": found.reason,
            "extend": [{"role": r, "version": v, "sha256": h} for r, v, h in found.extends]}


def status_text(report: dict[str, Any]) -> list[str]:
    lines = [f"repository {report['repository']}"]
    for ring, info in report["rings"].items():
        lines.append(f"ring {ring}:")
        if not info["arches"]:
            lines.append("  (nothing listed)")
        for arch, a in sorted(info["arches"].items()):
            lines.append(f"  {arch}: {a['name']} {a['version']} since {a['since']}, "
                         f"{a['percent']}% ({a['sha256'][:12]})")
            why = a.get("promotion")
            if why:  # bundle promote --reports: the fleet's evidence (bundler/fleet/gate.py)
                lines.append(f"    promoted from {why['from']} at {_iso(why['at'])} on the "
                             f"evidence of {len(why['reports'])} report(s): {why['reason']}")
        for d in info.get("deltas", []):
            full = d.get("full_length")
            share = f", {100 * d['length'] / full:.1f}% of the full bundle" if full else ""
            lines.append(f"  delta: {d['target']} over {d['base_version']}: "
                         f"{d['length']} bytes{share}")
        for y in info["yanked"]:
            lines.append(f"  yanked: {y['name']} {y['version']} at {_iso(y['at'])}: "
                         f"{y['reason']}")
    lines.append("roles:")
    for name, r in report["roles"].items():
        lines.append(f"  {name:<10} v{r['version']:<4} expires {r['expires']} "
                     f"({r['expires_in_days']} days)")
    o = report.get("override")
    if o and o.get("valid"):
        lines.append(f"override v{o['version']} until {o['expires']}: "
                     + ", ".join(f"{e['role']} v{e['version']}" for e in o["extend"])
                     + f" ({o['reason']})")
    for p in report.get("pending", []):
        lines.append(f"pending (staged, not live): {p['what']} since {p['created']}")
        for sig in p["signatures"]:
            lines.append(f"  {sig['role']} v{sig['version']}: {sig['present']} of "
                         f"{sig['needed']} signature(s)")
    lines += ["warning: " + w for w in report["warnings"]]
    return lines
