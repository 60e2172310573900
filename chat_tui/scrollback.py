"""A room's scrollback: what the log shows, as plain data (no Textual here).

Each room keeps its own bounded :class:`Scrollback`; the oldest entries are dropped once it is
full, so memory stays bounded however long the client runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

DEFAULT_LIMIT = 10_000


class EntryKind(StrEnum):
    MESSAGE = "message"  # a chat message from someone (maybe us)
    NOTICE = "notice"  # joins, leaves and other server notices
    ERROR = "error"  # "error:" notices from the server and local errors
    STATUS = "status"  # connection changes, gap markers, command output


class SendState(StrEnum):
    SENT = "sent"
    PENDING = "pending"  # typed, not yet echoed by the server (maybe offline)
    REFUSED = "refused"  # the server answered with an error notice


@dataclass(slots=True, eq=False)
class Entry:
    """One item of the log. ``eq=False``: entries are compared (and hashed) by identity."""

    kind: EntryKind
    text: str  # may contain "\n"; shown literally, never as markup
    time: datetime  # local time the entry was created or received
    sender: str | None = None  # set for MESSAGE
    own: bool = False  # sent by us
    mention: bool = False  # mentions our name
    state: SendState = SendState.SENT


class Scrollback:
    """The entries of one room, oldest first, at most ``limit`` of them."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"scrollback limit must be at least 1, not {limit}")
        self.limit = limit
        self._entries: deque[Entry] = deque(maxlen=limit)
        # Monotonic, so a view can tell how many entries arrived (and were dropped) since it
        # last looked: the first entry held has absolute index total_appended - len(self).
        self.total_appended = 0

    def append(self, entry: Entry) -> None:
        """Add an entry at the end; the oldest is dropped once the limit is reached."""
        self._entries.append(entry)
        self.total_appended += 1

    def clear(self) -> None:
        self._entries.clear()

    @property
    def first_index(self) -> int:
        """Absolute index (counting every append ever made) of the oldest entry held."""
        return self.total_appended - len(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def __reversed__(self) -> Iterator[Entry]:
        return reversed(self._entries)

    def __getitem__(self, index: int) -> Entry:
        return self._entries[index]

    def __repr__(self) -> str:
        return f"<Scrollback {len(self)}/{self.limit} entries, {self.total_appended} appended>"
