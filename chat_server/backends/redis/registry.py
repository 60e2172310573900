"""Names and presence on Redis, read with expiry: entries of dead nodes never count."""

from __future__ import annotations

from chat_protocol.http import ROOMS_PAGE
from chat_server.backends.base import ClusterInfo, Registry
from chat_server.backends.redis import keys
from chat_server.backends.redis.context import RedisContext


class RedisRegistry(Registry):
    def __init__(self, redis: RedisContext) -> None:
        self._redis = redis

    async def claim_name(self, name: str, digest: str | None = None) -> bool:
        node = self._redis.node_id
        claimed = await self._redis.script(
            "claim_name",
            [keys.name(name), keys.NODES, keys.node_names(node)],
            [node, name, digest or "-"],
        )
        return bool(claimed)

    async def name_digest(self, name: str) -> str | None:
        stored = await self._redis.call("HGET", keys.name(name), "d")
        return None if stored is None else stored.decode("ascii", "replace")

    async def resume_name(self, name: str, digest: str) -> bool:
        node = self._redis.node_id
        resumed = await self._redis.script(
            "resume_name", [keys.name(name), keys.node_names(node)], [node, name, digest]
        )
        return bool(resumed)

    async def release_name(self, name: str) -> None:
        redis = self._redis
        node = redis.node_id
        await redis.script(
            "release_name",
            [keys.name(name), keys.node_names(node)],
            [node, name, redis.reservation_ms],
        )

    async def set_away(self, name: str, message: str | None) -> None:
        args = ["0"] if message is None else ["1", message]
        await self._redis.script("set_away", [keys.name(name)], args)

    async def away(self, names: list[str]) -> dict[str, str]:
        if not names:
            return {}
        found = await self._redis.query("away", [keys.name(n) for n in names], [])
        return {n: m.decode() for n, m in zip(names, found, strict=True) if m is not None}

    async def read_position(self, token_id: str, room: str, epoch: str) -> int | None:
        kept = await self._redis.call("HGET", keys.read_positions(token_id), room)
        if kept is None:
            return None
        kept_epoch, _, offset = kept.decode("ascii", "replace").partition(" ")
        return int(offset) if kept_epoch == epoch and offset.isdigit() else None

    async def keep_read_position(self, token_id: str, room: str, epoch: str, offset: int) -> None:
        ttl = max(1, round(self._redis.settings.history_ttl))
        await self._redis.script(
            "keep_read",
            [keys.read_positions(token_id), keys.room_sequence(room)],
            [room, epoch, offset, ttl],
        )

    async def rooms(self, after: str = "", limit: int = ROOMS_PAGE) -> dict[str, int]:
        flat = await self._redis.query(
            "rooms", [keys.ROOMS, keys.NODES], [keys.ROOM_KEY_PREFIX, after, limit]
        )
        return {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def members(self, room: str) -> list[str]:
        flat = await self._redis.query("members", [keys.room_presence(room), keys.NODES], [])
        pairs = sorted((int(flat[i + 1]), flat[i].decode()) for i in range(0, len(flat), 2))
        return [name for _, name in pairs]

    async def cluster(self) -> ClusterInfo:
        nodes, rooms, connections = await self._redis.query(
            "cluster", [keys.ROOMS, keys.NODES], [keys.NODE_KEY_PREFIX]
        )
        return ClusterInfo(nodes=nodes, rooms=rooms, connections=connections)
