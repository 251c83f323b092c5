"""The bundle format (installer/format/bundlefmt.py): manifest rules, the tar reader, the envelope,
delta descriptors, the writer's own checks.

Moved unchanged from test_installer_gaps.py / test_installer_mutants.py."""

import hashlib
import io
import json
import re
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple, Type

import pytest

from installer.errors import (
    DigestMismatch,
    FormatError,
    UnsafeMember,
)
from installer.format import bundlefmt, canonjson
from installer.format.bundlefmt import BundleReader, Member
from installer.trust import verify
from tests.bundles import (
    KeyDir,
    _members,
    default_spec,
    manifest_for,
)
from tests.bundles import (
    open_signed as _open,
)
from tests.bundles import (
    spec_parts as _spec_parts,
)
from tests.bundles import (
    verify_signed as _verify,
)
from tests.bundles import (
    write_signed as _write,
)

NOW = 1_800_000_000  # after every spec's `created` (1_790_000_000), before the roots expire


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


def _members_of() -> List[Member]:
    return list(_spec_parts()[1].members)


def _manifest_with(members: List[Member], **kw: object) -> bytes:
    spec = default_spec("2.0.0")
    return replace(manifest_for(spec, members), **kw).to_bytes()  # type: ignore[arg-type]


def _set(ms: List[Member], path: str, **kw: object) -> List[Member]:
    return [replace(m, **kw) if m.path == path else m for m in ms]  # type: ignore[arg-type]


FORMAT_CASES: Dict[str, Tuple[Callable[[List[Member]], List[Member]], Dict[str, Any],
                              Type[Exception], str]] = {
    "no-install-sh": (lambda ms: [m for m in ms if m.kind != "install-script"], {},
                      FormatError, "exactly one k3s binary and one install.sh"),
    "two-k3s-binaries": (lambda ms: ms + [Member("k3s/k3s-2", 1, "0" * 64, 0o755, "k3s-binary")],
                         {}, FormatError, "exactly one k3s binary"),
    "kind-not-its-prefix": (lambda ms: _set(ms, "manifests/demo.yaml", kind="chart"), {},
                            UnsafeMember, "of kind chart must live under charts/"),
    "unknown-kind": (lambda ms: _set(ms, "manifests/demo.yaml", kind="script"), {},
                     FormatError, "unknown kind 'script'"),
    "unknown-role": (lambda ms: ms, {"roles": ("server", "worker")}, FormatError,
                     "unknown role 'worker'"),
    "unknown-arch": (lambda ms: ms, {"arch": "riscv64"}, FormatError, "unknown arch"),
    "negative-size": (lambda ms: _set(ms, "manifests/demo.yaml", size=-1), {}, FormatError,
                      "negative size"),
    "bad-sha": (lambda ms: _set(ms, "manifests/demo.yaml", sha256="A" * 64), {}, FormatError,
                "64 lowercase hex"),
    "setuid-mode": (lambda ms: _set(ms, "k3s/k3s", mode=0o4755), {}, UnsafeMember,
                    "mode 4755 not allowed"),
    "listed-twice": (lambda ms: ms + [ms[-1]], {}, UnsafeMember, "twice"),
    "case-collision": (lambda ms: ms + [replace(ms[-1], path="manifests/DEMO.yaml")], {},
                       UnsafeMember, "case folding"),
    "bad-version": (lambda ms: ms, {"version": "one"}, FormatError, "not a dotted version"),
    "bad-k3s-version": (lambda ms: ms, {"k3s_version": "1.33"}, FormatError,
                        "not like v1.34.3+k3s1"),
    "image-archive-missing": (lambda ms: ms, {"images": (bundlefmt.ImageEntry(
        "docker.io/x:1", "sha256:" + "0" * 64, "", "images/none.tar"),)}, FormatError,
        "points at missing archive"),
    "chart-missing": (lambda ms: ms, {"charts": (bundlefmt.ChartEntry(
        "c", "1", "charts/none.tgz", "ns"),)}, FormatError, "points at missing member"),
}


@pytest.mark.parametrize("case", sorted(FORMAT_CASES))
def test_manifest_format_rules(case: str) -> None:
    edit, fields, error, needle = FORMAT_CASES[case]
    data = _manifest_with(edit(_members_of()), **fields)
    with pytest.raises(error, match=re.escape(needle)):
        bundlefmt.parse_manifest(data)


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d.pop("format"), "missing 'format'"),
    (lambda d: d.update(format="k3s-airgap-bundle/v2"), "is not supported"),
    (lambda d: d.update(created="1"), "created has the wrong type"),
    (lambda d: d.update(created=True), "created has the wrong type"),
    (lambda d: d["members"][0].update(size=True), "size has the wrong type"),
    (lambda d: d.update(upgrade={"allow_k3s_minor_skip": 1, "allow_k3s_downgrade": False}),
     "allow_k3s_minor_skip has the wrong type"),
])
def test_manifest_field_types(mutate: Callable[[dict], object], needle: str) -> None:
    doc = json.loads(_manifest_with(_members_of()))
    mutate(doc)
    with pytest.raises(FormatError, match=re.escape(needle)):
        bundlefmt.parse_manifest(canonjson.encode(doc))
    with pytest.raises(FormatError, match="not a JSON object"):
        bundlefmt.parse_manifest(b"[]")


def test_manifest_roundtrip_and_lookup() -> None:
    _, manifest, _ = _spec_parts()
    parsed = bundlefmt.parse_manifest(manifest.to_bytes())
    assert parsed == manifest
    assert parsed.member("k3s/k3s").kind == "k3s-binary"
    with pytest.raises(KeyError):
        parsed.member("k3s/none")
    assert parsed.payload_size == sum(m.size for m in manifest.members)


@pytest.mark.parametrize("path,kind", [("k3s/../x", "k3s-binary"), ("/etc/x", "manifest"),
                                       ("manifests/.x", "manifest"), ("other/x", "manifest"),
                                       ("manifests/a/b", "manifest"), ("manifests/", "manifest")])
def test_member_paths_refused(path: str, kind: str) -> None:
    with pytest.raises(UnsafeMember, match="not allowed"):
        bundlefmt.check_member_path(path, kind)


def test_zero_size_member(tmp_path: Path, keydir: KeyDir) -> None:
    """A zero-byte manifest member: no data, no padding; verifies and stages."""
    spec, _, data = _spec_parts()
    data["manifests/empty.yaml"] = b""
    members = sorted(_members_of() + [Member("manifests/empty.yaml", 0,
                                             hashlib.sha256(b"").hexdigest(), 0o644,
                                             "manifest")], key=lambda m: m.path)
    manifest = manifest_for(spec, members)
    bundle = _write(tmp_path / "b.tar", keydir, manifest=manifest, data=data)
    assert _verify(bundle, keydir) == manifest.payload_size
    opened = _open(bundle, keydir)
    try:
        verify.stage_payload(opened, str(tmp_path / "s"))
    finally:
        opened.close()
    assert (tmp_path / "s/manifests/empty.yaml").read_bytes() == b""


def _tar(entries: List[tarfile.TarInfo], payload: dict, *, manifest: bytes) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("manifest.json", manifest), ("signatures.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in entries:
            tar.addfile(info, io.BytesIO(payload.get(info.name, bytes(info.size)))
                        if info.isreg() else None)
    buf.seek(0)
    return buf


def _reader_case(edit: Callable[[List[tarfile.TarInfo]], List[tarfile.TarInfo]]) -> None:
    _, manifest, data = _spec_parts()
    infos = []
    for m in manifest.members:
        info = tarfile.TarInfo(m.path)
        info.size, info.mode = m.size, m.mode
        infos.append(info)
    reader = BundleReader(_tar(edit(infos), data, manifest=manifest.to_bytes()), what="b")
    for _, f in reader.payload():
        while f.read(7000):
            pass


def _tweak(member: str, **kw: object) -> Callable[[List[tarfile.TarInfo]], List[tarfile.TarInfo]]:
    def edit(infos: List[tarfile.TarInfo]) -> List[tarfile.TarInfo]:
        for i in infos:
            if i.name == member:
                for k, v in kw.items():
                    setattr(i, k, v)
        return infos
    return edit


READER_CASES = {
    "symlink": (_tweak("manifests/demo.yaml", type=tarfile.SYMTYPE, linkname="/x", size=0),
                UnsafeMember, "'manifests/demo.yaml' is not a regular file (symlink)"),
    "hardlink": (_tweak("charts/demo-2.0.0.tgz", type=tarfile.LNKTYPE, linkname="k3s/k3s",
                        size=0), UnsafeMember, "not a regular file (hardlink)"),
    "fifo": (_tweak("manifests/demo.yaml", type=tarfile.FIFOTYPE, size=0), UnsafeMember,
             "not a regular file (FIFO)"),
    "device": (_tweak("manifests/demo.yaml", type=tarfile.CHRTYPE, size=0), UnsafeMember,
               "not a regular file (character device)"),
    "folder": (_tweak("manifests/demo.yaml", type=tarfile.DIRTYPE, size=0), UnsafeMember,
               "not a regular file (folder)"),
    "setuid": (_tweak("manifests/demo.yaml", mode=0o4644), UnsafeMember, "setuid"),
    "sticky": (_tweak("manifests/demo.yaml", mode=0o1644), UnsafeMember, "sticky"),
    "mode-differs": (_tweak("k3s/k3s", mode=0o644), UnsafeMember,
                     "has mode 644, the manifest says 755"),
    "size-differs": (_tweak("manifests/demo.yaml", size=3), DigestMismatch,
                     "is 3 bytes in the tar, the manifest says"),
    "renamed": (_tweak("manifests/demo.yaml", name="manifests/other.yaml"), UnsafeMember,
                "found member 'manifests/other.yaml' where the manifest lists"),
    "missing": (lambda infos: infos[:-1], FormatError, "listed in the manifest is missing"),
    "extra": (lambda infos: infos + [infos[-1]], UnsafeMember, "is not listed in the manifest"),
}


@pytest.mark.parametrize("case", sorted(READER_CASES))
def test_reader_checks_each_header(case: str) -> None:
    """BundleReader's own checks, without the envelope check in front of them."""
    edit, error, needle = READER_CASES[case]
    with pytest.raises(error, match=re.escape(needle)):
        _reader_case(edit)


def test_reader_accepts_the_plain_case_and_reads_exact_sizes() -> None:
    _, manifest, data = _spec_parts()
    infos = []
    for m in manifest.members:
        info = tarfile.TarInfo(m.path)
        info.size, info.mode = m.size, m.mode
        infos.append(info)
    reader = BundleReader(_tar(infos, data, manifest=manifest.to_bytes()))
    header = reader.header()
    assert header.manifest == manifest and header.roots == () and header.signatures == b"{}"
    assert reader.header() is header
    seen = {}
    for member, f in reader.payload():
        first = f.read(5)
        seen[member.path] = first + f.read()
        assert f.read() == b"" and f.read(10) == b""
    assert seen == data


def test_reader_order_and_names_of_metadata() -> None:
    _, manifest, _ = _spec_parts()
    for names, needle in [(("signatures.json", "manifest.json"), "first member must be"),
                          (("manifest.json", "roots/1.root.json"), "second member must be")]:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                data = manifest.to_bytes()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        buf.seek(0)
        with pytest.raises(FormatError, match=needle):
            BundleReader(buf).header()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("manifest.json", "signatures.json", "roots/2.root.json"):
            data = manifest.to_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    with pytest.raises(FormatError, match="out of order"):
        BundleReader(buf).header()


def _delta_world() -> Any:
    import hashlib

    from installer.format import bundlefmt
    from tests.bundles import manifest_for
    spec = default_spec("2.0.0")
    manifest = manifest_for(spec, [m for m, _ in _members(spec)])
    mbytes = manifest.to_bytes()
    image = manifest.member("images/app-2.0.0.tar")
    good = bundlefmt.Delta(
        base_digest="b" * 64, base_name="edge-1.0.0-amd64.tar", base_version="1.0.0",
        target_digest=hashlib.sha256(mbytes).hexdigest(),
        carried=("k3s/k3s", "images/app-2.0.0.tar"),
        patches=(("images/app-2.0.0.tar", (("lit", 100), ("ref", "images/old.tar", 0,
                                                          image.size - 100, "c" * 64))),))
    return manifest, mbytes, good


def _delta_doc(edit: Any) -> Any:
    def apply(doc: Dict[str, Any]) -> Dict[str, Any]:
        edit(doc)
        return doc
    return apply


_DELTA_CASES = [
    ("not an object", lambda d: [d], r"delta.json is not a JSON object"),
    ("format", _delta_doc(lambda d: d.update(format="k3s-airgap-delta/v2")),
     r"delta format 'k3s-airgap-delta/v2' is not supported"),
    ("carried types", _delta_doc(lambda d: d.update(carried=["k3s/k3s", 5])),
     r"carried must list member paths"),
    ("patch values", _delta_doc(lambda d: d.update(patches={"k3s/k3s": 5})),
     r"patches must map paths to segment lists"),
    ("other target", _delta_doc(lambda d: d.update(target="d" * 64)),
     r"describes manifest dddddddddddddddd, but the delta carries another manifest"),
    ("base is target", _delta_doc(lambda d: d["base"].update(digest=d["target"])),
     r"the base is the target itself"),
    ("order", _delta_doc(lambda d: d.update(carried=list(reversed(d["carried"])))),
     r"carried members must be unique and in manifest order"),
    ("twice", _delta_doc(lambda d: d.update(carried=["k3s/k3s", "k3s/k3s",
                                                     "images/app-2.0.0.tar"])),
     r"carried members must be unique and in manifest order"),
    ("negative lit", _delta_doc(lambda d: d["patches"]["images/app-2.0.0.tar"].insert(
        0, ["lit", -1])), r"a segment of 'images/app-2.0.0.tar' is malformed"),
    ("bool lit", _delta_doc(lambda d: d["patches"]["images/app-2.0.0.tar"].insert(
        0, ["lit", True])), r"a segment of 'images/app-2.0.0.tar' is malformed"),
    ("short", _delta_doc(lambda d: d["patches"]["images/app-2.0.0.tar"].pop(0)),
     r"the segments of 'images/app-2.0.0.tar' make 8400 bytes, the manifest says 8500"),
    ("unknown field", _delta_doc(lambda d: d.update(note="x")),
     r"delta.json holds fields this installer does not know"),
    ("bad base digest", _delta_doc(lambda d: d["base"].update(digest="xyz")),
     r"'xyz' is not a manifest sha256"),
    ("unlisted", _delta_doc(lambda d: d["carried"].append("manifests/nope.yaml")),
     r"carries 'manifests/nope.yaml', which the manifest does not list"),
    ("patch not carried", _delta_doc(lambda d: d["patches"].update({"k3s/install.sh": []})),
     r"patches 'k3s/install.sh', which it does not carry"),
    ("segment kind", _delta_doc(lambda d: d["patches"]["images/app-2.0.0.tar"].insert(
        0, ["cp", 0])), r"a segment of 'images/app-2.0.0.tar' is malformed"),
    ("short ref", _delta_doc(lambda d: d["patches"]["images/app-2.0.0.tar"][1].pop()),
     r"a segment of 'images/app-2.0.0.tar' is malformed"),
    ("negative offset", _delta_doc(lambda d: d["patches"]["images/app-2.0.0.tar"][1]
                                   .__setitem__(2, -1)),
     r"a segment of 'images/app-2.0.0.tar' is malformed"),
    ("ref path", _delta_doc(lambda d: d["patches"]["images/app-2.0.0.tar"][1].__setitem__(
        1, "images/x.txt")), r"'images/x.txt' of kind images is not an image archive"),
]


@pytest.mark.parametrize("case,edit,message", _DELTA_CASES, ids=[c[0] for c in _DELTA_CASES])
def test_bundlefmt_delta_descriptor_rules(case: str, edit: Any, message: str) -> None:
    """bundlefmt.py lines 321 (``total = 0`` -> ``1``), 333/334, 339 (``and`` -> ``or``),
    348/349, 352/353, 361/362, 373/374, 376/377, 381/382, 384/385 and 393/394 (each check's
    comparison flipped or its ``raise`` -> ``pass``): the good descriptor reads back as
    itself, and each broken one is a FormatError naming delta.json's fault (in-process; the
    delta CLI tests build real deltas but never these)."""
    from installer.errors import FormatError
    from installer.format import bundlefmt, canonjson
    manifest, mbytes, good = _delta_world()
    assert bundlefmt.parse_delta(good.to_bytes(), manifest, mbytes) == good
    image = manifest.member("images/app-2.0.0.tar")
    assert bundlefmt.delta_payload(manifest, good) == [
        manifest.member("k3s/k3s"),
        bundlefmt.Member(image.path, 100, "", image.mode, image.kind)]
    data = canonjson.encode(edit(json.loads(good.to_bytes())))
    with pytest.raises(FormatError, match=message):
        bundlefmt.parse_delta(data, manifest, mbytes)


def test_bundlefmt_images_member_must_be_an_image_archive() -> None:
    """bundlefmt.py line 180 (``raise`` -> ``pass``): a member of kind images under
    ``images/`` whose name K3s would not import (a ``.txt`` pre-pull list) is refused."""
    from installer.errors import FormatError
    from installer.format import bundlefmt
    with pytest.raises(FormatError, match=r"'images/pull\.txt' of kind images is not an image "
                                          r"archive \(expected \.tar, \.tar\.zst"):
        bundlefmt.check_member_path("images/pull.txt", "images")
    bundlefmt.check_member_path("images/app.tar.zst", "images")


def test_bundlefmt_writer_refuses_a_manifest_that_does_not_round_trip() -> None:
    """bundlefmt.py line 421/422 (``!=`` -> ``==``, ``raise`` -> ``pass``): a manifest whose
    bytes read back as another manifest (roles given as a list, read back as a tuple) is not
    written; a good one is."""
    from dataclasses import replace

    from installer.errors import FormatError
    from installer.format import bundlefmt
    from tests.bundles import manifest_for
    spec = default_spec("2.0.0")
    manifest = manifest_for(spec, [m for m, _ in _members(spec)])
    assert bundlefmt.check_for_write(manifest) == manifest.to_bytes()
    odd = replace(manifest, roles=list(manifest.roles))  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="does not survive its own encoding"):
        bundlefmt.check_for_write(odd)


def _envelope_tar(smalls: Any) -> Any:
    import io
    import tarfile

    from tests.bundles import manifest_for
    spec = default_spec("2.0.0")
    manifest = manifest_for(spec, [m for m, _ in _members(spec)])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("manifest.json", manifest.to_bytes())] + list(smalls):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_bundlefmt_envelope_limits() -> None:
    """bundlefmt.py line 45 (``MAX_HEADER_MEMBER`` 4 MiB -> 5 MiB / 4100 KiB), 46
    (``MAX_HEADER_TOTAL`` 8 MiB -> 9 MiB / 8200 KiB), 47 (``MAX_ROOTS`` 256 -> 257) and 553
    (the metadata count starting at 1, not 0): the
    envelope's limits are exactly the documented ones, checked before the bytes are read."""
    from installer.errors import FormatError
    from installer.format import bundlefmt
    limit = bundlefmt.MAX_HEADER_MEMBER
    assert (limit, bundlefmt.MAX_HEADER_TOTAL, bundlefmt.MAX_ROOTS) == (4 << 20, 8 << 20, 256)

    def header(smalls: Any) -> Any:
        return bundlefmt.BundleReader(_envelope_tar(smalls), what="b.tar").header()

    with pytest.raises(FormatError, match=r"'roots/1.root.json' is 4194305 bytes, over the "
                                          r"4194304 limit"):
        header([("signatures.json", b"{}"), ("roots/1.root.json", b" " * (limit + 1))])
    assert len(header([("signatures.json", b"{}"), ("roots/1.root.json", b" " * limit)])
               .roots[0]) == limit
    with pytest.raises(FormatError, match=r"exceed 8388608 bytes together"):
        header([("signatures.json", b" " * limit), ("roots/1.root.json", b" " * limit)])
    manifest_bytes = bundlefmt.BundleReader(_envelope_tar([("signatures.json", b"")])) \
        .header().manifest_bytes
    rest = bundlefmt.MAX_HEADER_TOTAL - limit - len(manifest_bytes)
    full = header([("signatures.json", b" " * limit), ("roots/1.root.json", b" " * rest)])
    assert len(full.roots[0]) == rest  # exactly MAX_HEADER_TOTAL together is allowed
    chain = [(f"roots/{n}.root.json", b"{}") for n in range(1, 258)]
    assert len(header([("signatures.json", b"{}")] + chain[:256]).roots) == 256
    with pytest.raises(FormatError, match=r"the root chain holds more than 256 roots"):
        header([("signatures.json", b"{}")] + chain)


def _unsigned_manifest_and_members() -> "tuple[Any, Dict[str, bytes]]":
    """The manifest of a default 2.0.0 bundle and each member's bytes by path."""
    from tests.bundles import manifest_for
    spec = default_spec("2.0.0")
    pairs = _members(spec)
    return manifest_for(spec, [m for m, _ in pairs]), {m.path: d for m, d in pairs}


def test_bundlefmt_writer_refuses_a_member_shorter_than_its_size() -> None:
    """bundlefmt.py line 504 (``raise`` -> ``pass``): a member whose chunks end before its
    manifest size is refused ("37 bytes, the manifest says 38") before its padding or any
    later member is produced."""
    from installer.errors import FormatError
    from installer.format import bundlefmt
    manifest, data = _unsigned_manifest_and_members()
    out = []
    chunks = bundlefmt.iter_bundle(
        manifest=manifest, signatures=bundlefmt.unsigned_signatures(), roots=[],
        member_chunks=lambda m: [data[m.path][:-1] if m.path == "k3s/k3s" else data[m.path]])
    with pytest.raises(FormatError, match=r"'k3s/k3s': 37 bytes, the manifest says 38"):
        for chunk in chunks:
            out.append(chunk)
    assert out[-1] == data["k3s/k3s"][:-1]


def test_bundlefmt_writer_stops_at_a_member_longer_than_its_size() -> None:
    """bundlefmt.py line 501 (``raise`` -> ``pass``): a member whose chunks run past its
    manifest size is refused at the first extra chunk, which is never produced."""
    from installer.errors import FormatError
    from installer.format import bundlefmt
    manifest, data = _unsigned_manifest_and_members()
    out = []
    chunks = bundlefmt.iter_bundle(
        manifest=manifest, signatures=bundlefmt.unsigned_signatures(), roots=[],
        member_chunks=lambda m: [data[m.path], b"EXTRA"] if m.path == "k3s/k3s"
        else [data[m.path]])
    with pytest.raises(FormatError, match=r"'k3s/k3s': more than its 38 bytes"):
        for chunk in chunks:
            out.append(chunk)
    assert b"EXTRA" not in b"".join(out)


def test_bundlefmt_delta_bundle_round_trip_in_process() -> None:
    """bundlefmt.py line 486 (``small.insert(0, delta.json)`` -> ``insert(1, ...)``), 546
    (``delta_ok`` default ``False`` -> ``True``), 588/589/590 (the plain reader's "is a delta
    bundle" refusal) and 659 (``n < 0`` -> ``<= 0`` / ``< 1``: ``read(0)`` is empty): a delta
    written by ``iter_bundle`` reads back with its descriptor first, only with ``delta_ok``."""
    import io

    from installer.errors import FormatError
    from installer.format import bundlefmt
    manifest, mbytes, good = _delta_world()
    data = {m.path: d for m, d in _members(default_spec("2.0.0"))}
    blob = b"".join(bundlefmt.iter_bundle(
        manifest=manifest, signatures=bundlefmt.unsigned_signatures(), roots=[], delta=good,
        member_chunks=lambda m: [data[m.path][:m.size]]))
    with pytest.raises(FormatError, match=r"d.tar is a delta bundle: it holds only what its "
                                          r"base lacks"):
        bundlefmt.BundleReader(io.BytesIO(blob), what="d.tar").header()
    reader = bundlefmt.BundleReader(io.BytesIO(blob), what="d.tar", delta_ok=True)
    assert reader.header().manifest_bytes == mbytes and reader.delta == good
    got = []
    for member, f in reader.payload():
        assert f.read(0) == b""
        got.append((member.path, f.read()))
    assert got == [("k3s/k3s", data["k3s/k3s"]),
                   ("images/app-2.0.0.tar", data["images/app-2.0.0.tar"][:100])]
