"""Per-connection input budgets, measured when the bytes arrive (not when the app reads them).

A :class:`Budget` is a token bucket: ``rate`` units per second, at most ``burst`` saved up. It
is charged where frames are parsed (``uvicorn_ws.py``), so frames that never reach the app
(continuations, pings, pongs) count, and a member's messages are judged by when it sent them.
When the whole event loop stood still (measured by ``loop_lag.monitor``), a member's frames
waited in the kernel and then arrive at once: the bucket's cap is lifted by what it would have
earned meanwhile, so a compliant sender loses nothing to the server's own stall.
"""

from __future__ import annotations

from chat_server.loop_lag import monitor


class Budget:
    __slots__ = ("_last", "_stalled", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = now
        self._stalled = monitor.stalled_seconds(now)

    def spend(self, amount: float, now: float) -> bool:
        """Take ``amount`` units arrived at ``now`` (``loop.time()``); False if over budget."""
        elapsed = now - self._last
        if elapsed > 0:
            stalled = monitor.stalled_seconds(now)
            cap = self.burst + self.rate * max(0.0, stalled - self._stalled)
            self._stalled = stalled
            self._tokens = min(cap, self._tokens + elapsed * self.rate)
            self._last = now
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False


def budget(rate: float, burst: float, now: float) -> Budget | None:
    """A budget, or None when ``rate`` is 0 (no limit)."""
    return Budget(rate, burst, now) if rate > 0 else None
