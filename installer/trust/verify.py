"""Check a bundle: signatures against the pinned anchor, the exact tar envelope, every member.

Order, always: read the envelope (manifest, signatures, root chain) -> verify signatures ->
check that every byte outside member data is the canonical encoding of the signed manifest
(headers, padding, trailer, total size) -> stream each member once, hashing it, either into
staging (``stage_payload``: ``fsio.write_verified`` with the manifest's sha256/size) or nowhere
(``hash_payload``). Signature verification itself is ``trust``'s job; this module only feeds it.
"""

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterable, Optional, Sequence, Set

from installer.errors import (
    DigestMismatch,
    FormatError,
    InstallerError,
    SignatureError,
)
from installer.format import bundlefmt, canonjson
from installer.format.bundlefmt import BundleReader, Header, Member
from installer.format.envelope import check_envelope as check_envelope  # verify's API
from installer.format.envelope import header_variants as header_variants
from installer.fsio import batched_fsync, fsync_dir, hash_chunks, iter_file, write_verified
from installer.fsio import open_regular as open_regular  # verify.open_regular: callers
from installer.trust import rootmeta

OnBytes = Optional[Callable[[int], None]]


@dataclass
class Opened:
    """A bundle opened for one streaming pass, its envelope read and verified."""

    path: str
    file: BinaryIO
    reader: BundleReader
    header: Header
    digest: str            # sha256 of the signed manifest bytes: the release id
    root: rootmeta.Root       # the root the manifest verified under
    new_root: Optional[bytes]  # newest root of the bundle's chain, when newer than the anchor

    def close(self) -> None:
        self.file.close()


def check_signatures(anchor: bytes, header: Header, now: int, *,
                     trusted_label: str = "this host trusts") -> rootmeta.Root:
    """Verify the manifest's signatures via the root chain; returns the trusted Root. A
    signature error names both roots (``root_ids``; ``trusted_label`` says whose anchor)."""
    try:
        root = rootmeta.verify_signed_manifest(anchor, list(header.roots), header.manifest_bytes,
                                            signatures_doc=header.signatures, now=now)
        check_signed_bytes(anchor, header)
    except SignatureError as e:
        raise SignatureError(f"{e.message} ({root_ids(anchor, header.roots, trusted_label)})",
                             hint=e.hint) from None
    return root


def root_ids(anchor: bytes, chain: Sequence[bytes],
             trusted_label: str = "this host trusts") -> str:
    """``signed for root 3f2a..., this host trusts 9c1b...``: fingerprints a field tech can
    compare with ``bundle keys`` and ``airgap-install trust`` (newest root of the bundle's chain
    against the pinned one). The one wording of both CLIs; ``bundle verify`` says whose anchor
    it is with ``trusted_label`` ("this trusted root is") and adds root versions."""
    versions = trusted_label != "this host trusts"

    def fp(data: Optional[bytes], what: str) -> str:
        try:
            root = rootmeta.parse_root(data, what=what) if data else None
        except InstallerError:
            return "unreadable"
        if root is None:
            return "none"
        name: str = rootmeta.root_fingerprint(root)
        return name + (f" (v{root.version})" if versions else "")

    ours = fp(anchor, "pinned root.json")
    if not chain and versions:
        return f"the bundle ships no root chain, it is unsigned; {trusted_label} {ours}"
    return f"signed for root {fp(chain[-1] if chain else None, 'bundle root')}, " \
           f"{trusted_label} {ours}"


def _tuf_pretty(doc: Any) -> bytes:
    # python-tuf JSONSerializer(compact=False), as `bundle keys` writes root.json, plus "\n"
    return json.dumps(doc, indent=1, separators=(",", ": "), sort_keys=True).encode() + b"\n"


def check_signed_bytes(anchor: bytes, header: Header) -> None:
    """Make every signed document's BYTES unambiguous, not just its signed content.

    Signatures cover the canonical ``signed`` part only, so whitespace in a pretty-printed
    root, or an old root the device never re-checks could change without any signature
    failing (``trust`` itself rejects upper-case hex). Here: each root is canonical JSON or
    exactly python-tuf's pretty form; the bundle's chain is a valid chain from its v1
    (``rootmeta.update_root`` step by step) and agrees with the pinned anchor at its version.
    """
    chain = list(header.roots)
    previous = None
    for n, data in enumerate(chain, start=1):
        what = f"roots/{n}.root.json"
        doc = canonjson.loads_strict(data, what=what)
        if data != canonjson.encode(doc) and data != _tuf_pretty(doc):
            raise FormatError(f"{what} is neither canonical JSON nor python-tuf's serialization",
                              hint="the bundle was altered or damaged; do not use it")
        root = (rootmeta.load_trusted_root(data) if previous is None
                else rootmeta.update_root(previous, data))
        if root.version != n:
            raise SignatureError(f"{what} holds root version {root.version}")
        previous = root
    pinned = rootmeta.parse_root(anchor, what="pinned root.json")
    if len(chain) >= pinned.version:
        ours = canonjson.encode(canonjson.loads_strict(anchor, what="pinned root.json"))
        theirs = canonjson.encode(canonjson.loads_strict(chain[pinned.version - 1]))
        if ours != theirs:
            raise SignatureError(
                f"the bundle's root v{pinned.version} differs from the root pinned on this "
                "host",
                hint="this bundle comes from another key directory; it is not trusted here")


def newer_root(anchor_version: Optional[int], root: rootmeta.Root,
               chain: Sequence[bytes]) -> Optional[bytes]:
    """The chain's bytes for ``root`` when it is newer than the pinned anchor."""
    version = getattr(root, "version", None)
    if not isinstance(version, int) or anchor_version is None or version <= anchor_version:
        return None
    if 1 <= version <= len(chain):
        return chain[version - 1]  # roots/<N>.root.json is the N-th chain entry
    return None


def anchor_version(anchor: bytes) -> Optional[int]:
    try:
        doc = canonjson.loads_strict(anchor, what="trust anchor")
        version = doc["signed"]["version"]
        return version if isinstance(version, int) else None
    except (InstallerError, KeyError, TypeError):
        return None


MAX_CLOCK_SKEW = 24 * 3600  # how far a manifest's signed `created` may be ahead of the clock
BUNDLE_HINT = ("pass the bundle file itself (a folder is searched for "
               "<name>-<version>-<arch>.tar files)")


def check_created(created: int, *, clock: int, now: int, what: str) -> None:
    """Refuse a manifest signed in the future (THREATS 33): its ``created`` may be ahead of
    this host's clock by at most ``MAX_CLOCK_SKEW``. When the clock is behind the ratchet
    (``clock < now``: it is known to be wrong, e.g. reset to 1970) there is nothing to compare
    with; ``next_ratchet`` then keeps the ratchet where it is."""
    if clock >= now and created > clock + MAX_CLOCK_SKEW:
        raise SignatureError(
            f"{what} was signed at {_iso(created)}, later than this host's clock "
            f"({_iso(clock)}) by more than {MAX_CLOCK_SKEW // 3600} hours",
            hint="the build host's clock or this host's clock is wrong; fix it and rebuild or "
                 "retry (a bundle from the future would lock this host out of later updates)")


def next_ratchet(ratchet: int, *, created: int, root_expires: int, clock: int) -> int:
    """The time ratchet after installing a manifest signed at ``created``: it only advances,
    and only to a plausible time: never past the verified root's expiry (that root would
    count as expired) nor past the clock plus ``MAX_CLOCK_SKEW``."""
    return max(ratchet, min(created, root_expires - 1, clock + MAX_CLOCK_SKEW))


def _iso(epoch: int) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    except (OverflowError, OSError, ValueError):
        return f"epoch {epoch}"


def open_bundle(path: str, *, anchor: bytes, now: int, clock: Optional[int] = None,
                trusted_label: str = "this host trusts") -> Opened:
    """Open ``path`` (a regular file), read its envelope, verify signatures, the signing time
    against ``clock`` (default ``now``) and the canonical tar envelope.

    Nothing is written. The caller must ``close()`` the result.
    """
    f = open_regular(path, what="bundle", hint=BUNDLE_HINT)
    try:
        reader = BundleReader(f, what=f"bundle {os.path.basename(path)}")
        header = reader.header()
        root = check_signatures(anchor, header, now, trusted_label=trusted_label)
        check_created(header.manifest.created, clock=now if clock is None else clock, now=now,
                      what=f"bundle {os.path.basename(path)}")
        check_envelope(f.fileno(), header, what=path)
        digest = hashlib.sha256(header.manifest_bytes).hexdigest()
        return Opened(path, f, reader, header, digest, root,
                      newer_root(anchor_version(anchor), root, header.roots))
    except BaseException:
        f.close()
        raise


def hash_payload(opened: Opened, on_bytes: OnBytes = None) -> int:
    """Stream every member, check size and sha256, write nothing. Returns bytes checked."""
    total = 0
    for member, f in opened.reader.payload():
        digest, size = hash_chunks(iter_file(f, limit=member.size),  # type: ignore[arg-type]
                                   on_bytes)
        if size != member.size or digest != member.sha256:
            raise DigestMismatch(
                f"bundle member {member.path}: expected sha256 {member.sha256} "
                f"({member.size} bytes), got {digest} ({size} bytes)",
                hint="the bundle is damaged or altered; copy it again from its source")
        total += size
    return total


def stage_payload(opened: Opened, staging: str, *, on_bytes: OnBytes = None,
                  after_member: Optional[Callable[[str], None]] = None) -> None:
    """Copy every member into ``staging`` while hashing (one pass, bounded memory).

    Also keeps the envelope (manifest, signatures, root chain) next to the payload so the
    release can be re-checked later. On any error the caller removes ``staging``.
    """
    stage_envelope(opened.header, staging)
    made: Set[str] = set()
    with batched_fsync():  # thousands of small members: one sync, not two fsyncs each
        for member, f in opened.reader.payload():
            stage_member(staging, member, iter_file(f),  # type: ignore[arg-type]
                         what=f"bundle member {member.path}", on_bytes=on_bytes, made=made)
            if after_member is not None:
                after_member(member.path)
        for folder in made:
            fsync_dir(folder)


def stage_envelope(h: Header, staging: str) -> None:
    """The signed envelope (manifest, signatures, root chain) kept in ``staging``."""
    os.makedirs(os.path.join(staging, bundlefmt.ROOTS_DIR), exist_ok=True)
    write_verified(os.path.join(staging, bundlefmt.MANIFEST_NAME), [h.manifest_bytes])
    write_verified(os.path.join(staging, bundlefmt.SIGNATURES_NAME), [h.signatures])
    for n, root in enumerate(h.roots, start=1):
        write_verified(os.path.join(staging, bundlefmt.ROOTS_DIR, f"{n}.root.json"), [root])


def stage_member(staging: str, member: Member, chunks: Iterable[bytes], *, what: str,
                 on_bytes: OnBytes, made: Set[str]) -> None:
    """One member written to ``staging`` from ``chunks``, hashed as it is written and checked
    against the signed manifest; ``made`` collects the folders to fsync once at the end."""
    folder = os.path.join(staging, os.path.dirname(member.path))
    if folder not in made:
        os.makedirs(folder, exist_ok=True)
        made.add(folder)
    write_verified(os.path.join(staging, member.path), chunks, sha256=member.sha256,
                   size=member.size, mode=member.mode, what=what, on_bytes=on_bytes)


def now_for(ratchet: int, clock: Optional[int] = None) -> int:
    """The time used for expiry checks: the clock (read here unless given), never earlier
    than the ratchet (newest plausible signing time verified here), so a clock reset to 1970
    cannot revive old metadata."""
    return max(int(time.time()) if clock is None else clock, ratchet)
