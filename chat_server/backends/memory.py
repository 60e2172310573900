"""``memory://``: one process, no I/O. Rooms are dicts and a publish is a synchronous delivery.

Each room's sequence lives while the room has members; a room that empties is forgotten, and
its next sequence starts over under a new epoch.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from chat_server.backends.base import (
    Backend,
    ChannelBackend,
    ClusterInfo,
    Deliver,
    Publishing,
    Registry,
    Settled,
)
from chat_server.events import EventKind, RoomEvent

_MESSAGE, _JOIN, _LEAVE = EventKind.MESSAGE, EventKind.JOIN, EventKind.LEAVE
_now = time.time
_NOT_PRESENT = Settled(None)


def new_epoch() -> str:
    return secrets.token_hex(4)


class _Published(RoomEvent):
    """A memory publish is over when it returns: the event is its own settled result."""

    __slots__ = ()

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def result(self) -> _Published:
        return self

    def add_done_callback(self, callback: Callable[[Any], object]) -> None:
        callback(self)

    def __await__(self) -> Generator[Any, None, _Published]:
        return self
        yield  # a generator: awaiting it never suspends


class _Room:
    __slots__ = ("epoch", "members", "offset", "serial")

    def __init__(self) -> None:
        self.epoch = new_epoch()
        self.offset = 0
        self.serial = 0
        # dict keeps insertion order: member listings read in join order.
        self.members: dict[str, None] = {}


class _State:
    """What the channels and the registry of one memory backend share."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.rooms: dict[str, _Room] = {}


class MemoryChannels(ChannelBackend):
    def __init__(self, state: _State, node_id: str) -> None:
        self._state = state
        self._node_id = node_id
        self._deliver: Deliver | None = None

    def bind(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def subscribe(self, room: str) -> Awaitable[None]:
        # The hub is the only subscriber there is: live at once.
        live = asyncio.get_running_loop().create_future()
        live.set_result(None)
        return live

    def unsubscribe(self, room: str) -> None:
        pass

    def publish(
        self, room: str, kind: EventKind, name: str, text: str = "", nonce: str | None = None
    ) -> Publishing:
        rooms = self._state.rooms
        state = rooms.get(room)
        if kind is _MESSAGE:
            if state is None:
                return _NOT_PRESENT  # nobody is in the room: there is nobody to hear it
            state.offset += 1
        elif kind is _JOIN:
            if state is None:
                state = rooms[room] = _Room()
            state.members[name] = None
        else:
            if state is None or name not in state.members:
                return _NOT_PRESENT
            del state.members[name]
        state.serial += 1
        event = _Published(
            kind, name, text, state.serial, state.offset, state.epoch, _now(),
            self._node_id, nonce,
        )  # fmt: skip
        if kind is _LEAVE and not state.members:
            del rooms[room]
        if self._deliver is not None:
            self._deliver(room, event)
        return event


class MemoryRegistry(Registry):
    def __init__(self, state: _State) -> None:
        self._state = state

    async def claim_name(self, name: str) -> bool:
        names = self._state.names
        if name in names:
            return False
        names.add(name)
        return True

    async def release_name(self, name: str) -> None:
        self._state.names.discard(name)

    async def rooms(self) -> dict[str, int]:
        return {room: len(state.members) for room, state in self._state.rooms.items()}

    async def members(self, room: str) -> list[str]:
        state = self._state.rooms.get(room)
        return list(state.members) if state is not None else []

    async def cluster(self) -> ClusterInfo:
        rooms = self._state.rooms
        return ClusterInfo(
            nodes=1, rooms=len(rooms), connections=sum(len(r.members) for r in rooms.values())
        )


class MemoryBackend(Backend):
    kind = "memory"

    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self._state = _State()
        self.channels = MemoryChannels(self._state, node_id)
        self.registry = MemoryRegistry(self._state)

    @property
    def url(self) -> str:
        return "memory://"

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._state.rooms.clear()
        self._state.names.clear()
