"""One room's WebSocket connection: connect, read, send, reconnect. No Textual here.

The controller runs :meth:`RoomConnection.run` in a background job, one per joined room.
Everything that happens (state changes, our name, frames, what became of our messages) is
appended, in the order it happened, to the connection's queue (:attr:`RoomConnection.events`;
the event types are ``events.py``'s). Once the queue has something, the connection calls
``wake()`` once, when arrivals pause or the queue holds ``WAKE_AT`` events, whichever comes
first; the controller then takes everything waiting (:meth:`RoomConnection.take`) in one go,
and the next arrival starts the same again.

"Arrivals pause" is counted in turns of the event loop, not measured by a clock: a frame
takes two or three turns to come through httpx-ws (its reader hands each frame over
separately), so ``QUIET_TURNS`` turns without a new event mean that what had reached the
socket has been read. A flood is thus taken in slices of what had arrived (at most
``WAKE_AT`` events), and a lone message still reaches the app within a few turns. No timer
decides anything; the order of events is the order they happened, whatever the slices.

The connection reads continuously, because httpx-ws answers the server's keepalive pings only
while someone reads.

It offers the ``chat.v2`` subprotocol; what the server selects decides the dialogue of that
connection (:class:`TextDialogue` or :class:`NumberedDialogue`, below): how frames are read,
how our messages are sent and matched with what the server says of them. Everything else
(reconnecting, pacing, the queue) is the same for both. With chat.v2 the connection asks, on
every reconnect, for its name back (the shared :class:`~chat_tui.identity.Identity`) and for
every message after the last offset it saw (recovery), and sends each message with its send id
as the nonce, so that the server's ack says which one was published (and a message re-sent
after a reconnect is acknowledged, never published twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import secrets
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol
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

from chat_protocol import close, codec, http, limits, names, query, text, v1, v2
from chat_protocol.close import CloseCode, Then
from chat_protocol.codec import Codec
from chat_protocol.frames import Ack, Frame, FrameKind, Welcome
from chat_protocol.query import JoinRequest
from chat_protocol.rates import TokenBucket
from chat_tui.autostart import is_local
from chat_tui.bounded_http import get_status
from chat_tui.events import (
    REFUSALS_KEPT,
    Acked,
    ConnectionState,
    Echo,
    Event,
    Lagging,
    NameAssigned,
    NameRefused,
    Refused,
    StateChanged,
    Unreadable,
    Welcomed,
)
from chat_tui.identity import Identity
from chat_tui.text_layout import display_line
from chat_tui.websocket import OWN_CLOSE_CODE, BoundedSession

CONNECT_TIMEOUT = 10.0  # per read (httpx's)
HANDSHAKE_TIMEOUT = 15.0  # for the whole WebSocket handshake
# How long close() waits for the connection to finish its closing handshake.
CLOSE_TIMEOUT = 5.0
# Client-side pacing, below the reference server's default message rate, so that a flush of
# messages queued while offline, or a quick series of pastes, is not dropped by the server as
# flooding. 0 turns pacing off.
SEND_RATE = limits.RATE_LIMIT * 0.8
SEND_BURST = int(limits.RATE_BURST * 0.8)
# A connection that stayed up this long counts as healthy: the next loss backs off from scratch.
HEALTHY_AFTER = 5.0
# When to wake the app (see the module's docstring).
WAKE_AT = 500
QUIET_TURNS = 4
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
# While a lost server's room waits longer than PROBE_EVERY to try again, it asks the server's
# /health that often (cheap: no handshake, no name), and tries at once when it answers.
PROBE_EVERY = 1.5
PROBE_TIMEOUT = 1.0
# How long the one look at a port that answered the handshake with no HTTP waits for its
# answer to /health: a busy machine's Redis or SSH port can take over a second.
NO_HTTP_TIMEOUT = 5.0

# Frames other than the backlog's that may come before the backlog is complete (none, from
# chat-server): past it, the backlog is taken as it is.
LATER_LIMIT = 1000
# Of a frame that cannot be read, this much is shown.
UNREADABLE_START = 60
# The room's log puts "connection lost: " in front of the detail: the detail says only how.
_LOST = "dropped (1006, no close frame)"
# Silence after which the server is pinged, and how late its pong may be before it is lag.
LAG_PING = 2.0
LAG_SHOWN = 3.0


@functools.cache
def tls_context(trust_env: bool) -> ssl.SSLContext:
    """The TLS settings every client of this process shares, made as httpx makes its default
    (certifi's roots, or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when the environment is trusted).
    Each ``httpx.AsyncClient`` would otherwise load the roots into a context of its own when it
    is made, wss:// or not: about 1.1 MiB a room for as long as it is joined."""
    return httpx.create_ssl_context(trust_env=trust_env)


class Connection(Protocol):
    """What the controller needs of a room's connection (tests and snapshots play their own).

    ``name`` is ours in the room once known; ``pending`` counts the messages sent and not yet
    answered for; ``events`` holds what happened and was not taken yet.
    """

    room: str
    name: str | None
    events: deque[Event]

    @property
    def pending(self) -> int: ...

    def take(self, limit: int | None = None) -> list[Event]: ...

    def send(self, line: str) -> str: ...

    def retry_now(self) -> None: ...

    def typing(self) -> None: ...

    def read(self, offset: int) -> None: ...

    def away(self, message: str | None) -> bool: ...

    def nick(self, name: str) -> bool: ...

    def readdress(self, room: str) -> None: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...


# (server URL, room, wake) -> the room's connection: what the controller builds rooms with.
ConnectionFactory = Callable[[str, str, Callable[[], object]], Connection]


@dataclass(slots=True)
class Outgoing:
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
    # The server is down or going down (nothing answered; it said it shuts down): while
    # waiting, ask whether it is back.
    probe: bool = False


class _Rejoin(Exception):
    """The welcome gave this connection a name other than the app's: connect again with it."""


class _Unusable(Exception):
    """The connection cannot be used (its handshake never ended, the server chose what was
    not offered, its welcome is no chat server's): how the attempt ended."""

    def __init__(self, ending: _Ending) -> None:
        super().__init__(ending.detail)
        self.ending = ending


def backoff_ceiling(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """The longest wait before retry number ``attempt`` (0 first): doubling, capped."""
    return min(cap, base * 2**attempt)


class RoomConnection:
    """The connection to one room, kept alive until :meth:`close`.

    Delivery is *at least once* on the text protocol: a message written to the socket but not
    yet echoed back when the connection drops is sent again after reconnecting, because there
    is no way to know whether the server broadcast it before the drop. Nothing typed is lost;
    in the rare case of a drop between broadcast and echo, the room sees that message twice. On
    chat.v2 the send id is the nonce: the server publishes it once and acknowledges every copy
    with the original offset (exactly once).

    Each message has a send id (a string unique to this client, fit to be a protocol nonce).
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
        healthy_after: float = HEALTHY_AFTER,
        lag_ping: float = LAG_PING,
        lag_shown: float = LAG_SHOWN,
    ) -> None:
        self.server_url = server_url
        self.room = room
        self.url = server_url.rstrip("/") + http.chat_path(room)
        self.history = history  # messages of history asked for on joining (chat.v2 only)
        self.identity = identity or Identity(server_url)
        self._name_asked: str | None = None  # the name the current attempt asked for
        # chat.v2: where we are in the room's numbering (recovery asks from here).
        self.epoch: str | None = None
        self.offset: int | None = None
        self.v2 = False  # the current (or last) connection speaks chat.v2
        self._wake = wake
        self.backoff_cap = backoff_cap
        self.backoff_base = backoff_base
        self.send_rate = send_rate
        self.send_burst = send_burst
        self.healthy_after = healthy_after
        self.lag_ping, self.lag_shown = lag_ping, lag_shown
        self.state = ConnectionState.CONNECTING
        self.name: str | None = None
        self.events: deque[Event] = deque()  # oldest first; the controller takes them
        self._woken = False  # wake() was called and the queue was not taken since
        self._settling = False  # waiting for arrivals to pause before waking the app
        self._id_prefix = secrets.token_hex(4) + "-"
        self._next_id = 0
        self.outbox: deque[Outgoing] = deque()  # not yet written on the current connection
        self.inflight: deque[Outgoing] = deque()  # written, not yet answered for
        self._writable = asyncio.Event()  # the writer has something to send
        self._typing_due = False  # "we are typing" is to be written
        self._heard = 0.0  # time.monotonic() of the last frame from the server (lag)
        self._read_due: int | None = None  # "we read up to" this offset is to be written
        self._away_due: tuple[str | None] | None = None  # (away message, or None: back)
        self._nick_due: str | None = None  # the name to ask the server for
        self._stop = asyncio.Event()  # close() was called
        self._retry = asyncio.Event()  # retry_now() was called
        self._closing = False
        self._attempt = 0
        self._session_task: asyncio.Task[_Ending] | None = None
        self._running = False
        self._run_done = asyncio.Event()
        self._rng = rng or random.Random()
        self._was_up = False  # a connection of this room was up once (this run of the app)

    # --- public API -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Messages sent by the user and not yet answered for (queued or on the wire)."""
        return len(self.outbox) + len(self.inflight)

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
        """Queue ``line`` for sending and return its send id; never blocks.

        What becomes of it arrives later as an Echo or Acked (sent) or a Refused. Text that is
        empty after sanitising, or too big for one frame, is refused at once and never sent.
        """
        self._next_id += 1
        send_id = f"{self._id_prefix}{self._next_id}"
        wire = text.sanitize(line)
        if wire is None or len(wire.encode()) > limits.MAX_FRAME_BYTES:
            self.emit(Refused(send_id))
            return send_id
        self.outbox.append(Outgoing(send_id, wire))
        self._writable.set()
        return send_id

    def typing(self) -> None:
        """Tell the room our user is typing (chat.v2 only, and only while connected: it is
        worth nothing later). The caller spaces them out."""
        if self.v2 and self.state is ConnectionState.CONNECTED:
            self._typing_due = True
            self._writable.set()

    def away(self, message: str | None) -> bool:
        """Tell the server our user is away (``None``: back); it tells every room our name is
        in. False if this connection cannot (not connected, or not chat.v2)."""
        if not (self.v2 and self.state is ConnectionState.CONNECTED):
            return False
        self._away_due = (message,)
        self._writable.set()
        return True

    def readdress(self, room: str) -> None:
        """Reach the room as ``room`` from the next attempt on (a conversation whose person
        changed their name)."""
        self.room = room
        self.url = self.server_url.rstrip("/") + http.chat_path(room)

    def nick(self, name: str) -> bool:
        """Ask the server for the name ``name`` in every room our name is in. False if this
        connection cannot (not connected, or not chat.v2)."""
        if not (self.v2 and self.state is ConnectionState.CONNECTED):
            return False
        self._nick_due = name
        self._writable.set()
        return True

    def read(self, offset: int) -> None:
        """Tell the server our user has read this room up to ``offset`` (chat.v2 only; the
        caller says it at most once a second)."""
        if self.v2 and self.state is ConnectionState.CONNECTED:
            self._read_due = offset
            self._writable.set()

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
            async with httpx.AsyncClient(
                timeout=CONNECT_TIMEOUT, trust_env=trust_env, verify=tls_context(trust_env)
            ) as client:
                while not self._closing:
                    self._retry.clear()
                    self.set_state(
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
                        self.set_state(
                            StateChanged(
                                ending.state, ending.detail, ending.retry_in, ending.unreachable
                            )
                        )
                    if ending.retry_in is None:
                        return
                    # A server that is down: back as soon as it answers again. One that answers
                    # and then fails is given the whole backoff.
                    probing = ending.unreachable or ending.probe
                    await self._pause(ending.retry_in, client if probing else None)
        finally:
            self._running = False
            self._run_done.set()
            if self._closing:
                self.set_state(StateChanged(ConnectionState.CLOSED, "left the room"))

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
        self.set_state(StateChanged(ConnectionState.CLOSED, "left the room"))

    def join_request(self, token: str | None) -> JoinRequest:
        """What this attempt asks for: all of it only from a server that may speak chat.v2
        (history would come as frames that look live, the rest is refused without it)."""
        nick = self.identity.nick
        if self.identity.v2 is False:
            return JoinRequest(name=nick)  # a chosen name is for any client
        since = self.offset if self.epoch is not None else None
        epoch = self.epoch if since is not None else None
        return JoinRequest(self.history, since, epoch, token, nick)

    # --- what the dialogues use ---------------------------------------------------------------

    def emit(self, event: Event) -> None:
        events = self.events
        events.append(event)
        if self._woken:
            return
        if len(events) >= WAKE_AT:
            self._wake_app()
        elif not self._settling:
            self._settling = True
            asyncio.get_running_loop().call_soon(self._settle, len(events), 0)

    def set_state(self, event: StateChanged) -> None:
        if event.state is ConnectionState.CLOSED and self.state is ConnectionState.CLOSED:
            return
        self.state = event.state
        self.emit(event)

    def connected(self) -> None:
        """The first frame of this connection arrived: it is up."""
        self._was_up = True
        self.set_state(StateChanged(ConnectionState.CONNECTED, f"connected to {self.url}"))

    # --- internals --------------------------------------------------------------------------

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
            asyncio.get_running_loop().call_soon(self._settle, count, quiet)

    def _wake_app(self) -> None:
        self._woken = True
        self._settling = False
        self._wake()

    async def _pause(self, seconds: float, probing: httpx.AsyncClient | None = None) -> None:
        """Wait before the next attempt; close() and retry_now() end the wait early, and so
        does the server answering again, when ``probing`` with a client."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self._stop, self._retry)]
        if probing is not None and seconds > PROBE_EVERY:
            waits.append(asyncio.ensure_future(self._until_answering(probing)))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _until_answering(self, client: httpx.AsyncClient) -> None:
        """Until the server answers ``/health`` as one that takes connections: 200, or any
        answer of a server without that endpoint. A 503 (its broker is away) is waited out:
        the backoff's handshakes are enough for it."""
        url = http.http_base(self.server_url) + http.HEALTH_PATH
        while True:
            await asyncio.sleep(PROBE_EVERY * random.uniform(0.8, 1.2))  # apart, many rooms
            try:
                status = await get_status(client, url, deadline=PROBE_TIMEOUT)
            except httpx.HTTPError:
                continue  # still down
            if status != 503:
                return

    async def _speaks_no_http(self, client: httpx.AsyncClient) -> bool:
        """The handshake got an answer that is not HTTP: whether ``/health`` gets one too (a
        Redis or SSH port), rather than a server that went away mid-answer (then this finds
        nothing listening, or a real answer)."""
        url = http.http_base(self.server_url) + http.HEALTH_PATH
        try:
            await get_status(client, url, deadline=NO_HTTP_TIMEOUT)
        except httpx.RemoteProtocolError:
            return True
        except httpx.HTTPError:
            return False
        return False

    def _backoff(self) -> float:
        """Exponential backoff with full jitter, capped."""
        ceiling = backoff_ceiling(self._attempt, self.backoff_base, self.backoff_cap)
        self._attempt += 1
        return self._rng.uniform(0, ceiling)

    def _requeue_inflight(self) -> None:
        # Written but never answered for: send again first, in the original order.
        if self.inflight:
            self.outbox.extendleft(reversed(self.inflight))
            self.inflight.clear()
        if self.outbox:
            self._writable.set()

    def _address(self, request: JoinRequest) -> str:
        asked = query.join_query(request)
        return f"{self.url}?{asked}" if asked else self.url

    async def _session(self, client: httpx.AsyncClient) -> _Ending:
        """One connection attempt, from the handshake to its end."""
        identity = self.identity
        token = await identity.claim()
        asking = token is None  # we ask for the app's token; the other rooms wait for it
        request = self.join_request(token)
        self._name_asked = request.name
        dialogue: Dialogue | None = None
        try:
            try:
                signed = identity.signed_token()
            except OSError as exc:
                if asking:
                    asking = False
                    identity.release()
                where = identity.token_file
                return _Ending(
                    ConnectionState.FAILED,
                    f"cannot read the token file {where}: {exc.strerror or exc}",
                    self.backoff_cap,
                )
            headers = http.bearer(signed)
            async with contextlib.AsyncExitStack() as stack:
                # httpx's timeouts are per read: a handshake answered a byte at a time gets
                # a deadline of its own.
                try:
                    async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                        ws = await stack.enter_async_context(
                            aconnect_ws(
                                self._address(request),
                                client,
                                subprotocols=[v2.SUBPROTOCOL],
                                session_class=BoundedSession,
                                headers=headers,
                            )
                        )
                except TimeoutError:
                    said = f"the server did not finish the handshake in {HANDSHAKE_TIMEOUT:g} s"
                    raise _Unusable(_Ending(ConnectionState.OFFLINE, said, None)) from None
                if ws.subprotocol not in (None, v2.SUBPROTOCOL):
                    # RFC 6455: the client fails a connection whose server chose otherwise.
                    chose = display_line(ws.subprotocol)[:40]
                    said = f"the server chose a subprotocol that was not offered ({chose!r})"
                    raise _Unusable(_Ending(ConnectionState.FAILED, said, self.backoff_cap))
                chosen = codec.selected(ws.subprotocol)
                self.v2 = chosen.numbered
                if chosen.numbered:
                    identity.v2 = True
                    dialogue = NumberedDialogue(self, request)
                else:
                    # Only a first frame says the server speaks the text protocol: chat-server
                    # refuses (1013, 1008) by accepting without the subprotocol and closing.
                    if asking:
                        asking = False
                        identity.release()  # no token will come from this server
                    dialogue = TextDialogue(self)
                # Connected is said on the first frame (the join notice, the welcome): a server
                # that refuses by accepting and closing at once (1013 while its broker is down)
                # is one long outage to the user, not a reconnect and a loss per attempt.
                writer = asyncio.create_task(self._write(ws, dialogue))
                watcher = asyncio.create_task(self._watch_lag(ws))
                try:
                    await self._read(ws, dialogue)
                except WebSocketDisconnect as exc:
                    if exc.code == OWN_CLOSE_CODE:  # our own close, not the server's
                        ending = _Ending(ConnectionState.OFFLINE, exc.reason or "", None)
                    else:
                        ending = self._on_close(exc.code, exc.reason)
                except WebSocketNetworkError:
                    ending = _Ending(ConnectionState.OFFLINE, _LOST, None)
                except _Rejoin:
                    ending = _Ending(ConnectionState.OFFLINE, "", 0.0, quiet=True)
                finally:
                    writer.cancel()
                    watcher.cancel()
                    await asyncio.wait({writer, watcher})
        except Exception as exc:
            # Handshake failures arrive bare; failures inside httpx-ws's task group arrive
            # wrapped in an exception group. Anything else is a bug and propagates.
            ending = self._on_error(exc)
            if dialogue is None and _garbled(exc) and await self._speaks_no_http(client):
                where = urlsplit(self.url).netloc
                ending = _Ending(
                    ConnectionState.FAILED,
                    f"what answers at {where} does not speak HTTP, so it is no chat server "
                    "(another service's port? check --server)",
                    self.backoff_cap,
                )
        finally:
            if asking:
                identity.release()
        # Backing off starts from scratch only after a connection that stayed up: a server
        # that sends a frame and then fails is a failing server, not a healthy one.
        up_since = dialogue.connected_at if dialogue is not None else None
        if up_since is not None and time.monotonic() - up_since >= self.healthy_after:
            self._attempt = 0
        if ending.state is ConnectionState.OFFLINE and ending.retry_in is None:
            ending.retry_in = self._backoff()
        return ending

    def _on_error(self, exc: Exception) -> _Ending:
        for leaf in _leaves(exc):
            if isinstance(leaf, _Unusable):
                return leaf.ending
            if isinstance(leaf, WebSocketDisconnect):
                return self._on_close(leaf.code, leaf.reason)
            if isinstance(leaf, WebSocketUpgradeError):
                status = leaf.response.status_code
                said = f"the server refused the WebSocket handshake (HTTP {status})"
                if status == 401:
                    # A private server: the token is missing or no good (expired, not yet
                    # rotated). Tried again after a long pause, with the file read again.
                    where = self.identity.token_file
                    # Why, when the server says (RFC 6750: printable ASCII, nothing else read).
                    why = (
                        http.challenge_description(leaf.response.headers.get("www-authenticate"))
                        or "expired, or not one of this server's"
                    )
                    said = (
                        f"the server refused the token in {where} (HTTP 401): {why}; write a "
                        "fresh one there (ctrl+r: at once)"
                        if where
                        else "this server needs a signed token (HTTP 401): give its file "
                        "with --token-file, or token_file in the config"
                    )
                return _Ending(ConnectionState.FAILED, said, self.backoff_cap)
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
        """What a close means for this room (``chat_protocol.close`` says what to do)."""
        received = close.received(code, reason)
        then = received.then
        what = f"{code} {close.code_name(code)}".strip()
        said = reason if reason and reason != close.code_name(code) else ""  # once is enough
        detail = f"closed by the server ({what}{': ' + said if said else ''})"
        if received.close in (close.KICKED, close.BANNED):
            # An operator's or moderator's reason ("kicked: " alone when they gave none).
            detail = f"you were {reason.removesuffix(': ')} ({code})"
        elif received.close is close.ROOM_LOCKED:
            detail = f"this room is locked: nobody new may join it for now ({code})"
        elif received.close is close.NOT_ALLOWED:
            detail = f"your token does not let you into this room ({code})"
        if then is Then.WITHOUT_NAME and self._name_asked is not None:
            # The name asked for is taken or invalid: the app says so once (the first room
            # told) and every room goes on without it, this one at once.
            if self.identity.nick is not None:
                self.emit(NameRefused(self.identity.nick, reason))
                self.identity.nick = None
            return _Ending(ConnectionState.OFFLINE, "", 0.0, quiet=True)
        if then is Then.WITHOUT_NAME:
            then = Then.RECONNECT  # we asked for no name: not ours to act on
        if received.close is close.NOT_HERE and self._was_up:
            # Our peer was here: a broker that restarted empty knows their name again once
            # their client has reconnected. What we typed stays pending meanwhile.
            then = Then.RECONNECT
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
            if code == CloseCode.MESSAGE_TOO_BIG and self.inflight:
                culprit = max(self.inflight, key=lambda item: len(item.wire.encode()))
                self.inflight.remove(culprit)
                self.emit(Refused(culprit.send_id))
            return _Ending(ConnectionState.FAILED, detail, self.backoff_cap)
        # A server going away, or one without its broker (it refuses everyone with 1013 until
        # the broker is back): back as soon as its /health says so, not after the backoff
        # these refusals grew (8 s after Redis was back, for a new user).
        waited_out = (
            received.close.counted is close.Counted.SHUTDOWN
            or received.close is close.BROKER_UNAVAILABLE
        )
        return _Ending(ConnectionState.OFFLINE, detail, None, probe=waited_out)

    async def _write(self, ws: AsyncWebSocketSession, dialogue: Dialogue) -> None:
        """Send queued messages in order while the connection lasts, paced."""
        # The server's message bucket is per connection and starts full: so does ours.
        pacing = TokenBucket(self.send_rate, self.send_burst, time.monotonic())
        try:
            await dialogue.ready.wait()
            while True:
                # Cleared before looking, not after: what is asked while a frame is being
                # written sets it again, and is written next (cleared after the writes, a
                # typing, read, away or /nick asked meanwhile waited for the next thing
                # asked, forever if nothing else came).
                self._writable.clear()
                # Neither is a message: the server counts neither against the message rate.
                if self._typing_due:
                    self._typing_due = False
                    await ws.send_text(v2.TYPING_FRAME)
                if self._read_due is not None:
                    offset, self._read_due = self._read_due, None
                    await ws.send_text(v2.read_up_to(offset))
                if self._away_due is not None:
                    (message,), self._away_due = self._away_due, None
                    await ws.send_text(v2.BACK_FRAME if message is None else v2.away(message))
                if self._nick_due is not None:
                    name, self._nick_due = self._nick_due, None
                    await ws.send_text(v2.change_nick(name))
                while self.outbox:
                    if self.send_rate > 0:
                        wait = pacing.wait(1, time.monotonic())
                        if wait > 0:
                            await asyncio.sleep(wait)
                            continue
                        pacing.spend(1, time.monotonic())
                    item = self.outbox.popleft()
                    # In flight before the write: the answer may be read before send returns.
                    self.inflight.append(item)
                    await ws.send_text(dialogue.codec.send(item.wire, dialogue.nonce(item)))
                await self._writable.wait()
        except (HTTPXWSException, LocalProtocolError, OSError):
            # The reader sees the same failure and ends the session; the unanswered messages
            # are re-queued then.
            return

    async def _read(self, ws: AsyncWebSocketSession, dialogue: Dialogue) -> None:
        """Read frames until the connection ends, which raises."""
        clock = time.monotonic
        while True:
            try:
                received = await ws.receive_text()
            except WebSocketInvalidTypeReceived:
                continue  # binary frames are not part of the protocol: ignore them
            self._heard = clock()
            dialogue.received(received)

    async def _watch_lag(self, ws: AsyncWebSocketSession) -> None:
        """Lag, as WeeChat shows it: after ``lag_ping`` seconds of silence, a ping; a pong
        later than ``lag_shown`` is lag, told until the pong comes. A frozen
        server (SIGSTOP, a dead link that TCP has not noticed) shows at once, not when the
        keepalive gives up."""
        self._heard = time.monotonic()
        every, late = self.lag_ping, self.lag_shown
        try:
            while True:
                await asyncio.sleep(every)
                if time.monotonic() - self._heard < every:
                    continue
                sent = time.monotonic()
                pong = await ws.ping()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pong.wait(), late)
                    continue
                self.emit(Lagging(sent))
                await pong.wait()
                self._heard = time.monotonic()
                self.emit(Lagging(None))
        except Exception:  # any end of the connection: the reader reports it
            return


class Dialogue(Protocol):
    """One connection's conversation in its dialect: how frames are read and how our own
    messages are sent and answered for."""

    codec: Codec
    ready: asyncio.Event  # set once our messages may be written
    connected_at: float | None  # time.monotonic() of the connection's first frame

    def nonce(self, item: Outgoing) -> str | None: ...

    def received(self, frame: str) -> None: ...


class TextDialogue:
    """The text protocol: the first frame is our join notice (our name); our messages come
    back as ``{our name} :: {text}`` in the order we sent them, in their place in the room's
    order.

    Outstanding messages are matched first in, first out; an outstanding message that a later
    echo overtook was dropped by the server and is refused, and an ``error:`` notice refuses
    the oldest outstanding message. Without a name (a server that does not send our join
    notice first) an echo is recognised by its text alone.
    """

    codec = v1.CODEC

    def __init__(self, link: RoomConnection) -> None:
        self._link = link
        self.ready = asyncio.Event()
        self.ready.set()  # nothing to wait for
        self.connected_at: float | None = None
        # Sends taken as refused by an "error:" notice, newest last: a notice can also come
        # unasked (a moderator's mute says so at once), and the message it was taken to
        # refuse then comes back as sent after all.
        self._refused: deque[Outgoing] = deque(maxlen=REFUSALS_KEPT)

    def nonce(self, item: Outgoing) -> str | None:
        return None

    def received(self, frame: str) -> None:
        link = self._link
        parsed = self.codec.parse(frame)
        assert isinstance(parsed, Frame)
        if self.connected_at is None:
            self.connected_at = time.monotonic()
            link.identity.v2 = False
            name = parsed.name if parsed.kind is FrameKind.JOIN else None
            if name is not None and not names.is_valid_name(name):
                name = None  # a join notice, but not of a name a chat server gives: not ours
            link.name = name
            link.connected()
            if name is not None:
                link.emit(NameAssigned(name))
        self._answer(parsed)

    def _answer(self, frame: Frame) -> None:
        link = self._link
        inflight = link.inflight
        if not inflight:
            link.emit(self._sent_after_all(frame))
            return
        send_id: str | None = None
        if frame.kind is FrameKind.MESSAGE:
            if link.name is not None:
                if frame.name == link.name:
                    for index, item in enumerate(inflight):
                        if item.wire == frame.text:
                            # The server keeps our order, so everything before it was dropped.
                            for _ in range(index):
                                link.emit(Refused(inflight.popleft().send_id))
                            send_id = inflight.popleft().send_id
                            break
            else:
                for item in inflight:
                    if item.wire == frame.text:
                        inflight.remove(item)
                        send_id = item.send_id
                        break
        elif frame.kind is FrameKind.ERROR:
            refused = inflight.popleft()
            self._refused.append(refused)
            link.emit(Refused(refused.send_id))
        link.emit(self._sent_after_all(frame) if send_id is None else Echo(frame, send_id))

    def _sent_after_all(self, frame: Frame) -> Frame | Echo:
        """Our message that an "error:" was taken to refuse, come back from the room: the
        error was not its answer (its entry shows it sent, not refused and said again)."""
        link = self._link
        if frame.kind is FrameKind.MESSAGE and link.name is not None and frame.name == link.name:
            for item in self._refused:
                if item.wire == frame.text:
                    self._refused.remove(item)
                    return Echo(frame, item.send_id)
        return frame


class NumberedDialogue:
    """chat.v2: the welcome comes first (our name and token, where the room is), then
    ``welcome.history`` messages of history or recovery, passed on together as one
    :class:`Welcomed` once the last has arrived; then live frames. Our messages go out with
    their send id as the nonce, and acks and errors name it: nothing is matched by text."""

    codec = v2.CODEC

    def __init__(self, link: RoomConnection, request: JoinRequest) -> None:
        self._link = link
        self._request = request
        self.ready = asyncio.Event()  # nothing is sent before the welcome says whose name
        self.connected_at: float | None = None
        self._welcome: Welcome | None = None
        self._backlog: list[Frame] = []
        self._waiting = 0  # backlog messages still to come
        self._later: list[Frame] = []  # anything else that came meanwhile (nothing, from ours)
        # Offsets acked to us whose frames have not come yet (ascending), with the text sent:
        # our own frame is not news, its ack said it all.
        self._own_offsets: deque[tuple[int, str]] = deque()

    def nonce(self, item: Outgoing) -> str | None:
        return item.send_id

    def received(self, frame: str) -> None:
        item = self.codec.parse(frame)
        if isinstance(item, Frame) and item.kind is FrameKind.NOTICE:
            # chat.v2 has no notices: this is what a frame that cannot be read parses as.
            self._link.emit(Unreadable(len(frame), frame[:UNREADABLE_START]))
            return
        if isinstance(item, Welcome):
            self._welcomed(item)
        elif isinstance(item, Ack):
            self._acked(item)
            return
        elif self._waiting and item.kind is FrameKind.MESSAGE and item.offset is not None:
            self._backlog.append(item)
            self._waiting -= 1
        elif self._waiting:
            self._later.append(item)
            if len(self._later) > LATER_LIMIT:
                # A server that never finishes the backlog it announced, while other frames
                # come: the room is shown with what came (not recovered: some is missing).
                self._waiting = 0
                welcome = self._welcome
                if welcome is not None:
                    missing = False if welcome.recovered else welcome.recovered
                    self._backlog_complete(replace(welcome, recovered=missing))
            return
        else:
            self._live(item)
            return
        if self._welcome is not None and not self._waiting:
            self._backlog_complete(self._welcome)

    def _welcomed(self, welcome: Welcome) -> None:
        link = self._link
        if not names.is_valid_name(welcome.name):
            # Our name, as the server gives it, is shown everywhere: not 5,000 characters of
            # escape sequences (a hostile server's).
            shown = display_line(welcome.name)[:40]
            said = f"the server gave us a name no chat server gives ({shown!r}…)"
            raise _Unusable(_Ending(ConnectionState.FAILED, said, link.backoff_cap))
        if not link.identity.issued(self._request.resume, welcome.resume):
            raise _Rejoin
        # Taken as backlog: at most what was asked for (the history asked, or the range missed
        # when recovering); a server that announces more sends the rest as live frames.
        asked = self._request.history
        since = self._request.since
        if since is not None and welcome.recovered:
            asked = max(asked, welcome.offset - since)
        self._welcome, self._waiting = welcome, min(welcome.history, asked)
        link.name = welcome.name
        if self.connected_at is None:
            self.connected_at = time.monotonic()
            link.connected()
        self.ready.set()
        self._backlog, self._later = [], []

    def _backlog_complete(self, welcome: Welcome) -> None:
        link = self._link
        # Where we are in the room counts from here: a connection lost before the backlog was
        # all in asks again from where the app's log really is.
        if welcome.epoch != link.epoch:
            link.epoch, link.offset = welcome.epoch, None
        last = self._backlog[-1].offset if self._backlog else None
        link.offset = max(link.offset or 0, welcome.offset, last or 0)
        link.emit(Welcomed(welcome, tuple(self._backlog), self._request.since))
        self._welcome = None
        for frame in self._later:
            self._live(frame)

    def _acked(self, ack: Ack) -> None:
        link = self._link
        inflight = link.inflight
        for index, item in enumerate(inflight):
            if item.send_id == ack.nonce:
                del inflight[index]
                if ack.offset > (link.offset or 0):
                    # Published now: its frame follows. (A repeated ack of a message published
                    # before has no frame to come.)
                    self._own_offsets.append((ack.offset, item.wire))
                link.emit(Acked(item.send_id, item.wire, ack.offset, ack.time))
                return
        # Not ours (any more): an ack for a message already acknowledged. Nothing to do.

    def _live(self, frame: Frame) -> None:
        link = self._link
        if frame.kind is FrameKind.MESSAGE and frame.offset is not None:
            offset = frame.offset
            link.offset = max(link.offset or 0, offset)
            own = self._own_offsets
            while own and own[0][0] < offset:
                own.popleft()  # frames come in offset order: that one will not come now
            if own and own[0][0] == offset:
                _, wire = own.popleft()
                if frame.text == wire:  # by text alone: the name may have changed (/nick)
                    return
                # Not what we said: the ack was wrong (a broken or hostile server). Shown.
        elif frame.kind is FrameKind.ERROR and frame.nonce is not None:
            for item in link.inflight:
                if item.send_id == frame.nonce:
                    link.inflight.remove(item)
                    link.emit(Refused(item.send_id))
                    break
        link.emit(frame)


def _garbled(exc: BaseException) -> bool:
    """Whether the peer answered something that is not HTTP (or hung up mid-answer)."""
    return any(isinstance(leaf, httpx.RemoteProtocolError) for leaf in _leaves(exc))


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
