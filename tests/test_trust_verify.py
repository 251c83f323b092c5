"""Bundle verification (installer/trust/verify.py): envelope, payload hashes, trailer, the clock
ratchet, the pinned anchor.

Moved unchanged from test_installer_gaps.py / test_installer_mutants.py."""

import hashlib
import json
import os
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import pytest

from installer.errors import (
    ConfigError,
    DigestMismatch,
    FormatError,
    SignatureError,
)
from installer.format import bundlefmt, envelope
from installer.format.bundlefmt import Member
from installer.host.layout import (
    Layout,
)
from installer.host.state import read_anchor
from installer.trust import rootmeta, verify
from tests.bundles import (
    KeyDir,
    _members,
    cli,
    default_spec,
    tree,
    write_spec,
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
from tests.cli_helpers import bundle_proc

NOW = 1_800_000_000  # after every spec's `created` (1_790_000_000), before the roots expire


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, keydir: KeyDir) -> Path:
    return write_spec(default_spec("2.0.0"), keydir, tmp_path_factory.mktemp("good"))


def test_good_bundle_verifies_in_process(good: Path, keydir: KeyDir) -> None:
    spec, manifest, _ = _spec_parts()
    assert _verify(good, keydir) == manifest.payload_size


def _flip_in_member(src: Path, dst: Path, needle: bytes) -> Path:
    data = bytearray(src.read_bytes())
    at = data.find(needle)
    assert at > 0
    data[at + len(needle) // 2] ^= 0x01
    dst.write_bytes(bytes(data))
    return dst


def test_flipped_byte_inside_member_in_process(tmp_path: Path, good: Path,
                                               keydir: KeyDir) -> None:
    """hash_payload itself must refuse (the envelope is intact, only member data differs)."""
    spec = default_spec("2.0.0")
    bad = _flip_in_member(good, tmp_path / "bad.tar", spec.images["app-2.0.0.tar"])
    with pytest.raises(DigestMismatch, match="images/app-2.0.0.tar: expected sha256"):
        _verify(bad, keydir)


def test_flipped_byte_inside_member_both_clis(tmp_path: Path, good: Path,
                                              keydir: KeyDir) -> None:
    """`airgap-install verify` and `bundle verify --trust` both refuse a payload flip."""
    spec = default_spec("2.0.0")
    bad = _flip_in_member(good, tmp_path / good.name, spec.images["app-2.0.0.tar"])
    root = tmp_path / "host"
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    r = cli("verify", bad, "--root", root)
    assert r.returncode == 3 and "images/app-2.0.0.tar" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    b = bundle_proc("verify", str(bad), "--trust", str(keydir.root_json), cwd=tmp_path)
    assert b.code != 0 and "images/app-2.0.0.tar" in (b.err + b.out), (b.code, b.err)
    assert "Traceback" not in b.err, b.err


def test_stage_payload_refuses_flip_and_keeps_good_members(tmp_path: Path, good: Path,
                                                           keydir: KeyDir) -> None:
    spec = default_spec("2.0.0")
    bad = _flip_in_member(good, tmp_path / "bad.tar", spec.manifests["demo.yaml"])
    opened = _open(bad, keydir)
    staging = tmp_path / "staging"
    try:
        with pytest.raises(DigestMismatch, match="manifests/demo.yaml"):
            verify.stage_payload(opened, str(staging))
    finally:
        opened.close()
    assert (staging / "k3s/k3s").read_bytes() == _members(spec)[0][1]
    assert (staging / "roots/1.root.json").read_bytes() == keydir.chain()[0]
    assert sorted(p.name for p in (staging / "roots").iterdir()) == ["1.root.json"]
    assert (staging / "manifest.json").read_bytes() == opened.header.manifest_bytes
    assert not (staging / "manifests/demo.yaml").exists()


def test_now_for_takes_the_later_of_clock_and_ratchet() -> None:
    assert verify.now_for(100, 50) == 100   # clock behind the ratchet: the ratchet
    assert verify.now_for(50, 100) == 100   # clock ahead: the clock
    assert verify.now_for(0) >= 1_700_000_000  # reads the real clock when none is given


@pytest.mark.parametrize("created,clock,now,refused", [
    (NOW + verify.MAX_CLOCK_SKEW, NOW, NOW, False),       # exactly at the skew: fine
    (NOW + verify.MAX_CLOCK_SKEW + 1, NOW, NOW, True),    # one second more: refused
    (NOW - 10, NOW, NOW, False),
    (NOW + 10 ** 6, NOW, NOW + 5, False),                  # clock behind the ratchet: no basis
    (NOW + verify.MAX_CLOCK_SKEW + 2, NOW + 1, NOW, True),  # clock ahead of the ratchet
])
def test_check_created(created: int, clock: int, now: int, refused: bool) -> None:
    if refused:
        with pytest.raises(SignatureError, match="later than this host's clock") as e:
            verify.check_created(created, clock=clock, now=now, what="bundle x")
        assert verify._iso(created) in e.value.message and verify._iso(clock) in e.value.message
    else:
        verify.check_created(created, clock=clock, now=now, what="bundle x")


@pytest.mark.parametrize("ratchet,created,expires,clock,expected", [
    (10, 50, 1000, 100, 50),                                # plain advance to `created`
    (60, 50, 1000, 100, 60),                                # never backwards
    (10, 5000, 1000, 100_000_000, 999),                     # capped below the root's expiry
    (10, 500_000, 10 ** 9, 100, 100 + verify.MAX_CLOCK_SKEW),  # capped at clock + skew
    (10 ** 6, 2 * 10 ** 6, 10 ** 9, 0, 10 ** 6),            # clock at 1970: stays
])
def test_next_ratchet(ratchet: int, created: int, expires: int, clock: int,
                      expected: int) -> None:
    assert verify.next_ratchet(ratchet, created=created, root_expires=expires,
                               clock=clock) == expected


def test_expired_root_at_the_ratchet_is_refused(good: Path, keydir: KeyDir) -> None:
    """Expiry is checked at max(clock, ratchet): with the ratchet past the root's expiry the
    bundle is refused even though the clock says the root is still valid (max -> min)."""
    root = rootmeta.parse_root(keydir.root_json.read_bytes())
    with pytest.raises(SignatureError, match="expired"):
        _open(good, keydir, now=verify.now_for(root.expires + 1, NOW))
    _open(good, keydir, now=verify.now_for(NOW - 10 ** 6, NOW)).close()


def test_install_uses_ratchet_and_caps_it(tmp_path: Path, keydir: KeyDir) -> None:
    """End to end: a bundle created 12 h in the future installs and the ratchet becomes its
    `created`; a state ratchet past the root's expiry (clock behind the ratchet) refuses."""
    import time as _time

    from installer.host import state as state_mod
    root = tmp_path / "root"
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    soon = int(_time.time()) + 12 * 3600
    first = write_spec(default_spec("1.0.0", created=soon), keydir, tmp_path)
    r = cli("install", first, "--root", root, "--server", "--skip-start")
    assert r.returncode == 0, r.stderr
    status = json.loads(cli("status", "--root", root, "--json").stdout)
    assert status["time_ratchet"] == soon
    layout = Layout(str(root))
    doc = state_mod.read_dual(layout.state).doc
    assert doc is not None
    expires = rootmeta.parse_root(keydir.root_json.read_bytes()).expires
    doc["time_ratchet"] = expires + 1
    state_mod.write_dual(layout.state, doc)
    before = tree(root)
    second = write_spec(default_spec("2.0.0"), keydir, tmp_path)
    r = cli("install", second, "--root", root, "--skip-start")
    assert r.returncode == 3 and "expired" in r.stderr, r.stderr
    assert tree(root) == before


def _edit(src: Path, dst: Path, fn: Callable[[bytearray], bytes]) -> Path:
    dst.write_bytes(fn(bytearray(src.read_bytes())))
    return dst


def test_data_appended_after_the_archive(tmp_path: Path, good: Path, keydir: KeyDir) -> None:
    bad = _edit(good, tmp_path / "b.tar", lambda d: bytes(d) + b"\x00" * 512)
    with pytest.raises(FormatError, match="implies exactly"):
        _verify(bad, keydir)


def test_nonzero_byte_in_the_trailer(tmp_path: Path, good: Path, keydir: KeyDir) -> None:
    def flip_last(d: bytearray) -> bytes:
        d[-1] = 1
        return bytes(d)
    bad = _edit(good, tmp_path / "b.tar", flip_last)
    with pytest.raises(FormatError, match="data after the end of the archive"):
        _verify(bad, keydir)


def test_nonzero_padding_after_a_member(tmp_path: Path, good: Path, keydir: KeyDir) -> None:
    spec = default_spec("2.0.0")
    binary = _members(spec)[0][1]
    assert len(binary) % 512

    def pad(d: bytearray) -> bytes:
        at = bytes(d).find(binary) + len(binary)
        d[at] = 0x20
        return bytes(d)
    bad = _edit(good, tmp_path / "b.tar", pad)
    with pytest.raises(FormatError, match="padding after 'k3s/k3s' is not zero"):
        _verify(bad, keydir)


def test_header_variants_accept_both_dev_forms() -> None:
    expected = envelope.header_bytes("k3s/k3s", 10, 0o755, mtime=1_790_000_000)
    variants = verify.header_variants(expected)
    assert expected in variants and len(set(variants)) == 2
    for v in variants:
        info = tarfile.TarInfo.frombuf(v[-512:], "utf-8", "surrogateescape")
        assert info.name == "k3s/k3s" and info.size == 10


def test_open_regular_refuses_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        verify.open_regular(str(tmp_path / "none.tar"), what="bundle")
    (tmp_path / "f").write_bytes(b"abc")
    with verify.open_regular(str(tmp_path / "f"), what="bundle") as f:
        assert f.read() == b"abc"


def test_open_regular_refuses_a_fifo_in_process(tmp_path: Path) -> None:
    fifo = tmp_path / "b.tar"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is a FIFO, not a regular file"):
        verify.open_regular(str(fifo), what="bundle")
    with pytest.raises(ConfigError, match="is a folder, not a regular file"):
        verify.open_regular(str(tmp_path), what="bundle")


def test_clock_skew_is_the_documented_24_hours() -> None:
    assert verify.MAX_CLOCK_SKEW == 24 * 3600  # docs/rootmeta.md names this value


def test_flipped_tar_header_byte_in_process(tmp_path: Path, good: Path, keydir: KeyDir) -> None:
    def flip_mode(d: bytearray) -> bytes:
        at = bytes(d).find(b"manifests/demo.yaml\x00")
        d[at + 100 + 4] ^= 0x01  # the mode field of that member's header
        return bytes(d)
    bad = _edit(good, tmp_path / "b.tar", flip_mode)
    with pytest.raises(FormatError, match="tar header of 'manifests/demo.yaml' is not the canon"):
        _verify(bad, keydir)


def test_every_trailer_length_verifies(tmp_path: Path, keydir: KeyDir) -> None:
    """The archive ends with two zero blocks padded to a 10 KiB record: bundles whose data
    end at every block position of a record verify, and one without its last block does not."""
    spec, manifest, data = _spec_parts()
    seen = set()
    for blocks in range(21):
        extra = b"x" * (512 * blocks)
        path = "manifests/zz-extra.yaml"
        members = list(manifest.members) + [Member(path, len(extra),
                                                   hashlib.sha256(extra).hexdigest(), 0o644,
                                                   "manifest")]
        m = replace(manifest, members=tuple(members))
        bundle = _write(tmp_path / f"b{blocks}.tar", keydir, manifest=m, data={**data,
                                                                              path: extra})
        size = bundle.stat().st_size
        assert size % tarfile.RECORDSIZE == 0
        assert _verify(bundle, keydir) == m.payload_size
        seen.add(size)
        if blocks in (0, 19):
            cut = tmp_path / "cut.tar"
            cut.write_bytes(bundle.read_bytes()[:-512])
            with pytest.raises(FormatError):
                _verify(cut, keydir)
    assert len(seen) >= 2


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


def test_verify_missing_anchor_names_the_root_flag(tmp_path: Path) -> None:
    """verify.py line 52 (``raise`` -> ``pass``) and line 55 (``layout.root == "/"`` ->
    ``!=``, ``" --root " + root`` -> ``-``): no anchor is a ConfigError (exit 2) whose hint gives
    the ``trust`` command with this host's ``--root``."""
    from installer import errors
    with pytest.raises(errors.ConfigError, match="no trust anchor is pinned at") as e:
        read_anchor(Layout(root=str(tmp_path)))
    assert e.value.hint is not None
    assert f"airgap-install trust ROOT_JSON --root {tmp_path}` once" in e.value.hint


def test_verify_reads_an_anchor_of_the_maximum_size_whole(tmp_path: Path) -> None:
    """verify.py line 50 (``MAX_HEADER_MEMBER + 1`` -> ``- 1``): a pinned anchor as large as
    the bundle's metadata limit is read whole, not cut."""
    layout = Layout(root=str(tmp_path))
    Path(layout.trust_anchor).parent.mkdir(parents=True)
    data = b"{" + b" " * (bundlefmt.MAX_HEADER_MEMBER - 2) + b"}"
    Path(layout.trust_anchor).write_bytes(data)
    assert read_anchor(layout) == data


def test_verify_root_ids_wording(keydir: KeyDir) -> None:
    """verify.py line 79 (``!=`` -> ``==``: root versions only in ``bundle verify``'s wording),
    line 86 (``root is None`` -> ``is not None``: an empty chain is "none", no traceback) and
    line 92 (``and`` -> ``or``, ``not chain`` -> ``chain``: "ships no root chain" only for an
    empty chain in ``bundle verify``'s wording)."""
    from installer.trust import rootmeta, verify
    anchor = keydir.root_json.read_bytes()
    chain = keydir.chain()
    fp = rootmeta.root_fingerprint(rootmeta.parse_root(anchor))
    assert verify.root_ids(anchor, chain) == f"signed for root {fp}, this host trusts {fp}"
    assert verify.root_ids(anchor, []) == f"signed for root none, this host trusts {fp}"
    label = "this trusted root is"
    assert verify.root_ids(anchor, chain, label) == \
        f"signed for root {fp} (v1), this trusted root is {fp} (v1)"
    assert verify.root_ids(anchor, [], label) == \
        f"the bundle ships no root chain, it is unsigned; this trusted root is {fp} (v1)"


def test_verify_open_regular_refuses_a_file_turned_fifo_after_stat(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """verify.py line 178 (``raise`` -> ``pass``) and 184 (re-``raise`` -> ``pass``): a
    regular file replaced by a FIFO between the ``stat`` and the ``open`` is refused (the
    swap really happens on disk, right after the real ``stat``), not read or hung on."""
    import os

    from installer import errors
    from installer.trust import verify
    path = tmp_path / "b.tar"
    path.write_bytes(b"x")
    real_stat = os.stat

    def stat_then_swap(p: Any, *a: Any, **kw: Any) -> os.stat_result:
        st = real_stat(p, *a, **kw)
        if str(p) == str(path) and not a and not kw:
            path.unlink()
            os.mkfifo(path)
        return st

    monkeypatch.setattr(os, "stat", stat_then_swap)
    with pytest.raises(errors.ConfigError, match="changed into a FIFO while being opened"):
        verify.open_regular(str(path), what="bundle")
