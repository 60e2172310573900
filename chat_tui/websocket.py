"""The client's WebSocket session: httpx-ws's, with the bound on incoming messages it lacks.

httpx-ws reads a message of any size, buffering its fragments without limit: a hostile or
broken server could send 10 MB in one frame and the client would take it all in, then lay it
out. Here a message over :data:`MAX_INCOMING_BYTES` ends the connection as a close would: the
reader gets ``WebSocketDisconnect`` with :data:`TOO_BIG_CODE` (a code no server sends, so the
connection knows it was its own decision), and nothing more of that message is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from httpx_ws import AsyncWebSocketSession
from wsproto.connection import Connection
from wsproto.events import CloseConnection, Event, Message

# The reference server sends frames of at most ~25 KiB (a 4,096-character message as JSON); an
# operator may allow longer messages. Four times its input frame limit (64 KiB) leaves room.
MAX_INCOMING_BYTES: Final = 256 * 1024
# Never on the wire: the code of the close the client makes for a message over the bound.
TOO_BIG_CODE: Final = 4009


class _BoundedConnection:
    """wsproto's connection, whose events stop at a message over the bound."""

    def __init__(self, inner: Connection, limit: int) -> None:
        self._inner = inner
        self._limit = limit
        self._size = 0  # of the message being received

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def events(self) -> Iterator[Event]:
        for event in self._inner.events():
            if isinstance(event, Message):
                data = event.data
                # Characters of text count as bytes: the bound is on what is kept, roughly.
                self._size += len(data)
                if self._size > self._limit:
                    yield CloseConnection(
                        TOO_BIG_CODE, f"the server sent a message over {self._limit} bytes"
                    )
                    return
                if event.message_finished:
                    self._size = 0
            yield event


class BoundedSession(AsyncWebSocketSession):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection = _BoundedConnection(self.connection, MAX_INCOMING_BYTES)  # type: ignore[assignment]
