"""The device clock, through the real CLI: THREATS.md line 18.

The clock is an input of the installer: here each run gets its own (``time.time`` is set in
the child process before ``installer.cli.main`` runs), everything else is real: keys made
with ``bundler.keys`` at chosen times, signed bundles, the persisted state.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from bundler import keys
from tests.bundles import REPO, KeyDir, default_spec, tree, write_spec

DAY = 86400
T0 = 1_780_000_000           # 2026-05-28: when the key directory is made
YEAR_2200 = 7_258_118_400

_RUN = ("import sys, time; t = float(sys.argv[1]); time.time = lambda: t; "
        "from installer.cli import main; sys.exit(main(sys.argv[2:]))")


def at(clock: int, *args: object) -> "subprocess.CompletedProcess[str]":
    """``airgap-install ARGS`` on a device whose clock reads ``clock``."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("AIRGAP_INSTALL_FAILPOINT", None)
    return subprocess.run([sys.executable, "-c", _RUN, str(clock)] + [str(a) for a in args],
                          env=env, cwd=str(REPO), capture_output=True, text=True, timeout=120)


class _Keys(KeyDir):
    """A key directory made by the test itself (at a chosen time)."""

    def __init__(self, path: Path) -> None:  # noqa: D107 - no init_keys here
        self.path = path


def _ratchet(root: Path) -> int:
    return json.loads(at(T0, "status", "--root", root, "--json").stdout)["time_ratchet"]


def test_threat18_clock_at_1970_uses_the_ratchet_and_far_future_is_refused(
        tmp_path: Path) -> None:
    k = tmp_path / "keys"
    keys.init_keys(k, now=T0, expires_days=365)            # root v1 valid to T0 + 365 d
    kd = _Keys(k)
    signed_at = T0 + 30 * DAY
    first = write_spec(default_spec("1.0.0", created=signed_at), kd, tmp_path)
    older = write_spec(default_spec("1.0.1", created=T0 + 10 * DAY), kd, tmp_path)
    later = write_spec(default_spec("1.0.2", created=signed_at), kd, tmp_path)
    keys.rotate(k, role="timestamp", now=T0, expires_days=1)  # root v2 expired at T0 + 1 d
    stale = write_spec(default_spec("1.1.0", created=T0), kd, tmp_path)
    root = tmp_path / "root"
    assert at(signed_at, "trust", kd.root_json.parent / "roots/1.root.json",
              "--root", root).returncode == 0
    r = at(signed_at, "install", first, "--root", root, "--server", "--skip-start")
    assert r.returncode == 0, r.stderr
    assert _ratchet(root) == signed_at

    # clock reset to 1970: the ratchet is the time used; a bundle signed earlier still installs
    r = at(0, "install", older, "--root", root, "--skip-start")
    assert r.returncode == 0, r.stderr
    assert _ratchet(root) == signed_at  # never moves back
    # ... and a root that expired before the ratchet is refused, though at 1970 it is "valid"
    before = tree(root)
    r = at(0, "install", stale, "--root", root, "--skip-start")
    assert r.returncode == 3, r.stderr
    assert "root v2 expired" in r.stderr, r.stderr
    assert tree(root) == before

    # clock far in the future: the pinned root has expired; a clear error, no state change
    r = at(YEAR_2200, "install", later, "--root", root, "--skip-start")
    assert r.returncode == 3, r.stderr
    assert "expired" in r.stderr and "2200" in r.stderr and "Traceback" not in r.stderr
    assert tree(root) == before
