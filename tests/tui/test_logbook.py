"""The logs on disk (chat_tui.logbook) and searching them (chat_tui.grep): no server, no app."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import select
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from chat_tui import logbook as logbook_module
from chat_tui.grep import Hit, context, merge, parse_line, search_live, search_logs
from chat_tui.logbook import (
    CONTINUATION,
    Logbook,
    default_logs_dir,
    format_entry,
    room_dirname,
    server_dirname,
)
from chat_tui.scrollback import Entry, EntryKind

SERVER = "ws://127.0.0.1:8000"
DAY = datetime(2024, 5, 17, 14, 2, 11)
DAY_DATE = DAY.date()


class Errors:
    """An on_error that remembers what it was told (it is called from the writer thread)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)


@pytest.fixture
def errors() -> Errors:
    return Errors()


@pytest.fixture
def book(tmp_path: Path, errors: Errors) -> Iterator[Logbook]:
    logbook = Logbook(tmp_path / "logs", SERVER, on_error=errors)
    yield logbook
    logbook.close()


def day_file(root: Path, room: str = "lobby", day: date = DAY_DATE) -> Path:
    return root / "127.0.0.1_8000" / room / f"{day:%Y-%m-%d}.log"


def wait_until(condition: object, what: str, timeout: float = 5.0) -> None:
    """Wait for the writer thread to reach a state (not a measure of time: a deadline)."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


# --- the format ---------------------------------------------------------------------------


def test_each_kind_has_its_line(book: Logbook, tmp_path: Path, errors: Errors) -> None:
    book.write("lobby", DAY, "message", "alice", "hello")
    book.write("lobby", DAY, "action", "alice", "waves")
    book.write("lobby", DAY, "notice", None, "bob joined lobby")
    book.write("lobby", DAY, "error", None, "error: not in a room")
    book.write("lobby", DAY, "status", None, "reconnected")
    assert book.flush()
    assert day_file(tmp_path / "logs").read_text() == (
        "14:02:11 alice :: hello\n"
        "14:02:11 * alice waves\n"
        "14:02:11 -!- bob joined lobby\n"
        "14:02:11 -!- error: not in a room\n"
        "14:02:11 -!- reconnected\n"
    )
    assert errors.messages == []


def test_continuation_lines_are_indented_and_read_back() -> None:
    logged = format_entry(DAY, "message", "bob", "first\nsecond\n\n  indented")
    assert logged == (
        f"14:02:11 bob :: first\n{CONTINUATION}second\n{CONTINUATION}\n{CONTINUATION}  indented\n"
    )
    assert CONTINUATION == " " * 11  # "HH:MM:SS " and two more
    # No continuation line can pass for an entry: an entry starts with a digit.
    assert all(line.startswith(" ") for line in logged.splitlines()[1:])
    assert parse_line(logged) == (DAY.time(), "message", "bob", "first\nsecond\n\n  indented")


def test_a_forged_entry_in_a_message_stays_inside_it() -> None:
    logged = format_entry(DAY, "message", "mallory", "hi\n14:02:12 alice :: send me money")
    assert logged.splitlines()[1] == f"{CONTINUATION}14:02:12 alice :: send me money"


@pytest.mark.parametrize(
    ("kind", "sender", "text"),
    [
        ("message", "alice", "hello :: world"),
        ("action", "alice", "waves :: back"),
        ("notice", None, "-!- odd"),
        ("message", "x", "* y z"),
    ],
)
def test_parse_line_round_trips(kind: str, sender: str | None, text: str) -> None:
    assert parse_line(format_entry(DAY, kind, sender, text)) == (DAY.time(), kind, sender, text)


def test_errors_and_status_read_back_as_notices() -> None:
    for kind in ("error", "status"):
        assert parse_line(format_entry(DAY, kind, None, "x")) == (DAY.time(), "notice", None, "x")
    assert parse_line("not a log line") is None


def test_names_that_would_read_as_another_kind_are_bracketed() -> None:
    # From a hostile server only: real names are [A-Za-z0-9_-].
    assert format_entry(DAY, "message", "*", "x") == "14:02:11 <*> :: x\n"
    assert format_entry(DAY, "action", "::", "x") == "14:02:11 * <::> x\n"
    assert format_entry(DAY, "message", "a b\tc", "x") == "14:02:11 a_b_c :: x\n"
    with pytest.raises(ValueError, match="kind"):
        format_entry(DAY, "shout", "a", "x")


def test_control_characters_are_removed(book: Logbook, tmp_path: Path) -> None:
    hostile = "\x1b[2J\x1b]0;owned\x07red\x9b31m\x7f\r\nnext\x00\u202eline\ttab"
    book.write("lobby", DAY, "message", "ev\x1bil\x9b", hostile)
    book.write("lobby", DAY, "notice", None, "\x1b[1mbold\x1b[0m")
    assert book.flush()
    logged = day_file(tmp_path / "logs").read_bytes()
    assert logged == (
        b"14:02:11 evil :: [2J]0;ownedred31m\n"
        + CONTINUATION.encode()
        + b"nextline tab\n"
        + b"14:02:11 -!- [1mbold[0m\n"
    )
    assert not any((byte < 0x20 and byte != 0x0A) or byte == 0x7F for byte in logged)
    assert "\x9b" not in logged.decode()


def test_an_aware_time_is_logged_as_local_time(book: Logbook, tmp_path: Path) -> None:
    aware = datetime(2024, 5, 17, 12, 0, 0, tzinfo=UTC)
    book.write("lobby", aware, "message", "a", "x")
    assert book.flush()
    here = aware.astimezone()
    path = day_file(tmp_path / "logs", day=here.date())
    assert path.read_text() == f"{here:%H:%M:%S} a :: x\n"


# --- files and directories ----------------------------------------------------------------


def test_files_are_private(book: Logbook, tmp_path: Path) -> None:
    book.write("lobby", DAY, "message", "a", "x")
    book.write("@alice", DAY, "message", "a", "x")
    assert book.flush()
    root = tmp_path / "logs"
    for directory in (root, root / "127.0.0.1_8000", root / "127.0.0.1_8000" / "lobby"):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory
    for path in (day_file(root), day_file(root, "@alice")):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_a_new_day_starts_a_new_file(book: Logbook, tmp_path: Path) -> None:
    late = datetime(2024, 5, 17, 23, 59, 59)
    book.write("lobby", late, "message", "a", "good night")
    book.write("lobby", late + timedelta(seconds=2), "message", "a", "good morning")
    assert book.flush()
    root = tmp_path / "logs"
    assert day_file(root, day=date(2024, 5, 17)).read_text() == "23:59:59 a :: good night\n"
    assert day_file(root, day=date(2024, 5, 18)).read_text() == "00:00:01 a :: good morning\n"


def test_writes_append_to_what_is_there(tmp_path: Path, errors: Errors) -> None:
    for text in ("one", "two"):  # two sessions
        logbook = Logbook(tmp_path, SERVER, on_error=errors)
        logbook.write("lobby", DAY, "message", "a", text)
        logbook.close()
    assert day_file(tmp_path).read_text() == "14:02:11 a :: one\n14:02:11 a :: two\n"


def test_a_removed_directory_is_made_again(book: Logbook, tmp_path: Path) -> None:
    book.write("lobby", DAY, "message", "a", "one")
    assert book.flush()
    path = day_file(tmp_path / "logs")
    shutil.rmtree(path.parent)
    book.write("lobby", DAY, "message", "a", "two")
    assert book.flush()
    assert path.read_text() == "14:02:11 a :: two\n"


def test_two_apps_in_one_room_write_each_line_once(tmp_path: Path) -> None:
    """Two chat-tui of one user in the same room (two terminals, one data directory) wrote
    every line twice. The first to write a room logs it; the other says so once and still
    logs its own rooms."""
    root = tmp_path / "logs"
    told = Errors()
    first = Logbook(root, SERVER, on_error=Errors())
    second = Logbook(root, SERVER, on_error=Errors(), on_notice=told)
    try:
        first.write("lobby", DAY, "message", "a", "one")
        assert first.flush()
        for book in (first, second):  # both see the same lines
            book.write("lobby", DAY, "message", "a", "two")
            book.write("lobby", DAY, "message", "a", "three")
            assert book.flush()
        second.write("hall", DAY, "message", "b", "only here")
        assert second.flush()
        assert day_file(root).read_text() == (
            "14:02:11 a :: one\n14:02:11 a :: two\n14:02:11 a :: three\n"
        )
        assert day_file(root, "hall").read_text() == "14:02:11 b :: only here\n"
        assert told.messages == [
            "logs: another chat-tui on this machine is logging #lobby; this one takes over "
            "when it leaves or quits"
        ]
        # The first quits: the second writes the room from its next line on.
        first.close()
        second.write("lobby", DAY, "message", "a", "four")
        assert second.flush()
        assert day_file(root).read_text().endswith("14:02:11 a :: three\n14:02:11 a :: four\n")
        assert len(told.messages) == 1
    finally:
        first.close()
        second.close()


def test_a_room_left_idle_is_let_go_for_another_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app that stops writing a room (it left it, or went quiet while running) lets its
    lock go after CLAIM_IDLE seconds, without a line to wake it: another app in the room then
    logs it."""
    monkeypatch.setattr(logbook_module, "CLAIM_IDLE", 0.05)
    root = tmp_path / "logs"
    first = Logbook(root, SERVER, on_error=Errors())
    second = Logbook(root, SERVER, on_error=Errors(), on_notice=Errors())
    try:
        first.write("lobby", DAY, "message", "a", "one")
        assert first.flush()
        lock = day_file(root).parent / ".lock"

        def free() -> bool:
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            finally:
                os.close(fd)  # and the lock with it
            return True

        assert not free()
        wait_until(free, "the idle room's lock let go")
        second.write("lobby", DAY, "message", "a", "two")
        assert second.flush()
        assert day_file(root).read_text() == "14:02:11 a :: one\n14:02:11 a :: two\n"
        assert oct(os.stat(lock).st_mode & 0o777) == "0o600"
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    ("server", "directory"),
    [
        ("ws://127.0.0.1:8000", "127.0.0.1_8000"),
        ("ws://[::1]:8000/ws", "__1_8000"),
        ("wss://Chat.Example.org", "chat.example.org_443"),
        ("ws://example.org", "example.org_80"),
        ("ws://../../etc:1", "_._80"),
        ("not a url/../x", "not_a_url_.._x"),
        ("..", "_."),
    ],
)
def test_server_directory_names_are_safe(server: str, directory: str) -> None:
    assert server_dirname(server) == directory
    assert "/" not in directory and directory not in (".", "..")
    assert not directory.startswith(".")


@pytest.mark.parametrize(
    ("room", "directory"),
    [
        ("lobby", "lobby"),
        ("Room_2-b", "Room_2-b"),
        ("@alice", "@alice"),
        ("..", "%2E%2E"),
        ("../etc", "%2E%2E%2Fetc"),
        (".hidden", "%2Ehidden"),
        ("a/b", "a%2Fb"),
        ("", "%00"),
        ("café", "caf%C3%A9"),
    ],
)
def test_room_directory_names_are_safe(room: str, directory: str) -> None:
    assert room_dirname(room) == directory


def test_default_logs_dir_is_under_the_user_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_logs_dir() == tmp_path / "chat-tui" / "logs"


# --- failures -----------------------------------------------------------------------------


def test_an_unwritable_directory_is_reported_once(tmp_path: Path, errors: Errors) -> None:
    root = tmp_path / "logs"
    root.mkdir()
    if os.geteuid() == 0:
        # Root writes anywhere: a file where the server's directory should be fails for all.
        (root / "127.0.0.1_8000").write_text("in the way")
        where = str(root / "127.0.0.1_8000")
    else:
        root.chmod(0o500)
        where = str(root / "127.0.0.1_8000")
    logbook = Logbook(root, SERVER, on_error=errors)
    try:
        for n in range(5):
            logbook.write("lobby", DAY, "message", "a", f"line {n}")
        assert logbook.flush()
        wait_until(lambda: errors.messages, "the error")
        logbook.write("lobby", DAY, "message", "a", "after the failure")  # ignored
        logbook.close()
    finally:
        root.chmod(0o700)
    assert logbook.failed
    assert len(errors.messages) == 1
    assert errors.messages[0].startswith(f"logs are not written: {where}: ")
    assert "\n" not in errors.messages[0]


def test_a_full_disk_is_reported_once(tmp_path: Path, errors: Errors) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    path = day_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.symlink_to("/dev/full")  # every write to it fails with ENOSPC
    logbook = Logbook(tmp_path, SERVER, on_error=errors)
    for n in range(3):
        logbook.write("lobby", DAY, "message", "a", f"line {n}")
    assert logbook.flush()
    logbook.write("lobby", DAY, "message", "a", "after the failure")
    logbook.close()
    assert logbook.failed
    assert errors.messages == [f"logs are not written: {path}: No space left on device"]


def test_an_on_error_that_raises_does_not_stop_anything(tmp_path: Path) -> None:
    def on_error(message: str) -> None:
        raise RuntimeError("the app is gone")

    (tmp_path / "127.0.0.1_8000").write_text("in the way")
    logbook = Logbook(tmp_path, SERVER, on_error=on_error)
    logbook.write("lobby", DAY, "message", "a", "x")
    assert logbook.flush()
    logbook.close()
    assert logbook.failed


# --- off the caller's thread ----------------------------------------------------------------


class Fifo:
    """The day file as a FIFO: the writer thread blocks opening it until the test reads it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True)
        os.mkfifo(path, 0o600)
        self.path = path
        self.fd: int | None = None

    def read_lines(self, count: int) -> list[str]:
        # O_NONBLOCK: opening to read returns at once, which lets the writer's open go on.
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b"\n") < count:
            assert time.monotonic() < deadline, f"only {data!r} came"
            select.select([self.fd], [], [], 0.05)
            with contextlib.suppress(BlockingIOError):  # nothing written yet
                data += os.read(self.fd, 65536)
        return data.decode().splitlines()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


def test_write_returns_while_the_disk_is_stuck(tmp_path: Path, errors: Errors) -> None:
    fifo = Fifo(day_file(tmp_path))
    logbook = Logbook(tmp_path, SERVER, on_error=errors)
    try:
        logbook.write("lobby", DAY, "message", "a", "first")
        # The writer took it and is now stuck in open() (nobody reads the FIFO yet)...
        wait_until(lambda: logbook.pending == 0, "the writer to take the first line")
        assert not logbook.flush(timeout=0.05)
        # ...and writing still returns at once, on this thread, many times over.
        for n in range(100):
            logbook.write("lobby", DAY, "message", "a", f"line {n}")
        assert logbook.pending == 100
        lines = fifo.read_lines(101)
        assert logbook.flush()
    finally:
        fifo.read_lines(0)  # unblock the writer whatever happened
        logbook.close()
        fifo.close()
    assert lines == ["14:02:11 a :: first"] + [f"14:02:11 a :: line {n}" for n in range(100)]
    assert errors.messages == []


def test_a_full_queue_drops_the_oldest_and_says_so_once(tmp_path: Path, errors: Errors) -> None:
    fifo = Fifo(day_file(tmp_path))
    logbook = Logbook(tmp_path, SERVER, on_error=errors, max_queued=10)
    try:
        logbook.write("lobby", DAY, "message", "a", "first")
        wait_until(lambda: logbook.pending == 0, "the writer to take the first line")
        for n in range(25):
            logbook.write("lobby", DAY, "message", "a", f"line {n}")
        assert logbook.pending == 10
        assert logbook.dropped == 15
        lines = fifo.read_lines(11)
        assert logbook.flush()
        wait_until(lambda: errors.messages, "the report of the drop")
        for n in range(25, 50):  # more drops later are not reported again
            logbook.write("lobby", DAY, "message", "a", f"line {n}")
        logbook.flush()
    finally:
        fifo.read_lines(0)
        logbook.close()
        fifo.close()
    assert lines == ["14:02:11 a :: first"] + [f"14:02:11 a :: line {n}" for n in range(15, 25)]
    assert errors.messages == ["logs: 15 entries were not written (the disk did not keep up)"]
    assert not logbook.failed


def writers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "chat-tui-logbook"}


def test_close_stops_the_writer_thread(tmp_path: Path, errors: Errors) -> None:
    before = writers()
    logbook = Logbook(tmp_path, SERVER, on_error=errors)
    logbook.write("lobby", DAY, "message", "a", "x")
    (thread,) = writers() - before
    assert thread.daemon
    logbook.close()
    assert not thread.is_alive()
    assert day_file(tmp_path).read_text() == "14:02:11 a :: x\n"
    logbook.write("lobby", DAY, "message", "a", "after close")  # ignored, no thread again
    assert writers() - before == set()


def test_no_thread_until_the_first_write(tmp_path: Path, errors: Errors) -> None:
    before = writers()
    logbook = Logbook(tmp_path, SERVER, on_error=errors)
    assert logbook.flush()
    logbook.close()
    assert writers() == before
    assert not (tmp_path / "127.0.0.1_8000").exists()


# --- grep -----------------------------------------------------------------------------------

_VOCABULARY = "the of and to in is you that it he was for on are as with his they at be this"
WORDS = _VOCABULARY.split()
NAMES = ("alice", "bob", "carol", "dave")


def write_logs(root: Path, *, lines: int, days: int, rooms: int, seed: int = 7) -> None:
    """Logs in the logbook's format, fast: whole files at once from a pool of entries."""
    rng = random.Random(seed)
    midnight = datetime(2000, 1, 1)
    pool = []
    for n in range(2000):
        words = " ".join(rng.choices(WORDS, k=rng.randint(4, 14)))
        kind = ("message", "message", "message", "action", "notice")[n % 5]
        sender = None if kind == "notice" else rng.choice(NAMES)
        text = words + ("\n" + words if n % 17 == 0 else "")  # some multi-line ones
        pool.append(format_entry(midnight, kind, sender, text)[len("00:00:00 ") :])
    stamps = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d} " for s in range(86400)]
    per_file = lines // (days * rooms)
    for room in range(rooms):
        folder = root / "127.0.0.1_8000" / f"room-{room}"
        folder.mkdir(parents=True)
        for day in range(days):
            text = "".join(
                stamps[i * 86400 // per_file] + body
                for i, body in enumerate(rng.choices(pool, k=per_file))
            )
            (folder / f"{date(2024, 1, 1) + timedelta(days=day):%Y-%m-%d}.log").write_text(text)


# An entry read the slow way, line by line: (day, time stamp, room, line number, path, its lines,
# what a query may match: its lines but the time stamp, lowered).
Logged = tuple[date, str, str, int, Path, str, str]


def every_entry(root: Path) -> list[Logged]:
    """Every entry of every log, its lines joined: what grep must agree with."""
    entries = []
    for path in root.glob("*/*/*.log"):
        day = date.fromisoformat(path.stem)
        lines = path.read_text().split("\n")[:-1]
        number = 0
        while number < len(lines):
            last = number + 1
            while last < len(lines) and lines[last].startswith(" "):
                last += 1
            raw = "\n".join(lines[number:last])
            searchable = raw[len("00:00:00 ") :].lower()
            entries.append((day, raw[:8], path.parent.name, number + 1, path, raw, searchable))
            number = last
    return entries


def expected_hits(entries: list[Logged], query: str, limit: int) -> list[Hit]:
    """The newest ``limit`` entries with ``query`` anywhere but in their time stamp."""
    found = [e for e in entries if query.lower() in e[6]]
    found.sort(key=lambda e: e[:4], reverse=True)
    hits = []
    for day, _, room, number, path, raw, _ in found[:limit]:
        parsed = parse_line(raw)
        assert parsed is not None, raw
        moment, kind, sender, text = parsed
        when = datetime.combine(day, moment)
        hits.append(Hit(room, when, sender, text, "log", path, number, kind, path.parents[1].name))
    return hits


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Logged]]:
    """100,000 lines: 60 days of 3 rooms, and a few planted entries."""
    root = tmp_path_factory.mktemp("logs")
    write_logs(root, lines=100_000, days=60, rooms=3)
    book = Logbook(root, SERVER, on_error=pytest.fail)
    book.write("room-1", datetime(2024, 1, 1, 0, 0, 0), "message", "alice", "Zanzibar at dawn")
    book.write("room-2", datetime(2024, 1, 30, 12, 0, 0), "action", "bob", "sails to ZANZIBAR")
    book.write("room-0", datetime(2024, 2, 29, 23, 59, 59), "message", "c", "a\nzanzibar\nb")
    book.write("room-0", datetime(2024, 2, 29, 23, 59, 59), "notice", None, "Café in Lisbon")
    book.close()
    other = Logbook(root, "ws://[::1]:9000", on_error=pytest.fail)
    other.write("lobby", datetime(2023, 6, 1, 9, 0, 0), "message", "eve", "zanzibar, again")
    other.close()
    return root, every_entry(root)


def test_a_rare_word_is_found_newest_first(year: tuple[Path, list[Logged]]) -> None:
    root, _ = year
    hits = search_logs(root, None, "zanzibar")
    assert [(h.room, str(h.when), h.kind, h.sender, h.text) for h in hits] == [
        ("room-0", "2024-02-29 23:59:59", "message", "c", "a\nzanzibar\nb"),
        ("room-2", "2024-01-30 12:00:00", "action", "bob", "sails to ZANZIBAR"),
        ("room-1", "2024-01-01 00:00:00", "message", "alice", "Zanzibar at dawn"),
        ("lobby", "2023-06-01 09:00:00", "message", "eve", "zanzibar, again"),
    ]
    assert {h.server for h in hits} == {"127.0.0.1_8000", "__1_9000"}
    # Line numbers point at the first line of the entry in its file.
    for hit in hits:
        assert hit.path is not None and hit.line_number is not None
        first = context(hit.path, hit.line_number, around=0)
        assert first[0].startswith(f"{hit.when:%H:%M:%S} ")
    assert [h.room for h in search_logs(root, SERVER, "ZanZibar")] == [
        "room-0",
        "room-2",
        "room-1",
    ]
    assert [h.room for h in search_logs(root, "__1_9000", "zanzibar")] == ["lobby"]


@pytest.mark.parametrize("query", ["the", "ALICE", "he was", ":: to", "* bob", "-!-"])
def test_grep_agrees_with_a_line_by_line_scan(year: tuple[Path, list[Logged]], query: str) -> None:
    root, entries = year
    for limit in (1, 50, 700):
        assert search_logs(root, None, query, limit=limit) == expected_hits(entries, query, limit)


def test_a_word_in_no_entry_and_time_stamps_find_nothing(year: tuple[Path, list[Logged]]) -> None:
    root, _ = year
    assert search_logs(root, None, "qwertyuiop") == []
    assert search_logs(root, None, "12:00") == []  # every time stamp has it: none count
    assert search_logs(root, None, "0") == []
    assert search_logs(root, None, "   ") == []
    assert search_logs(root, None, "the", limit=0) == []


def test_matches_in_time_stamps_are_skipped_without_losing_count(tmp_path: Path) -> None:
    book = Logbook(tmp_path, SERVER, on_error=pytest.fail)
    for n in range(20):
        said = "meet at 12:00" if n in (3, 11) else f"line {n}"
        book.write("lobby", datetime(2024, 1, 1, 12, 0, n), "message", "a", said + "\nmore")
    book.close()
    hits = search_logs(tmp_path, None, "12:00")
    assert [(h.when.second, h.line_number) for h in hits] == [(11, 23), (3, 7)]
    for hit in hits:
        assert hit.path is not None and hit.line_number is not None
        assert context(hit.path, hit.line_number, around=0) == [
            f"12:00:{hit.when.second:02d} a :: meet at 12:00"
        ]


def test_a_non_ascii_query_ignores_case(year: tuple[Path, list[Logged]]) -> None:
    root, _ = year
    for query in ("café", "CAFÉ", "é in lis"):
        (hit,) = search_logs(root, None, query)
        assert (hit.kind, hit.sender, hit.text) == ("notice", None, "Café in Lisbon")


def test_a_missing_root_has_no_hits(tmp_path: Path) -> None:
    assert search_logs(tmp_path / "nothing", None, "x") == []


def test_context_gives_the_lines_around(tmp_path: Path) -> None:
    path = tmp_path / "2024-01-01.log"
    path.write_text("".join(f"00:00:0{n} a :: {n}\n" for n in range(10)))
    assert context(path, 1, around=2) == ["00:00:00 a :: 0", "00:00:01 a :: 1", "00:00:02 a :: 2"]
    assert context(path, 6, around=1) == ["00:00:04 a :: 4", "00:00:05 a :: 5", "00:00:06 a :: 6"]
    assert context(path, 10, around=5)[-1] == "00:00:09 a :: 9"


def test_live_hits_merge_with_logged_ones_once(tmp_path: Path) -> None:
    said = datetime(2024, 3, 1, 10, 0, 0, 250_000)
    entries = [
        Entry(EntryKind.MESSAGE, "meet at the zoo", said, sender="alice"),
        Entry(EntryKind.MESSAGE, "/me goes to the ZOO", said + timedelta(seconds=5), "bob"),
        Entry(EntryKind.NOTICE, "nothing", said),
    ]
    live = search_live([("lobby", entries)], "zoo")
    assert [(h.kind, h.sender, h.text, h.source, h.path) for h in live] == [
        ("action", "bob", "goes to the ZOO", "live", None),
        ("message", "alice", "meet at the zoo", "live", None),
    ]
    book = Logbook(tmp_path, SERVER, on_error=pytest.fail)
    book.write("lobby", said, "message", "alice", "meet at the zoo")  # logged, not bob's yet
    book.close()
    logged = search_logs(tmp_path, None, "zoo")
    both = merge(logged, live)
    # Alice's is both: the live one stays, as choosing it shows it in its room.
    assert [(h.sender, h.source) for h in both] == [("bob", "live"), ("alice", "live")]


def test_a_conversation_logged_under_an_older_name_is_found_once(tmp_path: Path) -> None:
    """Bob wrote, then became Robert: the conversation follows him (@Robert, live) while its
    lines were logged under @Bob. /grep listed the message twice (a new-user run)."""
    said = datetime(2024, 3, 1, 10, 0, 0)
    book = Logbook(tmp_path, SERVER, on_error=pytest.fail)
    book.write("@Bob", said, "message", "Bob", "psst, private")
    book.write("@Carol", said, "message", "Carol", "psst, private")  # another person's
    book.close()
    live = search_live(
        [("@Robert", [Entry(EntryKind.MESSAGE, "psst, private", said, "Bob")])], "psst"
    )
    both = merge(search_logs(tmp_path, None, "psst"), live)
    assert [(h.room, h.sender, h.source) for h in both] == [
        ("@Robert", "Bob", "live"),
        ("@Carol", "Carol", "log"),
    ]


def test_a_burst_of_one_second_is_found_newest_first_live_and_logged(tmp_path: Path) -> None:
    """Messages of the same time (a burst): /grep lists them newest first, the live ones as
    the logged ones, and the live ones (the newest the scrollback keeps) before."""
    said = datetime(2024, 3, 1, 10, 0, 0)
    book = Logbook(tmp_path, SERVER, on_error=pytest.fail)
    for n in range(3):  # pushed out of the scrollback, kept in the log
        book.write("lobby", said, "message", "flood", f"burst {n}")
    book.close()
    entries = [Entry(EntryKind.MESSAGE, f"burst {n}", said, sender="flood") for n in range(3, 6)]
    live = search_live([("lobby", entries)], "burst")
    assert [h.text for h in live] == ["burst 5", "burst 4", "burst 3"]
    both = merge(search_logs(tmp_path, None, "burst"), live)
    assert [h.text for h in both] == [f"burst {n}" for n in range(5, -1, -1)]


def test_a_year_of_a_million_lines_is_searched_to_the_planted_entries(tmp_path: Path) -> None:
    """A year of logs, 1,000,000 lines in 1,095 files: a rare word is found exactly where it
    was said, newest first (how fast is bench/grep_bench.py's to say)."""
    write_logs(tmp_path, lines=1_000_000, days=365, rooms=3)
    book = Logbook(tmp_path, SERVER, on_error=pytest.fail)
    book.write("room-1", datetime(2024, 3, 9, 8, 0, 0), "message", "alice", "the quokka plan")
    book.write("room-2", datetime(2024, 11, 2, 17, 30, 5), "message", "bob", "Quokka! again")
    book.close()
    hits = search_logs(tmp_path, None, "quokka")
    assert [(h.room, str(h.when), h.sender, h.text) for h in hits] == [
        ("room-2", "2024-11-02 17:30:05", "bob", "Quokka! again"),
        ("room-1", "2024-03-09 08:00:00", "alice", "the quokka plan"),
    ]
