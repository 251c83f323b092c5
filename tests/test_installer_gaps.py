"""Regression tests for checks no other test reached (found by mutation testing, issue 11):
payload hashes, the time ratchet, the tar envelope's edges, root chain bytes, policy and
format rules, the reader's own header checks.

Most run in-process over real signed bundles (``verify.open_bundle`` with an explicit clock),
so ``tools/mutate.py`` can run them for every mutant; a few go through both CLIs.
"""

import hashlib
import io
import json
import os
import re
import sys
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, cast

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bundles import (  # noqa: E402
    KeyDir,
    _members,
    cli,
    default_spec,
    manifest_for,
    tree,
    write_spec,
)
from cli_helpers import bundle_proc  # noqa: E402

from installer import policy  # noqa: E402
from installer.errors import (  # noqa: E402
    ConfigError,
    DigestMismatch,
    EnvironmentProblem,
    FormatError,
    PolicyRefusal,
    SignatureError,
    UnsafeMember,
)
from installer.format import bundlefmt, canonjson, envelope  # noqa: E402
from installer.format.bundlefmt import BundleReader, Manifest, Member  # noqa: E402
from installer.trust import rootmeta, verify  # noqa: E402

NOW = 1_800_000_000  # after every spec's `created` (1_790_000_000), before the roots expire


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, keydir: KeyDir) -> Path:
    return write_spec(default_spec("2.0.0"), keydir, tmp_path_factory.mktemp("good"))


def _open(path: Path, keydir: KeyDir, *, now: int = NOW,
          anchor: Optional[bytes] = None) -> verify.Opened:
    return verify.open_bundle(str(path), anchor=anchor or keydir.root_json.read_bytes(),
                              now=now)


def _verify(path: Path, keydir: KeyDir, **kw: object) -> int:
    opened = _open(path, keydir, **kw)  # type: ignore[arg-type]
    try:
        return verify.hash_payload(opened)
    finally:
        opened.close()


def _write(out: Path, keydir: KeyDir, *, manifest: Manifest, data: dict,
           roots: Optional[Sequence[bytes]] = None) -> Path:
    with open(out, "wb") as f:
        bundlefmt.write_bundle(f, manifest=manifest, signatures=keydir.sign(manifest.to_bytes()),
                               roots=keydir.chain() if roots is None else roots,
                               open_member=lambda m: io.BytesIO(data[m.path]))
    return out


def _spec_parts(version: str = "2.0.0") -> tuple:
    spec = default_spec(version)
    pairs = _members(spec)
    return spec, manifest_for(spec, [m for m, _ in pairs]), {m.path: d for m, d in pairs}


def test_good_bundle_verifies_in_process(good: Path, keydir: KeyDir) -> None:
    spec, manifest, _ = _spec_parts()
    assert _verify(good, keydir) == manifest.payload_size


# ---------------------------------------------------------------------------- payload hashes


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


# ---------------------------------------------------------------------------- time


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
    from installer.host.layout import Layout
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


# ---------------------------------------------------------------------------- envelope edges


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


# ---------------------------------------------------------------------------- root chain bytes


def _pretty(data: bytes, indent: int) -> bytes:
    return json.dumps(json.loads(data), indent=indent, separators=(",", ": "),
                      sort_keys=True).encode() + b"\n"


def _reversed_keys(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _reversed_keys(obj[k]) for k in sorted(obj, reverse=True)}
    if isinstance(obj, list):
        return [_reversed_keys(v) for v in obj]
    return obj


def _pretty_unsorted(data: bytes) -> bytes:
    return json.dumps(_reversed_keys(json.loads(data)), indent=1,
                      separators=(",", ": ")).encode() + b"\n"


@pytest.mark.parametrize("form,ok", [("pretty-1", True), ("pretty-2", False),
                                     ("canonical", True), ("trailing-space", False),
                                     ("pretty-unsorted", False)])
def test_root_bytes_must_be_canonical_or_tuf_pretty(tmp_path: Path, keydir: KeyDir,
                                                    form: str, ok: bool) -> None:
    _, manifest, data = _spec_parts()
    root = keydir.chain()[0]
    edited = {"pretty-1": _pretty(root, 1), "pretty-2": _pretty(root, 2),
              "canonical": canonjson.encode(json.loads(root)),
              "trailing-space": _pretty(root, 1) + b" ",
              "pretty-unsorted": _pretty_unsorted(root)}[form]
    bundle = _write(tmp_path / "b.tar", keydir, manifest=manifest, data=data, roots=[edited])
    if ok:
        assert _verify(bundle, keydir) == manifest.payload_size
    else:
        with pytest.raises(FormatError, match="neither canonical JSON nor python-tuf"):
            _verify(bundle, keydir)


def test_bundle_root_differs_from_the_pinned_one(tmp_path: Path, good: Path,
                                                 keydir: KeyDir) -> None:
    """The pinned v1 carries an extra (unknown-keyid) signature: still a valid anchor, but
    the bundle's v1 is not the same document, so the bundle is refused."""
    doc = json.loads(keydir.root_json.read_bytes())
    doc["signatures"].append({"keyid": "ab" * 32, "sig": "00" * 64})
    anchor = canonjson.encode(doc)
    rootmeta.load_trusted_root(anchor)  # the anchor itself is fine
    with pytest.raises(SignatureError, match="differs from the root pinned on this host"):
        _open(good, keydir, anchor=anchor)


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    k = KeyDir(tmp_path_factory.mktemp("rot") / "k")
    v1 = k.chain()[0]
    k.rotate_targets()
    k.v1 = v1  # type: ignore[attr-defined]
    return k


def test_chain_entry_with_the_wrong_version(tmp_path: Path, rotated: KeyDir) -> None:
    """roots/1.root.json holding v2 (valid from the pinned v1's point of view) is refused."""
    _, manifest, data = _spec_parts()
    chain = rotated.chain()
    assert len(chain) == 2
    bundle = _write(tmp_path / "b.tar", rotated, manifest=manifest, data=data, roots=[chain[1]])
    with pytest.raises(SignatureError, match="roots/1.root.json holds root version 2"):
        _verify(bundle, rotated, anchor=rotated.v1)  # type: ignore[attr-defined]
    ok = _write(tmp_path / "ok.tar", rotated, manifest=manifest, data=data)
    opened = _open(ok, rotated, anchor=rotated.v1)  # type: ignore[attr-defined]
    try:
        assert opened.root.version == 2 and opened.new_root == chain[1]
    finally:
        opened.close()


def test_newer_root_and_anchor_version() -> None:
    class R:
        version = 3
    chain = [b"1", b"2", b"3"]
    assert verify.newer_root(2, cast(rootmeta.Root, R()), chain) == b"3"
    assert verify.newer_root(3, cast(rootmeta.Root, R()), chain) is None
    assert verify.newer_root(None, cast(rootmeta.Root, R()), chain) is None
    assert verify.newer_root(1, cast(rootmeta.Root, R()), chain[:2]) is None
    assert verify.anchor_version(b'{"signed": {"version": 4}}') == 4
    assert verify.anchor_version(b'{"signed": {"version": "4"}}') is None
    assert verify.anchor_version(b"[") is None


# ---------------------------------------------------------------------------- policy


def test_k3s_major_change_refused() -> None:
    with pytest.raises(PolicyRefusal, match="major version change from v1.33.5"):
        policy.check_k3s_change("v1.33.5+k3s1", "v2.33.5+k3s1", allow_minor_skip=True,
                                allow_downgrade=True)
    policy.check_k3s_change("v1.33.5+k3s1", "v1.34.0+k3s1", allow_minor_skip=False,
                            allow_downgrade=False)
    policy.check_k3s_change("v1.33.5+k3s1", "v1.33.1+k3s9", allow_minor_skip=False,
                            allow_downgrade=False)


def test_switch_bundle() -> None:
    kw = dict(installed_name="edge", installed_version="3.0.0", name="core", version="1.0.0")
    with pytest.raises(PolicyRefusal, match="--switch-bundle"):
        policy.decide_bundle_version(**kw)  # type: ignore[arg-type]
    d = policy.decide_bundle_version(**kw, switch_name=True)  # type: ignore[arg-type]
    assert d.action == "install" and "switching bundle edge -> core" in d.reason


def test_switch_bundle_cli(tmp_path: Path, keydir: KeyDir) -> None:
    root = tmp_path / "root"
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    first = write_spec(default_spec("1.0.0"), keydir, tmp_path)
    assert cli("install", first, "--root", root, "--server", "--skip-start").returncode == 0
    other = write_spec(default_spec("0.5.0", name="core"), keydir, tmp_path)
    r = cli("install", other, "--root", root, "--skip-start")
    assert r.returncode == 4 and "--switch-bundle" in r.stderr, r.stderr
    r = cli("install", other, "--root", root, "--skip-start", "--switch-bundle")
    assert r.returncode == 0, r.stderr
    status = json.loads(cli("status", "--root", root, "--json").stdout)
    assert status["installed"]["name"] == "core" and status["previous"]["name"] == "edge"


@pytest.mark.parametrize("machine", ["riscv64", "s390x", "", "i686"])
def test_unknown_machine_type(machine: str) -> None:
    with pytest.raises(EnvironmentProblem, match=f"machine type {machine!r}"):
        policy.machine_to_arch(machine)


def test_machine_type_is_case_insensitive() -> None:
    assert policy.machine_to_arch("X86_64") == "amd64"
    assert policy.machine_to_arch("AArch64") == "arm64"


@pytest.mark.parametrize("text", ["1." + "9" * 19, "1.0.0-" + "7" * 19])
def test_version_numbers_are_bounded(text: str) -> None:
    with pytest.raises(FormatError, match="19 digits"):
        policy.parse_version(text)
    assert policy.parse_version("1." + "9" * 18)[0] == (1, int("9" * 18))


def test_k3s_version_numbers_are_bounded() -> None:
    with pytest.raises(FormatError, match="19 digits"):
        policy.parse_k3s_version("v1." + "3" * 19 + ".0+k3s1")
    assert policy.parse_k3s_version("v1." + "3" * 18 + ".0+k3s1").minor == int("3" * 18)


def test_pre_release_ordering() -> None:
    assert policy.compare_versions("1.0.0-rc.1", "1.0.0") == -1
    assert policy.compare_versions("1.0.0", "1.0.0-rc.1") == 1
    assert policy.compare_versions("1.0.0-rc.2", "1.0.0-rc.10") == -1
    assert policy.compare_versions("1.0.0-rc.a", "1.0.0-rc.1") == 1
    assert policy.compare_versions("1.2", "1.2.0") == 0


# ---------------------------------------------------------------------------- format


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


# ---------------------------------------------------------------------------- the reader itself


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


# ---------------------------------------------------------------------------- root structure


def _root_edit(keydir: KeyDir, fn: Callable[[dict], object]) -> bytes:
    doc = json.loads(keydir.root_json.read_bytes())
    fn(doc)
    return canonjson.encode(doc)


def _first_key(doc: dict) -> dict:
    return doc["signed"]["keys"][sorted(doc["signed"]["keys"])[0]]


ROOT_CASES = {
    "key-not-object": (lambda d: d["signed"]["keys"].update(x="k"), "must be an object"),
    "role-not-object": (lambda d: d["signed"]["roles"].update(root=[]), "must be an object"),
    "keyids-not-strings": (lambda d: d["signed"]["roles"]["root"].update(keyids=[1]),
                           "keyids must be strings"),
    "keyid-twice": (lambda d: d["signed"]["roles"]["root"].update(
        keyids=d["signed"]["roles"]["root"]["keyids"] * 2), "more than once"),
    "signatures-not-list": (lambda d: d.update(signatures={}), "'signatures' must be list"),
    "signature-not-object": (lambda d: d.update(signatures=["x"]), "must be an object"),
    "signature-keyid-twice": (lambda d: d.update(signatures=d["signatures"] * 2),
                              "more than one signature by keyid"),
    "version-0": (lambda d: d["signed"].update(version=0), "version must be at least 1"),
    "snapshot-flag-not-bool": (lambda d: d["signed"].update(consistent_snapshot=1),
                               "consistent_snapshot must be a boolean"),
    "invalid-date": (lambda d: d["signed"].update(expires="2030-02-30T00:00:00Z"),
                     "is not a valid date"),
    "short-public-key": (lambda d: _first_key(d)["keyval"].update(public="ab" * 31),
                         "32 bytes, found 31"),
    "no-roles": (lambda d: d["signed"].update(roles={}), "found none"),
    "threshold-0": (lambda d: d["signed"]["roles"]["root"].update(threshold=0),
                    "threshold must be at least 1"),
}


@pytest.mark.parametrize("case", sorted(ROOT_CASES))
def test_root_structure_refused(keydir: KeyDir, case: str) -> None:
    edit, needle = ROOT_CASES[case]
    with pytest.raises(FormatError, match=re.escape(needle)):
        rootmeta.parse_root(_root_edit(keydir, edit))


def test_root_consistent_snapshot_bool_and_other_schemes(keydir: KeyDir) -> None:
    root = rootmeta.parse_root(_root_edit(keydir, lambda d: d["signed"].update(
        consistent_snapshot=False)))
    assert root.version == 1
    other = rootmeta.parse_root(_root_edit(keydir, lambda d: _first_key(d).update(
        scheme="rsassa-pss-sha256")))
    assert any(k.public is None for k in other.keys.values())
    with pytest.raises(SignatureError, match="defines no role 'mirror'"):
        rootmeta.verify_threshold(root, "mirror", b"x", signatures=())
    assert rootmeta.count_valid(root, "mirror", b"x", signatures=()) == 0


def test_threshold_message_counts_in_role(keydir: KeyDir) -> None:
    root = rootmeta.parse_root(keydir.root_json.read_bytes())
    keyid = root.roles["root"].keyids[0]
    sigs = (rootmeta.Signature(keyid, bytes(64)), rootmeta.Signature("ff" * 32, bytes(64)))
    with pytest.raises(SignatureError, match=r"found 0 \(2 signature\(s\) given, 1 by keyids"):
        rootmeta.verify_threshold(root, "root", b"payload", signatures=sigs)


def test_manifest_signatures_may_repeat_root_signatures_may_not(keydir: KeyDir) -> None:
    sig = {"keyid": "ab" * 32, "sig": "00" * 64}
    doc = canonjson.encode({"signatures": [sig, sig]})
    assert len(rootmeta.parse_signatures_doc(doc)) == 2
    with pytest.raises(FormatError, match="more than one signature"):
        rootmeta.parse_signatures([sig, sig], "x", allow_repeats=False)


# ---------------------------------------------------------------------------- policy, pure


def test_policy_pure_edges() -> None:
    assert policy.parse_version("0")[0] == (0,)
    assert policy.compare_versions("1.0", "1") == 0
    assert policy.parse_k3s_version("v1.33.5+k3s2").revision == 2
    assert policy.parse_k3s_version("v1.33.5").revision == 0
    with pytest.raises(PolicyRefusal, match="lower than the installed version 2.0.0"):
        policy.decide_bundle_version(installed_name="edge", installed_version="2.0.0",
                                     name="edge", version="1.9.9")
    assert policy.decide_bundle_version(installed_name="edge", installed_version="2.0.0",
                                        name="edge", version="2.0").action == "same"
    assert policy.decide_bundle_version(installed_name=None, installed_version=None,
                                        name="edge", version="1").action == "install"
    with pytest.raises(PolicyRefusal, match="built for architecture arm64, this host is amd64"):
        policy.check_arch("arm64", "amd64", bundle="b")
    policy.check_arch("amd64", "amd64", bundle="b")


def test_choose_role_rules() -> None:
    assert policy.choose_role(asked=None, installed=None, bundle_roles=("agent",),
                              bundle="b") == "agent"
    with pytest.raises(ConfigError, match="server or agent: say which"):
        policy.choose_role(asked=None, installed=None, bundle_roles=("server", "agent"),
                           bundle="b")
    with pytest.raises(PolicyRefusal, match="built for role agent, asked to install role server"):
        policy.choose_role(asked="server", installed=None, bundle_roles=("agent",), bundle="b")
    assert policy.choose_role(asked=None, installed="server", bundle_roles=("server", "agent"),
                              bundle="b") == "server"


def test_space_and_human_bytes() -> None:
    assert policy.space_shortfalls({"a": 0}, {"a": 0}, {}) == []
    need = 10 << 30
    total = need + int(need * policy.SPACE_MARGIN_FRACTION)
    assert policy.space_shortfalls({"a": need}, {"a": total}, {}) == []
    assert policy.space_shortfalls({"a": need}, {"a": total - 1}, {"a": "/x"}) == [
        policy.Shortfall("/x", total, total - 1)]
    assert policy.SPACE_MARGIN_BYTES == 64 * 1024 * 1024
    with pytest.raises(EnvironmentProblem, match="/x needs 10 B, has 1 B free"):
        policy.check_space([policy.Shortfall("/x", 10, 1)], bundle="b")
    policy.check_space([], bundle="b")
    assert policy.human_bytes(1023) == "1023 B"
    assert policy.human_bytes(1024) == "1.0 KiB"
    assert policy.human_bytes(3 * 1024 ** 3) == "3.0 GiB"
    assert policy.human_bytes(5 * 1024 ** 5) == "5120.0 TiB"


def test_pick_bundle_order() -> None:
    files = ["edge-1.0.0-amd64.tar", "edge-3.0.0-amd64.tar", "edge-2.0.0-amd64.tar"]
    assert policy.pick_bundle(files, "amd64", folder="f").version == "3.0.0"
    assert policy.pick_bundle(["edge-1.0-amd64.tar", "edge-1.0.0-amd64.tar"], "amd64",
                              folder="f").file == "edge-1.0-amd64.tar"
