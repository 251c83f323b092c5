"""What both builder benchmarks start: a temp folder, a registry and a K3s release server on
127.0.0.1, and an environment for child processes. Stopped and removed on exit."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.world.k3s import K3S_VERSION  # noqa: E402
from tests.world.registry import Registry  # noqa: E402
from tests.world.release import ReleaseServer  # noqa: E402


def child_env(work: Path) -> Dict[str, str]:
    """The environment for every child: no proxy can reroute loopback traffic, caches in
    ``work``."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               XDG_CACHE_HOME=str(work / "xdg-cache"), PYTHONPATH=str(REPO))
    return env


@contextmanager
def bench_world(prefix: str) -> Iterator[Tuple[Path, Dict[str, str], Registry, ReleaseServer]]:
    """``(work folder, child env, registry, release server with K3s K3S_VERSION)``."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("BENCH_DIR")))
    registry = release = None
    try:
        registry = Registry(work / "registry").start()
        release = ReleaseServer(work / "release").start()
        release.add_k3s_release(K3S_VERSION)
        yield work, child_env(work), registry, release
    finally:
        for server in (release, registry):
            if server is not None:
                server.stop()
        shutil.rmtree(str(work), ignore_errors=True)
