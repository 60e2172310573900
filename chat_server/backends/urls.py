"""Which broker a ``--broker-url`` names, by its scheme (the backends are in this package)."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

MEMORY_SCHEMES: Final = frozenset({"memory"})
REDIS_SCHEMES: Final = frozenset({"redis", "rediss", "unix"})
SCHEMES: Final = MEMORY_SCHEMES | REDIS_SCHEMES


def scheme_of(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        supported = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        raise ValueError(f"unsupported broker URL {url!r} (supported: {supported})")
    return scheme


def is_shared(url: str) -> bool:
    """Whether processes using ``url`` form one chat (they do unless it is ``memory://``)."""
    return scheme_of(url) not in MEMORY_SCHEMES
