"""Benchmark: `bundle lock` of 40 two-arch images vs a loop of `skopeo inspect --raw` calls.

    python3 benchmarks/lock.py                              # 40 images x (amd64, arm64), 3 runs
    BENCH_IMAGES=10 BENCH_REPEAT=1 python3 benchmarks/lock.py   # quicker
    BENCH_SKOPEO_JOBS=8 python3 benchmarks/lock.py          # also time a parallel skopeo loop

Starts its own pieces of the test world in a temp folder (a real ``docker-registry`` and the
static K3s release server, both on 127.0.0.1), pushes BENCH_IMAGES distinct small multi-arch
images (linux/amd64 + linux/arm64; not timed), then times, BENCH_REPEAT times each (median):

- baseline: the same lookups `bundle lock` makes for the images, one `skopeo` process per
  request: for each image ``skopeo inspect --raw`` of the tag (the index), then for amd64 and
  arm64 ``skopeo inspect --raw`` of the platform manifest by digest and
  ``skopeo inspect --config --raw`` of it (the config blob);
- ``bundle lock`` (``python3 -m bundler lock``, a fresh ``--cache`` and no previous lock each
  run) of a spec with the images, no charts, ``manifests = []``, and its K3s part pointed at
  the release server (install.sh, ``sha256sum-<arch>.txt``, binary and airgap tarball per arch);
- the same ``bundle lock`` of a spec with no images: the fixed part (interpreter start-up,
  K3s resolution, discovery gate, writing the lock), reported so the image part can be read.

Prints the median seconds of each, the ratio skopeo / bundle lock (target >= 3), and the ratio
against the image part alone (bundle lock minus the no-image lock; no target). Every run's
result is checked: the lock must pin each image's index, platform manifest and config digests
as pushed, and the skopeo loop must see the same digests.
"""

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_world import bench_world  # noqa: E402
from tests.world.images import AMD64, ARM64, Image, ImageFactory, push_image  # noqa: E402
from tests.world.k3s import K3S_VERSION  # noqa: E402
from tests.world.registry import Registry  # noqa: E402
from tests.world.release import ReleaseServer  # noqa: E402

ARCHES = {"amd64": AMD64, "arm64": ARM64}
TARGET_RATIO = 3.0




def push_images(factory: ImageFactory, registry: Registry, count: int) -> List[Image]:
    images = [factory.image(f"library/lockbench-{i:03d}", "1.0", platforms=list(ARCHES.values()))
              for i in range(count)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda img: push_image(img, registry.url), images))
    return images


def spec_text(registry: Registry, release: ReleaseServer, refs: List[str]) -> str:
    images = ", ".join(json.dumps(r) for r in refs)
    return (f'[k3s]\nreleases = "{release.releases_url}"\n'
            f'install_script = "{release.install_script_url}"\n\n'
            f'[registries."docker.io"]\nendpoint = "{registry.url}"\n\n'
            f'[bundles.bench]\nversion = "1.0.0"\narch = ["amd64", "arm64"]\n'
            f'k3s = "{K3S_VERSION}"\nimages = [{images}]\nmanifests = []\n'
            f'k3s_airgap_images = true\n')


def skopeo(args: List[str], env: Dict[str, str]) -> bytes:
    p = subprocess.run(["skopeo", *args], env=env, capture_output=True)
    if p.returncode != 0:
        raise SystemExit(f"skopeo {' '.join(args)} failed: {p.stderr.decode()[:500]}")
    return p.stdout


def skopeo_one(host: str, img: Image, env: Dict[str, str]) -> Dict[str, Tuple[str, str]]:
    """The lookups `bundle lock` makes for one image, as skopeo calls; returns
    arch -> (platform manifest digest, config digest), checked against the pushed image."""
    base = f"docker://{host}/{img.repository}"
    tls = "--tls-verify=false"
    raw = skopeo(["inspect", tls, "--raw", f"{base}:{img.tag}"], env)
    if "sha256:" + hashlib.sha256(raw).hexdigest() != img.digest:
        raise SystemExit(f"skopeo: index of {img.ref} has an unexpected digest")
    index = json.loads(raw)
    out = {}
    for arch, platform in ARCHES.items():
        os_, cpu = platform.split("/")
        desc = next(d for d in index["manifests"]
                    if d["platform"]["os"] == os_ and d["platform"]["architecture"] == cpu)
        ref = f"{base}@{desc['digest']}"
        manifest = skopeo(["inspect", tls, "--raw", ref], env)
        config = skopeo(["inspect", tls, "--config", "--raw", ref], env)
        config_digest = json.loads(manifest)["config"]["digest"]
        if "sha256:" + hashlib.sha256(config).hexdigest() != config_digest:
            raise SystemExit(f"skopeo: config of {img.ref} ({arch}) has an unexpected digest")
        out[arch] = (desc["digest"], config_digest)
    return out


def skopeo_loop(host: str, images: List[Image], env: Dict[str, str], jobs: int = 1) -> float:
    start = time.perf_counter()
    if jobs == 1:
        results = [skopeo_one(host, img, env) for img in images]
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(lambda img: skopeo_one(host, img, env), images))
    elapsed = time.perf_counter() - start
    for img, got in zip(images, results, strict=True):
        for arch, platform in ARCHES.items():
            if got[arch] != (img.manifests[platform], img.configs[platform]):
                raise SystemExit(f"skopeo: {img.ref} ({arch}) digests differ from the push")
    return elapsed


def bundle_lock(project: Path, work: Path, env: Dict[str, str], run: int,
                images: List[Image]) -> float:
    lock_file = project / "bundles.lock"
    lock_file.unlink(missing_ok=True)  # no previous pins: everything is resolved
    cache = work / f"cache-{project.name}-{run}"
    cmd = [sys.executable, "-m", "bundler", "--spec", str(project / "bundles.toml"), "-q",
           "lock", "--cache", str(cache), "--json"]
    start = time.perf_counter()
    p = subprocess.run(cmd, cwd=str(project), env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"bundle lock failed ({p.returncode}): {p.stderr[-2000:]}")
    check_lock(json.loads(lock_file.read_text()), images)
    shutil.rmtree(str(cache), ignore_errors=True)
    return elapsed


def check_lock(lock: dict, images: List[Image]) -> None:
    """The lock pins what was pushed (so the timed run did the whole job)."""
    locked = {i["ref"]: i for i in lock["bundles"]["bench"]["images"]}
    if len(locked) != len(images):
        raise SystemExit(f"lock has {len(locked)} images, expected {len(images)}")
    for img in images:
        entry = locked[f"docker.io/{img.ref}"]
        assert entry["digest"] == img.digest, entry
        for arch, platform in ARCHES.items():
            pl = entry["platforms"][arch]
            assert (pl["digest"], pl["config"]) == (img.manifests[platform],
                                                    img.configs[platform]), pl
    k3s = lock["bundles"]["bench"]["k3s"]
    assert set(k3s["binaries"]) == set(ARCHES) and set(k3s["airgap_images"]) == set(ARCHES)


def median_of(repeat: int, fn: Callable[[int], float]) -> Tuple[float, List[float]]:
    runs = [fn(i) for i in range(repeat)]
    return statistics.median(runs), runs


def main() -> None:
    count = int(os.environ.get("BENCH_IMAGES", "40"))
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    skopeo_jobs = int(os.environ.get("BENCH_SKOPEO_JOBS", "0"))
    if shutil.which("skopeo") is None:
        raise SystemExit("skopeo is not installed (apt-get install skopeo)")
    load_before = os.getloadavg()[0]
    with bench_world("lock-bench-") as (work, env, registry, release):
        t0 = time.perf_counter()
        images = push_images(ImageFactory(work / "images"), registry, count)
        print(f"pushed {count} images x {len(ARCHES)} arches to {registry.url} "
              f"in {time.perf_counter() - t0:.1f} s (not timed)", flush=True)

        full, empty = work / "full", work / "empty"
        for project, refs in ((full, [f"docker.io/{i.ref}" for i in images]), (empty, [])):
            project.mkdir()
            (project / "bundles.toml").write_text(spec_text(registry, release, refs))

        # One untimed pass of each, so disk and page-cache state is the same for all runs.
        skopeo_loop(registry.host, images[:2], env)
        bundle_lock(full, work, env, -1, images)

        t_skopeo, r_skopeo = median_of(repeat, lambda _: skopeo_loop(registry.host, images,
                                                                      env))
        t_par = r_par = None
        if skopeo_jobs > 1:
            t_par, r_par = median_of(repeat, lambda _: skopeo_loop(registry.host, images, env,
                                                                    skopeo_jobs))
        t_lock, r_lock = median_of(repeat, lambda i: bundle_lock(full, work, env, i, images))
        t_fixed, r_fixed = median_of(repeat, lambda i: bundle_lock(empty, work, env, i, []))

    calls = count * (1 + 2 * len(ARCHES))
    t_images = max(t_lock - t_fixed, 1e-3)  # only meaningful when clearly above noise
    ratio = t_skopeo / t_lock

    def runs(r: List[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in r)

    print(f"\nbundle lock benchmark: {count} images x {len(ARCHES)} arches "
          f"(amd64, arm64), median of {repeat} run(s), {os.cpu_count()} CPUs, load average "
          f"{load_before:.2f} before / {os.getloadavg()[0]:.2f} after")
    print(f"{'measurement':<44} {'median s':>9}   runs")
    print(f"{'skopeo loop (' + str(calls) + ' skopeo calls, serial)':<44} {t_skopeo:>9.2f}"
          f"   {runs(r_skopeo)}")
    if t_par is not None and r_par is not None:
        print(f"{'skopeo loop (' + str(skopeo_jobs) + ' images in parallel)':<44} "
              f"{t_par:>9.2f}   {runs(r_par)}")
    print(f"{'bundle lock (images + K3s)':<44} {t_lock:>9.2f}   {runs(r_lock)}")
    print(f"{'bundle lock, no images (start-up + K3s)':<44} {t_fixed:>9.2f}   {runs(r_fixed)}")
    print(f"{'  => image part (difference)':<44} {t_images:>9.2f}")
    print()
    verdict = "PASS" if ratio >= TARGET_RATIO else "MISS"
    print(f"speed-up skopeo loop / bundle lock:      {ratio:6.2f}x  "
          f"(target >= {TARGET_RATIO:.0f}x)  {verdict}")
    if t_lock - t_fixed > 0.05:
        print(f"speed-up skopeo loop / image part:       {t_skopeo / t_images:6.2f}x  "
              f"(no target: K3s and start-up removed)")
    else:
        print("speed-up skopeo loop / image part:       n/a (image part within noise)")
    if t_par is not None:
        print(f"speed-up parallel skopeo / bundle lock:  {t_par / t_lock:6.2f}x  (no target)")


if __name__ == "__main__":
    main()
