"""``bundle fleet status`` on 10,000 synthetic signed device reports (issue #26).

Generates ``--devices`` x ``--per-device`` reports (default 2,500 x 4 = 10,000) in the format of
``installer/trust/devicereport.py``, each signed with its device's own Ed25519 key (rings
canary/beta/stable, a few devices failing their gate, a few stale), enrolls every device (not
timed), then times one ``python3 -m bundler fleet status --reports DIR --repo REPO --json`` child
process (stdout to a file) and reads its peak RSS from ``os.wait4`` (``ru_maxrss``, KiB on
Linux). Targets: under 10 s and under 200 MB. Prints the figures and PASS/MISS.

    python3 benchmarks/fleet_status.py
    python3 benchmarks/fleet_status.py --devices 10000 --per-device 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from installer.trust import devicekey, devicereport  # noqa: E402

RINGS = ("canary", "beta", "stable")


def _report(i: int, seq: int, now: int, per_device: int) -> tuple[str, bytes]:
    seed = hashlib.sha256(f"bench device {i}".encode()).digest()
    public = devicekey.public_key(seed)
    device_id = devicekey.fingerprint(public)
    ring = RINGS[0] if i % 20 == 0 else RINGS[1] if i % 5 == 0 else RINGS[2]
    version = "2.0.0" if ring == "canary" else "1.9.0"
    digest = hashlib.sha256(f"edge {version}".encode()).hexdigest()
    failing = i % 97 == 0 and seq == per_device
    when = now - (40 * 86400 if i % 53 == 0 else 600) - (per_device - seq) * 3600
    signed = {
        "device_id": device_id, "public_key": public.hex(), "hostname": f"edge-{i:05d}",
        "arch": "arm64" if i % 3 else "amd64", "ring": ring, "rollout_id": f"machine-{i}",
        "event": "gate-failed" if failing else "sync",
        "installed": {"name": "edge", "version": version, "digest": digest},
        "previous": {"name": "edge", "version": "1.8.0", "digest": "0" * 64},
        "gate": {"state": "failed" if failing else "passed", "name": "edge",
                 "version": version, "digest": digest, "at": when - 7200,
                 "output": "exit 1: etcd not ready" if failing else ""},
        "failed": [], "metadata": {r: {"version": 40 + seq, "expires": now + 30 * 86400}
                                   for r in ("timestamp", "snapshot", "targets", ring)},
        "last_sync": when, "free_bytes": 12 * 2 ** 30, "installer_version": "0.1.0",
        "time": when, "sequence": seq}
    return f"{device_id}-{seq}.json", devicereport.seal(signed, seed)


def generate(folder: Path, devices: int, per_device: int, now: int) -> int:
    folder.mkdir(parents=True)
    total = 0
    for i in range(devices):
        for seq in range(1, per_device + 1):
            name, data = _report(i, seq, now, per_device)
            (folder / name).write_bytes(data)
            total += len(data)
    return total


def run_measured(args: list[str], out: Path) -> tuple[float, int, float]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.monotonic()
    with open(out, "wb") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.PIPE, env=env, cwd=str(REPO))
        _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(args)} failed ({code}): {err}")
    return elapsed, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=2500)
    ap.add_argument("--per-device", type=int, default=4)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-fleet-", dir=os.environ.get("BENCH_DIR")))
    try:
        print(f"load average before: {os.getloadavg()}")
        now = int(time.time())
        t0 = time.monotonic()
        size = generate(base / "reports", args.devices, args.per_device, now)
        n = args.devices * args.per_device
        print(f"generated {n} signed reports ({size} bytes, {size // n} B each) in "
              f"{time.monotonic() - t0:.1f} s (backend {devicekey.backend()})")
        (base / "repo").mkdir()
        bundle = [sys.executable, "-m", "bundler"]
        run_measured(bundle + ["fleet", "enroll", "--reports", str(base / "reports"),
                               "--repo", str(base / "repo"), "--accept-new", "--json"],
                     base / "enroll.json")
        elapsed, rss, cpu = run_measured(
            bundle + ["fleet", "status", "--reports", str(base / "reports"), "--repo",
                      str(base / "repo"), "--json"], base / "status.json")
        doc = json.loads((base / "status.json").read_bytes())
        t = doc["totals"]
        assert t["devices"] == args.devices and t["accepted"] == n and t["rejected"] == 0, t
        print(f"status: {t['devices']} devices, {t['accepted']} reports accepted, "
              f"{t['failing']} failing, {t['stale']} stale")
        ok_time, ok_rss = elapsed < 10, rss < 200 * 10 ** 6
        print(f"bundle fleet status, {n} reports: {elapsed:.2f} s (target < 10 s) "
              f"{'PASS' if ok_time else 'MISS'}; peak RSS {rss / 10 ** 6:.1f} MB "
              f"(target < 200 MB) {'PASS' if ok_rss else 'MISS'}; CPU (user+sys) {cpu:.2f} s")
        print(f"load average after: {os.getloadavg()}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
