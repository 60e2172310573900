"""The token bucket every rate in the protocol is: ``rate`` units per second, at most
``burst`` saved up. The server judges input with it (``chat_server.budget`` adds what a
stalled server owes its members); a client paces its sends below the server's bucket with
the same arithmetic."""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def _cap(self, now: float) -> float:
        """The most tokens that may be saved up at ``now`` (the burst)."""
        return self.burst

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self._cap(now), self._tokens + elapsed * self.rate)
            self._last = now

    def spend(self, amount: float, now: float) -> bool:
        """Take ``amount`` units at ``now``; False (nothing taken) if there are not enough."""
        self._refill(now)
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False

    def wait(self, amount: float, now: float) -> float:
        """Seconds from ``now`` until ``amount`` units can be spent (0: now)."""
        self._refill(now)
        missing = amount - self._tokens
        return 0.0 if missing <= 0 or self.rate <= 0 else missing / self.rate
