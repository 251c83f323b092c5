"""installer/sources/partsource.py in-process: the free-space check's boundary and refusal, an
index file passed by path versus a folder, a renamed index, and the frozen result (mutation
survivors of issue #24's run, tools/MUTATION.md)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from installer.errors import EnvironmentProblem, FormatError
from installer.sources import partsource
from tests.bundles import KeyDir, default_spec, write_spec
from tests.cli_helpers import bundle_proc

MiB = 1 << 20


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture(scope="module")
def split_set(tmp_path_factory: pytest.TempPathFactory, keys: KeyDir) -> Path:
    spec = default_spec("1.0.0")
    spec.images["bulk.tar"] = os.urandom(2 * MiB + 300_000)
    original = write_spec(spec, keys, tmp_path_factory.mktemp("orig"))
    folder = tmp_path_factory.mktemp("split") / "stick"
    folder.mkdir()
    shutil.copy(original, folder / original.name)
    r = bundle_proc("split", str(folder / original.name), "--max-part-size", "2M",
                    "--keys", str(keys.path), cwd=folder.parent)
    assert r.code == 0, r.err
    assert not (folder / original.name).exists()
    shutil.copy(original, folder.parent / original.name)
    return folder


def _index(folder: Path) -> Path:
    (index,) = folder.glob("*" + partsource.INDEX_SUFFIX)
    return index


def _open(source: Path, keys: KeyDir, work: Path, report: Any = None) -> Any:
    return partsource.bundle_source(str(source), arch="amd64",
                                    anchor=keys.root_json.read_bytes(),
                                    now=int(time.time()), work_dir=str(work), report=report)


class _Vfs:
    def __init__(self, free: int) -> None:
        self.f_bavail, self.f_frsize = free, 1


def test_a_folder_is_read_as_a_folder_and_an_index_path_as_its_file(
        split_set: Path, keys: KeyDir, tmp_path: Path) -> None:
    for source in (split_set, _index(split_set)):
        said: list[str] = []
        with _open(source, keys, tmp_path / "w", said.append) as got:
            assert got is not None and got.folder == str(split_set)
            assert len(said) == 1 and said[0].startswith("verified the parts index"), said
            assert got.rebuilt is None and os.listdir(got.source) == [got.index.bundle]
            with pytest.raises(dataclasses.FrozenInstanceError):
                got.rebuilt = "x"  # type: ignore[misc]
        assert not os.path.exists(got.source)


def test_a_renamed_index_is_refused(split_set: Path, keys: KeyDir, tmp_path: Path) -> None:
    folder = tmp_path / "stick"
    shutil.copytree(split_set, folder)
    index = _index(folder)
    renamed = folder / index.name.replace("1.0.0", "1.0.1")
    index.rename(renamed)
    with pytest.raises(FormatError, match="is signed for"):
        with _open(renamed, keys, tmp_path / "w"):
            pass


def test_free_space_exactly_the_bundle_size_is_enough_one_byte_less_is_refused(
        split_set: Path, keys: KeyDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _open(split_set, keys, tmp_path / "probe") as got:
        need = got.index.size
    monkeypatch.setattr(partsource.os, "statvfs", lambda where: _Vfs(need))
    with _open(split_set, keys, tmp_path / "w") as got:
        assert got is not None
    monkeypatch.setattr(partsource.os, "statvfs", lambda where: _Vfs(need - 1))
    with pytest.raises(EnvironmentProblem, match="needs .* free"):
        with _open(split_set, keys, tmp_path / "w2"):
            pass
    assert os.listdir(tmp_path / "w2") == []


def test_a_whole_bundle_beside_its_parts_is_read_as_the_whole_file(
        split_set: Path, tmp_path: Path) -> None:
    folder = tmp_path / "stick"
    shutil.copytree(split_set, folder)
    index = _index(folder)
    assert partsource.pick_index(str(folder), "amd64") == str(index)
    whole = split_set.parent / index.name[:-len(partsource.INDEX_SUFFIX)]
    shutil.copy(whole, folder / whole.name)
    assert partsource.pick_index(str(folder), "amd64") is None


def test_a_folder_whose_name_ends_like_an_index_is_read_as_a_folder(
        split_set: Path, keys: KeyDir, tmp_path: Path) -> None:
    folder = tmp_path / ("stick" + partsource.INDEX_SUFFIX)
    shutil.copytree(split_set, folder)
    with _open(folder, keys, tmp_path / "w") as got:
        assert got is not None and got.folder == str(folder)
