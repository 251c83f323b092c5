"""Installing a bundle of thousands of small members (issue #24 "also seen": 4,000 one-byte
members took 51 s, 13 ms each, two disk flushes per member in staging and per placed file).
Not a timed test: the number of disk flushes must not grow with the number of members
(``fsio.batched_fsync``), and the installer's CPU time per member must not grow with it
either (linear, not quadratic). ``benchmarks/many_members.py`` measures the wall time."""

import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from installer.commands import install
from installer.host.layout import Layout
from installer.host.options import Given
from tests.bundles import REPO, KeyDir, default_spec, write_spec


def _bundle(base: Path, keys: KeyDir, n: int) -> Path:
    spec = default_spec("1.0.0")
    spec.manifests = {f"m{i:05d}.yaml": bytes([65 + i % 26]) for i in range(n)}
    folder = base / f"b{n}"
    folder.mkdir()
    return write_spec(spec, keys, folder)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("many") / "keys")


def test_disk_flushes_do_not_grow_with_the_members(tmp_path: Path, keys: KeyDir,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls: List[str] = []
    real_fsync, real_sync = os.fsync, os.sync

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def sync() -> None:
        calls.append("sync")
        real_sync()

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "sync", sync)
    counts: Dict[int, int] = {}
    for n in (40, 400):
        layout = Layout(str(tmp_path / f"root{n}"))
        install.trust_root(layout, str(keys.root_json))
        calls.clear()
        install.install(layout, install.InstallRequest(
            source=str(_bundle(tmp_path, keys, n)), given=Given(role="server",
                                                                skip_start=True)))
        counts[n] = len(calls)
    assert counts[400] - counts[40] < 20, counts  # was about 3 per member


def _cpu_of_install(bundle: Path, keys: KeyDir, root: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = [sys.executable, "-m", "installer"]
    subprocess.run(run + ["trust", str(keys.root_json), "--root", str(root)], env=env,
                   check=True, capture_output=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(run + ["install", str(bundle), "--root", str(root), "--server",
                          "--skip-start", "-q"], env=env, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.mark.slow
def test_cpu_per_member_is_not_quadratic(tmp_path: Path, keys: KeyDir) -> None:
    small, large = 250, 2000
    cpu = {n: _cpu_of_install(_bundle(tmp_path, keys, n), keys, tmp_path / f"r{n}")
           for n in (small, large)}
    ratio = (cpu[large] / large) / (cpu[small] / small)
    assert ratio < 2.0, (cpu, ratio)  # quadratic would be ~8
