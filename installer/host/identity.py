"""The device's own identity: an Ed25519 key pair in the state folder, and its report counter.

Files::

    <root>/var/lib/rancher/airgap/device/key.seed      32-byte seed, hex, mode 0600
    <root>/var/lib/rancher/airgap/device/identity.json {"public_key", "device_id", "created"}
    <root>/var/lib/rancher/airgap/device/sequence.json {"sequence": N} (the last report's)
    <root>/var/lib/rancher/airgap/device/gate.json     the health gate's last verdict
    <root>/var/lib/rancher/airgap/device/last-report.json

The key is made by ``airgap-install trust`` (or the first report of a device trusted before);
the device id is the sha256 of the public key (``devicekey.fingerprint``). The desk enrolls the
public key (``bundle fleet enroll``); a report signed by any other key counts for nothing.
"""

import os
import socket
import time
from typing import Any, Dict, Optional

from installer.errors import ConfigError
from installer.format import canonjson
from installer.fsio import write_verified
from installer.host.layout import Layout
from installer.trust import devicekey

_MAX = 64 * 1024


def folder(layout: Layout) -> str:
    return os.path.join(layout.airgap, "device")


def _path(layout: Layout, name: str) -> str:
    return os.path.join(folder(layout), name)


def read_json(layout: Layout, name: str) -> Optional[Dict[str, Any]]:
    try:
        with open(_path(layout, name), "rb") as f:
            data = f.read(_MAX + 1)
    except FileNotFoundError:
        return None
    doc = canonjson.loads_strict(data, what=_path(layout, name))
    if not isinstance(doc, dict):
        raise ConfigError(f"{_path(layout, name)} is not a JSON object",
                          hint="remove it; the next report writes it again")
    return doc


def write_json(layout: Layout, name: str, doc: Dict[str, Any]) -> None:
    os.makedirs(folder(layout), mode=0o700, exist_ok=True)
    write_verified(_path(layout, name), [canonjson.encode(doc)], mode=0o644)


def _read_seed(layout: Layout) -> Optional[bytes]:
    path = _path(layout, "key.seed")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        if os.fstat(f.fileno()).st_mode & 0o077:
            raise ConfigError(f"{path} is readable by others",
                              hint=f"chmod 600 {path}, or remove it to make a new identity "
                                   "(then enroll the device again)")
        text = f.read(200).decode("ascii", "replace").strip()
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        seed = b""
    if len(seed) != devicekey.SEED_LEN:
        raise ConfigError(f"{path} does not hold a 32-byte hex seed",
                          hint="remove it to make a new identity (then enroll the device "
                               "again)")
    return seed


def ensure(layout: Layout, *, now: Optional[int] = None) -> Dict[str, Any]:
    """The identity, made first when there is none (``trust``, or the first report)."""
    seed = _read_seed(layout)
    if seed is None:
        os.makedirs(folder(layout), mode=0o700, exist_ok=True)
        seed = os.urandom(devicekey.SEED_LEN)
        write_verified(_path(layout, "key.seed"), [seed.hex().encode() + b"\n"], mode=0o600)
    public = devicekey.public_key(seed)
    doc = read_json(layout, "identity.json")
    want = {"public_key": public.hex(), "device_id": devicekey.fingerprint(public)}
    if doc is None or {k: doc.get(k) for k in want} != want:
        doc = dict(want, created=int(time.time()) if now is None else now)
        write_json(layout, "identity.json", doc)
    return doc


def load(layout: Layout) -> Optional[Dict[str, Any]]:
    """The identity if made; read-only (``status``)."""
    doc = read_json(layout, "identity.json")
    if doc is None or not isinstance(doc.get("device_id"), str):
        return None
    return doc


def seed(layout: Layout) -> bytes:
    found = _read_seed(layout)
    if found is None:
        raise ConfigError(f"{_path(layout, 'key.seed')} is missing",
                          hint="run any report again: a new identity is made (enroll it)")
    return found


def hostname(layout: Layout) -> str:
    """``<root>/etc/hostname`` when present (an image or a test root), else the host's."""
    try:
        with open(layout.path("etc/hostname"), "rb") as f:
            name = f.read(256).decode("utf-8", "replace").strip()
        if name:
            return name
    except OSError:
        pass
    return socket.gethostname()


def next_sequence(layout: Layout) -> int:
    doc = read_json(layout, "sequence.json") or {}
    seq = doc.get("sequence", 0)
    n = (seq if isinstance(seq, int) and not isinstance(seq, bool) else 0) + 1
    write_json(layout, "sequence.json", {"sequence": n})
    return n
