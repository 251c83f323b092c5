"""What the installer's commands return (installer/commands/install.py): frozen records the callers
read by attribute; ``to_json`` is the ``--json`` object the CLI prints (docs/user-guide.md),
and its text lines are made from that same object (installer/cli.py)."""

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

Json = Dict[str, Any]


@dataclass(frozen=True)
class Pinned:
    """``trust``: the anchor now pinned; ``expires`` only when this run pinned it."""

    pinned: str
    root_version: int
    fingerprint: str
    changed: bool
    expires: Optional[int] = None

    def to_json(self) -> Json:
        out: Json = {"pinned": self.pinned, "root_version": self.root_version,
                     "fingerprint": self.fingerprint, "changed": self.changed}
        if self.changed:
            out["expires"] = self.expires
        return out


@dataclass(frozen=True)
class Verified:
    """``verify``: a bundle checked in full; ``parts`` what a parts set adds (it names the
    folder as the bundle; installer/sources/partsource.py)."""

    bundle: str
    name: str
    version: str
    arch: str
    k3s_version: str
    roles: Tuple[str, ...]
    digest: str
    members: int
    bytes: int
    root_version: int
    root_fingerprint: str
    parts: Json = field(default_factory=dict)

    def to_json(self) -> Json:
        return {"bundle": self.bundle, "ok": True, "name": self.name, "version": self.version,
                "arch": self.arch, "k3s_version": self.k3s_version, "roles": list(self.roles),
                "digest": self.digest, "members": self.members, "bytes": self.bytes,
                "root_version": self.root_version, "root_fingerprint": self.root_fingerprint,
                **self.parts}


@dataclass(frozen=True)
class RolledBack:
    """``rollback``: the releases as summarised for the output (reconfigure.summary_of)."""

    current: Json
    previous: Optional[Json]
    options_changed: List[Json]
    generation: int

    def to_json(self) -> Json:
        return {"action": "rolled-back", "current": self.current, "previous": self.previous,
                "options_changed": self.options_changed, "generation": self.generation}


@dataclass(frozen=True)
class Recovered:
    """``recover``: what an interrupted change's recovery did (``done`` None: nothing)."""

    done: Optional[str]

    def to_json(self) -> Json:
        return {"action": "recovered" if self.done else "none",
                "detail": self.done or "nothing to do"}


@dataclass(frozen=True)
class Status:
    """``status``: what is installed, read-only; ``verify`` only with ``status --verify``."""

    root: str
    installed: Optional[Json]
    previous: Optional[Json]
    trust_root_version: Optional[int]
    trust_root_fingerprint: Optional[str]
    time_ratchet: int
    pending: Optional[Json]
    state_copies_damaged: List[str]
    image_import_cache: bool
    foreign_images: List[str]
    registries_backup: Optional[str]
    ok: bool
    verify: Optional[Json]

    def to_json(self) -> Json:
        return asdict(self)
