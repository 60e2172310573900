"""One room's WebSocket connection: connect, read, send, reconnect. Never touches a widget.

The app runs :meth:`RoomConnection.run` in an async worker, one per joined room, and receives
everything that happens as Textual messages through the ``post`` callable it passed in
(normally ``App.post_message``). The connection reads continuously, because httpx-ws answers
the server's keepalive pings only while someone reads.

Frames arrive in batches (:class:`RoomConnection.FramesReceived`): during a flood a Textual
message per frame would cost more than everything the app does with the frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote, urlsplit

import httpx
from httpx_ws import (
    AsyncWebSocketSession,
    HTTPXWSException,
    WebSocketDisconnect,
    WebSocketInvalidTypeReceived,
    WebSocketNetworkError,
    WebSocketUpgradeError,
    aconnect_ws,
)
from textual.message import Message
from wsproto.utilities import LocalProtocolError

from chat_server import protocol
from chat_server.protocol import CloseCode, Frame, FrameKind
from chat_tui.autostart import is_loopback
from chat_tui.scrollback import SendState

CONNECT_TIMEOUT = 10.0
# How long close() waits for the connection to finish its closing handshake.
CLOSE_TIMEOUT = 5.0
# Client-side pacing, below the reference server's default flood limit (10 messages/s, burst
# 20), so that a flush of messages queued while offline, or a quick series of pastes, is not
# dropped by the server as flooding. 0 turns pacing off.
SEND_RATE = 8.0
SEND_BURST = 16
# A connection that stayed up this long counts as healthy: the next loss backs off from scratch.
HEALTHY_AFTER = 5.0

# Frames that arrive within this long of the previous batch wait for the next one, so that a
# flood costs one Textual message per BATCH_INTERVAL instead of one per frame. A frame after a
# quiet spell is posted at once; in a flood, the added latency is at most this.
BATCH_INTERVAL = 0.005

_LOST = "connection lost (1006 connection dropped)"

_CLOSE_NAMES = {
    1000: "normal closure",
    1001: "server going away",
    1003: "unsupported data",
    1005: "no status",
    1006: "connection dropped",
    1008: "policy violation",
    1009: "message too big",
    1011: "internal error",
    1012: "server restarting",
    1013: "try again later",
}


class ConnectionState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    OFFLINE = "offline"  # lost; will retry with backoff
    FAILED = "failed"  # refused by the server (1008 etc.); not retried in a tight loop
    CLOSED = "closed"  # we left


@dataclass(slots=True)
class _Outgoing:
    local_id: int
    wire: str  # the text as sent, already sanitised, so the server echoes it unchanged


@dataclass(frozen=True, slots=True)
class Echo:
    """A batch item: the server echoed our message ``local_id`` as ``frame``; it is SENT."""

    frame: Frame
    local_id: int


@dataclass(frozen=True, slots=True)
class Refused:
    """A batch item: the server dropped or refused our message ``local_id``."""

    local_id: int


# What a batch holds: a plain Frame is a frame that is not the echo of one of ours.
Arrival = Frame | Echo | Refused


@dataclass(slots=True)
class _Ending:
    """How one connection attempt ended, and what the run loop should do next."""

    state: ConnectionState
    detail: str
    retry_in: float | None  # None: never retry


class RoomConnection:
    """The connection to one room, kept alive until :meth:`close`.

    Delivery is *at least once*: a message written to the socket but not yet echoed back when
    the connection drops is sent again after reconnecting, because there is no way to know
    whether the server broadcast it before the drop. Nothing typed is lost; in the rare case
    of a drop between broadcast and echo, the room sees that message twice.

    Echo matching: the server echoes our messages as ``{our name} :: {text}`` in the order it
    received them. Outstanding messages are matched first in, first out; an outstanding message
    that a later echo overtook was dropped by the server and is marked REFUSED, and an
    ``error:`` notice marks the oldest outstanding message REFUSED. Without a name (a server
    that does not send our join notice first) an echo is recognised by its text alone.

    Frames and what they say about our messages are posted in order as batches
    (:class:`FramesReceived`). For one frame: a Refused for any overtaken messages, then the
    frame (an Echo when it is ours, which also means SENT). Every other message (StateChanged,
    NameAssigned, SendStateChanged) is posted after the batch of what arrived before it, so the
    app sees everything in the order it happened.
    """

    class StateChanged(Message):
        def __init__(
            self, room: str, state: ConnectionState, detail: str, retry_in: float | None
        ) -> None:
            super().__init__()
            self.room = room
            self.state = state
            self.detail = detail
            self.retry_in = retry_in

    class NameAssigned(Message):
        def __init__(self, room: str, name: str) -> None:
            super().__init__()
            self.room = room
            self.name = name

    class FramesReceived(Message):
        """What arrived in a burst, oldest first: frames, echoes of ours, refusals.

        Equivalent to, in order, a FrameReceived per Frame; FrameReceived(frame, local_id) and
        then SendStateChanged(SENT) per Echo; SendStateChanged(REFUSED) per Refused.
        """

        def __init__(self, room: str, items: list[Arrival]) -> None:
            super().__init__()
            self.room = room
            self.items = items

    class FrameReceived(Message):
        """A frame from the server; ``local_id`` is set when it is the echo of our message.

        RoomConnection itself posts frames as FramesReceived; the app handles both.
        """

        def __init__(self, room: str, frame: Frame, local_id: int | None) -> None:
            super().__init__()
            self.room = room
            self.frame = frame
            self.local_id = local_id

    class SendStateChanged(Message):
        def __init__(self, room: str, local_id: int, state: SendState) -> None:
            super().__init__()
            self.room = room
            self.local_id = local_id
            self.state = state

    def __init__(
        self,
        server_url: str,
        room: str,
        post: Callable[[Message], object],
        *,
        backoff_cap: float = 30.0,
        backoff_base: float = 0.5,
        send_rate: float = SEND_RATE,
        send_burst: int = SEND_BURST,
    ) -> None:
        self.server_url = server_url
        self.room = room
        self.url = server_url.rstrip("/") + protocol.CHAT_PATH_PREFIX + quote(room, safe="")
        self._post = post
        self.backoff_cap = backoff_cap
        self.backoff_base = backoff_base
        self.send_rate = send_rate
        self.send_burst = send_burst
        self.state = ConnectionState.CONNECTING
        self.name: str | None = None
        self._next_id = 0
        self._outbox: deque[_Outgoing] = deque()  # not yet written on the current connection
        self._inflight: deque[_Outgoing] = deque()  # written, echo not yet seen
        self._wake = asyncio.Event()  # the writer has something to send
        self._stop = asyncio.Event()  # close() was called
        self._closing = False
        self._attempt = 0
        self._session_task: asyncio.Task[_Ending] | None = None
        self._running = False
        self._run_done = asyncio.Event()
        self._rng = random.Random()
        self._got_frame = False
        self._batch: list[Arrival] | None = None  # not posted yet
        self._batch_timer: asyncio.TimerHandle | None = None
        self._batch_due = 0.0  # before this, an arrival waits to be posted with the next ones

    # --- public API -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Messages sent by the user and not yet echoed (queued or on the wire)."""
        return len(self._outbox) + len(self._inflight)

    def send(self, text: str) -> int:
        """Queue ``text`` for sending and return its local id; never blocks.

        The outcome arrives later as SendStateChanged (SENT or REFUSED). Text that is empty
        after sanitising, or too big for one frame, is refused at once and never sent.
        """
        self._next_id += 1
        local_id = self._next_id
        wire = protocol.sanitize(text)
        if wire is None or len(wire.encode()) > protocol.MAX_FRAME_BYTES:
            self._post_message(self.SendStateChanged(self.room, local_id, SendState.REFUSED))
            return local_id
        self._outbox.append(_Outgoing(local_id, wire))
        self._wake.set()
        return local_id

    async def run(self) -> None:
        """Connect, read and reconnect until :meth:`close` (or a permanent refusal)."""
        if self._running:
            raise RuntimeError("RoomConnection.run() is already running")
        self._running = True
        self._run_done.clear()
        try:
            # Proxy variables are for the outside world; they must not capture a local server.
            trust_env = not is_loopback(self.url)
            async with httpx.AsyncClient(timeout=CONNECT_TIMEOUT, trust_env=trust_env) as client:
                while not self._closing:
                    self._set_state(ConnectionState.CONNECTING, f"connecting to {self.url}")
                    task = asyncio.create_task(self._session(client))
                    self._session_task = task
                    try:
                        await asyncio.wait({task})
                    finally:
                        # Cancelled from outside (the app exiting): cancelling the session
                        # makes httpx-ws send close 1000 before we go.
                        if not task.done():
                            task.cancel()
                            await asyncio.wait({task})
                        self._session_task = None
                    if self._closing or task.cancelled():
                        break
                    ending = task.result()
                    self._requeue_inflight()
                    self._set_state(ending.state, ending.detail, ending.retry_in)
                    if ending.retry_in is None:
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), ending.retry_in)
        finally:
            self._running = False
            self._run_done.set()
            if self._closing:
                self._set_state(ConnectionState.CLOSED, "left the room")

    async def close(self) -> None:
        """Leave the room: close code 1000, stop the loop (idempotent)."""
        self._closing = True
        self._stop.set()
        task = self._session_task
        if task is not None and not task.done():
            task.cancel()
        if self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._run_done.wait(), CLOSE_TIMEOUT)
        self._set_state(ConnectionState.CLOSED, "left the room")

    # --- internals --------------------------------------------------------------------------

    def _set_state(
        self, state: ConnectionState, detail: str, retry_in: float | None = None
    ) -> None:
        if state is ConnectionState.CLOSED and self.state is ConnectionState.CLOSED:
            return
        self.state = state
        self._post_message(self.StateChanged(self.room, state, detail, retry_in))

    def _post_message(self, message: Message) -> None:
        """Post ``message`` after everything that arrived before it."""
        self._flush_batch()
        self._post(message)

    def _arrived(self, item: Arrival) -> None:
        batch = self._batch
        if batch is not None:
            batch.append(item)
            return
        self._batch = [item]
        wait = self._batch_due - time.monotonic()
        if wait <= 0:
            self._flush_batch()
        else:
            self._batch_timer = asyncio.get_running_loop().call_later(wait, self._flush_batch)

    def _flush_batch(self) -> None:
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        batch = self._batch
        if batch:
            self._batch = None
            self._batch_due = time.monotonic() + BATCH_INTERVAL
            self._post(self.FramesReceived(self.room, batch))

    def _backoff(self) -> float:
        """Exponential backoff with full jitter, capped."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2**self._attempt)
        self._attempt += 1
        return self._rng.uniform(0, ceiling)

    def _requeue_inflight(self) -> None:
        # Written but never echoed: send again first, in the original order (at least once).
        if self._inflight:
            self._outbox.extendleft(reversed(self._inflight))
            self._inflight.clear()
        if self._outbox:
            self._wake.set()

    async def _session(self, client: httpx.AsyncClient) -> _Ending:
        """One connection attempt, from the handshake to its end."""
        started = time.monotonic()
        self._got_frame = False
        try:
            async with aconnect_ws(self.url, client) as ws:
                self._set_state(ConnectionState.CONNECTED, f"connected to {self.url}")
                writer = asyncio.create_task(self._write(ws))
                try:
                    await self._read(ws)
                except WebSocketDisconnect as exc:
                    ending = self._on_close(exc.code, exc.reason)
                except WebSocketNetworkError:
                    ending = _Ending(ConnectionState.OFFLINE, _LOST, None)
                finally:
                    writer.cancel()
                    await asyncio.wait({writer})
        except Exception as exc:
            # Handshake failures arrive bare; failures inside httpx-ws's task group arrive
            # wrapped in an exception group. Anything else is a bug and propagates.
            ending = self._on_error(exc)
        if self._got_frame or time.monotonic() - started >= HEALTHY_AFTER:
            self._attempt = 0
        if ending.state is ConnectionState.OFFLINE:
            ending.retry_in = self._backoff()
        return ending

    def _on_error(self, exc: Exception) -> _Ending:
        for leaf in _leaves(exc):
            if isinstance(leaf, WebSocketDisconnect):
                return self._on_close(leaf.code, leaf.reason)
            if isinstance(leaf, WebSocketUpgradeError):
                status = leaf.response.status_code
                return _Ending(
                    ConnectionState.FAILED,
                    f"the server refused the WebSocket handshake (HTTP {status})",
                    self.backoff_cap,
                )
            if isinstance(leaf, httpx.ConnectError):
                where = urlsplit(self.url).netloc
                return _Ending(
                    ConnectionState.OFFLINE,
                    f"server unreachable (nothing answers at {where})",
                    None,
                )
            if isinstance(leaf, httpx.TimeoutException):
                return _Ending(ConnectionState.OFFLINE, "server did not answer in time", None)
            if isinstance(leaf, WebSocketNetworkError | httpx.TransportError | OSError):
                return _Ending(ConnectionState.OFFLINE, _LOST, None)
        raise exc

    def _on_close(self, code: int, reason: str) -> _Ending:
        what = f"{code} {_CLOSE_NAMES.get(code, '')}".strip()
        detail = f"closed by the server ({what}{': ' + reason if reason else ''})"
        if code == CloseCode.POLICY_VIOLATION:
            if "slow consumer" in reason:
                return _Ending(ConnectionState.FAILED, detail, self.backoff_cap)
            return _Ending(ConnectionState.FAILED, detail, None)
        if code in (CloseCode.UNSUPPORTED_DATA, CloseCode.MESSAGE_TOO_BIG):
            # Resending the same messages could be refused the same way: drop the culprit
            # (the biggest outstanding message) and come back only after a long pause.
            if code == CloseCode.MESSAGE_TOO_BIG and self._inflight:
                culprit = max(self._inflight, key=lambda item: len(item.wire.encode()))
                self._inflight.remove(culprit)
                refused = self.SendStateChanged(self.room, culprit.local_id, SendState.REFUSED)
                self._post_message(refused)
            return _Ending(ConnectionState.FAILED, detail, self.backoff_cap)
        return _Ending(ConnectionState.OFFLINE, detail, None)

    async def _write(self, ws: AsyncWebSocketSession) -> None:
        """Send queued messages in order while the connection lasts, paced."""
        # The server's flood bucket is per connection and starts full: so does ours.
        tokens = float(self.send_burst)
        last = time.monotonic()
        try:
            while True:
                while self._outbox:
                    if self.send_rate > 0:
                        now = time.monotonic()
                        tokens = min(self.send_burst, tokens + (now - last) * self.send_rate)
                        last = now
                        if tokens < 1:
                            await asyncio.sleep((1 - tokens) / self.send_rate)
                            continue
                        tokens -= 1
                    item = self._outbox.popleft()
                    # In flight before the write: the echo may be read before write() returns.
                    self._inflight.append(item)
                    await ws.send_text(item.wire)
                self._wake.clear()
                await self._wake.wait()
        except (HTTPXWSException, LocalProtocolError, OSError):
            # The reader sees the same failure and ends the session; the unacknowledged
            # messages are re-queued then.
            return

    async def _read(self, ws: AsyncWebSocketSession) -> None:
        """Read frames until the connection ends, which raises."""
        first = True
        while True:
            try:
                text = await ws.receive_text()
            except WebSocketInvalidTypeReceived:
                continue  # binary frames are not part of the protocol: ignore them
            frame = protocol.parse_frame(text)
            if first:
                first = False
                name = frame.name if frame.kind is FrameKind.JOIN else None
                self.name = name
                self._got_frame = True
                if name is not None:
                    self._post_message(self.NameAssigned(self.room, name))
            self._handle(frame)

    def _handle(self, frame: Frame) -> None:
        local_id: int | None = None
        refused: list[int] = []
        inflight = self._inflight
        if inflight and frame.kind is FrameKind.MESSAGE:
            if self.name is not None:
                if frame.name == self.name:
                    for index, item in enumerate(inflight):
                        if item.wire == frame.text:
                            # The server keeps our order, so everything before it was dropped.
                            refused = [inflight.popleft().local_id for _ in range(index)]
                            local_id = inflight.popleft().local_id
                            break
            else:
                for item in inflight:
                    if item.wire == frame.text:
                        inflight.remove(item)
                        local_id = item.local_id
                        break
        elif inflight and frame.kind is FrameKind.ERROR:
            refused = [inflight.popleft().local_id]
        for rid in refused:
            self._arrived(Refused(rid))
        self._arrived(frame if local_id is None else Echo(frame, local_id))


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
