"""Receipts and delta bundles (issue #14): a delta over the right base installs exactly the
tree the full bundle installs; the wrong base, or a missing or damaged base file on the
device, is refused before anything changes; kill -9 during a delta install leaves the old or
the new release; the receipt round trip (install v1, receipt, delta v2 from it, install)."""

import hashlib
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Dict, Tuple

import pytest

from bundler.assemble.delta import delta_path, load_base, write_delta
from installer.errors import FormatError
from installer.format import bundlefmt
from installer.host import receipt
from tests.bundles import KeyDir, cli, default_spec, live, tree, write_spec

MiB = 1 << 20
AIRGAP = "var/lib/rancher/airgap"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, object]:
    """v1 and v2 share a 2 MiB image archive and differ in the rest; a root with v1, a root
    with v2 installed over v1 from the full bundle (the reference tree)."""
    base = tmp_path_factory.mktemp("delta")
    keys = KeyDir(base / "keys")
    shared = os.urandom(2 * MiB)
    bundles = {}
    for v in ("1.0.0", "2.0.0", "3.0.0"):
        spec = default_spec(v)
        spec.images["shared.tar"] = shared
        spec.images[f"own-{v}.tar"] = os.urandom(MiB // 2)
        folder = base / v
        folder.mkdir()
        bundles[v] = write_spec(spec, keys, folder)
    v1root = base / "v1root"
    assert cli("trust", keys.root_json, "--root", v1root).returncode == 0
    r = cli("install", bundles["1.0.0"], "--root", v1root, "--server", "--skip-start")
    assert r.returncode == 0, r.stderr
    ref = base / "ref"
    shutil.copytree(str(v1root), str(ref), symlinks=True)
    r = cli("install", bundles["2.0.0"], "--root", ref, "--skip-start")
    assert r.returncode == 0, r.stderr
    delta, _ = write_delta(bundles["2.0.0"], load_base(bundles["1.0.0"]))
    return {"keys": keys, "b": bundles, "v1root": v1root, "ref": ref, "delta": delta,
            "base": base}


def _fresh(world: Dict[str, object], tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(str(world["v1root"]), str(root), symlinks=True)
    return root


def _comparable(root: Path) -> Dict[str, Tuple[str, str, int]]:
    """Every file and folder under the root with its sha256 and mode; the state files are
    compared without their clock fields (``installed_at``), which differ by run."""
    out = tree(root)
    for name in ("state.json", "state.json.bak", "state.bak.json"):
        rel = f"{AIRGAP}/{name}"
        if rel in out:
            doc = json.loads((root / rel).read_text())
            doc.pop("sha256", None)  # of the body, which holds the clock fields
            body = doc.get("doc", doc)
            for key in ("current", "previous"):
                if isinstance(body.get(key), dict):
                    body[key].pop("installed_at", None)
            digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
            out[rel] = (out[rel][0], digest, out[rel][2])
    out.pop(f"{AIRGAP}/lock", None)
    for rel in [k for k in out if k.startswith(f"{AIRGAP}/device/")]:
        del out[rel]  # the device's own report and gate files (timestamped per run)
    return out


def _header(path: object) -> bundlefmt.Header:
    with open(str(path), "rb") as f:
        return bundlefmt.BundleReader(f, what=str(path)).header()


def test_delta_carries_only_what_the_base_lacks(world: Dict[str, object]) -> None:
    b = world["b"]
    delta = world["delta"]
    assert delta == delta_path(b["2.0.0"])  # type: ignore[index]
    with open(str(delta), "rb") as f:
        reader = bundlefmt.BundleReader(f, what="delta", delta_ok=True)
        header = reader.header()
        carried = [m.path for m, data in reader.payload() if data.read() is not None]
    assert reader.delta is not None
    assert "images/shared.tar" not in carried and "images/own-2.0.0.tar" in carried
    base_bytes = _header(b["1.0.0"]).manifest_bytes  # type: ignore[index]
    assert reader.delta.base_digest == hashlib.sha256(base_bytes).hexdigest()
    full = _header(b["2.0.0"])  # type: ignore[index]
    assert header == full  # the full bundle's signed envelope, byte for byte
    assert os.stat(delta).st_size < os.stat(b["2.0.0"]).st_size - 2 * MiB  # type: ignore


def test_delta_over_the_right_base_gives_the_full_tree(world: Dict[str, object],
                                                       tmp_path: Path) -> None:
    root = _fresh(world, tmp_path)
    r = cli("install", world["delta"], "--root", root, "--skip-start", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["action"] == "installed" and result["delta"]["carried"] >= 1
    assert result["delta"]["reused_bytes"] >= 2 * MiB
    want, got = _comparable(world["ref"]), _comparable(root)  # type: ignore[arg-type]
    assert got == want, sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    assert os.listdir(root / AIRGAP / "staging") == []


def test_delta_over_the_wrong_base_is_refused_before_any_change(
        world: Dict[str, object], tmp_path: Path) -> None:
    root = _fresh(world, tmp_path)
    b = world["b"]
    wrong = write_delta(b["3.0.0"], load_base(b["2.0.0"]))[0]  # type: ignore[index]
    before = tree(root)
    r = cli("install", wrong, "--root", root, "--skip-start")
    assert r.returncode == 4, (r.returncode, r.stderr)
    needed = hashlib.sha256(_header(b["2.0.0"]).manifest_bytes).hexdigest()  # type: ignore
    state = json.loads(cli("status", "--root", root, "--json").stdout)
    assert needed in r.stderr and state["installed"]["digest"] in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert tree(root) == before


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_missing_or_corrupt_base_file_is_refused_before_any_change(
        world: Dict[str, object], tmp_path: Path, damage: str) -> None:
    root = _fresh(world, tmp_path)
    state = json.loads(cli("status", "--root", root, "--json").stdout)
    kept = root / AIRGAP / "releases" / state["installed"]["digest"] / "images/shared.tar"
    if damage == "missing":
        kept.unlink()
    else:
        data = bytearray(kept.read_bytes())
        data[MiB] ^= 0x40
        kept.write_bytes(bytes(data))
    before = tree(root)
    r = cli("install", world["delta"], "--root", root, "--skip-start")
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "shared.tar" in r.stderr and "Traceback" not in r.stderr
    assert tree(root) == before


@pytest.mark.parametrize("point", ["in-delta-rebuild", "after-delta-rebuild",
                                   "after-stage-member", "after-journal", "after-placed",
                                   "after-state"])
def test_kill9_during_delta_install_leaves_old_or_new(world: Dict[str, object],
                                                      tmp_path: Path, point: str) -> None:
    root = _fresh(world, tmp_path)
    old, new = live(world["v1root"]), live(world["ref"])  # type: ignore[arg-type]
    r = cli("install", world["delta"], "--root", root, "--skip-start",
            env={"AIRGAP_INSTALL_FAILPOINT": point})
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    assert cli("recover", "--root", root).returncode == 0
    assert live(root) in (old, new)
    assert os.listdir(root / AIRGAP / "staging") == []
    version = json.loads(cli("status", "--root", root, "--json").stdout)["installed"]["version"]
    assert version == ("1.0.0" if live(root) == old else "2.0.0")
    if version == "1.0.0":
        again = cli("install", world["delta"], "--root", root, "--skip-start")
        assert again.returncode == 0, again.stderr
    assert _comparable(root) == _comparable(world["ref"])  # type: ignore[arg-type]


def test_receipt_round_trip(world: Dict[str, object], tmp_path: Path) -> None:
    """Install v1, write its receipt, build the v2 delta from the receipt, install it."""
    root = _fresh(world, tmp_path)
    out = tmp_path / "receipt.json"
    r = cli("receipt", "--root", root, "--out", out)
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    rec = receipt.parse(data)
    h = _header(world["b"]["1.0.0"])  # type: ignore[index]
    assert rec.digest == hashlib.sha256(h.manifest_bytes).hexdigest()
    assert [m.sha256 for m in rec.members] == [m.sha256 for m in h.manifest.members]
    assert (rec.name, rec.version, rec.arch, rec.k3s_version) == (
        "edge", "1.0.0", "amd64", h.manifest.k3s_version)
    printed = cli("receipt", "--root", root)
    assert printed.returncode == 0 and receipt.parse(printed.stdout.encode()) == rec
    folder = tmp_path / "desk"
    shutil.copytree(str(Path(world["b"]["2.0.0"]).parent), str(folder))  # type: ignore
    full = folder / Path(world["b"]["2.0.0"]).name  # type: ignore[index]
    delta, _ = write_delta(full, load_base(out))
    assert delta.read_bytes() == Path(world["delta"]).read_bytes()  # type: ignore[arg-type]
    r = cli("install", delta, "--root", root, "--skip-start")
    assert r.returncode == 0, r.stderr
    assert _comparable(root) == _comparable(world["ref"])  # type: ignore[arg-type]


def test_receipt_with_nothing_installed_and_bad_receipts(tmp_path: Path) -> None:
    r = cli("receipt", "--root", tmp_path / "empty")
    assert r.returncode == 2 and "nothing is installed" in r.stderr
    for bad in (b"{}", b'{"format":"k3s-airgap-receipt/v1"}', b"[1]"):
        with pytest.raises(FormatError):
            receipt.parse(bad)


def test_a_delta_is_refused_by_plain_readers(world: Dict[str, object]) -> None:
    with open(str(world["delta"]), "rb") as f:
        with pytest.raises(FormatError, match="is a delta bundle"):
            bundlefmt.BundleReader(f, what="d").header()
    r = cli("verify", world["delta"], "--root", world["v1root"])
    assert r.returncode != 0 and "delta bundle" in r.stderr


def _oci_world(base: Path) -> Dict[str, object]:
    """v1 and v2 whose images archive (written by bundler/assemble/imagearchive.py) holds three
    images
    sharing a 1 MiB layer; v2 changes one image's top layer."""
    import random

    from bundler.assemble.imagearchive import ArchiveImage, ArchivePlan, Blob
    blobs = base / "blobs"
    blobs.mkdir()
    gz = "application/vnd.oci.image.layer.v1.tar+gzip"

    def blob(data: bytes, media: str = gz) -> Blob:
        h = hashlib.sha256(data).hexdigest()
        (blobs / h).write_bytes(data)
        return Blob("sha256:" + h, len(data), blobs / h, media)

    rng = random.Random(14)
    shared = blob(bytes(rng.getrandbits(8) for _ in range(MiB)))

    def image(n: int, top: Blob) -> ArchiveImage:
        config = blob(json.dumps({"n": n, "top": top.digest}).encode(), "config")
        manifest = blob(json.dumps({"config": config.digest, "layers": [
            shared.digest, top.digest]}).encode(), "manifest")
        return ArchiveImage((f"registry.local/app{n}:v1",), manifest,
                            "application/vnd.oci.image.manifest.v1+json",
                            (config, shared, top))

    tops = [blob(os.urandom(100 * 1024)) for _ in range(4)]
    keys = KeyDir(base / "keys")
    out = {}
    for v, images in (("1.0.0", [image(n, tops[n]) for n in range(3)]),
                      ("2.0.0", [image(0, tops[0]), image(1, tops[3]), image(2, tops[2])])):
        plan = ArchivePlan(tuple(images), False, 1_790_000_000)
        spec = default_spec(v)
        spec.images = {"edge-images-amd64.tar": b"".join(plan.chunks())}
        folder = base / v
        folder.mkdir()
        out[v] = write_spec(spec, keys, folder)
    root = base / "root"
    assert cli("trust", keys.root_json, "--root", root).returncode == 0
    assert cli("install", out["1.0.0"], "--root", root, "--server", "--skip-start"
               ).returncode == 0
    ref = base / "ref"
    shutil.copytree(str(root), str(ref), symlinks=True)
    assert cli("install", out["2.0.0"], "--root", ref, "--skip-start").returncode == 0
    return {"b": out, "root": root, "ref": ref, "shared": shared.digest.split(":")[1]}


def test_blob_delta_rebuilds_the_images_archive_byte_for_byte(tmp_path: Path) -> None:
    """The changed images archive travels as its new blobs and headers only; the device
    rebuilds it from the base's kept archive; the tree equals the full install's; from a
    receipt and from the old bundle alike; a corrupted shared blob on the device is refused
    before any change."""
    w = _oci_world(tmp_path)
    b = w["b"]
    root = Path(str(w["root"]))
    rec = tmp_path / "receipt.json"
    assert cli("receipt", "--root", root, "--out", rec).returncode == 0
    from_receipt, d1 = write_delta(b["2.0.0"], load_base(rec))  # type: ignore[index]
    from_bundle, d2 = write_delta(b["2.0.0"], load_base(b["1.0.0"]))  # type: ignore[index]
    assert d1 == d2 and d1.patches, "the archive is patched, not carried whole"
    full = os.stat(b["2.0.0"]).st_size  # type: ignore[index]
    assert os.stat(from_receipt).st_size < full - MiB
    # a corrupted shared blob in the kept base archive: refused, nothing changes
    bad = tmp_path / "bad"
    shutil.copytree(str(root), str(bad), symlinks=True)
    digest = json.loads(cli("status", "--root", bad, "--json").stdout)["installed"]["digest"]
    kept = bad / AIRGAP / "releases" / digest / "images/edge-images-amd64.tar"
    data = bytearray(kept.read_bytes())
    blobs = dict((h, (off, n)) for h, off, n in json.loads(rec.read_text())["blobs"][
        "images/edge-images-amd64.tar"])
    off, _ = blobs[str(w["shared"])]
    data[off + 10] ^= 1
    kept.write_bytes(bytes(data))
    before = tree(bad)
    r = cli("install", from_receipt, "--root", bad, "--skip-start")
    assert r.returncode == 3 and "blob sha256:" + str(w["shared"]) in r.stderr, r.stderr
    assert tree(bad) == before
    r = cli("install", from_receipt, "--root", root, "--skip-start")
    assert r.returncode == 0, r.stderr
    assert _comparable(root) == _comparable(Path(str(w["ref"])))


def test_inspect_shows_a_deltas_base_and_savings(world: Dict[str, object],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tests.cli_helpers import bundle
    b = world["b"]
    base_digest = hashlib.sha256(_header(b["1.0.0"]).manifest_bytes).hexdigest()  # type: ignore
    r = bundle(capsys, "inspect", str(world["delta"]), "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)["delta"]
    assert doc["base"] == base_digest and doc["base_version"] == "1.0.0"
    assert "images/shared.tar" not in doc["carried_paths"]
    assert doc["saved_bytes"] >= 2 * MiB
    text = bundle(capsys, "inspect", str(world["delta"]))
    assert text.code == 0 and f"DELTA over edge 1.0.0 (manifest {base_digest})" in text.out
    full = bundle(capsys, "inspect", str(b["2.0.0"]), "--json")  # type: ignore[index]
    assert json.loads(full.out)["delta"] is None
