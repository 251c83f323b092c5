"""Synthetic bundles for the installer tests: valid ones signed for real (bundler.keys), and
the invalid shapes THREATS.md lists, crafted by hand with tarfile and signed too.

Payloads are small stand-ins: a ``k3s`` shell script, a stand-in ``install.sh`` that records its
environment (``AIRGAP_TEST_RECORD``) and can be told to fail (``AIRGAP_TEST_SCRIPT_FAIL``),
image "archives", charts and manifests of a few KiB each.
"""

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from bundler import keys
from installer.format import bundlefmt
from installer.format.bundlefmt import Manifest, Member
from installer.host.layout import IMAGES_DIR, image_archive_name
from installer.trust import verify

STANDIN_INSTALL_SH = """#!/bin/sh
# stand-in install.sh for %(name)s %(version)s: records how it was run
set -e
if [ -n "$AIRGAP_TEST_RECORD" ]; then
  {
    echo "--- %(name)s %(version)s"
    env | grep -E '^(INSTALL_K3S_|K3S_)' | sort
    echo "BIN_SHA256=$(sha256sum "$INSTALL_K3S_BIN_DIR/k3s" | cut -d' ' -f1)"
  } >> "$AIRGAP_TEST_RECORD"
fi
if [ -n "$AIRGAP_TEST_SCRIPT_FAIL" ]; then
  echo "stand-in install.sh failing on purpose" >&2
  exit 3
fi
"""


@dataclass
class Spec:
    """What a synthetic bundle holds. ``extra`` maps bundle path -> (kind, bytes)."""

    name: str = "edge"
    version: str = "1.0.0"
    arch: str = "amd64"
    k3s_version: str = "v1.33.5+k3s1"
    roles: Tuple[str, ...] = ("server", "agent")
    created: int = 1_790_000_000
    images: Dict[str, bytes] = field(default_factory=dict)
    charts: Dict[str, bytes] = field(default_factory=dict)
    manifests: Dict[str, bytes] = field(default_factory=dict)
    binary: Optional[bytes] = None
    allow_k3s_minor_skip: bool = False
    allow_k3s_downgrade: bool = False

    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.arch}.tar"


def default_spec(version: str = "1.0.0", **kw: object) -> Spec:
    """A bundle with one binary, two image archives, a chart and a manifest; contents depend
    on the version so two versions differ in every file but the shared archive."""
    spec = Spec(version=version, **kw)  # type: ignore[arg-type]
    if not spec.images:
        spec.images = {
            f"k3s-airgap-images-{spec.arch}.tar.zst": b"shared images " * 300,
            f"app-{version}.tar": (f"app images {version} ").encode() * 500,
        }
    if not spec.charts:
        spec.charts = {f"demo-{version}.tgz": (f"chart {version}").encode() * 40}
    if not spec.manifests:
        spec.manifests = {"demo.yaml": (f"kind: HelmChart # {version}\n").encode() * 10}
    return spec


def _members(spec: Spec) -> List[Tuple[Member, bytes]]:
    binary = spec.binary if spec.binary is not None else (
        f"#!/bin/sh\necho k3s {spec.k3s_version} {spec.version}\n").encode()
    script = (STANDIN_INSTALL_SH % {"name": spec.name, "version": spec.version}).encode()
    items = [("k3s/k3s", "k3s-binary", binary, 0o755),
             ("k3s/install.sh", "install-script", script, 0o755)]
    items += [("images/" + n, "images", d, 0o644) for n, d in sorted(spec.images.items())]
    items += [("charts/" + n, "chart", d, 0o644) for n, d in sorted(spec.charts.items())]
    items += [("manifests/" + n, "manifest", d, 0o644) for n, d in sorted(spec.manifests.items())]
    return [(Member(p, len(d), hashlib.sha256(d).hexdigest(), mode, kind), d)
            for p, kind, d, mode in items]


def manifest_for(spec: Spec, members: Sequence[Member]) -> Manifest:
    return Manifest(name=spec.name, version=spec.version, arch=spec.arch,
                    k3s_version=spec.k3s_version, roles=tuple(spec.roles),
                    lock_digest="sha256:" + "0" * 64, created=spec.created,
                    members=tuple(members),
                    allow_k3s_minor_skip=spec.allow_k3s_minor_skip,
                    allow_k3s_downgrade=spec.allow_k3s_downgrade)


class KeyDir:
    """A real key directory (python-tuf root, Ed25519 keys) made once per test session."""

    def __init__(self, path: Path) -> None:
        self.path = path
        keys.init_keys(path)

    @property
    def root_json(self) -> Path:
        return self.path / "root.json"

    def sign(self, manifest_bytes: bytes) -> bytes:
        return keys.sign_manifest(self.path, manifest_bytes)

    def chain(self) -> List[bytes]:
        return keys.root_chain(self.path)

    def rotate_targets(self) -> None:
        keys.rotate(self.path, role="targets")


def write_spec(spec: Spec, keydir: KeyDir, out_dir: Path, *,
               filename: Optional[str] = None, hostile: bool = False) -> Path:
    """Write a valid, signed bundle for ``spec`` with the real ``bundlefmt.write_bundle``.

    ``hostile=True`` crafts what the builder never writes (the writer's own validation,
    ``check_for_write``, is bypassed for this one call) to test that devices refuse it."""
    pairs = _members(spec)
    manifest = manifest_for(spec, [m for m, _ in pairs])
    data = {m.path: d for m, d in pairs}
    out = out_dir / (filename or spec.filename())
    checker = bundlefmt.check_for_write
    if hostile:
        bundlefmt.check_for_write = lambda m: m.to_bytes()  # type: ignore[assignment]
    try:
        with open(out, "wb") as f:
            bundlefmt.write_bundle(f, manifest=manifest,
                                   signatures=keydir.sign(manifest.to_bytes()),
                                   roots=keydir.chain(),
                                   open_member=lambda m: io.BytesIO(data[m.path]))
    finally:
        bundlefmt.check_for_write = checker  # type: ignore[assignment]
    return out


# ---------------------------------------------------------------------------- hand-made tars

Entry = Tuple[tarfile.TarInfo, Optional[bytes]]


def _info(name: str, data: bytes, mode: int = 0o644, mtime: int = 1_790_000_000,
          kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode, info.mtime, info.type, info.linkname = mode, mtime, kind, link
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def craft(spec: Spec, keydir: KeyDir, out: Path, *,
          listed: Optional[Callable[[List[Member]], List[Member]]] = None,
          payload: Optional[Callable[[List[Entry]], List[Entry]]] = None) -> Path:
    """A validly SIGNED bundle whose manifest (``listed``) and/or tar payload (``payload``)
    were altered by hand: the signature is good, the shape is not."""
    pairs = _members(spec)
    members = [m for m, _ in pairs]
    if listed is not None:
        members = listed(members)
    manifest = manifest_for(spec, members)
    mbytes = manifest.to_bytes()
    entries: List[Entry] = [(_info(m.path, d, m.mode, spec.created), d) for m, d in pairs]
    if payload is not None:
        entries = payload(entries)
    sigs = keydir.sign(mbytes)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_info("manifest.json", mbytes), io.BytesIO(mbytes))
        tar.addfile(_info("signatures.json", sigs), io.BytesIO(sigs))
        for n, root in enumerate(keydir.chain(), start=1):
            tar.addfile(_info(f"roots/{n}.root.json", root), io.BytesIO(root))
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None and info.isreg() else None)
    return out


def unsigned_manifest_bytes(spec: Spec) -> bytes:
    return manifest_for(spec, [m for m, _ in _members(spec)]).to_bytes()


def write_sparse_bundle(spec: Spec, keydir: KeyDir, out: Path, *, big_name: str,
                        big_size: int) -> Path:
    """A signed bundle with an extra all-zero image archive of ``big_size`` bytes (> 4 GiB),
    written as a hole so the bundle costs no disk. Same bytes as ``write_bundle`` would give."""
    pairs = _members(spec)
    h = hashlib.sha256()
    block = bytes(1 << 24)
    left = big_size
    while left:
        n = min(left, len(block))
        h.update(block[:n])
        left -= n
    big = Member("images/" + big_name, big_size, h.hexdigest(), 0o644, "images")
    members = [m for m, _ in pairs] + [big]
    manifest = manifest_for(spec, members)
    mbytes = manifest.to_bytes()
    sigs = keydir.sign(mbytes)
    data = {m.path: d for m, d in pairs}

    def header(name: str, size: int, mode: int) -> bytes:
        return bundlefmt.member_header(name, size, mode, mtime=spec.created).tobuf(
            tarfile.PAX_FORMAT, "utf-8", "surrogateescape")

    with open(out, "wb") as f:
        docs = [("manifest.json", mbytes), ("signatures.json", sigs)]
        docs += [(f"roots/{n}.root.json", r) for n, r in enumerate(keydir.chain(), start=1)]
        for name, d in docs:
            f.write(header(name, len(d), 0o644) + d + bytes(-len(d) % 512))
        for m in members:
            f.write(header(m.path, m.size, m.mode))
            if m is big:
                f.seek(m.size + (-m.size % 512), os.SEEK_CUR)
            else:
                f.write(data[m.path] + bytes(-m.size % 512))
        end = f.tell() + 1024
        end += -end % tarfile.RECORDSIZE
        f.truncate(end)
    return out


# ---------------------------------------------------------------------------- running it

REPO = Path(__file__).resolve().parent.parent


def cli(*args: object, env: Optional[Dict[str, str]] = None, timeout: float = 120,
        pyz: Optional[Path] = None) -> "subprocess.CompletedProcess[str]":
    """Run ``python3 -m installer ARGS`` (or ``python3 airgap-install.pyz ARGS``) for real."""
    full_env = dict(os.environ)
    full_env.pop("AIRGAP_INSTALL_FAILPOINT", None)
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    head = [sys.executable, str(pyz)] if pyz else [sys.executable, "-m", "installer"]
    return subprocess.run(head + [str(a) for a in args], env=full_env, cwd=str(REPO),
                          capture_output=True, text=True,
                          timeout=timeout)


def popen(*args: object, env: Optional[Dict[str, str]] = None) -> "subprocess.Popen[str]":
    full_env = dict(os.environ)
    full_env.pop("AIRGAP_INSTALL_FAILPOINT", None)
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "installer"] + [str(a) for a in args],
                            env=full_env, cwd=str(REPO), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def tree(root: Path, *, only: Sequence[str] = ()) -> Dict[str, Tuple[str, str, int]]:
    """Every path under ``root`` (or only under the ``only`` sub-folders) -> (type, content
    sha256 or link target, mode). Used to prove "nothing under the root changed"."""
    out: Dict[str, Tuple[str, str, int]] = {}
    starts = [root / o for o in only] if only else [root]
    for start in starts:
        if not start.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(start):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                rel = str(p.relative_to(root))
                st = p.lstat()
                if p.is_symlink():
                    out[rel] = ("link", os.readlink(p), st.st_mode)
                elif p.is_dir():
                    out[rel] = ("dir", "", st.st_mode)
                else:
                    out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mode)
    return out


LIVE = ("usr", "var/lib/rancher/k3s")


def live_image(name: str, data: bytes) -> str:
    """Where the installer places image archive ``images/<name>`` (named by content)."""
    return IMAGES_DIR + "/" + image_archive_name(name, hashlib.sha256(data).hexdigest())


def live(root: Path) -> Dict[str, Tuple[str, str, int]]:
    """The live K3s files only (binary, images, charts, manifests), folders left out."""
    return {k: v for k, v in tree(root, only=LIVE).items() if v[0] != "dir"}


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def wait_stopped(proc: "subprocess.Popen[str]", timeout: float = 30) -> None:
    """Wait until ``proc`` stopped itself at a ``:stop`` fail point."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"installer exited ({proc.returncode}) before its fail point: "
                                 f"{err}")
        if process_state(proc.pid) == "T":
            return
        time.sleep(0.01)
    raise AssertionError("installer never reached its fail point")


# In-process helpers of the installer unit tests (tests/test_trust_*.py, test_format_*.py).
NOW = 1_800_000_000  # after every spec's `created` (1_790_000_000), before the roots expire


def open_signed(path: Path, keydir: KeyDir, *, now: int = NOW,
          anchor: Optional[bytes] = None) -> verify.Opened:
    return verify.open_bundle(str(path), anchor=anchor or keydir.root_json.read_bytes(),
                              now=now)


def verify_signed(path: Path, keydir: KeyDir, **kw: object) -> int:
    opened = open_signed(path, keydir, **kw)  # type: ignore[arg-type]
    try:
        return verify.hash_payload(opened)
    finally:
        opened.close()


def write_signed(out: Path, keydir: KeyDir, *, manifest: Manifest, data: dict,
           roots: Optional[Sequence[bytes]] = None) -> Path:
    with open(out, "wb") as f:
        bundlefmt.write_bundle(f, manifest=manifest, signatures=keydir.sign(manifest.to_bytes()),
                               roots=keydir.chain() if roots is None else roots,
                               open_member=lambda m: io.BytesIO(data[m.path]))
    return out


def spec_parts(version: str = "2.0.0") -> tuple:
    spec = default_spec(version)
    pairs = _members(spec)
    return spec, manifest_for(spec, [m for m, _ in pairs]), {m.path: d for m, d in pairs}


def installed_host(tmp_path: Path, keydir: KeyDir) -> Dict[str, object]:
    """A root that trusts ``keydir`` and has 1.0.0 installed by the real CLI (a child)."""
    root = tmp_path / "root"
    assert cli("trust", keydir.root_json, "--root", root).returncode == 0
    b1 = write_spec(default_spec("1.0.0"), keydir, tmp_path)
    r = cli("install", b1, "--root", root, "--skip-start", "--server")
    assert r.returncode == 0, r.stderr
    return {"root": root, "b1": b1, "tmp": tmp_path}
