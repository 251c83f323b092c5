"""``airgap-install sync``: follow a ring of a TUF ring repository (``bundle repo`` output).

The thin I/O shell around ``tufclient`` (metadata) and ``rings`` (which bundle):

    lock -> read the ring (local config) -> TUF refresh over the source (a folder, an
    http(s) mirror or an oci:// registry, all through ``remote.open_source``) -> persist the
    verified metadata and the time ratchet -> choose -> fetch the target into local staging,
    verified against the ring's entry before it appears there -> unlock -> the existing
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
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, NoReturn, Optional, Union

from installer.commands import install
from installer.commands.results import RingSet, Synced
from installer.errors import (
    ConfigError,
    DigestMismatch,
    FormatError,
    HealthGateFailed,
    InstallerError,
    PolicyRefusal,
    TransferError,
    UntrustedContent,
)
from installer.format import canonjson, safetext
from installer.fsio import iter_file, open_regular, read_regular, write_verified
from installer.host import preflight
from installer.host.layout import TRUST_DIR, Layout
from installer.host.options import Given
from installer.host.state import MAX_EPOCH, Options, RunLock, load_state, read_anchor
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
    data = read_regular(path, what=what, limit=canonjson.MAX_DOCUMENT_BYTES + 1)
    if data is None:
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
    if not _ring_name_ok(ring):
        raise ConfigError(f"ring name {ring!r} must be letters, digits and '-'")
    doc = _read_json(_config_path(layout), "ring.json") or {}
    device_id = doc.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        device_id = _machine_id(layout) or uuid.uuid4().hex
    _write_json(_config_path(layout), {"ring": ring, "device_id": device_id})
    return RingSet(ring=ring, device_id=device_id, config=_config_path(layout))


def _ring_name_ok(ring: str) -> bool:
    return bool(ring) and ring.replace("-", "").isalnum()


def _machine_id(layout: Layout) -> Optional[str]:
    try:
        data = read_regular(layout.path("etc/machine-id"), what="machine id", limit=64)
        value = (data or b"").decode("ascii").strip()
    except (OSError, InstallerError, UnicodeDecodeError):
        return None
    return value or None


def _config(layout: Layout) -> Dict[str, str]:
    doc = _read_json(_config_path(layout), "ring.json")
    if doc is None or not isinstance(doc.get("ring"), str) or not isinstance(
            doc.get("device_id"), str) or not _ring_name_ok(doc["ring"]) or \
            safetext.control_char(doc["device_id"]):
        raise ConfigError("this device follows no ring yet",
                          hint="run `airgap-install config ring NAME` (or `trust ROOT_JSON "
                               "--ring NAME`)")
    return {"ring": doc["ring"], "device_id": doc["device_id"]}


RECORD_HINT = ("nothing was changed. Move {path} aside and sync again: it holds only the time "
               "ratchet, the last sync and the versions recorded as failed here (those are then "
               "tried again); the verified metadata and the installed state are kept elsewhere")


def _record(layout: Layout) -> Dict[str, Any]:
    """``tuf/sync.json``, validated like ``state.json`` (THREATS 50): anything else is
    refused with the recovery hint (``status`` shows the error and keeps working)."""
    path = os.path.join(_tuf_dir(layout), "sync.json")
    try:
        doc = _read_json(path, "sync.json") or {}
    except InstallerError as e:
        raise FormatError(f"{path} is refused: {e.message}",
                          hint=RECORD_HINT.format(path=path)) from None
    doc.setdefault("failed", [])
    doc.setdefault("ratchet", 0)
    problem = record_problem(doc)
    if problem:
        raise FormatError(f"{path} is refused: {problem}", hint=RECORD_HINT.format(path=path))
    return doc




def _save_record(layout: Layout, doc: Dict[str, Any]) -> None:
    _write_json(os.path.join(_tuf_dir(layout), "sync.json"), doc)


def _load_trusted(layout: Layout, ring: str, ratchet: int) -> tufclient.Trusted:
    def read(name: str) -> Optional[bytes]:
        return read_regular(os.path.join(_tuf_dir(layout), name), what="trusted metadata",
                            limit=canonjson.MAX_DOCUMENT_BYTES + 1)
    return tufclient.Trusted(root=read_anchor(layout), timestamp=read("timestamp.json"),
                             snapshot=read("snapshot.json"), targets=read("targets.json"),
                             ring=read(f"ring-{ring}.json"), ratchet=ratchet)


def _persist(layout: Layout, refreshed: tufclient.Refreshed) -> None:
    t = refreshed.trusted
    folder = _tuf_dir(layout)
    os.makedirs(folder, exist_ok=True)
    for name, data in (("timestamp.json", t.timestamp), ("snapshot.json", t.snapshot),
                       ("targets.json", t.targets), (f"ring-{refreshed.ring}.json", t.ring)):
        if data is not None:
            write_verified(os.path.join(folder, name), [data], mode=0o644)
    if refreshed.root_bytes is not None:
        write_verified(layout.trust_anchor, [refreshed.root_bytes], mode=0o644)


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
    transfer_timeout: float = ocidist.TRANSFER_TIMEOUT  # per transfer, + size / MIN_RATE


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
    _set_deadline(src, req.transfer_timeout)
    arch = preflight.host_arch(layout, req.arch)
    resumed = _resume_gate(layout, req, report=report, clock=clock)
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
            result = install.install(layout, _request(req, plan.copy, plan.cur, arch=arch),
                                     report=report).to_json()
    except InstallerError as e:
        _note(layout, f"{plan.label} not installed: {e.message}", clear_pending=True)
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
    refreshed = _refresh(layout, trusted, source_fetcher(src), ring=cfg["ring"], clock=clock)
    _persist(layout, refreshed)
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
        _refuse_degraded(layout, record, cur, refreshed.yanked)
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
    copy = None if choice.action == "downgrade" else copy_target(src, entry, incoming)
    gate = _pending_gate(entry, digest, refreshed.yanked, clock)
    _save_record(layout, dict(record, result="installing " + entry.path, pending=gate))
    return _Plan(ring=cfg["ring"], entry=entry, reason=choice.reason, digest=digest,
                 copy=copy, cur=cur, incoming=incoming, metadata=refreshed.versions,
                 override=refreshed.override)


def _gate(layout: Layout, req: SyncRequest, plan: _Plan, *, installed: Dict[str, Any],
          previous: Optional[Dict[str, Any]], report: Report, clock: int) -> Synced:
    """The health command after the change (recorded as pending before it: THREATS 46):
    passed, the result; failed, ``_gate_failed`` (exit 7)."""
    _note(layout, f"{plan.label} {'installed' if plan.copy else 'back'}; health gate pending")
    failure = _run_gate(layout, req, ring=plan.ring,
                        version=str(plan.entry.custom.get("version")))
    if failure is None:
        _note(layout, f"{'installed' if plan.copy else 'rolled back to'} {plan.label}",
              clear_pending=True)
        return plan.result("installed" if plan.copy else "rolled-back", installed, previous)
    gate = _record(layout).get("pending") or _pending_gate(plan.entry, plan.digest, [], clock)
    _gate_failed(layout, req, gate, failure, report=report, clock=clock)


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


def _note(layout: Layout, result: str, *, clear_pending: bool = False) -> None:
    with RunLock(layout, wait=True):
        record = _record(layout)
        record["result"] = result
        if clear_pending:
            record.pop("pending", None)
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
        return {"error": e.message, "hint": e.hint}
    return {"ring": cfg.get("ring"), "device_id": cfg.get("device_id"),
            "last_sync": record.get("last_sync"), "result": record.get("result"),
            "metadata": record.get("metadata"), "failed": record["failed"]}


# ---------------------------------------------------------------------------- the health gate
# A gate is recorded as pending in sync.json before the install starts (THREATS 46): if the
# installer dies before the gate passed, the next sync finds the pending release still
# installed and re-runs its gate first. The rollback target must not be yanked (THREATS 47);
# a release whose gate failed and that cannot go back stays, and every later sync says the
# device is degraded (exit 7) until the ring lists something newer.


def _pending_gate(entry: tufclient.Entry, digest: str, yanked: Any,
                  clock: int) -> Dict[str, Any]:
    return {"digest": digest, "name": str(entry.custom.get("name")),
            "version": str(entry.custom.get("version")), "since": clock,
            "yanked": [{"name": str(y.get("name")), "version": str(y.get("version"))}
                       for y in yanked]}


def _run_gate(layout: Layout, req: SyncRequest, *, ring: str, version: str) -> Optional[str]:
    return _health(layout, req.health_cmd or DEFAULT_HEALTH, req.health_timeout,
                   interval=req.health_interval,
                   env_extra={"AIRGAP_RING": ring, "AIRGAP_VERSION": version,
                              "AIRGAP_ROOT": layout.root})


def _resume_gate(layout: Layout, req: SyncRequest, *, report: Report,
                 clock: int) -> Optional[Synced]:
    """Re-run the gate a killed sync left pending; None when there is none."""
    with RunLock(layout, wait=req.wait):
        record = _record(layout)
        gate = record.get("pending")
        if gate is None:
            return None
        cur = load_state(layout)[0].current
        if cur is None or cur.digest != gate["digest"]:
            record.pop("pending")  # the install it guarded never committed
            _save_record(layout, record)
            return None
        cfg = _config(layout)
    label = f"{gate['name']} {gate['version']}"
    failed = [f for f in record["failed"] if f.get("digest") == gate["digest"]]
    if failed:  # failed before the kill: finish what that run started
        failure: Optional[str] = str(failed[-1].get("why"))
    else:
        report(f"the health gate of {label} was interrupted: running it again")
        failure = _run_gate(layout, req, ring=cfg["ring"], version=gate["version"])
    if failure is None:
        _note(layout, f"installed {label} (its interrupted health gate passed)",
              clear_pending=True)
        return Synced(action="installed", ring=cfg["ring"], gate="passed",
                      reason=f"the interrupted health gate of {label} passed",
                      current=cur.summary(), metadata=record.get("metadata") or {},
                      override=record.get("override"))
    _gate_failed(layout, req, gate, failure, report=report, clock=clock)


def _gate_failed(layout: Layout, req: SyncRequest, gate: Dict[str, Any], failure: str, *,
                 report: Report, clock: int) -> NoReturn:
    """Record the release as failed, then roll back unless the way back is yanked or
    there is none: then stay, degraded. Either way exit 7."""
    label = f"{gate['name']} {gate['version']}"
    with RunLock(layout, wait=True):
        record = _record(layout)
        record["failed"] = [f for f in record["failed"] if f.get("digest") != gate["digest"]]
        record["failed"].append({"digest": gate["digest"], "name": gate["name"],
                                 "version": gate["version"], "at": clock, "why": failure})
        record["result"] = f"health check of {label} failed"
        _save_record(layout, record)
        prev = load_state(layout)[0].previous
    stay = None
    if prev is None:
        stay = "there is no previous release to go back to"
    elif rings.is_yanked(gate.get("yanked", []), prev.name, prev.version):
        stay = f"the previous release {prev.name} {prev.version} is yanked"
    if stay is not None:
        _note(layout, f"degraded: {label} failed its health check and stays ({stay})",
              clear_pending=True)
        raise HealthGateFailed(
            f"health check of {label} failed ({failure}); not rolled back: {stay}; this "
            "device is degraded until the ring lists something newer",
            hint="fix the release and publish a newer version, or install a good bundle "
                 "by hand with `airgap-install install`")
    report(f"health check of {label} failed ({failure}): rolling back")
    back = install.rollback(layout, wait=req.wait, report=report)
    _note(layout, f"health check of {label} failed; rolled back", clear_pending=True)
    raise HealthGateFailed(
        f"health check of {label} failed after {req.health_timeout:g}s ({failure}); rolled "
        f"back to {back.current['name']} {back.current['version']}; {label} will not be "
        "retried until the ring lists something newer",
        hint="fix the release and publish a newer version")


def _refuse_degraded(layout: Layout, record: Dict[str, Any], cur: Any, yanked: Any) -> None:
    """Nothing to install, but the release running here failed its gate or is yanked:
    say so, non-zero, never "up to date" (THREATS 47)."""
    if cur is None:
        return
    failed = [f for f in record["failed"] if f.get("digest") == cur.digest]
    if failed:
        why = f"{cur.name} {cur.version} failed its health check ({failed[-1].get('why')})"
        err: InstallerError = HealthGateFailed(
            f"degraded: {why} and the ring lists nothing newer to install",
            hint="publish a fixed, newer version to the ring, or install a good bundle by "
                 "hand with `airgap-install install`")
    elif rings.is_yanked(yanked, cur.name, cur.version):
        why = f"{cur.name} {cur.version} is yanked"
        err = PolicyRefusal(f"degraded: {why} and the ring lists nothing to go back to",
                            hint="publish a good version to the ring, or install one by hand "
                                 "with `airgap-install install`")
    else:
        return
    record["result"] = f"degraded: {why}"
    _save_record(layout, record)
    raise err


# ---------------------------------------------------------------------------- the sync record

_HEX64 = frozenset("0123456789abcdef")
MAX_FAILED = 1000


def _is_int(v: Any, low: int = 0, high: int = MAX_EPOCH) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _is_digest(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and set(v) <= _HEX64


def _fields_problem(d: Any, what: str, kinds: Dict[str, Callable[[Any], bool]]) -> str:
    if not isinstance(d, dict):
        return f"{what} must be an object"
    for key, ok in kinds.items():
        if key not in d or not ok(d[key]):
            return f"{what} has a missing or wrong {key!r} ({str(d.get(key))[:40]!r})"
    return ""


def _str(v: Any) -> bool:
    return isinstance(v, str)


def record_problem(doc: Dict[str, Any]) -> str:
    """What is wrong with a sync record, or "" (pure)."""
    if not _is_int(doc["ratchet"]):
        return f"ratchet must be a time from 0 to {MAX_EPOCH}, found {str(doc['ratchet'])[:40]!r}"
    for key in ("last_sync",):
        if key in doc and not _is_int(doc[key]):
            return f"{key} must be a time, found {str(doc[key])[:40]!r}"
    for key in ("ring", "result"):
        if key in doc and not isinstance(doc[key], str):
            return f"{key} must be text"
    failed = doc["failed"]
    if not isinstance(failed, list) or len(failed) > MAX_FAILED:
        return f"failed must be a list of at most {MAX_FAILED} records"
    for i, f in enumerate(failed):
        problem = _fields_problem(f, f"failed[{i}]", {"digest": _is_digest, "name": _str,
                                                      "version": _str, "at": _is_int,
                                                      "why": _str})
        if problem:
            return problem
    metadata = doc.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            return "metadata must be an object"
        for role, v in metadata.items():
            problem = _fields_problem(v, f"metadata {str(role)[:40]!r}",
                                      {"version": _is_int, "expires": _is_int})
            if problem:
                return problem
    if doc.get("override") is not None and not isinstance(doc["override"], dict):
        return "override must be an object"
    return _pending_problem(doc.get("pending"))


def _pending_problem(gate: Any) -> str:
    if gate is None:
        return ""
    problem = _fields_problem(gate, "pending", {"digest": _is_digest, "name": _str,
                                               "version": _str, "since": _is_int,
                                               "yanked": lambda v: isinstance(v, list)})
    if problem:
        return problem
    for y in gate["yanked"]:
        problem = _fields_problem(y, "pending yanked", {"name": _str, "version": _str})
        if problem:
            return problem
    return ""


def _refresh(layout: Layout, trusted: tufclient.Trusted, fetch: tufclient.Fetch, *,
             ring: str, clock: int) -> tufclient.Refreshed:
    """``tufclient.refresh``; when it fails while the time ratchet is ahead of this host's
    clock, say so and how to recover (an edited or poisoned ratchet would otherwise refuse
    every sync with only "now is <far future>")."""
    try:
        return tufclient.refresh(trusted, fetch, ring=ring, now=clock)
    except UntrustedContent as e:
        if trusted.ratchet <= clock + tufclient.FUTURE_SLACK:
            raise
        path = os.path.join(_tuf_dir(layout), "sync.json")
        raise type(e)(
            f"{e.message} (this device's time ratchet, {_iso(trusted.ratchet)}, is ahead of "
            f"its clock, {_iso(clock)})",
            hint=f"if this host's clock is right, the ratchet is not: move {path} aside (and "
                 f"check time_ratchet in {layout.state}) and sync again; if the clock is "
                 "wrong, set it") from None


def _set_deadline(src: remote.Source, seconds: float) -> None:
    """The overall deadline of each transfer from a network source (THREATS 45)."""
    client = getattr(src, "client", None)
    if isinstance(client, ocidist.Client):
        client.transfer_timeout = seconds


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(min(epoch, MAX_EPOCH)))
