"""The channel backend on Redis: one pub/sub channel per room, events from the script."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from chat_server.backends.base import ChannelBackend, Deliver, Publishing
from chat_server.backends.redis import keys
from chat_server.events import EventKind, RoomEvent

if TYPE_CHECKING:
    from chat_server.backends.redis.backend import RedisBackend


class RedisChannels(ChannelBackend):
    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self._deliver: Deliver | None = None
        # The rooms the hub wants: resubscribed whenever the subscriber connects again.
        self.subscribed: set[str] = set()

    def bind(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def deliver(self, room: str, event: RoomEvent) -> None:
        if self._deliver is not None:
            self._deliver(room, event)

    def subscribe(self, room: str) -> asyncio.Future[None]:
        self.subscribed.add(room)
        return self._backend.pubsub.subscribe([keys.room_channel(room)])

    def unsubscribe(self, room: str) -> None:
        self.subscribed.discard(room)
        self._backend.pubsub.unsubscribe(keys.room_channel(room))

    def publish(
        self,
        room: str,
        kind: EventKind,
        name: str,
        text: str = "",
        nonce: str | None = None,
        ref: int | None = None,
    ) -> Publishing:
        backend = self._backend
        return backend.room_event(room, kind, backend.node_id, name, text, nonce, ref)
