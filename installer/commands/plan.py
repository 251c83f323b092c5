"""``--dry-run`` for ``install``, ``sync`` and ``rollback``: what the command would do, with
nothing changed and no lock taken (nothing is written under ``--root``; the install lock is
not held, so a dry run never makes another command wait).

Each plan runs the checks of the real command that need no writing: the bundle's signature
and envelope (``install``; its members are not hashed), the TUF refresh of the ring's metadata
in memory (``sync``; the bundle it would fetch is not fetched), the version, K3s and option
policies. A refusal is the real command's error, with its exit code; a plan is exit 0.
"""

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from installer import policy
from installer.commands import install, precheck, sync, syncstate
from installer.commands.reconfigure import summary_of
from installer.commands.results import Json, Result
from installer.host import options, preflight, summary
from installer.host.layout import Layout
from installer.host.options import Given, NodeOptions
from installer.host.state import load_journal, load_state, read_anchor
from installer.sources import remote
from installer.trust import rings, tufclient, verify


@dataclass(frozen=True)
class Planned(Result):
    """A dry run's plan: ``plan`` is the ``--json`` object (``dry_run: true``)."""

    plan: Json

    def to_json(self) -> Json:
        return dict(self.plan)

    def to_text(self) -> List[str]:
        return text(self.plan)


def _install_sh(node: NodeOptions) -> Dict[str, Any]:
    return {"INSTALL_K3S_EXEC": node.install_exec, "INSTALL_K3S_SKIP_START": node.skip_start,
            "K3S_URL": node.url, "token_file": node.token_file}


def install_plan(layout: Layout, req: install.InstallRequest) -> Planned:
    return Planned(_install_plan(layout, req))


def _install_plan(layout: Layout, req: install.InstallRequest) -> Dict[str, Any]:
    arch = preflight.host_arch(layout, req.arch)
    path, chosen = preflight.resolve_source(req.source, arch)
    state, _ = load_state(layout)
    clock = int(time.time())
    opened = verify.open_bundle(path, anchor=read_anchor(layout),
                                now=verify.now_for(state.time_ratchet, clock), clock=clock)
    opened.close()
    m = opened.header.manifest
    d = precheck.decide(m, state, req.given, arch=arch, chosen=chosen,
                        switch_bundle=req.switch_bundle)
    cur, node, decision = state.current, d.node, d.decision
    out: Dict[str, Any] = {"dry_run": True, "command": "install", "bundle": path,
                           "reason": decision.reason, "current": summary_of(cur),
                           "install_sh": _install_sh(node), "removed": None}
    if decision.action == "same":
        same = cur is not None and cur.digest == opened.digest
        return dict(out, action="repair" if same else "none", would=[
            f"would check the placed files and repair any that differ ({decision.reason})"
            if same else f"nothing to do: {decision.reason}"])
    targets = precheck.check_change(layout, state, m, d=d)
    new = install._release(opened, role=d.role, node=node, targets=targets, changes=d.changes)
    plan = summary.plan(cur, new)
    removed = summary_of(state.previous) if state.previous is not None and \
        state.previous.digest != opened.digest else None
    return dict(out, action="install", target=summary_of(new), changes=plan, removed=removed,
                would=[*_interrupted(layout),
                       f"would install {m.name} {m.version} ({decision.reason})",
                       *("  " + line for line in summary.lines(plan))])


def sync_plan(layout: Layout, req: sync.SyncRequest, *, now: Optional[int] = None) -> Planned:
    return Planned(_sync_plan(layout, req, now=now))


def _sync_plan(layout: Layout, req: sync.SyncRequest, *, now: Optional[int]) -> Dict[str, Any]:
    clock = int(time.time()) if now is None else now
    src = remote.open_source(req.source, plain_http=req.plain_http, ca_file=req.ca_file,
                             credentials=req.credentials)
    arch = preflight.host_arch(layout, req.arch)
    cfg, record, state, trusted = syncstate.held(layout)
    refreshed = tufclient.refresh(trusted, sync.source_fetcher(src), ring=cfg["ring"],
                                  now=clock)
    cur = state.current
    choice = syncstate.choose(refreshed, cfg=cfg, record=record, state=state, arch=arch)
    health = req.health_cmd or sync.DEFAULT_HEALTH
    out: Dict[str, Any] = {"dry_run": True, "command": "sync", "ring": cfg["ring"],
                           "reason": choice.reason, "current": summary_of(cur),
                           "metadata": refreshed.versions, "rollout": _rollout(
                               refreshed.entries, cfg["device_id"], arch=arch)}
    if choice.entry is None:
        return dict(out, action="up-to-date", would=[choice.reason])  # "up to date: ..."
    entry = choice.entry
    label = f"{entry.custom.get('name')} {entry.custom.get('version')}"
    role = req.role or (cur.role if cur else None)
    node = None
    if role is not None:
        o = req.options
        given = Given(role=req.role) if o is None else Given(
            role=req.role, exec_args=o.exec_args, url=o.url, token_file=o.token_file,
            skip_start=o.skip_start)
        node = options.merge(NodeOptions.of(cur) if cur else None, given, role=role)
    fetch = None if choice.action == "downgrade" else {
        "path": sync.target_path(entry), "length": entry.length, "sha256": entry.sha256}
    verb = "roll back to" if fetch is None else "install"
    would = [f"would {verb} {label} ({choice.reason})"]
    if fetch is not None:
        would.insert(0, f"would fetch {fetch['path']} ({policy.human_bytes(entry.length)})")
    removed = summary_of(state.previous) if fetch is not None else None
    if removed:
        would.append(f"would drop the kept copy of {removed['name']} {removed['version']}")
    would.append(f"would then run the health command: {health}")
    return dict(out, action="rollback" if fetch is None else "install", fetch=fetch,
                target={"name": entry.custom.get("name"), "version": entry.custom.get("version"),
                        "digest": entry.custom.get("manifest_sha256")},
                install_sh=_install_sh(node) if node else None, health_cmd=health,
                removed=removed, would=would)


def _rollout(entries: Sequence[tufclient.Entry], device_id: str, *, arch: str
             ) -> List[Dict[str, Any]]:
    """Each listed version for this arch, its percent and whether this device is inside."""
    return [{"version": e.custom.get("version"), "percent": e.custom.get("percent", 100),
             "this_device": rings.in_rollout(device_id, e)}
            for e in entries if e.custom.get("arch") == arch]


def rollback_plan(layout: Layout, *, skip_start: Optional[bool],
                  allow_k3s_downgrade: bool) -> Planned:
    return Planned(_rollback_plan(layout, skip_start=skip_start,
                                  allow_k3s_downgrade=allow_k3s_downgrade))


def _rollback_plan(layout: Layout, *, skip_start: Optional[bool],
                   allow_k3s_downgrade: bool) -> Dict[str, Any]:
    state, _ = load_state(layout)
    cur, prev, _, node = summary.rollback_choice(state, skip_start=skip_start,
                                                 allow_k3s_downgrade=allow_k3s_downgrade)
    plan = summary.plan(cur, prev)
    return {"dry_run": True, "command": "rollback", "action": "rollback",
            "current": summary_of(cur), "target": summary_of(prev), "changes": plan,
            "install_sh": _install_sh(node), "removed": None,
            "would": [*_interrupted(layout),
                      f"would roll back {cur.name} {cur.version} -> {prev.version}",
                      *("  " + line for line in summary.lines(plan))]}


def _interrupted(layout: Layout) -> List[str]:
    """A change a crash interrupted is finished or undone first by the real command."""
    journal = load_journal(layout)
    if journal is None:
        return []
    return [f"would first finish or undo the interrupted {journal.get('op')} "
            f"({journal.get('phase')}), as `airgap-install recover` does"]


def text(result: Dict[str, Any]) -> List[str]:
    lines = [f"dry run of {result['command']}: nothing changed"]
    lines += ["  " + w for w in result.get("would", [])]
    sh = result.get("install_sh")
    if sh and result.get("action") in ("install", "rollback"):
        lines.append("  install.sh: INSTALL_K3S_EXEC={!r}{}".format(
            sh["INSTALL_K3S_EXEC"], " INSTALL_K3S_SKIP_START=true"
            if sh["INSTALL_K3S_SKIP_START"] else ""))
    for r in result.get("rollout") or []:
        lines.append("  ring lists {} at {}%: this device {}".format(
            r["version"], r["percent"], "is in" if r["this_device"] else "is not in yet"))
    return lines
