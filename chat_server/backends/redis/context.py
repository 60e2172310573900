"""What every part of the Redis backend shares: the settings, the routes to Redis
(``routes.py``: one Redis, or a cluster's masters) and its key layout, this node's id (a new
one for each incarnation, after an outage), Redis's clock as this node estimates it, and
running the Lua scripts (``scripts.py``).

The backend (``backend.py``) owns it and keeps it current; the channels, the registry and the
history read it, and never call back into the backend.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from chat_server.backends.base import BrokerUnavailable
from chat_server.backends.redis.links import describe
from chat_server.backends.redis.routes import Routes
from chat_server.backends.redis.scripts import SCRIPTS
from chat_server.ops.settings import Settings


class RedisContext:
    def __init__(self, settings: Settings, node_id: str, routes: Routes) -> None:
        self.settings = settings
        self.timeout = settings.broker_timeout
        self.routes = routes
        self.keys = routes.keys
        self.node_id = node_id
        self.node_channel = self.keys.node_channel(node_id).encode()
        self.clock_offset_ms = 0.0  # Redis's clock minus ours

    def become(self, node_id: str) -> None:
        """This node is ``node_id`` from now on (a new incarnation)."""
        self.node_id = node_id
        self.node_channel = self.keys.node_channel(node_id).encode()

    @property
    def reservation_ms(self) -> int:
        return round(self.settings.name_reservation * 1000)

    def redis_now_ms(self) -> float:
        return time.time() * 1000 + self.clock_offset_ms

    async def call(self, command: str, key: str | bytes, *args: Any) -> Any:
        """One command on ``key`` (its slot's master in a cluster); an error reply is the
        broker failing (see :meth:`refused`)."""
        try:
            return await self.routes.call(key, command, key, *args)
        except ResponseError as exc:
            raise self.refused(exc) from None

    async def script(self, name: str, keys_: list[str], args: list[Any]) -> Any:
        """A script on its keys (one slot in a cluster: the first key's)."""
        script = SCRIPTS[name]
        routes = self.routes
        try:
            return await routes.call(keys_[0], "EVALSHA", script.sha, len(keys_), *keys_, *args)
        except NoScriptError:  # Redis lost its script cache (a restart, SCRIPT FLUSH)
            try:
                return await routes.call(keys_[0], "EVAL", script.source, len(keys_), *keys_, *args)
            except ResponseError as exc:
                raise self.refused(exc) from None
        except ResponseError as exc:
            raise self.refused(exc) from None

    async def query(self, name: str, keys_: list[str], args: list[Any]) -> Any:
        """A read-only script on the query link, given up after the broker timeout (the
        question fails; the node is not taken for dead)."""
        script = SCRIPTS[name]
        return await self._asked(keys_[0], "EVALSHA", script.sha, len(keys_), *keys_, *args)

    async def read(self, command: str, key: str | bytes, *args: Any) -> Any:
        """:meth:`call` for the operator's questions (:meth:`query`'s link and deadline)."""
        return await self._asked(key, command, key, *args)

    async def _asked(self, key: str | bytes, *args: Any) -> Any:
        """An operator's question on ``key``'s link for them, within the broker timeout; a
        slow or refused one is the question's failure, not the broker's."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self.routes.query(key, *args)
        except TimeoutError:
            raise BrokerUnavailable(f"redis took over {self.timeout:g} s to answer") from None
        except ResponseError as exc:
            raise BrokerUnavailable(f"redis refused a query: {describe(exc)}") from None

    def refused(self, error: ResponseError) -> BrokerUnavailable:
        """Redis answered with an error (out of memory at ``maxmemory``, read-only replica,
        ...): the node cannot do its work, like any other broker failure; its links are
        dropped and connected again, and everyone is told."""
        reason = f"redis refused a command: {describe(error)}"
        asyncio.get_running_loop().call_soon(self.routes.fail, reason)
        return BrokerUnavailable(reason)


def hash_pairs(flat: Any) -> Iterable[tuple[bytes, bytes]]:
    """A hash's fields and values as Redis gave them (``HGETALL``: a flat list, or a dict in
    RESP3)."""
    if isinstance(flat, dict):
        return flat.items()
    return zip(flat[::2], flat[1::2], strict=True)
