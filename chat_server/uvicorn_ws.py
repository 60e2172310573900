"""uvicorn's WebSocket protocol, extended so that a stalled peer can really be let go.

Measured with each of uvicorn's WebSocket implementations: once a peer stops reading and the
kernel buffers fill, an awaited send blocks for good, and neither closing (which waits for the
write buffer to drain) nor the keepalive timeout frees the connection. ASGI has no way to abort
a transport, so this subclass offers one to the app as the ASGI scope extension
``"chat.abort"``: ``abort(code, reason)`` queues a close frame behind whatever is pending and
aborts the TCP connection shortly after unless it closed by itself. Keepalive timeouts and
server shutdown are bounded the same way.

It also offers ``"chat.frames"``, a sink for pre-encoded frames (see ``connection.py``): a
room's frame is encoded once and the same bytes are written to every member's transport.

``chat-server`` runs uvicorn with :class:`ChatWebSocketProtocol`. Under plain
``uvicorn chat_server:app`` the extension is absent and the app falls back to an ordinary close
(see ``app.py``); everything still works except freeing a stalled peer's socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

ABORT_EXTENSION = "chat.abort"
FRAMES_EXTENSION = "chat.frames"

# How long a close frame may wait in the write buffer before the connection is aborted.
ABORT_GRACE_SECONDS = 2.0


class _FrameSink:
    """chat_server.connection.FrameSink over one connection: pre-encoded frames go straight
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

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        self.frame_sink = _FrameSink(self)
        extensions = self.scope["extensions"]
        extensions[ABORT_EXTENSION] = self.abort_with_close
        extensions[FRAMES_EXTENSION] = self.frame_sink

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.frame_sink is not None and self.frame_sink.callback is not None:
            self.frame_sink.callback()

    def abort_with_close(self, code: int, reason: str, grace: float = ABORT_GRACE_SECONDS) -> None:
        """Queue a close frame without waiting for the buffer; abort if not closed in ``grace``."""
        if self.disconnected:
            return
        if not self.close_sent and not self.transport.is_closing():
            try:
                self.conn.send_close(code, reason)
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
            self.transport.abort()

    def keepalive_timeout(self) -> None:
        # uvicorn closes politely, which never completes if the peer stopped reading.
        super().keepalive_timeout()
        self._abort_later(1.0)

    def shutdown(self) -> None:
        super().shutdown()
        self._abort_later(ABORT_GRACE_SECONDS)
