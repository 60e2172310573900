"""The FastAPI application: the ``/chat/{room}`` WebSocket endpoint and the HTTP endpoints."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse

from chat_server import logs, protocol, tokens
from chat_server.backends import Backend, BrokerStatus, BrokerUnavailable, open_backend
from chat_server.connection import Member
from chat_server.hub import HubMember, RoomHub
from chat_server.loop_lag import monitor
from chat_server.protocol import CloseCode
from chat_server.session import ChatSession, unavailable_reason
from chat_server.settings import Settings

log = logging.getLogger("chat_server")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class NameLease:
    """A connection's name: with chat.v2 also its token, and whether it was resumed."""

    name: str
    token: tokens.Token | None = None
    resumed: bool = False

    @property
    def token_id(self) -> str:
        assert self.token is not None
        return tokens.token_id(self.token.digest)


class ChatServer:
    """State shared by all connections of one server process (one node)."""

    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        self.channels = backend.channels
        self.registry = backend.registry
        self.hub = RoomHub(backend.channels, self._room_lost)
        self.started = time.time()
        self.connections = 0
        self.sessions: set[ChatSession] = set()
        self._background: set[asyncio.Task[None]] = set()
        backend.on_status(self._broker_status)

    async def claim_name(self, resume: str | None = None, tokened: bool = False) -> NameLease:
        """The name of a new connection: the one ``resume`` was issued with if that token is
        still its own, else a fresh one (with a token of its own if ``tokened``)."""
        registry = self.registry
        if resume is not None:
            token = tokens.parse_token(resume)
            if token is not None:
                stored = await registry.name_digest(token.name)
                if tokens.matches(stored, token) and await registry.resume_name(
                    token.name, token.digest
                ):
                    return NameLease(token.name, token, resumed=True)
        while True:
            name = protocol.random_name()
            token = tokens.new_token(name) if tokened else None
            if await registry.claim_name(name, None if token is None else token.digest):
                return NameLease(name, token)

    async def claim_unique_name(self) -> str:
        return (await self.claim_name()).name

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _room_lost(self, room: str, members: list[HubMember], why: str) -> None:
        log.warning("lost events room=%s members=%d reason=%s", room, len(members), why)
        for member in members:
            if isinstance(member, Member):
                member.drop(CloseCode.SERVICE_RESTART, "missed frames from the broker; reconnect")

    def _broker_status(self, status: BrokerStatus) -> None:
        if status.available:
            log.warning("broker available url=%s", self.backend.url)
            return
        log.warning(
            "broker unavailable url=%s reason=%s; closing %d connection(s)",
            self.backend.url,
            status.reason,
            len(self.sessions),
        )
        # A chat where the others silently stop hearing you is worse than a clear outage:
        # everyone is told, and reconnects once the broker answers again.
        reason = unavailable_reason(BrokerUnavailable(status.reason))
        for session in list(self.sessions):
            session.drop(CloseCode.TRY_AGAIN_LATER, reason)


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
            await _refuse(
                send, CloseCode.POLICY_VIOLATION, f"invalid room name: {protocol.ROOM_RULE}"
            )
            return

        v2 = protocol.SUBPROTOCOL_V2 in (scope.get("subprotocols") or ())
        try:
            request = protocol.parse_join_query(scope.get("query_string", b""), v2)
        except protocol.QueryError as exc:
            await _refuse(send, CloseCode.POLICY_VIOLATION, str(exc))
            return

        if server.connections >= settings.max_connections:
            await _refuse(
                send,
                CloseCode.TRY_AGAIN_LATER,
                f"server full ({settings.max_connections} connections)",
            )
            log.warning("refused room=%s reason=connection limit", room)
            return

        status = server.backend.status
        if not status.available:
            reason = unavailable_reason(BrokerUnavailable(status.reason))
            await _refuse(send, CloseCode.TRY_AGAIN_LATER, reason)
            log.info("refused room=%s reason=broker unavailable", room)
            return

        session = ChatSession(server, scope, receive, send, room, request, v2)
        try:
            await session.run()
        finally:
            session.uncount()


async def _refuse(send: Send, code: int, reason: str) -> None:
    """Accept, then close at once: the client reads the code and reason."""
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code, "reason": reason})


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
    server = ChatServer(settings, open_backend(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The input budgets and /metrics need to know when the whole loop stood still.
        monitor.start()
        logs.mask_uvicorn_tokens()
        await server.backend.start()
        try:
            yield
        finally:
            await server.backend.close()
            monitor.stop()

    app = FastAPI(title="chat_server", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(BrokerUnavailable)
    async def broker_unavailable(_: Any, exc: BrokerUnavailable) -> JSONResponse:
        return JSONResponse({"detail": unavailable_reason(exc)}, status_code=503)

    @app.get("/health")
    async def health() -> JSONResponse:
        backend = server.backend
        node = {
            "id": backend.node_id,
            "connections": server.connections,
            "rooms": len(server.hub.rooms()),
        }
        broker: dict[str, Any] = {
            "kind": backend.kind,
            "url": backend.url,
            "state": "available" if backend.status.available else "unavailable",
        }
        body: dict[str, Any] = {
            "uptime_seconds": round(time.time() - server.started, 3),
            "connections": server.connections,
            "node": node,
            "broker": broker,
        }
        try:
            if not backend.status.available:
                raise BrokerUnavailable(backend.status.reason)
            cluster = await server.registry.cluster()
        except BrokerUnavailable as exc:
            broker["reason"] = str(exc)
            body = {"status": "unavailable", "reason": unavailable_reason(exc), **body}
            return JSONResponse(body, status_code=503)
        body = {"status": "ok", **body, "rooms": cluster.rooms}
        body["cluster"] = {
            "nodes": cluster.nodes,
            "rooms": cluster.rooms,
            "connections": cluster.connections,
        }
        return JSONResponse(body)

    @app.get("/rooms")
    async def list_rooms() -> list[dict[str, Any]]:
        rooms = await server.registry.rooms()
        return [{"room": room, "members": rooms[room]} for room in sorted(rooms)]

    @app.get("/rooms/{room}")
    async def room_members(room: str) -> dict[str, Any]:
        if not protocol.is_valid_room(room):
            raise HTTPException(404, f"invalid room name: {protocol.ROOM_RULE}")
        members = await server.registry.members(room)
        if not members:
            raise HTTPException(404, f"no room {room!r}: rooms exist while they have members")
        return {"room": room, "members": members}

    return ChatApplication(app, ChatEndpoint(server))
