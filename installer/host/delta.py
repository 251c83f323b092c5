"""Installing a delta bundle (``NAME-VERSION-ARCH.delta.tar``, docs/bundle-format.md).

A delta carries the FULL result's signed envelope (``manifest.json``, ``signatures.json``,
root chain: the very bytes of the full bundle) plus only the members its base lacks. Here,
before anything is placed:

1. the envelope's signatures are checked (as for any bundle) and ``delta.json`` must name
   this host's current release as its base (else: refused, naming both manifests);
2. every member the delta leaves out must be in the kept base release
   (``releases/<base>/``, found by sha256), present with its size;
3. the full bundle is rebuilt into a fresh ``staging/<tx>/`` by the one bundle writer
   (``bundlefmt.iter_bundle``) from the delta's members and the kept base files, each hashed
   against the signed manifest as it is copied (a missing or damaged base file is refused,
   naming it, and the staging folder is removed);

then the rebuilt file, byte-identical to the full bundle, is installed exactly like one
(``install._install_locked``: envelope, signatures, policy, journal, rollback, crash safety).
A crash leaves only ``staging/<tx>/``, which recovery removes.
"""

import contextlib
import hashlib
import os
import shutil
import time
from typing import Any, BinaryIO, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from installer.errors import DigestMismatch, FormatError, PolicyRefusal
from installer.format import bundlefmt, envelope, tarstream
from installer.format.bundlefmt import Manifest, Member
from installer.fsio import checked_chunks, iter_file, write_verified
from installer.host import failpoint, txn
from installer.host.layout import Layout
from installer.host.state import Release, load_state, read_anchor
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


@contextlib.contextmanager
def expanded(layout: Layout, source: str, *,
             report: Report) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """``source`` itself, or for a delta the full bundle rebuilt in staging (removed after)."""
    if not is_delta(source):
        yield source, {}
        return
    folder, rebuilt, info = rebuild(layout, source, report=report)
    try:
        yield rebuilt, info
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _base_files(layout: Layout, digest: str) -> Dict[str, str]:
    """sha256 -> kept file of the base release, from its kept manifest (checked by digest)."""
    path = layout.release_file(digest, bundlefmt.MANIFEST_NAME)
    try:
        with open(path, "rb") as f:
            data = f.read(bundlefmt.MAX_HEADER_MEMBER + 1)
    except OSError as e:
        raise FormatError(f"the kept base release {path} cannot be read: {e.strerror}",
                          hint="install the full bundle instead") from None
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


def rebuild(layout: Layout, path: str, *, report: Report) -> Tuple[str, str, Dict[str, Any]]:
    """Check the delta against this host and rebuild the full bundle; returns (staging
    folder, rebuilt bundle path, summary). Nothing outside the new staging folder changes."""
    state, _ = load_state(layout)
    anchor = read_anchor(layout)
    clock = int(time.time())
    now = verify.now_for(state.time_ratchet, clock)
    name = os.path.basename(path)
    with verify.open_regular(path, what="delta bundle") as f:
        reader = bundlefmt.BundleReader(f, what=f"delta bundle {name}", delta_ok=True)
        header = reader.header()
        delta = reader.delta
        assert delta is not None
        verify.check_signatures(anchor, header, now)
        verify.check_created(header.manifest.created, clock=clock, now=now,
                             what=f"delta bundle {name}")
        m = header.manifest
        have = _base_for(layout, state.current, delta, m=m, name=name)
        carried = set(delta.carried)
        report(f"delta {name}: over {delta.base_name} {delta.base_version}, "
               f"{len(carried)} of {len(m.members)} members carried; rebuilding the full "
               "bundle in staging")
        payload = reader.payload()

        def member_chunks(member: Member) -> Iterable[bytes]:
            if member.path in carried:
                got, data = next(payload)
                assert got.path == member.path
                segs = delta.segments(member.path)
                if segs is not None:
                    return _checked(_patched(layout, delta.base_digest, segs, data=data), member,
                                    what=f"{member.path} rebuilt from the delta and the base")
                return _checked(iter_file(data, limit=member.size),  # type: ignore[arg-type]
                                member, what=f"delta member {member.path}")
            return _from_file(have[member.sha256], member)

        def written(chunks: Iterable[bytes]) -> Iterator[bytes]:
            for data in chunks:
                yield data
                failpoint.hit("in-delta-rebuild")

        os.makedirs(layout.staging, exist_ok=True)
        folder = os.path.join(layout.staging, txn.new_tx())
        os.mkdir(folder, 0o700)
        rebuilt = os.path.join(folder, f"{m.name}-{m.version}-{m.arch}.tar")
        try:
            write_verified(rebuilt, written(bundlefmt.iter_bundle(
                manifest=m, signatures=header.signatures, roots=header.roots,
                member_chunks=member_chunks)))
            for _ in payload:  # the reader refuses anything after the carried members
                pass
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    failpoint.hit("after-delta-rebuild")
    carried_bytes = sum(x.size for x in bundlefmt.delta_payload(m, delta))
    return folder, rebuilt, {"base": delta.base_digest, "carried": len(carried),
                             "carried_bytes": carried_bytes,
                             "reused_bytes": m.payload_size - carried_bytes,
                             "delta_size": os.stat(path).st_size}


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
    base's kept archives (each checked against its sha256 name)."""
    for seg in segs:
        if seg[0] == "lit":
            yield from iter_file(data, limit=seg[1])
            continue
        src = layout.release_file(base, seg[1])
        blob = Member(seg[1], seg[3], seg[4], 0o644, "images")
        with open(src, "rb") as f:
            f.seek(seg[2])
            yield from _checked(iter_file(f, limit=seg[3]), blob,
                                what=f"blob sha256:{seg[4]} of the base file {src}")


def _from_file(path: str, member: Member) -> Iterator[bytes]:
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DigestMismatch(f"the base file {path} that {member.path} needs cannot be read: "
                             f"{e.strerror}", hint="install the full bundle instead") from None
    with f:
        yield from _checked(iter_file(f, limit=member.size), member,
                            what=f"the base file {path} (for {member.path})")


def _checked(chunks: Iterable[bytes], member: Member, *, what: str) -> Iterator[bytes]:
    def mismatch(sha: str, size: int) -> Exception:
        return DigestMismatch(f"{what}: expected sha256 {member.sha256} ({member.size} bytes), "
                              f"got {sha} ({size} bytes)",
                              hint="run `airgap-install install` of the installed bundle "
                                   "again to repair the kept release, or install the full "
                                   "bundle")
    return checked_chunks(chunks, sha256=member.sha256, size=member.size, mismatch=mismatch)

