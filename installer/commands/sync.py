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

import os
import posixpath
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Union

from installer.commands import install
from installer.commands.results import RingSet, Synced
from installer.errors import (
    ConfigError,
    HealthGateFailed,
    InstallerError,
    PolicyRefusal,
    TransferError,
)
from installer.format import canonjson
from installer.fsio import write_verified
from installer.host import preflight
from installer.host.layout import TRUST_DIR, Layout
from installer.host.options import Given
from installer.host.state import Options, RunLock, load_state, read_anchor
from installer.sources import ocidist, remote
from installer.trust import rings, tufclient

Report = Callable[[str], None]
DEFAULT_HEALTH = ("k3s kubectl get --raw=/readyz && k3s kubectl -n kube-system wait "
                  "--for=condition=Available deployment --all --timeout=30s")
_DOCS = ("timestamp", "snapshot", "targets")


def _quiet(_: str) -> None:
    pass


def _config_path(layout: Layout) -> str:
    return layout.path(TRUST_DIR + "/ring.json")


def _tuf_dir(layout: Layout) -> str:
    return os.path.join(layout.airgap, "tuf")


def _read_json(path: str, what: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            data = f.read(canonjson.MAX_DOCUMENT_BYTES + 1)
    except FileNotFoundError:
        return None
    doc = canonjson.loads_strict(data, what=what)
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} is not a JSON object", hint="remove it and configure again")
    return doc


def _write_json(path: str, doc: Dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_verified(path, [canonjson.encode(doc)], mode=0o644)


def set_ring(layout: Layout, ring: str) -> RingSet:
    """``config ring NAME``: local configuration, never taken from a medium."""
    if not ring or not ring.replace("-", "").isalnum():
        raise ConfigError(f"ring name {ring!r} must be letters, digits and '-'")
    doc = _read_json(_config_path(layout), "ring.json") or {}
    device_id = doc.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        device_id = _machine_id(layout) or uuid.uuid4().hex
    _write_json(_config_path(layout), {"ring": ring, "device_id": device_id})
    return RingSet(ring=ring, device_id=device_id, config=_config_path(layout))


def _machine_id(layout: Layout) -> Optional[str]:
    try:
        with open(layout.path("etc/machine-id")) as f:
            value = f.read(64).strip()
    except OSError:
        return None
    return value or None


def _config(layout: Layout) -> Dict[str, str]:
    doc = _read_json(_config_path(layout), "ring.json")
    if doc is None or not isinstance(doc.get("ring"), str) or not isinstance(
            doc.get("device_id"), str):
        raise ConfigError("this device follows no ring yet",
                          hint="run `airgap-install config ring NAME` (or `trust ROOT_JSON "
                               "--ring NAME`)")
    return {"ring": doc["ring"], "device_id": doc["device_id"]}


def _record(layout: Layout) -> Dict[str, Any]:
    doc = _read_json(os.path.join(_tuf_dir(layout), "sync.json"), "sync.json") or {}
    doc.setdefault("failed", [])
    doc.setdefault("ratchet", 0)
    return doc


def _save_record(layout: Layout, doc: Dict[str, Any]) -> None:
    _write_json(os.path.join(_tuf_dir(layout), "sync.json"), doc)


def _load_trusted(layout: Layout, ring: str, ratchet: int) -> tufclient.Trusted:
    def read(name: str) -> Optional[bytes]:
        try:
            with open(os.path.join(_tuf_dir(layout), name), "rb") as f:
                return f.read(canonjson.MAX_DOCUMENT_BYTES + 1)
        except FileNotFoundError:
            return None
    return tufclient.Trusted(root=read_anchor(layout), timestamp=read("timestamp.json"),
                             snapshot=read("snapshot.json"), targets=read("targets.json"),
                             ring=read(f"ring-{ring}.json"), ratchet=ratchet)


def _persister(layout: Layout, ring: str) -> tufclient.Persist:
    """Each document the TUF client verified, written as soon as it is verified (spec 5.3.8,
    5.4.5, 5.5.7): a sync that fails part-way keeps what it verified; None deletes (5.3.11)."""
    folder = _tuf_dir(layout)

    def persist(role: str, data: Optional[bytes]) -> None:
        if role == "root":
            path = layout.trust_anchor
        else:
            path = os.path.join(folder, f"ring-{ring}.json" if role == ring else f"{role}.json")
        if data is None:
            if os.path.exists(path) and role != "root":
                os.unlink(path)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_verified(path, [data], mode=0o644)
    return persist


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
    return dest


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


def _health(layout: Layout, cmd: str, timeout: float, *, interval: float,
            env_extra: Dict[str, str]) -> Optional[str]:
    """Run ``cmd`` until it exits 0 (None) or ``timeout`` passes (the last failure)."""
    env = dict(os.environ)
    env["PATH"] = layout.path("usr/local/bin") + os.pathsep + env.get("PATH", "")
    env.update(env_extra)
    deadline = time.monotonic() + timeout
    last = "never ran"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return last
        try:
            done = subprocess.run(["/bin/sh", "-c", cmd], env=env, capture_output=True,
                                  text=True, timeout=left)
            if done.returncode == 0:
                return None
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            last = f"exit {done.returncode}" + (f": {tail[0]}" if tail else "")
        except subprocess.TimeoutExpired:
            return f"still running after {timeout:g}s"
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


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
               previous: Optional[Dict[str, Any]] = None) -> Synced:
        return Synced(action=action, ring=self.ring, reason=self.reason,
                      metadata=self.metadata, override=self.override, current=current,
                      previous=previous)


def sync(layout: Layout, req: SyncRequest, *, report: Report = _quiet,
         now: Optional[int] = None) -> Synced:
    clock = int(time.time()) if now is None else now
    src = remote.open_source(req.source, plain_http=req.plain_http, ca_file=req.ca_file,
                             credentials=req.credentials)
    arch = preflight.host_arch(layout, req.arch)
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
        _note(layout, f"{plan.label} not installed: {e.message}")
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
                 report=report, clock=clock)


def _refresh_and_choose(layout: Layout, src: remote.Source, *, arch: str, clock: int,
                        report: Report) -> "Union[_Plan, Synced]":
    """Under the run lock: refresh the ring's metadata, persist it, choose; fetch the chosen
    target into local staging (a plan) or record that the device is up to date."""
    cfg = _config(layout)
    record = _record(layout)
    state, _ = load_state(layout)
    trusted = _load_trusted(layout, cfg["ring"], max(record["ratchet"], state.time_ratchet))
    refreshed = tufclient.refresh(trusted, source_fetcher(src), ring=cfg["ring"], now=clock,
                                  persist=_persister(layout, cfg["ring"]))
    record.update(ring=cfg["ring"], ratchet=refreshed.trusted.ratchet, last_sync=clock,
                  metadata=refreshed.versions, override=refreshed.override)
    if refreshed.override is not None:
        o = refreshed.override
        report(f"warning: expired {', '.join(o['roles'])} accepted under root-signed "
               f"override v{o['version']} until {o['expires']}: {o['reason']}")
    cur = state.current
    choice = rings.choose(refreshed.entries, arch=arch, device_id=cfg["device_id"],
                          installed_name=cur.name if cur else None,
                          installed_version=cur.version if cur else None,
                          yanked=refreshed.yanked,
                          failed=[f["digest"] for f in record["failed"]], ring=cfg["ring"])
    if choice.entry is None:
        record["result"] = "up to date"
        _save_record(layout, record)
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
    incoming = os.path.join(_tuf_dir(layout), "incoming")
    _prune_incoming(incoming, keep=f".{entry.sha256}.{os.path.basename(entry.path)}.partial")
    copy = delta = None
    if choice.action != "downgrade":
        delta = _fetch_delta(src, rings.delta_for(refreshed.entries, entry,
                                                      cur.digest if cur else None),
                             entry, incoming=incoming, report=report)
        copy = delta or copy_target(src, entry, incoming)
    _save_record(layout, dict(record, result="installing " + entry.path))
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
          previous: Optional[Dict[str, Any]], report: Report, clock: int) -> Synced:
    """The health command after the change: passed, the result; failed, roll back, record
    the version as failed (not retried) and raise ``HealthGateFailed`` (exit 7)."""
    label = plan.label
    failure = _health(layout, req.health_cmd or DEFAULT_HEALTH, req.health_timeout,
                      interval=req.health_interval, env_extra={
                          "AIRGAP_RING": plan.ring,
                          "AIRGAP_VERSION": str(plan.entry.custom.get("version")),
                          "AIRGAP_ROOT": layout.root})
    with RunLock(layout, wait=True):
        record = _record(layout)
        if failure is None:
            record["result"] = f"{'installed' if plan.copy else 'rolled back to'} {label}"
            _save_record(layout, record)
            return plan.result("installed" if plan.copy else "rolled-back", installed,
                               previous)
    report(f"health check of {label} failed ({failure}): rolling back")
    back = install.rollback(layout, wait=req.wait, report=report)
    with RunLock(layout, wait=True):
        record = _record(layout)
        record["failed"] = [f for f in record["failed"] if f.get("digest") != plan.digest] + [
            {"digest": plan.digest, "name": plan.entry.custom.get("name"),
             "version": plan.entry.custom.get("version"), "at": clock, "why": failure}]
        record["result"] = f"health check of {label} failed; rolled back"
        _save_record(layout, record)
    raise HealthGateFailed(
        f"health check of {label} failed after {req.health_timeout:g}s ({failure}); rolled "
        f"back to {back.current['name']} {back.current['version']}; {label} will not be "
        "retried until the ring lists something newer",
        hint="fix the release and publish a newer version")


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


def _note(layout: Layout, result: str) -> None:
    with RunLock(layout, wait=True):
        record = _record(layout)
        record["result"] = result
        _save_record(layout, record)


def _request(req: SyncRequest, path: str, cur: Any, *, arch: str) -> install.InstallRequest:
    # options given to sync replace the recorded ones; otherwise install keeps what the
    # device last ran with (installer/host/options.py merges the two)
    o = req.options
    given = Given(role=req.role) if o is None else Given(
        role=req.role, exec_args=o.exec_args, url=o.url, token_file=o.token_file,
        skip_start=o.skip_start)
    return install.InstallRequest(source=path, given=given, arch=req.arch and arch,
                                  wait=req.wait)


def sync_status(layout: Layout) -> Dict[str, Any]:
    """For ``status``: ring, metadata versions and expiry, last sync and its result."""
    try:
        cfg = _read_json(_config_path(layout), "ring.json") or {}
        record = _record(layout)
    except InstallerError as e:
        return {"error": e.message}
    return {"ring": cfg.get("ring"), "device_id": cfg.get("device_id"),
            "last_sync": record.get("last_sync"), "result": record.get("result"),
            "metadata": record.get("metadata"), "failed": record["failed"]}
