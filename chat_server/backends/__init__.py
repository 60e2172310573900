"""Broker backends, chosen by the scheme of ``--broker-url``.

* ``memory://`` (the default): one process; see ``memory.py``.
* ``redis://``, ``rediss://``, ``unix://``: any number of processes and machines sharing one
  Redis (or Valkey); see the ``redis`` package.

The interface every backend implements, and the promises it keeps, are in ``base.py``.
"""

from __future__ import annotations

import os
import secrets
import socket
from urllib.parse import urlsplit

from chat_server.backends.base import (
    Backend,
    BrokerStatus,
    BrokerUnavailable,
    ChannelBackend,
    ClusterInfo,
    Registry,
)
from chat_server.settings import Settings

__all__ = [
    "SCHEMES",
    "Backend",
    "BrokerStatus",
    "BrokerUnavailable",
    "ChannelBackend",
    "ClusterInfo",
    "Registry",
    "is_shared",
    "new_node_id",
    "open_backend",
]

MEMORY_SCHEMES = frozenset({"memory"})
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
SCHEMES = MEMORY_SCHEMES | REDIS_SCHEMES


def scheme_of(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        supported = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        raise ValueError(f"unsupported broker URL {url!r} (supported: {supported})")
    return scheme


def is_shared(url: str) -> bool:
    """Whether processes using ``url`` form one chat (they do unless it is ``memory://``)."""
    return scheme_of(url) not in MEMORY_SCHEMES


def new_node_id() -> str:
    """A name for this process among the nodes: host, pid and a random part (a restarted
    container has the same host name and pid as the one before it)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def open_backend(settings: Settings, node_id: str | None = None) -> Backend:
    scheme = scheme_of(settings.broker_url)
    node_id = node_id or new_node_id()
    if scheme in MEMORY_SCHEMES:
        from chat_server.backends.memory import MemoryBackend

        return MemoryBackend(node_id, settings)
    from chat_server.backends.redis import RedisBackend

    return RedisBackend(settings, node_id)
