"""Names and presence on Redis, read with expiry: entries of dead nodes never count."""

from __future__ import annotations

import asyncio

from chat_protocol.http import ROOMS_PAGE
from chat_protocol.names import name_key
from chat_server.backends import base
from chat_server.backends.base import ClusterInfo, Holder, Registry
from chat_server.backends.redis.context import RedisContext, hash_pairs


class RedisRegistry(Registry):
    def __init__(self, redis: RedisContext) -> None:
        self._redis = redis

    async def claim_name(self, name: str, digest: str | None = None) -> bool:
        node = self._redis.node_id
        claimed = await self._redis.script(
            "claim_name",
            [
                self._redis.keys.name(name),
                self._redis.keys.nodes,
                self._redis.keys.node_names(node),
            ],
            [node, name, digest or "-"],
        )
        return bool(claimed)

    async def holder(self, name: str) -> Holder | None:
        found = await self._redis.script(
            "holder", [self._redis.keys.name(name)], [name, self._redis.keys.name_key_prefix]
        )
        if not found:
            return None
        shown, digest = (part.decode("utf-8", "replace") for part in found)
        return Holder(shown, digest or None)

    async def resume_name(self, name: str, digest: str) -> str | None:
        node = self._redis.node_id
        resumed = await self._redis.script(
            "resume_name",
            [self._redis.keys.name(name), self._redis.keys.node_names(node)],
            [node, name, digest, self._redis.keys.name_key_prefix],
        )
        return resumed.decode() if isinstance(resumed, bytes) else None

    async def rename_name(self, old: str, new: str, digest: str) -> bool:
        redis = self._redis
        renamed = await redis.script(
            "rename_name",
            [self._redis.keys.name(old), self._redis.keys.name(new), self._redis.keys.nodes],
            [digest, new, redis.reservation_ms, self._redis.keys.node_key_prefix, name_key(old)],
        )
        return bool(renamed)

    async def release_name(self, name: str) -> None:
        redis = self._redis
        node = redis.node_id
        await redis.script(
            "release_name",
            [
                self._redis.keys.name(name),
                self._redis.keys.node_names(node),
                self._redis.keys.reserved,
            ],
            [
                node,
                name,
                redis.reservation_ms,
                self._redis.keys.name_key_prefix,
                redis.settings.max_reservations,
            ],
        )

    async def count_address(self, address: str, limit: int) -> bool:
        node_keys = [
            self._redis.keys.addresses,
            self._redis.keys.node_addresses(self._redis.node_id),
        ]
        return bool(await self._redis.script("count_address", node_keys, [address, limit]))

    async def uncount_address(self, address: str) -> None:
        node_keys = [
            self._redis.keys.addresses,
            self._redis.keys.node_addresses(self._redis.node_id),
        ]
        await self._redis.script("uncount_address", node_keys, [address])

    async def set_away(self, name: str, message: str | None) -> None:
        args = ["0"] if message is None else ["1", message]
        await self._redis.script("set_away", [self._redis.keys.name(name)], args)

    async def away(self, names: list[str]) -> dict[str, str]:
        if not names:
            return {}
        found = await self._redis.query("away", [self._redis.keys.name(n) for n in names], [])
        return {n: m.decode() for n, m in zip(names, found, strict=True) if m is not None}

    async def read_position(self, token_id: str, room: str, epoch: str) -> int | None:
        kept = await self._redis.call("HGET", self._redis.keys.read_positions(token_id), room)
        if kept is None:
            return None
        kept_epoch, _, offset = kept.decode("ascii", "replace").partition(" ")
        return int(offset) if kept_epoch == epoch and offset.isdigit() else None

    async def keep_read_position(self, token_id: str, room: str, epoch: str, offset: int) -> None:
        redis = self._redis
        ttl = max(1, round(redis.settings.history_ttl))
        layout = redis.keys
        bounds = [base.TOKEN_KEYS, base.READ_ROOMS_PER_TOKEN]
        if not layout.cluster:
            await redis.script(
                "keep_read",
                [layout.read_positions(token_id), layout.token_keys, layout.room_sequence(room)],
                [room, epoch, offset, ttl, *bounds],
            )
            return
        # In a cluster the room's sequence is another slot: read first, then kept if the
        # epoch still was the room's a moment ago (a position is a hint, never history).
        now_epoch, newest = await redis.call("HMGET", layout.room_sequence(room), "e", "o")
        if now_epoch is None:
            return
        await redis.script(
            "keep_read",
            [layout.read_positions(token_id), layout.token_keys],
            [room, epoch, offset, ttl, *bounds, now_epoch, newest or b"0"],
        )

    async def note_direct(self, token_id: str, room: str, sender: str) -> None:
        ttl = max(1, round(self._redis.settings.history_ttl))
        await self._redis.script(
            "note_direct",
            [self._redis.keys.inbox(token_id), self._redis.keys.token_keys],
            [room, sender, base.DIRECTS_PER_TOKEN, ttl, base.TOKEN_KEYS],
        )

    async def directs(self, token_id: str) -> dict[str, str]:
        flat = await self._redis.call("HGETALL", self._redis.keys.inbox(token_id))
        return {k.decode(): v.decode() for k, v in hash_pairs(flat)}

    async def clear_direct(self, token_id: str, room: str) -> None:
        await self._redis.call("HDEL", self._redis.keys.inbox(token_id), room)

    async def rooms(self, after: str = "", limit: int = ROOMS_PAGE) -> dict[str, int]:
        redis = self._redis
        layout = redis.keys
        if not layout.cluster:
            flat = await redis.query(
                "rooms", [layout.rooms, layout.nodes], [layout.room_key_prefix, after, limit]
            )
            return {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        # In a cluster: a page of the index (the directory's slot), then each room's
        # per-node counts in its own slot, live nodes only (the single Redis's script).
        start = f"({after}" if after else "-"
        page = await redis.read("ZRANGE", layout.rooms, start, "+", "BYLEX", "LIMIT", 0, limit)
        live = await self._live_nodes()
        counts = await asyncio.gather(
            *(redis.read("HGETALL", layout.room_nodes(room.decode())) for room in page)
        )
        listed = {}
        for room, flat in zip(page, counts, strict=True):
            pairs = hash_pairs(flat)
            count = sum(int(n) for node, n in pairs if node in live)
            if count > 0:
                listed[room.decode()] = count
        return listed

    async def members(self, room: str) -> list[str]:
        redis = self._redis
        layout = redis.keys
        if not layout.cluster:
            flat = await redis.query("members", [layout.room_presence(room), layout.nodes], [])
        else:
            entries = await redis.read("HGETALL", layout.room_presence(room))
            live = await self._live_nodes()
            flat = []
            pairs = hash_pairs(entries)
            for name, entry in pairs:
                node, _, serial = entry.partition(b" ")
                if node in live:
                    flat += [name, serial]
        pairs = sorted((int(flat[i + 1]), flat[i].decode()) for i in range(0, len(flat), 2))
        return [name for _, name in pairs]

    async def _live_nodes(self) -> set[bytes]:
        """The ids of the nodes whose heartbeat has not lapsed (by this node's estimate of
        Redis's clock: a node's members stop counting within a heartbeat of its death)."""
        redis = self._redis
        now = int(redis.redis_now_ms())
        return set(await redis.read("ZRANGEBYSCORE", redis.keys.nodes, now, "+inf"))

    async def cluster(self) -> ClusterInfo:
        layout = self._redis.keys
        chat_keys = [layout.rooms, layout.nodes]
        if layout.cluster:
            chat_keys.append(layout.node_member_counts)
        nodes, rooms, connections = await self._redis.query(
            "cluster", chat_keys, [layout.node_key_prefix]
        )
        return ClusterInfo(nodes=nodes, rooms=rooms, connections=connections)
