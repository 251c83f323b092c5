"""One change of the live tree (install or rollback) as a journaled transaction.

Steps, each ending at a named fail point (``failpoint``)::

    prepare backups -> journal(phase=placing) -> place files -> journal(phase=placed)
    -> run install.sh -> write state (COMMIT) -> advance the trust anchor
    -> drop journal, backups, old releases

A newer root from the bundle's verified chain is named in the journal (``anchor``: version
and sha256 of ``releases/<new>/roots/<N>.root.json``) and written as the pinned anchor only
after the state is committed, also when a recovery finishes the change: a failed or undone
change never moves the anchor (docs/rootmeta.md).

Recovery (``recover``, run under the lock at the start of every changing command):

- no journal: nothing was placed; leftovers (staging, temp names, orphan releases) are removed;
- journal and state already names the new release: committed, only clean up;
- phase ``placing``: the tree may be a mix, so it is undone from the journal's records;
- phase ``placed``: every file is the new release's; install.sh is run again (it is
  idempotent) and the change is committed. Going back here would put an old binary under a
  service that may already have started the new one (a K3s minor cannot be downgraded).

So after any crash (THREATS 21) the next run leaves the old release or the new one.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from typing import IO, Any, Callable, Dict, List, Optional

from installer.errors import EnvironmentProblem, InstallerError
from installer.format import bundlefmt
from installer.fsio import open_regular, write_verified
from installer.host import failpoint, imagecache, place
from installer.host.layout import Layout
from installer.host.state import (
    Release,
    State,
    clear_journal,
    load_journal,
    load_state,
    read_anchor,
    release_or_none,
    save_journal,
    save_state,
)

Report = Callable[[str], None]
SCRIPT_TIMEOUT = 3600
# Variables we set; inherited values would change the role silently.
_OWNED_ENV = ("INSTALL_K3S_SKIP_DOWNLOAD", "INSTALL_K3S_BIN_DIR", "INSTALL_K3S_EXEC",
              "INSTALL_K3S_SKIP_START", "K3S_URL", "K3S_TOKEN", "K3S_TOKEN_FILE")


def new_tx() -> str:
    return uuid.uuid4().hex[:16]


def script_env(layout: Layout, release: Release, base: Dict[str, str]) -> Dict[str, str]:
    """The environment install.sh runs with: offline, our bin dir, the release's role."""
    env = {k: v for k, v in base.items() if k not in _OWNED_ENV}
    opts = release.options
    env["INSTALL_K3S_SKIP_DOWNLOAD"] = "true"
    env["INSTALL_K3S_BIN_DIR"] = layout.bin_dir
    env["INSTALL_K3S_EXEC"] = (release.role + " " + opts.exec_args).strip()
    if opts.url:
        env["K3S_URL"] = opts.url
    if opts.token_file:
        env["K3S_TOKEN_FILE"] = opts.token_file
    if opts.skip_start:
        env["INSTALL_K3S_SKIP_START"] = "true"
    return env


def run_script(layout: Layout, release: Release, output: Optional[IO[str]] = None) -> None:
    """Run the release's verified install.sh (argument list, no shell string)."""
    script = layout.release_file(release.digest, release.script.member)
    out = output if output is not None else sys.stderr
    try:
        env = script_env(layout, release, dict(os.environ))
        proc = subprocess.run(["/bin/sh", script], env=env,
                              cwd=layout.release_dir(release.digest), stdin=subprocess.DEVNULL,
                              stdout=out, stderr=out, timeout=SCRIPT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"install.sh of {release.name} {release.version} did not "
                                 f"finish in {SCRIPT_TIMEOUT} s") from None
    if proc.returncode != 0:
        raise EnvironmentProblem(
            f"install.sh of {release.name} {release.version} exited with status "
            f"{proc.returncode}",
            hint="read its output above; the previous release was put back")


def _backup_dir(layout: Layout, tx: str) -> str:
    return os.path.join(layout.tx_dir(tx), "backup")


def run(layout: Layout, *, op: str, old: Optional[Release], new: Release, state_after: State,
        report: Report, output: Optional[IO[str]] = None,
        anchor: Optional[Dict[str, Any]] = None) -> State:
    """Apply a change from ``old`` to ``new`` and commit ``state_after``. Returns the state
    written. On an error the live tree is put back and the error re-raised. ``anchor``
    (``{"version": N, "sha256": ...}`` of ``roots/<N>.root.json`` in the new release) is
    pinned only once the state is committed."""
    tx = new_tx()
    backup_dir = _backup_dir(layout, tx)
    try:
        records = place.prepare(layout, backup_dir, old, new=new)
    except BaseException:
        shutil.rmtree(layout.tx_dir(tx), ignore_errors=True)
        raise
    failpoint.hit("after-backups")
    journal = {"tx": tx, "op": op, "phase": "placing", "from": old.to_json() if old else None,
               "to": new.to_json(), "undo": records, "state_after": state_after.to_json(),
               "anchor": anchor}
    save_journal(layout, journal)
    failpoint.hit("after-journal")
    try:
        if any(t.target.startswith(place.IMAGES_PREFIX) for t in new.targets):
            imagecache.opt_in(layout)  # before K3s can start with the new archives
        notes = place.apply(layout, old, new, hit=failpoint.hit)
    except BaseException:
        _undo(layout, journal)
        raise
    for note in notes:
        report(note)
    journal["phase"] = "placed"
    save_journal(layout, journal)
    failpoint.hit("after-placed")
    return _finish(layout, journal, report, output=output)


def _finish(layout: Layout, journal: Dict[str, Any], report: Report,
            *, output: Optional[IO[str]]) -> State:
    new = Release.from_json(journal["to"])
    old = release_or_none(journal["from"])
    try:
        run_script(layout, new, output)
    except BaseException:
        _undo(layout, journal)
        if old is not None:
            report(f"running install.sh of {old.name} {old.version} again to restore its "
                   "service settings")
            try:
                run_script(layout, old, output)
            except EnvironmentProblem as e:
                report(f"warning: {e.message}")
        raise
    failpoint.hit("after-install-sh")
    state = save_state(layout, State.from_json(journal["state_after"]))
    failpoint.hit("after-state")
    advance_anchor(layout, journal, report)
    _cleanup(layout, journal, state)
    return state


def advance_anchor(layout: Layout, journal: Dict[str, Any], report: Report) -> None:
    """Pin the newer root a committed change brought (idempotent; after the state commit)."""
    anchor = journal.get("anchor")
    if not anchor:
        return
    new = Release.from_json(journal["to"])
    try:
        data = _chain_to(layout, new, anchor["version"])
        if data is None:
            return  # pinned already (a run killed after writing it)
        if hashlib.sha256(data).hexdigest() != anchor["sha256"]:
            raise EnvironmentProblem(f"the kept root v{anchor['version']} is not the one "
                                     "verified at install time")
        write_verified(layout.trust_anchor, [data], sha256=anchor["sha256"], mode=0o644,
                       what=f"root v{anchor['version']} for {layout.trust_anchor}")
    except (OSError, InstallerError) as e:
        # committed already: the old anchor stays; the next bundle carries the chain again
        report(f"warning: trust anchor not advanced to root v{anchor['version']}: {e}")
        return
    failpoint.hit("after-anchor")
    report("trust anchor advanced to root v{}".format(anchor["version"]))


_ROOT_READ_CAP = 4 << 20  # a root.json is a small document


def _chain_to(layout: Layout, release: Release, version: int) -> Optional[bytes]:
    """The kept ``roots/<version>.root.json`` of ``release``, re-checked as root updates from
    the pinned anchor one version at a time (``rootmeta.update_root``); None when the pinned
    root already is that version or newer."""
    from installer.trust import (  # only here: every other command reaches it through verify
        rootmeta,
    )
    current = rootmeta.load_trusted_root(read_anchor(layout))
    if current.version >= version:
        return None
    data = b""
    for v in range(current.version + 1, version + 1):
        path = layout.release_file(release.digest, f"{bundlefmt.ROOTS_DIR}/{v}.root.json")
        with open_regular(path, what="kept root") as f:
            data = f.read(_ROOT_READ_CAP + 1)
        current = rootmeta.update_root(current, data)
    return data


def _undo(layout: Layout, journal: Dict[str, Any]) -> None:
    old = release_or_none(journal["from"])
    place.undo(layout, _backup_dir(layout, journal["tx"]), old, records=journal["undo"])
    failpoint.hit("after-undo")
    clear_journal(layout)
    shutil.rmtree(layout.tx_dir(journal["tx"]), ignore_errors=True)


def _cleanup(layout: Layout, journal: Dict[str, Any], state: State) -> None:
    place.remove_replaced_images(layout, release_or_none(journal["from"]),
                                 Release.from_json(journal["to"]))
    failpoint.hit("after-remove-replaced-images")
    clear_journal(layout)
    failpoint.hit("after-commit")
    shutil.rmtree(layout.tx_dir(journal["tx"]), ignore_errors=True)
    prune_releases(layout, state)


def prune_releases(layout: Layout, state: State) -> List[str]:
    """Keep only the current and previous releases (live files are separate links)."""
    keep = {r.digest for r in (state.current, state.previous) if r is not None}
    removed: List[str] = []
    try:
        names = os.listdir(layout.releases)
    except FileNotFoundError:
        return removed
    for name in names:
        if name not in keep:
            shutil.rmtree(os.path.join(layout.releases, name), ignore_errors=True)
            removed.append(name)
    return removed


def recover(layout: Layout, report: Report, output: Optional[IO[str]] = None) -> Optional[str]:
    """Bring the tree to a consistent release after a killed run; the lock must be held.
    Returns a sentence describing what was done, or None when there was nothing to do."""
    done = None
    journal = load_journal(layout)
    state, _ = load_state(layout)
    if journal is not None:
        new = Release.from_json(journal["to"])
        after = State.from_json(journal["state_after"])
        label = "{} of {} {}".format(journal["op"], new.name, new.version)
        if state.current is not None and state.current.digest == new.digest \
                and state.generation > after.generation:
            advance_anchor(layout, journal, report)
            _cleanup(layout, journal, state)
            done = f"cleaned up after the committed {label}"
        elif journal["phase"] == "placing":
            report(f"an interrupted {label} was found: restoring the previous files")
            _undo(layout, journal)
            done = f"undid the interrupted {label}"
        else:
            report(f"an interrupted {label} was found: finishing it")
            state = _finish(layout, journal, report, output=output)
            done = f"finished the interrupted {label}"
    state, read = load_state(layout)
    if read.bad or read.stale:
        state = save_state(layout, state)  # a copy torn or behind: rewrite both from the good
        done = "repaired {} from its other copy".format(", ".join(read.bad + read.stale))
    for folder in (layout.staging, layout.txn):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    place.sweep_temp_files(layout)
    prune_releases(layout, state)
    return done
