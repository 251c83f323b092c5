"""Installed state, the change journal and the run lock, on disk.

State and journal are each stored as two copies (``X`` and ``X.bak``), each written temp ->
fsync -> rename -> fsync folder, each carrying a sha256 of its own content and a generation
number. Reading takes the valid copy with the highest generation, so one torn or corrupted copy
is recovered from the other (THREATS 22). The primary is written first: its rename is the commit
point.

The lock is ``fcntl.flock`` on ``install.lock``: held for the whole run, released by the kernel
when the process dies (even by SIGKILL), so a stale lock never blocks the next run (THREATS 24).
"""

import errno
import fcntl
import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple

from installer.errors import (
    ConfigError,
    EnvironmentProblem,
    FormatError,
    InstallerError,
    UnsafeMember,
)
from installer.format import canonjson, safetext
from installer.format.bundlefmt import MAX_HEADER_MEMBER
from installer.fsio import fsync_dir, read_regular, write_verified
from installer.host import failpoint, rootfs
from installer.host.layout import (
    Layout,
    Target,
    check_release_id,
    check_release_targets,
    touched_paths,
)

STATE_FORMAT = "airgap-install-state/v1"
JOURNAL_FORMAT = "airgap-install-journal/v1"
_BACKUP_RE = re.compile(r"^[0-9]{5,9}$")   # place.prepare's backup names
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Options:
    """How install.sh was (or is to be) run for a release."""

    exec_args: str = ""
    url: Optional[str] = None
    token_file: Optional[str] = None
    skip_start: bool = False

    def to_json(self) -> Dict[str, Any]:
        return {"exec": self.exec_args, "url": self.url, "token_file": self.token_file,
                "skip_start": self.skip_start}

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Options":
        for key in ("exec", "url", "token_file"):  # they reach install.sh's env file
            value = d[key]
            if value is not None and not isinstance(value, str):
                raise FormatError(f"options {key} must be text, found {str(value)[:40]!r}")
            if value and safetext.control_char(value):
                raise FormatError(f"options {key} holds a control character: "
                                  f"{safetext.escape(value)[:120]}")
        return cls(exec_args=d["exec"], url=d["url"], token_file=d["token_file"],
                   skip_start=bool(d["skip_start"]))


@dataclass(frozen=True)
class Release:
    """A bundle as placed on this host."""

    digest: str           # sha256 of the signed manifest bytes
    name: str
    version: str
    arch: str
    k3s_version: str
    role: str
    options: Options
    targets: Tuple[Target, ...]
    script: Target            # install.sh, run from the release copy (target is "")
    installed_at: int = 0
    changes: Tuple[str, ...] = ()  # what this change did to the options (options.diff), shown

    def to_json(self) -> Dict[str, Any]:
        return {"digest": self.digest, "name": self.name, "version": self.version,
                "arch": self.arch, "k3s_version": self.k3s_version, "role": self.role,
                "options": self.options.to_json(),
                "targets": [t.to_json() for t in self.targets],
                "script": self.script.to_json(), "installed_at": self.installed_at,
                "options_changed": list(self.changes)}

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Release":
        """Parse and validate (THREATS 34): types, the release id, and every path exactly as
        a manifest's (``layout.check_release_targets``). Raises ``InstallerError``."""
        _fields(d, "release", {"digest": str, "name": str, "version": str, "arch": str,
                               "k3s_version": str, "role": str, "options": dict,
                               "targets": list, "script": dict, "installed_at": int})
        check_release_id(d["digest"])
        _fields(d["options"], "release.options", {"exec": str, "skip_start": bool})
        for key in ("url", "token_file"):
            if not isinstance(d["options"].get(key), (str, type(None))):
                raise FormatError(f"release.options.{key} has the wrong type")
        release = cls(digest=d["digest"], name=d["name"], version=d["version"], arch=d["arch"],
                      k3s_version=d["k3s_version"], role=d["role"],
                      options=Options.from_json(d["options"]),
                      targets=tuple(_target(t) for t in d["targets"]),
                      script=_target(d["script"]), installed_at=d["installed_at"],
                      changes=_changes(d.get("options_changed", [])))
        check_release_targets(arch=release.arch, role=release.role, targets=release.targets,
                              script=release.script, version=release.version,
                              k3s_version=release.k3s_version)
        return release

    def summary(self) -> Dict[str, Any]:
        return {"name": self.name, "version": self.version, "k3s_version": self.k3s_version,
                "digest": self.digest, "arch": self.arch, "role": self.role,
                "installed_at": self.installed_at}


def _fields(d: Any, what: str, types: Dict[str, type]) -> None:
    """``d`` is an object holding at least these keys with these JSON types (bool is not
    an int here); raises FormatError naming the first that is not."""
    if not isinstance(d, dict):
        raise FormatError(f"{what} is not an object")
    for key, typ in types.items():
        if key not in d:
            raise FormatError(f"{what} has no {key!r}")
        value = d[key]
        if isinstance(value, bool) and typ is not bool or not isinstance(value, typ):
            raise FormatError(f"{what}.{key} has the wrong type ({type(value).__name__})")
        if isinstance(value, int) and not 0 <= value < 2 ** 63:
            raise FormatError(f"{what}.{key} is out of range")


def _changes(value: Any) -> Tuple[str, ...]:
    """What the last change did to the options (display text), type-checked like the rest."""
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value) \
            or len(value) > 64:
        raise FormatError("release.options_changed must be a short list of strings")
    return tuple(value)


def _target(t: Dict[str, Any]) -> Target:
    _fields(t, "target", {"target": str, "member": str, "sha256": str, "size": int,
                          "mode": int})
    return Target(t["target"], t["member"], t["sha256"], t["size"], t["mode"])


def release_or_none(d: Optional[Dict[str, Any]]) -> Optional[Release]:
    return None if d is None else Release.from_json(d)


@dataclass(frozen=True)
class State:
    current: Optional[Release] = None
    previous: Optional[Release] = None
    time_ratchet: int = 0  # newest signing time verified on this host (manifest "created")
    generation: int = 0

    def to_json(self) -> Dict[str, Any]:
        return {"format": STATE_FORMAT, "generation": self.generation,
                "current": self.current.to_json() if self.current else None,
                "previous": self.previous.to_json() if self.previous else None,
                "time_ratchet": self.time_ratchet}

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "State":
        if d.get("format") != STATE_FORMAT:
            raise FormatError("unknown state format {!r}".format(d.get("format")))
        _fields(d, "state", {"time_ratchet": int, "generation": int})
        return cls(current=release_or_none(d["current"]), previous=release_or_none(d["previous"]),
                   time_ratchet=_bounded(d["time_ratchet"], "time_ratchet", MAX_EPOCH),
                   generation=_bounded(d["generation"], "generation", 2 ** 63))


MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z, the last time a root's `expires` can name


def _bounded(value: Any, key: str, limit: int) -> int:
    """A numeric state field: an integer in [0, limit] (ValueError names it otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ValueError(f"{key} must be an integer from 0 to {limit}, found {value!r:.40}")
    return value


# ---------------------------------------------------------------------------- two copies


def _envelope(doc: Dict[str, Any]) -> bytes:
    """``canonjson.encode({"doc": doc, "sha256": ...})``, encoding ``doc`` once ("doc" sorts
    before "sha256"; a state of thousands of targets is large)."""
    body = canonjson.encode(doc)
    return b'{"doc":' + body + b',"sha256":"' + hashlib.sha256(body).hexdigest().encode() + b'"}'


def _open_envelope(data: bytes, what: str) -> Dict[str, Any]:
    outer = canonjson.loads_canonical(data, what=what)
    if not isinstance(outer, dict) or set(outer) != {"doc", "sha256"}:
        raise FormatError(f"{what} has no checksum envelope")
    if hashlib.sha256(canonjson.encode(outer["doc"])).hexdigest() != outer["sha256"]:
        raise FormatError(f"{what} fails its checksum")
    doc = outer["doc"]
    if not isinstance(doc, dict) or not isinstance(doc.get("generation"), int):
        raise FormatError(f"{what} has no generation")
    return doc


@dataclass
class DualRead:
    doc: Optional[Dict[str, Any]]
    bad: List[str] = field(default_factory=list)       # copies that exist but are unreadable
    stale: List[str] = field(default_factory=list)     # valid copies older than the chosen one


def read_dual(path: str) -> DualRead:
    """Read ``path`` and ``path.bak``; the valid copy with the highest generation wins."""
    found: List[Tuple[int, str, Dict[str, Any]]] = []
    result = DualRead(None)
    why: List[str] = []
    for p in (path, path + ".bak"):
        try:
            data = read_regular(p, what="state file", limit=canonjson.MAX_DOCUMENT_BYTES + 1)
            if data is None:
                continue
            doc = _open_envelope(data, p)
        except InstallerError as e:  # a FIFO, device or folder is never read, never waited on
            result.bad.append(p)
            why.append(e.message)
            continue
        found.append((doc["generation"], p, doc))
    if not found:
        if result.bad:
            raise EnvironmentProblem(
                "both copies of {} are unreadable: {}".format(path, "; ".join(why)),
                hint="restore one from a backup; the installer will not guess the installed "
                     "state")
        return result
    found.sort(key=lambda x: x[0], reverse=True)
    result.doc = found[0][2]
    result.stale = [p for g, p, _ in found[1:] if g != found[0][0]]
    return result


def write_dual(path: str, doc: Dict[str, Any]) -> None:
    """Write both copies; the primary first (its rename is the commit point)."""
    data = _envelope(doc)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_verified(path, [data], what=path, mode=0o600)
    failpoint.hit(f"after-{os.path.basename(path)}-primary")
    write_verified(path + ".bak", [data], what=path + ".bak", mode=0o600)


def remove_dual(path: str) -> None:
    for p in (path, path + ".bak"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    fsync_dir(os.path.dirname(path))


STATE_HINT = ("nothing was changed. Restore state.json from a backup, or start afresh: move "
              "state.json, state.json.bak and journal.json out of {folder} and install the "
              "bundle again from its medium (files already in place are then treated as "
              "foreign: backed up, replaced, and `status` lists stray image archives)")


def load_state(layout: Layout) -> Tuple[State, DualRead]:
    """The installed state, validated like a manifest before anything uses it (THREATS 34):
    a state that fails is an error (exit 3) with a recovery hint, never acted on."""
    read = read_dual(layout.state)
    if read.doc is None:
        return State(), read
    try:
        return State.from_json(read.doc), read
    except InstallerError as e:
        raise FormatError(f"{layout.state} is refused: {e.message}",
                          hint=STATE_HINT.format(folder=layout.airgap)) from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise FormatError(f"{layout.state} is not a state this installer understands: {e!r}",
                          hint=STATE_HINT.format(folder=layout.airgap)) from None


def save_state(layout: Layout, state: State) -> State:
    """Write ``state`` with the next generation; returns what was written."""
    new = replace(state, generation=state.generation + 1)
    write_dual(layout.state, new.to_json())
    return new


def load_journal(layout: Layout) -> Optional[Dict[str, Any]]:
    doc = read_dual(layout.journal).doc
    if doc is not None and doc.get("format") != JOURNAL_FORMAT:
        raise EnvironmentProblem(f"{layout.journal} has unknown format {doc.get('format')!r}",
                                 hint="it was written by another installer version; finish "
                                      "the change with that version")
    if doc is not None:
        try:
            check_journal(layout, doc)
        except InstallerError as e:
            raise FormatError(f"{layout.journal} is refused: {e.message}",
                              hint=STATE_HINT.format(folder=layout.airgap)) from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise FormatError(f"{layout.journal} is not a journal this installer understands: "
                              f"{e!r}", hint=STATE_HINT.format(folder=layout.airgap)) from None
    return doc


_UNDO_KINDS = ("absent", "release", "backup")


def check_journal(layout: Layout, doc: Dict[str, Any]) -> None:
    """Validate a journal as strictly as the state (THREATS 34): its releases, its
    transaction id, and every undo record (a path of one of its releases; a backup name
    this installer writes)."""
    _fields(doc, "journal", {"tx": str, "op": str, "phase": str, "undo": list,
                             "state_after": dict, "to": dict})
    layout.tx_dir(doc["tx"])
    if doc["op"] not in ("install", "rollback", "reconfigure") or \
            doc["phase"] not in ("placing", "placed"):
        raise FormatError("unknown op {!r} or phase {!r}".format(doc["op"], doc["phase"]))
    new = Release.from_json(doc["to"])
    old = release_or_none(doc.get("from"))
    State.from_json(doc["state_after"])
    paths = set(touched_paths(new.targets, old.targets if old else ()))
    for rec in doc["undo"]:
        _fields(rec, "undo record", {"target": str, "kind": str})
        if rec["target"] not in paths or rec["kind"] not in _UNDO_KINDS:
            raise UnsafeMember(f"undo record {rec!r} names no file of this change")
        if rec["kind"] == "release" and old is None:
            raise FormatError("an undo record restores from a release the journal lacks")
        if rec["kind"] == "backup" and not _BACKUP_RE.match(str(rec.get("backup"))):
            raise UnsafeMember("undo record backup name {!r} is not one this installer "
                               "writes".format(rec.get("backup")))
    anchor = doc.get("anchor")
    if anchor is not None:
        _fields(anchor, "journal anchor", {"version": int, "sha256": str})
        if not _SHA256_RE.match(anchor["sha256"]):
            raise FormatError("journal anchor sha256 is malformed")


def save_journal(layout: Layout, journal: Dict[str, Any]) -> None:
    doc = dict(journal)
    doc["format"] = JOURNAL_FORMAT
    doc["generation"] = int(doc.get("generation", 0)) + 1
    journal["generation"] = doc["generation"]
    write_dual(layout.journal, doc)


def clear_journal(layout: Layout) -> None:
    remove_dual(layout.journal)


# ---------------------------------------------------------------------------- lock


class RunLock:
    """Exclusive ``flock`` on the install lock for one run; the kernel drops it on death."""

    def __init__(self, layout: Layout, *, wait: bool = False) -> None:
        self._path = layout.lock
        self._wait = wait
        self._fd: Optional[int] = None

    def __enter__(self) -> "RunLock":
        os.makedirs(os.path.dirname(self._path), exist_ok=True)
        fd = rootfs.open_nofollow(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
            if not self._wait:
                os.close(fd)
                raise EnvironmentProblem(
                    f"another airgap-install run holds the lock {self._path}",
                    hint="wait for it to finish, or pass --wait to queue behind it") from None
            fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def anchor_if_readable(layout: Layout) -> Optional[bytes]:
    """The pinned root's bytes, or None when there is none or it is not a regular file."""
    try:
        return read_regular(layout.trust_anchor, what="trust anchor", limit=MAX_HEADER_MEMBER + 1)
    except InstallerError:
        return None


def read_anchor(layout: Layout) -> bytes:
    data = read_regular(layout.trust_anchor, what="trust anchor", limit=MAX_HEADER_MEMBER + 1)
    if data is not None:
        return data
    raise ConfigError(
        f"no trust anchor is pinned at {layout.trust_anchor}",
        hint="run `airgap-install trust ROOT_JSON%s` once with the root.json your bundle "
             "publisher gave you" % ("" if layout.root == "/" else " --root " + layout.root))
