"""Open the backend a ``--broker-url`` names (see ``urls.py``)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from chat_server.backends.base import Backend
from chat_server.backends.urls import MEMORY_SCHEMES, SQLITE_SCHEMES, scheme_of

if TYPE_CHECKING:
    from chat_server.ops.settings import Settings


def new_node_id(name: str = "") -> str:
    """A name for this process among the nodes: the operator's ``--node-name`` (nothing of the
    host by default: /health shows it to anyone who can reach it) and a random part."""
    return f"{name or 'node'}-{secrets.token_hex(4)}"


def open_backend(settings: Settings, node_id: str | None = None) -> Backend:
    node_id = node_id or new_node_id(settings.node_name)
    scheme = scheme_of(settings.broker_url)
    if scheme in MEMORY_SCHEMES:
        from chat_server.backends.memory import MemoryBackend

        return MemoryBackend(settings, node_id)
    if scheme in SQLITE_SCHEMES:
        from chat_server.backends.sqlite import SqliteBackend

        return SqliteBackend(settings, node_id)
    from chat_server.backends.redis import RedisBackend

    return RedisBackend(settings, node_id)
