"""Benchmark: `bundle build --arch arm64` vs `skopeo copy` of the same images, the warm
rebuild with unchanged inputs, bytes written, linearity in image size, the bundle's size
against per-image docker-archives, and the build's peak RSS: every row of issue #15, one run.

    python3 benchmarks/build.py                   # scales 0.25, 1 and 4 (1.4 GB unique at 4)
    BENCH_SCALE=0.1 BENCH_BIG_SCALE=0.4 python3 benchmarks/build.py   # quick check
    BENCH_REPEAT=1 python3 benchmarks/build.py    # one timed run of each instead of 3

Starts its own pieces of the test world in a temp folder (a real ``docker-registry`` and the
static K3s release server with small stand-in assets, both on 127.0.0.1) and pushes, per
scale, six two-arch images (linux/amd64 + linux/arm64) of pseudo-random (incompressible)
gzip layers (not timed):

- ``library/shared-1..5``: a 30 MB x scale base layer all five share, plus 3 MB x scale each;
- ``library/big``: a 300 MB x scale base layer of its own.

Scales: ``BENCH_SCALE`` (S, default 1), S x 0.25, and ``BENCH_BIG_SCALE`` (default 4). The
spec has two bundles, arch ``arm64``, no charts, ``manifests = []``: ``bench`` (all six
images) and ``shared`` (the five sharing a base), K3s from the release server. ``bundle lock``
runs first with a cache of its own (not timed). Then, timed:

- at S, BENCH_REPEAT times interleaved (median): the baseline (per image ``skopeo copy
  --override-arch arm64 docker://... oci:LAYOUT:<name>`` into one shared OCI layout folder,
  then ``tar`` of that folder), a cold build (``bundle build --arch arm64 --bundle bench`` with
  an empty ``--cache`` and ``--out``), and a warm rebuild (the same command again, same cache
  and output folder: the inputs are unchanged, so the bundle is verified and left in place);
- at the big scale: one cold build, then BENCH_REPEAT warm rebuilds;
- at S x 0.25: one cold build (its peak RSS).

Figures (targets, issue #15): cold build / skopeo (<= 0.7); warm / cold at the big scale
(<= 0.15); blob downloads of the warm rebuilds (0); bytes the cold build wrote
(``/proc/PID/io`` ``write_bytes`` of the build process, cache included) / unique arm64 image
bytes (<= 2.05); peak RSS of each cold build from ``os.wait4`` (< 200 MB, and <= 1.2x growth
from S x 0.25 to the big scale); big-scale cold / S cold (~ the scale ratio: linear); the
bundle's size / per-image ``skopeo copy ... docker-archive:`` files (<= 0.5 for the five
sharing a base); and the phase timings the build reports in ``--json``. Also reported: the
baseline plus an fsync of its tar (``bundle build`` fsyncs what it writes; skopeo and tar do
not), and the load average (other work on the host skews times).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_world import bench_world  # noqa: E402
from tests.world.images import AMD64, ARM64, Image, ImageFactory, push_image  # noqa: E402
from tests.world.k3s import K3S_VERSION  # noqa: E402
from tests.world.registry import Registry  # noqa: E402
from tests.world.release import ReleaseServer  # noqa: E402

MB = 1_000_000
SHARED_BASE, SHARED_APP, BIG_BASE, SHARED_COUNT = 30 * MB, 3 * MB, 300 * MB, 5
QUARTER = 0.25
BIG = 4.0
TARGETS = {"cold": 0.7, "warm": 0.15, "size": 0.5, "rss": 200 * MB, "rss_growth": 1.2,
           "written": 2.05, "linear": (0.75, 1.25)}   # x the scale ratio




@dataclass
class Run:
    seconds: float
    maxrss: int          # bytes
    stdout: str
    write_bytes: int = 0  # /proc/PID/io of the child, read after it exited, before reaping


def _write_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/io") as f:
            fields = dict(line.split(": ") for line in f.read().splitlines() if ": " in line)
        return int(fields["write_bytes"])
    except (OSError, KeyError, ValueError):
        return -1


def run(cmd: List[str], env: Dict[str, str], cwd: Path, what: str) -> Run:
    """Run a child to completion; wall time, its peak RSS (``os.wait4``) and the bytes it
    caused to be written to storage (``/proc/PID/io`` ``write_bytes``)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdout=out, stderr=err)
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped yet
        written = _write_bytes(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{what} failed ({proc.returncode}): "
                             f"{err.read().decode(errors='replace')[-2000:]}")
        return Run(elapsed, usage.ru_maxrss * 1024, out.read().decode(), written)


@dataclass
class ImageSet:
    """One scale's images: the five sharing a base, then the big one."""

    scale: float
    shared: List[Image] = field(default_factory=list)
    big: Optional[Image] = None

    @property
    def all(self) -> List[Image]:
        return [*self.shared, *([self.big] if self.big else [])]

    @staticmethod
    def ref(img: Image) -> str:
        return f"docker.io/{img.ref}"


def make_images(work: Path, registry: Registry, scale: float) -> ImageSet:
    factory = ImageFactory(work / "images")
    tag = f"s{scale:g}"
    plats = [AMD64, ARM64]
    s = ImageSet(scale)
    s.shared = [factory.image(f"library/shared-{i}", tag, platforms=plats,
                              base_size=int(SHARED_BASE * scale),
                              app_size=int(SHARED_APP * scale))
                for i in range(1, SHARED_COUNT + 1)]
    s.big = factory.image("library/big", tag, platforms=plats, base_size=int(BIG_BASE * scale))
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda img: push_image(img, registry.url), s.all))
    return s


def spec_text(registry: Registry, release: ReleaseServer, images: ImageSet) -> str:
    def table(name: str, refs: List[str]) -> str:
        return (f'[bundles.{name}]\nversion = "1.0.0"\narch = ["arm64"]\nk3s = "{K3S_VERSION}"\n'
                f'images = {json.dumps(refs)}\nmanifests = []\n')
    return "\n".join([
        f'[k3s]\nreleases = "{release.releases_url}"\n'
        f'install_script = "{release.install_script_url}"\n',
        f'[registries."docker.io"]\nendpoint = "{registry.url}"\n',
        table("bench", [images.ref(i) for i in images.all]),
        table("shared", [images.ref(i) for i in images.shared])])


class Project:
    """One scale: its spec folder, lock, and build helpers."""

    def __init__(self, work: Path, env: Dict[str, str], registry: Registry,
                 release: ReleaseServer, images: ImageSet) -> None:
        self.work, self.env, self.images = work, env, images
        self.dir = work / f"project-{images.scale:g}"
        self.dir.mkdir()
        (self.dir / "bundles.toml").write_text(spec_text(registry, release, images))
        self.bundle = [sys.executable, "-m", "bundler", "--spec",
                       str(self.dir / "bundles.toml"), "-q"]
        run([*self.bundle, "lock", "--cache", str(work / f"lock-cache-{images.scale:g}")],
            env, self.dir, "bundle lock")
        self.cache: Optional[Path] = None
        self.out: Optional[Path] = None
        self.count = 0

    def build(self, *, cold: bool, bundle: str = "bench") -> Tuple[Run, dict]:
        """``bundle build``. Cold: a new empty cache and output folder; warm: the previous
        build's cache and output folder again (the bundle is rebuilt over the old one)."""
        if cold or self.cache is None or self.out is None:
            for old in (self.cache, self.out):
                if old is not None:
                    shutil.rmtree(str(old), ignore_errors=True)
            self.count += 1
            self.cache = self.work / f"build-cache-{self.images.scale:g}-{self.count}"
            self.out = self.work / f"dist-{self.images.scale:g}-{self.count}"
        r = run([*self.bundle, "build", "--arch", "arm64", "--bundle", bundle, "--cache",
                 str(self.cache), "--out", str(self.out), "--json", "--unsigned"], self.env,
                self.dir,
                f"bundle build ({bundle})")
        return r, json.loads(r.stdout)["bundles"][0]

    def image_count(self, bundle_file: str) -> int:
        r = run([*self.bundle, "inspect", "--json", bundle_file], self.env, self.dir,
                "bundle inspect")
        return len(json.loads(r.stdout)["images"])


def skopeo_copy(host: str, img: Image, dest: str, env: Dict[str, str], cwd: Path) -> None:
    run(["skopeo", "copy", "-q", "--override-arch", "arm64", "--src-tls-verify=false",
         f"docker://{host}/{img.ref}", dest], env, cwd, f"skopeo copy {img.ref} -> {dest}")


def skopeo_oci(work: Path, host: str, images: List[Image], env: Dict[str, str],
               n: int) -> Tuple[float, float, int]:
    """The baseline: every image into one OCI layout folder, then one oci-archive tar.
    Returns (seconds, seconds to fsync the tar afterwards, archive size)."""
    layout, archive = work / f"oci-layout-{n}", work / f"oci-archive-{n}.tar"
    start = time.perf_counter()
    for img in images:
        skopeo_copy(host, img, f"oci:{layout}:{ImageSet.ref(img)}", env, work)
    run(["tar", "-C", str(layout), "-cf", str(archive), "."], env, work, "tar")
    elapsed = time.perf_counter() - start
    fd = os.open(str(archive), os.O_RDONLY)  # what `bundle build` pays for durability
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    sync = time.perf_counter() - start - elapsed
    size = archive.stat().st_size
    shutil.rmtree(str(layout), ignore_errors=True)
    archive.unlink()
    return elapsed, sync, size


def docker_archives(work: Path, host: str, images: List[Image],
                    env: Dict[str, str]) -> Dict[str, int]:
    """The usual per-image practice: one docker-archive tar per image; their sizes."""
    sizes = {}
    folder = work / "docker-archives"
    folder.mkdir()
    for n, img in enumerate(images):
        path = folder / f"img-{n}.tar"
        skopeo_copy(host, img, f"docker-archive:{path}:{ImageSet.ref(img)}", env, work)
        sizes[img.ref] = path.stat().st_size
    shutil.rmtree(str(folder), ignore_errors=True)
    return sizes


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def unique_bytes(images: ImageSet) -> int:
    """arm64 manifests, configs and layers, each distinct blob once."""
    unique = {d: img.sizes[d] for img in images.all
              for d in (img.manifests[ARM64], img.configs[ARM64], *img.layers[ARM64])}
    return sum(unique.values())


def phases(res: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(res.get("phases", {}).items()))


def main() -> None:
    scale = float(os.environ.get("BENCH_SCALE", "1"))
    big = float(os.environ.get("BENCH_BIG_SCALE", str(BIG)))
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    if shutil.which("skopeo") is None:
        raise SystemExit("skopeo is not installed (apt-get install skopeo)")
    load_before = os.getloadavg()[0]
    small = scale * QUARTER
    with bench_world("build-bench-") as (work, env, registry, release):
        t0 = time.perf_counter()
        sets = {s: make_images(work, registry, s) for s in (small, scale, big)}
        projects = {s: Project(work, env, registry, release, images)
                    for s, images in sets.items()}
        full_set, full = sets[scale], projects[scale]
        per_image = sum(i.platform_size(ARM64) for i in full_set.all)
        print(f"pushed 3 x 6 images (scales {small:g}, {scale:g}, {big:g}) and locked them in "
              f"{time.perf_counter() - t0:.1f} s (not timed); arm64 unique: " +
              ", ".join(f"{unique_bytes(i) / MB:.1f} MB at {s:g}" for s, i in sets.items()) +
              f"; {per_image / MB:.1f} MB counted per image at {scale:g}", flush=True)

        # Warm-up, not timed: the registry's files into the page cache, skopeo's binary too.
        skopeo_oci(work, registry.host, full_set.all, env, 0)

        colds: List[Tuple[Run, dict]] = []
        warms: List[Tuple[Run, dict]] = []
        skopeos: List[Tuple[float, float, int]] = []
        for n in range(1, repeat + 1):  # interleaved, so drift hits every figure alike
            skopeos.append(skopeo_oci(work, registry.host, full_set.all, env, n))
            colds.append(full.build(cold=True))
            if n == 1:
                held = full.image_count(colds[-1][1]["bundle"])
                if held != len(full_set.all):
                    raise SystemExit(f"the bundle holds {held} images, expected 6")
            warms.append(full.build(cold=False))
            print(f"  run {n}: skopeo {skopeos[-1][0]:.2f} s, cold build "
                  f"{colds[-1][0].seconds:.2f} s, warm rebuild {warms[-1][0].seconds:.2f} s",
                  flush=True)
        _, shared_res = full.build(cold=False, bundle="shared")  # its size only
        big_cold = projects[big].build(cold=True)
        big_warms = [projects[big].build(cold=False) for _ in range(repeat)]
        print(f"  scale {big:g}: cold build {big_cold[0].seconds:.2f} s, warm rebuilds "
              + ", ".join(f"{w[0].seconds:.2f}" for w in big_warms) + " s", flush=True)
        q_cold = projects[small].build(cold=True)
        dockers = docker_archives(work, registry.host, full_set.all, env)

    t_skopeo = statistics.median(s[0] for s in skopeos)
    t_sync = statistics.median(s[0] + s[1] for s in skopeos)
    t_cold = statistics.median(c[0].seconds for c in colds)
    t_warm = statistics.median(w[0].seconds for w in warms)
    t_big_warm = statistics.median(w[0].seconds for w in big_warms)
    t_big = big_cold[0].seconds
    warm_downloads = max(w[1]["downloads"] for w in warms + big_warms)
    cold_downloads = colds[-1][1]["downloads"]
    up_to_date = all(w[1].get("up_to_date") for w in warms + big_warms)
    size_all, size_shared = colds[-1][1]["size"], shared_res["size"]
    docker_shared = sum(dockers[i.ref] for i in full_set.shared)
    docker_all = sum(dockers.values())
    rss = {small: q_cold[0].maxrss, scale: max(c[0].maxrss for c in colds),
           big: big_cold[0].maxrss}
    rss_warm = max(w[0].maxrss for w in warms + big_warms)
    written = statistics.median(c[0].write_bytes for c in colds)
    r_written = written / unique_bytes(full_set)
    r_big_written = big_cold[0].write_bytes / unique_bytes(sets[big])

    r_cold, r_warm, r_big_warm = t_cold / t_skopeo, t_warm / t_cold, t_big_warm / t_big
    r_size_shared, r_size_all = size_shared / docker_shared, size_all / docker_all
    growth = rss[big] / rss[small]
    linear = t_big / t_cold
    lo, hi = TARGETS["linear"]

    def runs(xs: Iterable[float]) -> str:
        return "runs " + ", ".join(f"{x:.2f}" for x in xs)

    rows = [
        ("skopeo copy x6 -> OCI layout, tar (s)", f"{t_skopeo:.2f}", "baseline",
         runs(s[0] for s in skopeos)),
        ("cold bundle build (s)", f"{t_cold:.2f}", "", runs(c[0].seconds for c in colds)),
        ("cold build / skopeo", f"{r_cold:.2f}", "<= 0.7", verdict(r_cold <= TARGETS["cold"])),
        ("  cold build / (skopeo + fsync of its tar)", f"{t_cold / t_sync:.2f}", "(reported)",
         f"skopeo+fsync median {t_sync:.2f} s"),
        (f"warm rebuild, scale {scale:g} (s)", f"{t_warm:.2f}", "",
         runs(w[0].seconds for w in warms)),
        (f"  warm / cold, scale {scale:g}", f"{r_warm:.2f}", "(reported)", ""),
        (f"cold build, scale {big:g} (s)", f"{t_big:.2f}", "", ""),
        (f"warm rebuild, scale {big:g} (s)", f"{t_big_warm:.2f}", "",
         runs(w[0].seconds for w in big_warms)),
        (f"warm / cold, unchanged inputs, scale {big:g}", f"{r_big_warm:.2f}", "<= 0.15",
         verdict(r_big_warm <= TARGETS["warm"])),
        ("warm rebuilds left the bundle in place", "yes" if up_to_date else "no", "yes",
         verdict(up_to_date)),
        ("blob downloads, warm rebuilds", f"{warm_downloads}", "0",
         verdict(warm_downloads == 0) + f" (cold build: {cold_downloads})"),
        ("written by cold build / unique image bytes", f"{r_written:.3f}", "<= 2.05",
         verdict(r_written <= TARGETS["written"]) + f" ({written / MB:.1f} MB write_bytes vs "
         f"{unique_bytes(full_set) / MB:.1f} MB; scale {big:g}: {r_big_written:.3f})"),
        ("bundle size / docker-archives, 5 shared", f"{r_size_shared:.2f}", "<= 0.5",
         verdict(r_size_shared <= TARGETS["size"]) +
         f" ({size_shared / MB:.1f} MB vs {docker_shared / MB:.1f} MB)"),
        ("bundle size / docker-archives, all 6", f"{r_size_all:.2f}", "(reported)",
         f"{size_all / MB:.1f} MB vs {docker_all / MB:.1f} MB; skopeo oci-archive "
         f"{skopeos[-1][2] / MB:.1f} MB"),
        *[(f"peak RSS cold build, scale {s:g} (MB)", f"{rss[s] / MB:.1f}", "< 200",
           verdict(rss[s] < TARGETS["rss"])) for s in (small, scale, big)],
        (f"peak RSS growth, scale {small:g} -> {big:g}", f"{growth:.2f}x", "<= 1.2x",
         verdict(growth <= TARGETS["rss_growth"])),
        ("peak RSS warm rebuilds (MB)", f"{rss_warm / MB:.1f}", "(reported)", ""),
        (f"scale {big:g} cold / scale {scale:g} cold", f"{linear:.2f}",
         f"~{big / scale:g}", verdict(lo * big / scale <= linear <= hi * big / scale) +
         " (linear in bytes)"),
    ]
    print(f"\nbundle build benchmark: scale {scale:g} (5 images x {SHARED_BASE * scale / MB:g} "
          f"MB shared base + {SHARED_APP * scale / MB:g} MB own layer, 1 image x "
          f"{BIG_BASE * scale / MB:g} MB), also scales {small:g} and {big:g}, arch arm64, "
          f"median of {repeat}, {os.cpu_count()} CPUs, load average {load_before:.2f} before / "
          f"{os.getloadavg()[0]:.2f} after")
    print(f"{'figure':<44} {'value':>10}  {'target':<10}  result")
    for name, value, target, result in rows:
        print(f"{name:<44} {value:>10}  {target:<10}  {result}".rstrip())
    print("\nphase timings (s, from `--json` phases):")
    print(f"  cold, scale {scale:g} (median run): " +
          phases(sorted(colds, key=lambda c: c[0].seconds)[len(colds) // 2][1]))
    print(f"  warm, scale {scale:g}: {phases(warms[-1][1])}")
    print(f"  cold, scale {big:g}: {phases(big_cold[1])}")
    print(f"  warm, scale {big:g}: {phases(big_warms[-1][1])}")
    print(f"  cold, scale {small:g}: {phases(q_cold[1])}")


if __name__ == "__main__":
    main()
