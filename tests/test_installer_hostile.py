"""Hostile files and states (THREATS 31, 33, 34 numeric fields, 36), through the real CLI in a
child process whose peak RSS (``os.wait4`` rusage) and wall time are measured.

Every input is generated here, sized so each case runs in about a second while still above
what the unbounded parser would need (a 32 MiB pax path, 80 MiB of roots, a 240k-digit pax
length, JSON nested 100k deep, a pax header that declares 8 GiB). Each case asserts the exit
code, the message, no traceback, peak RSS < 64 MiB and that nothing under the host folder
(the install root and a sibling folder outside it) changed. The child also runs under an
address-space limit of 1 GiB so a regression fails fast instead of eating the machine.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import pytest

from installer.format import bundlefmt, canonjson
from installer.format.bundlefmt import ImageEntry
from installer.host import state
from installer.host.layout import Layout
from tests.bundles import (
    REPO,
    KeyDir,
    _members,
    cli,
    default_spec,
    manifest_for,
    tree,
    unsigned_manifest_bytes,
    write_spec,
)

RSS_LIMIT_KIB = 64 * 1024
AS_LIMIT = 1 << 30
MTIME = 1_790_000_000


@dataclass
class Run:
    code: int
    out: str
    err: str
    rss_kib: int
    seconds: float


# The child reports its own peak RSS (VmHWM of the process after exec): rusage would also
# count the pages of this (large) pytest process it was forked or vforked from.
_WRAPPER = """\
import atexit, os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
def _peak():
    with open("/proc/self/status") as f:
        kib = [line.split()[1] for line in f if line.startswith("VmHWM:")][0]
    with open(os.environ["AIRGAP_TEST_PEAK"], "w") as out:
        out.write(kib)
atexit.register(_peak)
from installer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def bounded(*args: object, timeout: float = 60) -> Run:
    """``airgap-install ARGS`` in a child under RLIMIT_AS; its peak RSS and wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env.pop("AIRGAP_INSTALL_FAILPOINT", None)
        env["PYTHONPATH"] = str(REPO)
        env["AIRGAP_TEST_PEAK"] = os.path.join(tmp, "peak")
        start = time.monotonic()
        p = subprocess.run([sys.executable, "-c", _WRAPPER.format(limit=AS_LIMIT)]
                           + [str(a) for a in args], env=env, cwd=str(REPO),
                           capture_output=True, text=True, timeout=timeout)
        seconds = time.monotonic() - start
        peak = Path(env["AIRGAP_TEST_PEAK"])
        rss = int(peak.read_text()) if peak.exists() else -1
    return Run(p.returncode, p.stdout, p.stderr, rss, seconds)


# ---------------------------------------------------------------------------- raw tar bits


def ustar(name: str, size: int, *, typeflag: bytes = b"0", mode: int = 0o644,
          magic: bytes = b"ustar\x0000") -> bytes:
    """One 512-byte ustar header block, checksummed, as an attacker would write it."""
    b = bytearray(512)
    raw = name.encode()[:100]
    b[0:len(raw)] = raw
    b[100:108] = b"%07o\x00" % mode
    b[108:124] = b"0000000\x000000000\x00"
    b[124:136] = b"%011o\x00" % size
    b[136:148] = b"%011o\x00" % MTIME
    b[156:157] = typeflag
    b[257:265] = magic
    b[148:156] = b" " * 8
    b[148:155] = b"%06o\x00" % sum(b)
    return bytes(b)


def member(name: str, data: bytes, **kw: object) -> bytes:
    return ustar(name, len(data), **kw) + data + bytes(-len(data) % 512)  # type: ignore[arg-type]


def pax(records: bytes, *, declared: Optional[int] = None) -> bytes:
    size = len(records) if declared is None else declared
    return ustar("././@PaxHeader", size, typeflag=b"x", mode=0) + records + bytes(
        -len(records) % 512)


def record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n += 1
    return str(n).encode() + body


END = bytes(1024)
SPEC = default_spec("2.0.0")


def envelope() -> bytes:
    """A parseable (unsigned) manifest and an empty signature list: what an attacker puts in
    front to reach the parts after them."""
    return (member("manifest.json", unsigned_manifest_bytes(SPEC))
            + member("signatures.json", canonjson.encode({"signatures": []})))


def _checksummed(block: bytearray) -> bytes:
    block[148:156] = b" " * 8
    block[148:155] = b"%06o\x00" % sum(block)
    return bytes(block)


def _base256_size() -> bytes:
    """GNU's binary number form: a size of 2**64 - 1 in 12 bytes."""
    b = bytearray(ustar("manifest.json", 0))
    b[124:136] = b"\x80" + b"\xff" * 11
    return _checksummed(b)


def _with_prefix() -> bytes:
    b = bytearray(ustar("manifest.json", 0))
    b[345:349] = b"/etc"
    return _checksummed(b)


def deep(n: int = 100_000) -> bytes:
    return b"[" * n + b"]" * n


# ---------------------------------------------------------------------------- the cases

Maker = Callable[[Path, KeyDir], Path]


def _file(data: bytes) -> Maker:
    def make(folder: Path, keydir: KeyDir) -> Path:
        path = folder / "edge-2.0.0-amd64.tar"
        path.write_bytes(data)
        return path
    return make


def _chunks(folder: Path, parts: List[Tuple[bytes, int]]) -> Path:
    """Write ``data * count`` pieces without building the whole file in memory."""
    path = folder / "edge-2.0.0-amd64.tar"
    with open(path, "wb") as f:
        for data, count in parts:
            for _ in range(count):
                f.write(data)
    return path


def _pax_path_32mib(folder: Path, keydir: KeyDir) -> Path:
    size = 32 << 20
    head = pax(b"", declared=size)
    digits = str(size).encode()
    body = digits + b" path=" + b"a" * (size - len(digits) - 7) + b"\n"
    with open(folder / "edge-2.0.0-amd64.tar", "wb") as f:
        f.write(head[:512] + body + ustar("k3s/k3s", 0) + END)
    return folder / "edge-2.0.0-amd64.tar"


def _many_big_roots(folder: Path, keydir: KeyDir) -> Path:
    root = b'{"signed":' + b" " * ((4 << 20) - 12) + b"}"
    return _chunks(folder, [(envelope(), 1)] + [
        (member(f"roots/{n}.root.json", root), 1) for n in range(1, 21)] + [(END, 1)])


def _too_many_roots(folder: Path, keydir: KeyDir) -> Path:
    return _chunks(folder, [(envelope(), 1)] + [
        (member(f"roots/{n}.root.json", b"{}"), 1) for n in range(1, 301)] + [(END, 1)])


def _deep_root(folder: Path, keydir: KeyDir) -> Path:
    return _file(envelope() + member("roots/1.root.json", deep()) + END)(folder, keydir)


def _sparse_map(folder: Path, keydir: KeyDir) -> Path:
    records = (record("GNU.sparse.major", "1") + record("GNU.sparse.minor", "0")
               + record("GNU.sparse.name", "manifest.json")
               + record("GNU.sparse.realsize", "1000000000"))
    sparse_map = b"\n".join([b"4000000"] + [b"%d\n1" % (i * 2) for i in range(4_000_000)])
    return _file(pax(records) + member("GNUSparseFile.0/manifest.json", sparse_map[:8 << 20])
                 + END)(folder, keydir)


def _metadata_at_every_limit(folder: Path, keydir: KeyDir) -> Path:
    """The most an unsigned file can make the installer parse: a valid manifest just under
    4 MiB and ``MAX_TOKENS`` (3000 images with 1240-character refs), then a root just under
    4 MiB (8 MiB together) of ~48k strings, which is parsed before it is found to be junk."""
    spec = default_spec("2.0.0")
    manifest = manifest_for(spec, [m for m, _ in _members(spec)])
    manifest = replace(manifest, images=tuple(
        ImageEntry(ref="r" * 1240 + str(i), digest="sha256:" + "0" * 64, index_digest="",
                   archive="images/app-2.0.0.tar") for i in range(3000)))
    data = manifest.to_bytes()
    root = canonjson.encode([f"a{i:080d}" for i in range(48_000)])
    assert len(data) <= bundlefmt.MAX_HEADER_MEMBER and len(root) <= bundlefmt.MAX_HEADER_MEMBER
    assert len(data) + len(root) + 16 <= bundlefmt.MAX_HEADER_TOTAL
    return _file(member("manifest.json", data)
                 + member("signatures.json", canonjson.encode({"signatures": []}))
                 + member("roots/1.root.json", root) + END)(folder, keydir)


def _signed_long_version(folder: Path, keydir: KeyDir) -> Path:
    return write_spec(default_spec("2." + "9" * 5000), keydir, folder,
                      filename="edge-2.0.0-amd64.tar", hostile=True)


def _signed_long_k3s_minor(folder: Path, keydir: KeyDir) -> Path:
    return write_spec(default_spec("2.0.0", k3s_version="v1." + "3" * 5000 + ".5+k3s1"),
                      keydir, folder, hostile=True)


def _signed_from_the_future(folder: Path, keydir: KeyDir) -> Path:
    return write_spec(default_spec("2.0.0", created=4_102_444_800), keydir, folder)  # 2100


CASES: Dict[str, Tuple[Maker, int, str]] = {
    # case: (input maker, exit code, text the message must contain)
    "pax-path-32MiB": (_pax_path_32mib, 3, "over the 4096-byte limit"),
    "pax-declares-8GiB": (_file(pax(b"", declared=(8 << 30) - 1) + END), 3,
                          "over the 4096-byte limit"),
    "pax-length-240k-digits": (_file(pax(b"9" * 240_000 + b" path=x\n") + END), 3,
                               "over the 4096-byte limit"),
    "pax-length-4000-digits": (_file(pax(b"9" * 4000 + b" path=x\n") + END), 3,
                               "malformed pax record length"),
    "pax-sparse-1.0-map": (_sparse_map, 3, "'GNU.sparse.major' is not one bundles use"),
    "pax-twice-same-key": (_file(pax(record("path", "a") + record("path", "b"))
                                 + ustar("a", 0) + END), 3, "sets 'path' twice"),
    "gnu-longname-200MiB": (_file(ustar("././@LongLink", 200 << 20, typeflag=b"L") + END), 3,
                            "not a regular file (GNU long name)"),
    "gnu-magic": (_file(ustar("manifest.json", 10, magic=b"ustar  \x00") + END), 3,
                  "not a POSIX (ustar/pax) tar header"),
    "gnu-sparse-type": (_file(ustar("manifest.json", 10, typeflag=b"S") + END), 3,
                        "not a regular file (GNU sparse file)"),
    "base256-size": (_file(_base256_size() + END), 3, "base-256 number"),
    "bad-checksum": (_file(ustar("manifest.json", 0)[:-1] + b"\x01" + END), 3,
                     "tar header checksum mismatch"),
    "name-prefix": (_file(_with_prefix() + END), 3, "name prefix"),
    "manifest-declares-8GiB": (_file(ustar("manifest.json", (8 << 30) - 1) + END), 3,
                               "over the 4194304 limit for metadata"),
    "roots-20x4MiB": (_many_big_roots, 3, "exceed 8388608 bytes together"),
    "roots-300": (_too_many_roots, 3, "more than 256 roots"),
    "metadata-at-every-limit": (_metadata_at_every_limit, 3,
                                "root chain entry 1 must be a JSON object"),
    # 100k deep trips the value count first; 40 deep (few values) trips the depth limit
    "manifest-json-100k-deep": (_file(member("manifest.json", deep()) + END), 3,
                                "more than 50000 JSON values"),
    "manifest-json-40-deep": (_file(member("manifest.json", deep(40)) + END), 3,
                              "deeper than 32 levels"),
    "manifest-json-240k-digit-int": (_file(member("manifest.json", b"[" + b"7" * 240_000 + b"]")
                                           + END), 3, "over the 20-digit limit"),
    "signatures-json-100k-deep": (_file(member("manifest.json", unsigned_manifest_bytes(SPEC))
                                        + member("signatures.json", deep()) + END), 3,
                                  "more than 50000 JSON values"),
    "root-json-100k-deep": (_deep_root, 3, "more than 50000 JSON values"),
    "truncated-in-header": (_file(envelope()[:700]), 3, "is truncated"),
    "signed-5000-digit-version": (_signed_long_version, 3, "5000 digits"),
    "signed-5000-digit-k3s-minor": (_signed_long_k3s_minor, 3, "5000 digits"),
    "signed-created-2100": (_signed_from_the_future, 3, "later than this host's clock"),
}


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture(scope="module")
def host_template(tmp_path_factory: pytest.TempPathFactory, keydir: KeyDir) -> Path:
    """A host with edge 1.0.0 installed (copied per test)."""
    host = tmp_path_factory.mktemp("template")
    root = host / "root"
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    first = write_spec(default_spec("1.0.0"), keydir, tmp_path_factory.mktemp("first"))
    r = cli("install", first, "--root", root, "--server", "--skip-start")
    assert r.returncode == 0, r.stderr
    return host


@pytest.fixture
def host(tmp_path: Path, host_template: Path) -> Path:
    """``host/root`` (the install root, edge 1.0.0 installed) and ``host/outside`` (a sibling
    that must never change)."""
    dest = tmp_path / "host"
    subprocess.run(["cp", "-a", str(host_template), str(dest)], check=True)
    (dest / "outside").mkdir()
    (dest / "outside" / "keep.txt").write_text("outside the root\n")
    return dest


def _refused(host: Path, run: Run, code: int, needle: str, before: Mapping[str, object]) -> None:
    assert run.code == code, (run.code, run.err)
    assert needle in run.err, run.err
    assert "Traceback" not in run.err, run.err
    assert 0 < run.rss_kib < RSS_LIMIT_KIB, f"peak RSS {run.rss_kib} KiB"
    assert tree(host) == before, "something under the host folder changed"


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_bundle_refused_bounded(tmp_path: Path, keydir: KeyDir, host: Path,
                                        case: str) -> None:
    """THREATS 31 (and 33 for a signed future `created`): refused with a clear error, RSS
    < 64 MiB, in seconds, nothing changed inside or outside the root."""
    make, code, needle = CASES[case]
    inputs = tmp_path / "in"
    inputs.mkdir()
    bundle = make(inputs, keydir)
    before = tree(host)
    run = bounded("install", bundle, "--root", host / "root", "--skip-start", timeout=60)
    _refused(host, run, code, needle, before)
    # linear: well under a second per 100 MiB read on this machine; generous for load
    print(f"{case}: exit {run.code}, peak RSS {run.rss_kib} KiB, {run.seconds:.2f} s")
    assert run.seconds < 20, f"{case} took {run.seconds:.1f} s"
    if case.startswith("signed-created"):
        assert "2100-01-01T00:00:00Z" in run.err  # both times are named


def test_trust_file_json_100k_deep(tmp_path: Path, host: Path) -> None:
    """`trust FILE` with JSON nested 100k deep (a RecursionError traceback before)."""
    root = tmp_path / "root.json"
    root.write_bytes(deep())
    fresh = host / "fresh"
    before = tree(host)
    run = bounded("trust", root, "--root", fresh)
    _refused(host, run, 3, "more than 50000 JSON values", before)


def test_valid_bundle_installs_within_the_bound(tmp_path: Path, keydir: KeyDir,
                                                host: Path) -> None:
    """The bound is not met by refusing everything: a good bundle installs under it too."""
    bundle = write_spec(default_spec("2.0.0"), keydir, tmp_path)
    run = bounded("install", bundle, "--root", host / "root", "--skip-start")
    assert run.code == 0, run.err
    assert 0 < run.rss_kib < RSS_LIMIT_KIB, run.rss_kib


@pytest.mark.parametrize("value", ["soon", 1.5, -1, 10 ** 19, True, None])
def test_state_with_bad_time_ratchet(tmp_path: Path, keydir: KeyDir, host: Path,
                                     value: object) -> None:
    """THREATS 34, numeric fields: a state file (with a valid checksum) whose time_ratchet is
    not a bounded integer is refused like any edited state (exit 3, untrusted content), not a
    TypeError; both copies unreadable stays an environment error (exit 6)."""
    layout = Layout(str(host / "root"))
    doc = state.read_dual(layout.state).doc
    assert doc is not None
    doc["time_ratchet"] = value
    if isinstance(value, float):  # canonical JSON cannot hold a float: write it by hand
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        data = (b'{"doc":' + body + b',"sha256":"' + hashlib.sha256(body).hexdigest().encode()
                + b'"}')
        for p in (layout.state, layout.state + ".bak"):
            Path(p).write_bytes(data)
        expected = (6, "state.json")  # both copies unreadable: floats are refused
    else:
        state.write_dual(layout.state, doc)
        expected = (3, "time_ratchet")
    bundle = write_spec(default_spec("2.0.0"), keydir, tmp_path)
    before = tree(host)
    run = bounded("verify", bundle, "--root", host / "root")
    _refused(host, run, expected[0], expected[1], before)


# ---------------------------------------------------------------------------- THREATS 36


def _fifo(folder: Path) -> Path:
    path = folder / "edge-2.0.0-amd64.tar"
    os.mkfifo(path)
    return path


def _folder(folder: Path) -> Path:
    path = folder / "edge-2.0.0-amd64.tar"
    path.mkdir()
    (path / "manifest.json").write_text("{}")
    return path


def _device(folder: Path) -> Path:
    path = folder / "edge-2.0.0-amd64.tar"
    path.symlink_to("/dev/zero")
    return path


NON_REGULAR = {"fifo": (_fifo, "is a FIFO, not a regular file"),
               "folder": (_folder, "is a folder, not a regular file"),
               "device": (_device, "is a device, not a regular file")}


# a folder given directly is searched for bundles: that is the ("folder", "in-folder") case
@pytest.mark.parametrize("kind,given", [("fifo", "file"), ("fifo", "in-folder"),
                                        ("device", "file"), ("device", "in-folder"),
                                        ("folder", "in-folder")])
@pytest.mark.parametrize("command", ["verify", "install"])
def test_non_regular_bundle_refused_at_once(tmp_path: Path, host: Path, kind: str,
                                            given: str, command: str) -> None:
    """THREATS 36: a FIFO (would block forever), a folder or a device named like a bundle,
    passed directly or found in a folder, is refused at once with exit 2."""
    make, needle = NON_REGULAR[kind]
    stick = host / "outside" / "stick"
    stick.mkdir()
    path = make(stick)
    before = tree(host / "root")
    arg = path if given == "file" else stick
    run = bounded(command, arg, "--root", host / "root", timeout=20)
    assert run.code == 2, (run.code, run.err)
    assert needle in run.err and "Traceback" not in run.err, run.err
    assert run.seconds < 10
    assert tree(host / "root") == before


def test_trust_file_fifo_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "root.json"
    os.mkfifo(fifo)
    run = bounded("trust", fifo, "--root", tmp_path / "r", timeout=20)
    assert run.code == 2 and "is a FIFO" in run.err, run.err
    assert not (tmp_path / "r").exists()
