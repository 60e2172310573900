"""One member's side of a room: its bounded outgoing buffer, and how that drains.

Fan-out never awaits a member's socket: the room hub calls :meth:`Member.deliver`, which only
appends to the member's queue. A member whose queue grows past its byte bound cannot keep up
and is evicted; the others never wait for it.

Two ways to drain a queue (delivery itself, the dialect's frames and the byte bound are
written once, in :class:`Member`):

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
is missed or sent twice. Each member gets every event in its dialect (encoded once per event
for all members of that dialect), and in a numbered dialect its own messages' acks right
before the messages themselves.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from chat_protocol import close
from chat_protocol.close import Close
from chat_protocol.codec import Codec
from chat_server import asgi
from chat_server.events import JOIN_MARK, REPLACED, EventKind, RoomEvent
from chat_server.stats import stats

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


# (member, close, detail): the server lets go of the member.
OnDrop = Callable[["Member", Close, object], None]


_JOIN = EventKind.JOIN


class Member:
    """A connection in a room, as the hub and the fan-out see it.

    ``codec``: the dialect it speaks. ``hold``: it replays history on joining (see the
    module's docstring). ``ack_prefix``: the start of the de-duplication key of its own sends
    (``{token id}:``), by which it knows its own messages to acknowledge (numbered dialects).
    """

    __slots__ = (
        "_allowance",
        "_awaiting_join",
        "_crediting",
        "_gated",
        "_held",
        "_joined",
        "_queued_bytes",
        "ack_prefix",
        "admit",
        "after_join",
        "closed",
        "codec",
        "join_mark",
        "join_name",
        "limit_bytes",
        "name",
        "on_backlog",
        "on_drop",
        "room",
    )

    def __init__(
        self,
        name: str,
        room: str,
        codec: Codec,
        limit_bytes: int,
        on_drop: OnDrop,
        *,
        hold: bool = False,
        ack_prefix: str | None = None,
        on_backlog: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        # Told how much backlog is queued, as it changes (+ queued, - written or dropped).
        self.on_backlog = on_backlog
        # The name its join is published under (its name may change while it joins).
        self.join_name = name
        # Its join's own mark (published as the join's nonce): two connections of one resume
        # token joining at once each know their own join notice, not the other's, which has
        # the same name (each took the first for its own, and the leave that replaced the
        # older then closed both).
        self.join_mark = JOIN_MARK + secrets.token_hex(8)
        self.room = room
        self.codec = codec
        self.limit_bytes = limit_bytes
        self.on_drop = on_drop
        self.closed = False
        self.ack_prefix = ack_prefix
        self._queued_bytes = 0
        # Bytes that may be queued now: the bound, plus the member's own backlog (history,
        # recovery) still queued, which is the session's to bound, never a sign of a slow
        # consumer. Kept as one sum: the fan-out compares against it for every event.
        self._allowance = limit_bytes
        self._crediting = False  # what is queued now is backlog
        # Events published before our own join notice reached us are not ours to see: the
        # join notice must be the first frame, whatever the broker's delivery timing.
        self._awaiting_join = True
        self._gated = True  # awaiting the join, or holding: deliver() asks _gate
        # A numbered dialect always holds: its welcome comes first.
        self._held: list[RoomEvent] | None = [] if hold or codec.numbered else None
        self._joined: asyncio.Future[None] | None = None
        # A frame of its own right after its join notice (the room's topic, text dialect).
        self.after_join: str | None = None
        # Whether its own join notice admits it (the session's per-address share of new
        # rooms): asked when the notice comes, before anything reaches the client, whenever
        # the broker delivers it (before or after the publish's result).
        self.admit: Callable[[RoomEvent], bool] | None = None

    def deliver(self, event: RoomEvent) -> None:
        """Fan-out's hot path, one call per member and event: never blocks."""
        if self.closed or (self._gated and not self._gate(event)):
            return
        if self.ack_prefix is not None:
            self._ack_own(event)
        self._enqueue_event(event)

    def _ack_own(self, event: RoomEvent) -> None:
        """If ``event`` is this member's own message, its ack, first: the client knows it
        before it sees it."""
        prefix, nonce = self.ack_prefix, event.nonce
        if prefix is not None and nonce is not None and nonce.startswith(prefix):
            self._enqueue(self.codec.ack(nonce[len(prefix) :], event.offset, event.time))

    def _gate(self, event: RoomEvent) -> bool:
        """Whether a gated member is to get ``event`` now (it may have been held)."""
        held = self._held
        if self._awaiting_join:
            if event.kind is not _JOIN or event.name != self.join_name:
                return False
            if event.nonce is not None and event.nonce != self.join_mark:
                return False  # another connection's join under the same name
            if self.admit is not None and not self.admit(event):
                return False  # refused: the session closes it, not even its join notice sent
            self._awaiting_join = False
            if self._joined is not None and not self._joined.done():
                self._joined.set_result(None)
            if held is None:
                self._gated = False
                if self.after_join is None:
                    return True
            if not self.codec.numbered:
                # The join notice first, then the history (a welcome takes its place).
                self._enqueue_event(event)
                if self.after_join is not None:
                    self._enqueue(self.after_join)
            return False
        assert held is not None
        held.append(event)
        # Held events count against the bound as if queued (a room busy during the replay).
        self._overflowed(text_size(event.frame(self.codec)))
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
            self._queued_bytes -= sum(text_size(event.frame(self.codec)) for event in held)
        self._crediting = True
        for frame in frames:
            self._enqueue(frame)
        self._crediting = False
        for event in held or ():
            self.deliver(event)

    def removed(self, event: RoomEvent) -> None:
        """The room published this member's own leave: the broker has it no longer."""
        if self._awaiting_join or self.closed:
            return  # a newer connection of ours, replacing an older one
        self.drop(close.REPLACED if event.text == REPLACED else close.NOT_IN_ROOM)

    def signal(self, event: RoomEvent) -> None:
        """Typing (not to the typist), away or back: told to live members of numbered
        dialects only."""
        if not self.codec.numbered or self._gated:
            return
        if event.kind is not EventKind.TYPING or event.name != self.name:
            # Encoded once for every member of the dialect.
            self.deliver_private(event.frame(self.codec))

    def deliver_private(self, frame: str) -> None:
        """Queue a frame for this member only (an error, an ack), under the same bound."""
        # Only ever sent in answer to the member's own frames, so after its join notice.
        if not self._gated and not self.closed:
            self._enqueue(frame)

    def drop(self, why: Close, detail: object = None) -> None:
        """Stop sending and have the server let go of the connection (once)."""
        if self.closed:
            return
        self.close()
        self.on_drop(self, why, detail)

    def _enqueue(self, frame: str) -> None:
        """Queue one frame of this member's own."""
        raise NotImplementedError

    def _enqueue_event(self, event: RoomEvent) -> None:
        """Queue a room's event, encoded once for every member of its dialect."""
        raise NotImplementedError

    def _overflowed(self, size: int) -> bool:
        """Count ``size`` more bytes queued; past the bound the member is dropped."""
        self._queued_bytes += size
        if self._crediting:
            self._allowance += size
            if self.on_backlog is not None:
                self.on_backlog(size)
        if self._queued_bytes <= self._allowance:
            return False
        self.drop(close.SLOW_CONSUMER)
        return True

    def close(self) -> None:
        """Stop sending: drop whatever is queued."""
        self.closed = True
        self._queued_bytes = 0
        self._backlog_left(self.limit_bytes)

    def _written(self, size: int) -> None:
        """``size`` bytes left the queue for the socket (the backlog first)."""
        self._queued_bytes -= size
        if self._allowance > self.limit_bytes:
            self._backlog_left(max(self.limit_bytes, self._allowance - size))

    def _backlog_left(self, allowance: int) -> None:
        if self.on_backlog is not None and allowance != self._allowance:
            self.on_backlog(allowance - self._allowance)
        self._allowance = allowance

    async def drain(self) -> None:
        """Until nothing of this member's is being written any more (after :meth:`close`)."""


class FrameSink(Protocol):
    """Raw access to a connection's transport, offered by ``transport/uvicorn_ws.py``."""

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
    __slots__ = ("_marked", "_queue", "_sink", "_slot")

    def __init__(
        self,
        name: str,
        room: str,
        codec: Codec,
        limit_bytes: int,
        on_drop: OnDrop,
        sink: FrameSink,
        **options: object,
    ) -> None:
        super().__init__(name, room, codec, limit_bytes, on_drop, **options)  # type: ignore[arg-type]
        self._sink = sink
        self._slot = codec.slot
        self._queue: deque[bytes] = deque()
        self._marked = False
        sink.on_writable(self._resumed)

    def deliver(self, event: RoomEvent) -> None:
        # Fan-out's hot path (one call per member and event): Member.deliver and
        # _enqueue_event in one call, _append's work without its calls (on this path a
        # Python call costs more than all the rest). The frame's bytes are encoded once per
        # event and dialect for all members.
        if self.closed or (self._gated and not self._gate(event)):
            return
        if self.ack_prefix is not None:
            self._ack_own(event)
        data = event.wire[self._slot]
        if data is None:
            data = event.wire[self._slot] = encode_text_frame(event.frame(self.codec))
        # The byte bound, as in _overflowed (events are never backlog: they add no allowance).
        queued = self._queued_bytes = self._queued_bytes + len(data)
        if queued > self._allowance:
            self.drop(close.SLOW_CONSUMER)
            return
        self._queue.append(data)
        if not self._marked:
            self._marked = True
            _flusher.mark(self)

    def _enqueue_event(self, event: RoomEvent) -> None:
        # Off the hot path: the join notice that _gate lets through first.
        data = event.wire[self._slot]
        if data is None:
            data = event.wire[self._slot] = encode_text_frame(event.frame(self.codec))
        self._append(data)

    def _enqueue(self, frame: str) -> None:
        self._append(encode_text_frame(frame))

    def _append(self, data: bytes) -> None:
        if self._overflowed(len(data)):
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
            self._written(len(data))
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


class AsgiMember(Member):
    __slots__ = ("_queue", "_send", "_waiter", "_writer")

    def __init__(
        self,
        name: str,
        room: str,
        codec: Codec,
        limit_bytes: int,
        on_drop: OnDrop,
        send: asgi.SendFn,
        **options: object,
    ) -> None:
        super().__init__(name, room, codec, limit_bytes, on_drop, **options)  # type: ignore[arg-type]
        self._send = send
        self._queue: deque[str] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._writer = asyncio.create_task(self._run_writer())

    def _enqueue_event(self, event: RoomEvent) -> None:
        self._enqueue(event.frame(self.codec))

    def _enqueue(self, frame: str) -> None:
        if self._overflowed(text_size(frame)):
            return
        self._queue.append(frame)
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
                self._written(text_size(frame))
