"""uvicorn's HTTP protocol (httptools) with the limits it lacks, for every connection before it
is a WebSocket (and for plain HTTP requests such as ``/health``).

uvicorn reads a request head of any size for as long as the peer likes: one connection sent
400 MB of header in 3.7 s, and idle or slowloris sockets stayed open for good, uncounted. Here:

* the request head is bounded in bytes (``max_head_bytes``) and header count
  (``max_headers``): over either, **431** and close;
* from accept (or the first byte of a later keep-alive request) to a complete request, and for
  an upgrade to the WebSocket handshake, a connection has ``handshake_timeout`` seconds:
  then **408** and close;
* at most ``max_pending`` connections may be in that state at once: when one more arrives,
  the oldest of those from the address that holds the most of them gets **503** and is
  closed, so that half-finished requests can neither exhaust the process's file descriptors
  nor lock out real clients, and one address's idle sockets push out only its own;
* plain HTTP requests (not WebSocket upgrades) from one client address are rate-limited
  (``max_http_rate``), and so are its new WebSocket handshakes (``handshakes_per_minute``):
  over either, **429** with ``Retry-After``, before any WebSocket work.

The client address is ``chat_server.addresses``'s (a trusted proxy's forwarded address for
the rates; the TCP peer for the pending table, whose connections have sent no header yet).
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections import OrderedDict
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from chat_server import addresses
from chat_server.budget import Budget
from chat_server.stats import stats
from chat_server.transport import proxy_protocol
from chat_server.transport.config import FLOOD_BURST_SECONDS, HttpLimits, limits_of

log = logging.getLogger("chat_server")

# Per server: its connections that have not finished a request or a handshake, oldest first.
_PENDING: weakref.WeakKeyDictionary[ServerState, dict[GuardedHttpProtocol, None]] = (
    weakref.WeakKeyDictionary()
)
# Per server: the pending connections of each TCP peer address (its /64), oldest first.
_PENDING_BY_ADDRESS: weakref.WeakKeyDictionary[
    ServerState, dict[str, dict[GuardedHttpProtocol, None]]
] = weakref.WeakKeyDictionary()
# Per server: the HTTP request budget of each client address, the least recently seen first.
_BUDGETS: weakref.WeakKeyDictionary[ServerState, OrderedDict[str, Budget]] = (
    weakref.WeakKeyDictionary()
)
# Per server: the WebSocket handshake budget of each client address, likewise.
_HANDSHAKES: weakref.WeakKeyDictionary[ServerState, OrderedDict[str, Budget]] = (
    weakref.WeakKeyDictionary()
)
# The client of the connection being upgraded to a WebSocket, while its protocol is made
# (synchronously, in handle_websocket_upgrade): a PROXY header's address, not the TCP peer's.
upgrading_client: tuple[str, int] | None = None


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the response is already chosen."""


class GuardedHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits: HttpLimits = limits_of(self.config).http
        self.pending = _PENDING.setdefault(self.server_state, {})
        self.pending_by_address = _PENDING_BY_ADDRESS.setdefault(self.server_state, {})
        self.budgets = _BUDGETS.setdefault(self.server_state, OrderedDict())
        self.handshakes = _HANDSHAKES.setdefault(self.server_state, OrderedDict())
        self.trusted = addresses.networks(self.limits.trusted_proxies)
        self.peer_address = "unknown"
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # bytes received since the current request began, head unfinished
        self._in_head = True
        self._header_count = 0
        # status, text, metrics reason (and for a 429, the seconds to wait)
        self._refusal: tuple[int, str, str] | tuple[int, str, str, float] | None = None
        self._done = False  # answered with a refusal; further input is ignored
        # With --proxy-protocol, from a trusted proxy: the PROXY header read so far (None: not
        # expected, or read).
        self._proxy_header: bytearray | None = None

    # --- connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.client is not None:
            self.peer_address = addresses.address_key(self.client[0])
            if self.limits.proxy_protocol and addresses.trusted(self.client[0], self.trusted):
                self._proxy_header = bytearray()
        if len(self.pending) >= self.limits.max_pending:
            # The oldest of the address with the most gives way: a real client finishes its
            # handshake in milliseconds, so idle sockets cannot lock it out by filling the cap
            # first, and one address's flood pushes out its own connections.
            crowd = max(self.pending_by_address.values(), key=len)
            oldest = next(iter(crowd))
            oldest._refuse(503, "too many connections in progress; try again", "pending_limit")
        self.pending[self] = None
        self.pending_by_address.setdefault(self.peer_address, {})[self] = None
        stats.pending_connections = len(self.pending)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._settled()
        super().connection_lost(exc)

    def _settled(self) -> None:
        """No longer a pending connection: upgraded, or gone."""
        self._disarm()
        if self.pending.pop(self, False) is None:
            mine = self.pending_by_address[self.peer_address]
            del mine[self]
            if not mine:
                del self.pending_by_address[self.peer_address]
        stats.pending_connections = len(self.pending)

    def _arm(self) -> None:
        if self._deadline is None and not self._done:
            self._deadline = self.loop.call_later(self.limits.handshake_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self._done or self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app has the request and waits for a body that never ends: it is told the
            # client went (so that it stops reading), and the client is told why, unless the
            # app's own answer has begun.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                stats.refuse("handshake_timeout")
                self._done = True
                self.transport.close()
                return
        timeout = self.limits.handshake_timeout
        self._refuse(408, f"request not complete within {timeout:g} s", "handshake_timeout")

    # --- input ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        if self._proxy_header is not None:
            rest = self._read_proxy_header(data)
            if not rest:
                return
            data = rest
        self._arm()  # a later keep-alive request has its own deadline
        if self._in_head:
            self._head_bytes += len(data)
        self._parse(data)
        if self._done:
            return
        if self._in_head and self._head_bytes > self.limits.max_head_bytes:
            # Not finished and already too big: never buffer more of it.
            self._refuse_head(f"request head over {self.limits.max_head_bytes} bytes")

    def _parse(self, data: bytes) -> None:
        """uvicorn's ``data_received``, without its warning line for each request it cannot
        parse or upgrade: those are answered (400, or the refusal a callback chose: 429,
        431) and counted in /metrics, and a line each would let any client write thousands
        of lines a second."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            # Else an upgrade to something else: answered as the plain request it also is.

    def _read_proxy_header(self, data: bytes) -> bytes:
        """Take the PROXY header off the start of the input: what follows it (b"" while it is
        incomplete, or refused)."""
        assert self._proxy_header is not None
        self._proxy_header += data
        try:
            header = proxy_protocol.parse(bytes(self._proxy_header))
        except proxy_protocol.Invalid as exc:
            self._refuse(400, str(exc), "proxy_header")
            return b""
        if header is None:
            return b""
        rest = bytes(self._proxy_header[header.length :])
        self._proxy_header = None
        if header.client is not None:
            self.client = header.client  # the request's and the WebSocket's client
        return rest

    def send_400_response(self, msg: str) -> None:
        # httptools raised; a refusal chosen in a callback answers instead of the plain 400.
        refusal = self._refusal
        if refusal is not None:
            self._refuse(*refusal)
        else:
            stats.refuse("bad_request")
            self._done = True
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # a later request on a keep-alive connection starts afresh
            self._in_head = True
            self._header_count = 0
            self._head_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refusal = (431, f"more than {self.limits.max_headers} headers", "head_too_large")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self.parser.should_upgrade() and self._should_upgrade():
            wait = self._handshake_wait()
            if wait > 0:
                self._refusal = (
                    429,
                    "too many new connections from your address; try again later",
                    "handshake_rate",
                    wait,
                )
                raise _Refused
        elif not self._within_rate():
            self._refusal = (429, "too many requests from your address; slow down", "http_rate")
            raise _Refused
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers) + 16
        if size > self.limits.max_head_bytes:
            self._refusal = (
                431,
                f"request head over {self.limits.max_head_bytes} bytes",
                "head_too_large",
            )
            raise _Refused
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the connection over, with the handshake request whole,
        # and the client as it is known here (a PROXY header's): see ChatWebSocketProtocol.
        self._settled()
        global upgrading_client
        upgrading_client = self.client
        try:
            super().handle_websocket_upgrade()
        finally:
            upgrading_client = None

    def _address(self) -> str:
        """The client's address, as a trusted proxy forwards it (the request's headers)."""
        peer = self.client[0] if self.client is not None else None
        return addresses.client_address(peer, self.headers, self.trusted)

    def _handshake_wait(self) -> float:
        """0 if one more WebSocket handshake from this client's address is within its share,
        else the seconds until one would be."""
        per_minute = self.limits.handshakes_per_minute
        if per_minute <= 0:
            return 0.0
        now = self.loop.time()
        budget = addresses.remembered(
            self.handshakes, self._address(), lambda: Budget(per_minute / 60, per_minute, now)
        )
        return 0.0 if budget.spend(1, now) else max(budget.wait(1, now), 1.0)

    def _within_rate(self) -> bool:
        """Whether one more plain HTTP request from this client's address is within its rate."""
        rate = self.limits.http_rate
        if rate <= 0 or self.client is None:
            return True
        now = self.loop.time()
        burst = rate * FLOOD_BURST_SECONDS
        budget = addresses.remembered(
            self.budgets, self._address(), lambda: Budget(rate, burst, now)
        )
        return budget.spend(1, now)

    # --- answers --------------------------------------------------------------------------

    def _refuse_head(self, text: str) -> None:
        self._refuse(431, text, "head_too_large")

    def _refuse(self, status: int, text: str, reason: str, wait: float = 1.0) -> None:
        """Answer ``status`` with ``text`` and close; nothing more is read."""
        stats.refuse(reason)
        self._done = True
        self._settled()
        body = (text + "\n").encode()
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"retry-after: %d\r\n" % math.ceil(wait) if status == 429 else b"",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()
        log.debug("refused http status=%s reason=%s", status, text)
