"""What the installer's commands return (installer/commands/*.py): frozen records the callers
read by attribute. ``to_json`` is the ``--json`` object the CLI prints (docs/user-guide.md),
``to_text`` the lines it prints without ``--json``, ``damaged`` the number of placed files a
check found different (the CLI exits 3 when it is not 0). The CLI knows no field of any record.

``extra`` on the records of changing commands holds what the source added to the output: a
parts set's fields (installer/sources/partsource.py), a delta's (installer/host/delta.py)."""

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from installer.host.receipt import Receipt

Json = Dict[str, Any]


class Result:
    """What every record offers the CLI (a record overrides what it has)."""

    def to_json(self) -> Json:
        raise NotImplementedError

    def to_text(self) -> List[str]:
        raise NotImplementedError

    def damaged(self) -> int:
        return 0


def release_text(r: Json) -> str:
    """A release summary (reconfigure.summary_of) on one line."""
    return "{} {} (K3s {}, {}, {}) manifest sha256 {}".format(
        r["name"], r["version"], r["k3s_version"], r["arch"], r["role"], r["digest"])


def options_text(o: Json) -> str:
    parts = [f"INSTALL_K3S_EXEC={o['install_k3s_exec']!r}"]
    if o.get("url"):
        parts.append(f"url {o['url']}")
    if o.get("token_file"):
        parts.append(f"token file {o['token_file']}")
    if o.get("skip_start"):
        parts.append("skip start")
    return ", ".join(parts)


def _rebuilt(extra: Json) -> List[str]:
    part = extra.get("rebuilt_part")  # a parts folder (installer/sources/parts.py)
    return [f"  rebuilt part {part} from parity"] if part else []


def _changed_lines(head: str, current: Json, extra: Json, *, show_changed: bool) -> List[str]:
    """The lines of a change that leaves ``current`` running with its options."""
    lines = [head + release_text(current)] + _rebuilt(extra)
    lines.append("  options: " + options_text(current["options"]))
    changed = current.get("options_changed") or []
    if changed and show_changed:
        lines.append("  options changed: " + "; ".join(changed))
    return lines


@dataclass(frozen=True)
class Pinned(Result):
    """``trust``: the anchor now pinned; ``expires`` only when this run pinned it; ``ring``
    when ``trust --ring`` also set the ring."""

    pinned: str
    root_version: int
    fingerprint: str
    changed: bool
    expires: Optional[int] = None
    ring: Optional[str] = None

    def to_json(self) -> Json:
        out: Json = {"pinned": self.pinned, "root_version": self.root_version,
                     "fingerprint": self.fingerprint, "changed": self.changed}
        if self.changed:
            out["expires"] = self.expires
        if self.ring is not None:
            out["ring"] = self.ring
        return out

    def to_text(self) -> List[str]:
        verb = "pinned" if self.changed else "already pinned:"
        return [f"{verb} root v{self.root_version} fingerprint {self.fingerprint} at "
                f"{self.pinned}"]


@dataclass(frozen=True)
class Verified(Result):
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

    def to_text(self) -> List[str]:
        return ["OK {name} {version} ({arch}, K3s {k3s_version}): {members} members, "
                "{bytes} bytes verified, manifest sha256 {digest}, signed under root "
                "v{root_version} fingerprint {root_fingerprint}".format(**self.to_json())
                ] + _rebuilt(self.parts)


@dataclass(frozen=True)
class Installed(Result):
    """``install`` (or ``sync``) placed a new release."""

    reason: str
    bundle: str
    current: Json
    previous: Optional[Json]
    changes: Json
    options_changed: List[Json]
    generation: int
    extra: Json = field(default_factory=dict)

    def to_json(self) -> Json:
        return {"action": "installed", "reason": self.reason, "bundle": self.bundle,
                "current": self.current, "previous": self.previous, "changes": self.changes,
                "options_changed": self.options_changed, "generation": self.generation,
                **self.extra}

    def to_text(self) -> List[str]:
        return _changed_lines("installed ", self.current, self.extra,
                              show_changed=bool(self.previous))


@dataclass(frozen=True)
class Reconfigured(Result):
    """``reconfigure`` (or ``install`` of the installed version with new options)."""

    current: Json
    previous: Optional[Json]
    options_changed: List[Json]
    generation: int
    extra: Json = field(default_factory=dict)

    def to_json(self) -> Json:
        return {"action": "reconfigured", "current": self.current, "previous": self.previous,
                "options_changed": self.options_changed, "generation": self.generation,
                **self.extra}

    def to_text(self) -> List[str]:
        return _changed_lines("reconfigured ", self.current, self.extra, show_changed=True)


@dataclass(frozen=True)
class Repaired(Result):
    """``install`` of the installed bundle put back what differed (installer/host/repair.py);
    ``still_damaged`` what a second check still found."""

    reason: str
    bundle: str
    digest: str
    repaired: List[str]
    still_damaged: List[Json]
    current: Json
    extra: Json = field(default_factory=dict)

    def to_json(self) -> Json:
        return {"action": "repaired", "reason": self.reason, "bundle": self.bundle,
                "digest": self.digest, "same_digest": True, "repaired": self.repaired,
                "still_damaged": self.still_damaged, "current": self.current, **self.extra}

    def to_text(self) -> List[str]:
        lines = [f"repaired {len(self.repaired)} file(s) of {release_text(self.current)}"]
        lines += ["STILL DAMAGED {what}: {path}: {problem}".format(**d)
                  for d in self.still_damaged]
        return lines + _rebuilt(self.extra)

    def damaged(self) -> int:
        return len(self.still_damaged)


@dataclass(frozen=True)
class Unchanged(Result):
    """Nothing to do (``action: none``); ``fields`` what the command says about why (the
    installed release, the bundle and its digest)."""

    reason: str
    fields: Json = field(default_factory=dict)
    extra: Json = field(default_factory=dict)

    def to_json(self) -> Json:
        return {"action": "none", "reason": self.reason, **self.fields, **self.extra}

    def to_text(self) -> List[str]:
        return ["nothing to do: " + self.reason] + _rebuilt(self.extra)


# what ``install`` did: a new release, new options on the installed one, a repair, or nothing
Outcome = Union[Installed, Reconfigured, Repaired, Unchanged]


def adding(result: Outcome, extra: Json) -> Outcome:
    """``result`` with more source fields (a later key wins, as ``dict.update`` did)."""
    return replace(result, extra={**result.extra, **extra})


@dataclass(frozen=True)
class RolledBack(Result):
    """``rollback``: the releases as summarised for the output (reconfigure.summary_of)."""

    current: Json
    previous: Optional[Json]
    options_changed: List[Json]
    generation: int

    def to_json(self) -> Json:
        return {"action": "rolled-back", "current": self.current, "previous": self.previous,
                "options_changed": self.options_changed, "generation": self.generation}

    def to_text(self) -> List[str]:
        return _changed_lines("rolled back to ", self.current, {},
                              show_changed=bool(self.previous))


@dataclass(frozen=True)
class Recovered(Result):
    """``recover``: what an interrupted change's recovery did (``done`` None: nothing)."""

    done: Optional[str]

    def to_json(self) -> Json:
        return {"action": "recovered" if self.done else "none",
                "detail": self.done or "nothing to do"}

    def to_text(self) -> List[str]:
        return [self.done] if self.done else ["nothing to do: nothing to do"]


@dataclass(frozen=True)
class RingSet(Result):
    """``config ring NAME``: the ring this device follows, and its (local) device id."""

    ring: str
    device_id: str
    config: str

    def to_json(self) -> Json:
        return {"ring": self.ring, "device_id": self.device_id, "config": self.config}

    def to_text(self) -> List[str]:
        return [f"ring {self.ring} (device id {self.device_id}) in {self.config}"]


@dataclass(frozen=True)
class Synced(Result):
    """``sync``: what the ring asked for and what was done (``up-to-date``, ``installed``,
    ``rolled-back``); ``previous`` only when something changed."""

    action: str
    ring: str
    reason: str
    metadata: Json
    override: Optional[Mapping[str, Any]]
    current: Optional[Json]
    previous: Optional[Json] = None
    gate: Optional[str] = None   # "passed": an interrupted health gate was run again
    delta_fell_back: bool = False   # the delta did not apply: the full bundle was installed

    def to_json(self) -> Json:
        out: Json = {"action": self.action, "ring": self.ring, "reason": self.reason,
                     "metadata": self.metadata, "override": self.override,
                     "current": self.current}
        if self.action != "up-to-date":
            out["previous"] = self.previous
        if self.gate is not None:
            out["gate"] = self.gate
        if self.delta_fell_back:
            out["delta_fell_back"] = True
        return out

    def to_text(self) -> List[str]:
        if self.action == "up-to-date":
            return [self.reason if self.reason.startswith("up to date")
                    else "nothing to install: " + self.reason]
        head = {"installed": "installed", "rolled-back": "rolled back to"}.get(
            self.action, self.action)
        cur = self.current or {}
        what = f" {cur.get('name')} {cur.get('version')}" if cur else ""
        return [f"{head}{what} (ring {self.ring}: {self.reason})"]


@dataclass(frozen=True)
class ReceiptWritten(Result):
    """``receipt``: the receipt document, written to ``receipt`` (``-``: stdout)."""

    receipt: str
    fields: Json

    def to_json(self) -> Json:
        return dict(self.fields, receipt=self.receipt)

    def to_text(self) -> List[str]:
        if self.receipt == "-":
            return [Receipt.text(self.fields["document"])]
        return ["wrote receipt {receipt} ({bytes} bytes): {name} {version} ({arch}), "
                "{members} members, manifest {digest}".format(**self.to_json())]


@dataclass(frozen=True)
class Status(Result):
    """``status``: what is installed, read-only; ``verify`` only with ``status --verify``;
    ``sync`` the ring's state (installer/commands/sync.py ``sync_status``)."""

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
    sync: Optional[Json] = None

    def to_json(self) -> Json:
        out = asdict(self)
        if self.sync is None:
            del out["sync"]
        return out

    def damaged(self) -> int:
        return len((self.verify or {}).get("damaged") or [])

    def to_text(self) -> List[str]:
        cur, prev = self.installed, self.previous
        lines = ["installed: " + (release_text(cur) if cur else "nothing")]
        if cur:
            lines.append("  options: " + options_text(cur["options"]))
            if cur.get("options_changed"):
                lines.append("  last change of options: " + "; ".join(cur["options_changed"]))
        lines.append("previous:  " + (release_text(prev) if prev else "none"))
        if prev:
            lines.append("  options: " + options_text(prev["options"]))
        lines.append(f"trust root: v{self.trust_root_version} fingerprint "
                     f"{self.trust_root_fingerprint}" if self.trust_root_version
                     else "trust root: not pinned")
        if self.pending:
            lines.append("PENDING {op} ({phase}): {hint}".format(**self.pending))
        if self.state_copies_damaged:
            lines.append("damaged state copies: " + ", ".join(self.state_copies_damaged))
        if self.foreign_images:
            lines.append("image archives not placed by airgap-install (left alone): "
                         + ", ".join(self.foreign_images))
        if self.registries_backup:
            lines.append("hand-written registries.yaml kept (a bundle owns registries.yaml): "
                         + self.registries_backup)
        return lines + self._verify_lines() + ring_lines(self.sync or {})

    def _verify_lines(self) -> List[str]:
        checked = self.verify
        if checked is None:
            return []
        lines = ["verified {} placed files and kept copies: {}".format(
            checked["checked"], "all match" if checked["ok"] else
            "{} DIFFER".format(len(checked["damaged"])))]
        lines += ["DAMAGED {what} ({release}): {path}: {problem}".format(**d)
                  for d in checked["damaged"]]
        if not checked["ok"]:
            lines.append("repair: install the same bundle again from its medium "
                         "(docs/installer.md, Damage and repair)")
        return lines


def ring_lines(info: Json) -> List[str]:
    """The ring part of ``status`` (sync.sync_status)."""
    if info.get("error"):  # a refused sync record: status still works and says so
        return [f"sync record: {info['error']}"] + (
            [f"  hint: {info['hint']}"] if info.get("hint") else [])
    if not info.get("ring"):
        return ["ring: none (airgap-install config ring NAME)"]
    lines = [f"ring: {info['ring']}"]
    if info.get("last_sync"):
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info["last_sync"]))
        lines.append(f"last sync: {when}: {info.get('result')}")
    for role, v in sorted((info.get("metadata") or {}).items()):
        exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(v["expires"]))
        lines.append(f"  {role:<10} v{v['version']} expires {exp}")
    for f in info.get("failed", []):
        lines.append(f"failed (not retried): {f.get('name')} {f.get('version')}: {f.get('why')}")
    return lines
