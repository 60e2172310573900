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

Only the newest entries are kept as :class:`Entry` objects (between :data:`HOT` and
:data:`HOT` + :data:`CHUNK` of them). Older ones are packed, :data:`CHUNK` at a time, into a
:class:`_Chunk`: their texts as one string, their numbers in arrays, their names and times as
tuples of shared objects: some 90 bytes an entry instead of some 250, no object per message.
An older entry that is read again (scrolled to, searched, the marker) is built from its chunk;
while anything holds it, reading it again gives that same object (entries are compared by
identity), and :meth:`Scrollback.touch` writes a change to it back into its chunk. An entry
held elsewhere when it is packed (the marker, a view's cache, a pending message's ack) stays
that object. Pending entries are never packed (they still change and move): packing waits for
them. What changes the order among packed entries (an insertion among them, a removal) makes
them objects again first: rare (a reconnect's recovery), and they are packed again as entries
arrive. :meth:`Scrollback.scan` reads entries once without keeping their identity (measuring,
searching), and :meth:`Scrollback.frozen` is what another thread may read.
"""

from __future__ import annotations

import itertools
import operator
import sys
import weakref
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime
from enum import StrEnum

DEFAULT_LIMIT = 10_000
# Entries packed at a time, and how many of the newest always stay objects: a few screens'
# worth, what is still changing, and what the log measures at its next sync.
CHUNK = 256
HOT = 256
_NO_OFFSET = -(2**63)  # a packed entry without an offset


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
_STATE_BITS = 12
_PENDING = _STATE_INDEX[SendState.PENDING]
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

    # __weakref__: a packed entry built again is the same object while anything holds it.
    __slots__ = ("__weakref__", "_bits", "offset", "sender", "text", "time")

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


def _held_elsewhere(batch: list[Entry], unheld: int) -> list[int]:
    """The positions in ``batch`` of the entries that something besides ``batch`` holds
    (``unheld``: the count ``sys.getrefcount`` gives here when nothing does)."""
    return [k for k, entry in enumerate(batch) if sys.getrefcount(entry) > unheld]


def _unheld_refcount() -> int:
    """What ``sys.getrefcount`` says in :func:`_held_elsewhere` of an entry only its list
    holds (measured, not assumed: it differs between interpreters)."""
    for unheld in range(1, 10):
        if not _held_elsewhere([Entry(EntryKind.NOTICE, "", datetime.min)], unheld):
            return unheld
    raise RuntimeError("cannot tell held entries from others")


_UNHELD = _unheld_refcount()
_TEXT, _SENDER, _TIME, _OFFSET, _BITS_OF = map(
    operator.attrgetter, ("text", "sender", "time", "offset", "_bits")
)
# The values of Entry._bits of a pending entry, and of a message from someone else.
_PENDING_BITS = frozenset(bits for bits in _BITS if bits & _STATE_BITS == _PENDING)
_OTHERS_BITS = frozenset(
    bits for bits in _BITS if _KINDS[bits & 3] is EntryKind.MESSAGE and not bits & _OWN
)


class _Alive:
    """Packed entries built again (or held when packed) by absolute index, while something
    holds them: weak references in a dict, the dead ones swept out now and then (a callback
    for each entry that dies would cost more than the sweeps)."""

    __slots__ = ("_refs", "_sweep_at")

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref[Entry]] = {}
        self._sweep_at = 64

    def get(self, index: int) -> Entry | None:
        ref = self._refs.get(index)
        return None if ref is None else ref()

    def put(self, index: int, entry: Entry) -> None:
        refs = self._refs
        refs[index] = weakref.ref(entry)
        if len(refs) >= self._sweep_at:
            self._refs = {i: r for i, r in refs.items() if r() is not None}
            self._sweep_at = max(64, 2 * len(self._refs))

    def pop(self, index: int) -> None:
        self._refs.pop(index, None)

    def items(self) -> list[tuple[int, Entry]]:
        return [(i, entry) for i, ref in self._refs.items() if (entry := ref()) is not None]

    def __bool__(self) -> bool:
        return bool(self._refs)


class _Chunk:
    """:data:`CHUNK` entries, none pending, packed (names are interned and datetimes shared
    per millisecond by the rooms, so the tuples only point at shared objects)."""

    __slots__ = ("bits", "cuts", "offsets", "senders", "text", "times")

    def __init__(self, entries: list[Entry], bits: list[int]) -> None:
        texts = list(map(_TEXT, entries))
        self.text = "".join(texts)
        self.cuts = array("I", itertools.accumulate(map(len, texts), initial=0))
        self.senders = tuple(map(_SENDER, entries))
        self.times = tuple(map(_TIME, entries))
        offsets = [_NO_OFFSET if offset is None else offset for offset in map(_OFFSET, entries)]
        try:
            self.offsets: array[int] | list[int] = array("q", offsets)
        except OverflowError:  # not a number a server gives; kept, if less compactly
            self.offsets = offsets
        self.bits = array("H", bits)

    def entry(self, k: int) -> Entry:
        entry = Entry.__new__(Entry)
        entry.text = self.text[self.cuts[k] : self.cuts[k + 1]]
        entry.time = self.times[k]
        entry.sender = self.senders[k]
        offset = self.offsets[k]
        entry.offset = None if offset == _NO_OFFSET else offset
        entry._bits = _BITS[self.bits[k]]
        return entry

    def offset(self, k: int) -> int | None:
        offset = self.offsets[k]
        return None if offset == _NO_OFFSET else offset

    def same(self, k: int, entry: Entry) -> bool:
        """``entry`` says what is packed at ``k``, apart from its flags and offset."""
        return (
            entry.sender is self.senders[k]
            and entry.time is self.times[k]
            and entry.text == self.text[self.cuts[k] : self.cuts[k + 1]]
        )


class Frozen:
    """The entries of a scrollback as they were when :meth:`Scrollback.frozen` was called,
    for another thread to read (newest first, with their absolute indexes). Entries built from
    chunks here are not the scrollback's: :meth:`Scrollback.held` gives the one to keep."""

    def __init__(self, scrollback: Scrollback) -> None:
        self.scrollback = scrollback
        self.generation = scrollback.generation
        self.first = scrollback.first_index
        self._chunks = tuple(scrollback._chunks)
        self._skip, self._cold = scrollback._skip, scrollback._cold
        self._hot = list(scrollback._entries)
        self._alive = dict(scrollback._alive.items())

    def newest_first(self) -> Iterator[tuple[int, Entry]]:
        first, cold = self.first, self._cold
        for back, entry in enumerate(reversed(self._hot), 1):
            yield first + cold + len(self._hot) - back, entry
        chunks, skip, size, alive = self._chunks, self._skip, CHUNK, self._alive
        for position in range(cold - 1, -1, -1):
            index = first + position
            entry = alive.get(index)
            if entry is None:
                at = skip + position
                entry = chunks[at // size].entry(at % size)
            yield index, entry


class Scrollback(Observable):
    """The entries of one room, oldest first, at most ``limit`` of them."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        super().__init__()
        if limit < 1:
            raise ValueError(f"scrollback limit must be at least 1, not {limit}")
        self.limit = limit
        # The older entries, packed (oldest first; the first ``_skip`` of the first chunk are
        # gone), then the newest as objects (``_entries``).
        self._chunks: deque[_Chunk] = deque()
        self._skip = 0
        self._cold = 0  # how many entries are packed
        self._entries: deque[Entry] = deque()
        # Packed entries built again (or held when packed) that are still alive, by absolute
        # index: reading one again gives the same object.
        self._alive = _Alive()
        self._pack_after = 0  # total_appended before which packing waits (for a pending one)
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
        if self._cold + len(self._entries) >= self.limit:
            self._drop_oldest()
        self._entries.append(entry)
        self.total_appended += 1
        if len(self._entries) >= HOT + CHUNK and self.total_appended >= self._pack_after:
            self._pack()
        self.changed()

    def _drop_oldest(self) -> None:
        if not self._cold:
            self._entries.popleft()
            return
        self._alive.pop(self.first_index)
        self._cold -= 1
        self._skip += 1
        if self._skip == CHUNK:
            self._chunks.popleft()
            self._skip = 0

    def _pack(self) -> None:
        """Pack the oldest :data:`CHUNK` objects, unless one of them is pending (it may still
        change and move): then look again a chunk later."""
        entries = self._entries
        first = self.first_index + self._cold  # the absolute index of the oldest object
        batch = [entries.popleft() for _ in range(CHUNK)]
        bits = list(map(_BITS_OF, batch))
        if not _PENDING_BITS.isdisjoint(bits):
            entries.extendleft(reversed(batch))
            self._pack_after = self.total_appended + CHUNK
            return
        alive = self._alive
        for k in _held_elsewhere(batch, _UNHELD):
            # Held elsewhere (the marker, a view's cache, a room's first unread): the same
            # object when read again.
            alive.put(first + k, batch[k])
        self._chunks.append(_Chunk(batch, bits))
        self._cold += CHUNK

    def _unpack(self) -> None:
        """Every entry an object again (before a change of order among the packed ones)."""
        if not self._cold:
            return
        cold = [self._packed(position) for position in range(self._cold)]
        self._entries.extendleft(reversed(cold))
        self._chunks.clear()
        self._skip = self._cold = 0
        self._alive = _Alive()

    def _built(self, position: int) -> Entry:
        """The packed entry at ``position`` (0 is the oldest held): the one alive, else a new
        object that is not kept track of."""
        entry = self._alive.get(self.first_index + position)
        if entry is None:
            at = self._skip + position
            entry = self._chunks[at // CHUNK].entry(at % CHUNK)
        return entry

    def _packed(self, position: int) -> Entry:
        """The packed entry at ``position``, the same object for as long as anything holds it."""
        index = self.first_index + position
        entry = self._alive.get(index)
        if entry is None:
            at = self._skip + position
            entry = self._chunks[at // CHUNK].entry(at % CHUNK)
            self._alive.put(index, entry)
        return entry

    def _packed_index(self, entry: Entry) -> int | None:
        """The absolute index of ``entry`` if it is a packed one (built, so kept track of)."""
        for index, candidate in self._alive.items():
            if candidate is entry:
                return index
        return None

    def _offset_at(self, position: int) -> int | None:
        if position >= self._cold:
            return self._entries[position - self._cold].offset
        at = self._skip + position
        return self._chunks[at // CHUNK].offset(at % CHUNK)

    def insert(self, entry: Entry) -> None:
        """Add an entry with an ``offset`` in offset order (history and recovery fill gaps).

        Entries without an offset stay where they are; the new one goes after the last entry
        whose offset is lower. Rare (once per reconnect), so the views measure everything again.
        """
        if len(self) == self.limit:
            self._drop_oldest()  # the oldest goes, as for an append
        position = self._position(entry)
        if position < self._cold:
            self._unpack()
        self._entries.insert(position - self._cold, entry)
        self.total_appended += 1
        self.generation += 1
        self.changed()

    def _position(self, entry: Entry) -> int:
        assert entry.offset is not None
        position = len(self)
        for index in range(len(self) - 1, -1, -1):
            offset = self._offset_at(index)
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
        clocks say. Other pending messages do not count: they follow it; nor do our later
        messages refused meanwhile and the server's errors (slow mode refuses the second of
        two sends at once while the first is on its way: the first stays first). True if it
        moved."""
        assert entry.offset is not None
        after = None  # the index it goes after
        for index in range(len(self) - 1, -1, -1):
            if index >= self._cold:
                candidate = self._entries[index - self._cold]
                if candidate is entry:
                    return False  # nothing after it came before it: it stays
                offset = candidate.offset
                pending = candidate.state is not SendState.SENT or candidate.kind is EntryKind.ERROR
            else:  # packed entries are not pending
                offset, pending = self._offset_at(index), False
            if offset is not None:
                if offset < entry.offset:
                    after = index
                    break
            elif not pending:
                after = index
                break
        if after is None:
            return False
        if not any(candidate is entry for candidate in self._entries):
            # Pushed out of the scrollback while pending (a flood of more than it keeps came
            # first): nothing to move, nothing to draw. (Pending entries are never packed.)
            return False
        if after < self._cold:
            self._unpack()
        entries = self._entries
        entries.remove(entry)  # it was before ``after``: that index moves down by one
        entries.insert(after - self._cold, entry)
        self.generation += 1
        self.changed()
        return True

    def remove(self, entry: Entry) -> None:
        """Take ``entry`` out (a pending message that turned out to be in the log already)."""
        if not any(candidate is entry for candidate in self._entries):
            if self._packed_index(entry) is None:
                return
            self._unpack()
        self._entries.remove(entry)
        self.total_appended -= 1  # as if it had never been appended: later indexes stay put
        self._changes.pop(entry, None)
        if self._marker is entry:
            self._marker = None
        self.generation += 1
        self.changed()

    def find_offset(self, offset: int) -> Entry | None:
        """The entry numbered ``offset``, looking back from the newest (where it nearly always
        is) until entries are numbered below it."""
        for index in range(len(self) - 1, -1, -1):
            candidate = self._offset_at(index)
            if candidate is None:
                continue
            if candidate == offset:
                return self[index]
            if candidate < offset:
                return None
        return None

    def forget_offsets(self) -> None:
        """The room's numbering started over (a new epoch): old numbers mean nothing now."""
        for entry in self._entries:
            entry.offset = None
        for chunk in self._chunks:
            chunk.offsets = array("q", [_NO_OFFSET]) * len(chunk.offsets)
        for _, entry in self._alive.items():
            entry.offset = None

    def touch(self, entry: Entry) -> None:
        """``entry`` changed in place (its send state, its text): views show it again."""
        index = self._packed_index(entry) if self._alive else None
        if index is not None:
            self._repack(entry, index - self.first_index)
        self._changes[entry] = None
        self.changed()

    def _repack(self, entry: Entry, position: int) -> None:
        """Write a packed entry's change into its chunk (what is packed is settled: only its
        flags and offset change in place, such as a recovered message found to be ours)."""
        at = self._skip + position
        chunk, k = self._chunks[at // CHUNK], at % CHUNK
        if not chunk.same(k, entry):
            self._unpack()  # not expected: an object again, as it was, changed
            return
        chunk.bits[k] = entry._bits
        chunk.offsets[k] = _NO_OFFSET if entry.offset is None else entry.offset

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
        self._chunks.clear()
        self._skip = self._cold = 0
        self._alive = _Alive()
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
        return self.total_appended - self._cold - len(self._entries)

    def index_of(self, entry: Entry) -> int | None:
        """Absolute index of ``entry`` (by identity); changed entries are nearly always recent."""
        for back, candidate in enumerate(reversed(self._entries), 1):
            if candidate is entry:
                return self.total_appended - back
        return self._packed_index(entry) if self._alive else None

    def scan(self, start: int = 0, *, newest_first: bool = False) -> Iterator[Entry]:
        """The entries from ``start`` (0 is the oldest held) on, or all of them newest first,
        to read once: a packed entry that nothing holds is built afresh each time, so keep
        none of these (index or iterate the scrollback for an entry to keep)."""
        cold = self._cold
        if newest_first:
            yield from reversed(self._entries)
            yield from map(self._built, range(cold - 1, -1, -1))
            return
        yield from map(self._built, range(start, cold))
        yield from itertools.islice(self._entries, max(start - cold, 0), None)

    def others_messages(self, start: int = 0) -> int:
        """How many of the entries from ``start`` (0 is the oldest held) on are messages from
        others (the log's count of what is unseen below the view), packed ones read from
        their chunks' flags."""
        count, cold = 0, self._cold
        at, end = self._skip + start, self._skip + cold
        others = _OTHERS_BITS.__contains__
        while at < end:
            k = at % CHUNK
            stop = min(CHUNK, k + end - at)
            count += sum(map(others, self._chunks[at // CHUNK].bits[k:stop]))
            at += stop - k
        for entry in itertools.islice(self._entries, max(start - cold, 0), None):
            count += entry.kind is EntryKind.MESSAGE and not entry.own
        return count

    def frozen(self) -> Frozen:
        """What another thread may read while this scrollback changes (see :class:`Frozen`)."""
        return Frozen(self)

    def held(self, frozen: Frozen, index: int, entry: Entry) -> Entry:
        """The entry to keep for ``entry``, read at absolute ``index`` of ``frozen`` (a view of
        this scrollback): this scrollback's own object while it holds that entry in the same
        order, else ``entry`` as it was."""
        position = index - self.first_index
        if frozen.generation != self.generation or not 0 <= position < len(self):
            return entry
        return self[position]

    @property
    def packed(self) -> int:
        """How many of the entries held are packed (the others are objects)."""
        return self._cold

    def __len__(self) -> int:
        return self._cold + len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return itertools.chain(map(self._packed, range(self._cold)), self._entries)

    def __reversed__(self) -> Iterator[Entry]:
        return itertools.chain(
            reversed(self._entries), map(self._packed, range(self._cold - 1, -1, -1))
        )

    def __getitem__(self, index: int) -> Entry:
        length = self._cold + len(self._entries)
        if index < 0:
            index += length
        if not 0 <= index < length:
            raise IndexError("scrollback index out of range")
        if index < self._cold:
            return self._packed(index)
        return self._entries[index - self._cold]

    def __repr__(self) -> str:
        return f"<Scrollback {len(self)}/{self.limit} entries, {self.total_appended} appended>"
