"""Installing a delta bundle (``NAME-VERSION-ARCH.delta.tar``, docs/bundle-format.md).

A delta carries the FULL result's signed envelope (``manifest.json``, ``signatures.json``,
root chain: the very bytes of the full bundle) plus only the members its base lacks. Here,
before anything is placed:

1. the envelope's signatures are checked (as for any bundle), every byte outside member data
   (tar headers, padding, trailer, total size) must be what the writer writes for this
   delta (``verify.check_envelope``, THREATS 49), and ``delta.json`` must name this host's
   current release as its base (else: refused, naming both manifests);
2. every member the delta leaves out must be in the kept base release
   (``releases/<base>/``, found by sha256), present with its size;
3. every member of the full result is written ONCE, straight into the install's own
   ``staging/<tx>/`` (``Apply.stage_payload``): carried members from the delta, patched images
   archives from their segments, the rest copied from the kept base files; each is hashed
   as it is written against the signed manifest (one pass; a mismatch names the base file,
   or for a patched archive the damaged base blob, and the staging folder is removed);

then the install goes on exactly as for a full bundle (``install._install_locked``: policy,
free space (the payload once, as for a full bundle), journal, rollback, crash safety). A
crash leaves only ``staging/<tx>/``, which recovery removes.
"""

import hashlib
import os
from typing import Any, BinaryIO, Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from installer.errors import DigestMismatch, FormatError, PolicyRefusal
from installer.format import bundlefmt, envelope, tarstream
from installer.format.bundlefmt import Manifest, Member
from installer.fsio import (
    batched_fsync,
    checked_chunks,
    fsync_dir,
    iter_file,
    open_regular,
    read_regular,
)
from installer.host import failpoint
from installer.host.layout import Layout
from installer.host.state import Release, load_state
from installer.trust import verify

Report = Callable[[str], None]


MIN_REF = 64 * 1024   # a blob smaller than this travels in the delta (a reference costs ~150 B)
MAX_ARCHIVE_ENTRIES = 1_000_000


def archive_blobs(f: BinaryIO, *, start: int, size: int,
                  what: str) -> List[Tuple[str, int, int]]:
    """``(sha256 hex, data offset from start, size)`` of every ``blobs/sha256/<hex>`` file of
    a plain-tar OCI layout (an images archive as ``bundler/assemble/imagearchive.py`` writes it),
    read
    from its headers only (``tarstream``'s header parsers; data is seeked over)."""
    out = []
    pos = 0
    for _ in range(MAX_ARCHIVE_ENTRIES):
        if pos + tarstream.BLOCK > size:
            break
        f.seek(start + pos)
        block = f.read(tarstream.BLOCK)
        if block == bytes(tarstream.BLOCK):
            break
        b = tarstream.parse_block(block, what=what)
        pos += tarstream.BLOCK
        name, length = b.name, b.size
        if b.type == b"x":
            if length > tarstream.MAX_PAX_HEADER:
                raise FormatError(f"{what}: a pax header of {length} bytes")
            pax = tarstream.parse_pax(f.read(length), what=what)
            pos += length + (-length % tarstream.BLOCK)
            f.seek(start + pos)
            b = tarstream.parse_block(f.read(tarstream.BLOCK), what=what)
            pos += tarstream.BLOCK
            name, length = pax.get("path", b.name), int(pax.get("size", b.size))
        if b.type == b"0" and name.startswith("blobs/sha256/") and \
                bundlefmt.SHA256_HEX.match(name[len("blobs/sha256/"):]):
            out.append((name[len("blobs/sha256/"):], pos, length))
        pos += length + (-length % tarstream.BLOCK)
    return out


def is_delta(path: str) -> bool:
    """Whether ``path`` is a regular file whose first tar member is ``delta.json``."""
    return envelope.kind_of(path) == envelope.DELTA


def _base_files(layout: Layout, digest: str) -> Dict[str, str]:
    """sha256 -> kept file of the base release, from its kept manifest (checked by digest)."""
    path = layout.release_file(digest, bundlefmt.MANIFEST_NAME)
    try:
        data = read_regular(path, what="the kept base manifest",
                            limit=bundlefmt.MAX_HEADER_MEMBER + 1)
    except OSError as e:
        raise FormatError(f"the kept base release {path} cannot be read: {e.strerror}",
                          hint="install the full bundle instead") from None
    if data is None:
        raise FormatError(f"the kept base release {path} cannot be read: it does not exist",
                          hint="install the full bundle instead")
    if hashlib.sha256(data).hexdigest() != digest:
        raise DigestMismatch(f"the kept base manifest {path} is not manifest {digest[:16]}",
                             hint="install the full bundle instead")
    base = bundlefmt.parse_manifest(data)
    return {m.sha256: layout.release_file(digest, m.path) for m in base.members}


def _base_for(layout: Layout, cur: Optional[Release], delta: bundlefmt.Delta, *, m: Manifest,
              name: str) -> Dict[str, str]:
    """The kept files of the base release this delta applies over (sha256 -> path), after
    checking this host runs that base and holds every file the delta does not carry."""
    if cur is None or cur.digest != delta.base_digest:
        here = (f"{cur.name} {cur.version} (manifest {cur.digest})" if cur
                else "nothing installed")
        raise PolicyRefusal(
            f"delta bundle {name} ({m.name} {m.version}) applies only over "
            f"{delta.base_name} {delta.base_version} (manifest {delta.base_digest}); "
            f"this host runs {here}",
            hint="install the full bundle, or build a delta from this host's receipt "
                 "(`airgap-install receipt`, then `bundle build --delta-from RECEIPT`)")
    have = _base_files(layout, delta.base_digest)
    carried = set(delta.carried)
    for member in m.members:
        if member.path in carried:
            continue
        src = have.get(member.sha256)
        if src is None:
            raise FormatError(f"delta bundle {name} lacks {member.path} and the base "
                              "release does not hold it",
                              hint="the delta was built for another base; install the "
                                   "full bundle")
        try:
            size = os.stat(src).st_size
        except OSError:
            size = -1
        if size != member.size:
            raise DigestMismatch(
                f"the base file {src} that {member.path} needs is missing or damaged "
                f"({'absent' if size < 0 else f'{size} bytes'}, expected {member.size})",
                hint="run `airgap-install install` of the installed bundle again to "
                     "repair the kept release, or install the full bundle")
    for member_path, segs in delta.patches:
        for seg in segs:
            if seg[0] == "ref":
                _check_ref(layout, delta.base_digest, seg, member_path=member_path)
    return have


class Apply:
    """A delta installed straight into staging (one copy). ``open_bundle`` checks it like
    a bundle (signatures, signing time) and against this host (its base, the kept base
    files); ``stage_payload`` writes every member of the full result into the install's
    staging folder, each hashed once as it is written against the signed manifest; ``info``
    then says what the delta carried and reused. The install step
    (``install._install_locked``) does the rest exactly as for a full bundle."""

    def __init__(self, layout: Layout, *, report: Report) -> None:
        self.layout = layout
        self.report = report
        self.info: Dict[str, Any] = {}
        self._delta: Optional[bundlefmt.Delta] = None
        self._have: Dict[str, str] = {}

    def open_bundle(self, path: str, *, anchor: bytes, now: int,
                    clock: Optional[int] = None) -> verify.Opened:
        """The delta's envelope read and verified (the caller closes the result)."""
        state, _ = load_state(self.layout)
        name = os.path.basename(path)
        f = open_regular(path, what="delta bundle")
        try:
            reader = bundlefmt.BundleReader(f, what=f"delta bundle {name}", delta_ok=True)
            header = reader.header()
            delta = reader.delta
            assert delta is not None
            root = verify.check_signatures(anchor, header, now)
            verify.check_created(header.manifest.created, now=now,
                                 clock=now if clock is None else clock,
                                 what=f"delta bundle {name}")
            verify.check_envelope(f.fileno(), header, what=path,  # THREATS 49
                                  env=bundlefmt.delta_envelope(header, delta))
            m = header.manifest
            self._have = _base_for(self.layout, state.current, delta, m=m, name=name)
            self._delta = delta
            carried_bytes = sum(x.size for x in bundlefmt.delta_payload(m, delta))
            self.info = {"base": delta.base_digest, "carried": len(delta.carried),
                         "carried_bytes": carried_bytes,
                         "reused_bytes": m.payload_size - carried_bytes,
                         "delta_size": os.fstat(f.fileno()).st_size}
            self.report(f"delta {name}: over {delta.base_name} {delta.base_version}, "
                        f"{len(delta.carried)} of {len(m.members)} members carried; the rest "
                        "is copied from the kept base release")
            return verify.Opened(path, f, reader, header,
                                 hashlib.sha256(header.manifest_bytes).hexdigest(), root,
                                 verify.newer_root(verify.anchor_version(anchor), root,
                                                   header.roots))
        except BaseException:
            f.close()
            raise

    def stage_payload(self, opened: verify.Opened, staging: str, *,
                      on_bytes: verify.OnBytes = None,
                      after_member: Optional[Callable[[str], None]] = None) -> None:
        """Every member of the full result written once into ``staging`` (manifest order):
        carried ones from the delta, patched archives from their segments, the rest from the
        kept base release. On any error the caller removes ``staging``."""
        verify.stage_envelope(opened.header, staging)
        payload = opened.reader.payload()
        made: Set[str] = set()
        with batched_fsync():  # thousands of small members: one sync, not two fsyncs each
            self._stage_members(opened, staging, payload, on_bytes=on_bytes,
                                after_member=after_member, made=made)
            for _ in payload:  # the reader refuses anything after the carried members
                pass
            for folder in made:
                fsync_dir(folder)
        failpoint.hit("after-delta-rebuild")

    def _stage_members(self, opened: verify.Opened, staging: str, payload: Iterator[Any], *,
                       on_bytes: verify.OnBytes, after_member: Optional[Callable[[str], None]],
                       made: Set[str]) -> None:
        delta = self._delta
        assert delta is not None
        carried = set(delta.carried)
        for member in opened.header.manifest.members:
            if member.path in carried:
                got, data = next(payload)
                assert got.path == member.path
                segs = delta.segments(member.path)
                chunks = (_patched(self.layout, delta.base_digest, segs, data=data)
                          if segs is not None else iter_file(data))
                what = (f"{member.path} rebuilt from the delta and the base" if segs
                        else f"delta member {member.path}")
                hint = REPAIR_HINT if segs else DAMAGED_DELTA
            else:
                segs = None
                chunks = _from_file(self._have[member.sha256], member)
                what = f"the base file {self._have[member.sha256]} (for {member.path})"
                hint = REPAIR_HINT
            try:
                verify.stage_member(staging, member, _written(chunks), what=what,
                                    on_bytes=on_bytes, made=made)
            except DigestMismatch as e:
                if segs is not None:
                    _diagnose(self.layout, delta.base_digest, segs)
                raise DigestMismatch(e.message, hint=hint) from None
            if after_member is not None:
                after_member(member.path)


REPAIR_HINT = ("run `airgap-install install` of the installed bundle again to repair the kept "
               "release, or install the full bundle")
DAMAGED_DELTA = "the delta is damaged or altered; copy it again, or install the full bundle"


def _written(chunks: Iterable[bytes]) -> Iterator[bytes]:
    for data in chunks:
        yield data
        failpoint.hit("in-delta-rebuild")


def _check_ref(layout: Layout, base: str, seg: Tuple[Any, ...], *, member_path: str) -> None:
    src = layout.release_file(base, seg[1])
    try:
        size = os.stat(src).st_size
    except OSError:
        size = -1
    if size < seg[2] + seg[3]:
        raise DigestMismatch(
            f"the base file {src} that {member_path} needs (blob sha256:{seg[4][:16]}) is "
            f"missing or damaged ({'absent' if size < 0 else f'{size} bytes'})",
            hint="run `airgap-install install` of the installed bundle again to repair the "
                 "kept release, or install the full bundle")


def _patched(layout: Layout, base: str, segs: Iterable[Tuple[Any, ...]],
             *, data: Any) -> Iterator[bytes]:
    """An images archive from its segments: literal bytes from the delta, blobs from the
    base's kept archives (the whole archive is hashed once as it is written; on a mismatch
    ``_diagnose`` names the damaged blob)."""
    for seg in segs:
        if seg[0] == "lit":
            yield from iter_file(data, limit=seg[1])
            continue
        src = layout.release_file(base, seg[1])
        with open_regular(src, what="base file") as f:
            f.seek(seg[2])
            yield from iter_file(f, limit=seg[3])


def _diagnose(layout: Layout, base: str, segs: Iterable[Tuple[Any, ...]]) -> None:
    """After a rebuilt archive failed its hash: the kept base blob at fault, if any, named."""
    for seg in segs:
        if seg[0] != "ref":
            continue
        src = layout.release_file(base, seg[1])
        blob = Member(seg[1], seg[3], seg[4], 0o644, "images")
        with open_regular(src, what="base file") as f:
            f.seek(seg[2])
            for _ in _checked(iter_file(f, limit=seg[3]), blob,
                              what=f"blob sha256:{seg[4]} of the base file {src}"):
                pass


def _from_file(path: str, member: Member) -> Iterator[bytes]:
    try:
        f = open_regular(path, what="base file", must_exist=False)
    except OSError as e:
        raise DigestMismatch(f"the base file {path} that {member.path} needs cannot be read: "
                             f"{e.strerror}", hint="install the full bundle instead") from None
    with f:
        yield from iter_file(f, limit=member.size + 1)


def _checked(chunks: Iterable[bytes], member: Member, *, what: str) -> Iterator[bytes]:
    def mismatch(sha: str, size: int) -> Exception:
        return DigestMismatch(f"{what}: expected sha256 {member.sha256} ({member.size} bytes), "
                              f"got {sha} ({size} bytes)",
                              hint=REPAIR_HINT)
    return checked_chunks(chunks, sha256=member.sha256, size=member.size, mismatch=mismatch)

