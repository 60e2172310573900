"""Where a command goes: the one Redis (or Sentinel's master of the moment), or the master of
its key's slot in a Redis Cluster. The rest of the backend names the key of every command it
sends and never asks which of the two it runs on, but through the key layout (``keys.py``)
and ``cluster``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from redis.exceptions import AskError, MovedError, TryAgainError

from chat_server.backends.redis import keys
from chat_server.backends.redis.cluster import Address, ClusterLinks
from chat_server.backends.redis.links import CommandLink, Gathered, PubSubLink


class Routes(Protocol):
    keys: keys.Layout
    cluster: bool

    @property
    def down_reason(self) -> str | None: ...

    def call(self, key: str | bytes, *args: Any) -> Awaitable[Any]: ...

    def query(self, key: str | bytes, *args: Any) -> Awaitable[Any]: ...

    def call_gathered(
        self, key: str | bytes, command: Gathered, convert: Callable[[Any], Any]
    ) -> asyncio.Future[Any]: ...

    def subscribe(self, channels: Iterable[str]) -> Awaitable[None]: ...

    def unsubscribe(self, channel: str) -> None: ...

    def oldest_wait(self) -> float: ...

    def fail(self, reason: str) -> None: ...

    def run_id(self, key: str | bytes) -> str: ...

    def resend(
        self, key: str | bytes, command: bytes, error: Exception, convert: Callable[[Any], Any]
    ) -> asyncio.Future[Any] | None: ...


class SingleRoutes:
    """One Redis: every command on the command link, the operator's questions on a link of
    their own (however long one takes, it never counts against the node's own commands'
    deadline), and one subscriber link."""

    keys = keys.SINGLE
    cluster = False

    def __init__(self, link: CommandLink, pubsub: PubSubLink, queries: CommandLink) -> None:
        self.link = link
        self.pubsub = pubsub
        self.queries = queries
        self.redis_run_id = ""

    @property
    def down_reason(self) -> str | None:
        return self.link.down_reason

    def call(self, key: str | bytes, *args: Any) -> asyncio.Future[Any]:
        return self.link.call(*args)

    def query(self, key: str | bytes, *args: Any) -> asyncio.Future[Any]:
        return self.queries.call(*args)

    def call_gathered(
        self, key: str | bytes, command: Gathered, convert: Callable[[Any], Any]
    ) -> asyncio.Future[Any]:
        return self.link.call_gathered(command, convert)

    def subscribe(self, channels: Iterable[str]) -> asyncio.Future[None]:
        return self.pubsub.subscribe(channels)

    def unsubscribe(self, channel: str) -> None:
        self.pubsub.unsubscribe(channel)

    def oldest_wait(self) -> float:
        return self.link.oldest_wait()

    def fail(self, reason: str) -> None:
        self.link.fail(reason)
        self.pubsub.fail(reason)
        self.queries.fail(reason)

    def run_id(self, key: str | bytes) -> str:
        return self.redis_run_id

    def resend(
        self, key: str | bytes, command: bytes, error: Exception, convert: Callable[[Any], Any]
    ) -> asyncio.Future[Any] | None:
        return None  # one Redis redirects nothing


class ClusterRoutes:
    """A Redis Cluster: each command on the master of its key's slot (``ClusterLinks``), the
    operator's questions too (their scripts are short reads there), channels sharded."""

    keys = keys.CLUSTER
    cluster = True

    def __init__(self, links: ClusterLinks) -> None:
        self.links = links
        self.run_ids: dict[Address, str] = {}  # per master, read when the node connected to it

    @property
    def down_reason(self) -> str | None:
        return self.links.down_reason

    def call(self, key: str | bytes, *args: Any) -> Awaitable[Any]:
        return self.links.call(key, *args)

    def query(self, key: str | bytes, *args: Any) -> Awaitable[Any]:
        return self.links.call(key, *args)

    def call_gathered(
        self, key: str | bytes, command: Gathered, convert: Callable[[Any], Any]
    ) -> asyncio.Future[Any]:
        return self.links.call_gathered(key, command, convert)

    def subscribe(self, channels: Iterable[str]) -> Awaitable[None]:
        return self.links.subscribe(channels)

    def unsubscribe(self, channel: str) -> None:
        self.links.unsubscribe(channel)

    def oldest_wait(self) -> float:
        return max(self.links.oldest_waits().values(), default=0.0)

    def fail(self, reason: str) -> None:
        for address in self.links.masters:
            self.links.fail(address, reason)

    def resend(
        self, key: str | bytes, command: bytes, error: Exception, convert: Callable[[Any], Any]
    ) -> asyncio.Future[Any] | None:
        """A gathered call that came back redirected (``MOVED``, ``ASK``, ``TRYAGAIN``: not
        run), sent again where it now belongs; None if ``error`` is no redirection."""
        if isinstance(error, MovedError | AskError | TryAgainError):
            return self.links.resend(key, command, error, convert)
        return None

    def run_id(self, key: str | bytes) -> str:
        """The run_id of the master that owns ``key``'s slot: a room's epoch is that
        process's (a replica promoted, or the slot moved, numbers it again)."""
        owner = self.links.owner(key)
        return self.run_ids.get(owner, "") if owner is not None else ""
