"""The admin API as both ends see it: its paths, and one call of it (``chat-server admin``
and chat-tui's moderator commands make their requests through :func:`call`).

Every request carries ``Authorization: Bearer TOKEN``: an admin token (``--admin-token-file``)
may do everything, a moderator token (``POST /admin/tokens``) what concerns its rooms. Bodies
and answers are JSON; an error is ``{"detail": text}``. docs/protocol.md has the whole API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import httpx

from chat_protocol.http import http_base

ADMIN_PREFIX: Final = "/admin"
KICK_PATH: Final = ADMIN_PREFIX + "/kick"
BAN_PATH: Final = ADMIN_PREFIX + "/ban"
BANS_PATH: Final = ADMIN_PREFIX + "/bans"
MUTE_PATH: Final = ADMIN_PREFIX + "/mute"
ROOMS_PATH: Final = ADMIN_PREFIX + "/rooms"
TOKENS_PATH: Final = ADMIN_PREFIX + "/tokens"

# The longest body the admin API reads, and the longest reason or topic it keeps.
MAX_BODY_BYTES: Final = 16 * 1024
MAX_REASON_CHARS: Final = 200
MAX_TOPIC_CHARS: Final = 300
ROLE_MODERATOR: Final = "moderator"
TIMEOUT: Final = 10.0


def room_path(room: str) -> str:
    return f"{ROOMS_PATH}/{quote(room, safe='')}"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the server answered: its status and its JSON (``{}`` if it was none)."""

    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def served(self) -> bool:
        """Whether the admin API answered (its errors say so): not a server without it."""
        return self.ok or self.body.get("admin") is True

    @property
    def detail(self) -> str:
        """What went wrong, in the server's words (or the status's)."""
        detail = self.body.get("detail")
        return str(detail) if detail else f"HTTP {self.status}"


class Unreachable(Exception):
    """The server could not be asked (``str(exc)`` says why)."""


async def call(
    server_url: str,
    token: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Answer:
    """One admin request to the server at ``server_url`` (ws://, wss://, http:// or https://)."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        async with httpx.AsyncClient(
            base_url=http_base(server_url), timeout=TIMEOUT, transport=transport, trust_env=False
        ) as client:
            response = await client.request(
                method, path, headers=headers, content=None if body is None else json.dumps(body)
            )
    except httpx.HTTPError as exc:
        raise Unreachable(str(exc) or type(exc).__name__) from exc
    try:
        answer = response.json()
    except ValueError:
        answer = {"detail": response.text[:200]} if response.text else {}
    return Answer(response.status_code, answer if isinstance(answer, dict) else {})
