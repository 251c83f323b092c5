"""An operator's own file at a path a bundle places is kept aside and put back, never
destroyed (THREATS 51, issue #24 row 9): ``etc/rancher/k3s/config.yaml.d/50-airgap-bundle.yaml``
like ``registries.yaml``. Real signed bundles, the real CLI."""

import hashlib
import io
import os
from pathlib import Path
from typing import Dict

import pytest

from installer.format import bundlefmt
from installer.format.bundlefmt import Member
from installer.host.layout import K3S_DROPIN_KEPT, K3S_DROPIN_TARGET
from tests.bundles import KeyDir, _members, cli, default_spec, manifest_for, tree

MINE = b"# the operator's own drop-in\nnode-label:\n  - site=12\n"


def _bundle(keys: KeyDir, out: Path, version: str, extra: Dict[str, bytes]) -> Path:
    """A signed bundle of ``default_spec(version)`` plus ``extra`` fixed members."""
    spec = default_spec(version)
    pairs = _members(spec)
    kinds = {v: k for k, v in bundlefmt.FIXED_PATHS.items()}
    pairs += [(Member(p, len(d), hashlib.sha256(d).hexdigest(), 0o644, kinds[p]), d)
              for p, d in extra.items()]
    manifest = manifest_for(spec, [m for m, _ in pairs])
    data = {m.path: d for m, d in pairs}
    path = out / f"{version}-{spec.filename()}"
    with open(path, "wb") as f:
        bundlefmt.write_bundle(f, manifest=manifest, signatures=keys.sign(manifest.to_bytes()),
                               roots=keys.chain(),
                               open_member=lambda m: io.BytesIO(data[m.path]))
    return path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    base = tmp_path_factory.mktemp("kept")
    keys = KeyDir(base / "keys")
    dropin = {bundlefmt.K3S_CONFIG_PATH: b"# the bundle's drop-in\ndisable:\n  - traefik\n"}
    return {"keys": keys.root_json, "plain1": _bundle(keys, base, "1.0.0", {}),
            "dropin2": _bundle(keys, base, "2.0.0", dropin),
            "plain3": _bundle(keys, base, "3.0.0", {})}


def _root(tmp_path: Path, bundles: Dict[str, Path]) -> Path:
    root = tmp_path / "root"
    assert cli("trust", bundles["keys"], "--root", root).returncode == 0
    r = cli("install", bundles["plain1"], "--root", root, "--server", "--skip-start")
    assert r.returncode == 0, r.stderr
    mine = root / K3S_DROPIN_TARGET
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.write_bytes(MINE)
    os.chmod(mine, 0o600)
    return root


def test_operators_dropin_kept_aside_and_put_back(tmp_path: Path,
                                                  bundles: Dict[str, Path]) -> None:
    root = _root(tmp_path, bundles)
    mine, kept = root / K3S_DROPIN_TARGET, root / K3S_DROPIN_KEPT
    r = cli("install", bundles["dropin2"], "--root", root, "--skip-start")
    assert r.returncode == 0, r.stderr
    assert f"kept the hand-written /{K3S_DROPIN_TARGET}" in r.stderr
    assert mine.read_bytes().startswith(b"# the bundle's drop-in")
    assert kept.read_bytes() == MINE and (os.stat(kept).st_mode & 0o777) == 0o600
    assert not kept.name.endswith(".yaml")  # K3s reads config.yaml.d/*.yaml only
    r = cli("install", bundles["plain3"], "--root", root, "--skip-start")
    assert r.returncode == 0, r.stderr
    assert f"put the hand-written /{K3S_DROPIN_TARGET} back" in r.stderr
    assert mine.read_bytes() == MINE and not kept.exists()


def test_rollback_and_failed_install_give_the_operators_dropin_back(
        tmp_path: Path, bundles: Dict[str, Path]) -> None:
    root = _root(tmp_path, bundles)
    mine, kept = root / K3S_DROPIN_TARGET, root / K3S_DROPIN_KEPT
    etc = "etc/rancher/k3s"
    before = tree(root, only=[etc])
    r = cli("install", bundles["dropin2"], "--root", root, "--skip-start",
            env={"AIRGAP_TEST_SCRIPT_FAIL": "1"})
    assert r.returncode == 6, r.stderr  # placed, then undone
    assert tree(root, only=[etc]) == before
    assert cli("install", bundles["dropin2"], "--root", root, "--skip-start").returncode == 0
    r = cli("rollback", "--root", root, "--skip-start")
    assert r.returncode == 0, r.stderr
    assert mine.read_bytes() == MINE and not kept.exists()
