"""Measurement (issue #27 item 3, not built): what keeping unchanged image archives would save.

    python3 benchmarks/archives.py

Today a bundle carries one images archive per arch, so an update that changes one image of ten
writes a new archive: the device stages all of it (a delta apply copies the unchanged bytes
from the kept base) and K3s imports all of it again. With content-named archives per image
group, only the changed group's archive would be new. Ten independent images of 30 MiB, one
changed; measured here:

- staging: copy + sha256 of the nine unchanged archives (270 MiB) with the installer's own
  writer (``fsio.write_verified``), vs hard-linking them;
- import: ``ctr images import --all-platforms`` (K3s's import) into a real containerd of the
  one ten-image archive vs the changed group's own archive. The layers are random bytes, so
  containerd stores every blob and lists every image but cannot unpack them (``mismatched
  image rootfs``): the figure is the content import, unpacking would add to both sides.
"""

import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from delta import MiB, _image, _random_file  # noqa: E402

from bundler.assemble.imagearchive import ArchiveImage, ArchivePlan  # noqa: E402
from installer.fsio import iter_file, write_verified  # noqa: E402
from tests.containerd import Containerd  # noqa: E402

GROUP_MIB = 30


def staging(work: Path, archives: List[Path]) -> None:
    out = work / "staging"
    out.mkdir()
    sums = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in archives}
    start = time.perf_counter()
    for p in archives:
        with open(p, "rb") as f:
            write_verified(out / p.name, iter_file(f), sha256=sums[p], size=p.stat().st_size)
    copy = time.perf_counter() - start
    start = time.perf_counter()
    for p in archives:
        os.link(p, out / ("linked-" + p.name))
    link = time.perf_counter() - start
    total = sum(p.stat().st_size for p in archives)
    print(f"staging the {len(archives)} unchanged archives ({total} B): copy + sha256 "
          f"{copy:.2f} s; hard link {link * 1000:.1f} ms")


def write(path: Path, images: List[ArchiveImage]) -> Path:
    with open(path, "wb") as f:
        for chunk in ArchivePlan(tuple(images), False, 1_790_000_000).chunks():
            f.write(chunk)
    return path


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-archives-", dir=os.environ.get("BENCH_DIR")))
    ctr = Containerd().start()
    try:
        blobs = work / "blobs"
        blobs.mkdir()
        images = [_image(blobs, n, _random_file(blobs, GROUP_MIB * MiB, 500 + n),
                         _random_file(blobs, 64 * 1024, 600 + n)) for n in range(10)]
        groups = [write(work / f"group-{n}.tar", [img]) for n, img in enumerate(images)]
        staging(work, [g for n, g in enumerate(groups) if n != 7])
        whole = write(work / "all.tar", images)
        for label, archive in (("one archive, ten images", whole),
                               ("the changed group's archive", groups[7])):
            ctr.remove_all()
            start = time.perf_counter()
            ctr.import_tar(archive)
            took = time.perf_counter() - start
            print(f"import {label}: {archive.stat().st_size} B in {took:.2f} s "
                  f"({len(ctr.images())} images listed)")
    finally:
        ctr.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
