"""Synthetic signed device reports for the desk's tests (the format of
installer/trust/devicereport.py, signed with real Ed25519 keys)."""

import hashlib
from typing import Any, Dict, Optional

from installer.trust import devicekey, devicereport


def seed_for(name: str) -> bytes:
    return hashlib.sha256(b"test device " + name.encode()).digest()


def report(name: str, *, ring: str, version: str, sequence: int, time: int,
           gate: str = "passed", failed: Optional[list] = None,  # type: ignore[type-arg]
           previous: Optional[str] = None, arch: str = "amd64",
           output: str = "") -> Dict[str, Any]:
    seed = seed_for(name)
    public = devicekey.public_key(seed)
    digest = hashlib.sha256(f"edge {version}".encode()).hexdigest()
    return {
        "device_id": devicekey.fingerprint(public), "public_key": public.hex(),
        "hostname": name, "arch": arch, "ring": ring, "rollout_id": name, "event": "sync",
        "installed": {"name": "edge", "version": version, "digest": digest},
        "previous": {"name": "edge", "version": previous,
                     "digest": "0" * 64} if previous else None,
        "gate": {"state": gate, "name": "edge", "version": version, "digest": digest,
                 "at": time - 3600, "output": output},
        "failed": [{"name": "edge", "version": v, "digest": "1" * 64, "at": time}
                   for v in failed or []],
        "metadata": {"timestamp": {"version": 3, "expires": time + 30 * 86400}},
        "last_sync": time, "free_bytes": 10 ** 10, "installer_version": "0.1.0",
        "time": time, "sequence": sequence}


def sealed(name: str, **kw: Any) -> bytes:
    return devicereport.seal(report(name, **kw), seed_for(name))
