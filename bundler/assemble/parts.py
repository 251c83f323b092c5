"""Split a built bundle into parts with XOR parity and a signed index (format:
``installer/sources/parts.py``, docs/bundle-format.md).

Two reads of the bundle's bytes: the bundle once, front to back, into the parts (each written
by the one verified writer while hashed), then the parts once, column by column, into the
parity part. Memory stays at one chunk per part. The index is checked with the installer's
own ``parts.validate`` before it is signed, so the builder never writes an index a device
refuses. The parts replace the bundle file only once every one is written.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bundler.errors import LocalError, SpecError
from installer.fsio import CHUNK, hash_file, iter_file, write_verified
from installer.sources import parts as fmt
from installer.sources import partsource

MiB = 1 << 20
_SIZE_RE = re.compile(r"^([0-9]+)\s*([KMGT]?)(i?B)?$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``4G``, ``4GiB``, ``700M``, ``1073741824``: bytes (K/M/G/T are powers of 1024)."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise SpecError(f"bad size {text!r}", hint="write it like 4G, 700M or 1073741824")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def part_size_for(limit: int) -> int:
    """The largest whole number of MiB strictly below ``limit``, so that ``4G`` gives parts
    that fit FAT32 (whose files stop one byte short of 4 GiB)."""
    size = (limit - 1) // MiB * MiB
    if size < fmt.MIN_PART_SIZE:
        raise SpecError(f"--max-part-size {limit} is too small",
                        hint=f"parts are whole MiB strictly below it: give at least "
                             f"{fmt.MIN_PART_SIZE + 1} bytes (2M)")
    return size


@dataclass(frozen=True)
class SplitResult:
    index: Path
    parts: tuple[Path, ...]
    parity: Path | None


def _range(f: object, start: int, length: int) -> Iterator[bytes]:
    assert hasattr(f, "seek")
    f.seek(start)
    yield from iter_file(f, limit=length)  # type: ignore[arg-type]


def _parity_chunks(paths: list[Path], size: int) -> Iterator[bytes]:
    files = [open(p, "rb") for p in paths]
    try:
        offset = 0
        while offset < size:
            n = min(CHUNK, size - offset)
            acc = 0
            for f in files:
                data = f.read(n)
                acc ^= int.from_bytes(data.ljust(n, b"\0"), "little")
            yield acc.to_bytes(n, "little")
            offset += n
    finally:
        for f in files:
            f.close()


def _drop_stale(folder: Path, name: str, count: int, *, parity: bool) -> None:
    """Parts of an earlier split of the same bundle name that the new index does not list
    (more parts, or a parity part) would only confuse a reader of the folder and its sums."""
    for p in folder.glob(f"{name}.part-*"):
        m = fmt.PART_RE.search(p.name)
        number = int(m.group(1)) if m else None
        if (number is not None and number > count) or \
                (p.name == name + fmt.PARITY_SUFFIX and not parity):
            p.unlink(missing_ok=True)


def split(bundle: Path, *, max_part_size: int, parity: bool,
          sign: Callable[[bytes], bytes] | None, roots: list[bytes],
          on_bytes: Callable[[int], None] | None = None) -> SplitResult:
    """Split ``bundle`` (a built bundle file) beside itself; remove it once the parts, the
    parity part and the index are written. ``sign`` signs the canonical index (the
    ``targets`` keys); ``None`` writes an unsigned index, which devices refuse like an
    unsigned bundle."""
    size = os.stat(bundle).st_size
    part_size = part_size_for(max_part_size)
    count = -(-size // part_size)
    if count > fmt.MAX_PARTS:
        raise SpecError(f"{bundle.name} would need {count} parts of {part_size} bytes "
                        f"(at most {fmt.MAX_PARTS})", hint="give a larger --max-part-size")
    folder, name = bundle.parent, bundle.name
    written: list[Path] = []
    try:
        part_files: list[fmt.PartFile] = []
        with open(bundle, "rb") as f:
            for i in range(count):
                length = min(part_size, size - i * part_size)
                dest = folder / fmt.part_name(name, i + 1)
                written.append(dest)
                sha, n = write_verified(dest, _range(f, i * part_size, length), size=length,
                                        what=dest.name, on_bytes=on_bytes)
                part_files.append(fmt.PartFile(dest.name, n, sha))
        parity_file = None
        if parity:
            dest = folder / (name + fmt.PARITY_SUFFIX)
            written.append(dest)
            length = part_files[0].size
            sha, n = write_verified(dest, _parity_chunks(written[:count], length),
                                    size=length, what=dest.name)
            parity_file = fmt.PartFile(dest.name, n, sha)
        whole, _ = hash_file(bundle)
        index = fmt.validate(fmt.PartsIndex(name, size, whole, part_size, tuple(part_files),
                                            parity_file))
        signatures = sign(index.signed_bytes()) if sign else b'{"signatures":[]}'
        dest = folder / fmt.index_name(name)
        written.append(dest)
        write_verified(dest, [fmt.index_document(index, signatures, roots)])
    except OSError as e:
        for p in written:
            p.unlink(missing_ok=True)
        raise LocalError(f"cannot write the parts of {name} in {folder}: {e.strerror}",
                         hint="check free space (the parts need the bundle's size again, "
                              "plus one part for parity) and permissions") from None
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    bundle.unlink()
    _drop_stale(folder, name, count, parity=parity)
    return SplitResult(folder / fmt.index_name(name), tuple(written[:count]),
                       written[count] if parity else None)


def is_parts(path: Path) -> bool:
    """A folder holding a parts index, or an index file itself."""
    return path.name.endswith(fmt.INDEX_SUFFIX) or partsource.holds_parts(str(path))


def _index_file(path: Path) -> Path:
    if not path.is_dir():
        return path
    found = sorted(p for p in path.iterdir() if p.name.endswith(fmt.INDEX_SUFFIX))
    if len(found) > 1:
        raise SpecError(f"{path} holds several parts sets: "
                        + ", ".join(p.name for p in found),
                        hint=f"pass one index file, e.g. {found[0]}")
    return found[0]


@contextmanager
def reassembled(path: Path, *, anchor: bytes | None,
                trusted_label: str = "this trusted root is") -> Iterator[tuple[Path, str | None]]:
    """The bundle of a parts folder (or index file) ``path``, reassembled by the installer's
    own code into a temporary folder (``$TMPDIR``; removed afterwards), and the part rebuilt
    from parity, if any. With ``anchor`` the index's signature is verified first."""
    index_path = _index_file(path)
    index = (fmt.read_index(str(index_path), anchor=anchor, now=int(time.time()),
                            trusted_label=trusted_label) if anchor is not None
             else fmt.read_index_unverified(str(index_path)))
    tmp = tempfile.mkdtemp(prefix="bundle-parts-")
    try:
        done = fmt.reassemble(str(index_path.parent), index, tmp)
        yield Path(done.path), done.rebuilt
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
