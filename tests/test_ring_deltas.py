"""Delta targets in the ring repository (issue #27 item 1): ``bundle publish`` lists, next to
each bundle, signed deltas from the newest releases the ring lists for its arch (``--deltas
N``, default 2; 0: none), each naming its base manifest; promote carries them, yank drops
them, ``bundle repo status`` shows their sizes; a device choosing a release never picks one."""

import hashlib
import json
import os
from pathlib import Path
from typing import Dict

import pytest

from installer.format import bundlefmt, envelope
from tests.bundles import KeyDir, default_spec, write_spec
from tests.test_rings_e2e import bundle, ok

MiB = 1 << 20
DELTA_BASE = "x-airgap-delta-base"


class Repo:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.keys = KeyDir(base / "keys")
        self.repo = base / "rings"
        self.shared = os.urandom(2 * MiB)
        self.bundles: Dict[str, Path] = {}
        ok(bundle("repo", "init", self.repo, "--keys", self.keys.path))

    def build(self, version: str) -> Path:
        spec = default_spec(version)
        spec.images["shared.tar"] = self.shared
        spec.images[f"own-{version}.tar"] = os.urandom(MiB // 4)
        folder = self.base / version
        folder.mkdir()
        self.bundles[version] = write_spec(spec, self.keys, folder)
        return self.bundles[version]

    def publish(self, version: str, *extra: object) -> str:
        return ok(bundle("publish", self.build(version), "--repo", self.repo, "--ring",
                         "canary", "--keys", self.keys.path, *extra))

    def ring(self, name: str) -> Dict[str, dict]:  # type: ignore[type-arg]
        meta = self.repo / "metadata"
        snap = json.loads((meta / "timestamp.json").read_bytes())["signed"]["meta"]
        n = snap["snapshot.json"]["version"]
        ver = json.loads((meta / f"{n}.snapshot.json").read_bytes())["signed"]["meta"]
        doc = json.loads((meta / f"{ver[name + '.json']['version']}.{name}.json").read_bytes())
        return dict(doc["signed"]["targets"])

    def digest(self, version: str) -> str:
        with open(self.bundles[version], "rb") as f:
            h = bundlefmt.BundleReader(f).header()
        return hashlib.sha256(h.manifest_bytes).hexdigest()


def _deltas(targets: Dict[str, dict]) -> Dict[str, dict]:  # type: ignore[type-arg]
    return {p: t for p, t in targets.items() if DELTA_BASE in t["custom"]}


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    r = Repo(tmp_path)
    r.publish("1.0.0")
    return r


def test_publish_lists_signed_deltas_from_the_rings_releases(repo: Repo) -> None:
    assert _deltas(repo.ring("canary")) == {}  # nothing to delta from yet
    out = repo.publish("2.0.0")
    assert "delta over 1.0.0" in out
    deltas = _deltas(repo.ring("canary"))
    assert len(deltas) == 1
    (path, t), = deltas.items()
    c = t["custom"]
    assert c[DELTA_BASE] == repo.digest("1.0.0") and c["manifest_sha256"] == repo.digest("2.0.0")
    assert "name" not in c and "arch" not in c  # never chosen as a release
    stored = repo.repo / "targets" / f"{t['hashes']['sha256']}.{path}"
    assert stored.stat().st_size == t["length"] < repo.bundles["2.0.0"].stat().st_size - MiB
    assert envelope.kind_of(str(stored)) == envelope.DELTA
    repo.publish("3.0.0")  # deltas from 2.0.0 and 1.0.0 (default 2)
    bases = sorted(t["custom"]["base_version"] for t in _deltas(repo.ring("canary")).values()
                   if t["custom"]["manifest_sha256"] == repo.digest("3.0.0"))
    assert bases == ["1.0.0", "2.0.0"]
    repo.publish("4.0.0", "--deltas", "1")
    repo.publish("5.0.0", "--deltas", "0")
    mine = [t for t in _deltas(repo.ring("canary")).values()]
    assert [t["custom"]["base_version"] for t in mine
            if t["custom"]["manifest_sha256"] == repo.digest("4.0.0")] == ["3.0.0"]
    assert not [t for t in mine if t["custom"]["manifest_sha256"] == repo.digest("5.0.0")]
    status = json.loads(ok(bundle("repo", "status", repo.repo, "--json")))
    shown = status["rings"]["canary"]["deltas"]
    assert len(shown) == 4 and all(d["length"] > 0 and d["full_length"] > d["length"]
                                   for d in shown)
    assert status["rings"]["canary"]["arches"]["amd64"]["version"] == "5.0.0"
    text = ok(bundle("repo", "status", repo.repo))
    assert "delta: " in text and "% of the full bundle" in text


def test_promote_carries_deltas_and_yank_drops_them(repo: Repo) -> None:
    repo.publish("2.0.0")
    ok(bundle("promote", "edge", "2.0.0", "--repo", repo.repo, "--from", "canary", "--to",
              "beta", "--keys", repo.keys.path))
    def hashes(ring: str) -> Dict[str, str]:
        return {p: t["hashes"]["sha256"] for p, t in _deltas(repo.ring(ring)).items()}
    assert hashes("beta") == hashes("canary") != {}
    ok(bundle("yank", "edge", "2.0.0", "--repo", repo.repo, "--ring", "beta", "--keys",
              repo.keys.path, "--reason", "bad"))
    assert _deltas(repo.ring("beta")) == {}
    assert _deltas(repo.ring("canary")) != {}
