"""The ``/chat/{room}`` WebSocket endpoint: the handshake's checks, then a session.

A raw ASGI endpoint: it skips Starlette's per-frame wrappers on the hot path. In order: the
browser origin (refused before accepting: HTTP 403), the room name, the dialect and the query,
admission under the connection limit, the broker's state; each refusal is accepted and closed
at once with its close value (``chat_protocol.close``), so that the client reads why.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from urllib.parse import urlsplit

from chat_protocol import close, codec, http, names
from chat_protocol.close import Close
from chat_protocol.query import QueryError, parse_join_query
from chat_server import addresses, asgi
from chat_server.backends.base import BrokerUnavailable, public_reason
from chat_server.node import Node
from chat_server.session import ChatSession
from chat_server.signed import InvalidToken

log = logging.getLogger("chat_server")
_HTTP_RESPONSE = "websocket.http.response"


class ChatEndpoint:
    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: asgi.Scope, receive: asgi.ReceiveFn, send: asgi.SendFn) -> None:
        node = self.node
        settings = node.settings
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

        identity = None
        if node.verifier is not None:
            try:
                identity = node.verifier.verify_request(
                    scope.get("headers") or (), scope.get("query_string", b"")
                )
            except InvalidToken as exc:
                await deny(scope, send, 401, str(exc))
                log.info("refused reason=token")
                return

        room = scope["path_params"].get("room", "")
        peer = names.direct_peer(room)
        if peer is not None:
            if not names.is_valid_name(peer):
                await _refuse(send, close.INVALID_ROOM, names.DIRECT_RULE)
                return
        elif not names.is_valid_room(room):
            await _refuse(send, close.INVALID_ROOM, names.ROOM_RULE)
            return

        dialect = codec.negotiate(scope.get("subprotocols") or ())
        if peer is not None and not dialect.numbered:
            await _refuse(send, close.DIRECT_NEEDS_V2)
            return
        try:
            request = parse_join_query(scope.get("query_string", b""), dialect.numbered)
        except QueryError as exc:
            await _refuse(send, close.INVALID_QUERY, exc)
            return
        if peer is not None and request.resume is None and identity is None:
            await _refuse(send, close.DIRECT_NEEDS_TOKEN)
            return

        client = scope.get("client")
        address = addresses.client_address(
            client[0] if client else None, scope.get("headers") or (), node.trusted_proxies
        )
        full = node.admit(address)
        if full is not None:
            await _refuse(send, full, settings.max_connections)
            log.warning("refused reason=%s", full.label)
            return

        session = ChatSession(node, scope, receive, send, room, request, dialect, address, identity)
        try:
            status = node.backend.status
            if not status.available:
                await _refuse(
                    send, close.BROKER_UNAVAILABLE, public_reason(BrokerUnavailable(status.reason))
                )
                log.info("refused room=%s reason=broker unavailable", room)
                return
            await session.run()
        finally:
            session.release()


async def deny(scope: asgi.Scope, send: asgi.SendFn, status: int, detail: str) -> None:
    """Refuse the handshake with HTTP ``status`` before any WebSocket (403 where the server
    cannot answer a handshake with a response of the app's: plain uvicorn's older versions)."""
    if _HTTP_RESPONSE not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close"})
        return
    body = json.dumps(http.error_body(detail)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if status == 401:
        headers.append((b"www-authenticate", http.bearer_challenge(detail).encode()))
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


async def _refuse(send: asgi.SendFn, why: Close, detail: object = None) -> None:
    """Accept, then close at once: the client reads the code and reason."""
    await send({"type": "websocket.accept"})
    await send(
        {
            "type": "websocket.close",
            "code": why.code,
            "reason": why.text(detail),
            asgi.CLOSE_KEY: why,
        }
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
    try:
        hostname = urlsplit(origin).hostname or ""
    except ValueError:  # "http://[::1": no host a page could have
        return False
    if hostname == "localhost":
        return True
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


def _header(scope: asgi.Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None
