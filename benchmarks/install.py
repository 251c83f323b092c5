"""Benchmark: `airgap-install install` of a ~2 GB bundle vs hashing + copying the same bytes.

    python3 benchmarks/install.py                      # 2 GB
    AIRGAP_BENCH_BYTES=200000000 python3 benchmarks/install.py

Builds a signed synthetic bundle (image archives of pseudo-random data, real keys from
``bundler.keys``) in a temp folder, then times, each from a cold page cache when this host lets
us drop it (root), else warm:

- baseline: for each payload file, read 1 MiB chunks, ``hashlib.sha256`` them, write them with
  ``shutil.copyfileobj``-style chunks to a new file, fsync (what any verified copy must do);
- the installer: ``python3 -m installer install BUNDLE --root TMP --server --skip-start`` as a
  child process (signature check, envelope check, one streaming pass into staging with fsync,
  journaled placement by hard links, stand-in install.sh, state).

Prints bytes, both times, the throughput ratio (baseline time / installer time; target >= 0.9,
issue #15)
and the installer process's peak RSS from ``os.wait4`` (target < 64 MB).
"""

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bundles import KeyDir, Spec, _members, manifest_for  # noqa: E402

from installer.format import bundlefmt  # noqa: E402
from installer.format.bundlefmt import Member  # noqa: E402

CHUNK = 1 << 20


def _block(seed: int) -> bytes:
    """1 MiB of cheap pseudo-random bytes (incompressible enough, deterministic)."""
    return hashlib.sha256(b"%d" % seed).digest() * (CHUNK // 32)


def make_sources(folder: Path, total: int, files: int = 4) -> List[Path]:
    paths = []
    per = total // files
    for i in range(files):
        p = folder / f"bulk-{i}.tar"
        with open(p, "wb") as f:
            left, n = per, 0
            while left:
                data = _block(i * 100003 + n)[:min(CHUNK, left)]
                f.write(data)
                left -= len(data)
                n += 1
        paths.append(p)
    return paths


def build_bundle(work: Path, sources: List[Path]) -> Path:
    keys = KeyDir(work / "keys")
    spec = Spec(version="1.0.0")
    pairs = _members(spec)
    data: Dict[str, object] = {m.path: d for m, d in pairs}
    members = [m for m, _ in pairs]
    for src in sources:
        h = hashlib.sha256()
        with open(src, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):  # noqa: B023
                h.update(chunk)
        m = Member("images/" + src.name, src.stat().st_size, h.hexdigest(), 0o644, "images")
        members.append(m)
        data[m.path] = src
    manifest = manifest_for(spec, members)

    def open_member(m: Member):  # type: ignore[no-untyped-def]
        d = data[m.path]
        return open(d, "rb") if isinstance(d, Path) else io.BytesIO(d)  # type: ignore

    bundle = work / spec.filename()
    with open(bundle, "wb") as out:
        bundlefmt.write_bundle(out, manifest=manifest, signatures=keys.sign(manifest.to_bytes()),
                               roots=keys.chain(), open_member=open_member)
    root = work / "root"
    run = subprocess.run([sys.executable, "-m", "installer", "trust", str(keys.root_json),
                          "--root", str(root)], cwd=str(REPO), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return bundle


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def baseline(sources: List[Path], dest: Path) -> float:
    dest.mkdir()
    start = time.perf_counter()
    for src in sources:
        h = hashlib.sha256()
        with open(src, "rb") as fin, open(dest / src.name, "wb") as fout:
            for chunk in iter(lambda: fin.read(CHUNK), b""):  # noqa: B023
                h.update(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        h.hexdigest()
    return time.perf_counter() - start


def installer_run(bundle: Path, root: Path) -> Tuple[float, int]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "installer", "install", str(bundle), "--root",
                             str(root), "--server", "--skip-start"], cwd=str(REPO), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if status != 0:
        raise SystemExit(f"installer failed ({status}): {err}")
    return elapsed, usage.ru_maxrss * 1024


def main() -> None:
    total = int(os.environ.get("AIRGAP_BENCH_BYTES", str(2_000_000_000)))
    base = os.environ.get("AIRGAP_BENCH_DIR")
    work = Path(tempfile.mkdtemp(prefix="airgap-bench-", dir=base))
    try:
        sources = make_sources(work, total)
        bundle = build_bundle(work, sources)
        cold = drop_caches()
        t_base = baseline(sources, work / "baseline")
        drop_caches()
        t_inst, rss = installer_run(bundle, work / "root")
        size = sum(p.stat().st_size for p in sources)
        ratio = t_base / t_inst
        print(f"payload bytes:        {size}")
        print(f"page cache:           {'dropped before each run' if cold else 'warm (not root)'}")
        print(f"baseline hash+copy:   {t_base:.2f} s  ({size / t_base / 1e6:.0f} MB/s)")
        print(f"airgap-install:       {t_inst:.2f} s  ({size / t_inst / 1e6:.0f} MB/s)")
        print(f"throughput ratio:     {ratio:.2f}  (target >= 0.9)")
        print(f"installer peak RSS:   {rss / 1e6:.1f} MB  (target < 64 MB)")
    finally:
        shutil.rmtree(str(work), ignore_errors=True)


if __name__ == "__main__":
    main()
