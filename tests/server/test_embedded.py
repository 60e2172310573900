"""``sqlite://``, the embedded broker that forgets nothing: after a clean stop or a SIGKILL and
a start, names come back to their tokens, rooms recover exactly (same epoch, same offsets),
what was acknowledged is in history, nonces still de-duplicate, read positions and bans hold;
a database that cannot be used stops the server at start with a clear error."""

from __future__ import annotations

import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chat_protocol.v2 import read_up_to
from chat_testing.ports import free_port
from chat_testing.servers import RunningServer, start_server
from tests.server.wsclients import join, join_v2, resume_query

pytestmark = pytest.mark.memory_only  # its own broker: not run again per broker


def embedded(path: Path, port: int | None = None) -> RunningServer:
    return start_server(port, rate_limit=0, broker_url=f"sqlite://{path}")


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
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chat_server",
            "--port",
            str(free_port()),
            "--broker-url",
            f"sqlite://{db}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    said = result.stdout + result.stderr
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
        result = subprocess.run(
            [
                sys.executable, "-m", "chat_server", "--port", str(free_port()),
                "--broker-url", f"sqlite://{db}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert result.returncode != 0
        assert "(another chat-server uses it)" in result.stdout + result.stderr
        assert server.health() is not None  # the first one is unharmed
    finally:
        server.stop()
