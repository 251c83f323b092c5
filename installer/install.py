"""The installer's commands as functions over a ``Layout``: trust, verify, install, rollback,
recover, status. Each returns a plain dict the CLI prints; errors are ``InstallerError``s.

Install order (ARCHITECTURE.md data flow): lock -> recover -> read envelope -> verify
signatures and tar envelope -> policy (arch, role, version, K3s minor) -> free space -> copy
every member into staging on the destination filesystem while hashing -> advance the pinned
root -> journaled placement from the verified copy -> install.sh -> commit state.
"""

import os
import shutil
import time
from dataclasses import dataclass, replace
from typing import IO, Any, Callable, Dict, Optional

from . import bundlefmt, failpoint, policy, preflight, txn, verify
from .errors import ConfigError, DigestMismatch, InstallerError
from .fsio import fsync_dir, verify_file, write_verified
from .layout import Layout, Target, targets_for
from .place import foreign_files
from .state import Options, Release, RunLock, State, load_journal, load_state

Report = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class InstallRequest:
    source: str                     # bundle file, or folder holding bundles (a USB stick)
    role: Optional[str] = None      # "server" | "agent"; None: as installed / bundle's only
    options: Options = Options()
    arch: Optional[str] = None      # only with a root other than /
    switch_bundle: bool = False
    wait: bool = False


def trust_root(layout: Layout, root_json: str, *, wait: bool = False) -> Dict[str, Any]:
    """Pin the trust anchor (first use only); later roots arrive signed inside bundles."""
    trust = verify._trust()
    try:
        with verify.open_regular(root_json, what="root") as f:
            data = f.read(bundlefmt.MAX_HEADER_MEMBER + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {root_json}: {e.strerror}") from None
    root = trust.load_trusted_root(data)  # structure and self-signature
    with RunLock(layout, wait=wait):
        if os.path.exists(layout.trust_anchor):
            with open(layout.trust_anchor, "rb") as f:
                pinned = trust.parse_root(f.read(), what=layout.trust_anchor)
            if pinned.signed_bytes == root.signed_bytes:
                return {"pinned": layout.trust_anchor, "root_version": pinned.version,
                        "changed": False}
            raise ConfigError(
                f"a trust anchor is already pinned at {layout.trust_anchor} "
                f"(root v{pinned.version})",
                hint="newer roots arrive signed inside bundles and advance it; to re-provision "
                     "this host, remove that file first (you then trust whatever you pin)")
        os.makedirs(os.path.dirname(layout.trust_anchor), exist_ok=True)
        write_verified(layout.trust_anchor, [data], mode=0o644)
    return {"pinned": layout.trust_anchor, "root_version": root.version,
            "expires": root.expires, "changed": True}


def verify_bundle(layout: Layout, source: str, *, arch: Optional[str] = None) -> Dict[str, Any]:
    """Full check of a bundle (signatures, envelope, every member hashed); writes nothing."""
    path, chosen = preflight.resolve_source(source, preflight.host_arch(layout, arch))
    anchor = verify.read_anchor(layout)
    state, _ = load_state(layout)
    clock = int(time.time())
    opened = verify.open_bundle(path, anchor=anchor, now=verify.now_for(state.time_ratchet, clock),
                                clock=clock)
    try:
        if chosen is not None:
            preflight.check_file_name(chosen, opened.header.manifest)
        checked = verify.hash_payload(opened)
    finally:
        opened.close()
    m = opened.header.manifest
    return {"bundle": path, "ok": True, "name": m.name, "version": m.version, "arch": m.arch,
            "k3s_version": m.k3s_version, "roles": list(m.roles), "digest": opened.digest,
            "members": len(m.members), "bytes": checked,
            "root_version": getattr(opened.root, "version", None)}


def install(layout: Layout, req: InstallRequest, *, report: Report = _quiet,
            output: Optional[IO[str]] = None) -> Dict[str, Any]:
    with RunLock(layout, wait=req.wait):
        recovered = txn.recover(layout, report, output)
        if recovered:
            report(recovered)
        return _install_locked(layout, req, report, output)


def _install_locked(layout: Layout, req: InstallRequest, report: Report,
                    output: Optional[IO[str]]) -> Dict[str, Any]:
    arch = preflight.host_arch(layout, req.arch)
    path, chosen = preflight.resolve_source(req.source, arch)
    state, _ = load_state(layout)
    anchor = verify.read_anchor(layout)
    failpoint.hit("after-lock")
    clock = int(time.time())
    opened = verify.open_bundle(path, anchor=anchor, now=verify.now_for(state.time_ratchet, clock),
                                clock=clock)
    staging = None
    try:
        m = opened.header.manifest
        label = f"bundle {m.name} {m.version}"
        if chosen is not None:
            preflight.check_file_name(chosen, m)
        failpoint.hit("after-header")
        cur = state.current
        policy.check_arch(m.arch, arch, bundle=label)
        role = policy.choose_role(asked=req.role, installed=cur.role if cur else None,
                                  bundle_roles=m.roles, bundle=label)
        if role == "agent" and not (req.options.url and req.options.token_file):
            raise ConfigError("installing an agent needs the server to join",
                              hint="pass --url https://SERVER:6443 --token-file FILE")
        decision = policy.decide_bundle_version(
            installed_name=cur.name if cur else None,
            installed_version=cur.version if cur else None,
            name=m.name, version=m.version, switch_name=req.switch_bundle)
        if decision.action == "same":
            same = cur is not None and cur.digest == opened.digest
            if not same:
                report("warning: {} {} is installed from a different manifest ({}); versions "
                       "must change when content does".format(m.name, m.version, cur.digest[:16]
                                                          if cur else "?"))
            return {"action": "none", "reason": decision.reason, "bundle": path,
                    "digest": opened.digest, "same_digest": same}
        if cur is not None:
            policy.check_k3s_change(cur.k3s_version, m.k3s_version,
                                    allow_minor_skip=m.allow_k3s_minor_skip,
                                    allow_downgrade=m.allow_k3s_downgrade)
        targets = targets_for(m.members, role)
        policy.check_space(preflight.space_needs(layout, m, targets), bundle=label)
        failpoint.hit("after-preflight")
        size = policy.human_bytes(m.payload_size)
        report(f"verified signatures of {label}; copying {size} into staging")
        staging = os.path.join(layout.staging, txn.new_tx())
        verify.stage_payload(opened, staging,
                             after_member=lambda p: failpoint.hit("after-stage-member"))
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        opened.close()
    failpoint.hit("after-staging")  # THREATS 7: the medium may change now; we no longer read it
    if opened.new_root is not None:
        write_verified(layout.trust_anchor, [opened.new_root], mode=0o644)
        report("trust anchor advanced to root v{}".format(getattr(opened.root, "version", "?")))
    _promote(layout, staging, opened.digest)
    failpoint.hit("after-promote")
    script_member = [x for x in m.members if x.kind == "install-script"][0]
    new = Release(digest=opened.digest, name=m.name, version=m.version, arch=m.arch,
                  k3s_version=m.k3s_version, role=role, options=req.options,
                  targets=tuple(targets), installed_at=int(time.time()),
                  script=Target("", script_member.path, script_member.sha256,
                                script_member.size, script_member.mode))
    after = State(current=new, previous=cur, generation=state.generation,
                  time_ratchet=verify.next_ratchet(state.time_ratchet, created=m.created,
                                                   root_expires=opened.root.expires,
                                                   clock=clock))
    report(f"placing {label} ({decision.reason})")
    written = txn.run(layout, op="install", old=cur, new=new, state_after=after, report=report,
                      output=output)
    return {"action": "installed", "reason": decision.reason, "bundle": path,
            "current": new.summary(), "previous": cur.summary() if cur else None,
            "generation": written.generation}


def _promote(layout: Layout, staging: str, digest: str) -> None:
    """Move the verified staging copy to ``releases/<digest>`` (same filesystem: renames)."""
    os.makedirs(layout.releases, exist_ok=True)
    dest = layout.release_dir(digest)
    if not os.path.exists(dest):
        os.rename(staging, dest)
    else:  # a release we keep already (e.g. re-installing the one we rolled back from)
        for folder, _, files in os.walk(staging):
            rel = os.path.relpath(folder, staging)
            os.makedirs(os.path.join(dest, rel), exist_ok=True)
            for name in files:
                os.replace(os.path.join(folder, name), os.path.join(dest, rel, name))
        shutil.rmtree(staging)
    fsync_dir(layout.releases)


def rollback(layout: Layout, *, wait: bool = False, allow_k3s_downgrade: bool = False,
             skip_start: Optional[bool] = None, report: Report = _quiet,
             output: Optional[IO[str]] = None) -> Dict[str, Any]:
    """Back to the previous release, atomically; the release left becomes the previous one."""
    with RunLock(layout, wait=wait):
        recovered = txn.recover(layout, report, output)
        if recovered:
            report(recovered)
        state, _ = load_state(layout)
        cur, prev = state.current, state.previous
        if cur is None or prev is None:
            raise ConfigError("there is no previous release to roll back to",
                              hint="`airgap-install status` shows what is installed")
        policy.check_k3s_change(cur.k3s_version, prev.k3s_version, allow_minor_skip=True,
                                allow_downgrade=allow_k3s_downgrade)
        folder = layout.release_dir(prev.digest)
        for t in prev.targets + (prev.script,):
            if not verify_file(os.path.join(folder, t.member), t.sha256, t.size):
                raise DigestMismatch(
                    f"kept copy of {t.member} in {folder} no longer matches its sha256 {t.sha256}",
                    hint="roll forward instead: install a verified bundle from its medium")
        opts = prev.options if skip_start is None else replace(prev.options,
                                                               skip_start=skip_start)
        target = replace(prev, options=opts, installed_at=int(time.time()))
        after = State(current=target, previous=cur, generation=state.generation,
                      time_ratchet=state.time_ratchet)
        report(f"rolling back {cur.name} {cur.version} -> {prev.version}")
        written = txn.run(layout, op="rollback", old=cur, new=target, state_after=after,
                          report=report, output=output)
        return {"action": "rolled-back", "current": target.summary(),
                "previous": cur.summary(), "generation": written.generation}


def recover(layout: Layout, *, wait: bool = False, report: Report = _quiet,
            output: Optional[IO[str]] = None) -> Dict[str, Any]:
    with RunLock(layout, wait=wait):
        done = txn.recover(layout, report, output)
    return {"action": "recovered" if done else "none", "detail": done or "nothing to do"}


def status(layout: Layout) -> Dict[str, Any]:
    """What is installed; read-only (no lock, no repair)."""
    state, read = load_state(layout)
    try:
        journal = load_journal(layout)
    except InstallerError as e:
        journal = {"op": "unknown", "error": e.message}
    anchor = None
    if os.path.exists(layout.trust_anchor):
        with open(layout.trust_anchor, "rb") as f:
            anchor = verify.anchor_version(f.read())
    return {
        "root": layout.root,
        "installed": state.current.summary() if state.current else None,
        "previous": state.previous.summary() if state.previous else None,
        "trust_root_version": anchor,
        "time_ratchet": state.time_ratchet,
        "pending": None if journal is None else {
            "op": journal.get("op"), "phase": journal.get("phase"),
            "hint": "run `airgap-install recover` (or any install/rollback) to finish it"},
        "state_copies_damaged": read.bad + read.stale,
        "foreign_images": foreign_files(layout, state.current),
        "ok": journal is None and not read.bad,
    }
