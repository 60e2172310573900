"""The ASGI application: ``/chat/{room}`` WebSockets go straight to the chat endpoint, the rest
(``/health``, ``/rooms``, ``/rooms/{room}``) to FastAPI. Paths and answer shapes are
``chat_protocol.http``'s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from chat_protocol import close, http, names
from chat_server import asgi
from chat_server.backends.base import BrokerUnavailable, public_reason
from chat_server.backends.factory import open_backend
from chat_server.http import admin
from chat_server.http.cache import Answers
from chat_server.http.endpoint import ChatEndpoint
from chat_server.loop_lag import monitor
from chat_server.node import Node
from chat_server.ops import logs
from chat_server.ops.settings import Settings
from chat_server.signed import InvalidToken


class ChatApplication:
    """Chat WebSockets to :class:`ChatEndpoint`, everything else to FastAPI.

    Routed through FastAPI, every WebSocket would stay suspended inside its middleware stack
    for its whole life: about 5 KB per idle connection (measured by bench/server_bench.py).
    """

    def __init__(self, node: Node, api: FastAPI) -> None:
        self.node = node
        self.api = api
        self.endpoint = ChatEndpoint(node)

    async def __call__(self, scope: asgi.Scope, receive: asgi.ReceiveFn, send: asgi.SendFn) -> None:
        if scope["type"] == "websocket" and scope["path"].startswith(http.CHAT_PATH_PREFIX):
            # Everything after the prefix, '/' included, so that a bad name gets a clear 1008.
            scope["path_params"] = {"room": scope["path"][len(http.CHAT_PATH_PREFIX) :]}
            await self.endpoint(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def create_app(settings: Settings | None = None) -> ChatApplication:
    settings = settings or Settings.from_env()
    node = Node(settings, open_backend(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The input budgets and /metrics need to know when the whole loop stood still.
        monitor.start()
        logs.mask_uvicorn_tokens()
        reporting = asyncio.create_task(logs.report_sampled(logs.sample_connection_lines()))
        await node.backend.start()
        if node.backend.status.available:
            # The rules a broker kept across a restart (sqlite://) hold from the first join;
            # one that is still connecting (Redis) loads them when it is up.
            await node.governance.reload()
        try:
            yield
        finally:
            reporting.cancel()
            await node.backend.close()
            monitor.stop()

    # No OpenAPI schema: it would only tell a stranger behind the proxy what is here.
    api = FastAPI(
        title="chat_server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )

    @api.exception_handler(BrokerUnavailable)
    async def broker_unavailable(_: Any, exc: BrokerUnavailable) -> JSONResponse:
        return JSONResponse(http.error_body(close.BROKER_UNAVAILABLE.text(public_reason(exc))), 503)

    registry = node.backend.registry
    # The one answer that grows with the rooms is worked out at most once a second, however
    # many ask; the counts of /health are kept as events happen, a room's members are its own.
    listings: Answers[dict[str, int]] = Answers()

    @api.get(http.HEALTH_PATH)
    async def health() -> JSONResponse:
        return await _health(node)

    verifier = node.verifier

    def unsigned(request: Request) -> JSONResponse | None:
        """On a private server, who is where is for holders of a good token only."""
        if verifier is None:
            return None
        try:
            verifier.verify_request(request.headers.raw, request.url.query.encode())
        except InvalidToken as exc:
            return JSONResponse(http.error_body(str(exc)), 401)
        return None

    @api.get(http.ROOMS_PATH)
    async def list_rooms(
        request: Request, after: str = "", limit: str = str(http.ROOMS_PAGE)
    ) -> JSONResponse:
        if (refused := unsigned(request)) is not None:
            return refused
        # The limit read here, not by FastAPI: a word that is no number is a 400 like any
        # other value out of range, not a 422 with FastAPI's own body.
        count = int(limit) if limit.isascii() and limit.isdigit() and len(limit) < 6 else 0
        if (after and not names.is_valid_room(after)) or not 1 <= count <= http.ROOMS_PAGE:
            return JSONResponse(http.error_body(http.PAGE_RULE), 400)
        rooms = await listings.get((after, count), lambda: registry.rooms(after, count))
        return JSONResponse(http.rooms_body(rooms))

    @api.get(http.ROOMS_PATH + "/{room}")
    async def room_members(request: Request, room: str) -> JSONResponse:
        if (refused := unsigned(request)) is not None:
            return refused
        if not names.is_valid_room(room):
            return JSONResponse(http.error_body(http.INVALID_ROOM_DETAIL), 404)
        members = await registry.members(room)
        if not members:
            return JSONResponse(http.error_body(http.no_room_detail(room)), 404)
        return JSONResponse(http.members_body(room, members, await registry.away(members)))

    admin.install(api, node)
    return ChatApplication(node, api)


async def _health(node: Node) -> JSONResponse:
    backend = node.backend
    local = {
        "id": backend.node_id,
        "connections": node.connections,
        "rooms": len(node.hub.rooms()),
    }
    broker: dict[str, Any] = {
        "kind": backend.kind,
        "url": backend.url,
        "state": "available" if backend.status.available else "unavailable",
    }
    body: dict[str, Any] = {
        "uptime_seconds": round(time.time() - node.started, 3),
        "connections": node.connections,
        "node": local,
        "broker": broker,
    }
    try:
        if not backend.status.available:
            raise BrokerUnavailable(backend.status.reason)
        cluster = await backend.registry.cluster()
    except BrokerUnavailable as exc:
        broker["reason"] = str(exc)
        reason = close.BROKER_UNAVAILABLE.text(public_reason(exc))
        return JSONResponse(
            {"status": http.STATUS_UNAVAILABLE, "reason": reason, **body}, status_code=503
        )
    body = {"status": http.STATUS_OK, **body, "rooms": cluster.rooms}
    body["cluster"] = {
        "nodes": cluster.nodes,
        "rooms": cluster.rooms,
        "connections": cluster.connections,
    }
    return JSONResponse(body)
