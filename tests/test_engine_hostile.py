"""`docker-daemon:` images from a hostile Docker engine (``tests.world.fakeengine``, the Engine
API on 127.0.0.1): giant GNU long-name and pax headers, unreferenced members, a drip, a total
over the cap, an endless inspect answer. THREATS 55, issue 25 rows 4-6. `bundle lock` runs as a
child under RLIMIT_AS (2 GiB), a file-size and a CPU limit; exit code, message, time, peak RSS
and what the cache keeps are asserted."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Iterator

import pytest

from tests.cli_helpers import Outcome, bundle_child
from tests.world.fakeengine import FakeEngine, drip, endless, giant_header, good_export
from tests.world.hostile import HostileUpstream

MAX_RSS_MB = 512
IMAGE = "docker-daemon:docker.io/local/app:1"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileUpstream]:
    with HostileUpstream(tmp_path_factory.mktemp("engine-hostile-tls")) as up:
        yield up


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    with FakeEngine() as e:
        yield e


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))
    resource.setrlimit(resource.RLIMIT_CPU, (120, 120))


def _lock(up: HostileUpstream, engine: FakeEngine, tmp: Path, **env: str) -> Outcome:
    project = tmp / "proj"
    project.mkdir(exist_ok=True)
    (project / "bundles.toml").write_text("\n".join([
        "[k3s]", f'releases = "{up.url}/k3s"', f'install_script = "{up.url}/install.sh"', "",
        "[bundles.h]", 'version = "1.0.0"', 'arch = ["amd64"]', 'k3s = "v1.34.3+k3s1"',
        "k3s_airgap_images = false", f"images = {json.dumps([IMAGE])}", ""]))
    for sub in ("home", "tmp", "xdg"):
        (tmp / sub).mkdir(exist_ok=True)
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp / "home"),
            "TMPDIR": str(tmp / "tmp"), "XDG_CACHE_HOME": str(tmp / "xdg"),
            "XDG_CONFIG_HOME": str(tmp / "xdg"), "XDG_DATA_HOME": str(tmp / "xdg"),
            "NO_PROXY": "127.0.0.1,localhost", "DOCKER_HOST": engine.docker_host,
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **env}
    return bundle_child(["lock", "--cache", str(tmp / "cache")], cwd=project, env=full,
                        timeout=90, limits=_limits)


def _bounded(o: Outcome, *, code: int, says: str, seconds: float = 40) -> None:
    text = o.out + o.err
    assert o.code == code, text[-2000:]
    assert says in text, text[-2000:]
    assert "Traceback" not in text, text[-2000:]
    assert o.seconds < seconds, o.seconds
    assert o.rss_mb < MAX_RSS_MB, o.rss_mb


def _cached(tmp: Path) -> list[Path]:
    return [p for p in (tmp / "cache").rglob("*") if p.is_file()] if (tmp / "cache").exists() \
        else []


@pytest.mark.world
def test_a_good_engine_image_locks(upstream: HostileUpstream, engine: FakeEngine,
                                   tmp_path: Path) -> None:
    """The control: the fake engine's image is what the builder expects."""
    engine.serve_image()
    o = _lock(upstream, engine, tmp_path)
    assert o.code == 0, o.err[-2000:]


@pytest.mark.world
@pytest.mark.parametrize("kind", [b"L", b"x"], ids=["gnu-long-name", "pax"])
def test_giant_tar_headers_are_refused_before_they_are_buffered(
        upstream: HostileUpstream, engine: FakeEngine, tmp_path: Path, kind: bytes) -> None:
    engine.serve_image()
    engine.state.export_writer = giant_header(kind)
    o = _lock(upstream, engine, tmp_path)
    _bounded(o, code=3, says="header of 3221225472 bytes")


@pytest.mark.world
def test_only_referenced_members_are_kept(upstream: HostileUpstream, engine: FakeEngine,
                                          tmp_path: Path) -> None:
    """1,500 members the export's manifest.json does not name: none stays in the cache."""
    engine.serve_image(unreferenced=1500)
    o = _lock(upstream, engine, tmp_path)
    assert o.code == 0, o.err[-2000:]
    assert o.rss_mb < MAX_RSS_MB
    blobs = [p for p in _cached(tmp_path) if "blobs" in p.parts or "sha256" in p.parts]
    assert len(blobs) < 20, len(blobs)


@pytest.mark.world
def test_an_export_over_the_total_cap_is_refused(upstream: HostileUpstream,
                                                 engine: FakeEngine, tmp_path: Path) -> None:
    engine.serve_image(unreferenced=2000)   # about 2 MiB in all
    o = _lock(upstream, engine, tmp_path, BUNDLE_LIMITS="engine_export=1MiB")
    _bounded(o, code=3, says="over the engine_export cap")


@pytest.mark.world
def test_a_dripping_export_ends_with_exit_5(upstream: HostileUpstream, engine: FakeEngine,
                                            tmp_path: Path) -> None:
    engine.serve_image()
    _, tar = good_export()
    engine.state.export_writer = drip(tar, 0.2)
    o = _lock(upstream, engine, tmp_path, BUNDLE_LIMITS="speed_time=1")
    _bounded(o, code=5, says="fewer than 1024 bytes in 1 s", seconds=30)


@pytest.mark.world
def test_an_endless_inspect_answer_is_capped(upstream: HostileUpstream, engine: FakeEngine,
                                             tmp_path: Path) -> None:
    engine.serve_image()
    engine.state.inspect_writer = endless()
    o = _lock(upstream, engine, tmp_path)
    _bounded(o, code=3, says="the engine's inspect answer")
