"""The key directory: TUF root metadata and Ed25519 signing keys (builder side).

Layout of a key directory::

    root.json              the current root (what a bundle's devices end up trusting)
    roots/<N>.root.json    every root version ever written, 1..N (each bundle carries them)
    keys/<role>-<n>.pem    Ed25519 private keys, PKCS#8 PEM, mode 0600, optionally encrypted
    keyring.json           non-secret settings: which environment variable holds the passphrase

Root metadata is written with python-tuf's Metadata API and signed with securesystemslib
signers; every document written here is first checked with python-tuf AND with the stdlib
verifier devices run (``installer.trust``). Key files are matched to roles by their public key,
not by their name, so root keys can live offline and be copied in only for a rotation.

Not done here: publishing bundles, timestamp/snapshot/ring metadata (other modules).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import Metadata, Root
from tuf.api.serialization.json import JSONSerializer

from bundler.errors import LocalError, SpecError
from installer.errors import InstallerError
from installer.format import canonjson
from installer.fsio import write_verified
from installer.trust import rootmeta

ROLES = rootmeta.TOP_LEVEL_ROLES  # the TUF top-level roles, signing order
KEYRING = "keyring.json"
RINGS = "rings.json"  # non-secret: each ring's current public keys, threshold and key serial
MAX_KEYS = 20         # per role: more is a typo, and each key is a file to guard
_KEY_NAME = re.compile(r"^([a-z]+)-([0-9]+)\.pem$")


@dataclass(frozen=True)
class KeyDirReport:
    """What ``init_keys``/``rotate`` wrote, for the CLI to print."""

    directory: Path
    root_version: int
    expires: str
    written: tuple[Path, ...]
    roles: dict[str, dict[str, object]] = field(default_factory=dict)
    fingerprint: str = ""       # rootmeta.root_fingerprint of root.json: what devices show
    encrypted: bool = True      # False: the private keys written are plain PEM
    staged: dict[str, object] | None = None  # a new root still short of root signatures

    def to_json(self) -> dict[str, object]:
        return {"directory": str(self.directory), "root_version": self.root_version,
                "expires": self.expires, "written": [str(p) for p in self.written],
                "roles": self.roles, "fingerprint": self.fingerprint,
                "encrypted": self.encrypted, "staged": self.staged}


# --- small helpers ------------------------------------------------------------------------

def _now(now: int | None) -> int:
    return int(time.time()) if now is None else int(now)


def _expiry(now: int, days: int) -> datetime:
    if days < 1:
        raise SpecError(f"expiry must be at least 1 day, got {days}")
    return datetime.fromtimestamp(now + days * 86400, UTC).replace(microsecond=0)


def _write(path: Path, data: bytes, mode: int) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_verified(path, [data], mode=mode)
    except (OSError, InstallerError) as e:
        raise LocalError(f"cannot write {path}: {e}", hint="check space and permissions") from None
    return path


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{path} does not exist",
                        hint="create a key directory with `bundle keys init DIR`") from None
    except OSError as e:
        raise LocalError(f"cannot read {path}: {e}") from None


def _passphrase_env(directory: Path, override: str | None) -> str | None:
    if override:
        return override
    path = directory / KEYRING
    if not path.exists():
        return None
    settings = json.loads(_read(path))
    return settings.get("passphrase_env") or None


def _passphrase(env: str, purpose: str) -> bytes:
    value = os.environ.get(env, "")
    if not value:
        raise SpecError(f"{purpose}: the passphrase environment variable {env} is not set",
                        hint=f"export {env}=... (the passphrase chosen at `keys init`)")
    return value.encode("utf-8")


def _role_summary(root: Root) -> dict[str, dict[str, object]]:
    return {name: {"keyids": list(role.keyids), "threshold": role.threshold}
            for name, role in sorted(root.roles.items())}


# --- keys ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _NewKey:
    role: str
    signer: CryptoSigner
    private: Ed25519PrivateKey


def _generate(role: str) -> _NewKey:
    private = Ed25519PrivateKey.generate()
    public = SSlibKey.from_crypto(private.public_key(), scheme="ed25519")
    return _NewKey(role, CryptoSigner(private, public), private)


def _pem(private: Ed25519PrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase
        else serialization.NoEncryption())
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 encryption)


def _next_index(keys_dir: Path, role: str) -> int:
    taken = [int(m.group(2)) for p in keys_dir.glob("*.pem")
             if (m := _KEY_NAME.match(p.name)) and m.group(1) == role]
    return max(taken, default=0) + 1


def _write_keys(directory: Path, new: list[_NewKey], passphrase: bytes | None) -> list[Path]:
    keys_dir = directory / "keys"
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for key in new:
        path = keys_dir / f"{key.role}-{_next_index(keys_dir, key.role)}.pem"
        written.append(_write(path, _pem(key.private, passphrase), 0o600))
    return written


def _load_private_keys(directory: Path, passphrase_env: str | None
                       ) -> dict[str, Ed25519PrivateKey]:
    """Every private key in ``keys/``, by public key hex."""
    found: dict[str, Ed25519PrivateKey] = {}
    for path in sorted((directory / "keys").glob("*.pem")):
        data = _read(path)
        password = None
        if b"ENCRYPTED PRIVATE KEY" in data:
            if not passphrase_env:
                raise SpecError(f"{path} is encrypted and no passphrase variable is configured",
                                hint="pass --passphrase-env VAR naming the variable that "
                                     "holds it")
            password = _passphrase(passphrase_env, f"{path} is encrypted")
        try:
            private = serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError) as e:
            hint = f"check the passphrase in ${passphrase_env}" if password else None
            raise SpecError(f"cannot load private key {path}: {e}", hint=hint) from None
        if not isinstance(private, Ed25519PrivateKey):
            raise SpecError(f"{path} is not an Ed25519 private key")
        raw = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
        found[raw.hex()] = private
    return found


def _signers_for(root: Root, role: str,
                 private_keys: dict[str, Ed25519PrivateKey]) -> list[CryptoSigner]:
    """Signers for ``role``'s keys, each carrying the keyid that ``root`` uses for the key."""
    found = []
    for keyid in root.roles[role].keyids:
        key = root.keys.get(keyid)
        if not isinstance(key, SSlibKey) or key.keytype != "ed25519":
            continue
        private = private_keys.get(str(key.keyval.get("public")))
        if private is not None:
            found.append(CryptoSigner(private, key))
    return found


def _require(count: int, root: Root, role: str, *, directory: Path) -> None:
    threshold = root.roles[role].threshold
    if count < threshold:
        raise SpecError(
            f"{role} role of root v{root.version} needs {threshold} key(s), found {count} "
            f"matching private key file(s) in {directory / 'keys'}",
            hint=f"copy the {role} keys (kept offline) into {directory / 'keys'} and retry")


# --- root documents -----------------------------------------------------------------------

def _load_root(path: Path) -> tuple[bytes, Metadata[Root]]:
    data = _read(path)
    try:
        return data, Metadata[Root].from_bytes(data)
    except Exception as e:  # python-tuf raises DeserializationError, ValueError, KeyError ...
        raise SpecError(f"{path} is not valid TUF root metadata: {e}",
                        hint="restore the key directory from backup") from None


def _serialize(md: Metadata[Root]) -> bytes:
    return md.to_bytes(JSONSerializer(compact=False)) + b"\n"


def _write_root(directory: Path, data: bytes, version: int) -> list[Path]:
    return [_write(directory / "roots" / f"{version}.root.json", data, 0o644),
            _write(directory / "root.json", data, 0o644)]


def _check_counts(counts: dict[str, tuple[int, int]]) -> None:
    for role, (keys, threshold) in counts.items():
        if keys < 1:
            raise SpecError(f"{role}: at least one key is needed, got {keys}")
        if keys > MAX_KEYS:
            raise SpecError(f"{role}: at most {MAX_KEYS} keys, got {str(keys)[:20]}",
                            hint="a threshold of a few keys held by different people is the "
                                 "usual choice, e.g. 2 of 3")
        if not 1 <= threshold <= keys:
            raise SpecError(f"{role}: threshold must be between 1 and the {keys} key(s), "
                            f"got {threshold}",
                            hint="pass a lower --threshold or more keys")


def init_keys(directory: Path | str, *, root_keys: int = 1, root_threshold: int = 1,
              targets_keys: int = 1, targets_threshold: int = 1, snapshot_keys: int = 1,
              timestamp_keys: int = 1, expires_days: int = 365,
              passphrase_env: str | None = None, now: int | None = None) -> KeyDirReport:
    """Create a key directory with fresh keys and a self-signed root version 1.

    Refuses to touch a directory that already holds ``root.json``, ``roots/`` or ``keys/``.
    With ``passphrase_env`` the private keys are encrypted with that variable's value.
    """
    directory = Path(directory)
    _check_counts({"root": (root_keys, root_threshold), "targets": (targets_keys,
                   targets_threshold), "snapshot": (snapshot_keys, 1),
                   "timestamp": (timestamp_keys, 1)})
    for existing in ("root.json", "roots", "keys"):
        if (directory / existing).exists():
            raise SpecError(f"{directory / existing} already exists: refusing to overwrite keys",
                            hint="choose an empty directory, or use `keys rotate` to change keys")
    passphrase = _passphrase(passphrase_env, "keys init") if passphrase_env else None
    root = Root(version=1, expires=_expiry(_now(now), expires_days), consistent_snapshot=True)
    counts = {"root": root_keys, "targets": targets_keys, "snapshot": snapshot_keys,
              "timestamp": timestamp_keys}
    new = [_generate(role) for role in ROLES for _ in range(counts[role])]
    for key in new:
        root.add_key(key.signer.public_key, key.role)
    root.roles["root"].threshold = root_threshold
    root.roles["targets"].threshold = targets_threshold
    md = Metadata(root)
    for key in new:
        if key.role == "root":
            md.sign(key.signer, append=True)
    data = _serialize(md)
    root.verify_delegate("root", md.signed_bytes, md.signatures)
    rootmeta.load_trusted_root(data)  # the device's verifier must accept what we wrote

    directory.mkdir(parents=True, exist_ok=True)
    written = _write_keys(directory, new, passphrase)
    written.append(_write(directory / KEYRING, json.dumps(
        {"passphrase_env": passphrase_env}, indent=1, sort_keys=True).encode() + b"\n", 0o644))
    written += _write_root(directory, data, 1)
    return KeyDirReport(directory, 1, root.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        tuple(written), _role_summary(root), fingerprint(data),
                        encrypted=passphrase is not None)


def rotate(directory: Path | str, *, role: str, new_keys: int | None = None,
           threshold: int | None = None,
           expires_days: int = 365, passphrase_env: str | None = None,
           now: int | None = None) -> KeyDirReport:
    """Write root version N+1 in which ``role`` has ``new_keys`` fresh keys (the old ones are
    revoked), signed by a threshold of root v N's root keys and of v N+1's root keys."""
    directory = Path(directory)
    if role not in ROLES:
        return rotate_ring(directory, ring=role, new_keys=new_keys, threshold=threshold,
                           passphrase_env=passphrase_env)
    old_bytes, old_md = _load_root(directory / "root.json")
    old = old_md.signed
    threshold = old.roles[role].threshold if threshold is None else threshold
    new_keys = len(old.roles[role].keyids) if new_keys is None else new_keys
    _check_counts({role: (new_keys, threshold)})
    env = _passphrase_env(directory, passphrase_env)
    passphrase = _passphrase(env, "keys rotate") if env else None
    available = _load_private_keys(directory, env)

    md = Metadata[Root].from_bytes(old_bytes)
    new_root = md.signed
    new_root.version = old.version + 1
    new_root.expires = _expiry(_now(now), expires_days)
    for keyid in list(new_root.roles[role].keyids):
        new_root.revoke_key(keyid, role)
    new = [_generate(role) for _ in range(new_keys)]
    for key in new:
        new_root.add_key(key.signer.public_key, role)
    new_root.roles[role].threshold = threshold

    old_signers = _signers_for(old, "root", available)
    if not old_signers:
        _require(0, old, "root", directory=directory)
    signers = {s.public_key.keyid: s for s in old_signers}
    if role == "root":
        signers.update({k.signer.public_key.keyid: k.signer for k in new})
    md.signatures.clear()
    for signer in signers.values():
        md.sign(signer, append=True)
    data = _serialize(md)
    written = []
    if len(old_signers) < old.roles["root"].threshold:  # one person's share: stage it
        if (directory / STAGED_ROOT).exists():
            raise SpecError(f"{directory / STAGED_ROOT} is already waiting for root "
                            "signatures", hint=f"`bundle keys sign {directory} --keys FOLDER` "
                                               "first, or delete that file to start over")
        written = _write_keys(directory, new, passphrase)
        written.append(_write(directory / STAGED_ROOT, data, 0o644))
        return KeyDirReport(directory, old.version, old.expires.strftime(
            "%Y-%m-%dT%H:%M:%SZ"), tuple(written), _role_summary(new_root),
            fingerprint(old_bytes), encrypted=passphrase is not None,
            staged=_root_signatures(old, md))
    _check_new_root(old_bytes, old, md)
    written = _write_keys(directory, new, passphrase)
    written += _write_root(directory, data, new_root.version)
    return KeyDirReport(directory, new_root.version,
                        new_root.expires.strftime("%Y-%m-%dT%H:%M:%SZ"), tuple(written),
                        _role_summary(new_root), fingerprint(data),
                        encrypted=passphrase is not None)


STAGED_ROOT = "staged-root.json"  # a new root short of root signatures (`keys sign` adds)


def _root_signatures(old: Root, md: Metadata[Root]) -> dict[str, object]:
    new = md.signed
    a = old.get_verification_result("root", md.signed_bytes, md.signatures)
    b = new.get_verification_result("root", md.signed_bytes, md.signatures)
    return {"version": new.version, "old_root": {"present": len(a.signed), "needed": a.threshold},
            "new_root": {"present": len(b.signed), "needed": b.threshold}}


def _check_new_root(old_bytes: bytes, old: Root, md: Metadata[Root]) -> None:
    result = md.signed.get_root_verification_result(old, md.signed_bytes, md.signatures)
    if not result.verified:
        raise SpecError(f"root v{md.signed.version} would not verify: {result}")
    rootmeta.update_root(rootmeta.parse_root(old_bytes), _serialize(md))  # device agrees


def sign_root(directory: Path | str, *, keys_from: Path | str,
              passphrase_env: str | None = None) -> KeyDirReport:
    """Add the root signatures ``keys_from`` holds (old and new root keys) to the staged root
    of ``directory``; once both thresholds are met it becomes ``root.json``."""
    directory, keys_from = Path(directory), Path(keys_from)
    old_bytes, old_md = _load_root(directory / "root.json")
    old = old_md.signed
    if not (directory / STAGED_ROOT).is_file():
        raise SpecError(f"{directory} has no staged root to sign",
                        hint="`bundle keys rotate` with fewer root keys than the threshold "
                             "stages one")
    _, md = _load_root(directory / STAGED_ROOT)
    available = _load_private_keys(keys_from, _passphrase_env(keys_from, passphrase_env))
    before = set(md.signatures)
    for signer in _signers_for(old, "root", available) + _signers_for(md.signed, "root",
                                                                      available):
        md.sign(signer, append=True)
    if set(md.signatures) == before:
        raise SpecError(f"the keys in {keys_from / 'keys'} add no root signature to "
                        f"{directory / STAGED_ROOT}",
                        hint="bring a root key of this or the new root")
    data = _serialize(md)
    status = _root_signatures(old, md)
    if not md.signed.get_root_verification_result(old, md.signed_bytes,
                                                  md.signatures).verified:
        written = [_write(directory / STAGED_ROOT, data, 0o644)]
        return KeyDirReport(directory, old.version, old.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            tuple(written), _role_summary(md.signed), fingerprint(old_bytes),
                            staged=status)
    _check_new_root(old_bytes, old, md)
    written = _write_root(directory, data, md.signed.version)
    (directory / STAGED_ROOT).unlink()
    return KeyDirReport(directory, md.signed.version,
                        md.signed.expires.strftime("%Y-%m-%dT%H:%M:%SZ"), tuple(written),
                        _role_summary(md.signed), fingerprint(data))


def fingerprint(root_bytes: bytes) -> str:
    """The short name devices show for a root (``installer.trust.root_fingerprint``)."""
    try:
        return rootmeta.root_fingerprint(rootmeta.parse_root(root_bytes))
    except InstallerError as e:
        raise SpecError(f"not a valid root.json: {e}") from None


def describe(directory: Path | str) -> KeyDirReport:
    """What a key directory holds, read-only: the current root, its fingerprint and roles,
    and which private key files are present (for `bundle keys show`)."""
    directory = Path(directory)
    data, md = _load_root(directory / "root.json")
    present = tuple(sorted((directory / "keys").glob("*.pem")))
    encrypted = all(b"ENCRYPTED PRIVATE KEY" in _read(p) for p in present)
    staged = None
    if (directory / STAGED_ROOT).is_file():
        staged = _root_signatures(md.signed, _load_root(directory / STAGED_ROOT)[1])
    return KeyDirReport(directory, md.signed.version,
                        md.signed.expires.strftime("%Y-%m-%dT%H:%M:%SZ"), present,
                        _role_summary(md.signed), fingerprint(data), encrypted=encrypted,
                        staged=staged)


def check_signing(directory: Path | str, *, passphrase_env: str | None = None) -> str:
    """Fail now, before a long build, unless ``directory`` can sign bundles: a consistent
    root chain and a threshold of loadable ``targets`` keys (passphrase included). Returns
    the fingerprint of the root the bundles will be signed for."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SpecError(f"key folder {directory} does not exist",
                        hint="create it with `bundle keys init DIR`, or fix --keys / "
                             "[signing] keys in bundles.toml")
    chain = root_chain(directory)
    _, md = _load_root(directory / "root.json")
    signers = _signers_for(md.signed, "targets", _load_private_keys(
        directory, _passphrase_env(directory, passphrase_env)))
    _require(len(signers), md.signed, "targets", directory=directory)
    return fingerprint(chain[-1])


def root_chain(directory: Path | str) -> list[bytes]:
    """``roots/1.root.json`` .. ``roots/N.root.json`` where N is the version of ``root.json``."""
    directory = Path(directory)
    current = _read(directory / "root.json")
    try:
        version = rootmeta.parse_root(current).version
    except InstallerError as e:
        raise SpecError(f"{directory / 'root.json'}: {e}") from None
    chain = [_read(directory / "roots" / f"{v}.root.json") for v in range(1, version + 1)]
    if chain[-1] != current:
        raise SpecError(f"{directory / 'roots' / f'{version}.root.json'} differs from root.json",
                        hint="the key directory was edited by hand; restore it from backup")
    return chain


def sign_manifest(directory: Path | str, manifest_bytes: bytes, *,
                  passphrase_env: str | None = None) -> bytes:
    """Sign canonical ``manifest_bytes`` with the current ``targets`` keys found in ``keys/``;
    return the canonical ``{"signatures": [...]}`` document devices check."""
    directory = Path(directory)
    try:
        canonjson.loads_canonical(manifest_bytes, what="bundle manifest")
    except InstallerError as e:
        raise SpecError(f"refusing to sign: {e}") from None
    root_bytes, root_md = _load_root(directory / "root.json")
    root = root_md.signed
    signers = _signers_for(root, "targets", _load_private_keys(
        directory, _passphrase_env(directory, passphrase_env)))
    _require(len(signers), root, "targets", directory=directory)
    entries = sorted(({"keyid": s.public_key.keyid, "sig": s.sign(manifest_bytes).signature}
                      for s in signers), key=lambda e: e["keyid"])
    doc = canonjson.encode({"signatures": entries})
    rootmeta.verify_threshold(rootmeta.parse_root(root_bytes), "targets", manifest_bytes,
                           signatures=rootmeta.parse_signatures_doc(doc), what="bundle manifest")
    return doc


# --- keys for roles outside root.json (OTA ring delegations, bundler.repo) ------------------

def create_role_keys(directory: Path | str, role: str, count: int, *,
                     passphrase_env: str | None = None) -> tuple[list[SSlibKey], list[Path]]:
    """``count`` fresh Ed25519 keys written as ``keys/<role>-<n>.pem`` (encrypted like the
    others); returns their public keys and the files. The role is not added to root.json."""
    directory = Path(directory)
    if not re.fullmatch(r"[a-z]+", role) or role in ROLES:
        raise SpecError(f"{role!r} cannot name extra keys (lowercase letters, not a top-level "
                        "role)")
    env = _passphrase_env(directory, passphrase_env)
    passphrase = _passphrase(env, f"keys for {role}") if env else None
    new = [_generate(role) for _ in range(count)]
    return [k.signer.public_key for k in new], _write_keys(directory, new, passphrase)


def signers_for_keys(directory: Path | str, wanted: list[SSlibKey], *,
                     passphrase_env: str | None = None) -> list[CryptoSigner]:
    """Signers for those of ``wanted`` whose private key file is in ``keys/``."""
    directory = Path(directory)
    available = _load_private_keys(directory, _passphrase_env(directory, passphrase_env))
    return [CryptoSigner(available[str(k.keyval.get("public"))], k) for k in wanted
            if k.keytype == "ed25519" and str(k.keyval.get("public")) in available]


# --- ring keys: which public keys each ring's delegation should name -----------------------

@dataclass(frozen=True)
class RingRecord:
    serial: int           # 1 at `repo init`, +1 at each `keys rotate --role RING`
    threshold: int
    keys: tuple[SSlibKey, ...]


def ring_records(directory: Path | str) -> dict[str, RingRecord]:
    """``rings.json`` of a key directory (empty when absent: a folder that holds one person's
    key has no say about ring keys)."""
    path = Path(directory) / RINGS
    if not path.is_file():
        return {}
    try:
        doc = json.loads(_read(path))
        return {ring: RingRecord(int(r["serial"]), int(r["threshold"]), tuple(
            SSlibKey.from_dict(k["keyid"], dict(k["key"])) for k in r["keys"]))
            for ring, r in doc["rings"].items()}
    except (ValueError, KeyError, TypeError) as e:
        raise SpecError(f"{path} is not a valid ring key record: {e}",
                        hint="restore it from the key directory's backup") from None


def write_ring_record(directory: Path | str, ring: str, record: RingRecord) -> Path:
    directory = Path(directory)
    doc = {r: {"serial": x.serial, "threshold": x.threshold,
               "keys": [{"keyid": k.keyid, "key": k.to_dict()} for k in x.keys]}
           for r, x in {**ring_records(directory), ring: record}.items()}
    return _write(directory / RINGS, json.dumps({"rings": doc}, indent=1, sort_keys=True
                                                ).encode() + b"\n", 0o644)


def rotate_ring(directory: Path, *, ring: str, new_keys: int | None, threshold: int | None,
                passphrase_env: str | None) -> KeyDirReport:
    """Fresh keys for a ring: written to ``keys/`` and recorded in ``rings.json`` with the
    next serial. The next repository command (``repo refresh``, publish ...) re-signs the
    ring's delegation in targets (targets keys needed) and the ring with the new keys."""
    if not re.fullmatch(r"[a-z]+", ring):
        raise SpecError(f"unknown role {ring!r}",
                        hint="one of: " + ", ".join(ROLES) + ", or a ring name")
    old = ring_records(directory).get(ring)
    if old is None:
        raise SpecError(f"{directory / RINGS} has no ring {ring!r}",
                        hint="ring keys are recorded by `bundle repo init` with this key "
                             "directory; rotate a ring with the folder that created it")
    threshold = old.threshold if threshold is None else threshold
    new_keys = len(old.keys) if new_keys is None else new_keys
    _check_counts({ring: (new_keys, threshold)})
    public, files = create_role_keys(directory, ring, new_keys, passphrase_env=passphrase_env)
    record = RingRecord(old.serial + 1, threshold, tuple(public))
    written = [*files, write_ring_record(directory, ring, record)]
    data, md = _load_root(directory / "root.json")
    roles = {ring: {"keyids": [k.keyid for k in public], "threshold": threshold,
                    "serial": record.serial}}
    return KeyDirReport(directory, md.signed.version,
                        md.signed.expires.strftime("%Y-%m-%dT%H:%M:%SZ"), tuple(written),
                        roles, fingerprint(data),
                        encrypted=_passphrase_env(directory, passphrase_env) is not None)
