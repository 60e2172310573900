"""``sqlite://``: one process, as ``memory://``, with everything worth keeping on disk.

The rooms live in memory as with ``memory://`` (this backend is the memory backend), except
their history: memory keeps each room's newest WINDOW messages (its window), the database all
of it (``--history-size``, the bounds in bytes), and a client asking for more than the window
(history, recovery) gets the older messages read from disk, in a thread of their own, served
as if they were in memory (SqliteHistory). What a restart must not forget is written to an
SQLite database: each room's epoch, offset and history with the nonces of its messages, the
names with their resume-token digests, reservations and away messages, read positions, who
wrote to whom, and the operators' rules (bans, mutes, room settings). Presence is not kept:
after a restart every connection is new.

Writes are grouped: whatever was published while the last transaction was written is the next
one, written by one thread of its own (``sqlite3`` lets go of the GIL while it writes). An
event is delivered to the room's members, and a message acknowledged to its sender, only once
its transaction is committed: what anyone saw or was told is on disk, so after a crash
(SIGKILL) the room goes on with the same epoch and offsets and a reconnecting client recovers
exactly. The database runs in WAL mode with ``synchronous=NORMAL``: a commit
survives the process being killed; a power cut can lose the last transactions (up to the last
checkpoint's worth), and then a client may hold offsets the room numbers again: see
docs/scaling.md.

The file: ``sqlite:///path/to/chat.db``, or ``sqlite://`` for ``chat-PORT.db`` in the user's
state directory (``~/.local/state/chat-server/`` on Linux). One server at a time: the file is
locked while a server has it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import gc
import json
import logging
import os
import queue
import sqlite3
import sys
import threading
import time
from array import array
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from itertools import islice
from operator import attrgetter
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from chat_protocol.names import name_key
from chat_server.backends.base import (
    DEDUP_PER_ROOM,
    BrokerStatus,
    BrokerUnavailable,
    Publishing,
    Rule,
    RuleKind,
)
from chat_server.backends.memory import (
    MESSAGE_OVERHEAD,
    MemoryBackend,
    MemoryChannels,
    MemoryHistory,
    MemoryRegistry,
    _Name,
    _Published,
    _remember,
    _Room,
    _size,
    _State,
)
from chat_server.events import EventKind, StoredMessage
from chat_server.ops.daemon import state_dir
from chat_server.ops.settings import Settings

log = logging.getLogger("chat_server.sqlite")
_MESSAGE = EventKind.MESSAGE

DEFAULT_FILE: Final = "chat-{port}.db"
# 2: history appended in write order (table said), trimmed by sweeps; 3: a name's away message.
# A database of schema 1 (table chunks, one region per room) or 2 is converted at its first
# start.
SCHEMA_VERSION: Final = 3
# Stopping: how long the last changes may take to be written.
CLOSE_WAIT: Final = 5.0
# After a write failed, how long until the same batch is tried again.
RETRY_EVERY: Final = 1.0
# Events gathered for one transaction beyond which a message's publish waits for it (the
# sessions' publish windows then hold their readers back: the disk sets the pace).
BACKLOG: Final = 5000
# How often (in a room's messages) where its history on disk begins moves up to where its history
# begins (--history-size, the bounds in bytes). History is written in chunks, the messages of one
# room in one transaction as one row (_chunk), appended in the order written: a transaction dirties
# the few pages at the table's end, not a page in each room's region of a table ordered by room (70
# pages of 4 KiB a transaction in 50 rooms, each copied again by the checkpoint). What no room keeps
# any more is deleted by a sweep, one pass over the table, once it has grown to twice what the last
# sweep left (and at least SWEEP_ROWS): at most two rows read per row written, and the file holds at
# most about twice what the rooms keep. A pass goes SWEEP_SLICE rows after each transaction, so that
# no commit waits long for one.
TRIM_EVERY: Final = 256
SWEEP_ROWS: Final = 4096
SWEEP_SLICE: Final = 4096
# The collector's first threshold while the broker runs (the default is 700). A batch holds
# its events, hundreds of objects, across its commit: with the default, nearly every batch set
# off a collection that went through them (and the next passed them on to the older
# generations), 8 % of the loop's CPU on the rooms benchmark, under 0.5 % with memory://,
# whose events are let go of as soon as delivered. Objects in cycles are collected that much
# later: a few MB at most.
GC_THRESHOLD: Final = 20_000
# Messages of each room kept in memory (the window): the newest; the rest of its history
# (--history-size) is read from the database when asked for. chat-tui asks for 50 on joining,
# and a reconnect after a short outage misses a few dozen at most: those are served from
# memory, and memory follows the number of rooms, not --history-size.
WINDOW: Final = 100
# The window is restored every SPILL messages of a room: up to SPILL messages past it stay in
# memory until they are let go together (one call for SPILL messages, not one for each).
SPILL: Final = 32
# Messages beyond --history-size (at most a 16th of it) before the oldest are let go, in one
# go rather than one at each message (a session never asks for more than --history-size).
SLACK: Final = 64
# What one turn of the loop delivers of a written batch at most, as a share of --send-buffer
# (characters of text): a batch gathered under load can hold megabytes, and a sender's own
# echoes would all land in its member's queue in one turn, before any of it could go to its
# socket: a client that reads as fast as it can, taken for a slow consumer. The sockets are
# written between slices (the members' flush is due before the next slice).
DELIVER_SLICE_SHARE: Final = 4

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (
    room TEXT PRIMARY KEY, epoch TEXT NOT NULL, offset INTEGER NOT NULL, touched REAL NOT NULL,
    kept INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS said (
    id INTEGER PRIMARY KEY, room TEXT NOT NULL, epoch TEXT NOT NULL, first INTEGER NOT NULL,
    last INTEGER NOT NULL, messages TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS names (
    key TEXT PRIMARY KEY, shown TEXT NOT NULL, digest TEXT, expires REAL NOT NULL,
    forward TEXT, away TEXT
);
CREATE TABLE IF NOT EXISTS reads (
    token TEXT NOT NULL, room TEXT NOT NULL, epoch TEXT NOT NULL, offset INTEGER NOT NULL,
    seq INTEGER NOT NULL, PRIMARY KEY (token, room)
);
CREATE TABLE IF NOT EXISTS inboxes (token TEXT PRIMARY KEY, noted TEXT NOT NULL, seq INTEGER);
CREATE TABLE IF NOT EXISTS rules (kind TEXT NOT NULL, key TEXT NOT NULL, rule TEXT NOT NULL,
    PRIMARY KEY (kind, key));
"""
# Schema 1 to 2 (one transaction): the chunks, each with its room's epoch.
_FROM_1: Final = """
BEGIN;
ALTER TABLE rooms ADD COLUMN kept INTEGER NOT NULL DEFAULT 0;
INSERT INTO said (room, epoch, first, last, messages)
    SELECT chunks.room, rooms.epoch, first, last, messages FROM chunks JOIN rooms USING (room)
    ORDER BY chunks.room, first;
DROP TABLE chunks;
UPDATE meta SET value = '2' WHERE key = 'schema';
COMMIT;
"""
# Schema 2 to 3: a name's away message (it was lost at a restart); the column is added to a
# names table that lacks it (one made by this schema already has it).
_AWAY_COLUMN: Final = "ALTER TABLE names ADD COLUMN away TEXT"
# Rows of history (of an id range) that no room keeps: of a room gone or numbered anew, or
# before its trim.
_SWEEP: Final = """
DELETE FROM said WHERE id >= ? AND id < ? AND last < COALESCE(
    (SELECT kept FROM rooms WHERE rooms.room = said.room AND rooms.epoch = said.epoch),
    1 << 62)
"""


class DatabaseError(RuntimeError):
    """The database cannot be used (corrupt, not a database, unwritable): the server stops."""


def database_path(url: str, port: int) -> Path:
    """The file ``url`` names: ``sqlite:///abs/path.db``, or ``sqlite://`` for the default,
    one per port (two servers on one machine must not share one)."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc:
        raise ValueError(f"a sqlite:// URL names a file, not a host: {url!r}")
    if not path or path == "/":
        # The server's state directory, as its pid file and log ($CHAT_SERVER_STATE_DIR).
        return state_dir() / DEFAULT_FILE.format(port=port)
    return Path(path)


class _Tracked(OrderedDict[Any, Any]):
    """A dict that notes which keys were set or removed since :meth:`take` (its values may
    also change in place: the owner notes those with :meth:`touch`)."""

    def __init__(self) -> None:
        super().__init__()
        self.dirty: set[Any] = set()

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.dirty.add(key)

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self.dirty.add(key)

    def pop(self, key: Any, *default: Any) -> Any:
        self.dirty.add(key)
        return super().pop(key, *default)

    def popitem(self, last: bool = True) -> tuple[Any, Any]:
        key, value = super().popitem(last)
        self.dirty.add(key)
        return key, value

    def touch(self, key: Any) -> None:
        self.dirty.add(key)

    def take(self) -> set[Any]:
        dirty, self.dirty = self.dirty, set()
        return dirty


@dataclass
class _Batch:
    """What one transaction writes, and what waits for it."""

    messages: dict[str, list[_Published]] = field(default_factory=dict)  # room -> its own
    rooms: dict[str, tuple[str, int, float] | None] = field(default_factory=dict)  # None: gone
    trims: dict[str, int] = field(default_factory=dict)  # room -> first offset kept
    names: list[tuple[str, tuple[str, str | None, float, str | None] | None]] = field(
        default_factory=list
    )
    reads: list[tuple[tuple[str, str], tuple[str, int] | None]] = field(default_factory=list)
    inboxes: list[tuple[str, str | None]] = field(default_factory=list)
    rules: list[tuple[tuple[str, str], str | None]] = field(default_factory=list)
    # room -> its events in order (no tuple per event: fewer objects for the collector)
    deliveries: dict[str, list[_Published]] = field(default_factory=dict)
    events: int = 0  # in deliveries
    first_id: int = 0  # the row id of the first of messages' chunks, once written
    waiting: list[_Written] = field(default_factory=list)

    def empty(self) -> bool:
        return not (
            self.messages or self.rooms or self.trims or self.names or self.reads
            or self.inboxes or self.rules or self.deliveries or self.waiting
        )  # fmt: skip


# A room's messages of one batch are one row, field by field, each field of all of them made at
# C level (a message formatted on its own, its time's repr above all, cost twice as much):
# "offsets GS times GS names GS nonces GS texts", offsets and times as the hex of little-endian
# 64-bit arrays (exact), names and nonces joined by US, texts by RS. No separator can be in a
# field: text is sanitised (no C0 control but newline and tab), names and nonces are
# printable. Schema 1's rows ("offset US name US time US nonce US text" joined by RS) have no
# GS.
_US, _RS, _GS = "\x1f", "\x1e", "\x1d"
_SWAP = sys.byteorder == "big"
_offset, _name, _time, _text = (attrgetter(a) for a in ("offset", "name", "time", "text"))


def _packed(kind: str, values: Any) -> str:
    numbers = array(kind, values)
    if _SWAP:
        numbers.byteswap()
    return numbers.tobytes().hex()


def _unpacked(kind: str, text: str) -> array[Any]:
    numbers = array(kind, bytes.fromhex(text))
    if _SWAP:
        numbers.byteswap()
    return numbers


def _chunk(said: list[_Published]) -> str:
    return _GS.join((
        _packed("q", map(_offset, said)),
        _packed("d", map(_time, said)),
        _US.join(map(_name, said)),
        _US.join([e.nonce or "" for e in said]),
        _RS.join(map(_text, said)),
    ))  # fmt: skip


def _unchunk(chunk: str) -> list[tuple[int, str, float, str | None, str]]:
    """The messages of a chunk: (offset, name, time, nonce, text)."""
    if _GS not in chunk:  # schema 1's
        said = []
        for item in chunk.split(_RS):
            offset, name, at, nonce, text = item.split(_US, 4)
            said.append((int(offset), name, float(at), nonce or None, text))
        return said
    offsets, times, names, nonces, texts = chunk.split(_GS)
    return list(
        zip(
            _unpacked("q", offsets),
            names.split(_US),
            _unpacked("d", times),
            [nonce or None for nonce in nonces.split(_US)],
            texts.split(_RS),
            strict=True,
        )
    )


class _Database:
    """The connection, used only from the writer thread (and at start, before it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.con: sqlite3.Connection | None = None
        self._lock: int | None = None  # the file, held open with an exclusive flock
        self.rows = 0  # in the table said
        self._sweep_at = SWEEP_ROWS  # rows at which the next sweep starts
        self._swept: int | None = None  # during a sweep: the id it goes on from
        self.next_id = 1  # of the next row of history
        self.read_seq = self.inbox_seq = 0  # of the last read position, inbox written

    def open(self) -> None:
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(FileExistsError):
                # A new file is readable by its owner only from the start, and so are the
                # -wal and -shm files SQLite makes beside it (with the database's mode).
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
            self._lock = os.open(path, os.O_RDWR)
            try:
                # One server per file (an advisory lock apart from SQLite's own, which
                # leaves the file readable meanwhile: `sqlite3 FILE .backup COPY` works).
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DatabaseError(
                    f"cannot use the chat database {path}: another chat-server uses it"
                ) from None
            con = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            con.execute("PRAGMA busy_timeout=5000")
            checked = con.execute("PRAGMA quick_check").fetchone()
            if checked is None or checked[0] != "ok":
                raise DatabaseError(f"{path} is damaged: {checked and checked[0]}")
            tables = {
                row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if tables and "meta" not in tables:
                # Someone else's database: never taken over.
                raise DatabaseError(
                    f"{path} is not a chat database (its tables: {', '.join(sorted(tables))})"
                )
            path.chmod(0o600)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            version = None
            if tables:
                version = con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if version is not None and version[0] not in ("1", "2", str(SCHEMA_VERSION)):
                raise DatabaseError(
                    f"{path} is of schema {version[0]}, this server knows {SCHEMA_VERSION}"
                )
            con.executescript(_SCHEMA)  # the tables an older schema lacks, made new
            if version is None:
                con.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            else:  # then each step up from the version it is
                if version[0] == "1":
                    con.executescript(_FROM_1)
                columns = {row[1] for row in con.execute("PRAGMA table_info(names)")}
                if "away" not in columns:
                    con.execute(_AWAY_COLUMN)
                con.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),)
                )
                con.commit()
            self.rows = con.execute("SELECT count(*) FROM said").fetchone()[0]
            self.next_id = (con.execute("SELECT max(id) FROM said").fetchone()[0] or 0) + 1
            # The order read positions and inboxes were written in (the oldest go first past
            # their bounds), counted here: a MAX(seq) per row written read the whole table,
            # 5 ms a row at 70,000 of them, and one address's reads held up every message.
            self.read_seq = con.execute("SELECT max(seq) FROM reads").fetchone()[0] or 0
            self.inbox_seq = con.execute("SELECT max(seq) FROM inboxes").fetchone()[0] or 0
            self._sweep_at = max(2 * self.rows, SWEEP_ROWS)
        except (sqlite3.Error, OSError) as exc:
            self._unlock()
            raise DatabaseError(f"cannot use the chat database {path}: {exc}") from exc
        except DatabaseError:
            self._unlock()
            raise
        self.con = con

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # the flock goes with it
            self._lock = None

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None
        self._unlock()

    def write(self, batch: _Batch) -> None:
        con = self.con
        assert con is not None
        con.execute("BEGIN")
        try:
            # The history of a room gone, or of a numbering gone (a new epoch), is no room's
            # any more: left to the sweep (never read again meanwhile).
            for room, row in batch.rooms.items():
                if row is None:
                    con.execute("DELETE FROM rooms WHERE room=?", (room,))
                else:
                    epoch, offset, touched = row
                    con.execute(
                        "INSERT INTO rooms VALUES (?,?,?,?,0) ON CONFLICT(room) DO UPDATE SET "
                        "epoch=excluded.epoch, offset=excluded.offset, touched=excluded.touched, "
                        "kept=IIF(epoch=excluded.epoch, kept, 0)",
                        (room, epoch, offset, touched),
                    )
            if batch.messages:
                rows = [
                    (room, said[0].epoch, said[0].offset, said[-1].offset, _chunk(said))
                    for room, said in batch.messages.items()
                ]
                # Numbered here (the rowid SQLite would choose), so that the loop learns where each
                # room's chunk is (_Journal._written): a read beyond the window goes to its rows.
                batch.first_id = self.next_id
                con.executemany(
                    "INSERT INTO said (id, room, epoch, first, last, messages) "
                    "VALUES (?,?,?,?,?,?)",
                    [(self.next_id + i, *row) for i, row in enumerate(rows)],
                )
            if batch.trims:
                con.executemany(
                    "UPDATE rooms SET kept=? WHERE room=?",
                    [(kept, room) for room, kept in batch.trims.items()],
                )
            for key, name in batch.names:
                if name is None:
                    con.execute("DELETE FROM names WHERE key=?", (key,))
                else:
                    con.execute("INSERT OR REPLACE INTO names VALUES (?,?,?,?,?,?)", (key, *name))
            for (token, room), kept in batch.reads:
                if kept is None:
                    con.execute("DELETE FROM reads WHERE token=? AND room=?", (token, room))
                else:
                    self.read_seq += 1
                    con.execute(
                        "INSERT OR REPLACE INTO reads VALUES (?,?,?,?,?)",
                        (token, room, *kept, self.read_seq),
                    )
            for token, noted in batch.inboxes:
                if noted is None:
                    con.execute("DELETE FROM inboxes WHERE token=?", (token,))
                else:
                    self.inbox_seq += 1
                    con.execute(
                        "INSERT OR REPLACE INTO inboxes VALUES (?,?,?)",
                        (token, noted, self.inbox_seq),
                    )
            for (kind, key), rule in batch.rules:
                if rule is None:
                    con.execute("DELETE FROM rules WHERE kind=? AND key=?", (kind, key))
                else:
                    con.execute("INSERT OR REPLACE INTO rules VALUES (?,?,?)", (kind, key, rule))
            con.execute("COMMIT")
            if batch.messages:
                self.next_id += len(batch.messages)
                self.rows += len(batch.messages)
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def sweep(self) -> None:
        """Delete a slice of the history no room keeps, if a sweep is under way or due (the
        table has grown enough since the last)."""
        con = self.con
        assert con is not None
        if self._swept is None:
            if self.rows < self._sweep_at:
                return
            self._swept = con.execute("SELECT min(id) FROM said").fetchone()[0] or 0
        start = self._swept
        self.rows -= con.execute(_SWEEP, (start, start + SWEEP_SLICE)).rowcount
        self._swept = start + SWEEP_SLICE
        if self._swept > (con.execute("SELECT max(id) FROM said").fetchone()[0] or 0):
            self._swept = None
            self._sweep_at = max(2 * self.rows, SWEEP_ROWS)

    def load(self, history_size: int) -> dict[str, Any]:
        con = self.con
        assert con is not None

        def rows(query: str) -> list[Any]:
            return con.execute(query).fetchall()

        return {
            "rooms": rows("SELECT room, epoch, offset, touched FROM rooms"),
            "said": self._histories(history_size),
            "names": rows("SELECT key, shown, digest, expires, forward, away FROM names"),
            "reads": rows("SELECT token, room, epoch, offset FROM reads ORDER BY seq"),
            "inboxes": rows("SELECT token, noted FROM inboxes ORDER BY seq"),
            "rules": rows("SELECT rule FROM rules"),
        }

    def _histories(self, history_size: int) -> dict[str, _Loaded]:
        """Each room's history as a start needs it, read a row at a time: its window's
        messages, the sizes of the older ones, where its rows are, its last nonces."""
        con = self.con
        assert con is not None
        window = min(WINDOW, history_size)
        slack = max(1, min(SLACK, history_size // 16))
        histories: dict[str, _Loaded] = {}
        for room, row, last, chunk in con.execute(
            "SELECT said.room, said.id, said.last, messages FROM said JOIN rooms "
            "ON rooms.room = said.room AND rooms.epoch = said.epoch "
            "AND said.last >= rooms.kept ORDER BY said.id"
        ):
            kept = histories.get(room)
            if kept is None:
                kept = histories[room] = _Loaded(deque(maxlen=window))
            try:
                said = _unchunk(chunk)
            except ValueError as exc:
                raise DatabaseError(f"{self.path}: a damaged chunk of {room}'s history") from exc
            kept.chunks.append((row, last))
            ring, sizes = kept.ring, kept.sizes
            for number, name, at, nonce, text in said:
                kept.last = number
                if nonce is not None:
                    kept.nonces.append((nonce, number, at))
                if history_size:
                    if len(ring) == window:
                        size = len(ring[0].text.encode())
                        sizes.append(size)
                        kept.disk_bytes += size
                    ring.append(StoredMessage(number, name, text, at))
            if len(sizes) > history_size - window + slack:
                gone = len(sizes) - (history_size - window)
                kept.disk_bytes -= sum(sizes[:gone])
                del sizes[:gone]
        return histories


@dataclass
class _Loaded:
    """A room's history as read at start (see _Database._histories)."""

    ring: deque[StoredMessage]
    sizes: array[int] = field(default_factory=lambda: array("i"))
    disk_bytes: int = 0
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (row id, last offset)
    nonces: deque[tuple[str, int, float]] = field(
        default_factory=lambda: deque(maxlen=DEDUP_PER_ROOM)
    )
    last: int = 0  # the offset of the last message


class _Delivery:
    """A written batch's events, delivered a slice at a time (see DELIVER_SLICE_SHARE)."""

    __slots__ = ("event", "room", "rooms")

    def __init__(self, deliveries: dict[str, list[_Published]]) -> None:
        self.rooms = list(deliveries.items())
        self.room = 0  # where the next slice starts: room, and event within it
        self.event = 0

    def run(self, deliver: Callable[[str, _Published], None], budget: int) -> int:
        """Deliver until ``budget`` characters of text are spent or all is delivered; what is
        left of the budget (at most 0: more is to come)."""
        rooms = self.rooms
        while self.room < len(rooms):
            room, events = rooms[self.room]
            start = self.event
            for index in range(start, len(events)):
                event = events[index]
                deliver(room, event)
                budget -= len(event.text) + 64  # and its frame's own bytes, roughly
                if budget <= 0:
                    self.event = index + 1
                    if self.event == len(events):
                        self.room, self.event = self.room + 1, 0
                    return budget if self.room < len(rooms) else 1
            self.room, self.event = self.room + 1, 0
        return budget


class _Journal:
    """Gathers what changed into a batch, writes it in the writer thread, then lets its events
    out: one batch written at a time, the next gathering meanwhile."""

    def __init__(
        self, database: _Database, on_failure: Callable[[str | None], None], slice_chars: int
    ) -> None:
        self.database = database
        self._slice = slice_chars  # delivered a turn at most (DELIVER_SLICE_SHARE)
        self.batch = _Batch()
        self._requests: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing = False
        self._idle: asyncio.Event | None = None
        self._due = False
        # A write is due or under way: whoever adds to the batch need not call due() (one
        # attribute read per event).
        self.busy = False
        self._failed: str | None = None
        self._on_failure = on_failure
        self.deliver: Callable[[str, _Published], None] | None = None
        # Told of each batch's chunks of history once they are written (before anyone waits).
        self.on_chunks: Callable[[_Batch], None] | None = None
        self._out: deque[_Delivery] = deque()  # written batches' events still to deliver

    @property
    def failure(self) -> str | None:
        """Why the disk refuses the batch it is given again and again, while it does."""
        return self._failed

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="chat-db", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """The writer thread: a batch at a time, its outcome handed back to the loop."""
        loop, requests, database = self._loop, self._requests, self.database
        assert loop is not None
        while (batch := requests.get()) is not None:
            try:
                database.write(batch)
                error: BaseException | None = None
            except Exception as exc:  # told to the loop, which stops taking messages
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._written, batch, error)
            del batch  # its events are the loop's now (freed there, as with memory://)
            if error is None:
                try:  # after the batch is out: nobody waits for a sweep
                    database.sweep()
                except Exception as exc:  # tried again after the next batch
                    log.warning("the chat database could not be swept: %s", exc)

    def due(self) -> None:
        """Something was added to the batch: write it after this turn of the loop. While a
        batch is being written the next one gathers, so under load each transaction holds
        what arrived during the last (group commit), and a lone message waits for none."""
        if not self.busy and self._loop is not None:
            self._due = self.busy = True
            self._loop.call_soon(self._write_next)

    def _write_next(self) -> None:
        self._due = False
        batch = self.batch
        if self._writing or batch.empty() or self._thread is None:
            self.busy = self._writing
            return
        self.batch = _Batch()
        self._writing = self.busy = True
        assert self._idle is not None
        self._idle.clear()
        self._requests.put(batch)

    def _written(self, batch: _Batch, error: BaseException | None) -> None:
        if error is not None:
            # What the batch holds is already what memory has (numbered, in the rooms'
            # histories): it is written, or nothing after it is. Nobody hears of it meanwhile:
            # the backend is unavailable (every member is closed with 1013, nobody joins) and
            # the same batch is tried again until the disk takes it (space freed, say).
            reason = f"the chat database cannot be written: {error}"
            if self._failed is None:
                self._failed = reason
                log.error("%s; trying again every %g s", reason, RETRY_EVERY)
                self._on_failure(reason)
            assert self._loop is not None
            self._loop.call_later(RETRY_EVERY, self._requests.put, batch)
            return
        self._writing = False
        self.busy = self._due
        if self._failed is not None:  # written after all (space was freed): available again
            log.warning("the chat database is written again")
            self._failed = None
            self._on_failure(None)
        if batch.messages and self.on_chunks is not None:
            self.on_chunks(batch)
        if self.deliver is not None and batch.deliveries:
            self._out.append(_Delivery(batch.deliveries))
            if len(self._out) == 1:
                self._deliver_slice()
        for waiter in batch.waiting:
            waiter.settle()
        assert self._idle is not None
        self._idle.set()
        if not self.batch.empty():
            self.due()

    def _deliver_slice(self) -> None:
        """Deliver written batches' events in order, a slice of text a turn."""
        deliver, out = self.deliver, self._out
        budget = self._slice
        while out and deliver is not None:
            budget = out[0].run(deliver, budget)
            if budget <= 0:
                assert self._loop is not None
                self._loop.call_soon(self._deliver_slice)
                return
            out.popleft()

    async def flushed(self) -> None:
        """Until everything gathered or being written now is written (a read of history that
        is not in memory waits for it: what left the window may not be written yet)."""
        if self._thread is None or (self.batch.empty() and not self._writing):
            return
        written = _Written(None)
        self.batch.waiting.append(written)
        self.due()
        await written

    async def drain(self) -> None:
        """Until everything gathered is written (shutting down)."""
        while self._idle is not None:
            await self._idle.wait()
            if self.batch.empty():
                return
            self._write_next()

    def stop(self) -> None:
        if self._thread is not None:
            self._requests.put(None)
            self._thread.join()
            self._thread = None


class _Written:
    """A publish's result once its transaction is committed. Not an asyncio future: one is
    made per message, and a future's callbacks each cost a turn of the loop; these are called
    at once, in order, when the batch is written."""

    __slots__ = ("_callbacks", "_error", "_settled", "published")

    def __init__(self, published: Any) -> None:
        self.published = published  # the event, or the Duplicate a repeated send is
        self._callbacks: list[Callable[[Any], object]] = []
        self._error: BaseException | None = None
        self._settled = False

    def done(self) -> bool:
        return self._settled

    def cancelled(self) -> bool:
        return False

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self.published

    def add_done_callback(self, callback: Callable[[Any], object]) -> None:
        if self._settled:
            callback(self)
        else:
            self._callbacks.append(callback)

    def settle(self, error: BaseException | None = None) -> None:
        self._settled, self._error = True, error
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)

    def __await__(self) -> Generator[Any, None, Any]:
        if not self._settled:
            waiter = asyncio.get_running_loop().create_future()
            self.add_done_callback(lambda _: waiter.done() or waiter.set_result(None))
            yield from waiter
        return self.result()


class _DiskRoom(_Room):
    """A room whose history is its window (``ring``, the newest WINDOW messages) and, before
    it, messages on disk alone: their sizes (for the bounds in bytes), and where their chunks
    are (the row ids, with the last offset of each)."""

    __slots__ = ("chunk_ids", "chunk_lasts", "disk_bytes", "sizes")

    def __init__(self, history_size: int) -> None:
        super().__init__(history_size)
        if self.ring is not None:
            self.ring = deque()  # bounded by the window (_PersistentState.window)
        # The UTF-8 sizes of the texts of the messages before the window, oldest first.
        self.sizes = array("i")
        self.disk_bytes = 0  # their sum
        self.chunk_ids = array("q")  # the room's rows of history, in order
        self.chunk_lasts = array("q")  # the last offset in each

    def first(self, history_size: int) -> int:
        """The offset of the oldest message of the history (the ring is not empty): of the
        last ``history_size`` (a few more may be kept, see SLACK)."""
        assert self.ring
        newest = self.ring[-1].offset
        return max(self.ring[0].offset - len(self.sizes), newest - history_size + 1)

    def drop_chunks(self) -> None:
        """Forget the rows that hold nothing of the history any more."""
        if self.ring:
            gone = bisect_left(self.chunk_lasts, self.ring[0].offset - len(self.sizes))
            if gone:
                del self.chunk_ids[:gone]
                del self.chunk_lasts[:gone]


class SqliteChannels(MemoryChannels):
    """The memory channels, whose events wait for their transaction before anyone has them."""

    def __init__(self, state: _State, node_id: str, journal: _Journal) -> None:
        super().__init__(state, node_id)
        self._journal = journal
        self._epochs: dict[str, str] = {}  # the epoch each room's row on disk has
        self._history = state.settings.history_size > 0  # each room then has a ring
        self._history_size = state.settings.history_size
        self._window = min(WINDOW, self._history_size)
        self._spill = self._window + SPILL
        super().bind(self._gather)

    def _new_room(self) -> _Room:
        return _DiskRoom(self._state.settings.history_size)

    def bind(self, deliver: Callable[[str, _Published], None]) -> None:
        self._journal.deliver = deliver

    def _gather(self, room: str, event: Any) -> None:
        journal = self._journal
        batch = journal.batch
        events = batch.deliveries.get(room)
        if events is None:
            events = batch.deliveries[room] = []
        events.append(event)
        batch.events += 1
        if self._epochs.get(room) is not event.epoch or not self._history:
            self._numbered(room, event)
        elif event.kind is _MESSAGE:
            # The common case, cheap: the room's row is written, and so is this numbering.
            said = batch.messages.get(room)
            if said is None:
                said = batch.messages[room] = []
            said.append(event)  # made into a row by the writer thread
            offset = event.offset
            if not offset % SPILL:  # the window, every SPILL messages of the room
                state = self._state.rooms[room]
                if len(state.ring) > self._window:  # type: ignore[arg-type]
                    self._state.window(state)  # type: ignore[attr-defined]
            if not offset % TRIM_EVERY:
                state = self._state.rooms[room]
                if state.ring:
                    batch.trims[room] = state.first(self._history_size)  # type: ignore[attr-defined]
        if not journal.busy:
            journal.due()

    def _numbered(self, room: str, event: Any) -> None:
        """The room's row is written with the event: its first of a numbering, or any with
        history off (offsets then come with the room's row, each time)."""
        state = self._state.rooms.get(room)
        if state is None or state.epoch != event.epoch:
            return  # the room is gone (forgotten as this leave emptied it): nothing to keep
        batch = self._journal.batch
        self._epochs[room] = state.epoch
        batch.rooms[room] = (state.epoch, state.offset, state.touched)
        if self._history and event.kind is _MESSAGE:
            said = batch.messages.get(room)
            if said is None or said[0].epoch != event.epoch:
                # A chunk is of one numbering (an earlier one's messages are moot).
                said = batch.messages[room] = []
            said.append(event)
            if len(state.ring) > self._spill:  # type: ignore[arg-type]
                self._state.window(state)  # type: ignore[attr-defined]

    def forgotten(self, room: str) -> None:
        self._epochs.pop(room, None)

    def publish(
        self,
        room: str,
        kind: EventKind,
        name: str,
        text: str = "",
        nonce: str | None = None,
        ref: int | None = None,
    ) -> Publishing:
        published = super().publish(room, kind, name, text, nonce, ref)
        batch = self._journal.batch
        if not isinstance(published, _Published):
            if published.done() and published.result() is not None:
                # A duplicate: acknowledged only once what it repeats is surely written (it
                # may be in the batch being gathered).
                written = _Written(published.result())
                batch.waiting.append(written)
                self._journal.due()
                return written
            return published  # refused: nothing was written
        if kind is _MESSAGE and batch.events < BACKLOG:
            # Settled as with memory://: the sender's echo and ack, like everyone's copy, go
            # out only with the batch (see _Journal), so nobody hears of it before it is on
            # disk, and the session needs no bookkeeping per message.
            return published
        written = _Written(published)
        batch.waiting.append(written)
        self._journal.due()
        return written


class SqliteRegistry(MemoryRegistry):
    """The memory registry; every name, read position and inbox it changes is written."""

    def __init__(self, state: _State, journal: _Journal) -> None:
        super().__init__(state)
        self._journal = journal

    def _flush_changes(self) -> None:
        state, batch = self._state, self._journal.batch
        names: _Tracked = state.names  # type: ignore[assignment]
        for key in names.take():
            record = names.get(key)
            batch.names.append((key, None if record is None else _name_row(record)))
        reads: _Tracked = state.read  # type: ignore[assignment]
        for key in reads.take():
            batch.reads.append((key, reads.get(key)))
        inbox: _Tracked = state.inbox  # type: ignore[assignment]
        for token in inbox.take():
            noted = inbox.get(token)
            batch.inboxes.append((token, None if noted is None else json.dumps(noted)))
        self._journal.due()

    def _touch(self, name: str) -> None:
        self._state.names.touch(name_key(name))  # type: ignore[attr-defined]

    async def claim_name(self, name: str, digest: str | None = None) -> bool:
        claimed = await super().claim_name(name, digest)
        self._flush_changes()
        return claimed

    async def resume_name(self, name: str, digest: str) -> str | None:
        shown = await super().resume_name(name, digest)
        if shown is not None:
            self._touch(shown)
        self._flush_changes()
        return shown

    async def rename_name(self, old: str, new: str, digest: str) -> bool:
        renamed = await super().rename_name(old, new, digest)
        self._touch(old)
        self._touch(new)
        self._flush_changes()
        return renamed

    async def release_name(self, name: str) -> None:
        record = self._followed(name)
        await super().release_name(name)
        if record is not None:
            self._touch(record.shown)
        self._flush_changes()

    async def set_away(self, name: str, message: str | None) -> None:
        await super().set_away(name, message)
        self._touch(name)
        self._flush_changes()

    async def keep_read_position(self, token_id: str, room: str, epoch: str, offset: int) -> None:
        await super().keep_read_position(token_id, room, epoch, offset)
        self._flush_changes()

    async def note_direct(self, token_id: str, room: str, sender: str) -> None:
        await super().note_direct(token_id, room, sender)
        self._state.inbox.touch(token_id)  # type: ignore[attr-defined]
        self._flush_changes()

    async def clear_direct(self, token_id: str, room: str) -> None:
        await super().clear_direct(token_id, room)
        self._state.inbox.touch(token_id)  # type: ignore[attr-defined]
        self._flush_changes()


class _Reader:
    """Reads history from the database in a thread of its own, on a read-only connection of
    its own (WAL: it sees every committed transaction, and never waits for the writer)."""

    def __init__(self, path: Path) -> None:
        self._uri = path.resolve().as_uri() + "?mode=ro"
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "chat-db-read")
        self._con: sqlite3.Connection | None = None  # the thread's

    def _read(self, ids: list[int], start: int, stop: int) -> list[StoredMessage]:
        if self._con is None:
            self._con = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
            self._con.execute("PRAGMA busy_timeout=5000")
        said = []
        for (chunk,) in self._con.execute(
            "SELECT messages FROM said WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (json.dumps(ids),),
        ):
            for number, name, at, _nonce, text in _unchunk(chunk):
                if start <= number <= stop:
                    said.append(StoredMessage(number, name, text, at))
        return said

    async def messages(self, ids: list[int], start: int, stop: int) -> list[StoredMessage]:
        """The messages of offsets in [start, stop] of the rows ``ids``, in order."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._read, ids, start, stop
        )

    def _close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def close(self) -> None:
        self._executor.submit(self._close)
        self._executor.shutdown(wait=True)


class SqliteHistory(MemoryHistory):
    """The memory history over each room's window; what is older is read from disk, so that
    a room's history is served as if all of it were in memory."""

    def __init__(self, state: _State, journal: _Journal, reader: _Reader) -> None:
        super().__init__(state)
        self._journal = journal
        self._reader = reader

    async def latest(self, room: str, upto: int, count: int) -> list[StoredMessage]:
        state = self._state.rooms.get(room)
        if not isinstance(state, _DiskRoom) or not state.ring or count <= 0:
            return []
        ring = state.ring
        in_memory = ring[0].offset
        end = min(upto, ring[-1].offset)
        start = max(state.first(self._state.settings.history_size), end - count + 1)
        if start >= in_memory:
            return list(islice(ring, start - in_memory, end - in_memory + 1))
        newer = list(islice(ring, 0, max(0, end - in_memory + 1)))  # taken before any wait
        older = await self._older(room, state, start, min(end, in_memory - 1))
        # Only what goes on without a gap up to the window (never a hole in history).
        expected = min(end, in_memory - 1)
        keep = len(older)
        while keep and older[keep - 1].offset == expected - (len(older) - keep):
            keep -= 1
        return older[keep:] + newer

    async def since(self, room: str, after: int, upto: int) -> list[StoredMessage] | None:
        if upto <= after:
            return [] if upto == after else None
        state = self._state.rooms.get(room)
        if not isinstance(state, _DiskRoom) or not state.ring:
            return None
        ring = state.ring
        in_memory = ring[0].offset
        first = state.first(self._state.settings.history_size)
        if first > after + 1 or ring[-1].offset < upto:
            return None
        if after + 1 >= in_memory:
            return await super().since(room, after, upto)
        newer = list(islice(ring, 0, max(0, upto - in_memory + 1)))
        stop = min(upto, in_memory - 1)
        older = await self._older(room, state, after + 1, stop)
        if [m.offset for m in older] != list(range(after + 1, stop + 1)):
            return None  # never a partial range
        return older + newer

    async def _older(
        self, room: str, state: _DiskRoom, start: int, stop: int
    ) -> list[StoredMessage]:
        """The messages with offsets in [start, stop] that the database holds, in order."""
        if not state.chunk_lasts or state.chunk_lasts[-1] < stop:
            await self._journal.flushed()  # they left the window before they were written
        if self._state.rooms.get(room) is not state:
            return []  # forgotten meanwhile
        lasts = state.chunk_lasts
        first, after = bisect_left(lasts, start), bisect_left(lasts, stop) + 1
        ids = list(state.chunk_ids[first:after])
        if not ids:
            return []
        try:
            return await self._reader.messages(ids, start, stop)
        except (sqlite3.Error, ValueError) as exc:
            # Served as not retained (a recovery then says so), never as a gap.
            log.error("the chat database could not be read for %s's history: %s", room, exc)
            return []


def _name_row(record: _Name) -> tuple[str, str | None, float, str | None, str | None]:
    # A name held now is kept as held (expires 0): at the next start it is reserved afresh.
    expires = 0.0 if record.holds else record.expires
    return (record.shown, record.digest, expires, record.forward, record.away)


class _PersistentState(_State):
    """The memory state, whose forgetting of rooms (and when they went idle) is written too."""

    journal: _Journal
    channels: SqliteChannels

    def window(self, state: _DiskRoom) -> None:
        """Messages past the room's window (SPILL of them) leave memory (they are on disk, or
        will be with the batch being gathered); past --history-size, the oldest leave the
        history."""
        ring, sizes = state.ring, state.sizes
        assert ring is not None
        limit = min(WINDOW, self.settings.history_size)
        out = len(ring) - limit
        if out > 0:
            # At C level: the UTF-8 sizes of their texts (_size without MESSAGE_OVERHEAD),
            # and a new window, not one popleft each.
            before = len(sizes)
            sizes.extend(map(len, map(str.encode, map(_text, islice(ring, out)))))
            state.disk_bytes += sum(sizes[before:])
            state.ring = deque(islice(ring, out, None))
        history_size = self.settings.history_size
        beyond = len(sizes) - (history_size - limit)
        if beyond >= max(1, min(SLACK, history_size // 16)):
            state.disk_bytes -= sum(sizes[:beyond])
            del sizes[:beyond]
            state.drop_chunks()

    def weigh(self, room: str, state: _Room) -> None:
        """As the memory broker's, over the whole history: the window and what is on disk
        alone (the oldest go first, from disk, then from the window)."""
        assert isinstance(state, _DiskRoom)
        ring, sizes = state.ring, state.sizes
        assert ring is not None
        state.added = 0
        weight = sum(map(_size, ring)) + state.disk_bytes + MESSAGE_OVERHEAD * len(sizes)
        room_bound = self.bound_for(state, weight)
        if state.kept_bytes > room_bound and sizes:
            over, gone = state.kept_bytes - room_bound, 0
            while gone < len(sizes) and over > 0:
                over -= sizes[gone] + MESSAGE_OVERHEAD
                gone += 1
            texts = sum(sizes[:gone])
            del sizes[:gone]
            state.disk_bytes -= texts
            dropped = texts + MESSAGE_OVERHEAD * gone
            state.kept_bytes -= dropped
            self.kept_bytes -= dropped
        while state.kept_bytes > room_bound and len(ring) > 1:
            size = _size(ring.popleft())
            state.kept_bytes -= size
            self.kept_bytes -= size
        state.drop_chunks()

    def forget(self, room: str) -> None:
        super().forget(room)
        self.channels.forgotten(room)
        self.journal.batch.rooms[room] = None
        self.journal.due()

    def room_emptied(self, room: str, state: _Room) -> None:
        super().room_emptied(room, state)
        if room in self.rooms:  # kept, idle: since when counts (--history-ttl)
            self.journal.batch.rooms[room] = (state.epoch, state.offset, state.touched)
            self.journal.due()


def check_database(settings: Settings) -> None:
    """Open the database ``settings`` name and close it: :class:`DatabaseError` says why it
    cannot be used."""
    database = _Database(database_path(settings.broker_url, settings.port))
    database.open()
    database.close()


class SqliteBackend(MemoryBackend):
    kind = "sqlite"

    def __init__(self, settings: Settings, node_id: str) -> None:
        super().__init__(settings, node_id)
        self.path = database_path(settings.broker_url, settings.port)
        self._database = _Database(self.path)
        self._journal = _Journal(
            self._database, self._failed, max(4096, settings.send_buffer // DELIVER_SLICE_SHARE)
        )
        state = _PersistentState(settings)
        state.journal = self._journal
        state.names = _Tracked()  # type: ignore[assignment]
        state.read = _Tracked()
        state.inbox = _Tracked()
        self._state = state
        self.channels = SqliteChannels(state, node_id, self._journal)
        state.channels = self.channels
        self.registry = SqliteRegistry(state, self._journal)
        self._reader = _Reader(self.path)
        self.history = SqliteHistory(state, self._journal, self._reader)
        self._journal.on_chunks = self._chunks_written
        self._gc_threshold: tuple[int, ...] | None = None  # the collector's, before start

    @property
    def url(self) -> str:
        return f"sqlite://{self.path}"

    def _chunks_written(self, batch: _Batch) -> None:
        """Where each room's chunk of ``batch`` is, for reads beyond its window."""
        rooms = self._state.rooms
        for number, (room, said) in enumerate(batch.messages.items(), batch.first_id):
            state = rooms.get(room)
            if isinstance(state, _DiskRoom) and state.epoch == said[0].epoch:
                state.chunk_ids.append(number)
                state.chunk_lasts.append(said[-1].offset)

    def _failed(self, reason: str | None) -> None:
        """The database cannot be written (``reason``), or can again (None)."""
        self._set_status(BrokerStatus(True) if reason is None else BrokerStatus(False, reason))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self._database.open)
            loaded = await loop.run_in_executor(
                None, self._database.load, self._state.settings.history_size
            )
        except DatabaseError as exc:
            log.error("%s", exc)
            raise
        self._journal.start()
        self._gc_threshold = gc.get_threshold()
        gc.set_threshold(max(GC_THRESHOLD, self._gc_threshold[0]), *self._gc_threshold[1:])
        self._restore(loaded)
        log.info(
            "chat database %s: %d rooms, %d names", self.path, len(loaded["rooms"]),
            len(loaded["names"]),
        )  # fmt: skip

    def _restore(self, loaded: dict[str, list[Any]]) -> None:
        state: _PersistentState = self._state  # type: ignore[assignment]
        settings = state.settings
        now = time.time()
        history: dict[str, _Loaded] = loaded["said"]
        channels: SqliteChannels = self.channels  # type: ignore[assignment]
        for room, epoch, offset, touched in sorted(loaded["rooms"], key=lambda r: r[3]):
            kept = _DiskRoom(settings.history_size)
            said = history.pop(room, None)
            kept.epoch, kept.touched = epoch, touched
            kept.offset = max(offset, said.last if said is not None else 0)
            if said is not None:
                if kept.ring is not None:
                    kept.ring.extend(said.ring)
                    kept.sizes, kept.disk_bytes = said.sizes, said.disk_bytes
                    for row, last in said.chunks:
                        kept.chunk_ids.append(row)
                        kept.chunk_lasts.append(last)
                    kept.drop_chunks()
                for nonce, number, at in said.nonces:
                    _remember(kept, nonce, (number, at))
            channels._epochs[room] = epoch
            state.rooms[room] = kept
            state.mark_idle(room, kept)  # nobody is in it after a start
            if kept.ring is not None:
                state.weigh(room, kept)
        names: _Tracked = state.names  # type: ignore[assignment]
        reservation = settings.name_reservation
        for key, shown, digest, expires, forward, away in loaded["names"]:
            if digest is None:
                continue  # held by a connection without a token: nobody can take it back
            if expires == 0.0:  # held when the server stopped: reserved from now on
                expires = now + reservation
            if expires <= now:
                continue
            record = _Name(shown, digest)
            record.holds, record.expires, record.forward = 0, expires, forward
            record.away = away
            names[key] = record
            state.reserved.append((expires, shown))
        state.reserved = deque(sorted(state.reserved))
        for token, room, epoch, offset in loaded["reads"]:
            state.read[(token, room)] = (epoch, offset)
        for token, noted in loaded["inboxes"]:
            state.inbox[token] = json.loads(noted)
        for (data,) in loaded["rules"]:
            rule = Rule.from_json(data)
            if rule.live(now):
                self._rules[rule.kind, rule.key] = rule
        for table in (names, state.read, state.inbox):
            table.take()  # what was read is what is written
        state.forget_idle()  # the bounds of idle rooms apply to what was kept

    async def keep_rule(self, rule: Rule) -> None:
        await super().keep_rule(rule)
        self._journal.batch.rules.append(((rule.kind.value, rule.key), rule.to_json()))
        await self._rules_written()

    async def drop_rule(self, kind: RuleKind, key: str) -> bool:
        dropped = await super().drop_rule(kind, key)
        self._journal.batch.rules.append(((kind.value, key), None))
        await self._rules_written()
        return dropped

    async def _rules_written(self) -> None:
        """Until the rules just changed are committed: an operator told "done" finds them in
        force after a crash (no event follows them to order them behind, as a name's change
        is ordered behind the join or nick notice that tells of it). A disk that refuses them
        for ``broker_timeout``: BrokerUnavailable (503); they are in force meanwhile, and
        written once the disk takes them."""
        try:
            async with asyncio.timeout(self._state.settings.broker_timeout):
                await self._journal.flushed()
        except TimeoutError:
            raise BrokerUnavailable(
                self._journal.failure or "the chat database did not take the change in time"
            ) from None

    async def close(self) -> None:
        try:
            async with asyncio.timeout(CLOSE_WAIT):
                await self._journal.drain()
        except TimeoutError:  # the disk refuses it (full): what it holds is lost, said so
            log.error("the chat database could not take the last changes before stopping")
        self._journal.stop()
        self._reader.close()
        self._database.close()
        if self._gc_threshold is not None:
            gc.set_threshold(*self._gc_threshold)
            self._gc_threshold = None
        await super().close()
