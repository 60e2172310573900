"""Names and presence on Redis, read with expiry: entries of dead nodes never count."""

from __future__ import annotations

from chat_protocol.http import ROOMS_PAGE
from chat_protocol.names import name_key
from chat_server.backends.base import DIRECTS_PER_TOKEN, ClusterInfo, Holder, Registry
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

    async def holder(self, name: str) -> Holder | None:
        found = await self._redis.script("holder", [keys.name(name)], [name, keys.NAME_KEY_PREFIX])
        if not found:
            return None
        shown, digest = (part.decode("utf-8", "replace") for part in found)
        return Holder(shown, digest or None)

    async def resume_name(self, name: str, digest: str) -> str | None:
        node = self._redis.node_id
        resumed = await self._redis.script(
            "resume_name",
            [keys.name(name), keys.node_names(node)],
            [node, name, digest, keys.NAME_KEY_PREFIX],
        )
        return resumed.decode() if isinstance(resumed, bytes) else None

    async def rename_name(self, old: str, new: str, digest: str) -> bool:
        redis = self._redis
        renamed = await redis.script(
            "rename_name",
            [keys.name(old), keys.name(new), keys.NODES],
            [digest, new, redis.reservation_ms, keys.NODE_KEY_PREFIX, name_key(old)],
        )
        return bool(renamed)

    async def release_name(self, name: str) -> None:
        redis = self._redis
        node = redis.node_id
        await redis.script(
            "release_name",
            [keys.name(name), keys.node_names(node), keys.RESERVED],
            [
                node,
                name,
                redis.reservation_ms,
                keys.NAME_KEY_PREFIX,
                redis.settings.max_reservations,
            ],
        )

    async def count_address(self, address: str, limit: int) -> bool:
        node_keys = [keys.ADDRESSES, keys.node_addresses(self._redis.node_id)]
        return bool(await self._redis.script("count_address", node_keys, [address, limit]))

    async def uncount_address(self, address: str) -> None:
        node_keys = [keys.ADDRESSES, keys.node_addresses(self._redis.node_id)]
        await self._redis.script("uncount_address", node_keys, [address])

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

    async def note_direct(self, token_id: str, room: str, sender: str) -> None:
        ttl = max(1, round(self._redis.settings.history_ttl))
        await self._redis.script(
            "note_direct", [keys.inbox(token_id)], [room, sender, DIRECTS_PER_TOKEN, ttl]
        )

    async def directs(self, token_id: str) -> dict[str, str]:
        flat = await self._redis.call("HGETALL", keys.inbox(token_id))
        if isinstance(flat, dict):
            return {k.decode(): v.decode() for k, v in flat.items()}
        return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}

    async def clear_direct(self, token_id: str, room: str) -> None:
        await self._redis.call("HDEL", keys.inbox(token_id), room)

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
