"""Per-connection input budgets, measured when the bytes arrive (not when the app reads them).

A :class:`Budget` is the protocol's token bucket (``chat_protocol.rates``), charged where
frames are parsed (``transport/uvicorn_ws.py``), so frames that never reach the app
(continuations, pings, pongs) count, and a member's messages are judged by when it sent them.
When the whole event loop stood still (measured by ``loop_lag.monitor``), a member's frames
waited in the kernel and then arrive at once: the bucket's cap is lifted by what it would have
earned meanwhile, so a compliant sender loses nothing to the server's own stall.
"""

from __future__ import annotations

from chat_protocol.rates import TokenBucket
from chat_server.loop_lag import monitor


class Budget(TokenBucket):
    __slots__ = ("_stalled",)

    def __init__(self, rate: float, burst: float, now: float) -> None:
        super().__init__(rate, burst, now)
        self._stalled = monitor.stalled_seconds(now)

    def _cap(self, now: float) -> float:
        stalled = monitor.stalled_seconds(now)
        cap = self.burst + self.rate * max(0.0, stalled - self._stalled)
        self._stalled = stalled
        return cap


def budget(rate: float, burst: float, now: float) -> Budget | None:
    """A budget, or None when ``rate`` is 0 (no limit)."""
    return Budget(rate, burst, now) if rate > 0 else None
