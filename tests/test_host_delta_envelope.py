"""A delta bundle is refused like a full bundle when a byte outside member data is wrong
(THREATS 49, issue #24 row 7): a flipped byte in the trailer or in a member's padding, or data
appended past its end, is exit 3 before anything changes (``installer/host/delta.py`` checks
the delta's own envelope, as ``verify.check_envelope`` does a full bundle's)."""

import os
import shutil
import tarfile
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from bundler.assemble.delta import load_base, write_delta
from tests.bundles import KeyDir, cli, default_spec, tree, write_spec

MiB = 1 << 20


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    base = tmp_path_factory.mktemp("dtamper")
    keys = KeyDir(base / "keys")
    shared = os.urandom(MiB)
    bundles = {}
    for v in ("1.0.0", "2.0.0"):
        spec = default_spec(v)
        spec.images["shared.tar"] = shared
        spec.images[f"own-{v}.tar"] = os.urandom(1000)  # padded: 1000 is not a block multiple
        (base / v).mkdir()
        bundles[v] = write_spec(spec, keys, base / v)
    v1root = base / "v1root"
    assert cli("trust", keys.root_json, "--root", v1root).returncode == 0
    r = cli("install", bundles["1.0.0"], "--root", v1root, "--server", "--skip-start")
    assert r.returncode == 0, r.stderr
    delta, _ = write_delta(bundles["2.0.0"], load_base(bundles["1.0.0"]))
    return {"v1root": v1root, "delta": delta}


def _paddings(path: Path) -> List[Tuple[str, int, int]]:
    """(member, first padding byte, padding length) of each member with padding."""
    out = []
    with tarfile.open(str(path)) as t:
        for m in t.getmembers():
            pad = -m.size % tarfile.BLOCKSIZE
            if pad:
                out.append((m.name, m.offset_data + m.size, pad))
    return out


def _tampered(world: Dict[str, Path], tmp_path: Path, how: str) -> Path:
    data = bytearray(world["delta"].read_bytes())
    if how == "trailer":
        data[-1] ^= 0x01
    elif how == "trailer-first-block":
        data[-1024] ^= 0x20
    elif how.startswith("padding"):
        pads = _paddings(world["delta"])
        name, start, length = pads[0] if how == "padding-first" else pads[-1]
        data[start + length - 1] ^= 0x01
    elif how == "appended":
        data += os.urandom(MiB)
    elif how == "appended-zeros":
        data += bytes(MiB)
    out = tmp_path / world["delta"].name
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("how", ["trailer", "trailer-first-block", "padding-first",
                                 "padding-last", "appended", "appended-zeros"])
def test_tampered_delta_is_refused_before_any_change(world: Dict[str, Path], tmp_path: Path,
                                                     how: str) -> None:
    assert len(_paddings(world["delta"])) >= 2
    root = tmp_path / "root"
    shutil.copytree(str(world["v1root"]), str(root), symlinks=True)
    before = tree(root)
    bad = _tampered(world, tmp_path, how)
    r = cli("install", bad, "--root", root, "--skip-start")
    assert r.returncode == 3, (how, r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    after = tree(root)
    after.pop("var/lib/rancher/airgap/lock", None)
    before.pop("var/lib/rancher/airgap/lock", None)
    assert after == before


def test_untampered_delta_installs(world: Dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(str(world["v1root"]), str(root), symlinks=True)
    r = cli("install", world["delta"], "--root", root, "--skip-start")
    assert r.returncode == 0, r.stderr
