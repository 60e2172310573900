"""``sqlite://``, the embedded broker that forgets nothing: after a clean stop or a SIGKILL and
a start, names come back to their tokens, rooms recover exactly (same epoch, same offsets),
what was acknowledged is in history, nonces still de-duplicate, read positions and bans hold;
a database that cannot be used stops the server at start with a clear error."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from chat_protocol import admin, admin_client
from chat_protocol.close import CloseCode
from chat_protocol.v2 import away as v2_away
from chat_protocol.v2 import read_up_to
from chat_server.backends import sqlite
from chat_server.backends.sqlite import SqliteBackend
from chat_server.events import EventKind, RoomEvent
from chat_server.ops.settings import Settings, a_broker_url
from chat_testing.ports import free_port
from chat_testing.servers import RunningServer, start_server
from chat_testing.waits import wait_until
from tests.server.test_names import refused
from tests.server.wsclients import V2Member, join, join_v2, resume_query

pytestmark = pytest.mark.memory_only  # its own broker: not run again per broker


def embedded(path: Path, port: int | None = None) -> RunningServer:
    return start_server(port, rate_limit=0, broker_url=f"sqlite://{path}")


def refused_start(db: Path) -> str:
    """What chat-server says when it will not start on ``db`` (it must not start)."""
    result = subprocess.run(
        [
            sys.executable, "-m", "chat_server", "--port", str(free_port()),
            "--broker-url", f"sqlite://{db}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 3, result
    return result.stdout + result.stderr


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "kill"])
async def test_a_restart_keeps_names_history_and_numbering(
    tmp_path: Path, stop: signal.Signals
) -> None:
    db = tmp_path / "chat.db"
    server = embedded(db)
    port = server.port
    try:
        url = server.chat_url("keep")
        alice = await join_v2(url)
        for n in range(5):
            await alice.send(f"before {n}", f"n{n}")
        acks = [
            f
            for f in await alice.recv_until(lambda f: f.get("nonce") == "n4")
            if f["type"] == "ack"
        ]
        assert [a["offset"] for a in acks] == [1, 2, 3, 4, 5]
        await alice.ws.send(read_up_to(3))
        # The read is kept once the server has it: a second connection of the token says so.
        twin = await join_v2(url, resume_query(alice))
        assert twin.welcome["read"] == 3
        await twin.close()
        epoch, token = alice.welcome["epoch"], alice.token
    finally:
        server.stop(stop)
    server = embedded(db, port)
    try:
        # Recovery from offset 2: the same epoch, the messages after it, exactly.
        back = await join_v2(url, resume_query(alice, since=2))
        assert back.welcome["resumed"] is True and back.name == alice.name
        assert back.welcome["epoch"] == epoch and back.welcome["recovered"] is True
        assert [m["text"] for m in await back.backlog()] == ["before 2", "before 3", "before 4"]
        # A send repeated with a nonce the server published before the restart: once.
        await back.send("before 4", "n4")
        ack = (await back.recv_until(lambda f: f["type"] == "ack"))[-1]
        assert ack["offset"] == 5
        # The numbering goes on.
        await back.send("after", "n5")
        assert (await back.recv_until(lambda f: f["type"] == "ack"))[-1]["offset"] == 6
        await back.close()
        # Where the token stopped reading, before the restart.
        again = await join_v2(url, resume_query(alice))
        assert again.welcome["read"] == 3
        await again.close()
        # History for a newcomer: what was acknowledged before the stop is there.
        newcomer = await join_v2(url, "history=10")
        assert [m["text"] for m in await newcomer.backlog()] == [
            *(f"before {n}" for n in range(5)),
            "after",
        ]
        assert token.startswith(alice.name)
        await newcomer.close()
        # Names, token digests and what was said: readable by the owner alone.
        for kept in tmp_path.glob("chat.db*"):
            assert stat.S_IMODE(kept.stat().st_mode) == 0o600, kept
    finally:
        server.stop()


async def test_a_text_client_sees_the_room_go_on(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    server = embedded(db)
    port = server.port
    try:
        member = await join(server.chat_url("plain"))
        await member.ws.send("one")
        await member.ws.send("two\nlines,\ta tab and ünïcødé 🎉")
        await member.recv_until(lambda frame: "ünïcødé" in frame)
    finally:
        server.stop(signal.SIGKILL)
    server = embedded(db, port)
    try:
        other = await join_v2(server.chat_url("plain"), "history=5")
        assert [m["text"] for m in await other.backlog()] == [
            "one",
            "two\nlines,\ta tab and ünïcødé 🎉",
        ]
        await other.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    "damage",
    ["garbage", "unwritable"],
)
def test_a_database_that_cannot_be_used_stops_the_server_with_a_clear_error(
    tmp_path: Path, damage: str
) -> None:
    db = tmp_path / "chat.db"
    if damage == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    else:
        db.mkdir()  # a directory where the file should be: unwritable even for root
    said = refused_start(db)
    assert f"cannot use the chat database {db}" in said, said
    if damage == "garbage":
        # Never silently replaced: the file is as it was.
        assert db.read_bytes().startswith(b"this is not a database")
        with pytest.raises(sqlite3.DatabaseError):
            sqlite3.connect(db).execute("SELECT 1 FROM rooms").fetchall()


async def test_two_servers_cannot_share_one_database(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    server = embedded(db)
    try:
        said = refused_start(db)
        assert "another chat-server uses it" in said
        assert server.health() is not None  # the first one is unharmed
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("sqlite://", None),
        ("sqlite:///srv/chat/chat.db", None),
        ("sqlite://host/chat.db", "names a file (sqlite:///path/file.db), not a host"),
        ("sqlit:///x.db", "unsupported broker URL"),
    ],
)
def test_a_broker_url_is_checked_before_anything_starts(url: str, problem: str | None) -> None:
    said = a_broker_url(url)
    assert said is None if problem is None else problem in (said or "")


async def test_bans_topics_and_locks_hold_after_a_crash(tmp_path: Path) -> None:
    token = "ops-" + secrets.token_hex(12)
    tokens = tmp_path / "admin-tokens"
    tokens.write_text(f"ops {token}\n")
    db = tmp_path / "chat.db"

    def serve(port: int | None = None) -> RunningServer:
        return start_server(
            port, rate_limit=0, broker_url=f"sqlite://{db}", admin_token_file=tokens
        )

    async def done(server: RunningServer, method: str, path: str, body: dict[str, Any]) -> None:
        answer = await admin_client.call(server.http_url, token, method, path, body)
        assert answer.ok, answer

    server = serve()
    port = server.port
    try:
        await done(server, "POST", admin.BAN_PATH, {"name": "Mallory", "reason": "abuse"})
        await done(server, "POST", admin.room_path("kept"), {"topic": "release on friday"})
        await done(server, "POST", admin.room_path("shut"), {"locked": True})
    finally:
        server.stop(signal.SIGKILL)
    server = serve(port)
    try:
        # In force from the first join after the start.
        code, reason = await refused(f"{server.chat_url('kept')}?name=Mallory")
        assert code == CloseCode.BANNED and reason.startswith("banned: abuse"), reason
        assert await refused(server.chat_url("shut")) == (CloseCode.POLICY_VIOLATION, "room locked")
        member = await join_v2(server.chat_url("kept"))
        assert member.welcome["topic"] == "release on friday"
        await member.close()
    finally:
        server.stop()


async def test_an_operator_is_told_done_only_once_the_rule_is_on_disk(tmp_path: Path) -> None:
    """A rule's "done" means on disk, as a message's acknowledgement does: with the disk
    refusing writes (the write-ahead log made immutable), a lock is answered 503 with the
    reason, not "done"; it is in force meanwhile, and once the disk takes writes again it is
    on disk, so that a SIGKILL then loses nothing."""
    token = "ops-" + secrets.token_hex(12)
    tokens = tmp_path / "admin-tokens"
    tokens.write_text(f"ops {token}\n")
    db = tmp_path / "chat.db"
    wal = tmp_path / "chat.db-wal"

    def serve(port: int | None = None) -> RunningServer:
        return start_server(
            port,
            rate_limit=0,
            broker_url=f"sqlite://{db}",
            admin_token_file=tokens,
            env={"CHAT_SERVER_BROKER_TIMEOUT": "0.5"},
        )

    server = serve()
    port = server.port
    try:
        first = await admin_client.call(
            server.http_url, token, "POST", admin.room_path("open"), {"topic": "hello"}
        )
        assert first.ok, first  # the write-ahead log exists from here on
        subprocess.run(["chattr", "+i", str(wal)], check=True)
        try:
            answer = await admin_client.call(
                server.http_url, token, "POST", admin.room_path("shut"), {"locked": True}
            )
            assert answer.status == 503, answer
            assert "the chat database cannot be written" in str(answer.body), answer
        finally:
            subprocess.run(["chattr", "-i", str(wal)], check=True)
        wait_until(lambda: server.health() is not None, timeout=10)  # written: available again
    finally:
        server.stop(signal.SIGKILL)
    server = serve(port)
    try:
        assert await refused(server.chat_url("shut")) == (CloseCode.POLICY_VIOLATION, "room locked")
    finally:
        server.stop()


def test_someone_elses_database_is_never_taken_over(tmp_path: Path) -> None:
    db = tmp_path / "theirs.db"
    with sqlite3.connect(db) as theirs:
        theirs.execute("CREATE TABLE invoices (amount)")
    db.chmod(0o644)
    said = refused_start(db)
    assert f"{db} is not a chat database (its tables: invoices)" in said
    assert stat.S_IMODE(db.stat().st_mode) == 0o644  # not even its mode changed
    with sqlite3.connect(db) as theirs:
        tables = theirs.execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("invoices",)]


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr (e2fsprogs)")
async def test_a_disk_that_refuses_a_write_loses_nothing_that_was_acknowledged(
    tmp_path: Path,
) -> None:
    """The write-ahead log made immutable (what a full or failing disk does to a write, and
    root cannot write past it either): the server stops taking messages, says why, and once
    the disk takes writes again it goes on where it was, with what it numbered on disk."""
    db = tmp_path / "chat.db"
    wal = tmp_path / "chat.db-wal"
    server = embedded(db)
    port = server.port
    url = server.chat_url("disk")
    try:
        alice = await join_v2(url)
        await alice.send("one", "n1")
        await alice.recv_until(lambda f: f.get("nonce") == "n1")
        subprocess.run(["chattr", "+i", str(wal)], check=True)
        try:
            await alice.send("two", "n2")
            code, reason = await closed(alice)
            assert code == CloseCode.TRY_AGAIN_LATER
            assert "the chat database cannot be written" in reason, reason
            # /health answers 503 (so health() has no body to give) while nothing is written.
            wait_until(lambda: server.health() is None, timeout=10)
        finally:
            subprocess.run(["chattr", "-i", str(wal)], check=True)
        # Written once the disk takes it: the chat is back, with "two" where it was numbered.
        back = await eventually_joined(url, resume_query(alice, since=1))
        assert [m["text"] for m in await back.backlog()] == ["two"]
        await back.send("two", "n2")  # the resend of an unacknowledged send: the same offset
        assert (await back.recv_until(lambda f: f["type"] == "ack"))[-1]["offset"] == 2
        await back.close()
    finally:
        server.stop(signal.SIGKILL)
    server = embedded(db, port)
    try:
        newcomer = await join_v2(url, "history=10")
        assert [(m["offset"], m["text"]) for m in await newcomer.backlog()] == [
            (1, "one"),
            (2, "two"),
        ]
        await newcomer.close()
    finally:
        server.stop()


async def closed(member: V2Member) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(member.ws.recv(), 10)
    received = info.value.rcvd
    assert received is not None
    return received.code, received.reason


async def eventually_joined(url: str, query: str) -> V2Member:
    """A chat.v2 join, tried until the server takes members again (1013 meanwhile)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        try:
            return await join_v2(url, query)
        except (ConnectionClosed, AssertionError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_history_on_disk_is_what_the_rooms_keep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written in the order said and swept now and then: after a restart each room has the
    last messages it kept, a room numbered anew none of its old ones, and the file holds
    about what the rooms keep, however much was said."""
    # Trimmed every 10 messages, swept from 16 rows, 32 a slice: a few hundred messages sweep
    # often.
    monkeypatch.setattr(sqlite, "TRIM_EVERY", 10)
    monkeypatch.setattr(sqlite, "SWEEP_ROWS", 16)
    monkeypatch.setattr(sqlite, "SWEEP_SLICE", 32)
    db = tmp_path / "chat.db"
    settings = Settings(broker_url=f"sqlite://{db}", history_size=5, history_rooms=2)
    backend = SqliteBackend(settings, "node-1")
    await backend.start()
    channels = backend.channels
    seen: asyncio.Queue[RoomEvent] = asyncio.Queue()
    channels.bind(lambda room, event: seen.put_nowait(event))  # once on disk
    for room in ("kept", "anew"):
        await channels.publish(room, EventKind.JOIN, "alice")
    for n in range(300):
        for room in ("kept", "anew"):
            channels.publish(room, EventKind.MESSAGE, "alice", f"{room} {n}")
            # Seen before the next is said: each its own transaction, many rows to sweep.
            while (await seen.get()).text != f"{room} {n}":
                pass
    # Left, then forgotten as two more rooms with a history go idle (history_rooms 2; rooms
    # where nothing was said would go first): numbered anew.
    await channels.publish("anew", EventKind.LEAVE, "alice")
    for room in ("idle-1", "idle-2"):
        await channels.publish(room, EventKind.JOIN, "bob")
        await channels.publish(room, EventKind.MESSAGE, "bob", "a word")
        await channels.publish(room, EventKind.LEAVE, "bob")
    await channels.publish("anew", EventKind.JOIN, "bob")
    await channels.publish("anew", EventKind.MESSAGE, "bob", "new numbering")
    await channels.publish("kept", EventKind.MESSAGE, "alice", "kept 300")
    await channels.publish("kept", EventKind.LEAVE, "alice")  # idle since now: kept longest
    await backend.close()
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT count(*) FROM said").fetchone()[0]
    # Not the 600 written: what the rooms keep (two rooms, 5 and up to 10 not yet trimmed
    # each), up to twice that before a sweep.
    assert rows <= 2 * 2 * (5 + 10), rows

    backend = SqliteBackend(settings, "node-1")
    await backend.start()  # the two rooms touched last are kept, idle
    try:
        kept = await backend.history.latest("kept", 1000, 10)
        assert [(m.offset, m.text) for m in kept] == [(n + 1, f"kept {n}") for n in range(296, 301)]
        anew = await backend.history.latest("anew", 1000, 10)
        assert [(m.offset, m.text) for m in anew] == [(1, "new numbering")]
    finally:
        await backend.close()


async def test_a_database_of_the_first_schema_is_read(tmp_path: Path) -> None:
    """A database written by the server before history was kept in write order (schema 1):
    converted at the first start, nothing it held lost."""
    db = tmp_path / "chat.db"
    said = "\x1e".join(
        f"{n}\x1fAlice\x1f{1700000000.0 + n!r}\x1fkey:{n}\x1fmessage {n}" for n in (1, 2)
    )
    with sqlite3.connect(db) as con:
        con.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema', '1');
            CREATE TABLE rooms (room TEXT PRIMARY KEY, epoch TEXT NOT NULL,
                offset INTEGER NOT NULL, touched REAL NOT NULL);
            CREATE TABLE chunks (room TEXT NOT NULL, first INTEGER NOT NULL,
                last INTEGER NOT NULL, messages TEXT NOT NULL, PRIMARY KEY (room, first));
            """
        )
        con.execute("INSERT INTO rooms VALUES ('old', 'cafe0001', 2, ?)", (time.time(),))
        con.execute("INSERT INTO chunks VALUES ('old', 1, 2, ?)", (said,))
    db.chmod(0o600)
    server = embedded(db)
    try:
        newcomer = await join_v2(server.chat_url("old"), "history=10")
        assert newcomer.welcome["epoch"] == "cafe0001"
        backlog = await newcomer.backlog()
        assert [(m["offset"], m["name"], m["text"]) for m in backlog] == [
            (1, "Alice", "message 1"),
            (2, "Alice", "message 2"),
        ]
        await newcomer.send("three", "n3")
        assert (await newcomer.recv_until(lambda f: f["type"] == "ack"))[-1]["offset"] == 3
        await newcomer.close()
    finally:
        server.stop()
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == (
            str(sqlite.SCHEMA_VERSION),
        )


async def test_history_beyond_the_window_is_read_from_disk(tmp_path: Path) -> None:
    """Memory keeps each room's newest WINDOW messages; a client asking for more gets the
    older ones from the database, in order, as if they were in memory, before and after a
    restart; a recovery across where the window begins is exact, one past the history is
    refused whole."""
    db = tmp_path / "chat.db"
    said = 250  # the window is 100: 150 on disk alone

    def serve(port: int | None = None) -> RunningServer:
        return start_server(port, rate_limit=0, broker_url=f"sqlite://{db}", history_size=200)

    async def check(url: str, member: V2Member) -> None:
        # --history-size (200) is what is promised: the newest 200, from disk and memory.
        newcomer = await join_v2(url, "history=1000")
        assert [(m["offset"], m["text"]) for m in await newcomer.backlog()] == [
            (n, f"m{n}") for n in range(said - 199, said + 1)
        ]
        await newcomer.close()
        # Across the window's edge (151): exactly what was missed, nothing twice.
        for since in (said - 200, 120, 150, 151):
            back = await join_v2(url, resume_query(member, since=since))
            assert back.welcome["recovered"] is True, since
            assert [m["offset"] for m in await back.backlog()] == list(
                range(since + 1, said + 1)
            ), since
            await back.close()
        # One message more than the history keeps: not recovered, never a partial range.
        lost = await join_v2(url, resume_query(member, since=said - 201))
        assert lost.welcome["recovered"] is False
        await lost.close()

    server = serve()
    port = server.port
    url = server.chat_url("deep")
    try:
        alice = await join_v2(url)
        for n in range(1, said + 1):
            await alice.send(f"m{n}", f"n{n}")
        await alice.recv_until(lambda f: f.get("nonce") == f"n{said}", timeout=30)
        await check(url, alice)
    finally:
        server.stop(signal.SIGKILL)
    server = serve(port)
    try:
        await check(url, alice)
    finally:
        server.stop()


async def test_the_window_is_what_memory_keeps(tmp_path: Path) -> None:
    """In the backend: a room keeps WINDOW messages in memory, whatever --history-size; a
    read asked for before what left the window is written waits for it."""
    settings = Settings(broker_url=f"sqlite://{tmp_path / 'chat.db'}", history_size=500)
    backend = SqliteBackend(settings, "node-1")
    await backend.start()
    try:
        channels = backend.channels
        await channels.publish("room", EventKind.JOIN, "alice")
        for n in range(1, 401):  # one batch: none of it written yet
            channels.publish("room", EventKind.MESSAGE, "alice", f"m{n}")
        ring = backend._state.rooms["room"].ring
        assert ring is not None and sqlite.WINDOW <= len(ring) <= sqlite.WINDOW + sqlite.SPILL
        kept = await backend.history.latest("room", 400, 1000)
        assert [(m.offset, m.text) for m in kept] == [(n, f"m{n}") for n in range(1, 401)]
        missed = await backend.history.since("room", 250, 400)
        assert missed is not None and [m.offset for m in missed] == list(range(251, 401))
        older = await backend.history.latest("room", 150, 3)
        assert [(m.offset, m.name, m.text, m.time) for m in older] == [
            (m.offset, m.name, m.text, m.time) for m in kept[147:150]
        ]
    finally:
        await backend.close()


async def test_a_fast_sender_is_not_taken_for_a_slow_consumer(tmp_path: Path) -> None:
    """A client sends as fast as it can: a transaction then holds many of its messages, whose
    echoes must not all land in its queue in one turn of the loop (it was closed 1008 "slow
    consumer" although it took everything at once). It keeps 32 messages ahead of its echoes
    (128 KB, twice the send buffer: a batch of them handed out in one turn is still a slow
    consumer), as a client that reads as it sends does; one that sent 1.2 MB before reading,
    or that a loaded machine let do so, is a slow consumer by its own doing."""
    server = start_server(
        rate_limit=0, broker_url=f"sqlite://{tmp_path / 'chat.db'}", send_buffer=64 * 1024
    )
    try:
        sender = await join_v2(server.chat_url("fast"))
        texts = [f"{n:03d} " + "x" * 4000 for n in range(300)]  # 1.2 MB, 19 send buffers
        frames: list[dict[str, Any]] = []
        for start in range(0, len(texts), 32):
            chunk = texts[start : start + 32]
            for n, text in enumerate(chunk, start):
                await sender.send(text, f"f{n}")
            frames += await sender.recv_until(
                lambda f, last=chunk[-1]: f["type"] == "message" and f["text"] == last, 30
            )
        said = [f["text"] for f in frames if f["type"] == "message"]
        assert said == texts
        await sender.close()
    finally:
        server.stop()


def test_the_default_file_is_in_the_servers_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sqlite://`` is ``chat-PORT.db`` of the state directory, where the pid file and the
    log are: $CHAT_SERVER_STATE_DIR when it is set."""
    monkeypatch.setenv("CHAT_SERVER_STATE_DIR", str(tmp_path))
    assert sqlite.database_path("sqlite://", 8123) == tmp_path / "chat-8123.db"
    assert sqlite.database_path("sqlite:///srv/chat.db", 8123) == Path("/srv/chat.db")


async def test_an_away_message_is_kept_across_a_restart(tmp_path: Path) -> None:
    """Away, then the server stopped and started: the name came back, its away message did
    not (the listings, and a direct message's "is away" answer, said nothing; found by a
    new-user run)."""
    db = tmp_path / "chat.db"
    server = embedded(db)
    port = server.port
    url = server.chat_url("afk")
    try:
        alice = await join_v2(url)
        await alice.ws.send(v2_away("gone fishing"))
        wait_until(
            lambda: server.get_json("/rooms/afk").get("away") == {alice.name: "gone fishing"},
            what="the away message in the listing",
        )
        await alice.close()
    finally:
        server.stop()
    server = embedded(db, port)
    try:
        back = await join_v2(url, resume_query(alice))
        assert back.name == alice.name
        assert server.get_json("/rooms/afk")["away"] == {alice.name: "gone fishing"}
        await back.close()
    finally:
        server.stop()


def test_a_database_of_the_second_schema_gets_the_away_column(tmp_path: Path) -> None:
    """Schema 2 (no away messages): its names are read, and kept with room for one."""
    db = tmp_path / "chat.db"
    with sqlite3.connect(db) as con:
        con.executescript(sqlite._SCHEMA.replace("forward TEXT, away TEXT", "forward TEXT"))
        con.execute("INSERT INTO meta VALUES ('schema', '2')")
        con.execute("INSERT INTO names VALUES ('alice', 'Alice', 'digest', 0.0, NULL)")
    db.chmod(0o600)
    database = sqlite._Database(db)
    database.open()
    try:
        assert database.load(10)["names"] == [("alice", "Alice", "digest", 0.0, None, None)]
    finally:
        database.close()
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == ("3",)


def test_writing_a_read_position_costs_the_same_however_many_are_kept(tmp_path: Path) -> None:
    """A read position (or an inbox) written costs the database as much with 20,000 of them
    kept as with 200: counted in SQLite's own steps (its progress handler), not time. Each
    used to look for the highest sequence number by reading the whole table, 5 ms a row at
    70,000 rows: one address's chat.v2 reads held up every other member's messages."""

    def steps_to_write(kept: int) -> int:
        db = tmp_path / f"reads-{kept}.db"
        database = sqlite._Database(db)
        database.open()
        try:
            con = database.con
            assert con is not None
            con.executemany(
                "INSERT INTO reads VALUES (?,?,?,?,?)",
                ((f"t{n}", "room", "e1", n, n) for n in range(kept)),
            )
            con.executemany(
                "INSERT INTO inboxes VALUES (?,?,?)", ((f"t{n}", "{}", n) for n in range(kept))
            )
            database.close()
            database.open()  # as at a start: what is on disk is read again
            con = database.con
            assert con is not None
            steps = 0

            def step() -> int:
                nonlocal steps
                steps += 1
                return 0

            con.set_progress_handler(step, 100)
            database.write(
                sqlite._Batch(
                    reads=[(("newcomer", "room"), ("e1", 7))], inboxes=[("newcomer", "{}")]
                )
            )
            con.set_progress_handler(None, 0)
            order = con.execute("SELECT token FROM reads ORDER BY seq DESC LIMIT 1").fetchone()
            assert order == ("newcomer",)  # the newest written is the newest in order
            return steps
        finally:
            database.close()

    few, many = steps_to_write(200), steps_to_write(20_000)
    assert many <= few + 5, (few, many)
