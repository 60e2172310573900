"""What a room's connection reports, in the order it happened (no Textual here).

The connection (``connection.py``) appends these to its queue; the controller
(``controller.py``) takes them in batches and applies each to the room's model with the
handler registered for its type. A plain :class:`~chat_protocol.frames.Frame` is a frame from
the server that is not about one of our own messages (live: on chat.v2 it has its offset and
the server's time). A new kind of event is a class here, a place in the connection that emits
it, and one handler in the controller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from chat_protocol.frames import Frame, Welcome


class ConnectionState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    OFFLINE = "offline"  # lost; will retry with backoff
    FAILED = "failed"  # refused by the server (1008 etc.); not retried in a tight loop
    CLOSED = "closed"  # we left


@dataclass(frozen=True, slots=True)
class StateChanged:
    state: ConnectionState
    detail: str
    retry_in: float | None = None  # seconds until the next attempt; None: none planned
    unreachable: bool = False  # nothing accepted the TCP connection (no server there)


@dataclass(frozen=True, slots=True)
class NameAssigned:
    """Our name in the room, from our own join notice (the first frame)."""

    name: str


@dataclass(frozen=True, slots=True)
class Echo:
    """The server echoed our message ``send_id`` as ``frame``: it is sent."""

    frame: Frame
    send_id: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The server dropped or refused our message ``send_id`` (or it could never be sent)."""

    send_id: str


# The text protocol's errors name no message: the last this many sends taken as refused are
# remembered (by the connection and by the room), in case one comes back sent after all.
REFUSALS_KEPT = 16


@dataclass(frozen=True, slots=True)
class Welcomed:
    """chat.v2: we are in the room. ``backlog``: the history or recovered messages that came
    with the welcome, oldest first (all before any live frame); ``since``: the offset recovery
    was asked from (None: not asked, a first join)."""

    welcome: Welcome
    backlog: tuple[Frame, ...]
    since: int | None


@dataclass(frozen=True, slots=True)
class Acked:
    """chat.v2: our message ``send_id`` is published as message ``offset`` at the server's
    ``time`` (its own frame, which follows, is not passed on)."""

    send_id: str
    text: str
    offset: int
    time: datetime


@dataclass(frozen=True, slots=True)
class Unreadable:
    """chat.v2: a frame this client cannot read (not JSON, a value out of range, nested too
    deep): ``size`` characters, of which ``start`` is the beginning."""

    size: int
    start: str


@dataclass(frozen=True, slots=True)
class NameRefused:
    """The server refused the name asked for (``reason``: its close reason); the room connects
    again at once without asking for it."""

    asked: str
    reason: str


@dataclass(frozen=True, slots=True)
class Lagging:
    """The server has not answered a ping since ``since`` (time.monotonic()); None: it has
    answered again."""

    since: float | None


Event = (
    Frame
    | Echo
    | Acked
    | Refused
    | StateChanged
    | NameAssigned
    | Welcomed
    | Unreadable
    | NameRefused
    | Lagging
)
