"""``installer.commands.syncstate`` called in-process (issue #24 mutation run): the local ring
configuration, the sync record's validation (THREATS 50) at each of its bounds, the persister
of verified metadata, and the lock ``note_result`` waits for."""

import json
import os
import stat
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from installer.commands import syncstate
from installer.errors import ConfigError, FormatError
from installer.format import canonjson
from installer.host.layout import Layout
from installer.host.state import MAX_EPOCH
from tests.runlock import lock_held

ALL_HEX = "0123456789abcdef" * 4   # every hex digit: a proper subset test would refuse it
RECORD = "var/lib/rancher/airgap/tuf/sync.json"
CONFIG = "etc/rancher/airgap/ring.json"


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(str(tmp_path))


def _put(layout: Layout, rel: str, data: "bytes | Dict[str, Any] | list[Any]") -> Path:
    path = Path(layout.root) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return path


def _doc(**changes: Any) -> Dict[str, Any]:
    return dict({"ratchet": 0, "failed": []}, **changes)


def _failed(**changes: Any) -> Dict[str, Any]:
    return dict({"digest": ALL_HEX, "name": "edge", "version": "1.0.0", "at": 5,
                 "why": "exit 1"}, **changes)


def _pending(**changes: Any) -> Dict[str, Any]:
    return dict({"digest": ALL_HEX, "name": "edge", "version": "1.0.0", "since": 5,
                 "yanked": []}, **changes)


# ---------------------------------------------------------------------------- files and config

def test_read_json_missing_is_none_and_a_non_object_is_refused(layout: Layout) -> None:
    assert syncstate.read_json(os.path.join(layout.root, "nope.json"), "x") is None
    path = _put(layout, "a.json", [1, 2])
    with pytest.raises(ConfigError, match="not a JSON object"):
        syncstate.read_json(str(path), "a")
    _put(layout, "a.json", {"k": 1})
    assert syncstate.read_json(str(path), "a") == {"k": 1}


def test_a_document_of_exactly_the_size_limit_is_read_whole(layout: Layout) -> None:
    head = b'{"k":1'
    path = _put(layout, "big.json",
                head + b" " * (canonjson.MAX_DOCUMENT_BYTES - len(head) - 1) + b"}")
    assert syncstate.read_json(str(path), "big") == {"k": 1}
    trust = Path(syncstate.tuf_dir(layout))
    trust.mkdir(parents=True)
    (trust / "timestamp.json").write_bytes(path.read_bytes())
    _put(layout, "etc/rancher/airgap/root.json", b"{}")
    got = syncstate.load_trusted(layout, "canary", 7)
    assert got.timestamp is not None and len(got.timestamp) == canonjson.MAX_DOCUMENT_BYTES


def test_load_trusted_reads_each_role_and_the_ring_file(layout: Layout) -> None:
    _put(layout, "etc/rancher/airgap/root.json", b"root")
    trust = Path(syncstate.tuf_dir(layout))
    trust.mkdir(parents=True)
    for name in ("timestamp", "snapshot", "targets", "ring-canary"):
        (trust / f"{name}.json").write_bytes(name.encode())
    got = syncstate.load_trusted(layout, "canary", 9)
    assert (got.root, got.timestamp, got.snapshot, got.targets, got.ring, got.ratchet) == (
        b"root", b"timestamp", b"snapshot", b"targets", b"ring-canary", 9)


def test_write_json_into_an_existing_folder_is_canonical_and_0644(layout: Layout) -> None:
    path = os.path.join(layout.root, "d", "x.json")
    syncstate.write_json(path, {"b": 1, "a": 2})
    syncstate.write_json(path, {"b": 2})   # the folder exists now
    assert Path(path).read_bytes() == canonjson.encode({"b": 2})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_ring_names(layout: Layout) -> None:
    assert syncstate.ring_name_ok("canary-2")
    for bad in ("", "a b", "a/b", "-", "a.b"):
        assert not syncstate.ring_name_ok(bad), bad
    with pytest.raises(ConfigError, match="letters, digits"):
        syncstate.set_ring(layout, "a b")
    assert not (Path(layout.root) / CONFIG).exists()


def test_set_ring_takes_the_machine_id_then_keeps_its_device_id(layout: Layout) -> None:
    _put(layout, "etc/machine-id", b"abc123\n")
    got = syncstate.set_ring(layout, "canary")
    assert (got.ring, got.device_id) == ("canary", "abc123")
    assert got.config == str(Path(layout.root) / CONFIG)
    assert json.loads((Path(layout.root) / CONFIG).read_bytes()) == {
        "ring": "canary", "device_id": "abc123"}
    _put(layout, "etc/machine-id", b"other\n")
    assert syncstate.set_ring(layout, "stable").device_id == "abc123"


@pytest.mark.parametrize("stored", ["", 5, None])
def test_set_ring_replaces_an_empty_or_wrong_device_id(layout: Layout, stored: Any) -> None:
    _put(layout, "etc/machine-id", b"abc123\n")
    _put(layout, CONFIG, {"ring": "x", "device_id": stored})
    assert syncstate.set_ring(layout, "canary").device_id == "abc123"


def test_set_ring_without_a_machine_id_makes_a_random_one(layout: Layout) -> None:
    got = syncstate.set_ring(layout, "canary")
    assert len(got.device_id) == 32 and set(got.device_id) <= set("0123456789abcdef")


@pytest.mark.parametrize("data", [b"", b"\n  \n", b"\xff\xfe", None])
def test_machine_id_empty_unreadable_or_missing_is_none(layout: Layout, data: Any) -> None:
    if data is not None:
        _put(layout, "etc/machine-id", data)
    assert syncstate.machine_id(layout) is None


def test_machine_id_is_read_up_to_64_bytes(layout: Layout) -> None:
    _put(layout, "etc/machine-id", b"a" * 70)
    assert syncstate.machine_id(layout) == "a" * 64


@pytest.mark.parametrize("doc", [
    None, {"device_id": "d"}, {"ring": 5, "device_id": "d"}, {"ring": "canary"},
    {"ring": "canary", "device_id": 5}, {"ring": "a b", "device_id": "d"},
    {"ring": "canary", "device_id": "d\x1b[2J"}])
def test_read_config_refuses_a_missing_or_wrong_ring_json(layout: Layout, doc: Any) -> None:
    if doc is not None:
        _put(layout, CONFIG, doc)
    with pytest.raises(ConfigError, match="follows no ring"):
        syncstate.read_config(layout)


def test_read_config_returns_the_ring_and_device_id(layout: Layout) -> None:
    _put(layout, CONFIG, {"ring": "canary", "device_id": "d", "extra": 1})
    assert syncstate.read_config(layout) == {"ring": "canary", "device_id": "d"}


# ---------------------------------------------------------------------------- the record

def test_a_missing_record_reads_as_empty(layout: Layout) -> None:
    assert syncstate.read_record(layout) == {"failed": [], "ratchet": 0}


@pytest.mark.parametrize("data", [b"[1]", b"{", b'{"ratchet": "x"}'])
def test_a_bad_record_is_refused_with_the_hint(layout: Layout, data: bytes) -> None:
    _put(layout, RECORD, data)
    with pytest.raises(FormatError) as e:
        syncstate.read_record(layout)
    assert "sync.json is refused" in e.value.message and "aside" in str(e.value.hint)


def test_a_good_record_reads_back_as_saved(layout: Layout) -> None:
    doc = _doc(ratchet=MAX_EPOCH, last_sync=0, ring="canary", result="up to date",
               failed=[_failed()], metadata={"timestamp": {"version": 1, "expires": 2}},
               override={"version": 1}, pending=_pending(yanked=[{"name": "e", "version": "1"}]))
    syncstate.save_record(layout, doc)
    assert syncstate.read_record(layout) == doc


@pytest.mark.parametrize("doc", [
    _doc(), _doc(ratchet=MAX_EPOCH), _doc(last_sync=0), _doc(last_sync=MAX_EPOCH),
    _doc(ring="r", result="x"), _doc(failed=[_failed()] * syncstate.MAX_FAILED),
    _doc(failed=[_failed(at=0)]), _doc(metadata=None), _doc(metadata={}),
    _doc(metadata={"t": {"version": 0, "expires": MAX_EPOCH}}), _doc(override=None),
    _doc(override={}), _doc(pending=None), _doc(pending=_pending())])
def test_record_problem_accepts(doc: Dict[str, Any]) -> None:
    assert syncstate.record_problem(doc) == ""


@pytest.mark.parametrize("doc", [
    _doc(ratchet=-1), _doc(ratchet=MAX_EPOCH + 1), _doc(ratchet=True), _doc(ratchet="1"),
    _doc(last_sync=-1), _doc(last_sync="x"), _doc(ring=5), _doc(result=None),
    _doc(failed="x"), _doc(failed=[_failed()] * (syncstate.MAX_FAILED + 1)),
    _doc(failed=["x"]), _doc(failed=[_failed(digest=ALL_HEX[:63])]),
    _doc(failed=[_failed(digest=ALL_HEX + "0")]), _doc(failed=[_failed(digest=ALL_HEX.upper())]),
    _doc(failed=[_failed(digest="g" * 64)]), _doc(failed=[_failed(name=5)]),
    _doc(failed=[{k: v for k, v in _failed().items() if k != "why"}]),
    _doc(failed=[_failed(at=-1)]), _doc(failed=[_failed(), _failed(version=1)]),
    _doc(metadata=[]), _doc(metadata={"t": 5}), _doc(metadata={"t": {"version": 1}}),
    _doc(metadata={"t": {"version": 1, "expires": "x"}}), _doc(override=[]),
    _doc(pending="x"), _doc(pending=_pending(since="x")), _doc(pending=_pending(yanked=None)),
    _doc(pending=_pending(yanked=["x"])), _doc(pending=_pending(yanked=[{"name": "e"}])),
    _doc(pending=_pending(yanked=[{"name": "e", "version": 1}]))])
def test_record_problem_refuses(doc: Dict[str, Any]) -> None:
    assert syncstate.record_problem(doc)


def test_the_record_keeps_at_most_1000_failed_versions() -> None:
    assert syncstate.record_problem(_doc(failed=[_failed()] * 1000)) == ""
    assert syncstate.record_problem(_doc(failed=[_failed()] * 1001)) == (
        "failed must be a list of at most 1000 records")


def test_problems_name_what_is_wrong() -> None:
    assert "ratchet" in syncstate.record_problem(_doc(ratchet=-1))
    assert "failed[1] has a missing or wrong 'version'" in syncstate.record_problem(
        _doc(failed=[_failed(), _failed(version=1)]))
    assert syncstate.record_problem(_doc(failed=[5])) == "failed[0] must be an object"


# ---------------------------------------------------------------------------- persist, note

def test_persister_writes_each_role_where_it_belongs(layout: Layout) -> None:
    persist = syncstate.persister(layout, "canary")
    trust = Path(syncstate.tuf_dir(layout))
    persist("root", b"R")
    persist("timestamp", b"T")
    persist("snapshot", b"S")   # the folder exists now
    persist("canary", b"C")
    assert Path(layout.trust_anchor).read_bytes() == b"R"
    assert (trust / "timestamp.json").read_bytes() == b"T"
    assert (trust / "snapshot.json").read_bytes() == b"S"
    assert (trust / "ring-canary.json").read_bytes() == b"C"
    assert not (trust / "canary.json").exists() and not (trust / "root.json").exists()
    assert stat.S_IMODE((trust / "timestamp.json").stat().st_mode) == 0o644


def test_persister_none_deletes_but_never_the_root(layout: Layout) -> None:
    persist = syncstate.persister(layout, "canary")
    persist("root", b"R")
    persist("canary", b"C")
    persist("canary", None)
    persist("targets", None)   # absent: nothing to do
    persist("root", None)
    assert not (Path(syncstate.tuf_dir(layout)) / "ring-canary.json").exists()
    assert Path(layout.trust_anchor).read_bytes() == b"R"


@pytest.fixture
def held(layout: Layout) -> Iterator[None]:
    """The run lock held by someone else for 0.3 s."""
    with lock_held(layout.lock, release_after=0.3):
        yield


def test_note_result_waits_for_the_lock_and_keeps_pending(layout: Layout, held: None) -> None:
    syncstate.save_record(layout, _doc(pending=_pending()))
    syncstate.note_result(layout, "busy")
    got = syncstate.read_record(layout)
    assert got["result"] == "busy" and got["pending"] == _pending()
    syncstate.note_result(layout, "done", clear_pending=True)
    assert "pending" not in syncstate.read_record(layout)


def test_sync_status_without_a_ring_and_with_a_bad_record(layout: Layout) -> None:
    syncstate.save_record(layout, _doc(last_sync=3, result="ok", failed=[_failed()]))
    assert syncstate.sync_status(layout) == {
        "ring": None, "rollout_id": None, "last_sync": 3, "result": "ok", "metadata": None,
        "failed": [_failed()]}
    _put(layout, CONFIG, {"ring": "canary", "device_id": "d"})
    assert syncstate.sync_status(layout)["rollout_id"] == "d"
    _put(layout, RECORD, b"[]")
    got = syncstate.sync_status(layout)
    assert "refused" in got["error"] and "aside" in got["hint"]


def test_iso_time_clamps_to_the_last_representable_time() -> None:
    assert syncstate.iso_time(0) == "1970-01-01T00:00:00Z"
    assert syncstate.iso_time(MAX_EPOCH + 10 ** 6) == "9999-12-31T23:59:59Z"
