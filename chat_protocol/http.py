"""The server's HTTP side as both ends see it: the paths, and the JSON shapes of the answers.

The WebSocket path is ``/chat/{room}``. The HTTP endpoints are optional additions (a client
works without them): ``/health``, ``/rooms``, ``/rooms/{room}``, ``/metrics``. A server builds
its answers with the ``*_body`` functions and a client reads them with the ``read_*``
functions, which raise :class:`ShapeError` for anything else. Errors are ``{"detail": text}``;
:func:`read_not_found` tells this server's own 404s (a room without members) from a path the
server does not serve at all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

from chat_protocol.names import ROOM_RULE

CHAT_PATH_PREFIX: Final = "/chat/"
HEALTH_PATH: Final = "/health"
ROOMS_PATH: Final = "/rooms"
METRICS_PATH: Final = "/metrics"


def chat_path(room: str) -> str:
    return CHAT_PATH_PREFIX + quote(room, safe="")


def room_path(room: str) -> str:
    return f"{ROOMS_PATH}/{quote(room, safe='')}"


def bearer(token: str | None) -> dict[str, str]:
    """The request header that presents ``token`` (a signed token, an admin or moderator
    token); none without one."""
    return {"authorization": f"Bearer {token}"} if token else {}


def http_base(server_url: str) -> str:
    """The HTTP origin of a WebSocket server URL: ws -> http, wss -> https, path dropped."""
    parts = urlsplit(server_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


class ShapeError(ValueError):
    """An answer that does not have the shape this protocol gives it."""


# --- /rooms and /rooms/{room} ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoomCount:
    room: str
    members: int


# ``GET /rooms?after=ROOM&limit=N``: at most ROOMS_PAGE rooms an answer, in name order.
ROOMS_PAGE: Final = 1000
PAGE_RULE: Final = f"after must be a room name and limit a number from 1 to {ROOMS_PAGE}"


def rooms_body(rooms: Mapping[str, int]) -> list[dict[str, Any]]:
    """``GET /rooms``: rooms with members, sorted by name (one page of them)."""
    return [{"room": room, "members": rooms[room]} for room in sorted(rooms)]


def read_rooms(body: Any) -> list[RoomCount]:
    try:
        return [RoomCount(str(item["room"]), int(item["members"])) for item in body]
    except (TypeError, KeyError, ValueError) as exc:
        raise ShapeError("not a list of rooms") from exc


def members_body(
    room: str, names: Sequence[str], away: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``GET /rooms/{room}``: its members in join order; ``away`` (only when some are): the
    away messages of those who are."""
    body: dict[str, Any] = {"room": room, "members": list(names)}
    if away:
        body["away"] = dict(away)
    return body


def read_away(body: Any) -> dict[str, str]:
    """The away messages of a ``GET /rooms/{room}`` answer (none: empty; a server without
    them, or a malformed part, counts as none)."""
    away = body.get("away") if isinstance(body, dict) else None
    if not isinstance(away, dict):
        return {}
    return {k: v for k, v in away.items() if isinstance(k, str) and isinstance(v, str)}


def read_members(body: Any) -> list[str]:
    members = body.get("members") if isinstance(body, dict) else None
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise ShapeError("not a room's members")
    return members


# --- errors ----------------------------------------------------------------------------------

# What a server answers for a path it does not serve (Starlette's and FastAPI's 404).
NO_ROUTE_DETAIL: Final = "Not Found"
INVALID_ROOM_DETAIL: Final = f"invalid room name: {ROOM_RULE}"
_NO_ROOM: Final = "no room {!r}: rooms exist while they have members"
_NO_ROOM_PATTERN: Final = re.compile(r"no room '.*': rooms exist while they have members", re.S)


def error_body(detail: str) -> dict[str, str]:
    return {"detail": detail}


# RFC 6750's description: printable ASCII without the quote and the backslash.
_UNQUOTABLE: Final = re.compile(r"[^ !#-\[\]-~]")
_DESCRIPTION: Final = re.compile(r'error_description="([ !#-\[\]-~]{1,200})"')


def bearer_challenge(detail: str) -> str:
    """A signed token refused at the handshake (HTTP 401): ``WWW-Authenticate`` says why, as
    RFC 6750 has it, for a client that reads no body of a refused WebSocket handshake."""
    described = _UNQUOTABLE.sub("?", detail)[:200]
    return f'Bearer realm="chat", error="invalid_token", error_description="{described}"'


def challenge_description(header: str | None) -> str | None:
    """Why a token was refused, from a 401's ``WWW-Authenticate`` (None if it does not say)."""
    found = _DESCRIPTION.search(header or "")
    return found.group(1) if found else None


def no_room_detail(room: str) -> str:
    return _NO_ROOM.format(room)


def read_detail(body: Any) -> str | None:
    """The ``detail`` of an error body, if it is one."""
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else None


class NotFound(StrEnum):
    ROOM = "room"  # the room has no members (or its name is invalid)
    ROUTE = "route"  # the server has no such endpoint


def read_not_found(body: Any) -> NotFound:
    """What a 404 from ``/rooms/{room}`` means: the answers of this protocol's server, or a
    server without the endpoint (any other body)."""
    detail = read_detail(body)
    if detail is not None and (
        detail == INVALID_ROOM_DETAIL or _NO_ROOM_PATTERN.fullmatch(detail) is not None
    ):
        return NotFound.ROOM
    return NotFound.ROUTE


# --- /health ---------------------------------------------------------------------------------

STATUS_OK: Final = "ok"
STATUS_UNAVAILABLE: Final = "unavailable"


@dataclass(frozen=True, slots=True)
class Health:
    """What a client of ``/health`` reads: whether it is this protocol's server and how it
    is (``available`` False: it runs, but cannot reach its broker)."""

    available: bool
    uptime_seconds: float
    connections: int
    rooms: int
    reason: str = ""


def read_health(status: int, body: Any) -> Health:
    """A ``/health`` answer (200 or 503); raises :class:`ShapeError` if it is not this
    protocol's server's."""
    if not isinstance(body, dict):
        raise ShapeError("not a health object")
    try:
        if status == 200 and body.get("status") == STATUS_OK and "rooms" in body:
            return Health(
                True, float(body["uptime_seconds"]), int(body["connections"]), int(body["rooms"])
            )
        if status == 503 and body.get("status") == STATUS_UNAVAILABLE and "node" in body:
            return Health(
                False,
                float(body.get("uptime_seconds", 0)),
                int(body.get("connections", 0)),
                0,
                str(body.get("reason", "")),
            )
    except (TypeError, ValueError, KeyError) as exc:
        raise ShapeError("not a health object") from exc
    raise ShapeError("not a chat server's health")
