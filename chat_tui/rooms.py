"""The rooms the client has joined, as plain data that the widgets observe (no Textual here).

A :class:`Room` holds everything the client knows about one room: its scrollback, the state of
its connection, our name there, unread messages and mentions, who is in it, the messages we
sent that are not confirmed yet, the input's history and draft. Every change goes through a
method here and ends with :meth:`Room.changed`, which calls the room's observers; the app
observes rooms to redraw the sidebar, the status line and the members panel, and the message
log observes the shown room's scrollback.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from chat_server.protocol import Frame, FrameKind
from chat_tui.connection import ConnectionState
from chat_tui.scrollback import Entry, EntryKind, Observable, Scrollback, SendState

NAME_PREFIX = "user_"  # every name the reference server gives starts with it


def mentions(name: str, text: str) -> bool:
    """Whether ``text`` names ``name`` as a word of its own (case-insensitive)."""
    return _mention_pattern(name).search(text) is not None


@functools.lru_cache(maxsize=64)
def _mention_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])", re.IGNORECASE)


def format_delay(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 1 else f"{round(seconds)} s"


def countdown(seconds: float) -> str:
    """A wait as a live countdown shows it: whole seconds, rounded up ("retrying in 7 s")."""
    return f"{max(math.ceil(seconds), 0)} s"


class MemberSource(StrEnum):
    UNKNOWN = "unknown"  # not asked yet
    SERVER = "server"  # the server's list (GET /rooms/{room}), kept current from notices
    SEEN = "seen"  # the server has no list: the names seen here, kept current from notices


@dataclass(slots=True)
class Person:
    """Someone seen in a room."""

    name: str
    present: bool
    active: int = 0  # when they last joined or spoke (a counter: higher is later)
    changed: int = 0  # the room's presence version when their presence last changed


@dataclass(eq=False)
class Room(Observable):
    """One joined room."""

    room: str
    scrollback_limit: int
    scrollback: Scrollback = field(init=False)
    state: ConnectionState = ConnectionState.CONNECTING
    detail: str = ""
    retry_at: float | None = None  # time.monotonic() of the next attempt, while waiting
    name: str | None = None  # ours here
    unread: int = 0  # messages not looked at
    mentions: int = 0  # of those, the ones that mention us
    history: list[str] = field(default_factory=list)  # sent lines, oldest first
    draft: str = ""
    cursor: int = 0
    people: dict[str, Person] = field(default_factory=dict)
    member_source: MemberSource = MemberSource.UNKNOWN
    pending: dict[str, Entry] = field(default_factory=dict)  # send id -> our entry
    ever_connected: bool = False
    lost: bool = False  # a "connection lost" marker is in the log; cleared on reconnect
    viewed: bool = False  # in the log, and the terminal has focus

    def __post_init__(self) -> None:
        Observable.__init__(self)
        self.scrollback = Scrollback(self.scrollback_limit)
        self._announce_reconnect = False  # say "reconnected" once we know our new name
        self._own_names: set[str] = set()  # every name we had here
        self._first_unread: Entry | None = None
        self._tick = 0
        self._presence_version = 0

    # --- the connection ---------------------------------------------------------------------

    def connection_changed(
        self,
        state: ConnectionState,
        detail: str,
        retry_in: float | None,
        now: datetime,
        monotonic: float,
    ) -> None:
        self.state, self.detail = state, detail
        waiting = retry_in is not None and state in (
            ConnectionState.OFFLINE,
            ConnectionState.FAILED,
        )
        self.retry_at = monotonic + retry_in if waiting and retry_in is not None else None
        if state is ConnectionState.CONNECTED:
            if self.lost:
                self.lost = False
                self._announce_reconnect = True
                # Who is here is not known any more: the list is fetched again, and notices
                # and messages bring people back meanwhile.
                for person in self.people.values():
                    person.present = False
            self.ever_connected = True
        elif state is ConnectionState.OFFLINE:
            if not self.lost:
                # The first failure is the gap marker; later retries only update the status.
                self.lost = True
                what = "connection lost" if self.ever_connected else "cannot connect"
                retry = f", retrying in {format_delay(retry_in)}" if retry_in else ""
                self._add(Entry(EntryKind.STATUS, f"{what}: {detail}{retry}", now))
        elif state is ConnectionState.FAILED:
            self.lost = True
            retry = (
                f"; trying again in {format_delay(retry_in)}"
                if retry_in
                else f"; not retrying (/join {self.room} or ctrl+r tries again)"
            )
            self._add(Entry(EntryKind.ERROR, f"{detail}{retry}", now))
        self.changed()

    def name_assigned(self, name: str, now: datetime) -> None:
        self.name = name
        self._own_names.add(name)
        self._saw(name, present=True)
        if self._announce_reconnect:
            self._announce_reconnect = False
            text = f"reconnected as {name}"
        else:
            text = f"joined {self.room} as {name}"
        self._add(Entry(EntryKind.STATUS, text, now))
        self.scrollback.restyle()  # what the log picks out as ours depends on the name
        self.changed()

    def frame(self, frame: Frame, now: datetime) -> bool:
        """A frame that is not our echo; True if it is a message that mentions us."""
        if self._announce_reconnect:
            # A server that does not send our join notice first: no name to show.
            self._announce_reconnect = False
            self._add(Entry(EntryKind.STATUS, "reconnected", now))
        kind = frame.kind
        mention = False
        if kind is FrameKind.MESSAGE:
            name = frame.name
            own = name is not None and name == self.name
            mention = not own and self.name is not None and mentions(self.name, frame.text)
            entry = Entry(EntryKind.MESSAGE, frame.text, now, name, own=own, mention=mention)
            self._add(entry)
            if name is not None:
                self._saw(name, present=True, spoke=True)
            if not self.viewed and not own:
                self.unread += 1
                self.mentions += mention
                if self._first_unread is None:
                    self._first_unread = entry
        elif kind is FrameKind.ERROR:
            self._add(Entry(EntryKind.ERROR, f"error: {frame.text}", now))
        else:
            if frame.name is not None:  # joins and leaves
                self._saw(frame.name, present=kind is FrameKind.JOIN, presence=True)
            self._add(Entry(EntryKind.NOTICE, frame.text, now))
        self.changed()
        return mention

    def echo(self, send_id: str, frame: Frame) -> None:
        """Our message came back: its pending entry shows what the room saw, as sent."""
        entry = self.pending.pop(send_id, None)
        if entry is None:
            return  # cleared from the log meanwhile (/clear)
        # What the room saw (the server sanitises) and under which name (it may have changed).
        entry.text = frame.text
        entry.sender = frame.name
        entry.state = SendState.SENT
        self.scrollback.touch(entry)
        self.changed()

    def refused(self, send_id: str) -> None:
        entry = self.pending.pop(send_id, None)
        if entry is None:
            return
        entry.state = SendState.REFUSED
        self.scrollback.touch(entry)
        self.changed()

    # --- the user ---------------------------------------------------------------------------

    def sending(self, send_id: str, text: str, now: datetime) -> Entry:
        """We sent ``text`` as ``send_id``: a pending entry until the server answers."""
        entry = Entry(EntryKind.MESSAGE, text, now, self.name, own=True, state=SendState.PENDING)
        self.pending[send_id] = entry
        self._add(entry)
        self.changed()
        return entry

    def local(self, kind: EntryKind, text: str, now: datetime) -> None:
        """A line for the user (command output, local errors)."""
        self._add(Entry(kind, text, now))
        self.changed()

    def clear(self) -> None:
        self.scrollback.clear()
        self.pending.clear()
        self._first_unread = None
        self.changed()

    def look(self) -> None:
        """The user looks at the room now (entered it, or came back to the terminal).

        What arrived unread is marked: a "new messages" divider above the first of it, kept
        until the room is left.
        """
        self.viewed = True
        if self._first_unread is not None:
            self.scrollback.marker = self._first_unread
            self._first_unread = None
        self.unread = self.mentions = 0
        self.changed()

    def look_away(self, *, leaving: bool) -> None:
        """The user stops looking: left the room (``leaving``), or the terminal lost focus."""
        self.viewed = False
        if leaving:
            self.scrollback.marker = None
        self.changed()

    # --- who is here ------------------------------------------------------------------------

    @property
    def presence_version(self) -> int:
        """Remember this when asking the server who is here; pass it to members_listed."""
        return self._presence_version

    def members_listed(self, names: list[str], asked_at: int) -> None:
        """The server's member list, asked for when presence_version was ``asked_at``.

        Joins and leaves seen since then are newer than the list and win over it.
        """
        listed = set(names)
        for person in self.people.values():
            if person.changed <= asked_at:
                person.present = person.name in listed
        for name in names:
            if name not in self.people:
                self.people[name] = Person(name, present=True, changed=asked_at)
        self.member_source = MemberSource.SERVER
        self.changed()

    def members_unavailable(self) -> None:
        """The server has no member list: the panel shows who was seen here."""
        if self.member_source is not MemberSource.SERVER:
            self.member_source = MemberSource.SEEN
            self.changed()

    def members(self) -> list[str]:
        """Who is here: our name first, then everyone else by name."""
        others = sorted(
            p.name for p in self.people.values() if p.present and p.name not in self._own_names
        )
        return ([self.name] if self.name is not None else []) + others

    def completions(self, prefix: str) -> list[str]:
        """Names that ``prefix`` may be the start of, best first; never our own.

        Matches the whole name or the part after "user_" (names all start with it). People
        present come before those who left, the most recently active first.
        """
        wanted = prefix.lower().lstrip("@")
        if not wanted:
            return []
        found = [
            person
            for person in self.people.values()
            if person.name not in self._own_names
            and (
                person.name.lower().startswith(wanted)
                or person.name.lower().removeprefix(NAME_PREFIX).startswith(wanted)
            )
        ]
        found.sort(key=lambda p: (not p.present, -p.active, p.name))
        return [person.name for person in found]

    # --- internals ------------------------------------------------------------------------

    def _add(self, entry: Entry) -> None:
        self.scrollback.append(entry)

    def _saw(
        self, name: str, *, present: bool, presence: bool = False, spoke: bool = False
    ) -> None:
        """``name`` joined, left (``presence``: a join or leave notice) or spoke."""
        self._tick += 1
        person = self.people.get(name)
        if person is None:
            person = self.people[name] = Person(name, present)
        if presence:
            self._presence_version += 1
            person.changed = self._presence_version
        person.present = present
        if present and (spoke or presence):
            person.active = self._tick
