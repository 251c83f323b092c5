"""Benchmark: a delta update that changes one image of ten (issue #14).

    python3 benchmarks/delta.py                  # a 300 MB base layer shared by all ten
    python3 benchmarks/delta.py --base-mib 30    # quick run

Ten images share one base layer (``--base-mib`` of pseudo-random bytes: gzip layers, so the
plain-tar images archive of ``bundler/assemble/imagearchive.py``, written by its own writer) and
each
has its own 1 MiB top layer, config and manifest. Version 2 changes image 7's top layer (and
so its config and manifest). Both bundles are signed with real keys; v1 is installed, its
receipt written by ``airgap-install receipt``, and the v2 delta built from the receipt with
``bundler.assemble.delta.write_delta``. Then, each on its own copy of the v1 root, ``airgap-install
install`` of the full v2 bundle and of the delta are timed (child processes, warm cache).

Prints, from one run: the receipt's size; the full bundle and delta sizes; the bytes that
actually changed (the new blobs plus index.json) and the target ``delta <= changed + 1% + 64
KiB``; both apply times and their ratio ``delta apply / full install`` (target <= 1.0);
and whether the two resulting trees are identical.
"""

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bundles import KeyDir, Spec, _members, manifest_for, tree  # noqa: E402

from bundler.assemble.delta import load_base, write_delta  # noqa: E402
from bundler.assemble.imagearchive import ArchiveImage, ArchivePlan, Blob  # noqa: E402
from installer.format import bundlefmt  # noqa: E402
from installer.format.bundlefmt import Member  # noqa: E402

MiB = 1 << 20
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"


def _blob(folder: Path, data: bytes, media: str) -> Blob:
    digest = hashlib.sha256(data).hexdigest()
    path = folder / digest
    path.write_bytes(data)
    return Blob("sha256:" + digest, len(data), path, media)


def _random_file(folder: Path, size: int, seed: int) -> Blob:
    rng = random.Random(seed)
    h = hashlib.sha256()
    tmp = folder / f"tmp-{seed}"
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(MiB, left)
            data = rng.randbytes(n) if hasattr(rng, "randbytes") else os.urandom(n)
            h.update(data)
            f.write(data)
            left -= n
    path = folder / h.hexdigest()
    tmp.rename(path)
    return Blob("sha256:" + h.hexdigest(), size, path, GZIP)


def _image(folder: Path, n: int, base: Blob, top: Blob) -> ArchiveImage:
    config = _blob(folder, json.dumps({"architecture": "amd64", "os": "linux",
                                       "n": n, "top": top.digest}).encode(), CONFIG)
    manifest = _blob(folder, json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": GZIP, "digest": b.digest, "size": b.size}
                   for b in (base, top)]}).encode(), MANIFEST)
    return ArchiveImage((f"registry.local/app{n}:v1",), manifest, MANIFEST, (config, base, top))


def _bundle(work: Path, keys: KeyDir, version: str, plan: ArchivePlan) -> Tuple[Path, int]:
    archive = work / f"archive-{version}.tar"
    with open(archive, "wb") as f:
        for chunk in plan.chunks():
            f.write(chunk)
    h = hashlib.sha256(archive.read_bytes()).hexdigest()
    spec = Spec(version=version)
    pairs = _members(spec)
    data: Dict[str, object] = {m.path: d for m, d in pairs}
    member = Member("images/edge-images-amd64.tar", archive.stat().st_size, h, 0o644, "images")
    data[member.path] = archive
    members = sorted([m for m, _ in pairs] + [member], key=lambda m: m.path)
    manifest = manifest_for(spec, members)
    out = work / version
    out.mkdir()
    bundle = out / spec.filename()

    def open_member(m: Member):  # type: ignore[no-untyped-def]
        d = data[m.path]
        return open(d, "rb") if isinstance(d, Path) else io.BytesIO(d)  # type: ignore

    with open(bundle, "wb") as f:
        bundlefmt.write_bundle(f, manifest=manifest, signatures=keys.sign(manifest.to_bytes()),
                               roots=keys.chain(), open_member=open_member)
    return bundle, archive.stat().st_size


def _cli(*args: object) -> Tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "installer"] + [str(a) for a in args],
                         cwd=str(REPO), env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"airgap-install {args[0]} failed: {run.stderr}")
    return elapsed, run.stdout


def _stable(root: Path) -> Dict[str, object]:
    out: Dict[str, object] = dict(tree(root))
    for rel in list(out):
        if rel.endswith(("state.json", "state.json.bak")):
            doc = json.loads((root / rel).read_text())
            doc.pop("sha256", None)
            for k in ("current", "previous"):
                (doc.get("doc") or {}).get(k, {}).pop("installed_at", None)
            out[rel] = json.dumps(doc, sort_keys=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-mib", type=int, default=300, help="shared base layer (MiB)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-delta-", dir=os.environ.get("BENCH_DIR")))
    try:
        blobs = work / "blobs"
        blobs.mkdir()
        keys = KeyDir(work / "keys")
        base = _random_file(blobs, args.base_mib * MiB, 1)
        tops = [_random_file(blobs, MiB, 100 + n) for n in range(10)]
        images1 = [_image(blobs, n, base, tops[n]) for n in range(10)]
        new_top = _random_file(blobs, MiB, 999)
        images2 = list(images1)
        images2[7] = _image(blobs, 7, base, new_top)
        mtime = 1_790_000_000
        plan1, plan2 = ArchivePlan(tuple(images1), False, mtime), ArchivePlan(tuple(images2),
                                                                             False, mtime)
        b1, _ = _bundle(work, keys, "1.0.0", plan1)
        b2, _ = _bundle(work, keys, "2.0.0", plan2)
        old_blobs = {b.digest for b in plan1.blobs()}
        changed_blobs = sum(b.size for b in plan2.blobs() if b.digest not in old_blobs)
        with open(b1, "rb") as f:
            m1 = bundlefmt.BundleReader(f).header().manifest
        with open(b2, "rb") as f:
            m2 = bundlefmt.BundleReader(f).header().manifest
        old_members = {m.sha256 for m in m1.members}
        changed_files = sum(m.size for m in m2.members
                            if m.sha256 not in old_members and not m.path.startswith("images/"))
        from bundler.assemble.imagearchive import index_json
        changed = changed_blobs + len(index_json(plan2.images)) + changed_files

        root1 = work / "root-v1"
        _cli("trust", keys.root_json, "--root", root1)
        _cli("install", b1, "--root", root1, "--server", "--skip-start")
        receipt = work / "receipt.json"
        _cli("receipt", "--root", root1, "--out", receipt)
        delta, _ = write_delta(b2, load_base(receipt))

        full_root, delta_root = work / "root-full", work / "root-delta"
        shutil.copytree(str(root1), str(full_root), symlinks=True)
        shutil.copytree(str(root1), str(delta_root), symlinks=True)
        t_full, _ = _cli("install", b2, "--root", full_root, "--skip-start")
        t_delta, _ = _cli("install", delta, "--root", delta_root, "--skip-start")
        same = _stable(full_root) == _stable(delta_root)

        full_size, delta_size = b2.stat().st_size, delta.stat().st_size
        target = changed + changed // 100 + 64 * 1024
        print(f"ten images, one {args.base_mib} MiB base layer shared by all; v2 changes "
              "image 7 (1 MiB top layer, config, manifest)")
        print(f"receipt: {receipt.stat().st_size} bytes")
        print(f"full v2 bundle: {full_size} bytes")
        print(f"delta bundle:   {delta_size} bytes ({100 * delta_size / full_size:.1f}% of full)")
        print(f"changed bytes:  {changed} (new blobs {changed_blobs}, index.json, "
              f"changed files {changed_files})")
        verdict = "MET" if delta_size <= target else "NOT MET"
        print(f"target delta <= changed + 1% + 64 KiB = {target}: {verdict} "
              f"(delta/changed = {delta_size / max(changed, 1):.1f}x)")
        print(f"apply: full install {t_full:.2f} s, delta install {t_delta:.2f} s")
        ratio = t_delta / t_full
        print(f"delta apply / full install = {ratio:.2f} (target <= 1.0: "
              f"{'MET' if ratio <= 1.0 else 'NOT MET'})")
        print(f"trees after full and delta install identical: {same}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
