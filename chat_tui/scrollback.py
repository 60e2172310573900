"""A room's scrollback: what the log shows, as plain data (no Textual here).

Each room keeps its own bounded :class:`Scrollback`; the oldest entries are dropped once it is
full, so memory stays bounded however long the client runs.

A view (the message log) observes a scrollback instead of being told what to do: every change
calls the observers, which only note that something changed; the view then takes in, once,
everything that happened since it last looked. It can tell what that was from three things the
scrollback keeps: ``total_appended`` and ``first_index`` (appends and drops), ``generation``
(bumped when the order changed: a clear, an insertion), ``style_generation`` (bumped when every
entry must be drawn again) and :meth:`take_changes` (entries changed in place, such as a
pending message that was sent).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterator
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


# An entry's kind, send state and yes/no facts share one small int (Entry._bits): five slots
# an entry instead of eleven, 48 bytes less for each of the (by default) 10,000 a room keeps.
# The commonest values (a message, sent) are 0, so that the int is one of Python's shared
# small ints; _BITS shares the others too (one object per value, not one per entry).
_KINDS = (EntryKind.MESSAGE, EntryKind.NOTICE, EntryKind.ERROR, EntryKind.STATUS)
_STATES = (SendState.SENT, SendState.PENDING, SendState.REFUSED)
_KIND_INDEX = {kind: index for index, kind in enumerate(_KINDS)}
_STATE_INDEX = {state: index << 2 for index, state in enumerate(_STATES)}
_OWN, _MENTION, _HISTORY, _DATED, _QUIET = 16, 32, 64, 128, 256
_BITS = tuple(range(512))


def _flag(bit: int, doc: str) -> property:
    """A yes/no field of Entry, kept as one bit of ``_bits``."""

    def get(self: Entry) -> bool:
        return bool(self._bits & bit)

    def set(self: Entry, value: bool) -> None:
        self._bits = _BITS[self._bits | bit if value else self._bits & ~bit]

    return property(get, set, doc=doc)


class Entry:
    """One item of the log. Entries are compared (and hashed) by identity."""

    __slots__ = ("_bits", "offset", "sender", "text", "time")

    text: str  # may contain "\n"; shown literally, never as markup
    time: datetime  # when it was said: the server's time when it gives one, else ours
    sender: str | None  # set for MESSAGE
    # The room's message number, for servers that number them (history, recovery): entries
    # with an offset are kept in offset order (see Scrollback.insert).
    offset: int | None

    def __init__(
        self,
        kind: EntryKind,
        text: str,
        time: datetime,
        sender: str | None = None,
        own: bool = False,
        mention: bool = False,
        state: SendState = SendState.SENT,
        offset: int | None = None,
        from_history: bool = False,
        dated: bool = False,
        quiet: bool = False,
    ) -> None:
        self.text = text
        self.time = time
        self.sender = sender
        self.offset = offset
        self._bits = _BITS[
            _KIND_INDEX[kind]
            | _STATE_INDEX[state]
            | (own and _OWN)
            | (mention and _MENTION)
            | (from_history and _HISTORY)
            | (dated and _DATED)
            | (quiet and _QUIET)
        ]

    @property
    def kind(self) -> EntryKind:
        return _KINDS[self._bits & 3]

    @property
    def state(self) -> SendState:
        return _STATES[(self._bits >> 2) & 3]

    @state.setter
    def state(self, state: SendState) -> None:
        self._bits = _BITS[(self._bits & ~12) | _STATE_INDEX[state]]

    own = _flag(_OWN, "sent by us")
    mention = _flag(_MENTION, "mentions our name")
    from_history = _flag(_HISTORY, 'said before we joined (shown dimmed, above the "joined" line)')
    dated = _flag(
        _DATED,
        "said on another day than the one it came in on (history, recovery): its stamp has "
        "the date",
    )
    quiet = _flag(
        _QUIET,
        "a join, leave or rename of someone who has not spoken lately: hidden while the "
        "scrollback hides quiet entries (the smart join filter)",
    )

    def __repr__(self) -> str:
        return (
            f"Entry({self.kind!r}, {self.text!r}, {self.time!r}, {self.sender!r}, "
            f"own={self.own}, mention={self.mention}, state={self.state!r}, "
            f"offset={self.offset!r}, from_history={self.from_history}, dated={self.dated}, "
            f"quiet={self.quiet})"
        )


Observer = Callable[[], None]


class Observable:
    """Something views watch: each change calls every observer (cheap callbacks, no arguments)."""

    def __init__(self) -> None:
        self._observers: list[Observer] = []

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer()`` after every change; returns the function that stops it."""
        self._observers.append(observer)

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return unsubscribe

    def changed(self) -> None:
        for observer in self._observers:
            observer()


class Scrollback(Observable):
    """The entries of one room, oldest first, at most ``limit`` of them."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        super().__init__()
        if limit < 1:
            raise ValueError(f"scrollback limit must be at least 1, not {limit}")
        self.limit = limit
        self._entries: deque[Entry] = deque(maxlen=limit)
        # Monotonic, so a view can tell how many entries arrived (and were dropped) since it
        # last looked: the first entry held has absolute index total_appended - len(self).
        self.total_appended = 0
        self.generation = 0  # bumped when entries were removed or reordered other than by age
        self.style_generation = 0  # bumped when every entry must be drawn again
        self.hide_quiet = True  # quiet entries take no rows (toggled by the user)
        self._changes: dict[Entry, None] = {}  # changed in place, not yet taken by the view
        self._marker: Entry | None = None

    # --- changes --------------------------------------------------------------------------

    def append(self, entry: Entry) -> None:
        """Add an entry at the end; the oldest is dropped once the limit is reached."""
        if entry.sender is not None:
            # One string per name, not one per message (each message's name is a fresh
            # string from its frame): some 60 bytes an entry, 3 MB in 50,000 entries.
            entry.sender = sys.intern(entry.sender)
        self._entries.append(entry)
        self.total_appended += 1
        self.changed()

    def insert(self, entry: Entry) -> None:
        """Add an entry with an ``offset`` in offset order (history and recovery fill gaps).

        Entries without an offset stay where they are; the new one goes after the last entry
        whose offset is lower. Rare (once per reconnect), so the views measure everything again.
        """
        if len(self._entries) == self.limit:
            self._entries.popleft()  # the oldest goes, as for an append
        self._entries.insert(self._position(entry), entry)
        self.total_appended += 1
        self.generation += 1
        self.changed()

    def _position(self, entry: Entry) -> int:
        assert entry.offset is not None
        position = len(self._entries)
        for index in range(len(self._entries) - 1, -1, -1):
            offset = self._entries[index].offset
            if offset is not None and offset < entry.offset:
                break
            if offset is not None:
                position = index
        return position

    def settle(self, entry: Entry) -> bool:
        """``entry`` (ours, pending until now) got its offset: move it after what the room
        had before it, entries of a lower offset and the lines added while it was pending
        (notes, such as "reconnected": it was published after them). A message typed offline
        so goes after the reconnect and what was recovered, in time order, whatever the two
        clocks say. Other pending messages do not count: they follow it. True if it moved."""
        assert entry.offset is not None
        entries = self._entries
        after = None  # the index it goes after
        for index in range(len(entries) - 1, -1, -1):
            candidate = entries[index]
            if candidate is entry:
                return False  # nothing after it came before it: it stays
            if candidate.offset is not None:
                if candidate.offset < entry.offset:
                    after = index
                    break
            elif candidate.state is not SendState.PENDING:
                after = index
                break
        if after is None:
            return False
        try:
            entries.remove(entry)  # it was before ``after``: that index moves down by one
        except ValueError:
            # Pushed out of the scrollback while pending (a flood of more than it keeps came
            # first): nothing to move, nothing to draw.
            return False
        entries.insert(after, entry)
        self.generation += 1
        self.changed()
        return True

    def remove(self, entry: Entry) -> None:
        """Take ``entry`` out (a pending message that turned out to be in the log already)."""
        try:
            self._entries.remove(entry)
        except ValueError:
            return
        self.total_appended -= 1  # as if it had never been appended: later indexes stay put
        self._changes.pop(entry, None)
        if self._marker is entry:
            self._marker = None
        self.generation += 1
        self.changed()

    def find_offset(self, offset: int) -> Entry | None:
        """The entry numbered ``offset``, looking back from the newest (where it nearly always
        is) until entries are numbered below it."""
        for candidate in reversed(self._entries):
            if candidate.offset is None:
                continue
            if candidate.offset == offset:
                return candidate
            if candidate.offset < offset:
                return None
        return None

    def forget_offsets(self) -> None:
        """The room's numbering started over (a new epoch): old numbers mean nothing now."""
        for entry in self._entries:
            entry.offset = None

    def touch(self, entry: Entry) -> None:
        """``entry`` changed in place (its send state, its text): views show it again."""
        self._changes[entry] = None
        self.changed()

    def restyle(self) -> None:
        """Every entry must be drawn again (what picks out our name changed)."""
        self.style_generation += 1
        self.changed()

    def take_changes(self) -> list[Entry]:
        """The entries changed in place since the last call (the one view takes them)."""
        changes = list(self._changes)
        self._changes.clear()
        return changes

    def clear(self) -> None:
        self._entries.clear()
        self._changes.clear()
        self._marker = None
        self.generation += 1
        self.changed()

    @property
    def marker(self) -> Entry | None:
        """The first entry that was unread when the room was entered ("new messages" above it)."""
        return self._marker

    @marker.setter
    def marker(self, entry: Entry | None) -> None:
        old, self._marker = self._marker, entry
        if old is not entry:
            for changed in (old, entry):
                if changed is not None:
                    self._changes[changed] = None
            self.changed()

    # --- reading ------------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        """Absolute index (counting every append ever made) of the oldest entry held."""
        return self.total_appended - len(self._entries)

    def index_of(self, entry: Entry) -> int | None:
        """Absolute index of ``entry`` (by identity); changed entries are nearly always recent."""
        for back, candidate in enumerate(reversed(self._entries), 1):
            if candidate is entry:
                return self.total_appended - back
        return None

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
