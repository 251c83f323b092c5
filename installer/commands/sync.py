"""``airgap-install sync``: follow a ring of a TUF ring repository (``bundle repo`` output).

The thin I/O shell around ``tufclient`` (metadata) and ``rings`` (which bundle):

    lock -> read the ring (local config) -> TUF refresh over the source (a folder, an
    http(s) mirror or an oci:// registry, all through ``remote.open_source``) -> persist the
    verified metadata and the time ratchet -> choose -> fetch the target into local staging,
    verified against the ring's entry before it appears there (the ring's delta from the
    installed release when it lists one; a delta that cannot be fetched or does not apply
    is followed in the same run by the full bundle) -> unlock -> the existing
    install path (all its checks) or, for a yanked version, rollback to the kept previous
    release -> health command until it passes or times out -> on failure: rollback, record
    the version as failed, exit 7.

Files::

    <root>/etc/rancher/airgap/ring.json           {"ring": ..., "device_id": ...} (local only)
    <root>/var/lib/rancher/airgap/tuf/*.json      the metadata verified last (TUF "trusted")
    <root>/var/lib/rancher/airgap/tuf/sync.json   ratchet, last sync, failed versions
    <root>/var/lib/rancher/airgap/tuf/incoming/   the target being fetched (a partial
                                                  download is resumed by the next sync)
"""

import hashlib
import os
import posixpath
import shutil
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Union

from installer.commands import install, syncgate, syncstate
from installer.commands.results import Synced
from installer.commands.syncgate import DEFAULT_HEALTH as DEFAULT_HEALTH  # sync's API
from installer.commands.syncstate import set_ring as set_ring
from installer.commands.syncstate import sync_status as sync_status
from installer.errors import (
    ConfigError,
    DigestMismatch,
    InstallerError,
    PolicyRefusal,
    TransferError,
    UntrustedContent,
)
from installer.format import canonjson
from installer.fsio import iter_file, open_regular
from installer.host import preflight
from installer.host.layout import Layout
from installer.host.options import Given
from installer.host.state import Options, RunLock
from installer.sources import ocidist, remote, transfer
from installer.trust import rings, tufclient

Report = Callable[[str], None]


_DOCS = ("timestamp", "snapshot", "targets")


def _quiet(_: str) -> None:
    pass


def source_fetcher(src: remote.Source) -> tufclient.Fetch:
    """Metadata files from ``SOURCE/metadata/`` (`bundle repo` output on a stick, behind a
    static HTTP server, or pushed to a registry), each size-capped; absent is ``None``."""
    if isinstance(src, remote.FolderSource) and not os.path.isdir(
            os.path.join(src.folder, "metadata")):
        raise ConfigError(f"{src.folder} holds no metadata/ folder",
                          hint="pass the folder `bundle repo init` made (copied as is)")

    def fetch(name: str) -> Optional[bytes]:
        if "/" in name or name.startswith("."):
            return None
        try:
            return src.read("metadata/" + name, max_size=canonjson.MAX_DOCUMENT_BYTES)
        except remote.Missing:
            return None
    return fetch


def folder_fetcher(source: str) -> tufclient.Fetch:
    """:func:`source_fetcher` of a folder."""
    return source_fetcher(remote.FolderSource(source))


def target_path(entry: tufclient.Entry) -> str:
    """Consistent snapshots: ``targets/<dir>/<sha256>.<basename>`` in the source."""
    head, base = posixpath.split(entry.path)
    return posixpath.join("targets", head, f"{entry.sha256}.{base}")


def copy_target(source: "remote.Source | str", entry: tufclient.Entry, dest_dir: str) -> str:
    """Fetch the target into ``dest_dir``, checked against the ring's length and sha256
    before it appears there; only this verified local copy is used afterwards (THREATS 7).
    From a network source a partial download stays beside it and the next sync resumes it."""
    src = remote.FolderSource(source) if isinstance(source, str) else source
    if not entry.sha256:
        raise PolicyRefusal(f"ring entry {entry.path} gives no sha256")
    os.makedirs(dest_dir, exist_ok=True)
    dest = os.path.join(dest_dir, f"{entry.sha256}.{os.path.basename(entry.path)}")
    try:
        src.fetch(target_path(entry), dest, sha256=entry.sha256, size=entry.length)
    except remote.Missing as e:
        # a stick copied without targets/ is the user's to fix (2); a mirror or registry that
        # fails to deliver what its own signed metadata lists is a transfer failure (5)
        if isinstance(src, remote.FolderSource):
            raise ConfigError(f"{e.message}: the ring lists {entry.path}, the source lacks it",
                              hint="copy the whole repository folder, targets/ included"
                              ) from None
        raise TransferError(f"{e.message}: the ring lists {entry.path}, the source lacks it",
                            hint="serve (or push) the whole repository folder, targets/ "
                                 "included, then sync again") from None
    _check_other_hashes(dest, entry)
    return dest


_OTHER_HASHES = {"sha512": hashlib.sha512}


def _check_other_hashes(path: str, entry: tufclient.Entry) -> None:
    """Every supported hash the ring lists must match, not only the sha256 the download was
    checked against (THREATS 53); a mismatch removes the copy."""
    for algo, value in sorted(entry.hashes.items()):
        make = _OTHER_HASHES.get(algo)
        if make is None:
            continue
        h = make()
        with open_regular(path, what="fetched target") as f:
            for chunk in iter_file(f):
                h.update(chunk)
        if h.hexdigest() != value:
            os.unlink(path)
            raise DigestMismatch(f"{entry.path} matches the ring's sha256 but not its {algo}",
                                 hint="the source holds damaged or altered bytes; it was not "
                                      "kept")


@dataclass(frozen=True)


class SyncRequest:
    source: str
    health_cmd: Optional[str] = None
    health_timeout: float = 300
    health_interval: float = 2
    role: Optional[str] = None
    options: Optional[Options] = None   # first install only; later the installed ones
    arch: Optional[str] = None
    wait: bool = False
    plain_http: bool = False            # network sources: see installer/sources/mirror.py
    ca_file: Optional[str] = None
    credentials: Optional[ocidist.Credentials] = None
    transfer_timeout: float = transfer.TRANSFER_TIMEOUT  # per transfer, + size / MIN_RATE


@dataclass(frozen=True)


class _Plan:
    """What a refresh chose, decided under the run lock (``copy`` None: a rollback)."""

    ring: str
    entry: tufclient.Entry
    reason: str
    digest: str
    copy: Optional[str]
    cur: Any
    incoming: str
    metadata: Dict[str, Any]
    override: Optional[Mapping[str, Any]]
    delta: bool = False   # ``copy`` is the ring's delta from the installed release

    @property
    def label(self) -> str:
        return f"{self.entry.custom.get('name')} {self.entry.custom.get('version')}"

    def result(self, action: str, current: Optional[Dict[str, Any]],
               previous: Optional[Dict[str, Any]] = None, *, fell_back: bool) -> Synced:
        return Synced(action=action, ring=self.ring, reason=self.reason,
                      metadata=self.metadata, override=self.override, current=current,
                      previous=previous, delta_fell_back=fell_back)


def sync(layout: Layout, req: SyncRequest, *, report: Report = _quiet,
         now: Optional[int] = None) -> Synced:
    clock = int(time.time()) if now is None else now
    src = remote.open_source(req.source, plain_http=req.plain_http, ca_file=req.ca_file,
                             credentials=req.credentials)
    _set_deadline(src, req.transfer_timeout)
    arch = preflight.host_arch(layout, req.arch)
    resumed = syncgate.resume_gate(layout, _spec(req), report=report, clock=clock)
    if resumed is not None:
        return resumed
    with RunLock(layout, wait=req.wait):
        plan = _refresh_and_choose(layout, src, arch=arch, clock=clock, report=report)
    if isinstance(plan, Synced):
        return plan
    try:
        if plan.copy is None:
            report(f"{plan.reason}: rolling back to {plan.label}")
            result = install.rollback(layout, wait=req.wait, report=report).to_json()
        else:
            report(f"{plan.reason}: installing {plan.label}")
            result = _install_step(layout, req, plan, src=src, arch=arch, report=report)
    except InstallerError as e:
        syncstate.note_result(layout, f"{plan.label} not installed: {e.message}",
                              clear_pending=True)
        raise
    finally:
        shutil.rmtree(plan.incoming, ignore_errors=True)
    installed = result.get("current") or {}
    if result.get("action") != "none" and installed.get("digest") != plan.digest:
        install.rollback(layout, wait=req.wait, report=report)
        raise PolicyRefusal(f"ring entry {plan.entry.path} names manifest {plan.digest}, the "
                            f"bundle holds {installed.get('digest')}: rolled back",
                            hint="the repository is inconsistent; re-publish the bundle")
    return _gate(layout, req, plan, installed=installed, previous=result.get("previous"),
                 fell_back=bool(result.get("delta_fell_back")), report=report, clock=clock)


def _refresh_and_choose(layout: Layout, src: remote.Source, *, arch: str, clock: int,
                        report: Report) -> "Union[_Plan, Synced]":
    """Under the run lock: refresh the ring's metadata, persist it, choose; fetch the chosen
    target into local staging (a plan) or record that the device is up to date."""
    cfg, record, state, trusted = syncstate.held(layout)
    refreshed = _refresh(layout, trusted, source_fetcher(src), ring=cfg["ring"], clock=clock)
    record.update(ring=cfg["ring"], ratchet=refreshed.trusted.ratchet, last_sync=clock,
                  metadata=refreshed.versions, override=refreshed.override)
    if refreshed.override is not None:
        o = refreshed.override
        report(f"warning: expired {', '.join(o['roles'])} accepted under root-signed "
               f"override v{o['version']} until {o['expires']}: {o['reason']}")
    cur = state.current
    choice = syncstate.choose(refreshed, cfg=cfg, record=record, state=state, arch=arch)
    if choice.entry is None:
        record["result"] = "up to date"
        syncgate.refuse_degraded(layout, record, cur, yanked=refreshed.yanked)
        syncstate.save_record(layout, record)
        return Synced(action="up-to-date", ring=cfg["ring"], reason=choice.reason,
                      metadata=refreshed.versions, override=refreshed.override,
                      current=cur.summary() if cur else None)
    entry = choice.entry
    digest = str(entry.custom.get("manifest_sha256"))
    if choice.action == "downgrade" and (state.previous is None
                                         or state.previous.digest != digest):
        raise PolicyRefusal(
            f"{choice.reason}; the ring's newest is {entry.custom.get('version')}, which is "
            "not the previous release kept here",
            hint="install that version by hand with `airgap-install install`")
    incoming = os.path.join(syncstate.tuf_dir(layout), "incoming")
    _prune_incoming(incoming, keep=f".{entry.sha256}.{os.path.basename(entry.path)}.partial")
    copy = delta = None
    if choice.action != "downgrade":
        delta = _fetch_delta(src, rings.delta_for(refreshed.entries, entry,
                                                      cur.digest if cur else None),
                             entry, incoming=incoming, report=report)
        copy = delta or copy_target(src, entry, incoming)
    gate = syncgate.pending_gate(entry, digest, yanked=refreshed.yanked, clock=clock)
    syncstate.save_record(layout, dict(record, result="installing " + entry.path, pending=gate))
    return _Plan(ring=cfg["ring"], entry=entry, reason=choice.reason, digest=digest,
                 copy=copy, cur=cur, incoming=incoming, metadata=refreshed.versions,
                 override=refreshed.override, delta=delta is not None)


def _fetch_delta(src: remote.Source, found: Optional[tufclient.Entry], entry: tufclient.Entry,
                 *, incoming: str, report: Report) -> Optional[str]:
    """The ring's delta from the installed release to ``entry``, fetched and checked against
    its signed entry; None when there is none or it cannot be had (then: the full bundle)."""
    if found is None:
        return None
    try:
        path = copy_target(src, found, incoming)
    except InstallerError as e:
        report(f"the delta {found.path} cannot be used ({e.message}); fetching the full "
               f"bundle {entry.path} instead")
        return None
    report(f"fetched the delta {found.path} ({found.length} bytes) instead of the full "
           f"bundle ({entry.length} bytes)")
    return path


def _install_step(layout: Layout, req: SyncRequest, plan: _Plan, *, src: remote.Source,
                  arch: str, report: Report) -> Dict[str, Any]:
    """Install the fetched copy; a delta that does not apply (damaged, or the base changed on
    disk) is followed in the same run by the full bundle, fetched now."""
    assert plan.copy is not None
    try:
        return install.install(layout, _request(req, plan.copy, plan.cur, arch=arch),
                               report=report).to_json()
    except InstallerError as e:
        if not plan.delta:
            raise
        report(f"the delta did not apply ({e.message}); installing the full bundle "
               f"{plan.entry.path} instead")
    with RunLock(layout, wait=req.wait):
        full = copy_target(src, plan.entry, plan.incoming)
    result = install.install(layout, _request(req, full, plan.cur, arch=arch),
                             report=report).to_json()
    return dict(result, delta_fell_back=True)


def _gate(layout: Layout, req: SyncRequest, plan: _Plan, *, installed: Dict[str, Any],
          previous: Optional[Dict[str, Any]], fell_back: bool, report: Report,
          clock: int) -> Synced:
    """The health command after the change (recorded as pending before it: THREATS 46):
    passed, the result; failed, ``syncgate.gate_failed`` (exit 7)."""
    syncstate.note_result(layout, f"{plan.label} {'installed' if plan.copy else 'back'}; "
                                  "health gate pending")
    failure = syncgate.run_gate(layout, _spec(req), ring=plan.ring,
                                version=str(plan.entry.custom.get("version")))
    if failure is None:
        done = "installed" if plan.copy else "rolled back to"
        syncstate.note_result(layout, f"{done} {plan.label}", clear_pending=True)
        return plan.result("installed" if plan.copy else "rolled-back", installed, previous,
                           fell_back=fell_back)
    gate = syncstate.read_record(layout).get("pending") or syncgate.pending_gate(
        plan.entry, plan.digest, yanked=[], clock=clock)
    syncgate.gate_failed(layout, _spec(req), gate, failure=failure, report=report,
                         clock=clock)


def _spec(req: "SyncRequest") -> syncgate.GateSpec:
    return syncgate.GateSpec(cmd=req.health_cmd or DEFAULT_HEALTH, timeout=req.health_timeout,
                             interval=req.health_interval, wait=req.wait)


def _prune_incoming(folder: str, *, keep: str) -> None:
    """Drop what an earlier sync left in staging, except the partial download of the target
    about to be fetched (resumed, then verified as a whole)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        if name != keep:
            path = os.path.join(folder, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)


def _request(req: SyncRequest, path: str, cur: Any, *, arch: str) -> install.InstallRequest:
    # options given to sync replace the recorded ones; otherwise install keeps what the
    # device last ran with (installer/host/options.py merges the two)
    o = req.options
    given = Given(role=req.role) if o is None else Given(
        role=req.role, exec_args=o.exec_args, url=o.url, token_file=o.token_file,
        skip_start=o.skip_start)
    return install.InstallRequest(source=path, given=given, arch=req.arch and arch,
                                  wait=req.wait)


# ---------------------------------------------------------------------------- the health gate
# A gate is recorded as pending in sync.json before the install starts (THREATS 46): if the
# installer dies before the gate passed, the next sync finds the pending release still
# installed and re-runs its gate first. The rollback target must not be yanked (THREATS 47);
# a release whose gate failed and that cannot go back stays, and every later sync says the
# device is degraded (exit 7) until the ring lists something newer.


# ---------------------------------------------------------------------------- the sync record


def _refresh(layout: Layout, trusted: tufclient.Trusted, fetch: tufclient.Fetch, *,
             ring: str, clock: int) -> tufclient.Refreshed:
    """``tufclient.refresh``; when it fails while the time ratchet is ahead of this host's
    clock, say so and how to recover (an edited or poisoned ratchet would otherwise refuse
    every sync with only "now is <far future>")."""
    try:
        return tufclient.refresh(trusted, fetch, ring=ring, now=clock,
                                 persist=syncstate.persister(layout, ring))
    except UntrustedContent as e:
        if trusted.ratchet <= clock + tufclient.FUTURE_SLACK:
            raise
        path = os.path.join(syncstate.tuf_dir(layout), "sync.json")
        raise type(e)(
            f"{e.message} (this device's time ratchet, {syncstate.iso_time(trusted.ratchet)}, "
            f"is ahead of its clock, {syncstate.iso_time(clock)})",
            hint=f"if this host's clock is right, the ratchet is not: move {path} aside (and "
                 f"check time_ratchet in {layout.state}) and sync again; if the clock is "
                 "wrong, set it") from None


def _set_deadline(src: remote.Source, seconds: float) -> None:
    """The overall deadline of each transfer from a network source (THREATS 45)."""
    client = getattr(src, "client", None)
    if isinstance(client, ocidist.Client):
        client.deadline.base = seconds


