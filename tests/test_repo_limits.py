"""Numbers on the repository command lines (issue 25 rows 10-12, THREATS 57): huge or
non-ASCII values end with exit 2 and a clear error, never a traceback, and nothing is written
(no orphan ring keys)."""

import os
from pathlib import Path

import pytest

from bundler.repo import ringops

from .bundles import KeyDir, default_spec, write_spec
from .test_rings_e2e import bundle

HUGE = "9" * 5000


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple:  # type: ignore[type-arg]
    base = tmp_path_factory.mktemp("limits")
    kd = KeyDir(base / "keys")
    (base / "b").mkdir()
    r = base / "repo"
    ringops.init_repo(r, kd.path)
    ringops.publish([write_spec(default_spec("1.0.0"), kd, base / "b")], directory=r,
                    keys_dir=kd.path, ring="canary")
    return r, kd.path


@pytest.mark.parametrize("flag", ["--ring-days", "--timestamp-days", "--snapshot-days"])
@pytest.mark.parametrize("value", ["100000000", HUGE, "3661"])
def test_huge_lifetimes_exit_2(repo: tuple, flag: str, value: str) -> None:  # type: ignore
    r, kd = repo
    before = sorted(os.listdir(r / "metadata"))
    p = bundle("repo", "refresh", r, "--keys", kd, flag, value)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert flag in p.stderr
    assert sorted(os.listdir(r / "metadata")) == before


@pytest.mark.parametrize("soak", [HUGE, "99999999999999d", "\u0665", "\u0665d", "5\u0665"])
def test_min_soak_ascii_digits_and_bounded(repo: tuple, soak: str) -> None:  # type: ignore
    r, kd = repo
    before = sorted(os.listdir(r / "metadata"))
    p = bundle("promote", "edge", "1.0.0", "--repo", r, "--from", "canary", "--to", "beta",
               "--keys", kd, "--min-soak", soak)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "duration" in p.stderr
    assert sorted(os.listdir(r / "metadata")) == before


def test_ring_keys_upper_limit_before_any_key_is_written(tmp_path: Path) -> None:
    kd = KeyDir(tmp_path / "keys")
    before = sorted(os.listdir(kd.path / "keys"))
    for spec in ("stable=1/100000", "stable=1/21", f"stable=1/{HUGE}", "stable=\u0661/3"):
        p = bundle("repo", "init", tmp_path / "repo", "--keys", kd.path, "--ring-keys", spec)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert sorted(os.listdir(kd.path / "keys")) == before
        assert not (tmp_path / "repo").exists()
    p = bundle("keys", "rotate", kd.path, "--role", "targets", "--keys", "100000")
    assert p.returncode == 2 and "at most 20 keys" in p.stderr
    assert sorted(os.listdir(kd.path / "keys")) == before
