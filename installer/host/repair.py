"""Placed files checked against the installed manifest, and put right (THREATS 35).

- ``check``: every live file of the current release and every kept copy in
  ``releases/<digest>/`` of the current and previous release, hashed against the sha256,
  size and mode the state recorded (the state is validated like a manifest, ``state``); the
  release's ``manifest.json`` must still hash to its release id. Used by
  ``status --verify``.
- ``reinstall``: ``install`` of the bundle already installed. The bundle was verified as for
  any install; if nothing differs it is "nothing to do". Otherwise its payload is staged
  (copied while hashing, as an install does), damaged or missing kept copies are replaced by
  the verified ones, kept copies of the previous release with the same content are repaired
  from them, and if a live file differs the release is placed again through the journaled
  transaction (``txn.run``: crash-safe; install.sh runs again, with the installed role and
  options).
- ``mend_kept``: before a rollback, a damaged kept copy is repaired from a verified file
  with the same sha256 in the other kept release, or the rollback is refused.
"""

import os
import shutil
import stat
from dataclasses import dataclass
from typing import IO, Any, Callable, Dict, List, Optional

from installer import policy
from installer.errors import DigestMismatch
from installer.format import bundlefmt
from installer.fsio import hash_file, verify_file
from installer.host import failpoint, preflight, txn
from installer.host.layout import Layout, Target
from installer.host.place import put
from installer.host.state import Release, State, load_state
from installer.trust import verify

Report = Callable[[str], None]


def _problem(path: str, t: Target, *, entry: bool) -> Optional[str]:
    """What is wrong with ``path`` as a placed copy of ``t`` (None: it is right). ``entry``:
    a live path (not followed, mode checked); else a kept copy (its mode is not checked:
    a hard-linked live file shares it)."""
    try:
        st = os.lstat(path) if entry else os.stat(path)
    except FileNotFoundError:
        return "missing"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size != t.size:
        return f"size {st.st_size}, expected {t.size}"
    if entry and stat.S_IMODE(st.st_mode) != t.mode:
        return f"mode {stat.S_IMODE(st.st_mode):04o}, expected {t.mode:04o}"
    digest = hash_file(path)[0]
    if digest != t.sha256:
        return f"sha256 {digest}, expected {t.sha256}"
    return None


def _kept(layout: Layout, release: Release) -> List[Dict[str, Any]]:
    out = []
    manifest = layout.release_file(release.digest, bundlefmt.MANIFEST_NAME)
    try:
        ok = hash_file(manifest)[0] == release.digest
    except FileNotFoundError:
        ok = False
    if not ok:
        out.append({"what": "kept", "release": release.version, "path": manifest,
                    "problem": "does not hash to the release id " + release.digest})
    for t in release.targets + (release.script,):
        path = layout.release_file(release.digest, t.member)
        problem = _problem(path, t, entry=False)
        if problem is not None:
            out.append({"what": "kept", "release": release.version, "path": path,
                        "member": t.member, "sha256": t.sha256, "problem": problem})
    return out


def live_problems(layout: Layout, release: Release) -> List[Dict[str, Any]]:
    out = []
    for t in release.targets:
        problem = _problem(layout.path(t.target), t, entry=True)
        if problem is not None:
            out.append({"what": "live", "release": release.version, "path": t.target,
                        "problem": problem})
    return out


def check(layout: Layout, state: State) -> Dict[str, Any]:
    """Hash every placed file against the installed manifest; list each difference."""
    damaged: List[Dict[str, Any]] = []
    checked = 0
    if state.current is not None:
        damaged += live_problems(layout, state.current)
        checked += len(state.current.targets)
    for release in (state.current, state.previous):
        if release is not None:
            damaged += _kept(layout, release)
            checked += len(release.targets) + 2
    return {"checked": checked, "damaged": damaged, "ok": not damaged}


def _replace_kept(src: str, dest: str, t: Target) -> None:
    put(src, dest, sha256=t.sha256, size=t.size, mode=t.mode)


def mend_kept(layout: Layout, release: Release, donor: Optional[Release],
              *, report: Report) -> None:
    """Make every kept copy of ``release`` verify, from a verified file with the same sha256
    kept for ``donor``; refuse (exit 3) when one cannot be mended (THREATS 35)."""
    donors: Dict[str, str] = {}
    if donor is not None:
        for t in donor.targets + (donor.script,):
            donors.setdefault(t.sha256, layout.release_file(donor.digest, t.member))
    lost = []
    for t in release.targets + (release.script,):
        path = layout.release_file(release.digest, t.member)
        if _problem(path, t, entry=False) is None:
            continue
        src = donors.get(t.sha256)
        if src is not None and verify_file(src, t.sha256, t.size):
            _replace_kept(src, path, t)
            report(f"repaired the kept copy {path} from a verified identical file")
            continue
        lost.append(t)
    if lost:
        raise DigestMismatch(
            "kept copy of {} in {} no longer matches its sha256".format(
                ", ".join(t.member for t in lost), layout.release_dir(release.digest)),
            hint="this copy cannot be used; roll forward instead (install a newer verified "
                 "bundle from its medium). `airgap-install status --verify` lists every "
                 "damaged file")


@dataclass(frozen=True)
class Mended:
    """What ``reinstall`` did: ``repaired`` the paths put back (none: nothing differed),
    ``still_damaged`` what a second check still finds."""

    reason: str
    repaired: List[str]
    still_damaged: List[Dict[str, Any]]
    current: Dict[str, Any]


def reinstall(layout: Layout, *, opened: verify.Opened, state: State, report: Report,
              output: Optional[IO[str]]) -> Mended:
    """``install`` of the installed bundle (same manifest digest): repair what differs."""
    cur = state.current
    assert cur is not None and cur.digest == opened.digest
    m = opened.header.manifest
    label = f"bundle {m.name} {m.version}"
    live = live_problems(layout, cur)
    kept = _kept(layout, cur)
    shas = {t.sha256 for t in cur.targets + (cur.script,)}
    prev_kept = []
    for d in _kept(layout, state.previous) if state.previous is not None else []:
        if d.get("sha256") in shas:
            prev_kept.append(d)  # mendable from this bundle's verified files
        else:
            report("warning: damaged kept copy {} of the previous release cannot be repaired "
                   "from this bundle ({}); rollback to it will be refused".format(
                       d["path"], d["problem"]))
    if not live and not kept and not prev_kept:
        return Mended(f"{label} is installed and every placed file verifies", [], [], {})
    for d in live + kept + prev_kept:
        report("damaged {} file {}: {}".format(d["what"], d["path"], d["problem"]))
    policy.check_space(preflight.space_needs(layout, m, cur.targets), bundle=label)
    staging = os.path.join(layout.staging, txn.new_tx())
    os.makedirs(layout.staging, exist_ok=True)
    os.mkdir(staging, 0o700)
    try:
        verify.stage_payload(opened, staging)
        failpoint.hit("after-staging")
        for d in kept:
            if "member" in d:
                t = _by_member(cur, d["member"])
                _replace_kept(os.path.join(staging, t.member), d["path"], t)
            else:  # manifest.json
                _replace_kept(os.path.join(staging, bundlefmt.MANIFEST_NAME), d["path"],
                              Target("", bundlefmt.MANIFEST_NAME, cur.digest,
                                     len(m.to_bytes()), 0o644))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if state.previous is not None and prev_kept:
        try:
            mend_kept(layout, state.previous, cur, report=report)
        except DigestMismatch as e:
            report(f"warning: {e.message} (the previous release cannot be rolled back to)")
    repaired = [d["path"] for d in live + kept + prev_kept]
    if live:
        report(f"placing {label} again to repair {len(live)} live file(s)")
        after = State(current=cur, previous=state.previous, generation=state.generation,
                      time_ratchet=state.time_ratchet)
        txn.run(layout, op="install", old=cur, new=cur, state_after=after, report=report,
                output=output)
    after_state = load_state(layout)[0]
    left = live_problems(layout, cur) + _kept(layout, after_state.current or cur)
    return Mended(f"{label} was installed; repaired what differed from the verified bundle",
                  repaired, left, cur.summary())


def _by_member(release: Release, member: str) -> Target:
    for t in release.targets + (release.script,):
        if t.member == member:
            return t
    raise KeyError(member)
