"""Progress for long copies: one plain line every few percent (no terminal control codes, so
it reads the same on a serial console, in a log file and over ssh).

The library code only calls the ``on_bytes`` callback it is given; the CLI decides whether to
show anything (not with ``--json`` or ``--quiet``).
"""

import time
from typing import Callable

from installer.policy import human_bytes

STEP_PERCENT = 5
MIN_BYTES = 64 * 1024 * 1024  # smaller copies finish before a line would help


class Meter:
    """Counts bytes and emits ``copied 45% (1.2 GiB of 2.7 GiB, 180.3 MiB/s)`` each time
    another ``step`` percent is done."""

    def __init__(self, total: int, what: str, emit: Callable[[str], None], *,
                 step: int = STEP_PERCENT, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.what = what
        self.emit = emit
        self.step = step
        self.clock = clock
        self.done = 0
        self.next_percent = step
        self.started = clock()

    def __call__(self, n: int) -> None:
        self.done += n
        if self.total <= 0:
            return
        percent = self.done * 100 // self.total
        if percent < self.next_percent:
            return
        shown = min(100, percent - percent % self.step)
        self.next_percent = shown + self.step
        elapsed = max(self.clock() - self.started, 1e-6)
        self.emit(f"{self.what} {shown}% ({human_bytes(self.done)} of "
                  f"{human_bytes(self.total)}, {human_bytes(int(self.done / elapsed))}/s)")


def factory(emit: Callable[[str], None], *, min_bytes: int = MIN_BYTES
            ) -> Callable[[int, str], Callable[[int], None]]:
    """What the CLI passes to ``install``: a meter per long copy, nothing for short ones."""
    def make(total: int, what: str) -> Callable[[int], None]:
        if total < min_bytes:
            return lambda n: None
        return Meter(total, what, emit)
    return make
