"""Open the backend a ``--broker-url`` names (see ``urls.py``)."""

from __future__ import annotations

import os
import secrets
import socket
from typing import TYPE_CHECKING

from chat_server.backends.base import Backend
from chat_server.backends.urls import MEMORY_SCHEMES, scheme_of

if TYPE_CHECKING:
    from chat_server.ops.settings import Settings


def new_node_id() -> str:
    """A name for this process among the nodes: host, pid and a random part (a restarted
    container has the same host name and pid as the one before it)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def open_backend(settings: Settings, node_id: str | None = None) -> Backend:
    node_id = node_id or new_node_id()
    if scheme_of(settings.broker_url) in MEMORY_SCHEMES:
        from chat_server.backends.memory import MemoryBackend

        return MemoryBackend(settings, node_id)
    from chat_server.backends.redis import RedisBackend

    return RedisBackend(settings, node_id)
