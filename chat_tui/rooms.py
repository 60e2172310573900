"""The rooms the client has joined, as plain data that the widgets observe (no Textual here).

A :class:`Room` holds everything the client knows about one room: its scrollback, the state of
its connection, our name there, unread messages and mentions, who is in it, the messages we
sent that are not confirmed yet, the lines sent and the draft. Every change goes through a
method here and ends with :meth:`Room.changed`, which calls the room's observers; the screen
observes rooms to redraw the sidebar, the status line and the members panel, and the message
log observes the shown room's scrollback. What the log says in the client's own words is
recorded as notes (``notes.py``), worded there.
"""

from __future__ import annotations

import functools
import heapq
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from chat_protocol.frames import Frame, FrameKind, Welcome
from chat_protocol.names import DIRECT_PREFIX, GENERATED_PREFIX
from chat_protocol.v2 import MAX_AWAY_CHARS, TYPING_SHOWN
from chat_tui import notes
from chat_tui.config import JoinFilter
from chat_tui.events import REFUSALS_KEPT
from chat_tui.notes import Note
from chat_tui.notify import Level
from chat_tui.scrollback import Entry, EntryKind, Observable, Scrollback, SendState

# Of a run of joins and leaves with nothing said between them, this many are shown one by one;
# the rest is one line counting them ("12 more joined, 11 left").
PRESENCE_SHOWN = 10
# What the logs on disk keep: what was said and what the server told (not the client's words).
RECORDED = frozenset({EntryKind.MESSAGE, EntryKind.NOTICE})
# The smart join filter: joins, leaves and renames of those who have not spoken for this long
# are hidden.
QUIET_AFTER = timedelta(minutes=10)
# Who a room remembers: those present and, of those who left, the most recently active, up to
# this many in all (a server could announce any number of names).
PEOPLE_LIMIT = 5000
FORGOTTEN_AT_ONCE = PEOPLE_LIMIT // 10
# Text kept and shown per entry, and of a sender's name: what is beyond is not kept.
TEXT_LIMIT = 16_384
NAME_LIMIT = 64
TYPISTS_KEPT = 20  # a hostile server's thousand typists cost no more than this
TYPING_TEXT_WIDTH = 36  # longer names are said by count: it must fit beside the room's state


def typing_text(names: list[str]) -> str:
    """The status line's "alice is typing…" for ``names`` (none: empty); by count when the
    names would not fit a narrow status line ("2 people are typing…")."""
    if not names:
        return ""
    if len(names) == 1:
        said = f"{names[0]} is typing…"
    elif len(names) == 2:
        said = f"{names[0]} and {names[1]} are typing…"
    else:
        return f"{len(names)} people are typing…"
    if len(said) <= TYPING_TEXT_WIDTH:
        return said
    return "someone is typing…" if len(names) == 1 else f"{len(names)} people are typing…"


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text``, or its start and how much of it is not kept."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} … ({len(text) - limit} more characters not shown)"


def clip_name(name: str) -> str:
    return name if len(name) <= NAME_LIMIT else name[: NAME_LIMIT - 1] + "…"


def mentions(name: str | tuple[str, ...], text: str) -> bool:
    """Whether ``text`` names ``name`` (or one of the words ``name`` is) as a word of its own
    (case-insensitive)."""
    words = (name,) if isinstance(name, str) else name
    return bool(words) and _mention_pattern(words).search(text) is not None


@functools.lru_cache(maxsize=64)
def mention_words(me: str, highlights: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The words that make a message a mention of ``me``: the name, the part of a generated
    name after ``user_`` (people write "hxcwzi55" for "user_hxcwzi55"), the highlight words."""
    words = [me]
    if me.startswith(GENERATED_PREFIX) and len(me) > len(GENERATED_PREFIX):
        words.append(me[len(GENERATED_PREFIX) :])
    words.extend(w for w in highlights if w.strip())
    return tuple(dict.fromkeys(words))


@functools.lru_cache(maxsize=64)
def _mention_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    either = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![\w])(?:{either})(?![\w])", re.IGNORECASE)


# The local zone's offset from UTC over one quarter hour (first second, end, offset): a zone's
# offset changes only on a quarter hour, and ``astimezone()`` asks the C library for the zone
# each time (several microseconds, two or three times a message in a flood).
_ZONE_SPAN = 900
_zone: tuple[float, float, timedelta | None] = (0.0, 0.0, None)
# The last time converted, and what it became: the server's times are in milliseconds, and a
# burst has many messages in one; their entries then share one datetime (48 bytes each).
_last: tuple[datetime, datetime] | None = None


def local_time(moment: datetime) -> datetime:
    """A server time (aware, UTC) as the log shows times: naive, in the local zone."""
    global _zone, _last
    if moment.tzinfo is None:
        return moment
    last = _last
    if last is not None and last[0] == moment:
        return last[1]
    second = moment.timestamp()
    start, end, offset = _zone
    if not start <= second < end or offset is None:
        local = moment.astimezone()
        start = second - second % _ZONE_SPAN
        _zone = (start, start + _ZONE_SPAN, local.utcoffset())
        shown = local.replace(tzinfo=None)
    else:
        shown = (moment + offset).replace(tzinfo=None)
    _last = (moment, shown)
    return shown


def countdown(seconds: float) -> str:
    """A wait as a live countdown shows it: whole seconds, rounded up ("retrying in 7 s")."""
    return f"{max(math.ceil(seconds), 0)} s"


class RoomState(StrEnum):
    """Where the room's connection is, as the user sees it."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    OFFLINE = "offline"  # lost; retried with backoff
    FAILED = "failed"  # refused by the server; retried after a long pause, or when asked
    CLOSED = "closed"  # we left


DOWN = (RoomState.OFFLINE, RoomState.FAILED)


class MemberSource(StrEnum):
    UNKNOWN = "unknown"  # not asked yet
    SERVER = "server"  # the server's list (GET /rooms/{room}), kept current from notices
    SEEN = "seen"  # the server has no list: the names seen here, kept current from notices
    CONVERSATION = "conversation"  # two people: us and the one it is with


@dataclass(slots=True)
class Person:
    """Someone seen in a room."""

    name: str
    present: bool
    active: int = 0  # when they last joined or spoke (a counter: higher is later)
    away: str | None = None  # their away message while away (chat.v2)
    changed: int = 0  # the room's presence version when their presence last changed
    spoke: datetime | None = None  # when they last said something here (local time)

    def said_something(self, at: datetime) -> None:
        """They said something at ``at`` (kept if later than what was known)."""
        if self.spoke is None or at > self.spoke:
            self.spoke = at


@dataclass(eq=False)
class Room(Observable):
    """One joined room."""

    name: str  # the room's
    scrollback_limit: int
    scrollback: Scrollback = field(init=False)
    state: RoomState = RoomState.CONNECTING
    detail: str = ""
    retry_at: float | None = None  # time.monotonic() of the next attempt, while waiting
    me: str | None = None  # our name here
    unread: int = 0  # messages not looked at
    mentions: int = 0  # of those, the ones that mention us
    sent_lines: list[str] = field(default_factory=list)  # lines sent, oldest first
    draft: str = ""
    cursor: int = 0
    people: dict[str, Person] = field(default_factory=dict)
    member_source: MemberSource = MemberSource.UNKNOWN
    pending: dict[str, Entry] = field(default_factory=dict)  # send id -> our entry
    # The last line saying a frame could not be read, and what it says (counted on in a run).
    _unreadable_run: tuple[Entry, notes.Unreadable] | None = field(default=None, repr=False)
    # The last REFUSALS_KEPT sends marked refused (send id -> entry): one may come back.
    _refused: dict[str, Entry] = field(default_factory=dict, repr=False)
    ever_connected: bool = False
    lost: bool = False  # a "connection lost" marker is in the log; cleared on reconnect
    lost_at: datetime | None = None  # when the connection was lost (for the gap marker)
    epoch: str | None = None  # chat.v2: the numbering the entries' offsets belong to
    newest: int = 0  # chat.v2: the newest message offset here (of ``epoch``)
    read_reported: int = 0  # chat.v2: the offset last said to be read (to the server)
    viewed: bool = False  # in the log, and the terminal has focus
    topic: str | None = None  # the room's, as the server last said it
    max_chars: int | None = None  # the longest message the server takes, as it announced
    lag_since: float | None = None  # monotonic time of a ping the server has not answered
    highlights: tuple[str, ...] = ()  # words that count as mentions besides our name
    # The newest unread message that calls for a notification (a mention, or any message
    # where the room notifies of all), until the controller takes it.
    alert: Entry | None = None
    notify: Level = Level.MENTIONS  # what here calls for a notification
    joins: JoinFilter = JoinFilter.SMART  # which joins, leaves and renames are shown
    # Called with each entry once it is what the room said (logs on disk): others' messages
    # and notices as they come, ours once the server has them; not history, not our words.
    record: Callable[[Room, Entry], None] | None = None

    @property
    def direct(self) -> bool:
        """A conversation with one person ("@alice"), not a room."""
        return self.name.startswith(DIRECT_PREFIX)

    def __post_init__(self) -> None:
        Observable.__init__(self)
        self.scrollback = Scrollback(self.scrollback_limit)
        self._announce_reconnect = False  # say "reconnected" once we know our new name
        # Lines about the join under way, said right after its history and "joined" line
        # (said before, they would end up above the history, out of sight).
        self._with_join: list[tuple[EntryKind, str]] = []
        self._own_names: set[str] = set()  # every name we had here
        self._first_unread: Entry | None = None
        self._tick = 0
        self._presence_version = 0
        # The run of joins and leaves at the end of the log (see PRESENCE_SHOWN).
        self._run_tail: Entry | None = None
        self._run_shown = 0
        self._run_more: tuple[int, int] = (0, 0)
        # chat.v2: who said they are typing, and when (monotonic); at most TYPISTS_KEPT.
        self._typing: dict[str, float] = {}

    # --- who is typing ----------------------------------------------------------------------

    def away_changed(self, name: str, message: str | None, when: datetime) -> None:
        """``name`` is away (``message``, may be empty) or back (``None``)."""
        name = clip_name(name)
        if message is not None:
            message = clip(message, MAX_AWAY_CHARS)  # a server may send more
        person = self.people.get(name)
        if person is not None:
            person.away = message
        said = notes.AwayChanged(name, message, name == self.me).text
        # Under the smart filter as joins are: someone idle who never speaks is away and back
        # every few minutes, in every room (the members panel still shows who is away). Not
        # in a conversation: there it is the answer to what we wrote.
        quiet = not self.direct and self.quiet(name, when)
        self._add(Entry(EntryKind.NOTICE, said, when, quiet=quiet))
        self.changed()

    def away_of(self) -> dict[str, str]:
        """Who here is away, with their messages (in a conversation, the other whether or not
        they are connected to it)."""
        direct = self.direct
        return {
            p.name: p.away
            for p in self.people.values()
            if (p.present or direct) and p.away is not None
        }

    def peer_away(self, name: str, message: str | None) -> None:
        """A conversation: its person is away (``message``) or back, as a room we share with
        them says; the members panel shows it (the log says it where it was said)."""
        person = self.people.get(clip_name(name))
        if person is None or person.away == message:
            return
        person.away = None if message is None else clip(message, MAX_AWAY_CHARS)
        self.changed()

    @property
    def me_away(self) -> bool:
        me = self.people.get(self.me) if self.me is not None else None
        return me is not None and me.away is not None

    def typing_seen(self, name: str, at: float) -> None:
        """``name`` said it is typing here (at ``at``, monotonic)."""
        if name == self.me:
            return
        typing = self._typing
        typing.pop(name, None)
        typing[name] = at  # the newest last
        while len(typing) > TYPISTS_KEPT:
            del typing[next(iter(typing))]
        self.changed()

    def typists(self, now: float) -> list[str]:
        """Who is typing now (said so within TYPING_SHOWN seconds, and said nothing since),
        the earliest first."""
        typing = self._typing
        for name in [n for n, at in typing.items() if now - at >= TYPING_SHOWN]:
            del typing[name]
        return list(typing)

    # --- the connection ---------------------------------------------------------------------

    def connection_changed(
        self,
        state: RoomState,
        detail: str,
        retry_in: float | None,
        now: datetime,
        monotonic: float,
    ) -> None:
        self.state, self.detail = state, detail
        self.lag_since = None  # a new connection, or none: no lag to speak of
        waiting = retry_in is not None and state in DOWN
        self.retry_at = monotonic + retry_in if waiting and retry_in is not None else None
        if state is RoomState.CONNECTED:
            if self.lost:
                self.lost = False
                self._announce_reconnect = True
                # Who is here is not known any more: the list is fetched again, and notices
                # and messages bring people back meanwhile.
                for person in self.people.values():
                    person.present = False
            self.ever_connected = True
        elif state is RoomState.OFFLINE:
            if not self.lost:
                # The first failure is the gap marker; later retries only update the status.
                self.lost = True
                self.lost_at = now
                self._note(notes.Lost(detail, retry_in, self.ever_connected), now)
        elif state is RoomState.FAILED:
            if not self.lost:
                self.lost_at = now
            self.lost = True
            self._note(notes.Refused(self.name, detail, retry_in), now, EntryKind.ERROR)
            self._say_with_join(now)  # no join follows: said now rather than never
        self.changed()

    def with_join(self, kind: EntryKind, text: str) -> None:
        """A line about the join under way (why we are not who we asked to be): said after
        its history and "joined" line, where it is seen."""
        self._with_join.append((kind, clip(text)))

    def _say_with_join(self, now: datetime) -> None:
        said, self._with_join = self._with_join, []
        for kind, text in said:
            self._add(Entry(kind, text, now))

    def name_assigned(self, name: str, now: datetime) -> None:
        self.me = name
        self._own_names.add(name)
        self._saw(name, present=True)
        if self._announce_reconnect:
            self._announce_reconnect = False
            self._note(notes.Reconnected(name), now)
        else:
            self._note(notes.Joined(self.name, name), now)
        self._say_with_join(now)
        self.scrollback.restyle()  # what the log picks out as ours depends on the name
        self.changed()

    def welcomed(
        self, welcome: Welcome, backlog: Iterable[Frame], since: int | None, now: datetime
    ) -> bool:
        """chat.v2: in the room as ``welcome.name``, with the history or recovered messages
        that came with it; True if one of them is unread and mentions us.

        A first join (``since`` None): the history, dimmed, then the "joined" line. A
        reconnect that recovered everything: the missed messages in place, then only
        "reconnected". One that did not: a marker saying which time may be missing, the
        history (what we do not have of it), then "reconnected".
        """
        name = welcome.name
        renamed = name != self.me
        self.me = name
        self.topic = None if welcome.topic is None else clip(welcome.topic)
        self.max_chars = welcome.max_chars
        self._own_names.add(name)
        self._saw(name, present=True)
        self._announce_reconnect = False
        same_epoch = welcome.epoch == self.epoch
        if not same_epoch:
            if self.epoch is not None:
                self.scrollback.forget_offsets()
            self.epoch = welcome.epoch
            self.newest = self.read_reported = 0
        read = welcome.read if since is None else None  # where we stopped, another time
        if read is None and since is None and self.direct:
            read = 0  # a conversation nothing was read of: all that was said to us is unread
        if read is not None:
            self.read_reported = max(self.read_reported, read)
        first_unread: Entry | None = None
        mention = False
        if since is None or not welcome.recovered:
            if since is not None:
                self._note(notes.Gap(self.lost_at or now, now), now, EntryKind.ERROR)
            for frame in backlog:
                if same_epoch and frame.offset is not None and self.has_offset(frame.offset):
                    continue  # we have it: only what we missed is added
                entry = self._message(frame, now, from_history=True, backlog=True)
                if same_epoch and entry.offset is not None:
                    self.scrollback.insert(entry)  # around what we have of the same numbering
                else:
                    self._add(entry)
                if since is not None and self.record is not None:
                    self.record(self, entry)  # missed in a gap: new to us, so logged
                if since is not None:
                    # After a gap, newer than all we saw: unread, though not recovered.
                    mention = self._unread(entry) or mention
                elif read is not None and (entry.offset or 0) > read and not entry.own:
                    # Said after we last read here (another run of the app, or to us while
                    # we had no connection here): unread, and new to the logs.
                    first_unread = first_unread or entry
                    mention = self._unread(entry) or mention
                    if self.record is not None:
                        self.record(self, entry)
                if frame.name is not None:
                    self._spoke_before(frame.name, entry.time)
            if since is None:
                note: Note = notes.Joined(self.name, name)
            else:
                note = notes.Reconnected(name if renamed else None)
        else:
            for frame in backlog:
                if frame.offset is not None and self.has_offset(frame.offset):
                    continue
                entry = self._message(frame, now, backlog=True)
                self.scrollback.insert(entry)
                self._record(entry)
                mention = self._unread(entry) or mention
                if frame.name is not None:
                    self._saw(frame.name, present=True, spoke=True, at=entry.time)
            note = notes.Reconnected(name if renamed else None)
        self._note(note, now)
        self._say_with_join(now)
        if first_unread is not None and self.viewed:
            self.scrollback.marker = first_unread  # looked at now: the divider shows at once
        if renamed:
            self.scrollback.restyle()
        self.changed()
        return mention

    def unreported_read(self) -> int | None:
        """The newest offset here, if the user has seen it (the caller knows) and the server
        has not been told yet."""
        if self.epoch is None or self.newest <= self.read_reported:
            return None
        self.read_reported = self.newest
        return self.newest

    def has_offset(self, offset: int) -> bool:
        return self.scrollback.find_offset(offset) is not None

    def acked(self, send_id: str, text: str, offset: int, time: datetime) -> None:
        """chat.v2: our message ``send_id`` is message ``offset`` of the room."""
        entry = self.pending.pop(send_id, None)
        if entry is None:
            return
        scrollback = self.scrollback
        known = scrollback.find_offset(offset)
        if known is not None and known.text == text and known.sender in (self.me, entry.sender):
            # Published before a reconnect, and already in the log from the recovery: one copy.
            known.own = True
            scrollback.remove(entry)
            scrollback.touch(known)
            self.changed()
            return
        entry.text = text
        entry.sender = self.me
        entry.state = SendState.SENT
        entry.time = local_time(time)
        self._record(entry)
        if known is not None:
            # Someone else's message has that offset: the ack is wrong (a broken or hostile
            # server). Both stay, ours where it was, out of the room's numbering.
            scrollback.touch(entry)
        else:
            entry.offset = offset
            # The newest here is ours: read up to it, too (a name changed since would not
            # make it ours in the history of the next start, and it would count as unread).
            self.newest = max(self.newest, offset)
            if not scrollback.settle(entry):  # in its place already: redrawn where it is
                scrollback.touch(entry)
        self.changed()

    def frame(self, frame: Frame, now: datetime) -> bool:
        """A frame that is not our echo; True if it is a message that mentions us."""
        if self._announce_reconnect:
            # A server that does not send our join notice first: no name to show.
            self._announce_reconnect = False
            self._note(notes.Reconnected(), now)
        kind = frame.kind
        mention = False
        when = local_time(frame.time) if frame.time is not None else now
        if kind is FrameKind.MESSAGE:
            entry = self._message(frame, now)
            self._add(entry)
            if frame.name is not None:
                self._saw(frame.name, present=True, spoke=True, at=entry.time)
                if self._typing:
                    self._typing.pop(frame.name, None)  # said it: no longer typing
            mention = self._unread(entry)
        elif kind is FrameKind.ERROR:
            self._note(notes.ServerError(clip(frame.text)), when, EntryKind.ERROR)
        elif kind is FrameKind.NICK and frame.name is not None:
            self.nick_changed(frame.name, frame.text, when)
            return False
        elif kind is FrameKind.TOPIC:
            self.topic = clip(frame.text) or None
            self._note(notes.TopicChanged(self.topic), when, EntryKind.NOTICE)
        elif kind is FrameKind.KICK and frame.name is not None:
            name = clip_name(frame.name)
            self._typing.pop(name, None)
            self._saw(name, present=False, presence=True)
            self._note(notes.Kicked(name, clip(frame.text)), when, EntryKind.NOTICE)
        elif frame.name is not None:  # joins and leaves
            self._presence(frame, when)
        else:
            self._add(Entry(EntryKind.NOTICE, clip(frame.text), when))
        self.changed()
        return mention

    def conversation_with(self, peer: str, me: str | None) -> None:
        """A conversation: nobody lists its members (it is the two of us), and until its
        welcome we are who we are elsewhere."""
        self.member_source = MemberSource.CONVERSATION
        self.people.setdefault(peer, Person(peer, present=False))
        if self.me is None and me is not None:
            self.me = me
            self._own_names.add(me)
        self.changed()

    def nick_changed(self, old: str, new: str, when: datetime) -> None:
        """``old`` is known as ``new`` from now on (in every room; maybe us)."""
        old, new = clip_name(old), clip_name(new)
        if old not in self.people and new in self.people and old != self.me:
            return  # already told (a conversation hears it from a room too)
        self._typing.pop(old, None)
        quiet = self.quiet(old, when)
        person = self.people.pop(old, None)
        if person is not None:
            person.name = new
            self._presence_version += 1
            person.changed = self._presence_version
            self.people[new] = person
        else:
            self._saw(new, present=True, presence=True)
        ours = old == self.me
        if ours:
            self.me = new
            self._own_names.add(new)
            self.scrollback.restyle()  # what the log picks out as ours depends on the name
        said = notes.NickChanged(old, new, ours).text
        # The server's notice, logged as the room's (it was said on screen only).
        self._add(Entry(EntryKind.NOTICE, said, when, quiet=quiet))
        self.changed()

    def name_refused(self, asked: str, reason: str, now: datetime) -> None:
        """The server would not give us the name we asked for (said with the join that
        follows, under another name)."""
        self.with_join(EntryKind.ERROR, notes.NameNotTaken(asked, clip(reason)).text)

    def unreadable(self, size: int, start: str, now: datetime) -> None:
        """The server sent a frame this client cannot read: said once for a run of them (a
        hostile server's 20,000 were 20,000 lines, each laid out and logged)."""
        run = self._unreadable_run
        if run is not None and len(self.scrollback) and self.scrollback[-1] is run[0]:
            entry, first = run[0], run[1]
            self._unreadable_run = entry, replace(first, count=first.count + 1)
            entry.text, entry.time = self._unreadable_run[1].text, now
            self.scrollback.touch(entry)
        else:
            note = notes.Unreadable(size, start)
            entry = Entry(EntryKind.ERROR, note.text, now)
            self._unreadable_run = entry, note
            self._add(entry)
        self.changed()

    def quiet(self, name: str, when: datetime) -> bool:
        """Whether a join, leave or rename of ``name`` at ``when`` is hidden (the smart filter:
        they have not spoken in the last :data:`QUIET_AFTER`; our own always shows)."""
        if self.joins is JoinFilter.ALL or name in self._own_names:
            return False
        if self.joins is JoinFilter.NONE:
            return True
        person = self.people.get(name)
        spoke = person.spoke if person is not None else None
        return spoke is None or when - spoke > QUIET_AFTER

    def lagging(self, since: float | None) -> None:
        """The server has not answered since ``since`` (None: it answers again)."""
        self.lag_since = since
        self.changed()

    def show_quiet(self, shown: bool) -> None:
        """Show (or hide again) the joins, leaves and renames the filter hides, here."""
        self.scrollback.hide_quiet = not shown
        self.scrollback.restyle()
        self.changed()

    def _presence(self, frame: Frame, when: datetime) -> None:
        """A join or leave: in the log one by one, unless it is part of a long run of them
        (a churning member must not push what was said out of the scrollback)."""
        assert frame.name is not None
        if self._typing:
            self._typing.pop(frame.name, None)  # gone: no longer typing
        joined = frame.kind is FrameKind.JOIN
        quiet = self.quiet(frame.name, when)
        if joined and frame.name == self.me and self.joins is not JoinFilter.ALL:
            quiet = True  # the text protocol's own join notice: "joined ROOM as NAME" says it
        self._saw(frame.name, present=joined, presence=True)
        scrollback = self.scrollback
        tail = self._run_tail
        if tail is None or not len(scrollback) or scrollback[-1] is not tail:
            self._run_shown, self._run_more = 0, (0, 0)  # something else came between
        if self._run_shown < PRESENCE_SHOWN:
            self._run_shown += 1
            self._run_tail = Entry(EntryKind.NOTICE, clip(frame.text), when, quiet=quiet)
            self._add(self._run_tail)
            return
        more_joined, more_left = self._run_more
        self._run_more = (more_joined + joined, more_left + (not joined))
        text = notes.MorePresence(*self._run_more).text
        # The log on disk has each of them (a folded line written once kept its first count:
        # "1 more joined" for eleven).
        self._record(Entry(EntryKind.NOTICE, clip(frame.text), when, quiet=quiet))
        if self._run_more in ((1, 0), (0, 1)):
            self._run_tail = Entry(EntryKind.NOTICE, text, when, quiet=quiet)
            self.scrollback.append(self._run_tail)
        else:
            assert self._run_tail is not None
            tail = self._run_tail
            tail.text, tail.time, tail.quiet = text, when, tail.quiet and quiet
            scrollback.touch(tail)

    def _message(
        self, frame: Frame, now: datetime, *, from_history: bool = False, backlog: bool = False
    ) -> Entry:
        """``backlog``: it came with a welcome (history or recovery), so it may be from
        another day and then shows the date; a live message is said now."""
        name = None if frame.name is None else clip_name(frame.name)
        offset = frame.offset
        if offset is not None and offset > self.newest:
            self.newest = offset
        own = name is not None and name == self.me
        # In a conversation every message is for us.
        me = self.me
        named = me is not None and mentions(mention_words(me, self.highlights), frame.text)
        mention = not own and (self.direct or named)
        when = local_time(frame.time) if frame.time is not None else now
        return Entry(
            EntryKind.MESSAGE,
            clip(frame.text),
            when,
            name,
            own=own,
            mention=mention,
            offset=frame.offset,
            from_history=from_history,
            dated=backlog and when.date() != now.date(),
        )

    def _unread(self, entry: Entry) -> bool:
        """Count ``entry`` as unread if it is; True if it is and mentions us."""
        if self.viewed or entry.own:
            return False
        self.unread += 1
        self.mentions += entry.mention
        if self._first_unread is None:
            self._first_unread = entry
        if self.notify is Level.ALL or (entry.mention and self.notify is Level.MENTIONS):
            self.alert = entry
        return entry.mention

    def echo(self, send_id: str, frame: Frame) -> None:
        """Our message came back: its pending entry shows what the room saw, as sent (also
        one taken as refused: the text protocol's errors name no message)."""
        entry = self.pending.pop(send_id, None) or self._refused.pop(send_id, None)
        if entry is None:
            return  # cleared from the log meanwhile (/clear)
        # What the room saw (the server sanitises) and under which name (it may have changed).
        entry.text = frame.text
        entry.sender = frame.name
        entry.state = SendState.SENT
        self._record(entry)
        self.scrollback.touch(entry)
        self.changed()

    def refused(self, send_id: str) -> None:
        entry = self.pending.pop(send_id, None)
        if entry is None:
            return
        self._refused[send_id] = entry
        while len(self._refused) > REFUSALS_KEPT:
            del self._refused[next(iter(self._refused))]
        entry.state = SendState.REFUSED
        self.scrollback.touch(entry)
        self.changed()

    def refuse_pending(self) -> int:
        """Everything pending is not going to be sent (a conversation with nobody): marked
        refused; how many there were."""
        count = len(self.pending)
        for send_id in list(self.pending):
            self.refused(send_id)
        return count

    # --- the user ---------------------------------------------------------------------------

    def sending(self, send_id: str, text: str, now: datetime) -> Entry:
        """We sent ``text`` as ``send_id``: a pending entry until the server answers."""
        entry = Entry(EntryKind.MESSAGE, text, now, self.me, own=True, state=SendState.PENDING)
        self.pending[send_id] = entry
        self._add(entry)
        self.changed()
        return entry

    def local(self, kind: EntryKind, text: str, now: datetime) -> None:
        """A line for the user (command output, local errors), worded where it arose."""
        self._note(notes.Said(clip(text)), now, kind)
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
        first = self._first_unread
        if first is not None:
            scrollback = self.scrollback
            if len(scrollback) and scrollback.index_of(first) is None:
                # More came than the scrollback keeps: the oldest kept is the first unread
                # there is to show (not the newest, with the rest skipped unseen).
                first = scrollback[0]
            scrollback.marker = first
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

    def members_listed(
        self, names: list[str], asked_at: int, away: dict[str, str] | None = None
    ) -> None:
        """The server's member list, asked for when presence_version was ``asked_at``, and
        the away messages of those who are away.

        Joins and leaves seen since then are newer than the list and win over it.
        """
        names = [clip_name(name) for name in names[:PEOPLE_LIMIT]]
        listed = set(names)
        for person in self.people.values():
            if person.changed <= asked_at:
                person.present = person.name in listed
        for name in names:
            if name not in self.people:
                self._person(name, present=True).changed = asked_at
        for name, message in (away or {}).items():
            person = self.people.get(clip_name(name))
            if person is not None and person.changed <= asked_at:
                person.away = message
        self.member_source = MemberSource.SERVER
        self.changed()

    def members_unavailable(self) -> None:
        """The server has no member list: the panel shows who was seen here."""
        if self.member_source is MemberSource.UNKNOWN or self.member_source is MemberSource.SEEN:
            self.member_source = MemberSource.SEEN
            self.changed()

    def members(self) -> list[str]:
        """Who is here: our name first, then everyone else by name (in a conversation: the one
        it is with, here or not)."""
        if self.direct:
            return [name for name in (self.me, self.name[len(DIRECT_PREFIX) :]) if name]
        others = sorted(
            p.name for p in self.people.values() if p.present and p.name not in self._own_names
        )
        return ([self.me] if self.me is not None else []) + others

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
                or person.name.lower().removeprefix(GENERATED_PREFIX).startswith(wanted)
            )
        ]
        found.sort(key=lambda p: (not p.present, -p.active, p.name))
        return [person.name for person in found]

    # --- internals ------------------------------------------------------------------------

    def _add(self, entry: Entry) -> None:
        self.scrollback.append(entry)
        if self.record is not None and entry.state is SendState.SENT:
            self._record(entry)

    def _record(self, entry: Entry) -> None:
        if self.record is not None and not entry.from_history and entry.kind in RECORDED:
            self.record(self, entry)

    def _forget_someone(self) -> None:
        """Make room for more people: the least recently active who left, else of all. A
        tenth of the limit at once, so that a churn of new names costs one walk of the
        people per FORGOTTEN_AT_ONCE of them, not one each."""
        people = self.people.values()
        gone = [p for p in people if not p.present and p.name not in self._own_names]
        candidates = gone or [p for p in people if p.name not in self._own_names]
        oldest = heapq.nsmallest(FORGOTTEN_AT_ONCE, candidates, key=lambda p: (p.active, p.changed))
        for person in oldest:
            del self.people[person.name]

    def _note(self, note: Note, now: datetime, kind: EntryKind = EntryKind.STATUS) -> None:
        self._add(Entry(kind, note.text, now))

    def _spoke_before(self, name: str, at: datetime) -> None:
        """``name`` spoke at ``at``, as history says: known for completion, and to the smart
        filter as someone who spoke then; whether they are here is not history's to say."""
        self._person(name, present=False).said_something(at)

    def _person(self, name: str, present: bool) -> Person:
        """``name``'s entry, added (as ``present``) if new, within PEOPLE_LIMIT."""
        person = self.people.get(name)
        if person is None:
            if len(self.people) >= PEOPLE_LIMIT:
                self._forget_someone()
            person = self.people[name] = Person(name, present)
        return person

    def _saw(
        self,
        name: str,
        *,
        present: bool,
        presence: bool = False,
        spoke: bool = False,
        at: datetime | None = None,
    ) -> None:
        """``name`` joined, left (``presence``: a join or leave notice) or spoke (``at``)."""
        self._tick += 1
        person = self._person(name, present)
        if presence:
            self._presence_version += 1
            person.changed = self._presence_version
        person.present = present
        if present and (spoke or presence):
            person.active = self._tick
        if spoke and at is not None:
            person.said_something(at)
