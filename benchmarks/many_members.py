"""Benchmark: the per-member cost of `airgap-install install` (issue #24: a validly signed
manifest of 4,000 one-byte members took 51 s, 13 ms per member; target: under 5 s).

    python3 benchmarks/many_members.py            # 500 and 4000 members
    AIRGAP_BENCH_MEMBERS=8000 python3 benchmarks/many_members.py

Builds two signed bundles whose payload is N one-byte manifests (plus the usual binary,
install.sh, two image archives and a chart), installs each with
``python3 -m installer install BUNDLE --root TMP --server --skip-start`` as a child process,
and prints the wall time, the time per member and the ratio of the per-member costs (large /
small: about 1 when the cost is linear, growing with N if it were quadratic).

Where the time went (cProfile, before the fix): two fsyncs per member in staging and per
placed file (~12,000 disk flushes); now ``fsio.batched_fsync`` does one sync for the batch.
Then canonical JSON of the state and journal (each target encoded twice) and the chroot
resolver's path joins.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.bundles import KeyDir, default_spec, write_spec  # noqa: E402


def _bundle(base: Path, keys: KeyDir, n: int) -> Path:
    spec = default_spec("1.0.0")
    spec.manifests = {f"m{i:05d}.yaml": bytes([65 + i % 26]) for i in range(n)}
    folder = base / str(n)
    folder.mkdir()
    return write_spec(spec, keys, folder)


def _install(bundle: Path, keys: KeyDir, root: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = [sys.executable, "-m", "installer"]
    subprocess.run(run + ["trust", str(keys.root_json), "--root", str(root)], env=env,
                   check=True, capture_output=True)
    start = time.monotonic()
    subprocess.run(run + ["install", str(bundle), "--root", str(root), "--server",
                          "--skip-start", "-q"], env=env, check=True, capture_output=True)
    return time.monotonic() - start


def main() -> None:
    large = int(os.environ.get("AIRGAP_BENCH_MEMBERS", "4000"))
    small = max(1, large // 8)
    with tempfile.TemporaryDirectory(prefix="bench-members-") as tmp:
        base = Path(tmp)
        keys = KeyDir(base / "keys")
        times = {}
        for n in (small, large):
            times[n] = _install(_bundle(base, keys, n), keys, base / f"root-{n}")
            print(f"{n:6d} members: {times[n]:6.2f} s, {1000 * times[n] / n:6.2f} ms per member")
        ratio = (times[large] / large) / (times[small] / small)
        print(f"per-member cost ratio {large}/{small}: {ratio:.2f} (1 = linear); "
              f"{large} members in {times[large]:.2f} s (target < 5 s)")


if __name__ == "__main__":
    main()
