"""The fast inner loop (`python3 -m pytest -m "not world and not slow"`, README "Developing")
keeps selecting at least 40 % of the suite; `world` and `slow` are registered markers."""

import subprocess
import sys
import tomllib

from tests.paths import REPO


def _collected(*marker: str) -> int:
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                        "-p", "no:cacheprovider", *marker], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    last = p.stdout.strip().splitlines()[-1]  # "N tests collected" / "N/M tests collected"
    return int(last.split()[0].split("/")[0])


def test_inner_loop_selects_at_least_40_percent() -> None:
    fast, everything = _collected("-m", "not world and not slow"), _collected()
    assert fast >= 0.4 * everything, (fast, everything)


def test_markers_are_registered() -> None:
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    names = {m.split(":")[0] for m in doc["tool"]["pytest"]["ini_options"]["markers"]}
    assert {"world", "slow"} <= names
