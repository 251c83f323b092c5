"""The device-side files of ``airgap-install sync`` (THREATS 50): the local ring
configuration (``ring.json``), the sync record (``tuf/sync.json``: time ratchet, last sync and
its result, versions recorded as failed, a pending health gate), and the TUF metadata verified
last. Every one is read through ``fsio.read_regular`` (a FIFO or folder is refused at once) and
validated before use: an edited sync record is refused with the recovery hint, and ``status``
shows the refusal instead of failing.

Files::

    <root>/etc/rancher/airgap/ring.json           {"ring": ..., "device_id": ...} (local only)
    <root>/var/lib/rancher/airgap/tuf/*.json      the metadata verified last (TUF "trusted")
    <root>/var/lib/rancher/airgap/tuf/sync.json   ratchet, last sync, failed versions, pending
"""

import os
import time
import uuid
from typing import Any, Callable, Dict, NamedTuple, Optional

from installer.commands.results import RingSet
from installer.errors import ConfigError, FormatError, InstallerError
from installer.format import canonjson, safetext
from installer.fsio import read_regular, write_verified
from installer.host.layout import TRUST_DIR, Layout
from installer.host.state import MAX_EPOCH, RunLock, State, load_state, read_anchor
from installer.trust import rings, tufclient


def config_path(layout: Layout) -> str:
    return layout.path(TRUST_DIR + "/ring.json")


def tuf_dir(layout: Layout) -> str:
    return os.path.join(layout.airgap, "tuf")


def read_json(path: str, what: str) -> Optional[Dict[str, Any]]:
    data = read_regular(path, what=what, limit=canonjson.MAX_DOCUMENT_BYTES + 1)
    if data is None:
        return None
    doc = canonjson.loads_strict(data, what=what)
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} is not a JSON object", hint="remove it and configure again")
    return doc


def write_json(path: str, doc: Dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_verified(path, [canonjson.encode(doc)], mode=0o644)


def set_ring(layout: Layout, ring: str) -> RingSet:
    """``config ring NAME``: local configuration, never taken from a medium."""
    if not ring_name_ok(ring):
        raise ConfigError(f"ring name {ring!r} must be letters, digits and '-'")
    doc = read_json(config_path(layout), "ring.json") or {}
    device_id = doc.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        device_id = machine_id(layout) or uuid.uuid4().hex
    write_json(config_path(layout), {"ring": ring, "device_id": device_id})
    return RingSet(ring=ring, device_id=device_id, config=config_path(layout))


def ring_name_ok(ring: str) -> bool:
    return bool(ring) and ring.replace("-", "").isalnum()


def machine_id(layout: Layout) -> Optional[str]:
    try:
        data = read_regular(layout.path("etc/machine-id"), what="machine id", limit=64)
        value = (data or b"").decode("ascii").strip()
    except (OSError, InstallerError, UnicodeDecodeError):
        return None
    return value or None


def read_config(layout: Layout) -> Dict[str, str]:
    doc = read_json(config_path(layout), "ring.json")
    if doc is None or not isinstance(doc.get("ring"), str) or not isinstance(
            doc.get("device_id"), str) or not ring_name_ok(doc["ring"]) or \
            safetext.control_char(doc["device_id"]):
        raise ConfigError("this device follows no ring yet",
                          hint="run `airgap-install config ring NAME` (or `trust ROOT_JSON "
                               "--ring NAME`)")
    return {"ring": doc["ring"], "device_id": doc["device_id"]}


RECORD_HINT = ("nothing was changed. Move {path} aside and sync again: it holds only the time "
               "ratchet, the last sync and the versions recorded as failed here (those are then "
               "tried again); the verified metadata and the installed state are kept elsewhere")


def read_record(layout: Layout) -> Dict[str, Any]:
    """``tuf/sync.json``, validated like ``state.json`` (THREATS 50): anything else is
    refused with the recovery hint (``status`` shows the error and keeps working)."""
    path = os.path.join(tuf_dir(layout), "sync.json")
    try:
        doc = read_json(path, "sync.json") or {}
    except InstallerError as e:
        raise FormatError(f"{path} is refused: {e.message}",
                          hint=RECORD_HINT.format(path=path)) from None
    doc.setdefault("failed", [])
    doc.setdefault("ratchet", 0)
    problem = record_problem(doc)
    if problem:
        raise FormatError(f"{path} is refused: {problem}", hint=RECORD_HINT.format(path=path))
    return doc


def save_record(layout: Layout, doc: Dict[str, Any]) -> None:
    write_json(os.path.join(tuf_dir(layout), "sync.json"), doc)


def load_trusted(layout: Layout, ring: str, ratchet: int) -> tufclient.Trusted:
    def read(name: str) -> Optional[bytes]:
        return read_regular(os.path.join(tuf_dir(layout), name), what="trusted metadata",
                            limit=canonjson.MAX_DOCUMENT_BYTES + 1)
    return tufclient.Trusted(root=read_anchor(layout), timestamp=read("timestamp.json"),
                             snapshot=read("snapshot.json"), targets=read("targets.json"),
                             ring=read(f"ring-{ring}.json"), ratchet=ratchet)


def persister(layout: Layout, ring: str) -> tufclient.Persist:
    """Each document the TUF client verified, written as soon as it is verified (spec 5.3.8,
    5.4.5, 5.5.7): a sync that fails part-way keeps what it verified; None deletes (5.3.11)."""
    folder = tuf_dir(layout)

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


def note_result(layout: Layout, result: str, *, clear_pending: bool = False) -> None:
    with RunLock(layout, wait=True):
        record = read_record(layout)
        record["result"] = result
        if clear_pending:
            record.pop("pending", None)
        save_record(layout, record)


def sync_status(layout: Layout) -> Dict[str, Any]:
    """For ``status``: ring, the id its percent rollout hashes (``rollout_id``: the device id
    of ring.json, not the report key's ``device_id``), metadata versions and expiry, last sync
    and its result."""
    try:
        cfg = read_json(config_path(layout), "ring.json") or {}
        record = read_record(layout)
    except InstallerError as e:
        return {"error": e.message, "hint": e.hint}
    return {"ring": cfg.get("ring"), "rollout_id": cfg.get("device_id"),
            "last_sync": record.get("last_sync"), "result": record.get("result"),
            "metadata": record.get("metadata"), "failed": record["failed"]}


# ---------------------------------------------------------------------------- validation

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


def iso_time(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(min(epoch, MAX_EPOCH)))


class Held(NamedTuple):
    """What the device holds before a sync (read alike by sync and its dry run)."""

    cfg: Dict[str, Any]          # ring.json: ring, device_id (the rollout id)
    record: Dict[str, Any]       # tuf/sync.json: ratchet, failed versions, last result
    state: State
    trusted: tufclient.Trusted   # the ring's verified metadata, with the higher ratchet


def held(layout: Layout) -> Held:
    cfg = read_config(layout)
    record = read_record(layout)
    state, _ = load_state(layout)
    return Held(cfg, record, state, load_trusted(
        layout, cfg["ring"], max(record["ratchet"], state.time_ratchet)))


def choose(refreshed: tufclient.Refreshed, *, cfg: Dict[str, Any], record: Dict[str, Any],
           state: State, arch: str) -> rings.Choice:
    """The ring's choice for this device: its arch, rollout id, installed release, the
    yanked list and the versions recorded as failed here."""
    cur = state.current
    return rings.choose(refreshed.entries, arch=arch, device_id=cfg["device_id"],
                        installed_name=cur.name if cur else None,
                        installed_version=cur.version if cur else None,
                        yanked=refreshed.yanked,
                        failed=[f["digest"] for f in record["failed"]], ring=cfg["ring"])
