"""Room membership and fan-out behind a small interface, in the spirit of encode/broadcaster.

A broker knows which names are taken, which local subscribers sit in which room, and how to
deliver a frame published to a room to every subscriber of that room, in one order. The
in-memory backend serves one process; a backend for several processes (Redis) implements the
same interface and is chosen by URL scheme in :func:`broker_from_url`, so the WebSocket handler
never changes.

Contract every backend keeps:

* ``claim_name`` is atomic across everything sharing the backend: a name is held by at most
  one live connection.
* All subscribers of a room receive the frames published to it in one and the same order.
* ``deliver`` is called synchronously and must never block or await; slow subscribers are the
  subscriber's problem (see ``connection.Member``), never the broker's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol
from urllib.parse import urlsplit


class Subscriber(Protocol):
    """A local member of a room, as the broker sees it."""

    name: str

    def deliver(self, frame: str) -> None:
        """Queue one frame for this member; never blocks."""


class Broker(ABC):
    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def disconnect(self) -> None: ...

    @abstractmethod
    async def claim_name(self, name: str) -> bool:
        """Reserve ``name`` for one connection; ``False`` if it is taken."""

    @abstractmethod
    async def release_name(self, name: str) -> None: ...

    @abstractmethod
    async def subscribe(self, room: str, subscriber: Subscriber) -> None:
        """Make ``subscriber`` a member of ``room``: it receives every later publish."""

    @abstractmethod
    async def unsubscribe(self, room: str, subscriber: Subscriber) -> None: ...

    @abstractmethod
    async def publish(self, room: str, frame: str) -> None:
        """Deliver ``frame`` to every member of ``room``."""

    @abstractmethod
    async def rooms(self) -> dict[str, int]:
        """Every room that has members, with its member count."""

    @abstractmethod
    async def members(self, room: str) -> list[str]:
        """The names of ``room``'s members; empty if the room does not exist."""


class MemoryBroker(Broker):
    """One process, no I/O: rooms are dicts, fan-out is a loop."""

    def __init__(self) -> None:
        self._names: set[str] = set()
        # dict keeps insertion order, so member listings read in join order.
        self._rooms: dict[str, dict[Subscriber, None]] = {}

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        self._rooms.clear()
        self._names.clear()

    async def claim_name(self, name: str) -> bool:
        if name in self._names:
            return False
        self._names.add(name)
        return True

    async def release_name(self, name: str) -> None:
        self._names.discard(name)

    async def subscribe(self, room: str, subscriber: Subscriber) -> None:
        self._rooms.setdefault(room, {})[subscriber] = None

    async def unsubscribe(self, room: str, subscriber: Subscriber) -> None:
        members = self._rooms.get(room)
        if members is None:
            return
        members.pop(subscriber, None)
        if not members:
            del self._rooms[room]

    async def publish(self, room: str, frame: str) -> None:
        members = self._rooms.get(room)
        if not members:
            return
        # A copy: delivering may evict a member, which unsubscribes it.
        for subscriber in tuple(members):
            subscriber.deliver(frame)

    async def rooms(self) -> dict[str, int]:
        return {room: len(members) for room, members in self._rooms.items()}

    async def members(self, room: str) -> list[str]:
        return [s.name for s in self._rooms.get(room, ())]


def broker_from_url(url: str) -> Broker:
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBroker()
    raise ValueError(f"unsupported broker URL {url!r} (supported: memory://)")
