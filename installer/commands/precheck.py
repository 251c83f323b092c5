"""The checks a bundle meets before anything is staged, shared by ``install`` and its dry
run (``plan``), so that both refuse the same bundles with the same errors: file name,
architecture, role, node options, version, then (for a new version) the K3s version change
and free space. Reads nothing but what it is given and the free space under the root."""

from dataclasses import dataclass
from typing import Any, List, Optional

from installer import policy
from installer.commands.reconfigure import checked
from installer.format import bundlefmt
from installer.host import options, preflight
from installer.host.layout import Layout, Target, targets_for
from installer.host.options import Given, NodeOptions
from installer.host.state import State


@dataclass(frozen=True)
class Decided:
    """What a verified manifest and the installed state decide before anything is staged:
    the install and its dry run (``plan``) share it, so both refuse the same bundles."""

    label: str                           # "bundle NAME VERSION", for messages
    role: str
    node: NodeOptions                    # the options this install runs with
    changes: Any                         # options.diff(recorded, node)
    decision: policy.VersionDecision


def decide(m: bundlefmt.Manifest, state: State, given: Given, *, arch: str,
           chosen: Optional[policy.BundleFile], switch_bundle: bool) -> Decided:
    """File name, architecture, role, options and version of ``m`` against ``state``, with
    the options ``given`` on the command line."""
    label = f"bundle {m.name} {m.version}"
    if chosen is not None:
        preflight.check_file_name(chosen, m)
    cur = state.current
    policy.check_arch(m.arch, arch, bundle=label)
    role = policy.choose_role(asked=given.role, installed=cur.role if cur else None,
                              bundle_roles=m.roles, bundle=label)
    recorded = NodeOptions.of(cur) if cur else None
    node = checked(options.merge(recorded, given, role=role))
    decision = policy.decide_bundle_version(
        installed_name=cur.name if cur else None,
        installed_version=cur.version if cur else None,
        name=m.name, version=m.version, switch_name=switch_bundle)
    return Decided(label, role, node, options.diff(recorded, node), decision)


def check_change(layout: Layout, state: State, m: bundlefmt.Manifest, *,
                 d: Decided) -> List[Target]:
    """For a new version: the K3s version change allowed, and room for what it places;
    returns the members placed for ``d.role``."""
    if state.current is not None:
        policy.check_k3s_change(state.current.k3s_version, m.k3s_version,
                                allow_minor_skip=m.allow_k3s_minor_skip,
                                allow_downgrade=m.allow_k3s_downgrade)
    targets = targets_for(m.members, d.role)
    policy.check_space(preflight.space_needs(layout, m, targets), bundle=d.label)
    return targets
