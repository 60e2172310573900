"""The client's WebSocket session: httpx-ws's, with the bound on incoming messages it lacks.

httpx-ws reads a message of any size, buffering its fragments without limit: a hostile or
broken server could send 10 MB in one frame and the client would take it all in, then lay it
out. Here a message over :data:`MAX_INCOMING_BYTES` ends the connection as a close would: the
reader gets ``WebSocketDisconnect`` with :data:`OWN_CLOSE_CODE` (a code no server sends, so the
connection knows it was its own decision), and nothing more of that message is kept. So does a
frame that breaks the WebSocket protocol (text that is not UTF-8, a masked frame, a reserved
bit set): wsproto reports it as a close, which the user would otherwise read as the server's.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from typing import Any, Final

import anyio
import httpcore
from httpx_ws import (
    AsyncWebSocketSession,
    HTTPXWSException,
    WebSocketDisconnect,
    WebSocketNetworkError,
)

# httpx-ws's own end of stream (not anyio's), raised by its _read_stream: private, but the
# reading task it replaces catches this one.
from httpx_ws._api import EndOfStream
from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection, Event, Message, Ping, Pong
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

# The reference server sends frames of at most ~25 KiB (a 4,096-character message as JSON); an
# operator may allow longer messages. Four times its input frame limit (64 KiB) leaves room.
MAX_INCOMING_BYTES: Final = 256 * 1024
# Never on the wire: the code of a close the client makes (a message over the bound, a frame
# that breaks the protocol); its reason says why.
OWN_CLOSE_CODE: Final = 4009
# Received messages waiting for the reader, beyond which the reading task stops reading.
INBOX_LIMIT: Final = 1024
# At most this many received messages are taken one after the other without a turn of the
# event loop (each costs the reader some 20-50 us: a few milliseconds at most).
RUN_LIMIT: Final = 64


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
                        OWN_CLOSE_CODE, f"the server sent a message over {self._limit} bytes"
                    )
                    return
                if event.message_finished:
                    self._size = 0
            elif isinstance(event, CloseConnection) and self._inner.state is ConnectionState.OPEN:
                # Not the server's close (that moves the state on): wsproto's own, for a frame
                # it could not take (its code: 1002 protocol error, 1007 invalid data).
                yield CloseConnection(
                    OWN_CLOSE_CODE,
                    f"the server broke the WebSocket protocol ({event.code}: {event.reason})",
                )
                return
            yield event


class BoundedSession(AsyncWebSocketSession):
    """httpx-ws's session with the bound, and a cheaper hand-over of received messages.

    httpx-ws hands each received message from its reading task to ``receive`` through an
    unbuffered anyio memory stream: a rendezvous with a checkpoint on either side, a cancel
    scope per ``receive``, so every message costs several turns of the event loop (each of
    which, in the app, also runs whatever else is due). Here the reading task appends all the
    messages of one network read to a deque and wakes the reader once; ``receive`` takes from
    the deque without waiting while it holds anything. The reading task stops reading while
    :data:`INBOX_LIMIT` messages wait (the back-pressure the rendezvous gave). Failures (a
    broken stream, a keepalive ping without a pong) come through the deque too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection = _BoundedConnection(self.connection, MAX_INCOMING_BYTES)  # type: ignore[assignment]
        self._inbox: deque[Event | HTTPXWSException] = deque()
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()  # the inbox has room again
        self._room.set()
        self._run = 0  # messages taken without a turn of the event loop

    async def receive(self, timeout: float | None = None) -> Event:
        inbox = self._inbox
        if inbox:
            self._run += 1
            if self._run >= RUN_LIMIT:  # let the loop turn: others are due, too
                self._run = 0
                await asyncio.sleep(0)
        else:
            self._run = 0
            if timeout is None:
                while not inbox:
                    self._arrived.clear()
                    await self._arrived.wait()
            else:
                with anyio.fail_after(timeout):
                    while not inbox:
                        self._arrived.clear()
                        await self._arrived.wait()
        event = inbox.popleft()
        if len(inbox) < INBOX_LIMIT // 2 and not self._room.is_set():
            self._room.set()
        if isinstance(event, HTTPXWSException):
            raise event
        if isinstance(event, CloseConnection):
            raise WebSocketDisconnect(event.code, event.reason)
        return event

    def _deliver(self, event: Event | HTTPXWSException) -> None:
        self._inbox.append(event)
        self._arrived.set()

    async def _background_keepalive_ping(
        self, interval_seconds: float, timeout_seconds: float | None = None
    ) -> None:
        # httpx-ws's, but a pong that never comes is told through the inbox (its memory
        # stream has no reader here: the failure would never reach ``receive``).
        while not self._should_close.is_set():
            await anyio.sleep(interval_seconds)
            try:
                pong = await self.ping()
            except LocalProtocolError:  # closing
                return
            if timeout_seconds is not None:
                try:
                    with anyio.fail_after(timeout_seconds):
                        await pong.wait()
                except TimeoutError:
                    await self.close(CloseReason.INTERNAL_ERROR, "Keepalive ping timeout")
                    self._deliver(WebSocketNetworkError())

    async def _background_receive(self, max_bytes: int) -> None:
        # httpx-ws's, but delivering into the inbox (see the class).
        partial: str | bytes | None = None
        inbox = self._inbox
        try:
            while not self._should_close.is_set():
                if len(inbox) >= INBOX_LIMIT:
                    self._room.clear()
                    await self._room.wait()
                    continue
                data = await self._read_stream(max_bytes)
                self.connection.receive_data(data)
                for event in self.connection.events():
                    if isinstance(event, Ping):
                        data = self.connection.send(event.response())
                        async with self._write_lock:
                            await self.stream.write(data)
                        continue
                    if isinstance(event, Pong):
                        self._ping_manager.ack(event.payload)
                        continue
                    if isinstance(event, CloseConnection):
                        self._should_close.set()
                    if isinstance(event, Message):
                        if not event.message_finished:  # unfinished: kept until it is
                            partial = event.data if partial is None else partial + event.data
                            continue
                        if partial is not None:
                            event = type(event)(partial + event.data)
                            partial = None
                    inbox.append(event)
                self._arrived.set()
        except (httpcore.ReadError, httpcore.WriteError, EndOfStream):
            await self.close(CloseReason.INTERNAL_ERROR, "Stream error")
            self._deliver(WebSocketNetworkError())
