"""``bundler.repo.repotxn`` called directly: the lock, recovery from its journal, a failed
stage or journal write, where the staging folder goes, and the order files go live."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from bundler.errors import LocalError, SpecError
from bundler.repo import repotxn
from bundler.repo.repotxn import Change, Txn


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / "metadata").mkdir(parents=True)
    (r / "targets").mkdir()
    (r / "metadata" / "timestamp.json").write_bytes(b"old timestamp")
    return r


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_command_on_a_locked_repository_is_refused(repo: Path) -> None:
    first = Txn(repo)
    first.open()
    with pytest.raises(SpecError, match="another repository command is running"):
        Txn(repo).open()


def test_a_lock_that_cannot_be_opened_is_a_local_error(repo: Path) -> None:
    Txn(repo).lock_path.mkdir()        # a folder where the lock file goes
    with pytest.raises(LocalError, match="cannot lock"):
        Txn(repo).open()


def test_an_unreadable_journal_is_refused_and_nothing_applied(repo: Path) -> None:
    txn = Txn(repo)
    txn.stage.mkdir()
    (txn.stage / repotxn.JOURNAL).write_text("{not json")
    before = _tree(repo)
    with pytest.raises(LocalError, match="is unreadable"):
        txn.open()
    assert _tree(repo) == before


def test_a_failed_stage_leaves_the_repository_and_no_staging_folder(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kw: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(repotxn, "write_verified", full)
    txn = Txn(repo)
    before = _tree(repo)
    with pytest.raises(LocalError, match="cannot stage the change"):
        txn.commit(Change(files={"metadata/timestamp.json": b"new"}))
    assert _tree(repo) == before and not txn.stage.exists()


def test_a_failed_journal_write_leaves_the_repository_and_no_staging_folder(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = repotxn.write_verified

    def journal_full(path: object, *args: object, **kw: object) -> None:
        if str(path).endswith(repotxn.JOURNAL + ".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, *args, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(repotxn, "write_verified", journal_full)
    txn = Txn(repo)
    before = _tree(repo)
    with pytest.raises(LocalError, match="cannot write .*journal.json"):
        txn.commit(Change(files={"metadata/timestamp.json": b"new"}))
    assert _tree(repo) == before and not txn.stage.exists()


def test_the_staging_folder_is_inside_the_repository_when_the_parent_is_not_writable(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Txn(repo).stage.parent == repo.parent          # same filesystem, writable
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == repo.parent
                        else real(p, mode))
    assert Txn(repo).stage.parent == repo
    assert Txn(repo).lock_path.parent == repo


def test_a_deletion_that_empties_targets_keeps_the_folder(repo: Path) -> None:
    (repo / "targets" / "only.tar").write_bytes(b"x")
    (repo / "staged" / "metadata").mkdir(parents=True)
    (repo / "staged" / "metadata" / "1.canary.json").write_bytes(b"{}")
    txn = Txn(repo)
    txn.open()
    txn.commit(Change(deletes=["targets/only.tar", "staged/metadata/1.canary.json"]))
    assert (repo / "targets").is_dir() and not (repo / "targets" / "only.tar").exists()
    assert not (repo / "staged").exists()                  # emptied staged folders go


def test_files_go_live_bundles_then_metadata_then_deletions_then_timestamp_then_roots(
        repo: Path) -> None:
    (repo / "staged").mkdir()
    (repo / "staged" / "pending.json").write_bytes(b"{}")
    change = Change(files={"metadata/timestamp.json": b"t", "metadata/2.root.json": b"r",
                           "metadata/3.snapshot.json": b"s", "metadata/2.canary.json": b"c",
                           "targets/abc.edge.tar": b"b"},
                    deletes=["staged/pending.json"])
    txn = Txn(repo)
    txn.open()
    steps = txn._stage(change)
    assert [(s["op"], s["path"]) for s in steps] == [
        ("put", "targets/abc.edge.tar"), ("put", "metadata/2.canary.json"),
        ("put", "metadata/3.snapshot.json"), ("delete", "staged/pending.json"),
        ("put", "metadata/timestamp.json"), ("put", "metadata/2.root.json")]
    assert json.loads(json.dumps(steps)) == steps          # what the journal holds


def test_a_commit_writes_files_0644_into_new_folders_and_names_what_it_wrote(
        repo: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "edge.tar"
    bundle.write_bytes(b"bundle")
    sha = repotxn.hash_file(bundle)[0]
    txn = Txn(repo)
    txn.open()
    written = txn.commit(Change(files={"staged/metadata/2.canary.json": b"c"},
                                copies={"targets/abc.edge.tar": (bundle, sha, 6)},
                                deletes=["metadata/none.json"]))
    assert sorted(written) == [repo / "staged/metadata/2.canary.json",
                               repo / "targets/abc.edge.tar"]
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o644, path
    assert not txn.stage.exists()


def test_a_switch_killed_half_way_is_finished_by_the_next_command(repo: Path) -> None:
    change = Change(files={"metadata/3.snapshot.json": b"s", "metadata/timestamp.json": b"t"})
    txn = Txn(repo)
    txn.open()
    steps = txn._stage(change)
    (txn.stage / repotxn.JOURNAL).write_text(json.dumps({"steps": steps}))
    first = steps[0]                                   # renamed before the kill
    os.replace(txn.stage / first["src"], repo / first["path"])
    assert Txn(repo).interrupted()
    done = Txn(repo).recover()
    assert done == [s["path"] for s in steps]
    assert _tree(repo)["metadata/timestamp.json"] == b"t" and not txn.stage.exists()


def test_a_rename_that_fails_mid_switch_says_how_to_finish(repo: Path) -> None:
    (repo / "staged").write_bytes(b"a file where a folder must go")
    txn = Txn(repo)
    txn.open()
    with pytest.raises(LocalError, match="cannot finish the switch") as e:
        txn.commit(Change(files={"staged/pending.json": b"{}"}))
    assert "finishes the switch" in (e.value.hint or "") and txn.interrupted()
