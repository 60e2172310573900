"""uvicorn's WebSocket protocol, extended so that one peer can neither stall nor starve the rest.

Measured with each of uvicorn's WebSocket implementations: once a peer stops reading and the
kernel buffers fill, an awaited send blocks for good, and neither closing (which waits for the
write buffer to drain) nor the keepalive timeout frees the connection. ASGI has no way to abort
a transport, so this subclass offers one to the app as the ASGI scope extension
``"chat.abort"``: ``abort(close, detail)`` queues a close frame behind whatever is pending and
aborts the TCP connection shortly after unless it closed by itself. Keepalive timeouts and
server shutdown are bounded the same way. An abort resets the connection (``SO_LINGER`` 0, as
nginx's ``reset_timedout_connection``): a plain close would leave the kernel holding what the
peer never read (megabytes per socket, for minutes) after the server let go of it.

It also offers ``"chat.frames"``, a sink for pre-encoded frames (see ``member.py``): a
room's frame is encoded once and the same bytes are written to every member's transport.

And it guards the input where it is parsed, since much of it never reaches the app:

* every frame (data, continuation, ping, pong, close) and every byte counts against the
  connection's budgets (``budget.py``), charged on arrival; over budget, the connection is
  closed with 1008 ``flood: ...`` at once, and its input is no longer parsed;
* the message rate limit is judged on arrival too, and its verdict handed to the app with each
  message (``"chat.within_rate"``), so a message is never held against its sender for the time
  it waited for the server;
* replies to pings count against the outgoing bound (``send_buffer``): a peer that pings but
  never reads is dropped as a slow consumer;
* a request that fails the handshake is answered and closed, and leaves nothing behind;
* websockets' debug log, which shows frame contents, is replaced by one that shows only frame
  types and sizes.

``chat-server`` runs uvicorn with :class:`ChatWebSocketProtocol`, its limits given by the
server's settings through ``config.ChatConfig``. Under plain ``uvicorn chat_server:app`` the
extensions are absent and the app falls back to an ordinary close and its own rate limit (see
``session.py`` and ``checks.py``).

Every close it sends is counted by its value (``chat_protocol.close``): the app's come with
theirs (``asgi.CLOSE_KEY``), the parser's and keepalive's are known by their code.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State

from chat_protocol import close, http, v2
from chat_protocol.close import Close
from chat_server import asgi
from chat_server.budget import Budget, budget
from chat_server.stats import CLOSE_OUTCOMES, stats
from chat_server.transport import http_guard
from chat_server.transport.config import InputLimits, limits_of

_WITHIN_RATE = asgi.WITHIN_RATE_KEY
# chat.v2's typing and read frames are not messages. Recognised by their exact bytes (a read
# by its start) among short frames only: every other frame pays next to nothing (any other
# spelling of them counts as a message at arrival).
_TYPING = v2.TYPING_FRAME.encode()
_READ_HEAD = v2.read_up_to(0)[:-2].encode()  # {"type":"read","offset":
_READ_HEAD_SIZE = len(_READ_HEAD)
_SMALL = 48
# How long a close frame may wait in the write buffer before the connection is aborted.
ABORT_GRACE_SECONDS = 2.0
# SO_LINGER on, 0 s: closing the socket sends a reset and frees its buffers at once.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)
# What the kernel may hold to send on one WebSocket (Linux doubles it for its bookkeeping):
# left to itself it grows a socket's buffer up to net.ipv4.tcp_wmem's maximum (4 MiB), which
# a member that never reads holds until its ping times out, from every connection an address
# may open. What waits beyond it is --send-buffer's to bound; 256 KiB still keeps a link of
# 100 ms at 20 Mbit/s full, far more than a chat needs.
KERNEL_SEND_BUFFER = 256 * 1024
# Input is parsed this many bytes at a time, so that a read full of tiny frames is cut short
# as soon as the frame budget runs out (parsing costs ~4 us per frame).
PARSE_SLICE = 16 * 1024

log = logging.getLogger("chat_server")


def _set_socket_option(transport: Any, option: int, value: int | bytes) -> None:
    """A socket-level option of the transport's socket, if it has one that takes it (a
    closed socket, or another transport, goes without)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, value)


_BAD_REQUEST_TEXT = b"not a valid WebSocket upgrade request\n"
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
    % (len(_BAD_REQUEST_TEXT), _BAD_REQUEST_TEXT)
)

_FRAME_TYPES = {
    Opcode.TEXT: "text",
    Opcode.BINARY: "binary",
    Opcode.CONT: "continuation",
    Opcode.PING: "ping",
    Opcode.PONG: "pong",
    Opcode.CLOSE: "close",
}


class _FrameSink:
    """chat_server.member.FrameSink over one connection: pre-encoded frames go straight
    into the transport, skipping per-frame encoding and ASGI send for every member."""

    __slots__ = ("_protocol", "callback")

    def __init__(self, protocol: ChatWebSocketProtocol) -> None:
        self._protocol = protocol
        self.callback: Callable[[], None] | None = None

    def writable(self) -> bool:
        p = self._protocol
        return (
            p.writable.is_set()
            and not p.close_sent
            and not p.disconnected
            and p.conn.state is State.OPEN
            # The same bytes go to every member: no extension may rewrite frames.
            and not p.conn.extensions
        )

    def write(self, data: bytes) -> None:
        self._protocol.transport.write(data)

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        self.callback = callback


class ChatWebSocketProtocol(WebSocketsSansIOProtocol):
    frame_sink: _FrameSink | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # websockets logs every frame's content at debug level; the log never shows message
        # text, so frames are logged here by type and size only.
        self.conn.debug = False
        self._debug = self.logger.isEnabledFor(logging.DEBUG)
        self.limits: InputLimits = limits_of(self.config).input
        limits = self.limits
        now = self.loop.time()
        self._now = now
        self._frames: Budget | None = budget(limits.frame_rate, limits.frame_burst, now)
        self._bytes: Budget | None = budget(limits.byte_rate, limits.byte_burst, now)
        self._messages: Budget | None = budget(limits.message_rate, limits.message_burst, now)
        self._input_closed = False
        self._open = False  # a WebSocket in a room: counted in stats.websockets_open
        self._close_outcome: str | None = None  # set when the server closes first

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        _set_socket_option(transport, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)
        # Upgraded from the guarded HTTP protocol: its client (a PROXY header's address).
        if http_guard.upgrading_client is not None:
            self.client = http_guard.upgrading_client

    # --- handshake ----------------------------------------------------------------------------

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code != 101:
            # uvicorn answered (400/426) and closed: there is no scope and no app to run.
            stats.refuse("bad_handshake")
            if self._debug:
                self.logger.debug("refused handshake: %s", self.response.status_code)
            return
        self.frame_sink = _FrameSink(self)
        extensions = self.scope["extensions"]
        extensions[asgi.ABORT_EXTENSION] = self.abort_with_close
        extensions[asgi.FRAMES_EXTENSION] = self.frame_sink
        extensions[asgi.MESSAGE_BUDGET_EXTENSION] = self._messages

    def _handshake_failed(self) -> None:
        """websockets' parser refused the request (line too long, too many headers, a body):
        answer it and close, instead of leaving the socket open without a response."""
        stats.refuse("bad_request")
        output = b"".join(self.conn.data_to_send())
        if not output.startswith(b"HTTP/"):
            output = _BAD_REQUEST
        self.handshake_complete = True
        self.close_sent = True
        self._input_closed = True
        self.transport.write(output)
        self.transport.close()

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.accept" and not self.handshake_complete:
            self._open = True
            stats.websockets_open += 1
        elif message["type"] == "websocket.close" and not self.close_sent:
            if not self.handshake_complete:
                stats.refuse("origin")  # the only refusal the app makes before accepting
            else:
                self._server_closes(
                    message.get(asgi.CLOSE_KEY) or close.by_code(message.get("code", 1000))
                )
        elif message["type"] == "websocket.http.response.start":
            stats.refuse("token")  # the app's answer before the upgrade: a signed token's 401
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            # Answered: uvicorn would otherwise log that the app never completed the handshake.
            self.handshake_complete = True

    # --- input --------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._input_closed:
            return
        self._now = now = self.loop.time()
        if self.handshake_complete:
            stats.bytes_in += len(data)
            if self._bytes is not None and not self._bytes.spend(len(data), now):
                self._flood(f"more than {self.limits.byte_rate:.0f} bytes per second")
                return
        for start in range(0, len(data), PARSE_SLICE):
            chunk = data if len(data) <= PARSE_SLICE else data[start : start + PARSE_SLICE]
            self.conn.receive_data(chunk)
            if self.conn.parser_exc is not None:
                self.handle_parser_exception()
                return
            if not self.handshake_initiated and self.conn.handshake_exc is not None:
                self._handshake_failed()
                return
            self.handle_events()
            if self._input_closed or self.transport.is_closing():
                return

    def handle_events(self) -> None:
        frames = self._frames
        for event in self.conn.events_received():
            if isinstance(event, Request):
                self.handle_connect(event)
                continue
            if self._input_closed:
                return
            assert isinstance(event, Frame)
            kind = _FRAME_TYPES[event.opcode]
            stats.frames_in[kind] += 1
            if self._debug:
                self.logger.debug("< %s frame, %d bytes", kind, len(event.data))
            if frames is not None and not frames.spend(1, self._now):
                self._flood(f"more than {self.limits.frame_rate:.0f} frames per second")
                return
            opcode = event.opcode
            if opcode is Opcode.TEXT:
                if event.fin:
                    # A message in one frame (nearly every one): to the app without
                    # handle_text's list of fragments.
                    self.curr_msg_data_type = "text"
                    self._receive_text(event.data)
                else:
                    self.handle_text(event)
            elif opcode is Opcode.CONT:
                self.handle_cont(event)
            elif opcode is Opcode.BINARY:
                self.handle_bytes(event)
            elif opcode is Opcode.PING:
                self.handle_ping()
            elif opcode is Opcode.PONG:
                self.handle_pong(event)
            else:
                self.handle_close(event)

    def send_receive_event_to_app(self) -> None:
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # past our close frame: only the peer's reply matters now
        if self.curr_msg_data_type != "bytes":
            self._receive_text(data)
            return
        self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _receive_text(self, data: bytes) -> None:
        """A whole text message: to the app, with whether it came within the message rate."""
        if self.close_sent:
            return  # past our close frame: only the peer's reply matters now
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.conn.send_close(close.INVALID_UTF8.code, close.INVALID_UTF8.text())
            self.handle_parser_exception()
            return
        if len(data) <= _SMALL and (data == _TYPING or data[:_READ_HEAD_SIZE] == _READ_HEAD):
            within = None  # chat.v2's typing or read, which cost no message: the app judges
        else:
            within = self._messages is None or self._messages.spend(1, self._now)
            if not within:
                stats.rate_limited += 1
        self.queue.put_nowait({"type": "websocket.receive", "text": text, _WITHIN_RATE: within})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def handle_ping(self) -> None:
        pong = b"".join(self.conn.data_to_send())
        if self.transport.get_write_buffer_size() + len(pong) > self.limits.send_buffer:
            # Replies pile up for a peer that does not read: they count against its bound.
            self._evict(close.SLOW_CONSUMER)
            return
        stats.control_frames_out += 1
        self.transport.write(pong)

    def handle_parser_exception(self) -> None:
        sent = self.conn.close_sent
        if sent is not None and not self.close_sent:
            # websockets' own close (or ours for invalid UTF-8): known by its code.
            self._server_closes(close.by_code(sent.code))
        self._input_closed = True
        super().handle_parser_exception()
        # uvicorn closes, which waits for a peer that may never read: bound it.
        self._abort_later(ABORT_GRACE_SECONDS)

    # --- closing ------------------------------------------------------------------------------

    def _flood(self, what: str) -> None:
        if self.handshake_complete and not self.close_sent:
            self._evict(close.FLOOD, what)
        else:
            self._input_closed = True
            self._reset()

    def _evict(self, why: Close, detail: object = None) -> None:
        """Close for what the peer did and tell the app. Its input is read but no longer
        parsed (closing with unread input would reset the connection and could lose the
        close frame), until it closes or the abort grace runs out."""
        reason = why.text(detail)
        self._log_eviction(reason)
        self._input_closed = True
        self.queue.put_nowait({"type": "websocket.disconnect", "code": why.code, "reason": reason})
        self.abort_with_close(why, detail)

    def _log_eviction(self, reason: str) -> None:
        room = self.scope["path"][len(http.CHAT_PATH_PREFIX) :]
        log.warning("evicted room=%s reason=%s", room, reason)

    def _server_closes(self, why: Close) -> None:
        outcome = stats.closed(why)
        if self._close_outcome is None:
            self._close_outcome = outcome

    def abort_with_close(
        self, why: Close, detail: object = None, grace: float = ABORT_GRACE_SECONDS
    ) -> None:
        """Queue a close frame without waiting for the buffer; abort if not closed in ``grace``."""
        if self.disconnected:
            return
        if not self.close_sent and not self.transport.is_closing():
            self._server_closes(why)
            try:
                self.conn.send_close(why.code, why.text(detail))
                self.transport.write(b"".join(self.conn.data_to_send()))
            except Exception:  # the protocol may already be closing; abort regardless
                pass
            self.close_sent = True
        self._abort_later(grace)

    def _abort_later(self, grace: float) -> None:
        # uvicorn's close timer: cancelled when the peer answers our close frame (the socket is
        # then closed normally), else it fires. Aborting, unlike closing, drops unsent data.
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.close_timer = self.loop.call_later(grace, self._abort_if_open)

    def _abort_if_open(self) -> None:
        self.close_timer = None
        if not self.disconnected:
            self._reset()

    def _reset(self) -> None:
        """Drop the connection and what is queued for it, the kernel's part too (a reset):
        aborting only drops this process's buffer, and the kernel would go on trying to
        send its own (up to a few MiB) to a peer that does not read, long after."""
        _set_socket_option(self.transport, socket.SO_LINGER, _RESET_ON_CLOSE)
        self.transport.abort()

    def keepalive_timeout(self) -> None:
        # uvicorn closes politely, which never completes if the peer stopped reading.
        if not self.close_sent:
            self._server_closes(close.PING_TIMEOUT)
            self._log_eviction(close.PING_TIMEOUT.text(None))
        super().keepalive_timeout()
        self._abort_later(1.0)

    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent:
            self._server_closes(close.SHUTDOWN)
        super().shutdown()
        self._abort_later(ABORT_GRACE_SECONDS)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.frame_sink is not None and self.frame_sink.callback is not None:
            self.frame_sink.callback()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._open:
            self._open = False
            stats.websockets_open -= 1
            if self._close_outcome is not None:
                outcome = self._close_outcome
            elif self.conn.close_rcvd is not None:
                outcome = "client_close"
            else:
                outcome = "lost"
            stats.closes[outcome if outcome in CLOSE_OUTCOMES else "other"] += 1
        super().connection_lost(exc)
