"""Shared pytest fixtures: the test world (real servers on 127.0.0.1) and user-dir isolation.

- Before collection, ``XDG_CACHE_HOME``, ``XDG_DATA_HOME``, ``XDG_CONFIG_HOME`` and Helm's
  ``HELM_*_HOME`` point into a temp folder removed at the end, and ``NO_PROXY`` covers
  loopback, so no test writes into the home folder or sends loopback traffic to a proxy.
- ``world`` (session): every server of :class:`tests.world.World`, started on first use.
- ``fault_proxy``, ``token_front`` (function): the world's instances, with rules, logs and
  counters cleared before and after each test.
- ``scratch_registry``, ``scratch_release`` (function): a fresh empty registry / release server
  for tests that mutate content (moving tags, broken releases) without touching the world.

Markers (registered in pyproject.toml), set here at collection: ``world`` on every test that
uses one of the fixtures above (directly or through another fixture); ``slow`` on every other
test outside ``FAST_MODULES`` (those run real CLI processes) and wherever a test says
``@pytest.mark.slow``. The fast inner loop is ``python3 -m pytest -m "not world and not slow"``.

Add your own fixtures in your test modules or in a ``conftest.py`` of a sub-folder; nothing
here needs editing for that.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.containerd import Containerd
from tests.world import FaultProxy, Registry, ReleaseServer, TokenAuthFront, World

_USER_DIRS = {
    "XDG_CACHE_HOME": "cache", "XDG_DATA_HOME": "data", "XDG_CONFIG_HOME": "config",
    "HELM_CACHE_HOME": "helm/cache", "HELM_CONFIG_HOME": "helm/config",
    "HELM_DATA_HOME": "helm/data",
}
WORLD_FIXTURES = frozenset({"world", "fault_proxy", "token_front", "scratch_registry",
                            "scratch_release", "containerd"})
# The inner loop (`-m "not world and not slow"`): modules whose tests run in-process, in
# milliseconds. A new module is `slow` until it is listed here; test_markers.py keeps the
# loop at 40 % or more of the suite.
FAST_MODULES = frozenset({
    "test_ed25519.py", "test_trust.py", "test_discover.py", "test_format_bundlefmt.py",
    "test_installer_policy.py", "test_core_pure.py", "test_trust_verify.py",
    "test_discover_charts.py", "test_trust_rootmeta.py", "test_spec_paths.py",
    "test_imports.py", "test_bundle_names.py", "test_host_place.py", "test_discover_compare.py",
    "test_keys.py", "test_errors.py", "test_markers.py",
    "test_trust_tuf_workflow.py", "test_trust_tuf_delegations.py", "test_trust_tuf_meta.py",
    "test_trust_tuf_rings.py", "test_trust_tuf_ratchet.py", "test_trust_keytypes.py",
    "test_format_envelope.py", "test_sources_registry.py", "test_trust_tufclient_mutants.py",
    "test_trust_tufcore_mutants.py", "test_trust_tufoverride_mutants.py",
    "test_trust_tufupdater_mutants.py", "test_trust_tufmeta_mutants.py",
    "test_sources_transfer.py", "test_trust_tuf_mixandmatch.py",
    "test_sources_parts_mutants.py", "test_repo_rotation_window.py", "test_repo_txn.py",
    "test_commands_syncstate_mutants.py", "test_commands_syncgate_mutants.py",
})
SLOW_FIXTURES = frozenset({"host"})  # test_installer_policy's installed host: CLI runs
_saved_env: dict[str, str | None] = {}
_user_root: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    root = Path(tempfile.mkdtemp(prefix="k3s-airgap-userdirs-"))
    _user_root.append(root)
    env = {var: str(root / sub) for var, sub in _USER_DIRS.items()}
    loopback = "127.0.0.1,localhost"
    for var in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(var)
        env[var] = f"{current},{loopback}" if current else loopback
    for var, value in env.items():
        _saved_env.setdefault(var, os.environ.get(var))
        os.environ[var] = value
        if var in _USER_DIRS:
            Path(value).mkdir(parents=True, exist_ok=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``world`` every test that needs a real server, registry, daemon or containerd
    through the fixtures of this file (``fixturenames`` is the transitive closure), and
    ``slow`` every other test outside :data:`FAST_MODULES` or using a :data:`SLOW_FIXTURES`
    fixture (they run real CLI processes: seconds each)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if WORLD_FIXTURES & names:
            item.add_marker(pytest.mark.world)
        elif item.path.name not in FAST_MODULES or SLOW_FIXTURES & names:
            item.add_marker(pytest.mark.slow)


def pytest_unconfigure(config: pytest.Config) -> None:
    for var, value in _saved_env.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
    _saved_env.clear()
    while _user_root:
        shutil.rmtree(_user_root.pop(), ignore_errors=True)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Every loopback server, populated (see tests/world/world.py); one per session."""
    with World(tmp_path_factory.mktemp("world")) as started:
        yield started


@pytest.fixture
def fault_proxy(world: World) -> Iterator[FaultProxy]:
    """The world's fault proxy (in front of ``world.registry``), no rules, empty log."""
    world.fault_proxy.clear()
    yield world.fault_proxy
    world.fault_proxy.clear()


@pytest.fixture
def token_front(world: World) -> Iterator[TokenAuthFront]:
    """The world's token-auth front with counters and logs zeroed."""
    world.token_front.reset_counters()
    yield world.token_front
    world.token_front.reset_counters()


@pytest.fixture
def scratch_registry(tmp_path: Path) -> Iterator[Registry]:
    """A fresh, empty plain registry for this test only."""
    with Registry(tmp_path / "scratch-registry", name="scratch-registry") as registry:
        yield registry


@pytest.fixture
def scratch_release(tmp_path: Path) -> Iterator[ReleaseServer]:
    """A fresh release server (install.sh only; add releases/charts as the test needs)."""
    with ReleaseServer(tmp_path / "scratch-release") as server:
        yield server


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    """A real containerd on a private socket, one per test module (.ci/setup installs it)."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.fail("containerd is not installed (.ci/setup installs it)")
    c = Containerd().start()
    yield c
    c.stop()
