"""installer/host/delta.py in-process over a real installed base (issue #24, the survivors and
unreached mutants of tools/MUTATION.md's delta section): the up-front base check (nothing
installed, another base), a left-out member the base does not hold, a kept base file of the
wrong size, the carried/reused byte counts, a blob delta staged in-process (``_patched``), the
damaged kept blob named (``_diagnose``), ``_from_file``'s read limit and unreadable file, and a
pax header of exactly ``MAX_PAX_HEADER`` bytes."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from bundler.assemble.delta import load_base, write_delta
from installer.errors import DigestMismatch, FormatError, PolicyRefusal
from installer.format import bundlefmt, tarstream
from installer.format.bundlefmt import Member
from installer.host import delta
from installer.host.layout import Layout
from installer.host.state import load_state, read_anchor
from tests.bundles import KeyDir, cli, default_spec, write_spec

KiB = 1024
SAME = b"the same in both releases " * 200   # left out of the delta, copied from the base


def _archive(base: Path, shared_top: bytes, top: bytes) -> bytes:
    """An images archive (bundler's writer) of two images sharing a layer over MIN_REF."""
    from bundler.assemble.imagearchive import ArchiveImage, ArchivePlan, Blob
    blobs = base / "blobs"
    blobs.mkdir(exist_ok=True)

    def blob(data: bytes, media: str = "application/vnd.oci.image.layer.v1.tar+gzip") -> Blob:
        h = hashlib.sha256(data).hexdigest()
        (blobs / h).write_bytes(data)
        return Blob("sha256:" + h, len(data), blobs / h, media)

    shared = blob(shared_top)

    def image(n: int, layer: Blob) -> ArchiveImage:
        config = blob(json.dumps({"n": n, "top": layer.digest}).encode(), "config")
        manifest = blob(json.dumps({"config": config.digest, "layers": [
            shared.digest, layer.digest]}).encode(), "manifest")
        return ArchiveImage((f"registry.local/app{n}:v1",), manifest,
                            "application/vnd.oci.image.manifest.v1+json",
                            (config, shared, layer))
    plan = ArchivePlan((image(0, blob(b"first " * 900)), image(1, blob(top))), False,
                       1_790_000_000)
    return b"".join(plan.chunks())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("delta2")
    keys = KeyDir(base / "keys")
    shared = os.urandom(80 * KiB)
    bundles = {}
    for v, top in (("1.0.0", b"top one " * 700), ("2.0.0", b"top two " * 800)):
        spec = default_spec(v)
        spec.images = {"edge-images-amd64.tar": _archive(base, shared, top), "same.tar": SAME}
        (base / v).mkdir()
        bundles[v] = write_spec(spec, keys, base / v)
    root = base / "v1root"
    assert cli("trust", keys.root_json, "--root", root).returncode == 0
    r = cli("install", bundles["1.0.0"], "--root", root, "--server", "--skip-start")
    assert r.returncode == 0, r.stderr
    path, d = write_delta(bundles["2.0.0"], load_base(bundles["1.0.0"]))
    assert d.patches and "images/same.tar" not in d.carried
    return {"root": root, "delta": path, "d": d, "full": bundles["2.0.0"],
            "shared": hashlib.sha256(shared).hexdigest()}


def _host(world: dict[str, object], tmp_path: Path) -> Layout:
    root = tmp_path / "root"
    shutil.copytree(str(world["root"]), str(root), symlinks=True)
    return Layout(str(root))


def _kept(layout: Layout, path: str) -> Path:
    cur = load_state(layout)[0].current
    assert cur is not None
    return Path(layout.release_file(cur.digest, path))


def _open(layout: Layout, world: dict[str, object]) -> tuple[delta.Apply, object]:
    apply = delta.Apply(layout, report=lambda _: None)
    # no clock: open_bundle's default (the clock is `now`) is used
    opened = apply.open_bundle(str(world["delta"]), anchor=read_anchor(layout),
                               now=int(time.time()))
    return apply, opened


def _full_members(world: dict[str, object]) -> dict[str, bytes]:
    with open(str(world["full"]), "rb") as f:
        reader = bundlefmt.BundleReader(f, what="full")
        reader.header()
        return {m.path: data.read() for m, data in reader.payload()}


def test_a_delta_stages_every_member_in_process_and_counts_what_it_reused(
        world: dict[str, object], tmp_path: Path) -> None:
    layout = _host(world, tmp_path)
    apply, opened = _open(layout, world)
    d = world["d"]
    assert isinstance(d, bundlefmt.Delta)
    m = opened.header.manifest  # type: ignore[attr-defined]
    try:
        refs = sum(s[3] for _, segs in d.patches for s in segs if s[0] == "ref")
        left_out = sum(x.size for x in m.members if x.path not in d.carried)
        assert refs > 64 * KiB and left_out == len(SAME)
        assert apply.info["reused_bytes"] == refs + left_out
        assert apply.info["carried_bytes"] + apply.info["reused_bytes"] == m.payload_size
        assert apply.info["carried"] == len(d.carried) and apply.info["base"] == d.base_digest
        staging = tmp_path / "staging"
        done: list[str] = []
        apply.stage_payload(opened, str(staging), after_member=done.append)  # type: ignore
    finally:
        opened.close()  # type: ignore[attr-defined]
    assert done == [x.path for x in m.members]
    for path, data in _full_members(world).items():
        assert (staging / path).read_bytes() == data, path


def test_the_base_check_is_up_front_nothing_installed_or_another_base_is_refused(
        world: dict[str, object], tmp_path: Path) -> None:
    """The kept base is there in both cases: only the check on the current release refuses."""
    layout = _host(world, tmp_path)
    d = world["d"]
    assert isinstance(d, bundlefmt.Delta)
    cur = load_state(layout)[0].current
    assert cur is not None and cur.digest == d.base_digest
    with open(str(world["full"]), "rb") as f:
        m = bundlefmt.BundleReader(f, what="full").header().manifest
    assert delta._base_for(layout, cur, d, m=m, name="d.tar")  # the right base: accepted
    with pytest.raises(PolicyRefusal, match="this host runs nothing installed"):
        delta._base_for(layout, None, d, m=m, name="d.tar")
    other = dataclasses.replace(cur, digest="0" * 64)
    with pytest.raises(PolicyRefusal, match=f"applies only over .*{d.base_digest}.*"
                                            f"this host runs .*{'0' * 64}"):
        delta._base_for(layout, other, d, m=m, name="d.tar")


def test_a_left_out_member_the_base_does_not_hold_is_refused(world: dict[str, object],
                                                             tmp_path: Path) -> None:
    layout = _host(world, tmp_path)
    d = world["d"]
    assert isinstance(d, bundlefmt.Delta)
    cur = load_state(layout)[0].current
    with open(str(world["full"]), "rb") as f:
        m = bundlefmt.BundleReader(f, what="full").header().manifest
    extra = Member("images/new.tar", 5, "ee" * 32, 0o644, "images")
    m2 = dataclasses.replace(m, members=m.members + (extra,))
    with pytest.raises(FormatError, match="lacks images/new.tar and the base release does not"):
        delta._base_for(layout, cur, d, m=m2, name="d.tar")


@pytest.mark.parametrize("cut", [1, None])
def test_a_kept_base_file_of_the_wrong_size_is_refused_before_staging(
        world: dict[str, object], tmp_path: Path, cut: int | None) -> None:
    layout = _host(world, tmp_path)
    kept = _kept(layout, "images/same.tar")
    if cut is None:
        kept.unlink()
        want = f"\\(absent, expected {len(SAME)}\\)"
    else:
        kept.write_bytes(SAME[:-cut])
        want = f"\\({len(SAME) - cut} bytes, expected {len(SAME)}\\)"
    with pytest.raises(DigestMismatch, match=f"{kept}.*images/same.tar.*{want}"):
        _open(layout, world)


def test_a_kept_images_archive_too_short_for_a_reference_is_refused_before_staging(
        world: dict[str, object], tmp_path: Path) -> None:
    layout = _host(world, tmp_path)
    kept = _kept(layout, "images/edge-images-amd64.tar")
    d = world["d"]
    assert isinstance(d, bundlefmt.Delta)
    end = max(s[2] + s[3] for _, segs in d.patches for s in segs if s[0] == "ref")
    kept.write_bytes(kept.read_bytes()[:end - 1])
    with pytest.raises(DigestMismatch, match=f"blob sha256:.*\\({end - 1} bytes\\)"):
        _open(layout, world)


def test_a_damaged_kept_blob_is_named_when_the_rebuilt_archive_fails(
        world: dict[str, object], tmp_path: Path) -> None:
    layout = _host(world, tmp_path)
    kept = _kept(layout, "images/edge-images-amd64.tar")
    d = world["d"]
    assert isinstance(d, bundlefmt.Delta)
    ref = next(s for _, segs in d.patches for s in segs if s[0] == "ref")
    data = bytearray(kept.read_bytes())
    data[ref[2] + ref[3] - 1] ^= 1   # the blob's last byte: same size, other content
    kept.write_bytes(bytes(data))
    apply, opened = _open(layout, world)
    try:
        with pytest.raises(DigestMismatch, match=f"blob sha256:{ref[4]} of the base file "
                                                 f"{kept}") as e:
            apply.stage_payload(opened, str(tmp_path / "staging"))  # type: ignore[arg-type]
    finally:
        opened.close()  # type: ignore[attr-defined]
    assert e.value.hint == delta.REPAIR_HINT


def test_a_damaged_left_out_kept_file_is_named_with_the_repair_hint(
        world: dict[str, object], tmp_path: Path) -> None:
    layout = _host(world, tmp_path)
    kept = _kept(layout, "images/same.tar")
    kept.write_bytes(SAME[:-1] + b"!")
    apply, opened = _open(layout, world)
    try:
        with pytest.raises(DigestMismatch, match=f"the base file {kept} \\(for images/same.tar"
                           ) as e:
            apply.stage_payload(opened, str(tmp_path / "staging"))  # type: ignore[arg-type]
    finally:
        opened.close()  # type: ignore[attr-defined]
    assert e.value.hint == delta.REPAIR_HINT


DIGEST = "ab" * 32


def _release(tmp_path: Path, content: bytes) -> tuple[Layout, str, str]:
    layout = Layout(str(tmp_path))
    path = layout.release_file(DIGEST, "images/a.tar")
    os.makedirs(os.path.dirname(path))
    Path(path).write_bytes(content)
    return layout, path, "images/a.tar"


def test_patched_takes_literals_from_the_delta_and_blobs_from_the_kept_archive(
        tmp_path: Path) -> None:
    kept = bytes(range(256)) * 8
    layout, _, rel = _release(tmp_path, kept)
    segs = [("lit", 3), ("ref", rel, 100, 50, "cd" * 32), ("lit", 2),
            ("ref", rel, 7, 9, "cd" * 32)]
    out = b"".join(delta._patched(layout, DIGEST, segs, data=io.BytesIO(b"abcdefgh")))
    assert out == b"abc" + kept[100:150] + b"de" + kept[7:16]


def test_diagnose_passes_intact_blobs_and_names_the_damaged_one(tmp_path: Path) -> None:
    kept = bytes(range(256)) * 8
    layout, path, rel = _release(tmp_path, kept)
    one, two = kept[100:150], kept[300:700]
    segs = [("lit", 3), ("ref", rel, 100, 50, hashlib.sha256(one).hexdigest()),
            ("ref", rel, 300, 400, hashlib.sha256(two).hexdigest())]
    delta._diagnose(layout, DIGEST, segs)   # intact: no error
    Path(path).write_bytes(kept[:699] + b"\x00" + kept[700:])
    with pytest.raises(DigestMismatch, match=f"blob sha256:{segs[2][4]} of the base file {path}: "
                                             f"expected .*\\(400 bytes\\)"):
        delta._diagnose(layout, DIGEST, segs)


def test_from_file_reads_one_byte_past_the_size_and_refuses_an_unreadable_file(
        tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    member = Member("images/f.tar", 6, "ee" * 32, 0o644, "images")
    assert b"".join(delta._from_file(str(path), member)) == b"0123456"
    with pytest.raises(DigestMismatch, match="images/f.tar needs cannot be read: No such file"):
        b"".join(delta._from_file(str(tmp_path / "gone"), member))


def test_a_pax_header_of_exactly_the_limit_is_read() -> None:
    data = b"h" * 700
    name = "x" * (tarstream.MAX_PAX_HEADER - len(" path=\n") - 4)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for n, d in ((name, b"q"), (f"blobs/sha256/{hashlib.sha256(data).hexdigest()}", data)):
            info = tarfile.TarInfo(n)
            info.size = len(d)
            t.addfile(info, io.BytesIO(d))
    archive = buf.getvalue()
    assert tarstream.parse_block(archive[:512], what="t").size == tarstream.MAX_PAX_HEADER
    found = delta.archive_blobs(io.BytesIO(archive), start=0, size=len(archive), what="t")
    assert [n for _, _, n in found] == [700]


def test_a_kept_base_manifest_of_exactly_the_limit_is_read_whole(tmp_path: Path) -> None:
    layout = Layout(str(tmp_path))
    data = b" " * bundlefmt.MAX_HEADER_MEMBER
    digest = hashlib.sha256(data).hexdigest()
    path = layout.release_file(digest, bundlefmt.MANIFEST_NAME)
    os.makedirs(os.path.dirname(path))
    Path(path).write_bytes(data)
    with pytest.raises(FormatError) as e:   # read whole, digest right: refused as a manifest
        delta._base_files(layout, digest)
    assert not isinstance(e.value, DigestMismatch), e.value
