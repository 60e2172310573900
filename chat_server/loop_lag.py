"""How late the event loop runs: a tick every :data:`TICK_SECONDS` that measures its own delay.

Three users: ``/metrics`` (the lag histogram), the input budgets (``budget.py``), which must
not hold against a member the frames that piled up in the kernel while the whole server stood
still (:meth:`LoopMonitor.stalled_seconds` says how long that was), and the Redis backend's
deadlines (:func:`running_time`), which must not take our own stall for Redis's silence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

TICK_SECONDS = 0.05
# Delays up to this are ordinary scheduling, not a stall.
STALL_TOLERANCE = 0.01


class LoopMonitor:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._expected = 0.0
        self._stalled = 0.0
        self.on_lag: Callable[[float], None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.stop()
        self._loop = loop or asyncio.get_running_loop()
        self._schedule(self._loop.time())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._loop = None

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._expected = now + TICK_SECONDS
        self._handle = self._loop.call_at(self._expected, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        lag = max(0.0, now - self._expected)
        if lag > STALL_TOLERANCE:
            self._stalled += lag - STALL_TOLERANCE
        if self.on_lag is not None:
            self.on_lag(lag)
        self._schedule(now)

    def stalled_seconds(self, now: float) -> float:
        """Seconds the loop has stood still since :meth:`start`, the current stall included
        (``now`` is ``loop.time()``); 0 while the monitor is not running."""
        if self._loop is None:
            return self._stalled
        return self._stalled + max(0.0, now - self._expected - STALL_TOLERANCE)


monitor = LoopMonitor()


def running_time() -> float:
    """The running loop's clock without the time the loop stood still: for deadlines that
    judge someone else (a broker's answer), so that a stall of our own is never taken for
    theirs. Without a running monitor it is the loop's clock."""
    now = asyncio.get_running_loop().time()
    return now - monitor.stalled_seconds(now)
