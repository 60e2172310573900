"""What a room's channel carries: one :class:`RoomEvent` per message, join, leave, name
change or signal (typing, away, back).

A backend publishes events and hands every event that arrives to the room hub, which fans it
out to the room's members on this node. Each event is stamped by the backend in one atomic step
with the publish:

* ``serial``: the event's position among all of the room's events (1, 2, 3, ...): a member's
  node detects any lost event on the live path from a gap in serials.
* ``offset``: the room's message sequence. A chat message takes the next offset (1, 2, 3, ...
  without gaps); any other event takes none and carries the offset of the last message before
  it. History and recovery address messages by offset.
* ``epoch``: changes whenever the room's sequence starts over (a memory broker that forgot the
  room, a Redis that lost its data), so that an offset is only ever compared within one epoch.
* ``time``: server time of the publish, seconds since the Unix epoch.
* ``origin``: the node that published it; ``nonce``: the sender's idempotency key, if any;
  a join's is its connection's own mark (:data:`JOIN_MARK` and random hex), by which that
  connection knows its join notice from another's under the same name.

Each connection speaks one dialect (``chat_protocol.codec``). An event is encoded once per
dialect for all the members that speak it: :meth:`RoomEvent.frame` keeps the text of each, and
``wire`` its WebSocket frame (filled by ``member.py``).

A kick is a leave with a reason: it removes the member's presence as a leave does.

A leave whose ``text`` is :data:`REPLACED` was published by the join of a newer connection under
the same name (a client that came back before its old connection was noticed gone).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final, Protocol

from chat_protocol.codec import CODECS, Codec


class EventKind(StrEnum):
    MESSAGE = "message"
    JOIN = "join"
    LEAVE = "leave"
    # chat.v2's "is typing": takes a serial (one order per room) but no offset, is never
    # stored, and reaches only the members of numbered dialects other than the typist.
    TYPING = "typing"
    # chat.v2's away (``text``: the message, may be empty) and back: like typing, but to every
    # chat.v2 member, the one it is about too.
    AWAY = "away"
    BACK = "back"
    # A member's new name (``name``: the old, ``text``: the new): to every member, like a
    # join; the presence entry takes the new name in the same step.
    NICK = "nick"
    # A member removed by an operator or moderator (``text``: why): its leave, as every
    # member sees it.
    KICK = "kick"


# Events that take a serial but no offset, are never stored, and reach chat.v2 members only.
SIGNALS: Final = frozenset({EventKind.TYPING, EventKind.AWAY, EventKind.BACK})


_MESSAGE, _JOIN, _NICK = EventKind.MESSAGE, EventKind.JOIN, EventKind.NICK
# Per codec slot, nothing yet: a new event's caches are copies (cheaper than building them).
_NOTHING: Final[list[Any]] = [None] * len(CODECS)
REPLACED = "replaced"
# What a join's nonce starts with: never a resume token's id (hex), so never taken for an ack.
JOIN_MARK: Final = "="


class RoomEvent:
    __slots__ = (
        "epoch",
        "frames",
        "kind",
        "name",
        "nonce",
        "offset",
        "origin",
        "serial",
        "text",
        "time",
        "wire",
    )

    # A publish's result may be its own event (the memory broker): it is never a duplicate.
    duplicate = False

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
        # Per codec slot: the event as a frame of that dialect, and as a WebSocket frame.
        self.frames: list[str | None] = _NOTHING.copy()
        self.wire: list[bytes | None] = _NOTHING.copy()

    def frame(self, codec: Codec) -> str:
        """The event as a frame of ``codec``'s dialect (computed once per dialect)."""
        frame = self.frames[codec.slot]
        if frame is None:
            if self.kind is _MESSAGE:
                frame = codec.message(self.name, self.text, self.offset, self.time)
            elif self.kind is _NICK:
                frame = codec.nick(self.name, self.text, self.time)
            elif self.kind is EventKind.KICK:
                frame = codec.kick(self.name, self.text, self.time)
            elif self.kind is EventKind.TYPING:
                frame = codec.typing(self.name)
            elif self.kind is EventKind.AWAY or self.kind is EventKind.BACK:
                message = self.text if self.kind is EventKind.AWAY else None
                frame = codec.away(self.name, message, self.time)
            else:
                frame = codec.presence(self.kind is _JOIN, self.name, self.time)
            self.frames[codec.slot] = frame
        return frame

    def __repr__(self) -> str:
        return (
            f"RoomEvent({self.kind.value} {self.name!r} serial={self.serial} "
            f"offset={self.offset} epoch={self.epoch!r})"
        )


class Published(Protocol):
    """Where a publish landed in its room's sequence (what an acknowledgement carries).

    ``duplicate``: a message whose nonce the room had already published; nothing was published
    now, and ``offset`` and ``time`` are the original's (``serial`` is then 0).
    """

    @property
    def serial(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def duplicate(self) -> bool: ...

    @property
    def epoch(self) -> str: ...

    @property
    def time(self) -> float: ...


class StoredMessage:
    """A message as history keeps it: no more than what replaying it needs."""

    __slots__ = ("name", "offset", "text", "time")

    def __init__(self, offset: int, name: str, text: str, time: float) -> None:
        self.offset = offset
        self.name = name
        self.text = text
        self.time = time

    def __repr__(self) -> str:
        return f"StoredMessage({self.offset} {self.name!r})"


class Duplicate:
    """The result of a publish refused as a duplicate (see :class:`Published`), settled."""

    __slots__ = ("epoch", "offset", "time")

    serial = 0
    duplicate = True

    def __init__(self, offset: int, epoch: str, time: float) -> None:
        self.offset = offset
        self.epoch = epoch
        self.time = time
