"""One room's WebSocket connection: connect, read, send, reconnect. No Textual here.

The app runs :meth:`RoomConnection.run` in an async worker, one per joined room. Everything
that happens (state changes, our name, frames, what became of our messages) is appended, in
the order it happened, to the connection's queue (:attr:`RoomConnection.events`). Once the
queue has something, the connection calls ``wake()`` once, when arrivals pause or the queue
holds ``WAKE_AT`` events, whichever comes first; the app then takes everything waiting
(:meth:`RoomConnection.take`) in one go, and the next arrival starts the same again.

"Arrivals pause" is counted in turns of the event loop, not measured by a clock: a frame
takes two or three turns to come through httpx-ws (its reader hands each frame over
separately), so ``QUIET_TURNS`` turns without a new event mean that what had reached the
socket has been read. A flood is thus taken in slices of what had arrived (at most
``WAKE_AT`` events), and a lone message still reaches the app within a few turns. No timer
decides anything; the order of events is the order they happened, whatever the slices.

The connection reads continuously, because httpx-ws answers the server's keepalive pings only
while someone reads.

It offers the ``chat.v2`` subprotocol. A server that selects it welcomes us first (our name, the
room's epoch and offset, the app's resume token) and numbers every message: the connection then
asks, on every reconnect, for its name back (the shared :class:`~chat_tui.identity.Identity`)
and for every message after the last offset it saw (recovery), and it sends each message with
its send id as the nonce, so that the server's ack says which one was published (and a message
re-sent after a reconnect is acknowledged, never published twice). A server that does not select
it gets the original text protocol, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from urllib.parse import urlsplit

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
from wsproto.utilities import LocalProtocolError

from chat_protocol import close, http, limits, query, text, v1, v2
from chat_protocol.close import CloseCode, Then
from chat_protocol.frames import Ack, Frame, FrameKind, Welcome
from chat_protocol.query import JoinRequest
from chat_tui.autostart import is_local
from chat_tui.identity import Identity

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
# When to wake the app (see the module's docstring).
WAKE_AT = 500
QUIET_TURNS = 4
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0

# The room's log puts "connection lost: " in front of the detail: the detail says only how.
_LOST = "dropped (1006, no close frame)"


class ConnectionState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    OFFLINE = "offline"  # lost; will retry with backoff
    FAILED = "failed"  # refused by the server (1008 etc.); not retried in a tight loop
    CLOSED = "closed"  # we left


# --- what the queue carries ---------------------------------------------------------------------
# A plain Frame is a frame from the server that is not the echo of one of ours (live: on
# chat.v2 it has its offset and the server's time).


@dataclass(frozen=True, slots=True)
class StateChanged:
    state: ConnectionState
    detail: str
    retry_in: float | None = None  # seconds until the next attempt; None: none planned
    unreachable: bool = False  # nothing accepted the TCP connection (no server there)


@dataclass(frozen=True, slots=True)
class NameAssigned:
    """Our name in the room, from our own join notice (the first frame)."""

    name: str


@dataclass(frozen=True, slots=True)
class Echo:
    """The server echoed our message ``send_id`` as ``frame``: it is sent."""

    frame: Frame
    send_id: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The server dropped or refused our message ``send_id`` (or it could never be sent)."""

    send_id: str


@dataclass(frozen=True, slots=True)
class Welcomed:
    """chat.v2: we are in the room. ``backlog``: the history or recovered messages that came
    with the welcome, oldest first (all before any live frame); ``since``: the offset recovery
    was asked from (None: not asked, a first join)."""

    welcome: Welcome
    backlog: tuple[Frame, ...]
    since: int | None


@dataclass(frozen=True, slots=True)
class Acked:
    """chat.v2: our message ``send_id`` is published as message ``offset`` at the server's
    ``time`` (its own frame, which follows, is not passed on)."""

    send_id: str
    text: str
    offset: int
    time: datetime


Event = Frame | Echo | Acked | Refused | StateChanged | NameAssigned | Welcomed


@dataclass(slots=True)
class _Outgoing:
    send_id: str
    wire: str  # the text as sent, already sanitised, so the server echoes it unchanged


@dataclass(slots=True)
class _Ending:
    """How one connection attempt ended, and what the run loop should do next."""

    state: ConnectionState
    detail: str
    retry_in: float | None  # None: never retry
    unreachable: bool = False
    quiet: bool = False  # not a state the user needs to see (connecting again at once)


class _Rejoin(Exception):
    """The welcome gave this connection a name other than the app's: connect again with it."""


def backoff_ceiling(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """The longest wait before retry number ``attempt`` (0 first): doubling, capped."""
    return min(cap, base * 2**attempt)


class RoomConnection:
    """The connection to one room, kept alive until :meth:`close`.

    Delivery is *at least once*: a message written to the socket but not yet echoed back when
    the connection drops is sent again after reconnecting, because there is no way to know
    whether the server broadcast it before the drop. Nothing typed is lost; on the text
    protocol, in the rare case of a drop between broadcast and echo, the room sees that message
    twice. On chat.v2 the send id is the nonce: the server publishes it once and acknowledges
    every copy with the original offset (exactly once).

    Each message has a send id (a string unique to this client, fit to be a protocol nonce).
    Echo matching: the server echoes our messages as ``{our name} :: {text}`` in the order it
    received them. Outstanding messages are matched first in, first out; an outstanding message
    that a later echo overtook was dropped by the server and is REFUSED, and an ``error:``
    notice refuses the oldest outstanding message. Without a name (a server that does not send
    our join notice first) an echo is recognised by its text alone. On chat.v2 nothing is
    matched by text: acks and errors name the nonce.
    """

    def __init__(
        self,
        server_url: str,
        room: str,
        wake: Callable[[], object],
        *,
        backoff_cap: float = BACKOFF_CAP,
        backoff_base: float = BACKOFF_BASE,
        send_rate: float = SEND_RATE,
        send_burst: int = SEND_BURST,
        rng: random.Random | None = None,
        history: int = 0,
        identity: Identity | None = None,
    ) -> None:
        self.server_url = server_url
        self.room = room
        self.url = server_url.rstrip("/") + http.chat_path(room)
        self.history = history  # messages of history asked for on joining (chat.v2 only)
        self.identity = identity or Identity(server_url)
        # chat.v2: where we are in the room's numbering (recovery asks from here).
        self.epoch: str | None = None
        self.offset: int | None = None
        self.v2 = False  # the current (or last) connection speaks chat.v2
        self._wake = wake
        self.backoff_cap = backoff_cap
        self.backoff_base = backoff_base
        self.send_rate = send_rate
        self.send_burst = send_burst
        self.state = ConnectionState.CONNECTING
        self.name: str | None = None
        self.events: deque[Event] = deque()  # oldest first; the app takes them
        self._woken = False  # wake() was called and the app has not taken the queue since
        self._settling = False  # waiting for arrivals to pause before waking the app
        self._id_prefix = secrets.token_hex(4) + "-"
        self._next_id = 0
        self._outbox: deque[_Outgoing] = deque()  # not yet written on the current connection
        self._inflight: deque[_Outgoing] = deque()  # written, echo not yet seen
        self._writable = asyncio.Event()  # the writer has something to send
        # chat.v2: nothing is sent before the welcome says whose name (and token) this is.
        self._welcomed = asyncio.Event()
        self._stop = asyncio.Event()  # close() was called
        self._retry = asyncio.Event()  # retry_now() was called
        self._closing = False
        self._attempt = 0
        self._session_task: asyncio.Task[_Ending] | None = None
        self._running = False
        self._run_done = asyncio.Event()
        self._rng = rng or random.Random()
        self._got_frame = False
        # Offsets acked to us whose frames have not come yet (ascending): our own frame is not
        # news, its ack said it all.
        self._own_offsets: deque[int] = deque()

    # --- public API -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Messages sent by the user and not yet echoed (queued or on the wire)."""
        return len(self._outbox) + len(self._inflight)

    def take(self, limit: int | None = None) -> list[Event]:
        """What happened since the last call, oldest first (at most ``limit`` events)."""
        self._woken = False  # what comes next wakes the app again
        events = self.events
        if limit is None or limit >= len(events):
            taken = list(events)
            events.clear()
            return taken
        return [events.popleft() for _ in range(limit)]

    def send(self, line: str) -> str:
        """Queue ``text`` for sending and return its send id; never blocks.

        What becomes of it arrives later as an Echo (sent) or a Refused. Text that is empty
        after sanitising, or too big for one frame, is refused at once and never sent.
        """
        self._next_id += 1
        send_id = f"{self._id_prefix}{self._next_id}"
        wire = text.sanitize(line)
        if wire is None or len(wire.encode()) > limits.MAX_FRAME_BYTES:
            self._emit(Refused(send_id))
            return send_id
        self._outbox.append(_Outgoing(send_id, wire))
        self._writable.set()
        return send_id

    def retry_now(self) -> None:
        """If waiting to reconnect, stop waiting: try again at once (ctrl+r, /reconnect)."""
        self._attempt = 0
        self._retry.set()

    async def run(self) -> None:
        """Connect, read and reconnect until :meth:`close` (or a permanent refusal)."""
        if self._running:
            raise RuntimeError("RoomConnection.run() is already running")
        self._running = True
        self._run_done.clear()
        try:
            # Proxy variables are for the outside world; they must not capture a local server.
            trust_env = not is_local(self.url)
            async with httpx.AsyncClient(timeout=CONNECT_TIMEOUT, trust_env=trust_env) as client:
                while not self._closing:
                    self._retry.clear()
                    self._set_state(
                        StateChanged(ConnectionState.CONNECTING, f"connecting to {self.url}")
                    )
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
                    if not ending.quiet:
                        self._set_state(
                            StateChanged(
                                ending.state, ending.detail, ending.retry_in, ending.unreachable
                            )
                        )
                    if ending.retry_in is None:
                        return
                    await self._pause(ending.retry_in)
        finally:
            self._running = False
            self._run_done.set()
            if self._closing:
                self._set_state(StateChanged(ConnectionState.CLOSED, "left the room"))

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
        self._set_state(StateChanged(ConnectionState.CLOSED, "left the room"))

    # --- internals --------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        events = self.events
        events.append(event)
        if self._woken:
            return
        if len(events) >= WAKE_AT:
            self._wake_app()
        elif not self._settling:
            self._settling = True
            self._loop().call_soon(self._settle, len(events), 0)

    def _settle(self, seen: int, quiet: int) -> None:
        """Once per turn of the event loop until arrivals pause: then wake the app."""
        if self._woken or not self.events:
            self._settling = False
            return
        count = len(self.events)
        quiet = quiet + 1 if count == seen else 0
        if quiet >= QUIET_TURNS:
            self._wake_app()
        else:
            self._loop().call_soon(self._settle, count, quiet)

    def _wake_app(self) -> None:
        self._woken = True
        self._settling = False
        self._wake()

    @staticmethod
    def _loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def _set_state(self, event: StateChanged) -> None:
        if event.state is ConnectionState.CLOSED and self.state is ConnectionState.CLOSED:
            return
        self.state = event.state
        self._emit(event)

    async def _pause(self, seconds: float) -> None:
        """Wait before the next attempt; close() and retry_now() end the wait early."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self._stop, self._retry)]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    def _backoff(self) -> float:
        """Exponential backoff with full jitter, capped."""
        ceiling = backoff_ceiling(self._attempt, self.backoff_base, self.backoff_cap)
        self._attempt += 1
        return self._rng.uniform(0, ceiling)

    def _requeue_inflight(self) -> None:
        # Written but never echoed: send again first, in the original order (at least once).
        if self._inflight:
            self._outbox.extendleft(reversed(self._inflight))
            self._inflight.clear()
        if self._outbox:
            self._writable.set()

    def join_request(self, token: str | None) -> JoinRequest:
        """What this attempt asks for: all of it only from a server that may speak chat.v2
        (history would come as frames that look live, the rest is refused without it)."""
        if self.identity.v2 is False:
            return JoinRequest()
        since = self.offset if self.epoch is not None else None
        return JoinRequest(self.history, since, self.epoch if since is not None else None, token)

    def _address(self, request: JoinRequest) -> str:
        asked = query.join_query(request)
        return f"{self.url}?{asked}" if asked else self.url

    async def _session(self, client: httpx.AsyncClient) -> _Ending:
        """One connection attempt, from the handshake to its end."""
        started = time.monotonic()
        self._got_frame = False
        self._own_offsets.clear()
        self._welcomed.clear()
        identity = self.identity
        token = await identity.claim()
        asking = token is None  # we ask for the app's token; the other rooms wait for it
        request = self.join_request(token)
        try:
            async with aconnect_ws(
                self._address(request), client, subprotocols=[v2.SUBPROTOCOL]
            ) as ws:
                self.v2 = ws.subprotocol == v2.SUBPROTOCOL
                if self.v2:
                    identity.v2 = True
                # Else only a first frame says the server speaks the text protocol: chat-server
                # refuses (1013, 1008) by accepting without the subprotocol and closing at once.
                if not self.v2 and asking:
                    asking = False
                    identity.release()  # no token will come from this server
                # Connected is said on the first frame (the join notice, the welcome): a server
                # that refuses by accepting and closing at once (1013 while its broker is down)
                # is one long outage to the user, not a reconnect and a loss per attempt.
                writer = asyncio.create_task(self._write(ws))
                try:
                    if self.v2:
                        await self._read_v2(ws, request)
                    else:
                        await self._read(ws)
                except WebSocketDisconnect as exc:
                    ending = self._on_close(exc.code, exc.reason)
                except WebSocketNetworkError:
                    ending = _Ending(ConnectionState.OFFLINE, _LOST, None)
                except _Rejoin:
                    ending = _Ending(ConnectionState.OFFLINE, "", 0.0, quiet=True)
                finally:
                    writer.cancel()
                    await asyncio.wait({writer})
        except Exception as exc:
            # Handshake failures arrive bare; failures inside httpx-ws's task group arrive
            # wrapped in an exception group. Anything else is a bug and propagates.
            ending = self._on_error(exc)
        finally:
            if asking:
                identity.release()
        if self._got_frame or time.monotonic() - started >= HEALTHY_AFTER:
            self._attempt = 0
        if ending.state is ConnectionState.OFFLINE and ending.retry_in is None:
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
                    unreachable=True,
                )
            if isinstance(leaf, httpx.TimeoutException):
                return _Ending(ConnectionState.OFFLINE, "server did not answer in time", None)
            if isinstance(leaf, WebSocketNetworkError | httpx.TransportError | OSError):
                return _Ending(ConnectionState.OFFLINE, _LOST, None)
        raise exc

    def _on_close(self, code: int, reason: str) -> _Ending:
        got = close.received(code, reason)
        what = f"{code} {close.code_name(code)}".strip()
        detail = f"closed by the server ({what}{': ' + reason if reason else ''})"
        then = got.then
        if then is Then.FALL_BACK:
            if not self.v2 and self.identity.v2 is not False:
                # A server that knows the chat.v2 query but did not select chat.v2 (a proxy
                # in between dropped the header): ask again at once with nothing of chat.v2's.
                self.identity.v2 = False
                return _Ending(ConnectionState.OFFLINE, detail, 0.0)
            then = Then.GIVE_UP
        if then is Then.GIVE_UP:
            return _Ending(ConnectionState.FAILED, detail, None)
        if then is Then.BACK_OFF:
            # Resending the same messages could be refused the same way: drop the culprit
            # (the biggest outstanding message) and come back only after a long pause.
            if code == CloseCode.MESSAGE_TOO_BIG and self._inflight:
                culprit = max(self._inflight, key=lambda item: len(item.wire.encode()))
                self._inflight.remove(culprit)
                self._emit(Refused(culprit.send_id))
            return _Ending(ConnectionState.FAILED, detail, self.backoff_cap)
        return _Ending(ConnectionState.OFFLINE, detail, None)

    async def _write(self, ws: AsyncWebSocketSession) -> None:
        """Send queued messages in order while the connection lasts, paced."""
        # The server's flood bucket is per connection and starts full: so does ours.
        tokens = float(self.send_burst)
        last = time.monotonic()
        try:
            if self.v2:
                await self._welcomed.wait()
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
                    await ws.send_text(v2.send(item.wire, item.send_id) if self.v2 else item.wire)
                self._writable.clear()
                await self._writable.wait()
        except (HTTPXWSException, LocalProtocolError, OSError):
            # The reader sees the same failure and ends the session; the unacknowledged
            # messages are re-queued then.
            return

    async def _read(self, ws: AsyncWebSocketSession) -> None:
        """Read frames until the connection ends, which raises."""
        first = True
        while True:
            try:
                received = await ws.receive_text()
            except WebSocketInvalidTypeReceived:
                continue  # binary frames are not part of the protocol: ignore them
            frame = v1.parse_frame(received)
            if first:
                first = False
                self.identity.v2 = False
                name = frame.name if frame.kind is FrameKind.JOIN else None
                self.name = name
                self._got_frame = True
                self._set_state(StateChanged(ConnectionState.CONNECTED, f"connected to {self.url}"))
                if name is not None:
                    self._emit(NameAssigned(name))
            self._handle(frame)

    async def _read_v2(self, ws: AsyncWebSocketSession, request: JoinRequest) -> None:
        """Read chat.v2 frames until the connection ends, which raises.

        The welcome comes first, then ``welcome.history`` messages of history or recovery:
        they are passed on together, as one :class:`Welcomed`, once the last has arrived.
        """
        welcome: Welcome | None = None
        backlog: list[Frame] = []
        waiting = 0  # backlog messages still to come
        later: list[Frame] = []  # anything else that came meanwhile (nothing, from our server)
        while True:
            try:
                received = await ws.receive_text()
            except WebSocketInvalidTypeReceived:
                continue
            item = v2.parse_frame(received)
            if isinstance(item, Welcome):
                if not self.identity.issued(request.resume, item.resume):
                    raise _Rejoin
                welcome, waiting = item, max(item.history, 0)
                self.name = item.name
                if not self._got_frame:
                    self._got_frame = True
                    self._set_state(
                        StateChanged(ConnectionState.CONNECTED, f"connected to {self.url}")
                    )
                self._welcomed.set()
                backlog, later = [], []
            elif isinstance(item, Ack):
                self._acked(item)
                continue
            elif waiting and item.kind is FrameKind.MESSAGE and item.offset is not None:
                backlog.append(item)
                waiting -= 1
            elif waiting:
                later.append(item)
                continue
            else:
                self._handle_v2(item)
                continue
            if welcome is not None and not waiting:
                # Where we are in the room counts from here: a connection lost before the
                # backlog was all in asks again from where the app's log really is.
                if welcome.epoch != self.epoch:
                    self.epoch, self.offset = welcome.epoch, None
                last = backlog[-1].offset if backlog else None
                self.offset = max(self.offset or 0, welcome.offset, last or 0)
                self._emit(Welcomed(welcome, tuple(backlog), request.since))
                welcome = None
                for frame in later:
                    self._handle_v2(frame)

    def _acked(self, ack: Ack) -> None:
        inflight = self._inflight
        for index, item in enumerate(inflight):
            if item.send_id == ack.nonce:
                del inflight[index]
                if ack.offset > (self.offset or 0):
                    # Published now: its frame follows. (A repeated ack of a message published
                    # before has no frame to come.)
                    self._own_offsets.append(ack.offset)
                self._emit(Acked(item.send_id, item.wire, ack.offset, ack.time))
                return
        # Not ours (any more): an ack for a message already acknowledged. Nothing to do.

    def _handle_v2(self, frame: Frame) -> None:
        if frame.kind is FrameKind.MESSAGE and frame.offset is not None:
            offset = frame.offset
            self.offset = max(self.offset or 0, offset)
            own = self._own_offsets
            while own and own[0] < offset:
                own.popleft()  # frames come in offset order: that one will not come now
            if own and own[0] == offset:
                own.popleft()
                return
        elif frame.kind is FrameKind.ERROR and frame.nonce is not None:
            for item in self._inflight:
                if item.send_id == frame.nonce:
                    self._inflight.remove(item)
                    self._emit(Refused(item.send_id))
                    break
        self._emit(frame)

    def _handle(self, frame: Frame) -> None:
        inflight = self._inflight
        if not inflight:
            self._emit(frame)
            return
        send_id: str | None = None
        if frame.kind is FrameKind.MESSAGE:
            if self.name is not None:
                if frame.name == self.name:
                    for index, item in enumerate(inflight):
                        if item.wire == frame.text:
                            # The server keeps our order, so everything before it was dropped.
                            for _ in range(index):
                                self._emit(Refused(inflight.popleft().send_id))
                            send_id = inflight.popleft().send_id
                            break
            else:
                for item in inflight:
                    if item.wire == frame.text:
                        inflight.remove(item)
                        send_id = item.send_id
                        break
        elif frame.kind is FrameKind.ERROR:
            self._emit(Refused(inflight.popleft().send_id))
        self._emit(frame if send_id is None else Echo(frame, send_id))


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
