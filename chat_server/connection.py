"""One member's side of a room: a bounded outgoing buffer, its writer, and a flood limit.

Fan-out never awaits a member's socket: the broker calls :meth:`Member.deliver`, which only
appends to a queue. Each member has one writer task that drains its queue into the socket.
A member whose queue grows past its byte bound cannot keep up and is evicted; the others
never wait for it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[None]]


def text_size(frame: str) -> int:
    """Bytes the frame occupies on the wire (UTF-8), cheaply for the common ASCII case."""
    return len(frame) if frame.isascii() else len(frame.encode())


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up. ``rate == 0`` never limits."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()

    def take(self) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class Member:
    """A connection in a room, as the broker and the fan-out see it."""

    __slots__ = (
        "_awaiting_join",
        "_queue",
        "_queued_bytes",
        "_send",
        "_waiter",
        "closed",
        "limit_bytes",
        "name",
        "on_overflow",
        "room",
    )

    def __init__(
        self,
        name: str,
        room: str,
        send: Send,
        limit_bytes: int,
        on_overflow: Callable[[Member], None],
        join_frame: str,
    ) -> None:
        self.name = name
        self.room = room
        self.limit_bytes = limit_bytes
        self.on_overflow = on_overflow
        self.closed = False
        self._send = send
        self._queue: deque[str] = deque()
        self._queued_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        # Frames published before our own join notice reached us are not ours to see: the
        # join notice must be the first frame, whatever the broker's delivery timing.
        self._awaiting_join: str | None = join_frame

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def deliver(self, frame: str) -> None:
        if self.closed:
            return
        if self._awaiting_join is not None:
            if frame != self._awaiting_join:
                return
            self._awaiting_join = None
        self._queued_bytes += text_size(frame)
        if self._queued_bytes > self.limit_bytes:
            self.closed = True
            self._queue.clear()
            self._queued_bytes = 0
            self._wake()
            self.on_overflow(self)
            return
        self._queue.append(frame)
        self._wake()

    def deliver_private(self, frame: str) -> None:
        """Queue a notice for this member only (``error:``), under the same bound."""
        # Only ever sent in answer to the member's own frames, so after its join notice.
        if self._awaiting_join is None:
            self.deliver(frame)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """Stop queueing and let the writer finish."""
        self.closed = True
        self._queue.clear()
        self._queued_bytes = 0
        self._wake()

    async def run_writer(self) -> None:
        """Drain the queue into the socket until the member is closed."""
        queue = self._queue
        send = self._send
        loop = asyncio.get_running_loop()
        while True:
            if not queue:
                if self.closed:
                    return
                self._waiter = loop.create_future()
                await self._waiter
                self._waiter = None
                continue
            frame = queue.popleft()
            try:
                await send({"type": "websocket.send", "text": frame})
            except Exception:
                # The socket is gone; the receive side sees the disconnect and cleans up.
                self.close()
                return
            # The frame now sits in the transport: it no longer counts against our bound.
            if not self.closed:
                self._queued_bytes -= text_size(frame)
