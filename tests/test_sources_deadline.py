"""An overall deadline per transfer from a mirror or registry (THREATS 45, issue #24 row 2 and
"also seen"): one byte a second never trips a per-read timeout, so each transfer gets
``--transfer-timeout`` seconds plus one per 64 KiB of its size, then sync exits 5 (the lock
freed); what arrived is on disk at once, so a kill -9 during a slow download leaves a partial
file the next sync resumes from; a symlink planted at the partial file's name is replaced,
never followed. Real loopback servers: the test world's static server behind the fault
proxy's ``("slow", bytes_per_second)`` mode, and the world registry behind its fault proxy."""

import fcntl
import json
import os
import signal
import time
from pathlib import Path
from typing import Iterator

import pytest

from installer.sources import transfer
from tests.bundles import cli, popen, tree
from tests.test_rings_e2e import installed, ok
from tests.test_rings_sources import (
    INCOMING,
    SYNC,
    Published,
    do_sync,
    outside_tuf,
    push_folder,
)
from tests.world import World
from tests.world.faultproxy import FaultProxy
from tests.world.release import StaticServer

LOCK = "var/lib/rancher/airgap/install.lock"


def test_transfer_deadline_grows_with_size() -> None:
    assert transfer.transfer_deadline(0) == transfer.TRANSFER_TIMEOUT
    assert transfer.transfer_deadline(64 * 1024 * 100) == transfer.TRANSFER_TIMEOUT + 100
    assert transfer.transfer_deadline(10, base=2, min_rate=5) == 4


@pytest.fixture
def pub(tmp_path: Path) -> Published:
    p = Published(tmp_path)
    p.publish("1.0.0")
    return p


@pytest.fixture
def proxy(pub: Published) -> Iterator[FaultProxy]:
    with StaticServer(pub.served) as server, FaultProxy(server.url) as p:
        yield p


def _lock_is_free(root: Path) -> bool:
    path = root / LOCK
    if not path.exists():
        return True
    with open(path, "rb") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
    return True


@pytest.mark.world
@pytest.mark.parametrize("where", [r"/targets/", r"/metadata/timestamp"])
def test_a_dripping_mirror_ends_at_the_deadline(pub: Published, proxy: FaultProxy,
                                                where: str) -> None:
    proxy.add_rule(where, ("slow", 1), count=None)
    root = pub.device("dev")
    before = outside_tuf(root)
    start = time.monotonic()
    p = do_sync(root, proxy.url + "/rings", *SYNC, "--transfer-timeout", "2")
    took = time.monotonic() - start
    assert p.returncode == 5, p.stdout + p.stderr
    assert "too slow" in p.stderr and "--transfer-timeout" in p.stderr
    assert "Traceback" not in p.stderr
    assert took < 30, took
    assert proxy.faults_applied()
    assert _lock_is_free(root) and outside_tuf(root) == before


@pytest.mark.world
def test_a_dripping_registry_ends_at_the_deadline(pub: Published, world: World) -> None:
    url = push_folder(world, pub.repo, f"drip/{pub.base.name.lower()}", "canary")
    fp = world.fault_proxy
    via = url.replace(world.registry.host, fp.host)
    fp.add_rule(r"/blobs/sha256:", ("slow", 1), count=None)
    try:
        root = pub.device("dev")
        start = time.monotonic()
        p = do_sync(root, via, *SYNC, "--transfer-timeout", "2")
        assert p.returncode == 5, p.stdout + p.stderr
        assert "too slow" in p.stderr and "Traceback" not in p.stderr
        assert time.monotonic() - start < 40
        assert _lock_is_free(root) and installed(root) == "nothing"
    finally:
        fp.clear()


@pytest.mark.world
def test_kill9_during_a_slow_download_resumes_from_what_arrived(pub: Published,
                                                                proxy: FaultProxy) -> None:
    target = pub.targets()[0]
    size = target.stat().st_size
    proxy.add_rule(r"/targets/", ("slow", 200), count=None)
    root = pub.device("dev")
    partial = root / INCOMING / f".{target.name}.partial"
    proc = popen("sync", "--source", proxy.url + "/rings", "--root", root, "--arch", "amd64",
                 *SYNC)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
                partial.exists() and partial.stat().st_size >= 1000):
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    got = partial.stat().st_size
    assert 1000 <= got < size, (got, size)
    proxy.clear()
    proxy.clear_log()
    res = json.loads(ok(do_sync(root, proxy.url + "/rings", *SYNC)))
    assert res["action"] == "installed" and installed(root) == "1.0.0"
    ranges = [r.range for r in proxy.requests(r"/targets/", method="GET")]
    assert ranges == [f"bytes={got}-"], ranges


def test_a_symlink_at_the_partial_name_is_replaced_not_followed(pub: Published,
                                                                tmp_path: Path) -> None:
    target = pub.targets()[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"not yours")
    before = tree(outside)
    root = pub.device("dev")
    with StaticServer(pub.served) as server:
        incoming = root / INCOMING
        incoming.mkdir(parents=True)
        os.symlink(str(outside / "victim"), incoming / f".{target.name}.partial")
        for _ in range(2):
            res = json.loads(ok(do_sync(root, server.url + "/rings", *SYNC)))
            assert res["action"] in ("installed", "up-to-date")
            assert installed(root) == "1.0.0" and tree(outside) == before
        assert not incoming.exists() or not os.listdir(incoming)
    assert cli("status", "--root", root).returncode == 0
