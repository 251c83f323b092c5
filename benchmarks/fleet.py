"""Benchmark: N devices syncing one ring concurrently, from one registry and from one folder.

    python3 benchmarks/fleet.py                 # 50 devices per source
    python3 benchmarks/fleet.py --devices 10 --payload-mib 1

A ring repository is made with the real `bundle repo init` / `bundle publish` (a signed bundle
carrying a ``--payload-mib`` pseudo-random images member), the version is promoted canary ->
stable with `bundle promote`, and the repository is pushed with `bundle repo push` to a real
``docker-registry`` on 127.0.0.1 behind the test world's logging proxy (which counts every
response byte). Then N device roots (each trusting the repository's root, ring ``stable``) run
`airgap-install sync --source oci://...` at once; then N more run it from the folder. Every
device must end on the promoted version with `airgap-install status --verify` clean.

Prints per source: wall time for all N, bytes served per device (registry: measured at the
proxy; folder: the sizes of the files a device reads, not metered), and the check.

Then the v1 -> v2 round (issue #27): the bundle carries ten image archives (``--payload-mib``
split evenly); v2 changes one of them. v2 is published to canary (with its delta from v1,
`bundle publish`'s default ``--deltas 2``), promoted to stable (the delta goes along), pushed
again, and the N registry devices sync at once. Prints the wall time, the bytes served per
device measured at the proxy, and the target ``<= changed bytes + 1 % of the full bundle +
64 KiB``.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bundles import KeyDir, default_spec, write_spec  # noqa: E402

from installer.format import bundlefmt  # noqa: E402
from tests.world.faultproxy import FaultProxy  # noqa: E402
from tests.world.registry import Registry  # noqa: E402

VERSION = "1.0.0"
VERSION2 = "2.0.0"
IMAGES = 10
SYNC = ("--arch", "amd64", "--server", "--skip-start", "--health-cmd", "true", "--json")


def run(*cmd: object, env: Dict[str, str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, *map(str, cmd)], env=env, capture_output=True,
                          text=True, timeout=1800)


def ok(p: "subprocess.CompletedProcess[str]") -> str:
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(p.args)}\n{p.stdout}{p.stderr}")
    return p.stdout


def device(root: Path, source: str, trust: Path, env: Dict[str, str]) -> Dict[str, object]:
    ok(run("-m", "installer", "trust", trust, "--root", root, "--ring", "stable", "-q", env=env))
    ok(run("-m", "installer", "sync", "--source", source, "--root", root, "-q", *SYNC, env=env))
    st = json.loads(ok(run("-m", "installer", "status", "--root", root, "--verify", "--json",
                           env=env)))
    return {"version": (st.get("installed") or {}).get("version")}


def fleet(name: str, source: str, n: int, work: Path, trust: Path,
          env: Dict[str, str]) -> List[Dict[str, object]]:
    roots = [work / f"{name}-{i:03d}" for i in range(n)]
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda r: device(r, source, trust, env), roots))


def update_round(spec: Any, rnd: random.Random, *, keys: KeyDir, repo: Path, b1: Path,
                 url: str, src: str, proxy: FaultProxy, n: int, work: Path, trust: Path,
                 env: Dict[str, str]) -> None:
    """v1 -> v2 with one of the ten images changed, on the N registry devices."""
    spec.version = VERSION2
    old = spec.images["img-07.tar"]
    spec.images["img-07.tar"] = rnd.randbytes(len(old))
    (work / "b2").mkdir()
    b2 = write_spec(spec, keys, work / "b2")
    ok(run("-m", "bundler", "publish", b2, "--repo", repo, "--ring", "canary",
           "--keys", keys.path, env=env))
    ok(run("-m", "bundler", "promote", spec.name, VERSION2, "--from", "canary", "--to",
           "stable", "--repo", repo, "--keys", keys.path, env=env))
    ok(run("-m", "bundler", "repo", "push", repo, url, env=env))
    manifests = []
    for path in (b1, b2):
        with open(path, "rb") as f:
            manifests.append(bundlefmt.BundleReader(f).header().manifest)
    have = {m.sha256 for m in manifests[0].members}
    changed = sum(m.size for m in manifests[1].members if m.sha256 not in have)
    full = b2.stat().st_size
    limit = changed + full // 100 + 64 * 1024
    deltas = sorted((repo / "targets").glob("*.delta.tar"))
    print(f"v1 -> v2: one of {IMAGES} images changed; full v2 bundle {full} B, delta "
          f"{deltas[0].stat().st_size if deltas else 0} B, changed bytes {changed} B")
    proxy.clear_log()
    roots = [work / f"registry-{i:03d}" for i in range(n)]

    def update(root: Path) -> Optional[str]:
        ok(run("-m", "installer", "sync", "--source", src, "--root", root, "-q", *SYNC,
               env=env))
        st = json.loads(ok(run("-m", "installer", "status", "--root", root, "--verify",
                               "--json", env=env)))
        return str((st.get("installed") or {}).get("version"))

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        versions = list(pool.map(update, roots))
    took = time.perf_counter() - start
    per = sum(e.body_bytes for e in proxy.log) // n
    good = versions.count(VERSION2)
    print(f"v1 -> v2 over the registry: {n} devices in {took:.1f} s; {per} B served per "
          f"device (measured at the proxy; {100 * per / full:.1f}% of the full bundle); "
          f"target <= changed + 1% + 64 KiB = {limit} B: {'MET' if per <= limit else 'NOT MET'}"
          f"; {good}/{n} on {VERSION2} with status --verify clean")
    if good != n:
        raise SystemExit(f"v1 -> v2: {n - good} devices did not end on {VERSION2}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--payload-mib", type=float, default=10.0,
                    help="total of the ten image archives")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-", dir=os.environ.get("BENCH_DIR")))
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(NO_PROXY="127.0.0.1,localhost", PYTHONPATH=str(REPO),
               XDG_CACHE_HOME=str(work / "xdg"))
    registry = proxy = None
    try:
        keys = KeyDir(work / "keys")
        repo = work / "ring-repo"
        ok(run("-m", "bundler", "repo", "init", repo, "--keys", keys.path, env=env))
        (work / "b").mkdir()
        rnd = random.Random(7)
        spec = default_spec(VERSION)
        each = int(args.payload_mib * (1 << 20)) // IMAGES
        for i in range(IMAGES):
            spec.images[f"img-{i:02d}.tar"] = rnd.randbytes(each)
        b = write_spec(spec, keys, work / "b")
        ok(run("-m", "bundler", "publish", b, "--repo", repo, "--ring", "canary",
               "--keys", keys.path, env=env))
        ok(run("-m", "bundler", "promote", spec.name, VERSION, "--from", "canary", "--to",
               "stable", "--repo", repo, "--keys", keys.path, env=env))
        files = [p for p in repo.rglob("*") if p.is_file()]
        registry = Registry(work / "registry").start()
        proxy = FaultProxy(registry.url).start()
        url = f"oci://{registry.host}/edge/ring"
        push = json.loads(ok(run("-m", "bundler", "repo", "push", repo, url, "--json",
                                 env=env)))
        src = f"oci://{proxy.url.split('://', 1)[1]}/edge/ring"
        trust = repo / "metadata" / "1.root.json"
        print(f"bundle {b.stat().st_size} B; ring repository {len(files)} files, "
              f"{sum(p.stat().st_size for p in files)} B; pushed {push['bytes_pushed']} B")
        for name, source in (("registry", src), ("folder", str(repo))):
            proxy.clear_log()
            start = time.perf_counter()
            results = fleet(name, source, args.devices, work, trust, env)
            took = time.perf_counter() - start
            good = sum(1 for r in results if r["version"] == VERSION)
            served = sum(e.body_bytes for e in proxy.log) if name == "registry" else None
            per = f"{served // args.devices} B served per device (measured at the proxy)" \
                if served is not None else "read from the folder (not metered)"
            print(f"{name}: {args.devices} devices in {took:.1f} s; {per}; "
                  f"{good}/{args.devices} on {VERSION} with status --verify clean")
            if good != args.devices:
                raise SystemExit(f"{name}: {args.devices - good} devices did not end on "
                                 f"{VERSION}")
        update_round(spec, rnd, keys=keys, repo=repo, b1=b, url=url, src=src, proxy=proxy,
                     n=args.devices, work=work, trust=trust, env=env)
    finally:
        for server in (proxy, registry):
            if server is not None:
                server.stop()
        shutil.rmtree(str(work), ignore_errors=True)


if __name__ == "__main__":
    main()
