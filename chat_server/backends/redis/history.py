"""History on Redis: each room's stream, written by the room event script (``scripts.py``).

Entry ids are ``{offset}-0``, so a range of offsets is a range of ids, and a range is complete
exactly when it holds one entry per offset.
"""

from __future__ import annotations

from typing import Any

from chat_server.backends.base import History
from chat_server.backends.redis.context import RedisContext
from chat_server.events import StoredMessage


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

    async def latest(self, room: str, upto: int, count: int) -> list[StoredMessage]:
        if count <= 0 or upto <= 0:
            return []
        entries = await self._redis.call(
            "XREVRANGE", self._redis.keys.room_history(room), f"{upto}-0", "-", "COUNT", count
        )
        return [_stored(entry) for entry in reversed(entries)]

    async def since(self, room: str, after: int, upto: int) -> list[StoredMessage] | None:
        if upto <= after:
            return [] if upto == after else None
        wanted = upto - after
        entries = await self._redis.call(
            "XRANGE",
            self._redis.keys.room_history(room),
            f"{after + 1}-0",
            f"{upto}-0",
            "COUNT",
            wanted,
        )
        if len(entries) != wanted:
            return None  # some of them are no longer retained
        return [_stored(entry) for entry in entries]
