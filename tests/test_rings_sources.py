"""`airgap-install sync --source http://MIRROR`: a ring repository written by the real `bundle
repo init` / `bundle publish`, served by the real static server of the test world
(``tests.world.release.StaticServer``, Range-capable) on 127.0.0.1, optionally behind the
fault proxy (``tests.world.faultproxy.FaultProxy``). What a mirror sync installs must be what a
folder sync of the same repository installs; a broken or lying transfer installs nothing."""

import json
import os
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest
import requests

from .bundles import KeyDir, cli, default_spec, live, tree, write_spec
from .test_rings_e2e import bundle, installed, ok
from .world import World
from .world.faultproxy import FaultProxy
from .world.push import push_folder_artifact
from .world.release import StaticServer

SYNC = ("--server", "--skip-start", "--health-cmd", "true")
INCOMING = "var/lib/rancher/airgap/tuf/incoming"


def do_sync(root: Path, source: object, *extra: object) -> "subprocess.CompletedProcess[str]":
    """``airgap-install sync`` as test_rings_e2e runs it, from a folder or a URL."""
    return cli("sync", "--source", source, "--root", root, "--arch", "amd64", "--json", *extra)


class Published:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.keys = KeyDir(base / "keys")
        self.served = base / "www"
        self.repo = self.served / "rings"
        (base / "b").mkdir()
        ok(bundle("repo", "init", self.repo, "--keys", self.keys.path))

    def publish(self, version: str) -> None:
        spec = write_spec(default_spec(version), self.keys, self.base / "b")
        ok(bundle("publish", spec, "--repo", self.repo, "--ring", "canary", "--keys",
                  self.keys.path))

    def device(self, name: str) -> Path:
        root = self.base / name
        ok(cli("trust", self.repo / "metadata" / "1.root.json", "--root", root, "--ring",
               "canary"))
        return root

    def targets(self) -> List[Path]:
        return sorted(p for p in (self.repo / "targets").rglob("*") if p.is_file())


@pytest.fixture
def pub(tmp_path: Path) -> Published:
    p = Published(tmp_path)
    p.publish("1.0.0")
    return p


@pytest.fixture
def server(pub: Published) -> Iterator[StaticServer]:
    with StaticServer(pub.served) as s:
        yield s


def files(root: Path, under: str) -> Dict[str, Tuple[str, str, int]]:
    return {k: v for k, v in tree(root / under).items() if v[0] != "dir"}


def test_http_mirror_installs_what_the_folder_installs(pub: Published,
                                                       server: StaticServer) -> None:
    by_folder, by_http = pub.device("by-folder"), pub.device("by-http")
    res = json.loads(ok(do_sync(by_folder, pub.repo, *SYNC)))
    assert res["action"] == "installed" and res["current"]["version"] == "1.0.0"
    res = json.loads(ok(do_sync(by_http, server.url + "/rings/", *SYNC)))
    assert res["action"] == "installed" and res["current"]["version"] == "1.0.0"
    assert live(by_http) and live(by_http) == live(by_folder)
    assert installed(by_http) == "1.0.0"
    # the verified metadata persisted is byte for byte the folder's
    tuf = "var/lib/rancher/airgap/tuf"
    meta = {k: v for k, v in files(by_http, tuf).items() if k != "sync.json"}
    assert meta == {k: v for k, v in files(by_folder, tuf).items() if k != "sync.json"}
    # everything came over HTTP: metadata, then the target (once, whole)
    target = pub.targets()[0].relative_to(pub.served).as_posix()
    got = [e for e in server.log if e.path == "/" + target]
    assert [(e.status, e.body_bytes) for e in got] == [(200, pub.targets()[0].stat().st_size)]
    assert any(e.path == "/rings/metadata/timestamp.json" and e.status == 200
               for e in server.log)
    assert not files(by_http, INCOMING)

    pub.publish("1.1.0")
    res = json.loads(ok(do_sync(by_http, server.url + "/rings", "--health-cmd", "true")))
    assert res["action"] == "installed" and installed(by_http) == "1.1.0"
    ok(do_sync(by_folder, pub.repo, "--health-cmd", "true"))
    assert live(by_http) == live(by_folder)


def test_plain_http_to_another_host_is_refused_before_any_traffic(pub: Published,
                                                                  tmp_path: Path) -> None:
    """Without --plain-http nothing is sent, not even to a proxy the environment names (the
    proxy here is a loopback server that logs; with --plain-http it does see the request,
    which shows it would have)."""
    root = pub.device("dev")
    before = tree(root)
    with StaticServer(tmp_path / "empty") as proxy:
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy",)}
        env.update(http_proxy=proxy.url, HTTP_PROXY=proxy.url)
        p = cli("sync", "--source", "http://example.invalid/x", "--root", root, "--arch",
                "amd64", *SYNC, env=env)
        assert p.returncode == 2, p.stdout + p.stderr
        assert "not loopback" in p.stderr and "--plain-http" in p.stderr
        assert "Traceback" not in p.stderr
        assert proxy.log == [] and proxy.connections == 0
        assert tree(root) == before
        p = cli("sync", "--source", "http://example.invalid/x", "--root", root, "--arch",
                "amd64", "--plain-http", *SYNC, env=env)
        assert p.returncode != 0 and installed(root) == "nothing"
        assert proxy.log, "the control run should have gone through the loopback proxy"


def test_missing_target_on_the_mirror_installs_nothing(pub: Published,
                                                       server: StaticServer) -> None:
    root = pub.device("dev")
    target = pub.targets()[0]
    target.unlink()
    p = do_sync(root, server.url + "/rings", *SYNC)
    assert p.returncode == 5, p.stdout + p.stderr
    assert "HTTP 404" in p.stderr and "lacks it" in p.stderr and "Traceback" not in p.stderr
    assert any(e.path.endswith(target.name) and e.status == 404 for e in server.log)
    assert installed(root) == "nothing" and live(root) == {}
    assert not files(root, INCOMING)


# --- through the fault proxy ---------------------------------------------------------------

TUF = "var/lib/rancher/airgap/tuf"


def outside_tuf(root: Path) -> Dict[str, Tuple[str, str, int]]:
    """The device root without the TUF folder (verified metadata, sync record, staging):
    the installer state, the releases and the live K3s files."""
    return {k: v for k, v in tree(root).items() if not k.startswith(TUF)}


@pytest.fixture
def proxy(server: StaticServer) -> Iterator[FaultProxy]:
    with FaultProxy(server.url) as p:
        yield p


def test_connection_reset_mid_bundle_is_resumed_in_the_same_run(
        pub: Published, proxy: FaultProxy) -> None:
    target = pub.targets()[0]
    size = target.stat().st_size
    proxy.add_rule(r"/targets/", ("reset", size // 3), count=1)
    root, ref = pub.device("dev"), pub.device("ref")
    res = json.loads(ok(do_sync(root, proxy.url + "/rings", *SYNC)))
    assert res["action"] == "installed" and installed(root) == "1.0.0"
    got = proxy.requests(r"/targets/", method="GET")
    assert [r.fault for r in got] == ["reset", None]
    assert got[0].range is None and got[0].body_bytes == size // 3
    # the retry asked for the rest only (what arrived before the reset was kept)
    assert got[1].range is not None and got[1].range.startswith("bytes=")
    assert got[1].body_bytes == size - int(got[1].range[len("bytes="):].rstrip("-"))
    ok(do_sync(ref, pub.repo, *SYNC))
    assert live(root) == live(ref)
    assert not files(root, INCOMING)


def test_cut_on_every_attempt_installs_nothing_and_the_next_sync_resumes(
        pub: Published, proxy: FaultProxy) -> None:
    target = pub.targets()[0]
    size = target.stat().st_size
    n = size // 8
    proxy.add_rule(r"/targets/", ("truncate", n), count=None)
    root, ref = pub.device("dev"), pub.device("ref")
    before = outside_tuf(root)
    p = do_sync(root, proxy.url + "/rings", *SYNC)
    assert p.returncode == 5, p.stdout + p.stderr
    assert f"{5 * n} of {size} bytes" in p.stderr and "Traceback" not in p.stderr
    got = proxy.requests(r"/targets/", method="GET")
    assert [r.range for r in got] == [None] + [f"bytes={i * n}-" for i in range(1, 5)]
    # nothing unverified reached the installer: state, releases and live files unchanged;
    # only the partial download waits in staging
    assert outside_tuf(root) == before and installed(root) == "nothing"
    assert list(files(root, INCOMING)) == [f".{target.name}.partial"]
    assert (root / INCOMING / f".{target.name}.partial").stat().st_size == 5 * n

    proxy.clear()
    res = json.loads(ok(do_sync(root, proxy.url + "/rings", *SYNC)))
    assert res["action"] == "installed" and installed(root) == "1.0.0"
    got = proxy.requests(r"/targets/", method="GET")
    assert [(r.range, r.status, r.body_bytes) for r in got] == [
        (f"bytes={5 * n}-", 206, size - 5 * n)]
    ok(do_sync(ref, pub.repo, *SYNC))
    assert live(root) == live(ref)
    assert not files(root, INCOMING)


def test_corrupted_bundle_body_installs_nothing_and_keeps_no_partial(
        pub: Published, proxy: FaultProxy) -> None:
    target = pub.targets()[0]
    proxy.add_rule(r"/targets/", ("corrupt",), count=None)
    root = pub.device("dev")
    before = outside_tuf(root)
    p = do_sync(root, proxy.url + "/rings", *SYNC)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "sha256" in p.stderr and target.name in p.stderr and "Traceback" not in p.stderr
    assert proxy.faults_applied()
    assert outside_tuf(root) == before and installed(root) == "nothing"
    assert not files(root, INCOMING)
    assert not [k for k in tree(root) if target.name.split(".", 1)[1] in k]

    proxy.clear()
    ok(do_sync(root, proxy.url + "/rings", *SYNC))
    assert installed(root) == "1.0.0"


# --- oci:// -------------------------------------------------------------------------------

def push_folder(world: World, folder: Path, repository: str, tag: str) -> str:
    """The repository folder pushed by the real `bundle repo push` into the world's
    registry (the test-world helper below is kept for crafted artifacts)."""
    url = f"oci://{world.registry.host}/{repository}"
    ok(bundle("repo", "push", folder, f"{url}:{tag}"))
    return f"{url}:{tag}"


def push_folder_raw(world: World, folder: Path, repository: str, tag: str) -> str:
    """The same artifact written by hand (remote.folder_manifest), as tests/test_remote.py
    does: a second writer, so the builder's and the device's reading of the layout are
    checked against it."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes()
             for p in sorted(folder.rglob("*")) if p.is_file()}
    push_folder_artifact(requests.Session(), world.registry.url, repository, files=files,
                         tag=tag)
    return f"oci://{world.registry.host}/{repository}:{tag}"


def test_oci_source_installs_what_the_folder_installs(pub: Published, world: World) -> None:
    raw = push_folder_raw(world, pub.repo, f"raw/{pub.base.name.lower()}", "canary")
    url = push_folder(world, pub.repo, f"sync/{pub.base.name.lower()}", "canary")
    by_folder, by_oci, by_raw = (pub.device("by-folder"), pub.device("by-oci"),
                                 pub.device("by-raw"))
    ok(do_sync(by_raw, raw, *SYNC))
    res = json.loads(ok(do_sync(by_oci, url, *SYNC)))
    assert res["action"] == "installed" and installed(by_oci) == "1.0.0"
    ok(do_sync(by_folder, pub.repo, *SYNC))
    assert live(by_oci) and live(by_oci) == live(by_folder) == live(by_raw)
    assert not files(by_oci, INCOMING)

    pub.publish("1.1.0")
    url = push_folder(world, pub.repo, f"sync/{pub.base.name.lower()}", "canary")
    res = json.loads(ok(do_sync(by_oci, url, "--health-cmd", "true")))
    assert res["action"] == "installed" and installed(by_oci) == "1.1.0"
    # credentials are for oci:// only; a missing tag is a transfer error
    p = do_sync(by_oci, pub.repo, "--credentials-file", pub.base / "nope", *SYNC)
    assert p.returncode == 2 and "oci://" in p.stderr
    p = do_sync(by_oci, url.rsplit(":", 1)[0] + ":gone", *SYNC)
    assert p.returncode == 5 and "Traceback" not in p.stderr, p.stderr
    assert installed(by_oci) == "1.1.0"


def test_http_sync_goes_through_the_proxy_the_environment_names(pub: Published,
                                                                server: StaticServer) -> None:
    """A site network with a forward proxy: `http_proxy` is honoured as curl and pip honour
    it (urllib's environment proxies), `no_proxy` bypasses it, and what arrives is verified
    exactly as without a proxy."""
    from .world.fwdproxy import ForwardProxy
    clean = {k: "" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                             "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY")}
    with ForwardProxy() as proxy:
        via = pub.device("via-proxy")
        p = cli("sync", "--source", server.url + "/rings/", "--root", via, "--arch", "amd64",
                "--json", *SYNC, env=dict(clean, http_proxy=proxy.url))
        res = json.loads(ok(p))
        assert res["action"] == "installed" and res["current"]["version"] == "1.0.0"
        urls = [u for _, u in proxy.log]
        assert any(u.endswith("/rings/metadata/timestamp.json") for u in urls), urls
        assert any("/rings/targets/" in u for u in urls), urls
        direct = pub.device("bypass")
        seen = len(proxy.log)
        p = cli("sync", "--source", server.url + "/rings/", "--root", direct, "--arch",
                "amd64", "--json", *SYNC,
                env=dict(clean, http_proxy=proxy.url, no_proxy="127.0.0.1"))
        assert json.loads(ok(p))["action"] == "installed"
        assert len(proxy.log) == seen  # no_proxy: nothing went through it
    assert live(via) == live(direct)
