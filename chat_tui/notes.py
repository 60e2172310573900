"""What the client says in a room's log in its own words, as values: each kind of note is a
class whose ``text`` is the sentence. The model (``rooms.py``) records notes; only this module
words them. No Textual here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

TIME = "%H:%M"
DATED = "%b %d %H:%M"  # a time on another day than the one it is compared with


def format_delay(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 1 else f"{round(seconds)} s"


@dataclass(frozen=True, slots=True)
class Joined:
    room: str
    name: str

    @property
    def text(self) -> str:
        return f"joined {self.room} as {self.name}"


@dataclass(frozen=True, slots=True)
class Reconnected:
    name: str | None = None  # said when it is not the name we had

    @property
    def text(self) -> str:
        return "reconnected" if self.name is None else f"reconnected as {self.name}"


@dataclass(frozen=True, slots=True)
class Lost:
    """The connection went down (or never came up); ``retry_in``: when it tries again."""

    detail: str
    retry_in: float | None
    ever_connected: bool

    @property
    def text(self) -> str:
        what = "connection lost" if self.ever_connected else "cannot connect"
        if not self.retry_in:
            retry = ""
        elif self.retry_in < 0.05:
            retry = ", retrying now"  # "in 0.0 s" says the same, less well
        else:
            retry = f", retrying in {format_delay(self.retry_in)}"
        return f"{what}: {self.detail}{retry}"


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused the room; it is tried again after ``retry_in``, or only when asked."""

    room: str
    detail: str
    retry_in: float | None

    @property
    def text(self) -> str:
        if self.retry_in:
            return f"{self.detail}; trying again in {format_delay(self.retry_in)}"
        return f"{self.detail}; not retrying (/join {self.room} or ctrl+r tries again)"


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages between ``since`` and ``until`` may be missing (recovery was not possible)."""

    since: datetime
    until: datetime

    @property
    def text(self) -> str:
        # A gap that spans midnight says which day it began.
        start = self.since.strftime(TIME if self.since.date() == self.until.date() else DATED)
        return f"messages from {start} to {self.until.strftime(TIME)} may be missing"


@dataclass(frozen=True, slots=True)
class MorePresence:
    """The rest of a run of joins and leaves, folded into one line."""

    joined: int
    left: int

    @property
    def text(self) -> str:
        parts = [f"{self.joined} more joined"] if self.joined else []
        if self.left:
            parts.append(f"{self.left} left" if parts else f"{self.left} more left")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class NameNotTaken:
    """The name asked for (``--nick``, ``nick``) was refused: the app goes on under another."""

    asked: str
    reason: str

    @property
    def text(self) -> str:
        return f"cannot be {self.asked} ({self.reason}): going on without it"


@dataclass(frozen=True, slots=True)
class ServerError:
    """An error the server sent (``error:`` notice, or chat.v2's error frame)."""

    description: str

    @property
    def text(self) -> str:
        return f"error: {self.description}"


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A frame from the server that this client cannot read (``count`` in a row: the line
    of the first is counted on, not repeated, for a server that sends nothing else)."""

    size: int
    start: str
    count: int = 1

    @property
    def text(self) -> str:
        more = "…" if self.size > len(self.start) else ""
        said = (
            f"the server sent a frame that cannot be read ({self.size} bytes): {self.start}{more}"
        )
        if self.count > 1:
            said += f" (and {self.count - 1} more since)"
        return said


@dataclass(frozen=True, slots=True)
class AwayChanged:
    """Someone is away (``message``, may be empty), or back (``message`` None)."""

    name: str
    message: str | None
    ours: bool = False

    @property
    def text(self) -> str:
        who, be = ("you", "are") if self.ours else (self.name, "is")
        if self.message is None:
            return f"{who} {be} back"
        return f"{who} {be} away" + (f": {self.message}" if self.message else "")


@dataclass(frozen=True, slots=True)
class NickChanged:
    """Someone (maybe us) is known by another name now."""

    old: str
    new: str
    ours: bool = False

    @property
    def text(self) -> str:
        if self.ours:
            return f"you are now known as {self.new}"
        return f"{self.old} is now known as {self.new}"


@dataclass(frozen=True, slots=True)
class Kicked:
    """An operator or moderator took ``name`` out of the room."""

    name: str
    reason: str

    @property
    def text(self) -> str:
        return (
            f"{self.name} was kicked: {self.reason}" if self.reason else f"{self.name} was kicked"
        )


@dataclass(frozen=True, slots=True)
class TopicChanged:
    topic: str | None

    @property
    def text(self) -> str:
        return f"topic: {self.topic}" if self.topic else "the topic was cleared"


@dataclass(frozen=True, slots=True)
class Said:
    """Words that are someone else's, shown as they are: a server's notice, a command's
    output, a local error already worded where it arose."""

    text: str


Note = (
    Joined
    | NickChanged
    | Reconnected
    | Lost
    | Refused
    | Gap
    | MorePresence
    | NameNotTaken
    | AwayChanged
    | ServerError
    | Unreadable
    | Said
    | Kicked
    | TopicChanged
)
