"""Node options on the device: check them, show them, and apply them to the installed
release (``airgap-install reconfigure``, or ``install`` of the installed version with new
options). The merge rules are ``options``'s (pure); this is the thin I/O shell around them.

Applying options is a change like an install (``txn.run``: journal, place, install.sh, commit),
from the installed release to the same release with other options, so a crash is finished or
undone by the next run and a failing install.sh puts the old options back.
"""

import hashlib
import os
import time
from dataclasses import replace
from typing import IO, Any, Callable, Dict, List, Optional, Union

from installer import policy
from installer.commands.results import Reconfigured, Unchanged
from installer.errors import ConfigError, DigestMismatch
from installer.format import bundlefmt
from installer.fsio import open_regular, verify_file
from installer.host import options, summary, txn
from installer.host.layout import Layout, Target, targets_for
from installer.host.options import Given, NodeOptions
from installer.host.state import Release, RunLock, State, load_state

Report = Callable[[str], None]


def _silent(_: str) -> None:
    pass


def summary_of(r: Optional[Release]) -> Optional[Dict[str, Any]]:
    """A release for the output: what ``Release.summary`` says plus its options."""
    if r is None:
        return None
    out = r.summary()
    out["options"] = NodeOptions.of(r).to_json()
    out["options_changed"] = list(r.changes)
    return out


def checked(node: NodeOptions) -> NodeOptions:
    options.check(node)
    if node.token_file is not None and not os.path.isfile(node.token_file):
        raise ConfigError(f"token file {node.token_file} does not exist",
                          hint="pass --token-file FILE with the server's join token")
    return node


def report_options(report: Report, given: Given, node: NodeOptions, *,
                   changes: List[options.Change], first: bool) -> None:
    kept = options.carried(given, node)
    if kept and not first:
        report("keeping the installed options: " + ", ".join(kept)
               + " (pass them to change them; see `airgap-install status`)")
    if changes and not first:
        report(options.describe(changes))
    report(f"install.sh will run with INSTALL_K3S_EXEC={node.install_exec!r}"
           + (" INSTALL_K3S_SKIP_START=true" if node.skip_start else ""))


def kept_targets(layout: Layout, release: Release, role: str) -> List[Target]:
    """The targets of a kept release for another role, from its verified manifest copy."""
    path = os.path.join(layout.release_dir(release.digest), bundlefmt.MANIFEST_NAME)
    with open_regular(path, what="kept manifest") as f:
        data = f.read(bundlefmt.MAX_HEADER_MEMBER + 1)
    if hashlib.sha256(data).hexdigest() != release.digest:
        raise DigestMismatch(f"kept manifest {path} no longer matches its sha256 "
                             f"{release.digest}",
                             hint="install the bundle again from its medium")
    m = bundlefmt.parse_manifest(data)
    policy.choose_role(asked=role, installed=None, bundle_roles=m.roles,
                       bundle=f"bundle {m.name} {m.version}")
    return targets_for(m.members, role)


def apply_options(layout: Layout, state: State, node: NodeOptions, *, report: Report,
                  output: Optional[IO[str]]) -> Reconfigured:
    """Re-run the installed release's install.sh with ``node``, journaled like an install
    (a role change also changes which files are placed: agents get no charts/manifests)."""
    cur = state.current
    if cur is None:
        raise ConfigError("nothing is installed to reconfigure",
                          hint="install a bundle first: airgap-install install BUNDLE")
    recorded = NodeOptions.of(cur)
    changes = options.diff(recorded, node)
    targets = cur.targets if node.role == cur.role else tuple(
        kept_targets(layout, cur, node.role))
    script = os.path.join(layout.release_dir(cur.digest), cur.script.member)
    if not verify_file(script, cur.script.sha256, cur.script.size):
        raise DigestMismatch(f"kept copy of install.sh ({script}) no longer matches its sha256 "
                             f"{cur.script.sha256}",
                             hint="install the bundle again from its medium")
    target = replace(cur, role=node.role, options=node.stored(), targets=targets,
                     installed_at=int(time.time()), changes=tuple(str(c) for c in changes))
    after = State(current=target, previous=state.previous, generation=state.generation,
                  time_ratchet=state.time_ratchet)
    if targets != cur.targets:
        for line in summary.lines(summary.plan(cur, target)):
            report(line)
    report(options.describe(changes))
    report(f"re-running install.sh of {cur.name} {cur.version} with "
           f"INSTALL_K3S_EXEC={node.install_exec!r}")
    written = txn.run(layout, op="reconfigure", old=cur, new=target, state_after=after,
                      report=report, output=output)
    return Reconfigured(current=summary_of(target) or {}, previous=summary_of(state.previous),
                        options_changed=[c.to_json() for c in changes],
                        generation=written.generation)


def reconfigure(layout: Layout, given: Given, *, wait: bool = False, report: Report = _silent,
                output: Optional[IO[str]] = None) -> Union[Reconfigured, Unchanged]:
    """Re-run install.sh of the installed release with new options (recorded ones for the
    rest); nothing to do when nothing changes."""
    with RunLock(layout, wait=wait):
        recovered = txn.recover(layout, report, output)
        if recovered:
            report(recovered)
        state, _ = load_state(layout)
        cur = state.current
        if cur is None:
            raise ConfigError("nothing is installed to reconfigure",
                              hint="install a bundle first: airgap-install install BUNDLE")
        node = checked(options.merge(NodeOptions.of(cur), given, role=given.role or cur.role))
        if node == NodeOptions.of(cur):
            return Unchanged("the options are already " + ", ".join(
                f"{k}={v!r}" for k, v in node.to_json().items()), {"current": summary_of(cur)})
        return apply_options(layout, state, node, report=report, output=output)
