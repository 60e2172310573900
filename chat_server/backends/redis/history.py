"""History on Redis: each room's stream, written by the room event script (``scripts.py``).

Entry ids are ``{offset}-0``, so a range of offsets is a range of ids, and a range is complete
exactly when it holds one entry per offset.

A read goes newest first, a page at a time, and stops once it holds more text than one
connection is sent on joining (``--max-backlog-bytes``): a room of 1,000 messages of 16 KiB is
16 MiB, which one command took Redis 110 ms to answer, holding up every other command of the
node behind it (40 joins from one address made the node take Redis for dead and close
everyone). At most HISTORY_READS reads of a node are under way at once.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from chat_server.backends.base import History
from chat_server.backends.redis.context import RedisContext
from chat_server.events import StoredMessage

PAGE: Final = 64  # entries a command (at most 1 MiB of text)
HISTORY_READS: Final = 4


def _stored(entry: Any) -> StoredMessage:
    entry_id, flat = entry
    fields = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
    return StoredMessage(
        int(entry_id.partition(b"-")[0]),
        fields[b"n"].decode(),
        fields[b"t"].decode(),
        int(fields[b"m"]) / 1000,
    )


class RedisHistory(History):
    def __init__(self, redis: RedisContext) -> None:
        self._redis = redis
        self._reads = asyncio.Semaphore(HISTORY_READS)

    async def _newest(self, room: str, upto: int, after: int, count: int) -> list[Any]:
        """Up to ``count`` entries with offsets in (``after``, ``upto``], newest first, read
        until they hold more text than a connection is sent."""
        key = self._redis.keys.room_history(room)
        budget = self._redis.settings.max_backlog_bytes
        entries: list[Any] = []
        held = 0
        async with self._reads:
            while len(entries) < count and held <= budget and upto > after:
                asked = min(PAGE, count - len(entries))
                page = await self._redis.call(
                    "XREVRANGE", key, f"{upto}-0", f"{after + 1}-0", "COUNT", asked
                )
                entries += page
                held += sum(len(flat[3]) for _, flat in page)  # n, name, t, text, m, time
                if len(page) < asked:
                    break  # no older ones
                upto = int(page[-1][0].partition(b"-")[0]) - 1
        return entries

    async def latest(self, room: str, upto: int, count: int) -> list[StoredMessage]:
        if count <= 0 or upto <= 0:
            return []
        entries = await self._newest(room, upto, 0, count)
        return [_stored(entry) for entry in reversed(entries)]

    async def since(self, room: str, after: int, upto: int) -> list[StoredMessage] | None:
        """As History's, except that a range of more text than one connection is sent on
        joining comes back as its newest part (more than is sent: the caller cuts it, and so
        knows the recovery is not whole)."""
        if upto <= after:
            return [] if upto == after else None
        wanted = upto - after
        entries = await self._newest(room, upto, after, wanted)
        if len(entries) != wanted:
            text = sum(len(flat[3]) for _, flat in entries)
            if text <= self._redis.settings.max_backlog_bytes:
                return None  # some of them are no longer retained
        return [_stored(entry) for entry in reversed(entries)]
