"""What a change does to the live tree, said before it is done (pure).

``plan`` compares the release being replaced with the new one: K3s version, and per folder
(image archives, charts, manifests, the K3s config drop-in, registries.yaml) which files are
added, removed, replaced in place (same name, other content) or kept. The installer prints
``lines(plan)`` before placing anything and returns the plan in ``--json``.
"""

import posixpath
from typing import Any, Dict, List, Optional, Tuple

from installer import policy
from installer.errors import ConfigError
from installer.host import options
from installer.host.layout import (
    CHARTS_DIR,
    IMAGES_DIR,
    K3S_DROPIN_DIR,
    K3S_ETC_DIR,
    MANIFESTS_DIR,
)
from installer.host.options import Given, NodeOptions
from installer.host.state import Release, State
from installer.policy import human_bytes

GROUPS = (("images", IMAGES_DIR), ("charts", CHARTS_DIR), ("manifests", MANIFESTS_DIR),
          ("k3s_config", K3S_DROPIN_DIR), ("registries", K3S_ETC_DIR))


def _files(release: Optional[Release], folder: str) -> Dict[str, Any]:
    if release is None:
        return {}
    return {posixpath.basename(t.target): t for t in release.targets
            if posixpath.dirname(t.target) == folder}


def plan(old: Optional[Release], new: Release) -> Dict[str, Any]:
    """The change from ``old`` (None: nothing installed) to ``new``, as plain data."""
    out: Dict[str, Any] = {"k3s": {"old": old.k3s_version if old else None,
                                   "new": new.k3s_version},
                           "version": {"old": old.version if old else None,
                                       "new": new.version}}
    for group, folder in GROUPS:
        before, after = _files(old, folder), _files(new, folder)
        out[group] = {
            "added": sorted(n for n in after if n not in before),
            "removed": sorted(n for n in before if n not in after),
            "replaced": sorted(n for n in after if n in before
                               and before[n].sha256 != after[n].sha256),
            "kept": sorted(n for n in after if n in before
                           and before[n].sha256 == after[n].sha256),
            "added_bytes": sum(after[n].size for n in after if n not in before
                               or before[n].sha256 != after[n].sha256),
        }
    return out


def lines(p: Dict[str, Any]) -> List[str]:
    """The plan as a few lines for people."""
    k3s = p["k3s"]
    if k3s["old"] is None:
        head = f"K3s {k3s['new']} (first install)"
    elif k3s["old"] == k3s["new"]:
        head = f"K3s {k3s['new']} (unchanged)"
    else:
        head = f"K3s {k3s['old']} -> {k3s['new']}"
    out = ["change: " + head]
    for group, _ in GROUPS:
        g = p[group]
        parts = []
        for key, sign in (("added", "+"), ("replaced", "~"), ("removed", "-")):
            if g[key]:
                parts.append(f"{sign} " + ", ".join(g[key]))
        if g["kept"]:
            parts.append(f"{len(g['kept'])} unchanged")
        if not parts:
            continue
        size = f" ({human_bytes(g['added_bytes'])} new)" if g["added_bytes"] else ""
        out.append(f"  {group}{size}: " + "; ".join(parts))
    return out


def rollback_choice(state: State, *, skip_start: Optional[bool], allow_k3s_downgrade: bool
                    ) -> "Tuple[Release, Release, NodeOptions, NodeOptions]":
    """What a rollback would do, checked (pure): the current and previous release, the
    options that release last ran with, and those it will run with (the command line wins).
    Used by ``rollback`` and by its ``--dry-run`` plan."""
    cur, prev = state.current, state.previous
    if cur is None or prev is None:
        raise ConfigError("there is no previous release to roll back to",
                          hint="`airgap-install status` shows what is installed")
    policy.check_k3s_change(cur.k3s_version, prev.k3s_version, allow_minor_skip=True,
                            allow_downgrade=allow_k3s_downgrade)
    recorded = NodeOptions.of(prev)  # as that release last ran; the command line overrides
    node = options.merge(recorded, Given(skip_start=skip_start), role=prev.role)
    options.check(node)
    return cur, prev, recorded, node
