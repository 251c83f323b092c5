"""``bundle repo status --check`` and ``airgap-install status --check`` (issue 23 item 8):
exit 10 naming every role that has expired or expires within ``--warn-days``."""

import json
import time
from pathlib import Path

import pytest

from bundler.repo import repostatus, ringops
from installer.errors import ExpiryCheckFailed

from .bundles import KeyDir, cli, default_spec, write_spec
from .test_rings_e2e import bundle, do_sync

DAY = 86400


def test_repo_status_check_names_expiring_and_expired_roles(tmp_path: Path) -> None:
    kd = KeyDir(tmp_path / "keys")
    r = tmp_path / "repo"
    ringops.init_repo(r, kd.path, lifetimes=ringops.Lifetimes(timestamp_days=3))
    p = bundle("repo", "status", r, "--check")
    assert p.returncode == 10, p.stdout + p.stderr
    assert "1 role(s)" in p.stderr and "timestamp v1 expires" in p.stderr
    assert "roles:" in p.stdout  # the report is still printed
    p = bundle("repo", "status", r, "--check", "--json")
    assert p.returncode == 10 and json.loads(p.stdout)["error"]["code"] == 10
    assert bundle("repo", "status", r, "--check", "--warn-days", "2").returncode == 0
    assert bundle("repo", "status", r).returncode == 0  # without --check: a report only
    report = repostatus.status(r, now=int(time.time()) + 100 * DAY, warn_days=0)
    with pytest.raises(ExpiryCheckFailed, match="timestamp v1 EXPIRED.*snapshot v1 EXPIRED"):
        repostatus.expiry_check(report)


def test_device_status_check(tmp_path: Path) -> None:
    kd = KeyDir(tmp_path / "keys")
    (tmp_path / "b").mkdir()
    r = tmp_path / "repo"
    lt = ringops.Lifetimes(timestamp_days=3)
    ringops.init_repo(r, kd.path, lifetimes=lt)
    ringops.publish([write_spec(default_spec("1.0.0"), kd, tmp_path / "b")], directory=r,
                    keys_dir=kd.path, ring="canary", lifetimes=lt)
    dev = tmp_path / "dev"
    assert cli("trust", r / "metadata" / "1.root.json", "--root", dev, "--ring",
               "canary").returncode == 0
    assert do_sync(dev, r, "--server", "--skip-start", "--health-cmd", "true").returncode == 0
    p = cli("status", "--root", dev, "--check")
    assert p.returncode == 10 and "timestamp v2 expires" in p.stderr, p.stdout + p.stderr
    p = cli("status", "--root", dev, "--check", "--json")
    assert p.returncode == 10 and json.loads(p.stdout)["error"]["kind"] == "ExpiryCheckFailed"
    assert cli("status", "--root", dev, "--check", "--warn-days", "2").returncode == 0
    assert cli("status", "--root", dev, "--check", "--warn-days", "\u0665").returncode == 2
