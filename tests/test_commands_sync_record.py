"""``tuf/sync.json`` is validated like ``state.json`` (THREATS 50, issue #24 row 8): an edited,
mistyped, truncated record, or a FIFO or folder in its place, is refused by `sync` with the
recovery hint (exit 3, no traceback, never a hang) while `status` keeps working and shows it;
a time ratchet far ahead of the clock is refused with a hint saying how to recover."""

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

from tests.bundles import cli
from tests.test_commands_sync_gate import PASS, Ring
from tests.test_rings_e2e import ok

RECORD = "var/lib/rancher/airgap/tuf/sync.json"


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Ring:
    ring = Ring(tmp_path_factory.mktemp("rec"))
    ring.publish("1.0.0")
    ok(ring.sync("--server", "--skip-start", *PASS))
    return ring


def _set(path: Path, value: Any) -> None:
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    elif path.exists() or path.is_symlink():
        path.unlink()
    if callable(value):
        value(path)
    else:
        path.write_bytes(value if isinstance(value, bytes) else json.dumps(value).encode())


def _edit(doc: Dict[str, Any], **changes: Any) -> Dict[str, Any]:
    return dict(doc, **changes)


CASES: Dict[str, Callable[[Dict[str, Any]], Any]] = {
    "failed-text": lambda d: _edit(d, failed="x"),
    "failed-bad-entry": lambda d: _edit(d, failed=[{"digest": 5}]),
    "ratchet-text": lambda d: _edit(d, ratchet="x"),
    "ratchet-bool": lambda d: _edit(d, ratchet=True),
    "ratchet-1e12": lambda d: _edit(d, ratchet=1_000_000_000_000),
    "ratchet-negative": lambda d: _edit(d, ratchet=-5),
    "metadata-wrong": lambda d: _edit(d, metadata={"timestamp": {"version": "x"}}),
    "pending-wrong": lambda d: _edit(d, pending={"digest": "../x"}),
    "not-an-object": lambda d: [1, 2],
    "truncated": lambda d: json.dumps(d).encode()[:20],
    "fifo": lambda d: (lambda p: os.mkfifo(p)),
    "folder": lambda d: (lambda p: p.mkdir()),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_edited_sync_record_is_refused_status_keeps_working(device: Ring, case: str) -> None:
    path = device.root / RECORD
    original = path.read_bytes()
    try:
        _set(path, CASES[case](json.loads(original)))
        st = cli("status", "--root", device.root, timeout=20)
        assert st.returncode == 0, st.stdout + st.stderr
        assert "sync record" in st.stdout and "Traceback" not in st.stderr
        js = cli("status", "--root", device.root, "--json", timeout=20)
        assert js.returncode == 0 and json.loads(js.stdout)["sync"]["error"]
        p = device.sync(*PASS)
        assert p.returncode == 3, (case, p.returncode, p.stderr)
        assert "sync.json" in p.stderr and "aside" in p.stderr and "Traceback" not in p.stderr
    finally:
        _set(path, original)
    assert json.loads(ok(device.sync(*PASS)))["action"] == "up-to-date"


def test_ratchet_ahead_of_the_clock_is_refused_with_a_hint(device: Ring) -> None:
    path = device.root / RECORD
    original = path.read_bytes()
    try:
        _set(path, _edit(json.loads(original), ratchet=int(time.time()) + 20 * 365 * 86400))
        p = device.sync(*PASS)
        assert p.returncode == 3, p.stdout + p.stderr
        assert "ahead of its clock" in p.stderr and "aside" in p.stderr, p.stderr
    finally:
        _set(path, original)
