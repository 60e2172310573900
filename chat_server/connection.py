"""One member's side of a room: a bounded outgoing buffer, how it drains, and a flood limit.

Fan-out never awaits a member's socket: the room hub calls :meth:`Member.deliver`, which only
appends to the member's queue. A member whose queue grows past its byte bound cannot keep up
and is evicted; the others never wait for it.

Two ways to drain a queue:

* :class:`TransportMember` (under ``chat-server``): frames are encoded once per event (the
  bytes are cached on the event, shared by every member) and written straight into the
  connection's transport by one flush per event-loop iteration for all members, while the
  transport is writable. No task per member, one write per member per iteration however many
  frames arrived.
* :class:`AsgiMember` (under plain ``uvicorn chat_server:app``): one writer task per member
  awaits ASGI ``send`` for each frame.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from chat_server.events import EventKind, RoomEvent
from chat_server.metrics import stats
from chat_server.protocol import CloseCode

Send = Callable[[dict[str, Any]], Awaitable[None]]

# Most bytes handed to a transport in one write: what sits in the transport's own buffer
# stays bounded by its high-water mark plus this.
WRITE_CHUNK = 64 * 1024


def text_size(frame: str) -> int:
    """Bytes the frame occupies on the wire (UTF-8), cheaply for the common ASCII case."""
    return len(frame) if frame.isascii() else len(frame.encode())


def encode_text_frame(text: str) -> bytes:
    """An unmasked, unfragmented, uncompressed server-to-client text frame (RFC 6455 5.2)."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 65536:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


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


# (member, close code, reason): the server lets go of the member.
OnDrop = Callable[["Member", int, str], None]


class Member:
    """A connection in a room, as the hub and the fan-out see it."""

    __slots__ = (
        "_awaiting_join",
        "_queued_bytes",
        "closed",
        "limit_bytes",
        "name",
        "on_drop",
        "room",
    )

    def __init__(self, name: str, room: str, limit_bytes: int, on_drop: OnDrop) -> None:
        self.name = name
        self.room = room
        self.limit_bytes = limit_bytes
        self.on_drop = on_drop
        self.closed = False
        self._queued_bytes = 0
        # Events published before our own join notice reached us are not ours to see: the
        # join notice must be the first frame, whatever the broker's delivery timing.
        self._awaiting_join = True

    def deliver(self, event: RoomEvent) -> None:
        if self.closed or (self._awaiting_join and not self._is_own_join(event)):
            return
        self._enqueue(event.frame)

    def _is_own_join(self, event: RoomEvent) -> bool:
        if event.kind is EventKind.JOIN and event.name == self.name:
            self._awaiting_join = False
            return True
        return False

    def deliver_private(self, frame: str) -> None:
        """Queue a notice for this member only (``error:``), under the same bound."""
        # Only ever sent in answer to the member's own frames, so after its join notice.
        if not self._awaiting_join and not self.closed:
            self._enqueue(frame)

    def drop(self, code: int, reason: str) -> None:
        """Stop sending and have the server let go of the connection (once)."""
        if self.closed:
            return
        self.close()
        self.on_drop(self, code, reason)

    def _enqueue(self, frame: str) -> None:
        raise NotImplementedError

    def _overflowed(self, size: int) -> bool:
        self._queued_bytes += size
        if self._queued_bytes <= self.limit_bytes:
            return False
        self.drop(CloseCode.POLICY_VIOLATION, "slow consumer")
        return True

    def close(self) -> None:
        """Stop sending: drop whatever is queued."""
        self.closed = True
        self._queued_bytes = 0


class FrameSink(Protocol):
    """Raw access to a connection's transport, offered by ``uvicorn_ws``."""

    def writable(self) -> bool:
        """Open, not paused by flow control, and with no extension that rewrites frames."""

    def write(self, data: bytes) -> None: ...

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` when a paused transport can take data again."""


class _Flusher:
    """Runs every marked member's flush once per event-loop iteration."""

    def __init__(self) -> None:
        self._marked: list[TransportMember] = []
        self._since = 0.0

    def mark(self, member: TransportMember) -> None:
        if not self._marked:
            asyncio.get_running_loop().call_soon(self._flush)
            self._since = time.monotonic()
        self._marked.append(member)

    def _flush(self) -> None:
        marked, self._marked = self._marked, []
        for member in marked:
            member.flush()
        # Fan-out latency: from the first frame queued in this round to the last local write.
        stats.fanout_latency.observe(time.monotonic() - self._since)


_flusher = _Flusher()


class TransportMember(Member):
    __slots__ = ("_marked", "_queue", "_sink")

    def __init__(
        self, name: str, room: str, limit_bytes: int, on_drop: OnDrop, sink: FrameSink
    ) -> None:
        super().__init__(name, room, limit_bytes, on_drop)
        self._sink = sink
        self._queue: deque[bytes] = deque()
        self._marked = False
        sink.on_writable(self._resumed)

    def deliver(self, event: RoomEvent) -> None:
        # Fan-out's hot path, one call per member and event: Member.deliver's checks, then the
        # frame's bytes, encoded once per event for all members, under the byte bound.
        if self.closed or (self._awaiting_join and not self._is_own_join(event)):
            return
        data = event.data
        if data is None:
            data = event.data = encode_text_frame(event.frame)
        self._append(data)

    def _enqueue(self, frame: str) -> None:
        self._append(encode_text_frame(frame))

    def _append(self, data: bytes) -> None:
        self._queued_bytes += len(data)
        if self._queued_bytes > self.limit_bytes:
            self.drop(CloseCode.POLICY_VIOLATION, "slow consumer")
            return
        self._queue.append(data)
        if not self._marked:
            self._marked = True
            _flusher.mark(self)

    def flush(self) -> None:
        self._marked = False
        queue = self._queue
        sink = self._sink
        # The transport pauses itself (synchronously, inside write) past its high-water mark;
        # what is left waits here, counted against our bound, until it resumes.
        while queue and sink.writable():
            data = queue.popleft()
            frames = 1
            if queue and len(data) < WRITE_CHUNK:
                parts = [data]
                size = len(data)
                while queue and size < WRITE_CHUNK:
                    part = queue.popleft()
                    parts.append(part)
                    size += len(part)
                data = b"".join(parts)
                frames = len(parts)
            stats.frames_out += frames
            self._queued_bytes -= len(data)
            sink.write(data)
            stats.bytes_out += len(data)

    def _resumed(self) -> None:
        if self._queue and not self._marked and not self.closed:
            self._marked = True
            _flusher.mark(self)

    def close(self) -> None:
        super().close()
        self._queue.clear()
        self._sink.on_writable(None)

    async def drain(self) -> None:
        """Nothing to wait for: flushing needs no task of its own."""


class AsgiMember(Member):
    __slots__ = ("_queue", "_send", "_waiter", "_writer")

    def __init__(self, name: str, room: str, limit_bytes: int, on_drop: OnDrop, send: Send) -> None:
        super().__init__(name, room, limit_bytes, on_drop)
        self._send = send
        self._queue: deque[str] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._writer = asyncio.create_task(self._run_writer())

    def _enqueue(self, frame: str) -> None:
        if self._overflowed(text_size(frame)):
            return
        self._queue.append(frame)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        super().close()
        self._queue.clear()
        # The writer may be stuck on a socket that no longer drains: stop it, never await it.
        self._writer.cancel()

    async def drain(self) -> None:
        """Wait for the writer to have stopped (after :meth:`close`)."""
        try:
            await self._writer
        except asyncio.CancelledError:
            if not self._writer.cancelled():
                raise

    async def _run_writer(self) -> None:
        queue = self._queue
        send = self._send
        loop = asyncio.get_running_loop()
        while not self.closed:
            if not queue:
                self._waiter = loop.create_future()
                await self._waiter
                self._waiter = None
                continue
            frame = queue.popleft()
            try:
                await send({"type": "websocket.send", "text": frame})
            except Exception:
                # The socket is gone; the receive side sees the disconnect and cleans up.
                self.closed = True
                return
            stats.frames_out += 1
            # The frame now sits in the transport: it no longer counts against our bound.
            if not self.closed:
                self._queued_bytes -= text_size(frame)
