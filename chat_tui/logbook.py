"""Logs on disk, Textual-free: one plain-text file per server, room and local day.

    ROOT/SERVER/ROOM/YYYY-MM-DD.log

Lines read as catgirl's and WeeChat's do, so ``grep`` and ``less`` are enough to read them::

    14:02:11 alice :: hello
    14:02:15 * alice waves
    14:02:20 -!- bob joined lobby
    14:03:01 bob :: first line
               second line

A line that starts with a space continues the entry above it (:data:`CONTINUATION`): no entry
starts with one, so a multi-line message cannot forge an entry. Control characters (C0 but
"\\n", DEL, C1, bidi controls) are removed, so a log never holds an escape sequence that
``cat`` would send to the terminal.

Writing never blocks the caller (the Textual event loop): :meth:`Logbook.write` appends the
entry to a bounded queue; a daemon thread formats the lines and does the disk I/O, a batch at a
time (it lets a burst gather for up to :data:`GATHER` seconds, so that a flood wakes it a few
times a second rather than for every message). The first OSError
(a full disk, an unwritable directory) is reported once and logging stops for the session.

Two apps of one user in the same room (two terminals, the same data directory) see the same
lines: one of them writes the room's files, the one holding the room's lock (an ``flock`` on
``ROOM/.lock``, taken as it writes, kept while it goes on writing and let go after
:data:`CLAIM_IDLE` seconds without a line), so that each line is there once, not twice. The
other says so once and tries again at each of its later lines of the room: it takes over when
the first has left the room or quit.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Final, Literal
from urllib.parse import quote, unquote, urlsplit

from chat_protocol.text import STRIPPED_CHARACTERS

Kind = Literal["message", "notice", "error", "status", "action"]
KINDS: Final[frozenset[str]] = frozenset({"message", "notice", "error", "status", "action"})

# "HH:MM:SS " is 9 columns; two more set continuation lines off from the sender of the entry.
CONTINUATION: Final = " " * 11
MARK: Final = "-!-"  # notices, errors and status lines
SUFFIX: Final = ".log"
DAY_FORMAT: Final = "%Y-%m-%d"
MAX_QUEUED: Final = 10_000
GATHER: Final = 0.1  # seconds the writer waits for more once an entry is queued
CLAIM_IDLE: Final = 30.0  # seconds without a line of a room before its lock is let go
LOCK_FILE: Final = ".lock"
FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700

# Everything the server's sanitiser strips (chat_protocol.text), and tabs, which become spaces.
_TEXT_TABLE: Final[dict[int, str | None]] = {ord(c): None for c in STRIPPED_CHARACTERS}
_TEXT_TABLE[ord("\t")] = " "
# Names that would read as another kind of line ("HH:MM:SS * :: x" is an action by "::" or a
# message from "*"): bracketed. Real names are [A-Za-z0-9_-], so only a hostile server sends them.
_CONFUSING_NAMES: Final = frozenset({"", "*", "::", MARK})
_SPACE: Final = re.compile(r"\s")  # a name is one word: the parser splits at whitespace
_SAFE_ROOM: Final = re.compile(r"@?[A-Za-z0-9_-]{1,64}")
_MAX_NAME_BYTES: Final = 200  # well under NAME_MAX (255) once escaped


def default_logs_dir() -> Path:
    """Where the app keeps its logs: ``user_data_dir("chat-tui")/logs``."""
    from platformdirs import user_data_dir  # only the app needs it, not grep over a given root

    return Path(user_data_dir("chat-tui")) / "logs"


# --- names on disk ------------------------------------------------------------------------------


def _escape(name: str) -> str:
    """Percent-escape everything but [A-Za-z0-9_-] (so no "/", no ".", no leading dot)."""
    return quote(name, safe="@").replace(".", "%2E").replace("~", "%7E") or "%00"


def server_dirname(server: str) -> str:
    """The directory of a server: ``host_port`` (``ws://[::1]:8000`` gives ``__1_8000``).

    Only host and port count: the scheme and path of the URL do not make another server.
    """
    try:
        parts = urlsplit(server)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
        name = f"{host}_{port}" if host else server
    except ValueError:  # a port that is not a number: still a name, made safe below
        name = server
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:_MAX_NAME_BYTES]
    return "_" + safe[1:] if safe.startswith(".") else safe  # never "." or ".." or hidden


def room_dirname(room: str) -> str:
    """The directory of a room or conversation: its name, escaped only if it is not a valid one."""
    if _SAFE_ROOM.fullmatch(room):
        return room
    return _escape(room)[:_MAX_NAME_BYTES]


def clean_text(text: str) -> str:
    """``text`` without control characters ("\\n" stays, a tab becomes a space)."""
    if text.isascii() and text.isprintable():
        return text
    return text.replace("\r\n", "\n").translate(_TEXT_TABLE)


def clean_name(name: str) -> str:
    """A sender's name as a log shows it: one word, no control characters."""
    if not (name.isascii() and name.isprintable() and " " not in name):
        name = _SPACE.sub("_", name.translate(_TEXT_TABLE))
    return f"<{name}>" if name in _CONFUSING_NAMES else name


def format_entry(when: datetime, kind: str, sender: str | None, text: str) -> str:
    """The log lines of one entry, each ending in "\\n"; ``when`` is local time."""
    if kind not in KINDS:
        raise ValueError(f"unknown log entry kind: {kind!r}")
    stamp = f"{when.hour:02}:{when.minute:02}:{when.second:02}"  # strftime("%H:%M:%S"), faster
    lines = clean_text(text).rstrip("\n").split("\n")
    if kind == "message" or (kind == "action" and sender is not None):
        name = clean_name(sender or "")
        head = f"{stamp} * {name} " if kind == "action" else f"{stamp} {name} :: "
    else:
        head = f"{stamp} {MARK} "
    return head + f"\n{CONTINUATION}".join(lines) + "\n"


def local(when: datetime) -> datetime:
    """Local wall-clock time: an aware time is converted, a naive one is taken as local."""
    return when.astimezone().replace(tzinfo=None) if when.tzinfo is not None else when


# --- the logbook --------------------------------------------------------------------------------


class Logbook:
    """Appends the entries of one server's rooms to their day files, off the caller's thread.

    ``on_error(message)`` is called from the writer thread, never the caller's: a Textual app
    passes ``lambda message: app.call_from_thread(app.notify, message)`` (or similar). It is
    called at most once for a failure (after which nothing more is written this session) and
    at most once for lines dropped because the queue was full (logging goes on).
    ``on_notice(message)`` (from the same thread; ``on_error`` if not given) is told once per
    room that another app is writing it.
    """

    def __init__(
        self,
        root: Path,
        server: str,
        *,
        on_error: Callable[[str], None],
        on_notice: Callable[[str], None] | None = None,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.root = root
        self.directory = root / server_dirname(server)
        self._on_error = on_error
        self._on_notice = on_notice or on_error
        # (room, time, kind, sender, text): formatted by the writer.
        self._queue: deque[tuple[str, datetime, str, str | None, str]] = deque()
        self._max_queued = max_queued
        self._lock = threading.Condition()
        self._busy = False  # the writer holds a batch it has not written yet
        self._idle = False  # the writer waits for an entry (a write wakes it)
        self._hurry = 0  # flush() calls waiting: the writer does not gather
        self._closing = False
        self._failed = False
        self._dropped = 0
        self._drop_reported = False
        self._thread: threading.Thread | None = None
        self._known_dirs: set[Path] = set()
        # The writer's alone: the rooms whose lock it holds (room dir -> the lock's descriptor,
        # when it last wrote there), and those another app was found writing.
        self._claims: dict[str, tuple[int, float]] = {}
        self._others: set[str] = set()

    @property
    def failed(self) -> bool:
        """Whether logging stopped for this session (on_error told why)."""
        return self._failed

    @property
    def dropped(self) -> int:
        """Lines dropped because the writer fell behind by more than ``max_queued``."""
        return self._dropped

    @property
    def pending(self) -> int:
        """Entries queued and not taken by the writer yet."""
        return len(self._queue)

    def path(self, room: str, day: date) -> Path:
        """The file of ``room`` on ``day``."""
        return self.directory / room_dirname(room) / (day.strftime(DAY_FORMAT) + SUFFIX)

    def write(self, room: str, when: datetime, kind: str, sender: str | None, text: str) -> None:
        """Queue one entry; returns at once (the disk is the writer thread's)."""
        if self._failed or self._closing:
            return
        if kind not in KINDS:
            raise ValueError(f"unknown log entry kind: {kind!r}")
        with self._lock:
            if self._closing:
                return
            if len(self._queue) >= self._max_queued:
                self._queue.popleft()  # the oldest goes: the newest are what one looks for
                self._dropped += 1
            self._queue.append((room, when, kind, sender, text))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="chat-tui-logbook", daemon=True
                )
                self._thread.start()
            elif self._idle or len(self._queue) == self._max_queued // 8:
                self._lock.notify()  # waiting for work, or gathering a burst that is big

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until everything queued is written (or logging stopped); False if ``timeout``
        passed first. Blocks: not for the event loop (the app calls it on exit, via close)."""
        with self._lock:
            self._hurry += 1
            self._lock.notify_all()  # a writer gathering a burst writes it now
            try:
                return self._lock.wait_for(
                    lambda: self._failed or not (self._queue or self._busy), timeout
                )
            finally:
                self._hurry -= 1

    def close(self, timeout: float = 2.0) -> None:
        """Flush, then stop the writer thread; later writes are ignored."""
        self.flush(timeout)
        with self._lock:
            self._closing = True
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # --- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                self._busy = False
                self._lock.notify_all()  # flush() waiters
                while not self._queue and not self._closing:
                    self._idle = True
                    self._lock.wait(self._next_release())
                    self._release_claims(time.monotonic() - CLAIM_IDLE)
                self._idle = False
                if not self._queue:  # closing, and everything is written
                    self._release_claims(math.inf)
                    return
                # A burst comes as many entries within milliseconds: one batch for all of it
                # (or for the first eighth of the queue's bound, which the writer then has
                # time to catch up with before the bound drops entries).
                self._lock.wait_for(self._gathered, GATHER)
                batch = list(self._queue)
                self._queue.clear()
                self._busy = True
                dropped = self._dropped if not self._drop_reported else 0
                self._drop_reported = self._drop_reported or dropped > 0
            if dropped:
                self._report(f"logs: {dropped} entries were not written (the disk did not keep up)")
            try:
                self._write_batch(batch)
            except OSError as error:
                self._fail(error)
                return
            except Exception as error:  # never let the writer die silently
                self._fail(OSError(errno.EIO, repr(error)))
                return

    def _gathered(self) -> bool:
        return self._closing or self._hurry > 0 or len(self._queue) >= self._max_queued // 8

    def _write_batch(self, batch: list[tuple[str, datetime, str, str | None, str]]) -> None:
        # One open and one write per file per batch: a burst costs few system calls, and no
        # descriptor stays open between batches (a log directory removed meanwhile is made
        # again, and rotation by day needs no bookkeeping).
        groups: dict[tuple[str, date], list[str]] = {}
        folders: dict[str, str] = {}
        for room, when, kind, sender, text in batch:
            folder = folders.get(room)
            if folder is None:
                folder = folders[room] = room_dirname(room)
            moment = local(when)
            lines = format_entry(moment, kind, sender, text)
            groups.setdefault((folder, moment.date()), []).append(lines)
        now = time.monotonic()
        for (room, day), chunks in groups.items():
            folder = self.directory / room
            if not self._claim(room, folder, now):
                continue
            path = folder / (day.strftime(DAY_FORMAT) + SUFFIX)
            self._append(folder, path, "".join(chunks).encode("utf-8", "replace"))
        self._release_claims(now - CLAIM_IDLE)

    def _claim(self, room: str, folder: Path, now: float) -> bool:
        """Whether this app writes ``room``'s files now: it holds the room's lock, or took it."""
        claim = self._claims.get(room)
        if claim is not None:
            self._claims[room] = (claim[0], now)
            return True
        if folder not in self._known_dirs:
            self._make_dirs(folder)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if room not in self._others:
                self._others.add(room)
                name = unquote(room)
                shown = name if name.startswith("@") else f"#{name}"
                with contextlib.suppress(Exception):
                    self._on_notice(
                        f"logs: another chat-tui on this machine is logging {shown}; this "
                        "one takes over when it leaves or quits"
                    )
            return False
        except BaseException:
            os.close(fd)
            raise
        self._claims[room] = (fd, now)
        return True

    def _next_release(self) -> float | None:
        """Seconds until the oldest lock held is to be let go (None: none is held)."""
        if not self._claims:
            return None
        oldest = min(used for _, used in self._claims.values())
        return max(0.0, oldest + CLAIM_IDLE - time.monotonic())

    def _release_claims(self, before: float) -> None:
        """Let go of the locks of the rooms last written before ``before``."""
        for room, (fd, used) in list(self._claims.items()):
            if used < before:
                del self._claims[room]
                with contextlib.suppress(OSError):
                    os.close(fd)  # the lock goes with the descriptor

    def _append(self, folder: Path, path: Path, data: bytes) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            if folder not in self._known_dirs:
                raise FileNotFoundError(errno.ENOENT, "not made yet", str(folder))
            fd = os.open(path, flags, FILE_MODE)
        except FileNotFoundError:
            self._make_dirs(folder)
            fd = os.open(path, flags, FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                try:
                    written = os.write(fd, view)
                except OSError as error:
                    error.filename = error.filename or str(path)
                    raise
                view = view[written:]
        finally:
            os.close(fd)

    def _make_dirs(self, folder: Path) -> None:
        # makedirs(mode=...) only gives the mode to the last directory; each of ours gets it.
        os.makedirs(self.root, mode=DIR_MODE, exist_ok=True)
        for directory in (self.directory, folder):
            try:
                os.mkdir(directory, DIR_MODE)
            except FileExistsError:
                if not directory.is_dir():
                    raise NotADirectoryError(
                        errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory)
                    ) from None
        self._known_dirs.add(folder)

    def _fail(self, error: OSError) -> None:
        where = f"{error.filename}: " if error.filename else ""
        reason = error.strerror or str(error)
        self._release_claims(math.inf)
        with self._lock:
            self._failed = True
            self._queue.clear()
            self._busy = False
            self._lock.notify_all()
        self._report(f"logs are not written: {where}{reason}")

    def _report(self, message: str) -> None:
        with contextlib.suppress(Exception):  # e.g. the app closed: nothing more to tell
            self._on_error(message)
