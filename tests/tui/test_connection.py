"""RoomConnection against real chat servers (and small scripted ones for the odd cases)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from textual.message import Message
from websockets.asyncio.server import ServerConnection, serve

from chat_server import protocol
from chat_server.protocol import FrameKind
from chat_tui.connection import ConnectionState, Echo, Refused, RoomConnection
from chat_tui.scrollback import SendState
from tests.servers import RunningServer, free_port, start_server

BASE = 0.05
CAP = 0.5
TIMEOUT = 15.0

Frames = RoomConnection.FrameReceived


class Recorder:
    """The ``post`` callable: records every message and wakes whoever waits for one.

    ``posted`` is what the connection posted; ``messages`` the same with every batch
    (FramesReceived) spelled out as the FrameReceived and SendStateChanged messages it stands
    for, in order.
    """

    def __init__(self) -> None:
        self.posted: list[Message] = []
        self.messages: list[Message] = []
        self._changed = asyncio.Event()

    def __call__(self, message: Message) -> None:
        self.posted.append(message)
        if isinstance(message, RoomConnection.FramesReceived):
            assert message.items, "an empty batch"
            self.messages += expand(message)
        else:
            self.messages.append(message)
        self._changed.set()

    def batches(self) -> list[RoomConnection.FramesReceived]:
        return [m for m in self.posted if isinstance(m, RoomConnection.FramesReceived)]

    def of(self, kind: type[Any]) -> list[Any]:
        return [m for m in self.messages if isinstance(m, kind)]

    def states(self) -> list[ConnectionState]:
        return [m.state for m in self.of(RoomConnection.StateChanged)]

    def names(self) -> list[str]:
        return [m.name for m in self.of(RoomConnection.NameAssigned)]

    def send_states(self) -> dict[int, SendState]:
        """The latest state of each local id."""
        return {m.local_id: m.state for m in self.of(RoomConnection.SendStateChanged)}

    def frames(self, kind: FrameKind | None = None) -> list[protocol.Frame]:
        return [m.frame for m in self.of(Frames) if kind is None or m.frame.kind is kind]

    async def wait_for(
        self, predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (result := predicate()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; got {self.describe()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return result

    def describe(self) -> str:
        return "\n".join(f"{type(m).__name__} {vars(m)}" for m in self.messages)


def expand(batch: RoomConnection.FramesReceived) -> list[Message]:
    room = batch.room
    messages: list[Message] = []
    for item in batch.items:
        if isinstance(item, Echo):
            messages.append(Frames(room, item.frame, item.local_id))
            messages.append(RoomConnection.SendStateChanged(room, item.local_id, SendState.SENT))
        elif isinstance(item, Refused):
            messages.append(RoomConnection.SendStateChanged(room, item.local_id, SendState.REFUSED))
        else:
            messages.append(Frames(room, item, None))
    return messages


async def poll(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll something outside the connection (server log, HTTP) with a deadline."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return result


@contextlib.asynccontextmanager
async def running(
    url: str, room: str
) -> AsyncIterator[tuple[RoomConnection, Recorder, asyncio.Task[None]]]:
    recorder = Recorder()
    conn = RoomConnection(url, room, recorder, backoff_base=BASE, backoff_cap=CAP)
    task = asyncio.create_task(conn.run())
    try:
        yield conn, recorder, task
    finally:
        await conn.close()
        await asyncio.wait_for(task, TIMEOUT)


def members(server: RunningServer, room: str) -> list[str]:
    try:
        return server.get_json(f"/rooms/{room}")["members"]
    except OSError:  # 404: the room has no members
        return []


# --- against the real server ---------------------------------------------------------------


async def test_learns_name_and_echoes_mark_messages_sent(shared_server: RunningServer) -> None:
    async with running(shared_server.ws_url, "conn-echo") as (conn, rec, _):
        name = await rec.wait_for(lambda: conn.name, "own name")
        assert protocol.is_valid_name(name)
        assert rec.names() == [name]
        assert members(shared_server, "conn-echo") == [name]

        texts = ["first", "second\nwith two lines", "bell\x07 stripped", "[bold]literal[/]"]
        ids = [conn.send(text) for text in texts]
        await rec.wait_for(
            lambda: [rec.send_states().get(i) for i in ids] == [SendState.SENT] * 4,
            "all four SENT",
        )
        echoes = [m for m in rec.of(Frames) if m.local_id is not None]
        assert [m.local_id for m in echoes] == ids
        assert [(m.frame.name, m.frame.text) for m in echoes] == [
            (name, "first"),
            (name, "second\nwith two lines"),
            (name, "bell stripped"),
            (name, "[bold]literal[/]"),
        ]
        assert conn.pending == 0


async def test_other_members_receive_messages_in_order(shared_server: RunningServer) -> None:
    from websockets.asyncio.client import connect

    async with connect(shared_server.chat_url("conn-peer")) as peer:
        await peer.recv()  # the peer's own join notice
        async with running(shared_server.ws_url, "conn-peer") as (conn, rec, _):
            name = await rec.wait_for(lambda: conn.name, "own name")
            assert await peer.recv() == protocol.format_join(name)
            for i in range(20):
                conn.send(f"message {i}")
            received = [await asyncio.wait_for(peer.recv(), TIMEOUT) for _ in range(20)]
            assert received == [protocol.format_message(name, f"message {i}") for i in range(20)]
        # close() leaves the room: the peer sees it.
        assert await asyncio.wait_for(peer.recv(), TIMEOUT) == protocol.format_leave(name)


async def test_too_long_message_is_refused(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(max_message_chars=10, rate_limit=0)
    async with running(server.ws_url, "conn-long") as (conn, rec, _):
        await rec.wait_for(lambda: conn.name, "own name")
        short, long, after = conn.send("short"), conn.send("x" * 11), conn.send("after")
        await rec.wait_for(lambda: len(rec.send_states()) == 3, "three outcomes")
        assert rec.send_states() == {
            short: SendState.SENT,
            long: SendState.REFUSED,
            after: SendState.SENT,
        }
        errors = [m for m in rec.of(Frames) if m.frame.kind is FrameKind.ERROR]
        assert len(errors) == 1 and "too long" in errors[0].frame.text
        assert errors[0].local_id is None
        assert [f.text for f in rec.frames(FrameKind.MESSAGE)] == ["short", "after"]


async def test_a_burst_is_paced_under_the_servers_flood_limit(
    server_factory: Callable[..., RunningServer],
) -> None:
    """40 messages at once (a flush after reconnecting) against the default 10/s, burst 20."""
    server = server_factory()
    async with running(server.ws_url, "conn-burst") as (conn, rec, _):
        await rec.wait_for(lambda: conn.name, "own name")
        ids = [conn.send(f"burst {i}") for i in range(40)]
        await rec.wait_for(lambda: len(rec.send_states()) == 40, "forty outcomes", timeout=30)
        assert [rec.send_states()[i] for i in ids] == [SendState.SENT] * 40
        assert rec.frames(FrameKind.ERROR) == []


async def test_nothing_worth_sending_is_refused_locally(shared_server: RunningServer) -> None:
    async with running(shared_server.ws_url, "conn-empty") as (conn, rec, _):
        await rec.wait_for(lambda: conn.name, "own name")
        blank = conn.send(" \x07\u200e ")
        big = conn.send("x" * (protocol.MAX_FRAME_BYTES + 1))
        ok = conn.send("ok")
        await rec.wait_for(lambda: rec.send_states().get(ok) is SendState.SENT, "ok SENT")
        assert rec.send_states() == {
            blank: SendState.REFUSED,
            big: SendState.REFUSED,
            ok: SendState.SENT,
        }
        # Only "ok" reached the server; in particular no 1009 close for the big one.
        assert [f.text for f in rec.frames(FrameKind.MESSAGE)] == ["ok"]
        assert rec.states() == [ConnectionState.CONNECTING, ConnectionState.CONNECTED]


async def test_messages_sent_offline_are_delivered_after_restart_in_order(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory(rate_limit=0)
    restarted: RunningServer | None = None
    try:
        async with running(server.ws_url, "conn-restart") as (conn, rec, _):
            first_name = await rec.wait_for(lambda: conn.name, "own name")
            online = conn.send("before the restart")
            await rec.wait_for(lambda: rec.send_states().get(online) is SendState.SENT, "SENT")

            server.stop()
            offline = await rec.wait_for(
                lambda: [m for m in rec.of(RoomConnection.StateChanged) if m.state == "offline"],
                "OFFLINE",
            )
            assert "1012" in offline[0].detail or "1001" in offline[0].detail
            assert offline[0].retry_in is not None and 0 <= offline[0].retry_in <= CAP

            ids = [conn.send(f"offline {i}") for i in range(10)]
            assert conn.pending == 10
            assert all(i not in rec.send_states() for i in ids)

            restarted = server.restart()
            await rec.wait_for(
                lambda: [rec.send_states().get(i) for i in ids] == [SendState.SENT] * 10,
                "all offline messages SENT",
            )
            second_name = rec.names()[-1]
            assert rec.names() == [first_name, second_name]
            echoes = [(m.frame.name, m.frame.text) for m in rec.of(Frames) if m.local_id in ids]
            assert echoes == [(second_name, f"offline {i}") for i in range(10)]
            assert conn.pending == 0
            assert conn.state is ConnectionState.CONNECTED
    finally:
        if restarted is not None:
            restarted.stop()


async def test_unreachable_server_at_start_is_retried() -> None:
    port = free_port()
    server: RunningServer | None = None
    try:
        async with running(f"ws://127.0.0.1:{port}", "conn-late") as (conn, rec, _):
            await rec.wait_for(lambda: rec.states().count(ConnectionState.OFFLINE) >= 2, "retries")
            offline = rec.of(RoomConnection.StateChanged)[1]
            assert offline.state is ConnectionState.OFFLINE
            assert "unreachable" in offline.detail
            queued = conn.send("typed before the server existed")

            server = start_server(port=port, rate_limit=0)
            await rec.wait_for(lambda: rec.send_states().get(queued) is SendState.SENT, "SENT")
            assert conn.name is not None and rec.names() == [conn.name]
    finally:
        if server is not None:
            server.stop()


async def test_invalid_room_fails_and_is_not_retried(shared_server: RunningServer) -> None:
    room = "x" * 65
    rec = Recorder()
    conn = RoomConnection(shared_server.ws_url, room, rec, backoff_base=BASE, backoff_cap=CAP)
    # run() gives up by itself: it returns instead of retrying.
    await asyncio.wait_for(conn.run(), TIMEOUT)
    assert rec.states() == [ConnectionState.CONNECTING, ConnectionState.CONNECTED, "failed"]
    failed = rec.of(RoomConnection.StateChanged)[-1]
    assert "1008" in failed.detail and protocol.ROOM_RULE in failed.detail
    assert failed.retry_in is None
    assert conn.state is ConnectionState.FAILED
    await conn.close()
    assert conn.state is ConnectionState.CLOSED


async def test_close_sends_1000_and_leaves_the_room(shared_server: RunningServer) -> None:
    rec = Recorder()
    conn = RoomConnection(shared_server.ws_url, "conn-close", rec)
    task = asyncio.create_task(conn.run())
    name = await rec.wait_for(lambda: conn.name, "own name")
    await conn.close()
    await asyncio.wait_for(task, TIMEOUT)
    assert rec.states()[-1] is ConnectionState.CLOSED
    await poll(
        lambda: f"left room=conn-close name={name} code=1000" in shared_server.log(),
        "a 1000 close in the server log",
    )
    assert members(shared_server, "conn-close") == []


async def test_cancelling_run_closes_with_1000_and_leaves_no_tasks(
    shared_server: RunningServer,
) -> None:
    before = asyncio.all_tasks()
    rec = Recorder()
    conn = RoomConnection(shared_server.ws_url, "conn-cancel", rec)
    task = asyncio.create_task(conn.run())
    name = await rec.wait_for(lambda: conn.name, "own name")
    conn.send("still pending, maybe")
    task.cancel()  # what Textual does to a worker when the app exits
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() == before
    await poll(
        lambda: f"left room=conn-cancel name={name} code=1000" in shared_server.log(),
        "a 1000 close in the server log",
    )


# --- against scripted servers ---------------------------------------------------------------

Handler = Callable[[ServerConnection, int], Awaitable[None]]


@contextlib.asynccontextmanager
async def scripted(handler: Handler) -> AsyncIterator[tuple[str, list[float]]]:
    """A websockets-library server running ``handler(ws, connection_number)``.

    Yields its URL and the time of each connection.
    """
    connected: list[float] = []

    async def serve_one(ws: ServerConnection) -> None:
        connected.append(time.monotonic())
        await handler(ws, len(connected))

    async with serve(serve_one, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}", connected


async def test_server_without_join_notice_works_without_a_name() -> None:
    received: list[str] = []

    async def handler(ws: ServerConnection, _: int) -> None:
        await ws.send("welcome to a server that does things its own way")
        async for text in ws:
            received.append(str(text))
            await ws.send(f"someone :: {text}")

    async with (
        scripted(handler) as (url, _),
        running(url, "lobby") as (conn, rec, _),
    ):
        first = conn.send("hello")
        second = conn.send("bell\x07")
        await rec.wait_for(lambda: len(rec.send_states()) == 2, "both outcomes")
        assert rec.send_states() == {first: SendState.SENT, second: SendState.SENT}
        assert received == ["hello", "bell"]  # sent sanitised, so the echo matches
        assert rec.frames()[0].kind is FrameKind.NOTICE
        assert rec.names() == [] and conn.name is None
        assert conn.state is ConnectionState.CONNECTED


async def test_skipped_messages_are_refused_in_fifo_order() -> None:
    async def handler(ws: ServerConnection, _: int) -> None:
        await ws.send("user_abcdef12 joined the chat")
        async for text in ws:
            if "drop" not in str(text):  # a server dropping messages silently
                await ws.send(f"user_abcdef12 :: {text}")

    async with scripted(handler) as (url, _), running(url, "fifo") as (conn, rec, _):
        await rec.wait_for(lambda: conn.name == "user_abcdef12", "own name")
        ids = [conn.send(t) for t in ("a", "drop 1", "drop 2", "b", "drop 3")]
        await rec.wait_for(lambda: len(rec.send_states()) == 4, "four outcomes")
        states = rec.send_states()
        assert [states.get(i) for i in ids] == [
            SendState.SENT,
            SendState.REFUSED,
            SendState.REFUSED,
            SendState.SENT,
            None,  # not overtaken by any echo yet: still pending
        ]
        assert conn.pending == 1


async def test_unechoed_messages_are_sent_again_after_a_drop() -> None:
    received: list[str] = []

    async def handler(ws: ServerConnection, number: int) -> None:
        await ws.send(f"user_abcdef{number:02d} joined the chat")
        async for text in ws:
            received.append(str(text))
            if number == 1:
                # Received but never echoed: the connection drops first.
                await ws.close(1012, "restarting")
                return
            await ws.send(f"user_abcdef{number:02d} :: {text}")

    async with scripted(handler) as (url, connected), running(url, "again") as (conn, rec, _):
        await rec.wait_for(lambda: conn.name == "user_abcdef01", "first name")
        message = conn.send("at least once")
        await rec.wait_for(lambda: rec.send_states().get(message) is SendState.SENT, "SENT")
        assert rec.names() == ["user_abcdef01", "user_abcdef02"]
        assert len(connected) == 2
        assert received == ["at least once", "at least once"]
        assert ConnectionState.OFFLINE in rec.states()


async def test_slow_consumer_close_waits_long_before_retrying() -> None:
    async def handler(ws: ServerConnection, number: int) -> None:
        await ws.send(f"user_abcdef{number:02d} joined the chat")
        if number == 1:
            await ws.close(1008, "slow consumer")
            return
        await ws.wait_closed()

    async with scripted(handler) as (url, connected), running(url, "slow") as (conn, rec, _):
        await rec.wait_for(lambda: conn.name == "user_abcdef02", "reconnected")
        failed = [m for m in rec.of(RoomConnection.StateChanged) if m.state == "failed"]
        assert len(failed) == 1
        assert "slow consumer" in failed[0].detail and failed[0].retry_in == CAP
        assert connected[1] - connected[0] >= CAP * 0.9
        assert conn.state is ConnectionState.CONNECTED


async def test_going_away_is_a_loss_and_backs_off() -> None:
    async def handler(ws: ServerConnection, number: int) -> None:
        if number <= 3:
            await ws.close(1001, "going away")
            return
        await ws.send("user_abcdef99 joined the chat")
        await ws.wait_closed()

    async with scripted(handler) as (url, connected), running(url, "away") as (conn, rec, _):
        await rec.wait_for(lambda: conn.name == "user_abcdef99", "connected at last")
        offline = [m for m in rec.of(RoomConnection.StateChanged) if m.state == "offline"]
        assert len(offline) == 3
        assert all("1001" in m.detail and 0 <= m.retry_in <= CAP for m in offline)
        assert len(connected) == 4


async def test_a_burst_arrives_batched_in_order_with_send_states() -> None:
    """500 frames at once, our echoes among them: few messages, nothing reordered."""
    others = [f"line {i}" for i in range(500)]

    async def handler(ws: ServerConnection, number: int) -> None:
        await ws.send(f"user_abcdef{number:02d} joined the chat")
        if number > 1:
            await ws.wait_closed()
            return
        sent = [str(await ws.recv()) for _ in range(3)]
        assert sent == ["a", "drop", "b"]
        burst = [f"user_other001 :: {text}" for text in others]
        burst.insert(100, "user_abcdef01 :: a")
        burst.insert(300, "user_abcdef01 :: b")  # "drop" never comes back: refused
        burst.append("error: a notice at the end")
        for frame in burst:
            await ws.send(frame)
        await ws.close(1012, "restarting")  # right after the burst: must not overtake it

    async with scripted(handler) as (url, _), running(url, "burst") as (conn, rec, _):
        await rec.wait_for(lambda: conn.name == "user_abcdef01", "own name")
        a, drop, b = conn.send("a"), conn.send("drop"), conn.send("b")
        await rec.wait_for(lambda: ConnectionState.OFFLINE in rec.states(), "the drop")

        frames = [m.frame.text for m in rec.of(Frames)]
        assert frames[1:] == [
            *others[:100],
            "a",
            *others[100:299],
            "b",
            *others[299:],
            "a notice at the end",
        ]
        # Between our join notice and the close: a handful of batches, not a message a frame.
        assert 1 <= len(rec.batches()) <= 50, len(rec.batches())

        # Each outcome right where it happened: SENT after its echo, REFUSED before the echo
        # that overtook it.
        def position(local_id: int, state: SendState) -> int:
            return next(
                i
                for i, m in enumerate(rec.messages)
                if isinstance(m, RoomConnection.SendStateChanged)
                and (m.local_id, m.state) == (local_id, state)
            )

        def echo_position(local_id: int) -> int:
            return next(
                i
                for i, m in enumerate(rec.messages)
                if isinstance(m, Frames) and m.local_id == local_id
            )

        assert position(a, SendState.SENT) == echo_position(a) + 1
        assert position(drop, SendState.REFUSED) == echo_position(b) - 1
        assert position(b, SendState.SENT) == echo_position(b) + 1
        assert rec.send_states() == {a: SendState.SENT, drop: SendState.REFUSED, b: SendState.SENT}
        # The loss is reported after every frame that came before it.
        offline = next(
            i
            for i, m in enumerate(rec.posted)
            if isinstance(m, RoomConnection.StateChanged) and m.state is ConnectionState.OFFLINE
        )
        assert offline > max(rec.posted.index(batch) for batch in rec.batches())
