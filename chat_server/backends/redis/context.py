"""What every part of the Redis backend shares: the settings, the two links (``links.py``),
this node's id (a new one for each incarnation, after an outage), Redis's clock as this node
estimates it, and running the Lua scripts (``scripts.py``).

The backend (``backend.py``) owns it and keeps it current; the channels, the registry and the
history read it, and never call back into the backend.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from chat_server.backends.base import BrokerUnavailable
from chat_server.backends.redis import keys
from chat_server.backends.redis.links import CommandLink, PubSubLink, describe
from chat_server.backends.redis.scripts import SCRIPTS
from chat_server.ops.settings import Settings


class RedisContext:
    def __init__(
        self,
        settings: Settings,
        node_id: str,
        link: CommandLink,
        pubsub: PubSubLink,
        queries: CommandLink,
    ) -> None:
        self.settings = settings
        self.timeout = settings.broker_timeout
        self.link = link
        self.pubsub = pubsub
        # The operator's questions (/health, /rooms): a link of their own, so that however
        # long one takes, it never counts against the node's own commands' deadline.
        self.queries = queries
        self.node_id = node_id
        self.node_channel = keys.node_channel(node_id).encode()
        self.clock_offset_ms = 0.0  # Redis's clock minus ours

    def become(self, node_id: str) -> None:
        """This node is ``node_id`` from now on (a new incarnation)."""
        self.node_id = node_id
        self.node_channel = keys.node_channel(node_id).encode()

    @property
    def reservation_ms(self) -> int:
        return round(self.settings.name_reservation * 1000)

    def redis_now_ms(self) -> float:
        return time.time() * 1000 + self.clock_offset_ms

    async def call(self, *args: Any) -> Any:
        """One command; an error reply is the broker failing (see :meth:`refused`)."""
        try:
            return await self.link.call(*args)
        except ResponseError as exc:
            raise self.refused(exc) from None

    async def script(self, name: str, keys_: list[str], args: list[Any]) -> Any:
        script = SCRIPTS[name]
        try:
            return await self.link.call("EVALSHA", script.sha, len(keys_), *keys_, *args)
        except NoScriptError:  # Redis lost its script cache (a restart, SCRIPT FLUSH)
            return await self.call("EVAL", script.source, len(keys_), *keys_, *args)
        except ResponseError as exc:
            raise self.refused(exc) from None

    async def query(self, name: str, keys_: list[str], args: list[Any]) -> Any:
        """A read-only script on the query link, given up after the broker timeout (the
        question fails; the node is not taken for dead)."""
        script = SCRIPTS[name]
        try:
            async with asyncio.timeout(self.timeout):
                return await self.queries.call("EVALSHA", script.sha, len(keys_), *keys_, *args)
        except TimeoutError:
            raise BrokerUnavailable(f"redis took over {self.timeout:g} s to answer") from None
        except ResponseError as exc:
            raise BrokerUnavailable(f"redis refused a query: {describe(exc)}") from None

    def refused(self, error: ResponseError) -> BrokerUnavailable:
        """Redis answered with an error (out of memory at ``maxmemory``, read-only replica,
        ...): the node cannot do its work, like any other broker failure; its links are
        dropped and connected again, and everyone is told."""
        reason = f"redis refused a command: {describe(error)}"
        asyncio.get_running_loop().call_soon(self.link.fail, reason)
        return BrokerUnavailable(reason)
