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

    async def claim_name(self, name: str, digest: str | None = None) -> bool:
        node = self._backend.node_id
        claimed = await self._backend.script(
            "claim_name",
            [keys.name(name), keys.NODES, keys.node_names(node)],
            [node, name, digest or "-"],
        )
        return bool(claimed)

    async def name_digest(self, name: str) -> str | None:
        stored = await self._backend.link.call("HGET", keys.name(name), "d")
        return None if stored is None else stored.decode("ascii", "replace")

    async def resume_name(self, name: str, digest: str) -> bool:
        node = self._backend.node_id
        resumed = await self._backend.script(
            "resume_name", [keys.name(name), keys.node_names(node)], [node, name, digest]
        )
        return bool(resumed)

    async def release_name(self, name: str) -> None:
        backend = self._backend
        node = backend.node_id
        await backend.script(
            "release_name",
            [keys.name(name), keys.node_names(node)],
            [node, name, backend.reservation_ms],
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
