"""installer/sources/transfer.py in-process, on a fake monotonic clock (THREATS 45): the deadline
of one transfer (size-scaled, shared by a nested transfer, narrowed by the announced length,
capped by the per-read timeout, ``TooSlow`` once passed), bodies read as they arrive and never
past their limit, and the partial file (an odd one removed, never followed; a longer one not
resumed). The slow-server behaviour end to end is tests/test_sources_deadline.py."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from installer.sources import transfer
from installer.sources.transfer import Deadline, TooSlow, Unavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(time, "monotonic", c)
    return c


class Resp:
    """What ``narrow`` and ``read_body`` use of an ``http.client.HTTPResponse``."""

    def __init__(self, body: bytes = b"", *, length: str | None = None, step: int = 1 << 30,
                 clock: Clock | None = None, tick: float = 0.0,
                 broken: BaseException | None = None) -> None:
        self.body, self.step, self.clock, self.tick, self.broken = body, step, clock, tick, broken
        self.headers = {} if length is None else {"Content-Length": length}
        self.asked: list[int] = []

    def read1(self, n: int) -> bytes:
        self.asked.append(n)
        if self.broken is not None:
            raise self.broken
        data, self.body = self.body[:min(n, self.step)], self.body[min(n, self.step):]
        if self.clock is not None:
            self.clock.now += self.tick
        return data


def test_the_deadline_is_the_base_plus_one_second_per_min_rate_bytes() -> None:
    assert transfer.MIN_RATE == 65536 and transfer.TRANSFER_TIMEOUT == 300.0
    assert transfer.transfer_deadline(10 * 65536) == 310.0
    assert transfer.transfer_deadline(100, base=5, min_rate=50) == 7.0


def test_time_left_inside_a_transfer_and_outside(clock: Clock) -> None:
    d = Deadline(lambda: 60.0)
    d.base, d.min_rate = 100.0, 10.0
    assert d.time_left("x") == 60.0   # no transfer: the per-read timeout
    with d.transfer(500):             # 100 + 50 s
        assert d.time_left("x") == 60.0
        clock.now += 120.0
        assert d.time_left("x") == 30.0
        with d.transfer(10 ** 9):     # nested: the outer deadline holds
            assert d.time_left("x") == 30.0
        clock.now += 29.5
        assert d.time_left("x") == 0.5
        clock.now += 0.5
        with pytest.raises(TooSlow) as e:
            d.time_left("blob b of r")
        assert e.value.message == ("blob b of r: too slow: 0 bytes in 150s, past this "
                                   "transfer's deadline")
        assert e.value.exit_code == 5 and "--transfer-timeout" in (e.value.hint or "")
        with pytest.raises(TooSlow, match="too slow: 7 bytes in 150s"):
            d.time_left("x", 7)
    assert d.time_left("x") == 60.0   # the transfer is over


def test_narrow_takes_the_announced_length_when_smaller(clock: Clock) -> None:
    d = Deadline(lambda: 1000.0)
    d.base, d.min_rate = 10.0, 1.0
    with d.transfer(1000):            # 1010 s
        clock.now += 5
        d.narrow(Resp(length="20"))  # type: ignore[arg-type]
        assert d.time_left("x") == 25.0
        d.narrow(Resp(length="500"))  # type: ignore[arg-type]
        assert d.time_left("x") == 25.0
    with d.transfer(1000):
        for odd in ("", "-1", "1e3", "9" * 19 + "9"):
            d.narrow(Resp(length=odd))  # type: ignore[arg-type]
        assert d.time_left("x") == 1000.0 and d.time_left("x") <= 1010
    d.narrow(Resp(length="20"))  # type: ignore[arg-type]
    assert d.time_left("x") == 1000.0


def test_read_body_stops_at_the_limit_in_steps_as_they_arrive(clock: Clock) -> None:
    d = Deadline(lambda: 60.0)
    r = Resp(b"0123456789abcdef", step=4)
    assert d.read_body(r, 10, what="x") == b"0123456789"  # type: ignore[arg-type]
    assert r.asked == [10, 6, 2]
    assert d.read_body(Resp(b"abc"), 10, what="x") == b"abc"  # type: ignore[arg-type]


def test_read_body_returns_a_body_that_ends_exactly_at_the_limit_as_the_deadline_passes(
        clock: Clock) -> None:
    d = Deadline(lambda: 60.0)
    d.base = 10.0
    with d.transfer(0):
        r = Resp(b"0123456789", clock=clock, tick=10.0)   # the last byte arrives at the end
        assert d.read_body(r, 10, what="x") == b"0123456789"  # type: ignore[arg-type]
        with pytest.raises(TooSlow, match="too slow: 0 bytes"):
            d.read_body(Resp(b"more"), 10, what="x")  # type: ignore[arg-type]


@pytest.mark.parametrize("error", [ConnectionResetError(104, "reset"), ValueError("closed")])
def test_a_broken_read_is_unavailable(error: BaseException) -> None:
    with pytest.raises(Unavailable, match="x: transfer broke"):
        Deadline(lambda: 60.0).read_body(Resp(broken=error), 10,  # type: ignore[arg-type]
                                         what="x")


def test_an_odd_partial_is_removed_never_followed_a_regular_one_kept(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep me")
    link = tmp_path / ".b.partial"
    link.symlink_to(target)
    transfer.clear_odd_partial(str(link))
    assert not os.path.lexists(link) and target.read_bytes() == b"keep me"
    (tmp_path / ".d.partial").mkdir()
    (tmp_path / ".d.partial" / "x").write_bytes(b"x")
    transfer.clear_odd_partial(str(tmp_path / ".d.partial"))
    assert not (tmp_path / ".d.partial").exists()
    transfer.clear_odd_partial(str(target))
    assert target.read_bytes() == b"keep me"
    transfer.clear_odd_partial(str(tmp_path / "none"))


def test_resume_state_hashes_what_is_there_unless_it_is_too_long(tmp_path: Path) -> None:
    partial = tmp_path / ".b.partial"
    partial.write_bytes(b"abcdef")
    h = hashlib.sha256()
    assert transfer.resume_state(str(partial), 6, h) == 6
    assert h.hexdigest() == hashlib.sha256(b"abcdef").hexdigest()
    assert transfer.resume_state(str(partial), 5, hashlib.sha256()) == 0
    assert transfer.resume_state(str(tmp_path / "none"), 5, hashlib.sha256()) == 0
    link = tmp_path / ".l.partial"
    link.symlink_to(partial)
    assert transfer.resume_state(str(link), 10, hashlib.sha256()) == 0
