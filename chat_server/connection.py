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

A member is *gated* until its own join notice comes through the room's stream: what the room
published before it is not the member's to see. A member that replays history on joining
(``?history=N``, chat.v2's welcome and recovery) stays gated after its join, holding the live
events, until the session has read what came before the join and calls :meth:`Member.go_live`:
welcome and history first, then what it held. The join's offset divides the two, so nothing
is missed or sent twice. chat.v2 members get each event as JSON (encoded once per event for
all of them), and their own messages' acks right before the messages themselves.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from chat_server import protocol
from chat_server.events import REPLACED, EventKind, RoomEvent
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


_MESSAGE, _JOIN = EventKind.MESSAGE, EventKind.JOIN


class Member:
    """A connection in a room, as the hub and the fan-out see it.

    ``v2``: it speaks chat.v2. ``hold``: it replays history on joining (see the module's
    docstring). ``ack_prefix``: the start of the de-duplication key of its own sends
    (``{token id}:``), by which it knows its own messages to acknowledge.
    """

    __slots__ = (
        "_awaiting_join",
        "_gated",
        "_held",
        "_joined",
        "_queued_bytes",
        "ack_prefix",
        "closed",
        "limit_bytes",
        "name",
        "on_drop",
        "room",
        "v2",
    )

    def __init__(
        self,
        name: str,
        room: str,
        limit_bytes: int,
        on_drop: OnDrop,
        *,
        v2: bool = False,
        hold: bool = False,
        ack_prefix: str | None = None,
    ) -> None:
        self.name = name
        self.room = room
        self.limit_bytes = limit_bytes
        self.on_drop = on_drop
        self.closed = False
        self.v2 = v2
        self.ack_prefix = ack_prefix
        self._queued_bytes = 0
        # Events published before our own join notice reached us are not ours to see: the
        # join notice must be the first frame, whatever the broker's delivery timing.
        self._awaiting_join = True
        self._gated = True  # awaiting the join, or holding: deliver() asks _gate
        self._held: list[RoomEvent] | None = [] if hold or v2 else None
        self._joined: asyncio.Future[None] | None = None

    def deliver(self, event: RoomEvent) -> None:
        if self.closed or (self._gated and not self._gate(event)):
            return
        if self.v2:
            self._deliver_v2(event)
        else:
            self._enqueue(event.frame)

    def _deliver_v2(self, event: RoomEvent) -> None:
        prefix = self.ack_prefix
        nonce = event.nonce
        if nonce is not None and prefix is not None and nonce.startswith(prefix):
            # Our own message: its ack first, so that the client knows it before it sees it.
            self._enqueue(protocol.v2_ack(nonce[len(prefix) :], event.offset, event.time))
        self._enqueue_v2(event)

    def _enqueue_v2(self, event: RoomEvent) -> None:
        self._enqueue(event.v2_frame())

    def _gate(self, event: RoomEvent) -> bool:
        """Whether a gated member is to get ``event`` now (it may have been held)."""
        held = self._held
        if self._awaiting_join:
            if event.kind is not _JOIN or event.name != self.name:
                return False
            self._awaiting_join = False
            if self._joined is not None and not self._joined.done():
                self._joined.set_result(None)
            if held is None:
                self._gated = False
                return True
            if not self.v2:
                self._enqueue(event.frame)  # the join notice first, then the history
            return False
        assert held is not None
        held.append(event)
        # Held events count against the bound as if queued (a room busy during the replay).
        self._overflowed(len(event.frame))
        return False

    async def joined(self) -> None:
        """Until this member's own join has come through the room's stream."""
        if not self._awaiting_join:
            return
        if self._joined is None:
            self._joined = asyncio.get_running_loop().create_future()
        await self._joined

    def go_live(self, frames: list[str]) -> None:
        """Send ``frames`` (welcome, history), then the events held since the join, then live.
        Only after :meth:`joined`."""
        held, self._held = self._held, None
        self._gated = False
        if self.closed:
            return
        if held:
            self._queued_bytes -= sum(len(event.frame) for event in held)
        for frame in frames:
            self._enqueue(frame)
        for event in held or ():
            self.deliver(event)

    def removed(self, event: RoomEvent) -> None:
        """The room published this member's own leave: the broker has it no longer."""
        if self._awaiting_join or self.closed:
            return  # a newer connection of ours, replacing an older one
        if event.text == REPLACED:
            self.drop(CloseCode.POLICY_VIOLATION, protocol.REPLACED_REASON)
        else:
            self.drop(CloseCode.SERVICE_RESTART, protocol.NOT_IN_ROOM_REASON)

    def deliver_private(self, frame: str) -> None:
        """Queue a notice for this member only (``error:``), under the same bound."""
        # Only ever sent in answer to the member's own frames, so after its join notice.
        if not self._gated and not self.closed:
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
        self,
        name: str,
        room: str,
        limit_bytes: int,
        on_drop: OnDrop,
        sink: FrameSink,
        **options: Any,
    ) -> None:
        super().__init__(name, room, limit_bytes, on_drop, **options)
        self._sink = sink
        self._queue: deque[bytes] = deque()
        self._marked = False
        sink.on_writable(self._resumed)

    def deliver(self, event: RoomEvent) -> None:
        # Fan-out's hot path, one call per member and event: Member.deliver's checks, then the
        # frame's bytes, encoded once per event for all members, under the byte bound.
        if self.closed or (self._gated and not self._gate(event)):
            return
        if self.v2:
            self._deliver_v2(event)
            return
        data = event.data
        if data is None:
            data = event.data = encode_text_frame(event.frame)
        self._append(data)

    def _enqueue_v2(self, event: RoomEvent) -> None:
        # The JSON frame's bytes, encoded once per event for all chat.v2 members.
        data = event.v2_data
        if data is None:
            data = event.v2_data = encode_text_frame(event.v2_frame())
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

    def __init__(
        self, name: str, room: str, limit_bytes: int, on_drop: OnDrop, send: Send, **options: Any
    ) -> None:
        super().__init__(name, room, limit_bytes, on_drop, **options)
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
