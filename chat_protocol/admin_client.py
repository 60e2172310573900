"""One call of the admin API (``chat_protocol.admin``), as ``chat-server admin`` and chat-tui's
moderator commands make it; the server never imports this (nor httpx)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import httpx

from chat_protocol.http import bearer, http_base

TIMEOUT: Final = 10.0


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
    headers = bearer(token)
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
