"""`bundle mirror` of an image pinned by its index digest (`image@sha256:<index>`, as
ingress-nginx and many charts pin): the site mirror gets the exact upstream index bytes under
that digest, with every platform manifest it lists, so a node pulling by that digest through
the mirror gets it (issue 25 "also", issue 27 item 4). Real loopback registries."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.cli_helpers import bundle, bundle_proc
from tests.containerd import Containerd
from tests.world import Registry, World

ACCEPT = ("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json")


def _get(registry: Registry, path: str) -> bytes:
    with registry.session() as s:
        r = s.get(f"{registry.url}/v2/{path}", headers={"Accept": ACCEPT}, timeout=30)
    r.raise_for_status()
    return r.content


@pytest.mark.world
def test_an_image_pinned_by_its_index_digest_is_mirrored_exactly(
        world: World, scratch_registry: Registry, containerd: Containerd, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    upstream = _get(world.registry, "library/nginx/manifests/1.28")
    digest = "sha256:" + hashlib.sha256(upstream).hexdigest()
    listed = [m["digest"] for m in json.loads(upstream)["manifests"]]
    assert len(listed) >= 2, "the world's nginx is multi-arch"
    folder = tmp_path / "proj"
    world.write_spec(folder, arch=("arm64",), manifests=(), charts=[],
                     bundle_images=(f"docker.io/library/nginx@{digest}",))
    res = bundle_proc("--spec", str(folder / "bundles.toml"), "-q", "lock", "--cache",
                      str(folder / "cache"), cwd=folder)
    assert res.code == 0, res.err
    r = bundle(capsys, "--spec", str(folder / "bundles.toml"), "-q", "mirror", "--cache",
               str(folder / "cache"), "--to", f"oci://{scratch_registry.host}", "--json")
    assert r.code == 0, r.err
    [img] = json.loads(r.out)["images"]
    assert img["index_digest"] == digest and not img["index_rewritten"]
    assert _get(scratch_registry, f"library/nginx/manifests/{digest}") == upstream
    for d in listed:   # every platform manifest the index lists, byte for byte
        assert _get(scratch_registry, f"library/nginx/manifests/{d}") == \
            _get(world.registry, f"library/nginx/manifests/{d}")
    # a node pulling by the pinned index digest through the site mirror: real containerd
    ref = f"{scratch_registry.host}/library/nginx@{digest}"
    pulled = containerd.ctr("images", "pull", "--plain-http", "--platform", "linux/arm64", ref)
    assert pulled.returncode == 0, pulled.stderr.decode()[-2000:]
    assert containerd.images().get(ref) == digest
