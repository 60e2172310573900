"""What a room's channel carries: one :class:`RoomEvent` per message, join or leave.

A backend publishes events and hands every event that arrives to the room hub, which fans it
out to the room's members on this node. Each event is stamped by the backend in one atomic step
with the publish:

* ``serial``: the event's position among all of the room's events (1, 2, 3, ...): a member's
  node detects any lost event on the live path from a gap in serials.
* ``offset``: the room's message sequence. A chat message takes the next offset (1, 2, 3, ...
  without gaps); a join or leave takes none and carries the offset of the last message before
  it. History and recovery address messages by offset.
* ``epoch``: changes whenever the room's sequence starts over (a memory broker that forgot the
  room, a Redis that lost its data), so that an offset is only ever compared within one epoch.
* ``time``: server time of the publish, seconds since the Unix epoch.
* ``origin``: the node that published it; ``nonce``: the sender's idempotency key, if any.

``frame`` is the event in the original text protocol, computed once per event for all members;
``data`` caches it encoded as a WebSocket frame, also once for all (``connection.py``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from chat_server import protocol


class EventKind(StrEnum):
    MESSAGE = "message"
    JOIN = "join"
    LEAVE = "leave"


_MESSAGE, _JOIN = EventKind.MESSAGE, EventKind.JOIN


class RoomEvent:
    __slots__ = (
        "data",
        "epoch",
        "frame",
        "kind",
        "name",
        "nonce",
        "offset",
        "origin",
        "serial",
        "text",
        "time",
    )

    def __init__(
        self,
        kind: EventKind,
        name: str,
        text: str,
        serial: int,
        offset: int,
        epoch: str,
        time: float,
        origin: str,
        nonce: str | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.text = text
        self.serial = serial
        self.offset = offset
        self.epoch = epoch
        self.time = time
        self.origin = origin
        self.nonce = nonce
        if kind is _MESSAGE:
            self.frame = protocol.format_message(name, text)
        elif kind is _JOIN:
            self.frame = protocol.format_join(name)
        else:
            self.frame = protocol.format_leave(name)
        self.data: bytes | None = None

    def __repr__(self) -> str:
        return (
            f"RoomEvent({self.kind.value} {self.name!r} serial={self.serial} "
            f"offset={self.offset} epoch={self.epoch!r})"
        )


class Published(Protocol):
    """Where a publish landed in its room's sequence (what an acknowledgement would carry)."""

    @property
    def offset(self) -> int: ...

    @property
    def epoch(self) -> str: ...

    @property
    def time(self) -> float: ...
