"""uvicorn's WebSocket protocol, extended so that a stalled peer can really be let go.

Measured with each of uvicorn's WebSocket implementations: once a peer stops reading and the
kernel buffers fill, an awaited send blocks for good, and neither closing (which waits for the
write buffer to drain) nor the keepalive timeout frees the connection. ASGI has no way to abort
a transport, so this subclass offers one to the app as the ASGI scope extension
``"chat.abort"``: ``abort(code, reason)`` queues a close frame behind whatever is pending and
aborts the TCP connection shortly after unless it closed by itself. Keepalive timeouts and
server shutdown are bounded the same way.

``chat-server`` runs uvicorn with :class:`ChatWebSocketProtocol`. Under plain
``uvicorn chat_server:app`` the extension is absent and the app falls back to an ordinary close
(see ``app.py``); everything still works except freeing a stalled peer's socket.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

ABORT_EXTENSION = "chat.abort"

# How long a close frame may wait in the write buffer before the connection is aborted.
ABORT_GRACE_SECONDS = 2.0


class ChatWebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        self.scope["extensions"][ABORT_EXTENSION] = self.abort_with_close

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
