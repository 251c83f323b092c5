"""The installer's entry point for split bundles: a folder holding a parts set (or its index)
becomes a private folder holding the one verified, reassembled bundle file, which the ordinary
install and verify paths then read like a bundle copied from a stick (installer/sources/parts.py
has the
format and the reassembly)."""

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional

from installer import policy
from installer.errors import EnvironmentProblem, FormatError
from installer.format import envelope
from installer.sources.parts import INDEX_SUFFIX, PartsIndex, index_name, read_index, reassemble

Progress = Optional[Callable[[int, str], Callable[[int], None]]]


@dataclass(frozen=True)
class FromParts:
    """A parts folder resolved to a verified local bundle: ``source`` is a private folder
    holding only that bundle file (so the ordinary folder path picks it by name and checks
    the name against the signed manifest)."""
    folder: str                # the parts folder as given
    source: str                # private folder holding the reassembled bundle
    index: PartsIndex
    rebuilt: Optional[str]     # the part rebuilt from parity, if any

    def fields(self) -> Dict[str, Any]:
        """What a command's result says about the parts."""
        return {"bundle": self.folder, "parts": len(self.index.parts),
                "rebuilt_part": self.rebuilt}


def holds_parts(source: str) -> bool:
    """True for a parts index file, or a folder holding at least one."""
    return envelope.kind_of(source) == envelope.PARTS


def pick_index(folder: str, arch: str) -> Optional[str]:
    """The index file of the newest parts set for ``arch`` in ``folder``; None when the folder
    holds no index or its newest bundle for ``arch`` is a whole file (the ordinary path)."""
    names = os.listdir(folder)
    indices = [n[:-len(INDEX_SUFFIX)] for n in names if n.endswith(INDEX_SUFFIX)]
    if not indices:
        return None
    whole = [n for n in names if policy.parse_bundle_filename(n) is not None]
    chosen = policy.pick_bundle(sorted(set(indices + whole)), arch, folder=folder)
    if chosen.file in whole:
        return None
    return os.path.join(folder, index_name(chosen.file))


def _check_space(where: str, need: int, bundle: str) -> None:
    st = os.statvfs(where)
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise EnvironmentProblem(
            f"reassembling {bundle} from its parts needs {policy.human_bytes(need)} in "
            f"{where}; {policy.human_bytes(free)} free",
            hint="free space there, or `cat` the parts into one bundle file on a roomier disk "
                 "and pass that file")


@contextmanager
def bundle_source(folder: str, *, arch: str, anchor: bytes, now: int, work_dir: str,
                  report: Optional[Callable[[str], None]] = None,
                  progress: Progress = None) -> Iterator[Optional[FromParts]]:
    """``None`` unless ``folder`` is a folder holding a parts set for ``arch``. Otherwise: the
    index's signature is verified against ``anchor`` first, every part is checked against it
    while it is copied (once) into a private folder under ``work_dir``, one missing or damaged
    part is rebuilt from parity, and every bad part is named when that is impossible. The
    private folder is removed when the block ends."""
    if folder.endswith(INDEX_SUFFIX) and not os.path.isdir(folder):
        path: Optional[str] = folder  # the index file itself
        folder = os.path.dirname(folder) or "."
    else:
        path = pick_index(folder, arch)
    if path is None:
        yield None
        return
    index = read_index(path, anchor=anchor, now=now)
    if index_name(index.bundle) != os.path.basename(path):
        raise FormatError(f"parts index {path} is signed for {index.bundle}",
                          hint="the index was renamed; copy the parts set again")
    os.makedirs(work_dir, exist_ok=True)
    _check_space(work_dir, index.size, index.bundle)
    tmp = tempfile.mkdtemp(prefix=".parts-", dir=work_dir)
    try:
        if report is not None:
            report(f"verified the parts index of {index.bundle}; reading "
                   f"{len(index.parts)} parts ({policy.human_bytes(index.size)}) from {folder}")
        done = reassemble(folder, index, tmp, on_bytes=progress(
            index.size, "read from parts") if progress else None)
        if done.rebuilt is not None and report is not None:
            report(f"part {done.rebuilt} was missing or damaged: rebuilt it from "
                   f"{index.parity.name if index.parity else 'parity'}")
        yield FromParts(folder, tmp, index, done.rebuilt)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
