"""RoomConnection against real chat servers (and small scripted ones for the odd cases)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from websockets.asyncio.server import ServerConnection, serve

from chat_protocol import v2
from chat_protocol.frames import Frame, FrameKind
from chat_protocol.limits import MAX_FRAME_BYTES
from chat_protocol.names import ROOM_RULE, is_valid_name
from chat_protocol.v1 import format_join, format_leave, format_message
from chat_protocol.v2 import SUBPROTOCOL as SUBPROTOCOL_V2
from chat_protocol.v2 import ack as v2_ack
from chat_protocol.v2 import welcome as v2_welcome
from chat_testing.marks import requires_redis
from chat_testing.ports import free_port
from chat_testing.proxy import TcpProxy
from chat_testing.redis_servers import start_redis
from chat_testing.servers import RunningServer, start_server
from chat_testing.waits import eventually
from chat_tui.connection import LATER_LIMIT, WAKE_AT, RoomConnection, backoff_ceiling
from chat_tui.events import (
    Acked,
    ConnectionState,
    Echo,
    Event,
    NameAssigned,
    Refused,
    StateChanged,
    Welcomed,
)
from chat_tui.scrollback import SendState

BASE = 0.05
CAP = 0.5
TIMEOUT = 15.0


class Recorder:
    """The app's part: woken by the connection, it takes the queue a moment later (as the app
    does when it gets round to the wake-up message) and keeps every event, in order."""

    def __init__(self) -> None:
        self.connection: RoomConnection | None = None
        self.events: list[Event] = []
        self.wakes = 0
        self.takes: list[int] = []  # events per take
        self._changed = asyncio.Event()

    def wake(self) -> None:
        self.wakes += 1
        asyncio.get_running_loop().call_soon(self._take)

    def _take(self) -> None:
        assert self.connection is not None
        taken = self.connection.take()
        if taken:
            self.takes.append(len(taken))
            self.events += taken
            self._changed.set()

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def states(self) -> list[ConnectionState]:
        return [e.state for e in self.of(StateChanged)]

    def names(self) -> list[str]:
        """Our names, in order: from the join notice, or chat.v2's welcome."""
        return [
            e.name if isinstance(e, NameAssigned) else e.welcome.name
            for e in self.events
            if isinstance(e, NameAssigned | Welcomed)
        ]

    def send_states(self) -> dict[str, SendState]:
        """What became of each message: sent (echoed, or acknowledged) or refused."""
        outcome: dict[str, SendState] = {}
        for e in self.events:
            if isinstance(e, Echo | Acked):
                outcome[e.send_id] = SendState.SENT
            elif isinstance(e, Refused):
                outcome[e.send_id] = SendState.REFUSED
        return outcome

    def frames(self, kind: FrameKind | None = None) -> list[Frame]:
        """Every frame received, echoes included, in order."""
        frames = [e.frame if isinstance(e, Echo) else e for e in self.events]
        return [f for f in frames if isinstance(f, Frame) and (kind is None or f.kind is kind)]

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
        return "\n".join(repr(e) for e in self.events)


def connection(url: str, room: str, rec: Recorder, **options: Any) -> RoomConnection:
    options.setdefault("backoff_base", BASE)
    options.setdefault("backoff_cap", CAP)
    conn = RoomConnection(url, room, rec.wake, **options)
    rec.connection = conn
    return conn


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
    url: str, room: str, **options: Any
) -> AsyncIterator[tuple[RoomConnection, Recorder, asyncio.Task[None]]]:
    recorder = Recorder()
    conn = connection(url, room, recorder, **options)
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
# The text protocol's tests see the server through a proxy that drops the Sec-WebSocket-Protocol
# header: it never selects chat.v2 and speaks the original protocol, as a server from before
# chat.v2 does. chat.v2's own are further down.


@pytest.fixture
def text_protocol() -> Iterator[Callable[[RunningServer], str]]:
    """The URL of ``server`` as a server without chat.v2 (see above)."""
    proxies: list[TcpProxy] = []

    def url(server: RunningServer) -> str:
        proxy = TcpProxy([server.port], strip_subprotocols=True)
        proxy.__enter__()
        proxies.append(proxy)
        return f"ws://127.0.0.1:{proxy.port}"

    yield url
    for proxy in proxies:
        proxy.__exit__()


async def test_every_room_shares_one_tls_context(
    shared_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The roots are loaded once for the process, not once a room (about 1.1 MiB each)."""
    import ssl

    import httpx

    from chat_tui import connection as connection_module

    made: list[Any] = []

    class Recording(httpx.AsyncClient):
        def __init__(self, **options: Any) -> None:
            made.append(options.get("verify"))
            super().__init__(**options)

    monkeypatch.setattr(connection_module.httpx, "AsyncClient", Recording)
    async with (
        running(shared_server.ws_url, "tls-a") as (a, rec_a, _),
        running(shared_server.ws_url, "tls-b") as (b, rec_b, _),
    ):
        await rec_a.wait_for(lambda: a.name, "a's name")
        await rec_b.wait_for(lambda: b.name, "b's name")
    assert len(made) == 2 and made[0] is made[1]
    assert isinstance(made[0], ssl.SSLContext)
    assert made[0].cert_store_stats()["x509_ca"] > 0  # the roots httpx would load itself
    assert made[0].verify_mode is ssl.CERT_REQUIRED and made[0].check_hostname


async def test_learns_name_and_echoes_mark_messages_sent(
    shared_server: RunningServer, text_protocol: Callable[[RunningServer], str]
) -> None:
    async with running(text_protocol(shared_server), "conn-echo") as (conn, rec, _):
        name = await rec.wait_for(lambda: conn.name, "own name")
        assert is_valid_name(name)
        await rec.wait_for(lambda: rec.names() == [name], "our name, in the queue")
        await poll(lambda: members(shared_server, "conn-echo") == [name], "the server's list")

        texts = ["first", "second\nwith two lines", "bell\x07 stripped", "[bold]literal[/]"]
        ids = [conn.send(text) for text in texts]
        await rec.wait_for(
            lambda: [rec.send_states().get(i) for i in ids] == [SendState.SENT] * 4,
            "all four SENT",
        )
        echoes = rec.of(Echo)
        assert [e.send_id for e in echoes] == ids
        assert len(set(ids)) == 4 and all(isinstance(i, str) and len(i) <= 64 for i in ids)
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
            assert await peer.recv() == format_join(name)
            for i in range(20):
                conn.send(f"message {i}")
            received = [await asyncio.wait_for(peer.recv(), TIMEOUT) for _ in range(20)]
            assert received == [format_message(name, f"message {i}") for i in range(20)]
        # close() leaves the room: the peer sees it.
        assert await asyncio.wait_for(peer.recv(), TIMEOUT) == format_leave(name)


async def test_too_long_message_is_refused(
    server_factory: Callable[..., RunningServer], text_protocol: Callable[[RunningServer], str]
) -> None:
    server = server_factory(max_message_chars=10, rate_limit=0)
    async with running(text_protocol(server), "conn-long") as (conn, rec, _):
        await rec.wait_for(lambda: conn.name, "own name")
        short, long, after = conn.send("short"), conn.send("x" * 11), conn.send("after")
        await rec.wait_for(lambda: len(rec.send_states()) == 3, "three outcomes")
        assert rec.send_states() == {
            short: SendState.SENT,
            long: SendState.REFUSED,
            after: SendState.SENT,
        }
        errors = rec.frames(FrameKind.ERROR)
        assert len(errors) == 1 and "too long" in errors[0].text
        # The refusal comes right before the notice that caused it.
        assert rec.events.index(Refused(long)) == rec.events.index(errors[0]) - 1
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


async def test_nothing_worth_sending_is_refused_locally(
    shared_server: RunningServer, text_protocol: Callable[[RunningServer], str]
) -> None:
    async with running(text_protocol(shared_server), "conn-empty") as (conn, rec, _):
        await rec.wait_for(lambda: conn.name, "own name")
        blank = conn.send(" \x07\u200e ")
        big = conn.send("x" * (MAX_FRAME_BYTES + 1))
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
    server_factory: Callable[..., RunningServer], text_protocol: Callable[[RunningServer], str]
) -> None:
    server = server_factory(rate_limit=0)
    restarted: RunningServer | None = None
    try:
        async with running(text_protocol(server), "conn-restart") as (conn, rec, _):
            first_name = await rec.wait_for(lambda: conn.name, "own name")
            online = conn.send("before the restart")
            await rec.wait_for(lambda: rec.send_states().get(online) is SendState.SENT, "SENT")

            server.stop()
            offline = await rec.wait_for(
                lambda: [m for m in rec.of(StateChanged) if m.state == "offline"],
                "OFFLINE",
            )
            # docs/protocol.md: a server shutting down closes with 1012.
            assert "1012 server restarting" in offline[0].detail
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
            echoes = [(e.frame.name, e.frame.text) for e in rec.of(Echo) if e.send_id in ids]
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
            offline = rec.of(StateChanged)[1]
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
    conn = connection(shared_server.ws_url, room, rec)
    # run() gives up by itself: it returns instead of retrying.
    await asyncio.wait_for(conn.run(), TIMEOUT)
    await rec.wait_for(lambda: "failed" in rec.states(), "the refusal")
    # Accepted and closed before any frame: it never was in the room.
    assert rec.states() == [ConnectionState.CONNECTING, "failed"]
    failed = rec.of(StateChanged)[-1]
    assert "1008" in failed.detail and ROOM_RULE in failed.detail
    assert failed.retry_in is None
    assert conn.state is ConnectionState.FAILED
    await conn.close()
    assert conn.state is ConnectionState.CLOSED


async def test_close_sends_1000_and_leaves_the_room(shared_server: RunningServer) -> None:
    rec = Recorder()
    conn = connection(shared_server.ws_url, "conn-close", rec)
    task = asyncio.create_task(conn.run())
    name = await rec.wait_for(lambda: conn.name, "own name")
    await conn.close()
    await asyncio.wait_for(task, TIMEOUT)
    await rec.wait_for(lambda: rec.states()[-1] is ConnectionState.CLOSED, "closed")
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
    conn = connection(shared_server.ws_url, "conn-cancel", rec)
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
        failed = [m for m in rec.of(StateChanged) if m.state == "failed"]
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
        offline = [m for m in rec.of(StateChanged) if m.state == "offline"]
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

        frames = [f.text for f in rec.frames()]
        assert frames[1:] == [
            *others[:100],
            "a",
            *others[100:299],
            "b",
            *others[299:],
            "a notice at the end",
        ]
        # Between our join notice and the close: one wake-up per take, a handful of takes,
        # not one per frame.
        assert rec.wakes == len(rec.takes) <= 50, rec.takes
        assert sum(rec.takes) == len(rec.events)

        # Each outcome right where it happened: the echo says sent, and a refusal comes just
        # before the echo that overtook it.
        events = rec.events
        echo_a = next(i for i, e in enumerate(events) if isinstance(e, Echo) and e.send_id == a)
        echo_b = next(i for i, e in enumerate(events) if isinstance(e, Echo) and e.send_id == b)
        assert events[echo_b - 1] == Refused(drop)
        assert echo_a < echo_b
        assert rec.send_states() == {a: SendState.SENT, drop: SendState.REFUSED, b: SendState.SENT}
        # The loss is reported after every frame that came before it.
        offline = next(
            i
            for i, e in enumerate(events)
            if isinstance(e, StateChanged) and e.state is ConnectionState.OFFLINE
        )
        assert offline > max(i for i, e in enumerate(events) if isinstance(e, Frame | Echo))


# --- the queue, backoff, close codes -----------------------------------------------------------


class MaxRandom(random.Random):
    """Full jitter at its ceiling: every wait is the longest the backoff allows."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def a_wake_up_later() -> None:
    """As long as a connection takes to wake its consumer after one event: one that nobody
    has woken yet gets an event now, and this returns once it has woken its consumer."""
    woken: list[bool] = []
    control = RoomConnection("ws://127.0.0.1:1", "control", lambda: woken.append(True))
    control.send("")
    await eventually(lambda: woken, timeout=5, interval=0, what="a fresh connection's wake-up")


async def test_one_wake_up_until_the_queue_is_taken() -> None:
    """However much arrives, the consumer is woken once, when arrivals pause (counted in turns
    of the event loop, not by a clock), and again only after it has taken the queue."""
    wakes: list[int] = []
    conn = RoomConnection("ws://127.0.0.1:1", "q", lambda: wakes.append(len(conn.events)))
    ids = [conn.send("") for _ in range(5)]  # each refused at once: an event each
    assert wakes == []  # not while they keep coming
    await eventually(lambda: wakes, timeout=5, interval=0, what="the wake-up")
    assert wakes == [5]
    conn.send("")  # not taken yet: no second wake-up
    await a_wake_up_later()
    assert wakes == [5]
    assert conn.take(2) == [Refused(ids[0]), Refused(ids[1])]
    assert len(conn.take()) == 4
    conn.send("")  # taken: the next event wakes again
    await eventually(lambda: len(wakes) > 1, timeout=5, interval=0, what="the second wake-up")
    assert wakes == [5, 1]


async def test_a_full_queue_wakes_at_once() -> None:
    wakes: list[int] = []
    conn = RoomConnection("ws://127.0.0.1:1", "q", lambda: wakes.append(len(conn.events)))
    for _ in range(WAKE_AT):
        conn.send("")
    assert wakes == [WAKE_AT]  # a slice is full: no waiting for a pause


def test_backoff_doubles_up_to_its_cap() -> None:
    # The README's promise: exponential backoff, up to 30 s.
    ceilings = [backoff_ceiling(attempt) for attempt in range(9)]
    assert ceilings == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    conn = RoomConnection("ws://127.0.0.1:1", "q", lambda: None)
    assert (conn.backoff_base, conn.backoff_cap) == (0.5, 30.0)


async def test_backoff_grows_caps_and_starts_over_after_a_healthy_connection() -> None:
    healthy = 0.2  # the connection's healthy_after, for this test

    async def handler(ws: ServerConnection, number: int) -> None:
        if number <= 5 or number == 8:
            await ws.close(1001, "going away")  # a loss before any frame: backs off further
            return
        await ws.send(f"user_abcdef{number:02d} joined the chat")
        if number == 6:  # a frame, then a failure: a failing server, not a healthy one
            await ws.close(1011, "internal error")
            return
        if number == 7:  # stayed up long enough to count as healthy (the time is the point)
            await asyncio.sleep(healthy * 2)
            await ws.close(1012, "restarting")
            return
        await ws.wait_closed()

    base, cap = 0.02, 0.1
    async with (
        scripted(handler) as (url, _),
        running(
            url,
            "backoff",
            backoff_base=base,
            backoff_cap=cap,
            rng=MaxRandom(),
            healthy_after=healthy,
        ) as (conn, rec, _),
    ):
        await rec.wait_for(lambda: conn.name == "user_abcdef09", "the ninth connection")
        waits = [e.retry_in for e in rec.of(StateChanged) if e.state is ConnectionState.OFFLINE]
        assert waits == pytest.approx([0.02, 0.04, 0.08, 0.1, 0.1, 0.1, 0.02, 0.04])


async def test_retry_now_ends_a_long_wait() -> None:
    async def handler(ws: ServerConnection, number: int) -> None:
        if number == 1:
            await ws.close(1012, "restarting")
            return
        await ws.send(f"user_abcdef{number:02d} joined the chat")
        await ws.wait_closed()

    async with (
        scripted(handler) as (url, connected),
        running(url, "retry", backoff_base=3600, backoff_cap=3600, rng=MaxRandom()) as (
            conn,
            rec,
            _,
        ),
    ):
        offline = await rec.wait_for(
            lambda: [e for e in rec.of(StateChanged) if e.state is ConnectionState.OFFLINE],
            "the loss",
        )
        assert offline[0].retry_in == 3600  # an hour: only retry_now can end it in time
        conn.retry_now()
        await rec.wait_for(lambda: conn.name == "user_abcdef02", "the reconnection")
        assert len(connected) == 2


async def test_unsupported_data_close_fails_and_comes_back_after_the_cap() -> None:
    async def handler(ws: ServerConnection, number: int) -> None:
        await ws.send(f"user_abcdef{number:02d} joined the chat")
        if number == 1:
            await ws.close(1003, "binary frames are not accepted")
            return
        await ws.wait_closed()

    async with scripted(handler) as (url, connected), running(url, "c1003") as (conn, rec, _):
        await rec.wait_for(lambda: conn.name == "user_abcdef02", "back after the pause")
        failed = [e for e in rec.of(StateChanged) if e.state is ConnectionState.FAILED]
        assert len(failed) == 1 and failed[0].retry_in == CAP
        assert "1003 unsupported data: binary frames are not accepted" in failed[0].detail
        assert connected[1] - connected[0] >= CAP * 0.9


async def test_a_frame_that_breaks_the_protocol_is_said_so_not_taken_for_a_close() -> None:
    """Text that is not UTF-8 (a broken or hostile server): the client ends the connection
    (wsproto's 1007) and says the server broke the protocol; it said "closed by the server"."""

    async def handler(ws: ServerConnection, number: int) -> None:
        await ws.send(f"user_abcdef{number:02d} joined the chat")
        if number == 1:
            await ws.send(b"caf\xc3(", text=True)  # a text frame, not UTF-8
        await ws.wait_closed()

    async with scripted(handler) as (url, _), running(url, "broken") as (conn, rec, _):
        await rec.wait_for(lambda: conn.name == "user_abcdef02", "back again")
        offline = [e for e in rec.of(StateChanged) if e.state is ConnectionState.OFFLINE]
        assert len(offline) == 1
        assert offline[0].detail.startswith("the server broke the WebSocket protocol (1007")
        assert "closed by the server" not in offline[0].detail


async def test_message_too_big_close_refuses_the_biggest_and_resends_the_rest() -> None:
    received: list[str] = []

    async def handler(ws: ServerConnection, number: int) -> None:
        await ws.send(f"user_abcdef{number:02d} joined the chat")
        async for text in ws:
            received.append(str(text))
            if number == 1 and len(received) == 2:
                await ws.close(1009, "frame too big")  # neither was echoed
                return
            if number > 1:
                await ws.send(f"user_abcdef{number:02d} :: {text}")

    async with scripted(handler) as (url, _), running(url, "c1009") as (conn, rec, _):
        await rec.wait_for(lambda: conn.name == "user_abcdef01", "own name")
        small, big = conn.send("small"), conn.send("big " * 100)
        await rec.wait_for(lambda: len(rec.send_states()) == 2, "both outcomes")
        assert rec.send_states() == {small: SendState.SENT, big: SendState.REFUSED}
        failed = [e for e in rec.of(StateChanged) if e.state is ConnectionState.FAILED]
        assert "1009 message too big" in failed[0].detail and failed[0].retry_in == CAP
        assert received == ["small", "big " * 100, "small"]  # only the small one again


async def test_a_refused_handshake_fails_and_is_retried_after_the_cap() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with running(f"ws://127.0.0.1:{port}", "refused") as (conn, rec, _):
            failed = await rec.wait_for(
                lambda: (
                    len(events := [e for e in rec.of(StateChanged) if e.state == "failed"]) >= 2
                    and events
                ),
                "two refusals, the second after the pause",
            )
            assert failed[0].detail == "the server refused the WebSocket handshake (HTTP 403)"
            assert failed[0].retry_in == CAP
            assert conn.name is None and rec.names() == []
    finally:
        server.close()
        await server.wait_closed()


async def test_a_refusal_without_chat_v2_does_not_make_the_next_attempt_a_stranger() -> None:
    # chat-server refuses (1013 broker unavailable, server full, ...) by accepting without the
    # subprotocol and closing at once. The attempt after that must still resume the name and
    # recover: one that asked for nothing got a fresh name, which the room saw join and leave.
    token = "user_aaaaaa11.tokentokentokentokentok"
    paths: list[str] = []

    def select(ws: ServerConnection, offered: Any) -> Any:
        paths.append(ws.request.path if ws.request is not None else "")
        return None if len(paths) == 2 else SUBPROTOCOL_V2

    async def handler(ws: ServerConnection) -> None:
        if len(paths) == 2:
            await ws.close(1013, "broker unavailable")
            return
        welcome = v2_welcome("lobby", "user_aaaaaa11", "e1", 0, token, None, False, 0)
        await ws.send(welcome)
        if len(paths) == 1:
            await ws.close(1013, "broker unavailable")
            return
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, select_subprotocol=select) as server:
        port = server.sockets[0].getsockname()[1]
        async with running(f"ws://127.0.0.1:{port}", "lobby", history=5) as (_, rec, _):
            await rec.wait_for(lambda: len(rec.of(Welcomed)) == 2, "the second welcome")
    assert "resume=" not in paths[0]
    for path in paths[1:3]:
        assert f"resume={quote(token, safe='')}" in path and "since=0&epoch=e1" in path, path


async def test_a_backlog_that_never_comes_is_not_waited_for_with_everything_else_held() -> None:
    """A welcome announcing 5 messages of history, one of them, then error frames without end:
    each was held until the backlog was complete, which it never was (680 MB, and the room
    never shown, in a hostile-server run). Past LATER_LIMIT held frames the room is shown with
    what came, as not recovered, and the rest arrives live."""
    token = "user_aaaaaa11.tokentokentokentokentok"

    def select(ws: ServerConnection, offered: Any) -> Any:
        return SUBPROTOCOL_V2

    async def handler(ws: ServerConnection) -> None:
        await ws.send(v2_welcome("lobby", "user_aaaaaa11", "e1", 5, token, None, False, 5))
        await ws.send(
            '{"type": "message", "name": "bob", "text": "one", "offset": 1,'
            ' "time": "2026-12-06T12:00:00.000Z"}'
        )
        for n in range(LATER_LIMIT + 10):
            await ws.send(f'{{"type": "error", "text": "noise {n}"}}')
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, select_subprotocol=select) as server:
        port = server.sockets[0].getsockname()[1]
        async with running(f"ws://127.0.0.1:{port}", "lobby", history=5) as (_, rec, _):
            await rec.wait_for(
                lambda: any(f.text == f"noise {LATER_LIMIT + 9}" for f in rec.frames()),
                "the last frame, live",
            )
            (welcomed,) = rec.of(Welcomed)
            assert [f.text for f in welcomed.backlog] == ["one"]
            noise = [f.text for f in rec.frames() if f.text.startswith("noise")]
            assert noise == [f"noise {n}" for n in range(LATER_LIMIT + 10)]  # in order, once


async def test_a_conversation_with_someone_not_here_comes_back_when_they_are() -> None:
    """ "NAME is not here" gave up until the user pressed ctrl+r: after a Redis restart a
    conversation's peer is not here until their client has reconnected, and the conversation
    stayed dead (found by a new-user run). A conversation that was up reconnects with its
    backoff, what was typed meanwhile still pending and sent once; one to a name that was
    never here gives up (the README: it "closes with 'NAME is not here'")."""
    token = "user_aaaaaa11.tokentokentokentokentok"
    received: list[str] = []

    def select(ws: ServerConnection, offered: Any) -> Any:
        return SUBPROTOCOL_V2

    attempts = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal attempts
        attempts += 1
        if attempts in (2, 3):  # the broker restarted: Dave is not known yet
            await ws.close(1008, "Dave is not here")
            return
        await ws.send(v2_welcome("@Dave", "user_aaaaaa11", "e1", 0, token, None, False, 0))
        if attempts == 1:
            await ws.close(1012, "service restart")
            return
        async for text in ws:
            sent = json.loads(text)
            if sent.get("type") == "send":
                received.append(sent["text"])
                await ws.send(v2_ack(sent["nonce"], len(received), 1_765_022_400.0))

    async with serve(handler, "127.0.0.1", 0, select_subprotocol=select) as server:
        port = server.sockets[0].getsockname()[1]
        async with running(f"ws://127.0.0.1:{port}", "@Dave") as (conn, rec, _):
            await rec.wait_for(lambda: rec.of(Welcomed), "the first welcome")
            sent = conn.send("typed while Dave was away")
            await rec.wait_for(lambda: len(rec.of(Welcomed)) == 2, "the conversation back")
            await rec.wait_for(lambda: rec.send_states().get(sent), "the message's outcome")
            assert rec.send_states()[sent] is SendState.SENT and received == [
                "typed while Dave was away"
            ]
            assert ConnectionState.FAILED not in rec.states()

        # Never up: the name is nobody's.
        attempts = 1
        async with running(f"ws://127.0.0.1:{port}", "@Dave") as (conn, rec, _):
            failed = await rec.wait_for(
                lambda: [e for e in rec.of(StateChanged) if e.state is ConnectionState.FAILED],
                "given up",
            )
            assert failed[0].detail.endswith("Dave is not here)") and failed[0].retry_in is None


async def test_a_welcome_with_a_name_no_server_gives_fails_the_connection() -> None:
    """A welcome naming us with 5,000 characters of escape sequences filled the log and the
    members list (a hostile-server run): our name is shown everywhere, so it must be one."""
    name = "\x1b]0;X\x07" + "A" * 5000

    def select(ws: ServerConnection, offered: Any) -> Any:
        return SUBPROTOCOL_V2

    async def handler(ws: ServerConnection) -> None:
        await ws.send(v2_welcome("lobby", name, "e1", 0, name + ".tok", None, False, 0))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, select_subprotocol=select) as server:
        port = server.sockets[0].getsockname()[1]
        async with running(f"ws://127.0.0.1:{port}", "lobby") as (conn, rec, _):
            failed = await rec.wait_for(
                lambda: [e for e in rec.of(StateChanged) if e.state is ConnectionState.FAILED],
                "the connection failed",
            )
            shown = "\u241b]0;X\u2407" + "A" * 34  # its start, control characters as symbols
            assert (
                failed[0].detail == f"the server gave us a name no chat server gives ({shown!r}…)"
            )
            assert conn.name is None and not rec.of(Welcomed)


async def test_chat_v2_lost_on_the_way_is_asked_again_without_it() -> None:
    # A proxy that drops Sec-WebSocket-Protocol: the server refuses chat.v2's query (1008
    # naming chat.v2) and the client asks again at once with nothing of chat.v2's.
    paths: list[str] = []

    def select(ws: ServerConnection, offered: Any) -> Any:
        paths.append(ws.request.path if ws.request is not None else "")
        return SUBPROTOCOL_V2 if len(paths) == 1 else None

    async def handler(ws: ServerConnection) -> None:
        if len(paths) == 1:
            token = "user_aaaaaa11.tokentokentokentokentok"
            await ws.send(v2_welcome("lobby", "user_aaaaaa11", "e1", 0, token, None, False, 0))
            await ws.close(1001, "going away")
        elif "since=" in ws.request.path:  # type: ignore[union-attr]
            await ws.close(1008, "invalid query: since needs the chat.v2 subprotocol")
        else:
            await ws.send(format_join("user_bbbbbb22"))
            await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, select_subprotocol=select) as server:
        port = server.sockets[0].getsockname()[1]
        async with running(f"ws://127.0.0.1:{port}", "lobby") as (conn, rec, _):
            await rec.wait_for(lambda: "user_bbbbbb22" in rec.names(), "the text protocol's name")
            assert ConnectionState.FAILED not in rec.states()
            assert conn.state is ConnectionState.CONNECTED
    assert "since=" in paths[1] and "since=" not in paths[2] and "resume=" not in paths[2]


async def test_refusals_before_any_frame_are_one_outage_not_a_reconnect_each() -> None:
    # While its broker is down chat-server accepts and closes at once (1013). Each attempt
    # must not count as connected: the room's log would gain a "connection lost" per retry.
    attempts = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1 or attempts > 4:
            await ws.send(format_join(f"user_aaaaaa{attempts:02d}"))
            if attempts == 1:
                await ws.close(1013, "broker unavailable: cannot reach redis")
            else:
                await ws.wait_closed()
            return
        await ws.close(1013, "broker unavailable: cannot reach redis")

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with running(f"ws://127.0.0.1:{port}", "lobby") as (_, rec, _):
            await rec.wait_for(lambda: len(rec.names()) == 2, "the name after the outage")
            states = [s for s in rec.states() if s is not ConnectionState.CONNECTING]
    assert attempts == 5
    assert states == [
        ConnectionState.CONNECTED,
        *[ConnectionState.OFFLINE] * 4,
        ConnectionState.CONNECTED,
    ]


def long_backoff() -> dict[str, Any]:
    """Options of a room whose next attempt, once offline, is at least 16 s away."""
    return {"rng": MaxRandom(), "backoff_base": 16.0, "backoff_cap": 30.0}


async def a_long_wait(rec: Recorder, closed_with: str = "") -> None:
    """Until the room is offline with a long wait ahead (after a close saying ``closed_with``)."""
    await rec.wait_for(
        lambda: [
            m
            for m in rec.of(StateChanged)
            if m.state == "offline" and (m.retry_in or 0) >= 16.0 and closed_with in m.detail
        ],
        f"a long wait {closed_with}",
    )


async def test_a_server_back_from_an_outage_is_found_within_seconds_not_the_backoff(
    server_factory: Callable[..., RunningServer], text_protocol: Callable[[RunningServer], str]
) -> None:
    """Waiting 16 s to try again, the room asks the server's /health meanwhile and comes back
    within a couple of seconds of the server."""
    server = server_factory(rate_limit=0)
    restarted: RunningServer | None = None
    try:
        async with running(text_protocol(server), "conn-probe", **long_backoff()) as (
            conn,
            rec,
            _,
        ):
            await rec.wait_for(lambda: conn.state is ConnectionState.CONNECTED, "connected")
            server.stop()
            # The restart's close is tried again soon; then the server is unreachable.
            await a_long_wait(rec)
            restarted = server.restart()
            back_at = time.monotonic()
            await rec.wait_for(lambda: conn.state is ConnectionState.CONNECTED, "back", timeout=12)
            assert time.monotonic() - back_at < 6, "waited for the backoff, not the server"
    finally:
        if restarted is not None:
            restarted.stop()


@requires_redis
async def test_a_broker_back_from_an_outage_is_found_within_seconds_not_the_backoff(
    server_factory: Callable[..., RunningServer],
) -> None:
    """Redis down: the server refuses everyone with 1013 until it is back, each refusal
    growing the backoff (16 s here). The room asks /health meanwhile, which says 503 while
    the broker is away, and comes back within a couple of seconds of Redis."""
    redis = start_redis()
    try:
        server = server_factory(rate_limit=0, broker_url=redis.url)
        async with running(server.ws_url, "conn-broker", **long_backoff()) as (conn, rec, _):
            await rec.wait_for(lambda: conn.state is ConnectionState.CONNECTED, "connected")
            redis.stop()
            await a_long_wait(rec, closed_with="1013")
            redis.start()  # empty, on the same port
            back_at = time.monotonic()
            await rec.wait_for(lambda: conn.state is ConnectionState.CONNECTED, "back", timeout=15)
            assert time.monotonic() - back_at < 8, "waited for the backoff, not the broker"
    finally:
        redis.stop()


async def test_what_is_asked_while_a_frame_is_being_written_is_written_next() -> None:
    """The writer cleared its wake-up after writing: a typing (or read, away, /nick) asked
    while a frame was on its way waited for the next thing asked, forever if none came (a
    typing test timed out under CI's load). The socket here is a stand-in whose first write
    takes as long as the test says: the race is the writer's, not the network's."""

    class SlowSocket:
        def __init__(self) -> None:
            self.sent: list[str] = []
            self.gate = asyncio.Event()

        async def send_text(self, text: str) -> None:
            if not self.sent:
                self.sent.append(text)
                await self.gate.wait()
            else:
                self.sent.append(text)

    class Ready:
        ready = asyncio.Event()
        codec = None

    Ready.ready.set()
    rec = Recorder()
    conn = connection("ws://127.0.0.1:9", "lobby", rec)
    conn.v2 = True
    conn.set_state(StateChanged(ConnectionState.CONNECTED, "connected"))
    ws = SlowSocket()
    writer = asyncio.create_task(conn._write(ws, Ready()))  # type: ignore[arg-type]
    try:
        conn.read(5)
        await poll(lambda: ws.sent, "the read on its way")
        conn.typing()  # while the read is being written
        ws.gate.set()
        await poll(lambda: len(ws.sent) == 2, "the typing written next", timeout=5)
        assert ws.sent[1] == v2.TYPING_FRAME
    finally:
        writer.cancel()
