"""`airgap-install sync` takes the ring's delta (issue #27 item 2): v1 -> v2 over http and over
OCI moves the delta's bytes plus metadata, counted AT THE SERVER (the static server's log; a
logging reverse proxy in front of the registry), at most the changed bytes + 1 % of the full
bundle + 64 KiB, and the tree equals a full install's; a delta damaged at the source, or a
kept base file changed on disk, falls back to the full bundle in the same run, saying so."""

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Sequence

import pytest

from installer.format import bundlefmt
from tests.bundles import KeyDir, cli, default_spec, live, write_spec
from tests.test_rings_e2e import bundle, installed, ok
from tests.world import World
from tests.world.faultproxy import FaultProxy
from tests.world.release import StaticServer

MiB = 1 << 20
SYNC = ("--server", "--skip-start", "--health-cmd", "true")
AIRGAP = "var/lib/rancher/airgap"


class Site:
    """A ring repository (real `bundle repo init` / `bundle publish`) of bundles that share a
    4 MiB image archive, and devices that trust it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.keys = KeyDir(base / "keys")
        self.served = base / "www"
        self.repo = self.served / "rings"
        self.shared = os.urandom(4 * MiB)
        self.bundles: Dict[str, Path] = {}
        ok(bundle("repo", "init", self.repo, "--keys", self.keys.path))

    def publish(self, version: str) -> None:
        spec = default_spec(version)
        spec.images["shared.tar"] = self.shared
        spec.images[f"own-{version}.tar"] = os.urandom(MiB // 4)
        folder = self.base / version
        folder.mkdir()
        self.bundles[version] = write_spec(spec, self.keys, folder)
        ok(bundle("publish", self.bundles[version], "--repo", self.repo, "--ring", "canary",
                  "--keys", self.keys.path))

    def device(self, name: str, source: str) -> Path:
        root = self.base / name
        ok(cli("trust", self.repo / "metadata" / "1.root.json", "--root", root, "--ring",
               "canary"))
        res = json.loads(ok(cli("sync", "--source", source, "--root", root, "--arch", "amd64",
                                "--json", *SYNC)))
        assert res["action"] == "installed" and installed(root) == "1.0.0"
        return root

    def reference(self, root: Path) -> Path:
        """A copy of ``root`` with v2 installed from the full bundle."""
        ref = root.with_name(root.name + "-ref")
        shutil.copytree(str(root), str(ref), symlinks=True)
        ok(cli("install", self.bundles["2.0.0"], "--root", ref, "--skip-start"))
        return ref

    def limit(self) -> int:
        """changed bytes + 1 % of the full bundle + 64 KiB."""
        manifests = []
        for v in ("1.0.0", "2.0.0"):
            with open(self.bundles[v], "rb") as f:
                manifests.append(bundlefmt.BundleReader(f).header().manifest)
        old = {m.sha256 for m in manifests[0].members}
        changed = sum(m.size for m in manifests[1].members if m.sha256 not in old)
        full = self.bundles["2.0.0"].stat().st_size
        return changed + full // 100 + 64 * 1024

    def delta_file(self) -> Path:
        found = sorted((self.repo / "targets").glob("*.delta.tar"))
        assert len(found) == 1, found
        return found[0]


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site(tmp_path)
    s.publish("1.0.0")
    return s


def _sync(root: Path, source: str) -> "tuple[dict, str]":  # type: ignore[type-arg]
    p = cli("sync", "--source", source, "--root", root, "--arch", "amd64", "--json",
            "--health-cmd", "true")
    return json.loads(ok(p)), p.stderr


def _served(log: Sequence[Any], since: int) -> int:
    """Body bytes the server sent from request ``since`` on (its own log)."""
    return sum(int(e.body_bytes) for e in log[since:])


@pytest.mark.slow
def test_http_sync_moves_the_delta_and_equals_a_full_install(site: Site) -> None:
    with StaticServer(site.served) as server:
        url = server.url + "/rings/"
        root = site.device("dev", url)
        site.publish("2.0.0")
        ref = site.reference(root)
        seen = len(server.log)
        res, err = _sync(root, url)
        assert res["action"] == "installed" and installed(root) == "2.0.0", err
        assert "fetched the delta" in err
        served = _served(server.log, seen)
        full = site.bundles["2.0.0"].stat().st_size
        assert served <= site.limit() < full, (served, site.limit(), full)
        assert any(e.path.endswith(".delta.tar") for e in server.log[seen:])
        assert not any(e.path.endswith("-amd64.tar") for e in server.log[seen:])
    assert live(root) == live(ref)


@pytest.mark.slow
def test_oci_sync_moves_the_delta_counted_at_a_proxy_before_the_registry(
        site: Site, world: World) -> None:
    repository = f"delta/{site.base.name.lower()}"
    push = f"oci://{world.registry.host}/{repository}:canary"
    ok(bundle("repo", "push", site.repo, push))
    with FaultProxy(world.registry.url) as proxy:
        url = f"oci://{proxy.host}/{repository}:canary"
        root = site.device("dev", url)
        site.publish("2.0.0")
        ok(bundle("repo", "push", site.repo, push))
        ref = site.reference(root)
        seen = len(proxy.log)
        res, err = _sync(root, url)
        assert res["action"] == "installed" and installed(root) == "2.0.0", err
        assert "fetched the delta" in err
        served = _served(proxy.log, seen)
        assert served <= site.limit(), (served, site.limit())
    assert live(root) == live(ref)


@pytest.mark.slow
def test_a_damaged_delta_falls_back_to_the_full_bundle_in_the_same_run(site: Site) -> None:
    with StaticServer(site.served) as server:
        url = server.url + "/rings/"
        root = site.device("dev", url)
        site.publish("2.0.0")
        ref = site.reference(root)
        d = site.delta_file()
        data = bytearray(d.read_bytes())
        data[len(data) // 2] ^= 1
        d.write_bytes(bytes(data))
        res, err = _sync(root, url)
        assert res["action"] == "installed" and installed(root) == "2.0.0", err
        assert "cannot be used" in err and "fetching the full bundle" in err, err
    assert live(root) == live(ref)


@pytest.mark.slow
def test_a_changed_base_on_disk_falls_back_to_the_full_bundle_in_the_same_run(
        site: Site) -> None:
    with StaticServer(site.served) as server:
        url = server.url + "/rings/"
        root = site.device("dev", url)
        site.publish("2.0.0")
        ref = site.reference(root)
        digest = json.loads(ok(cli("status", "--root", root, "--json")))["installed"]["digest"]
        kept = root / AIRGAP / "releases" / digest / "images/shared.tar"
        data = bytearray(kept.read_bytes())
        data[MiB] ^= 0x40
        kept.unlink()  # the kept copy only (the live file is a hard link to it)
        kept.write_bytes(bytes(data))
        res, err = _sync(root, url)
        assert res["action"] == "installed" and installed(root) == "2.0.0", err
        assert res["delta_fell_back"] is True, res   # docs/rings.md
        assert "fetched the delta" in err and "did not apply" in err, err
        assert "shared.tar" in err
    assert live(root) == live(ref)
