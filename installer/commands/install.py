"""The installer's commands as functions over a ``Layout``: trust, verify, install, rollback,
recover, status. Each returns a frozen record (installer/commands/results.py) whose ``to_json``
or ``to_text`` the CLI prints; errors are ``InstallerError``s.

Install order (ARCHITECTURE.md data flow): lock -> recover -> read envelope -> verify
signatures and tar envelope -> policy (arch, role, version, K3s minor) -> free space -> copy
every member into staging on the destination filesystem while hashing -> journaled placement
from the verified copy -> install.sh -> commit state -> advance the pinned root (only now: a
failed install leaves the anchor where it was, and its release folder is removed).
"""

import hashlib
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import IO, Any, Callable, ContextManager, Dict, Optional

from installer import policy
from installer.commands import precheck
from installer.commands.reconfigure import apply_options, report_options, summary_of
from installer.commands.results import (
    Installed,
    Outcome,
    Pinned,
    Recovered,
    Repaired,
    RolledBack,
    Status,
    Unchanged,
    Verified,
    adding,
)
from installer.errors import ConfigError, InstallerError
from installer.format import bundlefmt
from installer.fsio import fsync_dir, open_regular, read_regular, write_verified
from installer.host import delta, failpoint, imagecache, options, preflight, repair, summary, txn
from installer.host.layout import REGISTRIES_KEPT, Layout, Target
from installer.host.options import Given, NodeOptions
from installer.host.place import foreign_files
from installer.host.state import Release, RunLock, State, load_journal, load_state, read_anchor
from installer.host.state import anchor_if_readable as anchor_if_readable
from installer.sources import partsource
from installer.trust import rootmeta, verify

Report = Callable[[str], None]
# total bytes, what -> a callback counting bytes as they are copied or hashed (the CLI's meter)
Progress = Callable[[int, str], Callable[[int], None]]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class InstallRequest:
    source: str                     # bundle file, or folder holding bundles (a USB stick)
    given: Given = Given()          # role and options from the command line (None: recorded)
    arch: Optional[str] = None      # only with a root other than /
    switch_bundle: bool = False
    wait: bool = False


def trust_root(layout: Layout, root_json: str, *, wait: bool = False) -> Pinned:
    """Pin the trust anchor (first use only); later roots arrive signed inside bundles."""
    try:
        with open_regular(root_json, what="root") as f:
            data = f.read(bundlefmt.MAX_HEADER_MEMBER + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {root_json}: {e.strerror}") from None
    root = rootmeta.load_trusted_root(data)  # structure and self-signature
    with RunLock(layout, wait=wait):
        anchor = read_regular(layout.trust_anchor, what="trust anchor",
                              limit=bundlefmt.MAX_HEADER_MEMBER + 1)
        if anchor is not None:
            pinned = rootmeta.parse_root(anchor, what=layout.trust_anchor)
            if pinned.signed_bytes == root.signed_bytes:
                return Pinned(layout.trust_anchor, pinned.version,
                              rootmeta.root_fingerprint(pinned), changed=False)
            raise ConfigError(
                f"a trust anchor is already pinned at {layout.trust_anchor} "
                f"(root v{pinned.version}, fingerprint {rootmeta.root_fingerprint(pinned)}); "
                f"{root_json} is root v{root.version}, fingerprint "
                f"{rootmeta.root_fingerprint(root)}",
                hint="newer roots arrive signed inside bundles and advance it; to re-provision "
                     "this host, remove that file first (you then trust whatever you pin)")
        os.makedirs(os.path.dirname(layout.trust_anchor), exist_ok=True)
        write_verified(layout.trust_anchor, [data], mode=0o644)
    return Pinned(layout.trust_anchor, root.version, rootmeta.root_fingerprint(root),
                  changed=True, expires=root.expires)


def verify_bundle(layout: Layout, source: str, *, arch: Optional[str] = None,
                  progress: Optional[Progress] = None) -> Verified:
    """Full check of a bundle (signatures, envelope, every member hashed); writes nothing
    but a parts set's reassembled copy, removed again (installer/sources/partsource.py)."""
    with _from_parts(layout, source, arch, progress=progress) as got:
        result = _verify_bundle(layout, got.source if got else source, arch, progress=progress)
        return replace(result, parts=got.fields()) if got else result


def _from_parts(layout: Layout, source: str, arch: Optional[str], *,
                report: Optional[Report] = None,
                progress: Optional[Progress] = None
                ) -> ContextManager[Optional[partsource.FromParts]]:
    """A parts folder (installer/sources/partsource.py) as a private folder holding the verified,
    reassembled bundle; anything else stays as given (None)."""
    if not partsource.holds_parts(source):
        return nullcontext(None)
    return partsource.bundle_source(source, arch=preflight.host_arch(layout, arch),
                                    anchor=read_anchor(layout),
                                    now=verify.now_for(load_state(layout)[0].time_ratchet),
                                    work_dir=layout.staging, report=report, progress=progress)


def _verify_bundle(layout: Layout, source: str, arch: Optional[str],
                   *, progress: Optional[Progress]) -> Verified:
    path, chosen = preflight.resolve_source(source, preflight.host_arch(layout, arch))
    anchor = read_anchor(layout)
    state, _ = load_state(layout)
    clock = int(time.time())
    opened = verify.open_bundle(path, anchor=anchor, now=verify.now_for(state.time_ratchet, clock),
                                clock=clock)
    try:
        if chosen is not None:
            preflight.check_file_name(chosen, opened.header.manifest)
        checked = verify.hash_payload(opened, progress(
            opened.header.manifest.payload_size, "verified") if progress else None)
    finally:
        opened.close()
    m = opened.header.manifest
    return Verified(bundle=path, name=m.name, version=m.version, arch=m.arch,
                    k3s_version=m.k3s_version, roles=tuple(m.roles), digest=opened.digest,
                    members=len(m.members), bytes=checked, root_version=opened.root.version,
                    root_fingerprint=rootmeta.root_fingerprint(opened.root))


def install(layout: Layout, req: InstallRequest, *, report: Report = _quiet,
            output: Optional[IO[str]] = None,
            progress: Optional[Progress] = None) -> Outcome:
    with RunLock(layout, wait=req.wait):
        recovered = txn.recover(layout, report, output)
        if recovered:
            report(recovered)
        with _from_parts(layout, req.source, req.arch, report=report,
                         progress=progress) as got:  # a folder of split parts
            whole = got.source if got else req.source
            applied = delta.Apply(layout, report=report) if delta.is_delta(whole) else None
            result = _install_locked(layout, replace(req, source=whole), report, output=output,
                                     progress=progress, applied=applied)
            if got:
                result = adding(result, got.fields())
        return adding(result, {"bundle": req.source, "delta": applied.info}) if applied else result


def _install_locked(layout: Layout, req: InstallRequest, report: Report,
                    *, output: Optional[IO[str]], progress: Optional[Progress],
                    applied: Optional[delta.Apply] = None) -> Outcome:
    arch = preflight.host_arch(layout, req.arch)
    path, chosen = preflight.resolve_source(req.source, arch)
    state, _ = load_state(layout)
    anchor = read_anchor(layout)
    failpoint.hit("after-lock")
    clock = int(time.time())
    opened = (applied or verify).open_bundle(path, anchor=anchor, clock=clock,
                                             now=verify.now_for(state.time_ratchet, clock))
    staging = None
    try:
        m = opened.header.manifest
        d = precheck.decide(m, state, req.given, arch=arch, chosen=chosen,
                            switch_bundle=req.switch_bundle)
        label, role, node, changes, decision = d.label, d.role, d.node, d.changes, d.decision
        failpoint.hit("after-header")
        cur = state.current
        if decision.action == "same":
            return _same_version(layout, opened=opened, state=state, node=node,
                                 changes=changes, reason=decision.reason, path=path,
                                 report=report, output=output)
        targets = precheck.check_change(layout, state, m, d=d)
        failpoint.hit("after-preflight")
        new = _release(opened, role=role, node=node, targets=targets, changes=changes)
        plan = summary.plan(cur, new)  # said before the (long) copy, and before placing
        for line in summary.lines(plan):
            report(line)
        report_options(report, req.given, node, changes=changes, first=cur is None)
        size = policy.human_bytes(m.payload_size)
        report(f"verified signatures of {label}; copying {size} into staging")
        staging = _new_staging(layout)
        stage = applied.stage_payload if applied else verify.stage_payload  # a delta: its own
        stage(opened, staging, on_bytes=progress(m.payload_size, "copied") if progress else None,
              after_member=lambda p: failpoint.hit("after-stage-member"))
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        opened.close()
    failpoint.hit("after-staging")  # THREATS 7: the medium may change now; we no longer read it
    new_anchor = None
    if opened.new_root is not None:  # pinned by txn only once the state is committed
        new_anchor = {"version": opened.root.version,
                      "sha256": hashlib.sha256(opened.new_root).hexdigest()}
    assert staging is not None
    try:
        return _place_new(layout, report=report, output=output, staging=staging,
                          opened=opened, state=state, new=new, label=label,
                          reason=decision.reason, path=path, anchor=new_anchor,
                          plan=plan, changes=changes, clock=clock)
    except BaseException:
        _drop_unused_releases(layout)
        raise


def _same_version(layout: Layout, *, opened: verify.Opened, state: State, node: NodeOptions,
                  changes: Any, reason: str, path: str, report: Report,
                  output: Optional[IO[str]]) -> Outcome:
    """The installed version again: new options are applied to it, the same manifest is
    repaired where the live tree differs (THREATS 35), another manifest changes nothing."""
    m = opened.header.manifest
    cur = state.current
    if cur is not None and changes:
        if cur.digest != opened.digest:
            report(f"warning: {m.name} {m.version} is installed from a different manifest "
                   f"({cur.digest[:16]}); the new options are applied to the installed one")
        report(f"{reason}: applying the new options to it")
        return apply_options(layout, state, node, report=report, output=output)
    same = cur is not None and cur.digest == opened.digest
    if same:
        mended = repair.reinstall(layout, opened=opened, state=state, report=report,
                                  output=output)
        if not mended.repaired:
            return Unchanged(mended.reason, {"digest": opened.digest, "same_digest": True,
                                             "repaired": [], "bundle": path})
        return Repaired(reason=mended.reason, bundle=path, digest=opened.digest,
                        repaired=mended.repaired, still_damaged=mended.still_damaged,
                        current=mended.current)
    report("warning: {} {} is installed from a different manifest ({}); versions must change "
           "when content does".format(m.name, m.version, cur.digest[:16] if cur else "?"))
    return Unchanged(reason, {"bundle": path, "digest": opened.digest, "same_digest": same})


def _release(opened: verify.Opened, *, role: str, node: NodeOptions, targets: Any,
             changes: Any) -> Release:
    """The state record of the release this verified bundle becomes once committed."""
    m = opened.header.manifest
    script = [x for x in m.members if x.kind == "install-script"][0]
    return Release(digest=opened.digest, name=m.name, version=m.version, arch=m.arch,
                   k3s_version=m.k3s_version, role=role, options=node.stored(),
                   targets=tuple(targets), installed_at=int(time.time()),
                   script=Target("", script.path, script.sha256, script.size, script.mode),
                   changes=tuple(str(c) for c in changes))


def _place_new(layout: Layout, *, report: Report, output: Optional[IO[str]], staging: str,
               opened: verify.Opened, state: State, new: Release, label: str, reason: str,
               path: str, anchor: Optional[Dict[str, Any]], plan: Any,
               changes: Any, clock: int) -> Installed:
    """Promote the verified staging copy and place it under the journal; the new root is
    pinned by the transaction only once the state is committed."""
    m = opened.header.manifest
    cur = state.current
    _promote(layout, staging, opened.digest)
    failpoint.hit("after-promote")
    after = State(current=new, previous=cur, generation=state.generation,
                  time_ratchet=verify.next_ratchet(state.time_ratchet, created=m.created,
                                                   root_expires=opened.root.expires,
                                                   clock=clock))
    report(f"placing {label} ({reason})")
    written = txn.run(layout, op="install", old=cur, new=new, state_after=after, report=report,
                      output=output, anchor=anchor)
    return Installed(reason=reason, bundle=path, current=summary_of(new) or {},
                     previous=summary_of(cur), changes=plan,
                     options_changed=[c.to_json() for c in changes],
                     generation=written.generation)


def _new_staging(layout: Layout) -> str:
    """A fresh ``staging/<tx>/`` made by us (``mkdir`` fails on anything already there), so
    nothing below it can be a planted symlink."""
    os.makedirs(layout.staging, exist_ok=True)
    staging = os.path.join(layout.staging, txn.new_tx())
    os.mkdir(staging, 0o700)
    return staging


def _drop_unused_releases(layout: Layout) -> None:
    """After a failed install: remove a promoted release the state does not name, unless a
    journal still needs it (an interrupted change is finished from it by ``recover``)."""
    try:
        if load_journal(layout) is None:
            txn.prune_releases(layout, load_state(layout)[0])
    except (InstallerError, OSError):
        pass  # the next run's recovery prunes it


def _fingerprint(data: bytes) -> Optional[str]:
    try:
        return str(rootmeta.root_fingerprint(rootmeta.parse_root(data, what="pinned root.json")))
    except InstallerError:
        return None


def _promote(layout: Layout, staging: str, digest: str) -> None:
    """Move the verified staging copy to ``releases/<digest>`` (same filesystem: renames)."""
    os.makedirs(layout.releases, exist_ok=True)
    dest = layout.release_dir(digest)
    if not os.path.lexists(dest):
        os.rename(staging, dest)
    else:  # a release we keep already (e.g. re-installing the one we rolled back from)
        for folder, _, files in os.walk(staging):
            rel = os.path.relpath(folder, staging)
            for name in files:
                member = os.path.normpath(os.path.join(rel, name))
                final = layout.release_file(digest, member)
                os.makedirs(os.path.dirname(final), exist_ok=True)
                os.replace(os.path.join(folder, name), final)
        shutil.rmtree(staging)
    fsync_dir(layout.releases)


def rollback(layout: Layout, *, wait: bool = False, allow_k3s_downgrade: bool = False,
             skip_start: Optional[bool] = None, report: Report = _quiet,
             output: Optional[IO[str]] = None) -> RolledBack:
    """Back to the previous release, atomically; the release left becomes the previous one."""
    with RunLock(layout, wait=wait):
        recovered = txn.recover(layout, report, output)
        if recovered:
            report(recovered)
        state, _ = load_state(layout)
        cur, prev, recorded, node = summary.rollback_choice(state, skip_start=skip_start,
                                                    allow_k3s_downgrade=allow_k3s_downgrade)
        repair.mend_kept(layout, prev, cur, report=report)  # never roll back onto a damaged copy
        if node.token_file and not os.path.isfile(node.token_file):
            report(f"warning: the recorded token file {node.token_file} does not exist; "
                   "K3s will not join its server until it does")
        changes = options.diff(recorded, node)
        target = replace(prev, options=node.stored(), installed_at=int(time.time()),
                         changes=tuple(str(c) for c in changes))
        after = State(current=target, previous=cur, generation=state.generation,
                      time_ratchet=state.time_ratchet)
        for line in summary.lines(summary.plan(cur, target)):
            report(line)
        if changes:
            report(options.describe(changes))
        report(f"rolling back {cur.name} {cur.version} -> {prev.version} with "
               f"INSTALL_K3S_EXEC={node.install_exec!r}"
               + (" INSTALL_K3S_SKIP_START=true" if node.skip_start else ""))
        written = txn.run(layout, op="rollback", old=cur, new=target, state_after=after,
                          report=report, output=output)
        return RolledBack(current=summary_of(target) or {}, previous=summary_of(cur),
                          options_changed=[c.to_json() for c in changes],
                          generation=written.generation)


def recover(layout: Layout, *, wait: bool = False, report: Report = _quiet,
            output: Optional[IO[str]] = None) -> Recovered:
    with RunLock(layout, wait=wait):
        return Recovered(txn.recover(layout, report, output))


def _kept_registries(layout: Layout) -> Optional[str]:
    """The hand-written registries.yaml a bundle's replaced, kept aside (place.apply)."""
    path = layout.path(REGISTRIES_KEPT)
    return path if os.path.lexists(path) else None


def status(layout: Layout, *, check: bool = False) -> Status:
    """What is installed; read-only (no lock, no repair). ``check``: also hash every placed
    file against the installed manifest (``status --verify``)."""
    state, read = load_state(layout)
    try:
        journal = load_journal(layout)
    except InstallerError as e:
        journal = {"op": "unknown", "error": e.message}
    anchor = fingerprint = None
    data = anchor_if_readable(layout)  # `status` keeps working; install and sync name it
    if data is not None:
        anchor = verify.anchor_version(data)
        fingerprint = _fingerprint(data)
    return Status(
        root=layout.root,
        installed=summary_of(state.current),
        previous=summary_of(state.previous),
        trust_root_version=anchor,
        trust_root_fingerprint=fingerprint,
        time_ratchet=state.time_ratchet,
        pending=None if journal is None else {
            "op": journal.get("op"), "phase": journal.get("phase"),
            "hint": "run `airgap-install recover` (or any install/rollback) to finish it"},
        state_copies_damaged=read.bad + read.stale,
        image_import_cache=imagecache.enabled(layout),
        foreign_images=foreign_files(layout, state.current),
        registries_backup=_kept_registries(layout),
        ok=journal is None and not read.bad,
        verify=repair.check(layout, state) if check else None,
    )
