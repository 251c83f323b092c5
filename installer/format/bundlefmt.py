"""The bundle format, defined once: manifest model, member rules, deterministic writer,
strict streaming reader.

A bundle is an uncompressed POSIX (pax) tar. Members, in this order:

1. ``manifest.json``: canonical JSON (see ``canonjson``) describing the bundle and listing every
   payload member with path, size, sha256 and mode.
2. ``signatures.json``: canonical JSON ``{"signatures": [{"keyid", "sig"}]}`` over the exact
   bytes of ``manifest.json`` (empty list when unsigned).
3. ``roots/<N>.root.json`` for N = 1..newest: the TUF root chain, ascending (may be absent for
   unsigned bundles).
4. The payload members, in exactly the manifest's order.

Nothing else may appear. The reader checks every header against the manifest (regular file,
exact path, size, mode, no setuid/setgid) and never derives a destination from a tar name:
callers place files by the manifest entry. This module does no policy and no signature
checking: see ``trust`` and ``verify``.
"""

import re
from dataclasses import dataclass
from typing import (
    IO,
    Any,
    BinaryIO,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
)

from installer import policy
from installer.errors import DigestMismatch, FormatError, UnsafeMember
from installer.format import canonjson

# the format's names and the tar header are defined with the envelope; bundlefmt.X re-exports
from installer.format.envelope import DELTA_NAME as DELTA_NAME
from installer.format.envelope import MANIFEST_NAME as MANIFEST_NAME
from installer.format.envelope import ROOTS_DIR as ROOTS_DIR
from installer.format.envelope import SIGNATURES_NAME as SIGNATURES_NAME
from installer.format.envelope import Envelope, layout, small_documents
from installer.format.envelope import member_header as member_header
from installer.format.tarstream import Entry, TarStream

FORMAT = "k3s-airgap-bundle/v1"
MAX_HEADER_MEMBER = 4 * 1024 * 1024  # manifest, signatures and each root: small documents
MAX_HEADER_TOTAL = 8 * 1024 * 1024   # all of them together (ours: well under 1 MiB)
MAX_ROOTS = 256                      # root chain length (python-tuf: max_root_rotations 256)

ARCHES = ("amd64", "arm64", "arm")
ROLES = ("server", "agent")

# kind -> required path prefix inside the bundle
KIND_PREFIX = {
    "k3s-binary": "k3s/",
    "install-script": "k3s/",
    "images": "images/",
    "chart": "charts/",
    "manifest": "manifests/",
    "sbom": "sbom/",          # the bundle's CycloneDX SBOM: verified like any member, not placed
    "k3s-config": "config/",  # a config.yaml drop-in (docs/bundle-format.md "K3s configuration")
    "registries": "config/",  # K3s's registries.yaml
}
K3S_BINARY_PATH = "k3s/k3s"
INSTALL_SCRIPT_PATH = "k3s/install.sh"
# The K3s configuration members have exactly one name each (at most one of each per bundle):
# the installer maps them to fixed live paths (layout.K3S_DROPIN_TARGET, REGISTRIES_TARGET).
K3S_CONFIG_PATH = "config/50-airgap-bundle.yaml"
REGISTRIES_PATH = "config/registries.yaml"
FIXED_PATHS = {"k3s-config": K3S_CONFIG_PATH, "registries": REGISTRIES_PATH}

# A sha256 in hex, as every format here writes it (manifest, parts index, receipt, delta).
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_SHA_RE = SHA256_HEX
# one or two path components of safe characters; no dot-files, no "..", no empty components
_PATH_RE = re.compile(
    r"^(k3s|images|charts|manifests|sbom|config)/[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$")
_ROOT_RE = re.compile(r"^roots/([1-9][0-9]{0,8})\.root\.json$")
_ALLOWED_MODES = (0o644, 0o755)
IMAGE_ARCHIVE_SUFFIXES = (".tar", ".tar.zst", ".tzst", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class Member:
    path: str
    size: int
    sha256: str
    mode: int
    kind: str

    def to_json(self) -> Dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256,
                "mode": self.mode, "kind": self.kind}


@dataclass(frozen=True)
class ImageEntry:
    ref: str            # fully qualified name as the spec wrote it (normalised)
    digest: str         # platform manifest digest for this arch
    index_digest: str   # digest the tag resolved to (index or manifest); "" if not an index
    archive: str        # bundle path of the archive holding it

    def to_json(self) -> Dict[str, Any]:
        return {"ref": self.ref, "digest": self.digest, "index_digest": self.index_digest,
                "archive": self.archive}


@dataclass(frozen=True)
class ChartEntry:
    name: str
    version: str
    path: str           # charts/<name>-<version>.tgz
    namespace: str

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "version": self.version, "path": self.path,
                "namespace": self.namespace}


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    arch: str
    k3s_version: str
    roles: Tuple[str, ...]
    lock_digest: str
    created: int
    members: Tuple[Member, ...]
    images: Tuple[ImageEntry, ...] = ()
    charts: Tuple[ChartEntry, ...] = ()
    allow_k3s_minor_skip: bool = False
    allow_k3s_downgrade: bool = False

    def to_json(self) -> Dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "arch": self.arch,
            "k3s": {"version": self.k3s_version},
            "roles": list(self.roles),
            "lock_digest": self.lock_digest,
            "created": self.created,
            "upgrade": {"allow_k3s_minor_skip": self.allow_k3s_minor_skip,
                        "allow_k3s_downgrade": self.allow_k3s_downgrade},
            "images": [i.to_json() for i in self.images],
            "charts": [c.to_json() for c in self.charts],
            "members": [m.to_json() for m in self.members],
        }

    def to_bytes(self) -> bytes:
        return canonjson.encode(self.to_json())

    def member(self, path: str) -> Member:
        for m in self.members:
            if m.path == path:
                return m
        raise KeyError(path)

    @property
    def payload_size(self) -> int:
        return sum(m.size for m in self.members)


def _req(d: Dict[str, Any], key: str, typ: Any, *, where: str) -> Any:
    if key not in d:
        raise FormatError(f"bundle manifest: {where} is missing {key!r}")
    value = d[key]
    if typ is int and isinstance(value, bool) or not isinstance(value, typ):
        raise FormatError(f"bundle manifest: {where}.{key} has the wrong type "
                          f"({type(value).__name__})")
    return value


def check_member_path(path: str, kind: str) -> None:
    """Reject any path that could escape, hide or collide; pure."""
    if not _PATH_RE.match(path) or ".." in path:
        raise UnsafeMember(f"bundle member path {path!r} is not allowed",
                           hint="paths are <k3s|images|charts|manifests|sbom|config>/<safe name>")
    prefix = KIND_PREFIX.get(kind)
    if prefix is None:
        raise FormatError(f"bundle member {path!r} has unknown kind {kind!r}")
    if not path.startswith(prefix):
        raise UnsafeMember(f"bundle member {path!r} of kind {kind} must live under {prefix}")
    fixed = FIXED_PATHS.get(kind)
    if (fixed is not None and path != fixed) or (path.startswith("config/")
                                                  and path not in FIXED_PATHS.values()):
        raise UnsafeMember(f"bundle member {path!r} of kind {kind} must be "
                           f"{fixed or ' or '.join(sorted(FIXED_PATHS.values()))}")
    # K3s reads other names in agent/images differently (.txt: a pre-pull list) or not at all
    if kind == "images" and not path.endswith(IMAGE_ARCHIVE_SUFFIXES):
        raise FormatError(f"bundle member {path!r} of kind images is not an image archive "
                          f"(expected {', '.join(IMAGE_ARCHIVE_SUFFIXES)})")


def validate_manifest(manifest: Manifest) -> Manifest:
    """Check internal consistency; raises FormatError/UnsafeMember. Returns the manifest."""
    # numbers compared later (policy) must parse, or a signed bundle could make every later
    # install fail on the installed version; also bounds them (no 5000-digit numbers)
    policy.parse_version(manifest.version)
    policy.parse_k3s_version(manifest.k3s_version)
    if manifest.arch not in ARCHES:
        raise FormatError(f"bundle manifest: unknown arch {manifest.arch!r} "
                          f"(known: {', '.join(ARCHES)})")
    for role in manifest.roles:
        if role not in ROLES:
            raise FormatError(f"bundle manifest: unknown role {role!r}")
    seen = set()
    folded = set()
    for m in manifest.members:
        check_member_path(m.path, m.kind)
        if m.path in seen:
            raise UnsafeMember(f"bundle manifest lists {m.path!r} twice")
        # case-insensitive filesystems (a FAT USB stick) would merge these
        if m.path.lower() in folded:
            raise UnsafeMember(f"bundle member {m.path!r} collides with another after case folding")
        seen.add(m.path)
        folded.add(m.path.lower())
        if not _SHA_RE.match(m.sha256):
            raise FormatError(f"bundle member {m.path!r}: sha256 must be 64 lowercase hex")
        if m.size < 0:
            raise FormatError(f"bundle member {m.path!r}: negative size")
        if m.mode not in _ALLOWED_MODES:
            raise UnsafeMember(f"bundle member {m.path!r}: mode {m.mode:o} not allowed "
                               "(0644 or 0755 only)")
    kinds = [m.kind for m in manifest.members]
    if kinds.count("k3s-binary") != 1 or kinds.count("install-script") != 1:
        raise FormatError("bundle manifest must list exactly one k3s binary and one install.sh")
    for img in manifest.images:
        if img.archive not in seen:
            raise FormatError(f"bundle manifest: image {img.ref} points at missing archive "
                              f"{img.archive!r}")
    for chart in manifest.charts:
        if chart.path not in seen:
            raise FormatError(f"bundle manifest: chart {chart.name} points at missing member "
                              f"{chart.path!r}")
    return manifest


def parse_manifest(data: bytes) -> Manifest:
    """Parse and validate canonical manifest bytes."""
    doc = canonjson.loads_canonical(data, what="bundle manifest")
    if not isinstance(doc, dict):
        raise FormatError("bundle manifest is not a JSON object")
    fmt = _req(doc, "format", str, where="manifest")
    if fmt != FORMAT:
        raise FormatError(f"bundle format {fmt!r} is not supported (this installer reads "
                          f"{FORMAT})", hint="use the installer shipped with the bundle")
    k3s = _req(doc, "k3s", dict, where="manifest")
    upgrade = _req(doc, "upgrade", dict, where="manifest")
    members = tuple(
        Member(path=_req(m, "path", str, where="member"),
               size=_req(m, "size", int, where="member"),
               sha256=_req(m, "sha256", str, where="member"),
               mode=_req(m, "mode", int, where="member"),
               kind=_req(m, "kind", str, where="member"))
        for m in _req(doc, "members", list, where="manifest"))
    images = tuple(
        ImageEntry(ref=_req(i, "ref", str, where="image"),
                   digest=_req(i, "digest", str, where="image"),
                   index_digest=_req(i, "index_digest", str, where="image"),
                   archive=_req(i, "archive", str, where="image"))
        for i in _req(doc, "images", list, where="manifest"))
    charts = tuple(
        ChartEntry(name=_req(c, "name", str, where="chart"),
                   version=_req(c, "version", str, where="chart"),
                   path=_req(c, "path", str, where="chart"),
                   namespace=_req(c, "namespace", str, where="chart"))
        for c in _req(doc, "charts", list, where="manifest"))
    manifest = Manifest(
        name=_req(doc, "name", str, where="manifest"),
        version=_req(doc, "version", str, where="manifest"),
        arch=_req(doc, "arch", str, where="manifest"),
        k3s_version=_req(k3s, "version", str, where="manifest.k3s"),
        roles=tuple(_req(doc, "roles", list, where="manifest")),
        lock_digest=_req(doc, "lock_digest", str, where="manifest"),
        created=_req(doc, "created", int, where="manifest"),
        members=members, images=images, charts=charts,
        allow_k3s_minor_skip=_req(upgrade, "allow_k3s_minor_skip", bool, where="manifest.upgrade"),
        allow_k3s_downgrade=_req(upgrade, "allow_k3s_downgrade", bool, where="manifest.upgrade"),
    )
    return validate_manifest(manifest)


# ---------------------------------------------------------------------------- deltas

DELTA_FORMAT = "k3s-airgap-delta/v1"
DELTA_SUFFIX = ".delta.tar"


@dataclass(frozen=True)
class Delta:
    """A delta bundle's descriptor (``delta.json``, its first member): the exact base it needs
    and which of the full manifest's members it carries; every other member is taken from the
    base release kept on the device (by sha256, whatever its path there)."""

    base_digest: str        # sha256 of the base bundle's signed manifest bytes
    base_name: str
    base_version: str
    target_digest: str      # sha256 of this delta's manifest.json (the FULL result)
    carried: Tuple[str, ...]  # member paths present in the delta, in manifest order
    # path -> segments rebuilding that carried images archive: ("lit", n) is the next n bytes
    # of its payload entry, ("ref", base path, offset, size, sha256) a blob of the base
    patches: Tuple[Tuple[str, Tuple[Tuple[Any, ...], ...]], ...] = ()

    def to_json(self) -> Dict[str, Any]:
        return {"format": DELTA_FORMAT,
                "base": {"digest": self.base_digest, "name": self.base_name,
                         "version": self.base_version},
                "target": self.target_digest, "carried": list(self.carried),
                "patches": {p: [list(s) for s in segs] for p, segs in self.patches}}

    def to_bytes(self) -> bytes:
        return canonjson.encode(self.to_json())

    def segments(self, path: str) -> Optional[Tuple[Tuple[Any, ...], ...]]:
        return dict(self.patches).get(path)


def delta_payload(manifest: Manifest, delta: Delta) -> List[Member]:
    """The members a delta's tar holds, as its headers say: the carried ones, a patched
    archive with only its literal bytes (one rule for the writer and the reader)."""
    out = []
    carried = set(delta.carried)
    for m in manifest.members:
        if m.path not in carried:
            continue
        segs = delta.segments(m.path)
        if segs is not None:
            m = Member(m.path, sum(s[1] for s in segs if s[0] == "lit"), "", m.mode, m.kind)
        out.append(m)
    return out


def _check_segments(path: str, segs: Any, size: int) -> None:
    total = 0
    for seg in segs:
        ok = (isinstance(seg, (list, tuple)) and seg and
              (seg[0] == "lit" and len(seg) == 2 and _nonneg(seg[1]) or
               seg[0] == "ref" and len(seg) == 5 and isinstance(seg[1], str) and
               _nonneg(seg[2]) and _nonneg(seg[3]) and isinstance(seg[4], str) and
               bool(_SHA_RE.match(seg[4]))))
        if not ok:
            raise FormatError(f"{DELTA_NAME}: a segment of {path!r} is malformed")
        if seg[0] == "ref":
            check_member_path(seg[1], "images")
        total += seg[1] if seg[0] == "lit" else seg[3]
    if total != size:
        raise FormatError(f"{DELTA_NAME}: the segments of {path!r} make {total} bytes, the "
                          f"manifest says {size}")


def _nonneg(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def validate_delta(delta: Delta, manifest: Manifest, manifest_bytes: bytes) -> Delta:
    """One validation, run by the writer before writing and by the reader after reading."""
    import hashlib
    for digest in (delta.base_digest, delta.target_digest):
        if not _SHA_RE.match(digest):
            raise FormatError(f"{DELTA_NAME}: {digest!r} is not a manifest sha256")
    if hashlib.sha256(manifest_bytes).hexdigest() != delta.target_digest:
        raise FormatError(f"{DELTA_NAME} describes manifest {delta.target_digest[:16]}, but "
                          "the delta carries another manifest",
                          hint="the delta was altered or assembled from two builds")
    if delta.base_digest == delta.target_digest:
        raise FormatError(f"{DELTA_NAME}: the base is the target itself")
    order = [m.path for m in manifest.members]
    positions = []
    for path in delta.carried:
        if path not in order:
            raise FormatError(f"{DELTA_NAME} carries {path!r}, which the manifest does not "
                              "list")
        positions.append(order.index(path))
    if positions != sorted(set(positions)):
        raise FormatError(f"{DELTA_NAME}: carried members must be unique and in manifest order")
    for path, segs in delta.patches:
        if path not in delta.carried:
            raise FormatError(f"{DELTA_NAME} patches {path!r}, which it does not carry")
        _check_segments(path, segs, manifest.member(path).size)
    policy.parse_version(delta.base_version)
    return delta


def parse_delta(data: bytes, manifest: Manifest, manifest_bytes: bytes) -> Delta:
    doc = canonjson.loads_canonical(data, what=DELTA_NAME)
    if not isinstance(doc, dict):
        raise FormatError(f"{DELTA_NAME} is not a JSON object")
    fmt = _req(doc, "format", str, where=DELTA_NAME)
    if fmt != DELTA_FORMAT:
        raise FormatError(f"delta format {fmt!r} is not supported (this installer reads "
                          f"{DELTA_FORMAT})", hint="use the installer shipped with the bundle")
    base = _req(doc, "base", dict, where=DELTA_NAME)
    carried = _req(doc, "carried", list, where=DELTA_NAME)
    if not all(isinstance(p, str) for p in carried):
        raise FormatError(f"{DELTA_NAME}: carried must list member paths")
    patches = _req(doc, "patches", dict, where=DELTA_NAME)
    if not all(isinstance(v, list) for v in patches.values()):
        raise FormatError(f"{DELTA_NAME}: patches must map paths to segment lists")
    delta = Delta(base_digest=_req(base, "digest", str, where="delta.base"),
                  base_name=_req(base, "name", str, where="delta.base"),
                  base_version=_req(base, "version", str, where="delta.base"),
                  target_digest=_req(doc, "target", str, where=DELTA_NAME), carried=tuple(carried),
                  patches=tuple((p, tuple(tuple(x) if isinstance(x, list) else x
                                          for x in segs))
                                for p, segs in sorted(patches.items())))
    if delta.to_bytes() != data:
        raise FormatError(f"{DELTA_NAME} holds fields this installer does not know")
    return validate_delta(delta, manifest, manifest_bytes)


# ---------------------------------------------------------------------------- writing


def check_for_write(manifest: Manifest) -> bytes:
    """The manifest's bytes, after applying every rule the reader applies to them.

    One validation for both sides: the writer runs the reader's own ``parse_manifest`` on the
    bytes it is about to write, so a bundle devices would refuse (a member named
    ``manifests/my app.yaml``, two names that fold together) is never written.
    """
    data = manifest.to_bytes()
    if parse_manifest(data) != manifest:
        raise FormatError("bundle manifest does not survive its own encoding (a field has a "
                          "type the format cannot carry)")
    return data


def write_bundle(
    out: BinaryIO,
    *,
    manifest: Manifest,
    signatures: bytes,
    roots: Sequence[bytes],
    open_member: Callable[[Member], IO[bytes]],
) -> None:
    """Write a bundle deterministically to ``out``.

    ``open_member`` returns a readable binary file for a payload member; its bytes are copied
    as they are (the caller verified them; the reader verifies again). Same inputs give the
    same bytes: fixed mtime (``manifest.created``), uid/gid 0, no user names, manifest order.
    """
    def member_chunks(m: Member) -> Iterator[bytes]:
        with open_member(m) as f:
            while True:
                data = f.read(_COPY_CHUNK)
                if not data:
                    return
                yield data

    for chunk in iter_bundle(manifest=manifest, signatures=signatures, roots=roots,
                             member_chunks=member_chunks):
        out.write(chunk)


_COPY_CHUNK = 1024 * 1024


def delta_envelope(header: "Header", delta: Delta) -> Envelope:
    """The envelope of the delta bundle ``iter_bundle`` writes for ``header`` and ``delta``:
    ``delta.json`` first, the same documents, then only the members it carries."""
    small = small_documents(manifest_bytes=header.manifest_bytes,
                            signatures=header.signatures, roots=header.roots)
    small.insert(0, (DELTA_NAME, delta.to_bytes()))
    return layout(small=[(name, len(data)) for name, data in small],
                  members=[(m.path, m.size, m.mode, m.sha256)
                           for m in delta_payload(header.manifest, delta)],
                  mtime=header.manifest.created)


def iter_bundle(
    *,
    manifest: Manifest,
    signatures: bytes,
    roots: Sequence[bytes],
    member_chunks: Callable[[Member], Iterable[bytes]],
    delta: Optional[Delta] = None,
) -> Iterator[bytes]:
    """The bytes of the bundle, in order, as chunks: each tar header (pax, as ``tarfile``
    writes it), the member's data exactly as ``member_chunks`` yields it (so callers can
    stream and hash without copies), zero padding, and the trailer (two zero blocks, padded
    to a multiple of ``tarfile.RECORDSIZE``). A member whose chunks are not exactly its
    manifest size raises ``FormatError`` before any byte past it is produced.

    With ``delta``, the same writer writes a delta bundle: ``delta.json`` first, then the
    same envelope, then only the members ``delta.carried`` lists (docs/bundle-format.md)."""
    manifest_bytes = check_for_write(manifest)
    small = small_documents(manifest_bytes=manifest_bytes, signatures=signatures, roots=roots)
    members: Sequence[Member] = manifest.members
    if delta is not None:
        validate_delta(delta, manifest, manifest_bytes)
        small.insert(0, (DELTA_NAME, delta.to_bytes()))
        members = delta_payload(manifest, delta)
    env = layout(small=[(name, len(data)) for name, data in small],
                 members=[(m.path, m.size, m.mode, m.sha256) for m in members],
                 mtime=manifest.created)
    for n, (_name, data) in enumerate(small):
        slot = env.slots[n]
        yield slot.header + data + bytes(slot.pad)
    for n, m in enumerate(members, start=len(small)):
        slot = env.slots[n]
        yield slot.header
        written = 0
        for data in member_chunks(m):
            written += len(data)
            if written > m.size:
                raise FormatError(f"bundle member {m.path!r}: more than its {m.size} bytes")
            yield data
        if written != m.size:
            raise FormatError(f"bundle member {m.path!r}: {written} bytes, the manifest says "
                              f"{m.size}")
        if slot.pad:
            yield bytes(slot.pad)
    yield bytes(env.size - env.end)


def unsigned_signatures() -> bytes:
    return canonjson.encode({"signatures": []})


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Header:
    """The envelope of a bundle: everything before the payload."""

    manifest_bytes: bytes
    manifest: Manifest
    signatures: bytes
    roots: Tuple[bytes, ...]


class BundleReader:
    """Stream a bundle once, front to back, from a file object (a USB stick, a pipe).

    ``header()`` returns the envelope; ``payload()`` then yields ``(member, fileobj)`` for each
    payload member, in manifest order, after checking its tar header against the manifest.
    Each fileobj yields exactly ``member.size`` bytes. Anything extra, missing, reordered or
    unsafe raises before the caller sees its bytes.

    The envelope is read before any signature is checked, so it is bounded here: the tar
    headers by ``tarstream``, each metadata document by ``MAX_HEADER_MEMBER``, all of them
    together by ``MAX_HEADER_TOTAL`` and the root chain by ``MAX_ROOTS``, each limit checked
    before the bytes are read.
    """

    def __init__(self, fileobj: BinaryIO, *, what: str = "bundle",
                 delta_ok: bool = False) -> None:
        self._what = what
        self._delta_ok = delta_ok
        self.delta: Optional[Delta] = None  # set by header() for a delta bundle (delta_ok)
        self._tar = TarStream(fileobj, what=what)
        self._header: Optional[Header] = None
        self._pending: Optional[Entry] = None
        self._metadata_bytes = 0

    def _next(self) -> Optional[Entry]:
        if self._pending is not None:
            entry, self._pending = self._pending, None
            return entry
        return self._tar.next()

    def _read_small(self, entry: Entry) -> bytes:
        if entry.size > MAX_HEADER_MEMBER:
            raise FormatError(f"{self._what}: member {entry.name!r} is {entry.size} bytes, over "
                              f"the {MAX_HEADER_MEMBER} limit for metadata")
        self._metadata_bytes += entry.size
        if self._metadata_bytes > MAX_HEADER_TOTAL:
            raise FormatError(f"{self._what}: its metadata members (manifest, signatures, "
                              f"roots) exceed {MAX_HEADER_TOTAL} bytes together",
                              hint="the file is not a bundle this installer wrote")
        data = self._tar.read(entry.size)
        if len(data) != entry.size:  # pragma: no cover - TarStream raises on a short read
            raise FormatError(f"{self._what}: member {entry.name!r} is truncated")
        return data

    def _expect(self, name: str, position: str) -> Entry:
        entry = self._next()
        if entry is None or entry.name != name:
            found = entry.name if entry else None
            raise FormatError(f"{self._what}: {position} member must be {name}, "
                              f"found {found!r}")
        return entry

    def header(self) -> Header:
        if self._header is not None:
            return self._header
        first = self._next()
        delta_bytes = None
        if first is not None and first.name == DELTA_NAME:
            if not self._delta_ok:
                raise FormatError(f"{self._what} is a delta bundle: it holds only what its "
                                  "base lacks",
                                  hint="install it with `airgap-install install` on a host "
                                       "running its base, or use the full bundle")
            delta_bytes = self._read_small(first)
            first = None
        self._pending = first
        manifest_bytes = self._read_small(
            self._expect(MANIFEST_NAME, "second" if delta_bytes else "first"))
        manifest = parse_manifest(manifest_bytes)
        if delta_bytes is not None:
            self.delta = parse_delta(delta_bytes, manifest, manifest_bytes)
        signatures = self._read_small(self._expect(SIGNATURES_NAME, "second"))
        roots: List[bytes] = []
        while True:
            entry = self._next()
            if entry is None:
                break
            match = _ROOT_RE.match(entry.name)
            if not match:
                self._pending = entry
                break
            if int(match.group(1)) != len(roots) + 1:
                raise FormatError(f"{self._what}: root chain member {entry.name!r} out of "
                                  f"order (expected {len(roots) + 1})")
            if len(roots) >= MAX_ROOTS:
                raise FormatError(f"{self._what}: the root chain holds more than {MAX_ROOTS} "
                                  "roots", hint="the file is not a bundle this installer wrote")
            roots.append(self._read_small(entry))
        self._header = Header(manifest_bytes, manifest, signatures, tuple(roots))
        return self._header

    def payload(self) -> Iterator[Tuple[Member, "_Limited"]]:
        header = self.header()
        listed: Sequence[Member] = header.manifest.members
        if self.delta is not None:
            listed = delta_payload(header.manifest, self.delta)
        for expected in listed:
            entry = self._next()
            if entry is None:
                raise FormatError(f"{self._what}: member {expected.path!r} listed in the "
                                  "manifest is missing",
                                  hint="the bundle is truncated; copy it again")
            if entry.name != expected.path:
                raise UnsafeMember(f"{self._what}: found member {entry.name!r} where the "
                                   f"manifest lists {expected.path!r}",
                                   hint="members must appear exactly as the signed manifest "
                                        "lists them")
            if entry.size != expected.size:
                raise DigestMismatch(f"{self._what}: member {entry.name!r} is {entry.size} "
                                     f"bytes in the tar, the manifest says {expected.size}")
            if entry.mode != expected.mode:
                raise UnsafeMember(f"{self._what}: member {entry.name!r} has mode "
                                   f"{entry.mode:o}, the manifest says {expected.mode:o}")
            yield expected, _Limited(self._tar, expected.size)
        extra = self._next()
        if extra is not None:
            raise UnsafeMember(f"{self._what}: member {extra.name!r} is not listed in the manifest")


class _Limited:
    """Read exactly ``size`` bytes of the current tar member; a short read is a truncation
    (``TarStream`` raises it, naming the bundle)."""

    def __init__(self, tar: TarStream, size: int) -> None:
        self._tar = tar
        self._left = size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        data = self._tar.read(n)
        self._left -= len(data)
        return data
