"""Benchmark: one Ed25519 verification per backend of ``installer.trust.ed25519``, as a ratio.

    python3 benchmarks/ed25519.py                 # 9 runs per backend (median)
    BENCH_REPEAT=31 python3 benchmarks/ed25519.py

Verifies RFC 8032's TEST 1024 (a 1023-byte message) through ``installer.trust.ed25519.verify`` with
each backend (cryptography, openssl, python) and, as the baseline measured in the same run,
``cryptography``'s own ``Ed25519PublicKey.verify`` called directly (no pre-check, no backend
choice). Prints the median milliseconds of each and its ratio to the baseline. Every run's
result is checked (the signature must verify). Moved here from tests/test_ed25519.py, where it
was a test that asserted nothing.
"""

import functools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: E402

from installer.trust import ed25519  # noqa: E402
from tests.test_ed25519 import _MSG_1024, RFC8032  # noqa: E402


def _median(fn: Callable[[], bool], runs: int) -> float:
    samples: List[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        ok = fn()
        samples.append(time.perf_counter() - start)
        if not ok:
            raise SystemExit("the RFC 8032 TEST 1024 signature did not verify")
    return statistics.median(samples)


def main() -> int:
    runs = int(os.environ.get("BENCH_REPEAT", "9"))
    message = bytes.fromhex(_MSG_1024)
    pub, sig = bytes.fromhex(RFC8032[3].public), bytes.fromhex(RFC8032[3].signature)
    key = Ed25519PublicKey.from_public_bytes(pub)

    def baseline() -> bool:
        key.verify(sig, message)  # raises InvalidSignature on failure
        return True

    base = _median(baseline, runs)
    print(f"Ed25519 verification, 1023-byte message, median of {runs}:")
    print(f"  {'baseline':<14} {base * 1000:9.3f} ms  (cryptography's verify, called directly)")
    for backend in ed25519.available_backends():
        median = _median(functools.partial(ed25519.verify, pub, sig, message, backend), runs)
        print(f"  {backend:<14} {median * 1000:9.3f} ms  ratio {median / base:8.1f} x baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
