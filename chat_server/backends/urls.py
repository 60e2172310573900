"""Which broker a ``--broker-url`` names, by its scheme (the backends are in this package)."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

MEMORY_SCHEMES: Final = frozenset({"memory"})
SQLITE_SCHEMES: Final = frozenset({"sqlite"})  # memory, kept on disk: one process too
# redis+sentinel://: the master of a Redis Sentinel service, asked for on every connect.
REDIS_SCHEMES: Final = frozenset({"redis", "rediss", "unix", "redis+sentinel"})
SCHEMES: Final = MEMORY_SCHEMES | SQLITE_SCHEMES | REDIS_SCHEMES


def scheme_of(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        supported = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        raise ValueError(f"unsupported broker URL {url!r} (supported: {supported})")
    return scheme


def is_shared(url: str) -> bool:
    """Whether processes using ``url`` form one chat (only Redis: ``memory://`` and
    ``sqlite://`` are one process's)."""
    return scheme_of(url) in REDIS_SCHEMES
