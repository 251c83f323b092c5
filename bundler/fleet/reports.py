"""Device reports at the desk: where they come from, which devices are enrolled, and which
reports count.

Desk-side state lives beside the ring repository, never in it (``bundle repo push`` and the
stick carry the repository folder; devices never read this)::

    <repo>.fleet/enrolled.json   {device_id: {"public_key", "hostname", "ring", "enrolled"}}
    <repo>.fleet/ledger.json     {device_id: {"sequence", "digest", "report", "seen"}}

A report counts when it parses (canonical JSON, the fields of
``installer/trust/devicereport.py``), its signature is by the key whose fingerprint it names,
that device is enrolled, and its sequence is above every sequence the desk accepted from the
device before (``ledger.json``: the newest accepted report of each device, and the digests of
every report accepted, so reading the same stick twice is not a replay). Everything else is
rejected with one of four reasons: ``malformed``, ``bad signature``, ``unknown device``,
``replayed sequence``. The same bytes found twice (a stick and a registry) count once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bundler.errors import LocalError, SpecError
from installer.errors import FormatError, InstallerError, SignatureError
from installer.fsio import write_verified
from installer.sources import ocidist, ocireports
from installer.trust import devicereport, ed25519

REASONS = ("malformed", "bad signature", "unknown device", "replayed sequence")
MAX_FILES = 1_000_000


def state_dir(repo: Path) -> Path:
    """``<repo>.fleet/`` beside the repository folder."""
    repo = Path(repo).resolve()
    return repo.parent / (repo.name + ".fleet")


def _load(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise LocalError(f"cannot read {path}: {e}") from None
    try:  # the desk's own state (not signed, not from a device): plain JSON, any size
        doc = json.loads(data)
    except ValueError as e:
        raise LocalError(f"{path} is damaged: {e}",
                         hint="restore it from a backup (it is the desk's fleet state)") from None
    if not isinstance(doc, dict):
        raise LocalError(f"{path} is not a JSON object")
    return doc


def _save(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
    write_verified(path, (chunk.encode() for chunk in encoder.iterencode(doc)), mode=0o644)


_DROPPED = ("public_key", "metadata", "type", "format")


def compact(signed: dict[str, Any]) -> dict[str, Any]:
    """What the ledger keeps of an accepted report: the row's fields (the key is enrolled,
    the metadata reduced to its earliest expiry)."""
    expiries = [v["expires"] for v in (signed.get("metadata") or {}).values()
                if isinstance(v, dict) and isinstance(v.get("expires"), int)]
    out = {k: v for k, v in signed.items() if k not in _DROPPED}
    out["metadata_expires"] = min(expiries) if expiries else None
    return out


def load_enrolled(repo: Path) -> dict[str, Any]:
    return _load(state_dir(repo) / "enrolled.json")


def save_enrolled(repo: Path, doc: dict[str, Any]) -> None:
    _save(state_dir(repo) / "enrolled.json", doc)


def load_ledger(repo: Path) -> dict[str, Any]:
    return _load(state_dir(repo) / "ledger.json")


def save_ledger(repo: Path, doc: dict[str, Any]) -> None:
    _save(state_dir(repo) / "ledger.json", doc)


# --- sources --------------------------------------------------------------------------------

def read_source(src: str, *, ca_file: str | None = None,
                credentials: ocidist.Credentials | None = None) -> Iterator[tuple[str, bytes]]:
    """``(name, bytes)`` of every ``*.json`` file in a folder (recursively: a stick may hold
    a folder per site) or every report tag of ``oci://HOST/REPO``."""
    if src.startswith("oci://"):
        try:
            yield from ocireports.read_reports(src, ca_file=ca_file, credentials=credentials)
        except InstallerError as e:
            raise type(e)(f"reports {src}: {e.message}", hint=e.hint) from None
        return
    folder = Path(src)
    if not folder.is_dir():
        raise SpecError(f"--reports {src} is not a folder or oci://HOST/REPO",
                        hint="pass the folder devices wrote with --report-to")
    count = 0
    stack = [str(folder)]
    while stack:
        with os.scandir(stack.pop()) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
                continue
            if not entry.name.endswith(".json"):
                continue
            count += 1
            if count > MAX_FILES:
                raise SpecError(f"{src} holds over {MAX_FILES} report files")
            if not entry.is_file(follow_symlinks=False):
                yield entry.path, b"not a regular file"
                continue
            with open(entry.path, "rb") as f:
                yield entry.path, f.read(devicereport.MAX_BYTES + 1)


# --- classification -------------------------------------------------------------------------

@dataclass
class Collected:
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)   # device -> ledger entry
    rejected: list[dict[str, str]] = field(default_factory=list)
    unknown: dict[str, dict[str, Any]] = field(default_factory=dict)  # device -> newest report
    accepted: int = 0
    duplicates: int = 0
    candidates: dict[str, list[tuple[int, str, str, dict[str, Any]]]] = field(
        default_factory=dict)


def _kind(e: InstallerError) -> str:
    return "bad signature" if isinstance(e, SignatureError) else "malformed"


def _first_pass(items: Iterator[tuple[str, bytes]], enrolled: dict[str, Any],
                out: Collected) -> None:
    seen: set[str] = set()
    backend = ed25519.select_backend()  # once: it looks for an openssl command each time
    for name, data in items:
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            out.duplicates += 1
            continue
        seen.add(digest)
        try:
            signed = devicereport.open_report(data, backend=backend)
        except (FormatError, SignatureError) as e:
            out.rejected.append({"file": name, "reason": _kind(e), "detail": e.message})
            continue
        except InstallerError as e:
            out.rejected.append({"file": name, "reason": "malformed", "detail": e.message})
            continue
        dev = signed["device_id"]
        if dev not in enrolled:
            old = out.unknown.get(dev)
            if old is None or old["sequence"] < signed["sequence"]:
                out.unknown[dev] = signed
            out.rejected.append({"file": name, "reason": "unknown device",
                                 "detail": f"device {dev[:16]} ({signed['hostname']}) is not "
                                           "enrolled: `bundle fleet enroll`"})
            continue
        out.candidates.setdefault(dev, []).append((signed["sequence"], digest, name,
                                                   compact(signed)))


def collect(items: Iterator[tuple[str, bytes]], *, enrolled: dict[str, Any],
            ledger: dict[str, Any]) -> Collected:
    """Sort reports into accepted (the newest per device kept), rejected and unknown."""
    out = Collected()
    _first_pass(items, enrolled, out)
    for dev in ledger:
        if dev in enrolled:
            out.latest[dev] = dict(ledger[dev])
    while out.candidates:
        dev, found = out.candidates.popitem()
        entry = out.latest.get(dev)
        known = set(entry.get("seen", [])) if entry else set()
        top = int(entry["sequence"]) if entry else 0
        for seq, digest, name, signed in sorted(found, key=lambda x: (x[0], x[1])):
            if digest in known:
                continue        # accepted on an earlier run: not a replay, nothing new
            if seq <= top:
                out.rejected.append({"file": name, "reason": "replayed sequence",
                                     "detail": f"sequence {seq} of device {dev[:16]}: the "
                                               f"desk has accepted sequence {top}"})
                continue
            out.accepted += 1
            known.add(digest)
            top = seq
            entry = {"sequence": seq, "digest": digest, "report": signed}
        if entry is not None:
            entry["seen"] = sorted(known)
            out.latest[dev] = entry
    out.rejected.sort(key=lambda r: (REASONS.index(r["reason"]), r["file"]))
    return out


def load_reports(repo: Path, sources: list[str], *, ca_file: str | None = None,
                 credentials: ocidist.Credentials | None = None) -> Collected:
    enrolled = load_enrolled(repo)
    ledger = load_ledger(repo)

    def items() -> Iterator[tuple[str, bytes]]:
        for src in sources:
            yield from read_source(src, ca_file=ca_file, credentials=credentials)
    return collect(items(), enrolled=enrolled, ledger=ledger)


def remember(repo: Path, collected: Collected) -> None:
    """Keep what was accepted (``ledger.json``): a later older report is a replay."""
    save_ledger(repo, collected.latest)


def enroll(repo: Path, sources: list[str], *, accept_new: bool, device_ids: list[str],
           now: int, ca_file: str | None = None,
           credentials: ocidist.Credentials | None = None) -> list[dict[str, Any]]:
    """Record the public keys of devices seen in ``sources``: every one not enrolled yet
    (``accept_new``) or those named (a full id or a unique prefix of at least 8 digits)."""
    if accept_new == bool(device_ids):
        raise SpecError("give --accept-new or DEVICE_ID..., not both and not neither")
    enrolled = load_enrolled(repo)
    found = collect(_iter(sources, ca_file, credentials), enrolled=enrolled, ledger={}).unknown
    chosen = dict(found) if accept_new else {}
    for want in device_ids:
        match = [d for d in found if d.startswith(want.lower())] if len(want) >= 8 else []
        if len(match) != 1:
            raise SpecError(f"device {want}: {'no' if not match else 'more than one'} "
                            "unenrolled device with a report in the sources has that id",
                            hint="ids are in `bundle fleet status` (unknown devices); give "
                                 "at least 8 digits")
        chosen[match[0]] = found[match[0]]
    added = []
    for dev, signed in sorted(chosen.items()):
        enrolled[dev] = {"public_key": signed["public_key"], "hostname": signed["hostname"],
                         "ring": signed.get("ring"), "enrolled": now}
        added.append(dict(enrolled[dev], device_id=dev))
    if added:
        save_enrolled(repo, enrolled)
    return added


def _iter(sources: list[str], ca_file: str | None,
          credentials: ocidist.Credentials | None) -> Iterator[tuple[str, bytes]]:
    for src in sources:
        yield from read_source(src, ca_file=ca_file, credentials=credentials)
