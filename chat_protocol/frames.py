"""What a client reads from a server, whatever the dialect (``v1`` text or ``v2`` JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class FrameKind(StrEnum):
    MESSAGE = "message"
    JOIN = "join"
    LEAVE = "leave"
    ERROR = "error"
    NOTICE = "notice"
    TYPING = "typing"  # chat.v2: ``name`` is typing (never stored, never in a log)
    AWAY = "away"  # chat.v2: ``name`` is away; ``text`` their message (may be empty)
    BACK = "back"  # chat.v2: ``name`` is back
    NICK = "nick"  # ``name`` is now known as ``text``
    # chat.v2: ``name`` wrote to you in your conversation with them (open it: ``@name``)
    DIRECT = "direct"
    # ``name`` was removed from the room by an operator or moderator; ``text`` says why
    KICK = "kick"
    # The room's topic is ``text`` now (empty: none)
    TOPIC = "topic"


@dataclass(frozen=True, slots=True)
class Frame:
    """A parsed server frame. ``name`` is set for messages, joins and leaves.

    chat.v2 frames also carry the message's ``offset`` and the server's ``time`` (aware, UTC);
    an error may name the ``nonce`` of the send it refuses. Text-protocol frames have none.
    """

    kind: FrameKind
    text: str
    name: str | None = None
    offset: int | None = None
    time: datetime | None = None
    nonce: str | None = None


@dataclass(frozen=True, slots=True)
class Welcome:
    """The first frame of a chat.v2 connection."""

    room: str
    name: str
    epoch: str
    offset: int
    resume: str
    recovered: bool | None
    resumed: bool
    history: int  # message frames of history or recovery that follow, before the live ones
    read: int | None = None  # the offset this token last read here (absent: none kept)
    topic: str | None = None  # the room's topic, if it has one
    max_chars: int | None = None  # the longest message text the server takes, if it says


@dataclass(frozen=True, slots=True)
class Ack:
    """chat.v2: the send with ``nonce`` is published as message ``offset`` at ``time``."""

    nonce: str
    offset: int
    time: datetime


# Anything a client reads: a frame of the room, or (chat.v2) a welcome or an ack.
ServerFrame = Frame | Welcome | Ack


# Frames a client sends are not frozen: one is built for every frame a server reads, and a
# frozen dataclass's __init__ (object.__setattr__ per field) costs twice as much.
@dataclass(slots=True)
class Send:
    """What a client sends: a chat message, with its nonce (chat.v2) if it has one."""

    text: str
    nonce: str | None = None


@dataclass(slots=True)
class Typing:
    """(chat.v2) The client's user is typing in this room."""


@dataclass(slots=True)
class Away:
    """(chat.v2) The client's user is away (``message``: why, may be empty); ``None``: back."""

    message: str | None


@dataclass(slots=True)
class Nick:
    """(chat.v2) The client's user takes the name ``name`` in every room it is in (an error
    about it carries ``nonce``)."""

    name: str
    nonce: str | None = None


@dataclass(slots=True)
class Read:
    """(chat.v2) The client's user has seen this room's messages up to ``offset``."""

    offset: int


# Every frame a client sends, as a server reads it. A new chat.v2 frame type is a dataclass
# here, a reader in v2.py's table and an answer in the server's session.py.
ClientFrame = Send | Typing | Read | Away | Nick


class FrameError(ValueError):
    """A client frame that cannot be read as anything the dialect knows; ``str(exc)`` is the
    error to tell the client, ``nonce`` the one it had, if any."""

    def __init__(self, description: str, nonce: str | None = None) -> None:
        super().__init__(description)
        self.nonce = nonce
