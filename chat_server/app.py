"""The FastAPI application: the ``/chat/{room}`` WebSocket endpoint and the HTTP endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException

from chat_server import protocol
from chat_server.broker import Broker, broker_from_url
from chat_server.connection import AsgiMember, Member, TokenBucket, TransportMember
from chat_server.protocol import CloseCode
from chat_server.settings import Settings
from chat_server.uvicorn_ws import ABORT_EXTENSION, FRAMES_EXTENSION, WITHIN_RATE_KEY

log = logging.getLogger("chat_server")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Minimum time between two "you are sending too fast" notices to one connection.
FLOOD_NOTICE_INTERVAL = 1.0


class ChatServer:
    """State shared by all connections of one server process."""

    def __init__(self, settings: Settings, broker: Broker) -> None:
        self.settings = settings
        self.broker = broker
        self.started = time.time()
        self.connections = 0
        self._background: set[asyncio.Task[None]] = set()

    async def claim_unique_name(self) -> str:
        while True:
            name = protocol.random_name()
            if await self.broker.claim_name(name):
                return name

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class ChatEndpoint:
    """A raw ASGI WebSocket endpoint: it skips Starlette's per-frame wrappers on the hot path."""

    def __init__(self, server: ChatServer) -> None:
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = self.server
        settings = server.settings
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return

        origin = _header(scope, b"origin")
        if origin is not None and not origin_allowed(
            origin, _header(scope, b"host"), settings.allow_origin
        ):
            # Closing before accepting is refused by the server with HTTP 403.
            await send({"type": "websocket.close"})
            log.info("refused origin=%s", origin)
            return

        room = scope["path_params"].get("room", "")
        if not protocol.is_valid_room(room):
            await send({"type": "websocket.accept"})
            await send(
                {
                    "type": "websocket.close",
                    "code": CloseCode.POLICY_VIOLATION,
                    "reason": f"invalid room name: {protocol.ROOM_RULE}",
                }
            )
            return

        if server.connections >= settings.max_connections:
            await send({"type": "websocket.accept"})
            await send(
                {
                    "type": "websocket.close",
                    "code": CloseCode.TRY_AGAIN_LATER,
                    "reason": f"server full ({settings.max_connections} connections)",
                }
            )
            log.warning("refused room=%s reason=connection limit", room)
            return

        server.connections += 1
        try:
            await self._session(scope, receive, send, room)
        finally:
            server.connections -= 1

    async def _session(self, scope: Scope, receive: Receive, send: Send, room: str) -> None:
        server = self.server
        settings = server.settings
        broker = server.broker
        extensions = scope.get("extensions") or {}
        abort = extensions.get(ABORT_EXTENSION)

        await send({"type": "websocket.accept"})
        name = await server.claim_unique_name()
        join_frame = protocol.format_join(name)
        left = False

        def leave(code: int | str) -> Awaitable[None] | None:
            nonlocal left
            if left:
                return None
            left = True
            member.close()
            log.info("left room=%s name=%s code=%s", room, name, code)
            return _announce_leave()

        async def _announce_leave() -> None:
            await broker.unsubscribe(room, member)
            await broker.release_name(name)
            await broker.publish(room, protocol.format_leave(name))

        def close_connection(code: int, reason: str) -> Awaitable[None] | None:
            """Abort-capable servers never wait on a socket that may not drain."""
            if abort is not None:
                abort(code, reason, settings.close_grace)
                return None
            return _close_politely(send, code, reason, settings.close_grace)

        def evict(_: Member) -> None:
            log.warning("evicted room=%s name=%s reason=slow consumer", room, name)
            for pending in (
                leave("slow consumer"),
                close_connection(CloseCode.POLICY_VIOLATION, "slow consumer"),
            ):
                if pending is not None:
                    server.spawn(pending)

        sink = extensions.get(FRAMES_EXTENSION)
        member: Member
        if sink is not None:
            member = TransportMember(name, room, settings.send_buffer, evict, join_frame, sink)
        else:
            member = AsgiMember(name, room, settings.send_buffer, evict, join_frame, send)
        await broker.subscribe(room, member)
        await broker.publish(room, join_frame)
        log.info("joined room=%s name=%s", room, name)

        bucket = TokenBucket(settings.rate_limit, settings.rate_burst)
        last_flood_notice = 0.0
        max_chars = settings.max_message_chars
        max_bytes = settings.max_frame_bytes
        close: tuple[int, str] | None = None
        code: int | str = CloseCode.NORMAL
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    code = message.get("code", CloseCode.NORMAL)
                    break
                if left:  # evicted while this frame was on its way: it is not broadcast
                    break
                text = message.get("text")
                if text is None:
                    close = (CloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
                    code = "binary frame"
                    break
                if len(text) > max_bytes // 4 and len(text.encode()) > max_bytes:
                    close = (CloseCode.MESSAGE_TOO_BIG, f"frame over {max_bytes} bytes")
                    code = "frame too big"
                    break
                # chat-server judges the rate when the frame arrives; plain uvicorn cannot.
                within_rate = message.get(WITHIN_RATE_KEY)
                if not (bucket.take() if within_rate is None else within_rate):
                    now = time.monotonic()
                    if now - last_flood_notice >= FLOOD_NOTICE_INTERVAL:
                        last_flood_notice = now
                        member.deliver_private(
                            protocol.format_error(
                                f"you are sending too fast (limit {settings.rate_limit:g} "
                                f"messages per second); messages were dropped"
                            )
                        )
                    continue
                if len(text) > max_chars:
                    member.deliver_private(
                        protocol.format_error(
                            f"message too long ({len(text)} characters; the limit is "
                            f"{max_chars}); it was not sent"
                        )
                    )
                    continue
                clean = protocol.sanitize(text)
                if clean is None:
                    continue
                await broker.publish(room, protocol.format_message(name, clean))
        finally:
            closing = leave(code)
            if closing is not None:
                await closing
            await member.drain()
            if close is not None and (closing := close_connection(*close)) is not None:
                await closing


async def _close_politely(send: Send, code: int, reason: str, timeout: float) -> None:
    with contextlib.suppress(Exception, asyncio.TimeoutError):
        await asyncio.wait_for(
            send({"type": "websocket.close", "code": code, "reason": reason}), timeout
        )


def origin_allowed(origin: str, host: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a handshake that carries an ``Origin`` header may proceed.

    Browsers always send ``Origin``; terminal clients usually send none. Some (websocket-client,
    the original design's client) send their own target as origin, ``http://{Host}``: that is
    same-origin, and no web page can have it because this server serves no pages. It is only
    trusted when the host is an IP literal or ``localhost``, since with a DNS name a rebinding
    page could forge it.
    """
    origin = origin.rstrip("/")
    if "*" in allowed or origin in allowed:
        return True
    if host is None:
        return False
    scheme, _, authority = origin.partition("://")
    if scheme not in {"http", "https"} or authority.lower() != host.lower():
        return False
    hostname = urlsplit(origin).hostname or ""
    if hostname == "localhost":
        return True
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class ChatApplication:
    """The ASGI application: chat WebSockets go straight to :class:`ChatEndpoint`, the rest to
    FastAPI.

    Routed through FastAPI, every WebSocket would stay suspended inside its middleware stack
    for its whole life: about 5 KB per idle connection (measured by bench/server_bench.py).
    """

    def __init__(self, http: FastAPI, endpoint: ChatEndpoint) -> None:
        self.http = http
        self.endpoint = endpoint
        self.chat = endpoint.server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"].startswith(protocol.CHAT_PATH_PREFIX):
            # Everything after the prefix, '/' included, so that a bad name gets a clear 1008.
            scope["path_params"] = {"room": scope["path"][len(protocol.CHAT_PATH_PREFIX) :]}
            await self.endpoint(scope, receive, send)
        else:
            await self.http(scope, receive, send)


def create_app(settings: Settings | None = None) -> ChatApplication:
    settings = settings or Settings.from_env()
    server = ChatServer(settings, broker_from_url(settings.broker_url))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await server.broker.connect()
        try:
            yield
        finally:
            await server.broker.disconnect()

    app = FastAPI(title="chat_server", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        rooms = await server.broker.rooms()
        return {
            "status": "ok",
            "uptime_seconds": round(time.time() - server.started, 3),
            "connections": server.connections,
            "rooms": len(rooms),
        }

    @app.get("/rooms")
    async def list_rooms() -> list[dict[str, Any]]:
        rooms = await server.broker.rooms()
        return [{"room": room, "members": rooms[room]} for room in sorted(rooms)]

    @app.get("/rooms/{room}")
    async def room_members(room: str) -> dict[str, Any]:
        if not protocol.is_valid_room(room):
            raise HTTPException(404, f"invalid room name: {protocol.ROOM_RULE}")
        members = await server.broker.members(room)
        if not members:
            raise HTTPException(404, f"no room {room!r}: rooms exist while they have members")
        return {"room": room, "members": members}

    return ChatApplication(app, ChatEndpoint(server))
