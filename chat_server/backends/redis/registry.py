"""Names and presence on Redis, read with expiry: entries of dead nodes never count."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chat_server.backends.base import ClusterInfo, Registry
from chat_server.backends.redis import keys

if TYPE_CHECKING:
    from chat_server.backends.redis.backend import RedisBackend

ROOM_KEY_PREFIX = keys.PREFIX + "room:"
NODE_KEY_PREFIX = keys.PREFIX + "node:"


class RedisRegistry(Registry):
    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend

    async def claim_name(self, name: str) -> bool:
        node = self._backend.node_id
        claimed = await self._backend.script(
            "claim_name", [keys.name(name), keys.NODES, keys.node_names(node)], [node, name]
        )
        return bool(claimed)

    async def release_name(self, name: str) -> None:
        node = self._backend.node_id
        await self._backend.script(
            "release_name", [keys.name(name), keys.node_names(node)], [node, name]
        )

    async def rooms(self) -> dict[str, int]:
        flat = await self._backend.script("rooms", [keys.ROOMS, keys.NODES], [ROOM_KEY_PREFIX])
        return {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def members(self, room: str) -> list[str]:
        flat = await self._backend.script("members", [keys.room_presence(room), keys.NODES], [])
        pairs = sorted((int(flat[i + 1]), flat[i].decode()) for i in range(0, len(flat), 2))
        return [name for _, name in pairs]

    async def cluster(self) -> ClusterInfo:
        nodes, rooms, connections = await self._backend.script(
            "cluster", [keys.ROOMS, keys.NODES], [ROOM_KEY_PREFIX, NODE_KEY_PREFIX]
        )
        return ClusterInfo(nodes=nodes, rooms=rooms, connections=connections)
