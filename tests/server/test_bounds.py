"""Every resource bounded, whoever sends it (issue 16, its holes 2 and 3): rooms kept without
members, the rooms one address brings into being, names kept in reserve, on both brokers. On
Redis the bound is read from Redis itself: its keys, not the server's word."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from chat_protocol.close import CloseCode
from chat_protocol.query import JoinRequest, join_query
from chat_protocol.v2 import SUBPROTOCOL as SUBPROTOCOL_V2
from chat_server.backends import base as backend_base
from chat_server.backends.redis.backend import RedisBackend
from chat_server.events import EventKind
from chat_server.ops.settings import Settings
from chat_testing.brokers import sqlite_url, started
from chat_testing.marks import requires_redis
from chat_testing.redis_servers import start_redis
from chat_testing.servers import RunningServer
from chat_testing.waits import wait_until
from tests.server.hostile import fresh_room, observed, record
from tests.server.test_names import refused
from tests.server.wsclients import join, join_v2

pytestmark = pytest.mark.fault


def from_address(host: str) -> dict[str, object]:
    return {"local_addr": (host, 0)}


async def say_once_and_leave(server: RunningServer, room: str, **how: object) -> None:
    member = await join(server.chat_url(room), **how)
    await member.ws.send("one message")
    await member.recv_until(lambda f: f.endswith(":: one message"))
    await member.close()


async def say_once_with_a_nonce_and_leave(server: RunningServer, room: str) -> None:
    """As a chat.v2 client says things: with a nonce (the room keeps it, and its sender's
    list of them, for exactly-once)."""
    member = await join_v2(server.chat_url(room))
    await member.send("one message", "n1")
    await member.recv_until(lambda f: f.get("type") == "ack")
    await member.close()


async def history_of(server: RunningServer, room: str) -> list[str]:
    """The messages a newcomer is given (its join notice first, then the history)."""
    member = await join(server.chat_url(room) + "?history=5")
    frames = []
    with pytest.raises(TimeoutError):
        while True:
            frames.append(await member.recv(timeout=0.5))
    await member.close()
    return [f for f in frames if " :: " in f]


async def test_rooms_kept_without_members_are_bounded_the_idle_longest_forgotten(
    server_factory: Callable[..., RunningServer], broker: str, request: pytest.FixtureRequest
) -> None:
    """Hole 2: one client makes room after room with one message each; past --history-rooms
    the oldest are forgotten (on Redis: their keys go), and a healthy pair loses nothing."""
    redis_server = start_redis() if broker == "redis" else None
    request.addfinalizer(lambda: redis_server.stop() if redis_server is not None else None)
    where = {} if redis_server is None else {"broker_url": redis_server.url}
    server = server_factory(history_rooms=5, rate_limit=0, **where)
    rooms = [fresh_room("idle") for _ in range(40)]
    async with observed(server, fresh_room("idle-pair")) as pair:
        for number, room in enumerate(rooms):
            if number % 2:
                await say_once_and_leave(server, room)
            else:
                await say_once_with_a_nonce_and_leave(server, room)
    kept: set[str] = set()
    nonce_lists: set[str] = set()
    if redis_server is not None:
        redis = redis_server.client()
        wait_until(lambda: redis.zcard("chat:idle-rooms") <= 5, what="the idle rooms bound")
        kept = {key.decode() for key in redis.scan_iter("chat:room:idle-*:seq")}
        # A sender's nonces in a room go with the room (they outlived it by a week).
        nonce_lists = {key.decode() for key in redis.scan_iter("chat:room:idle-*:nonce-order:*")}
    record(
        f"{broker}: 40 rooms of one message each (--history-rooms 5)",
        outcome=f"{len(kept)} rooms' keys kept in Redis" if kept else "bounded in the process",
        observer_p99_ms=round(pair.p99() * 1000, 1),
    )
    pair.check()
    if redis_server is not None:
        assert len(kept) <= 6, kept  # the bound, and the room being forgotten right now
        assert len(nonce_lists) <= 3, nonce_lists  # of the rooms kept, those said to with one
        assert not any(key.startswith(f"chat:room:{rooms[0]}:") for key in kept)
    assert await history_of(server, rooms[-1]) != []
    assert await history_of(server, rooms[0]) == []


async def test_rooms_where_nothing_was_said_do_not_push_out_the_history_of_others(
    server_factory: Callable[..., RunningServer],
) -> None:
    """Rooms joined and left without a word took places among the --history-rooms kept, and
    pushed out rooms that had a history: a churn of joins wiped what others had said, and
    sent them round again with a new epoch (found by a hostile-client run)."""
    server = server_factory(history_rooms=5, rate_limit=0)
    said = [fresh_room("said") for _ in range(5)]
    for room in said:
        await say_once_and_leave(server, room)
    for _ in range(8):
        member = await join(server.chat_url(fresh_room("silent")))
        await member.close()
    for room in said:
        assert await history_of(server, room) != [], room


@pytest.mark.memory_only
@pytest.mark.parametrize("embedded", [False, True], ids=["memory", "sqlite"])
async def test_one_address_brings_only_its_share_of_rooms_into_being(
    server_factory: Callable[..., RunningServer], embedded: bool, tmp_path: Path
) -> None:
    """Past the share, the join is refused with nothing else said, not even its own join
    notice: on the embedded default too, whose join reaches the member only once written (as
    the publish's result does: the verdict is reached by whichever comes first)."""
    where = {"broker_url": sqlite_url(tmp_path)} if embedded else {}
    server = server_factory(max_new_rooms_per_address=5, **where)
    busy = fresh_room("busy")
    there = await join(server.chat_url(busy), **from_address("127.0.0.9"))
    async with observed(server, fresh_room("new-pair")) as pair:
        made = 0
        for _ in range(10):
            try:
                await say_once_and_leave(server, fresh_room("new"), **from_address("127.0.0.8"))
            except (ConnectionClosed, AssertionError):
                break
            made += 1
        assert made == 5
        assert await refused(server.chat_url(fresh_room("new")), **from_address("127.0.0.8")) == (
            CloseCode.TRY_AGAIN_LATER,
            "too many new rooms from your address",
        )
        # A room that exists is no new room; another address is not held back.
        await say_once_and_leave(server, busy, **from_address("127.0.0.8"))
        await say_once_and_leave(server, fresh_room("new"), **from_address("127.0.0.10"))
    record(
        "new rooms from one address (--max-new-rooms-per-address 5)",
        outcome=f"{made} made, then closed 1013",
        observer_p99_ms=round(pair.p99() * 1000, 1),
    )
    pair.check()
    await there.close()


async def test_conversations_count_in_an_addresss_share_of_new_rooms(
    server_factory: Callable[..., RunningServer],
) -> None:
    """A conversation comes into being as a room does (history, an idle room's place): one
    address opened 80 a minute past a share of 60. Charged to who opened it, not to whom."""
    server = server_factory(max_new_rooms_per_address=3)
    lobby = fresh_room("lobby")
    people = [await join_v2(server.chat_url(lobby), **from_address("127.0.0.21")) for _ in range(5)]
    opener = await join_v2(server.chat_url(lobby), **from_address("127.0.0.22"))
    resume = join_query(JoinRequest(resume=opener.token))
    opened = []
    try:
        for person in people[:3]:
            opened.append(
                await join_v2(
                    f"{server.ws_url}/chat/@{person.name}", resume, **from_address("127.0.0.22")
                )
            )
        assert await refused(
            f"{server.ws_url}/chat/@{people[3].name}?{resume}",
            subprotocols=[SUBPROTOCOL_V2],
            **from_address("127.0.0.22"),
        ) == (CloseCode.TRY_AGAIN_LATER, "too many new rooms from your address")
        # The other side joining a conversation it was opened is no new room of its own.
        back = await join_v2(
            f"{server.ws_url}/chat/@{opener.name}",
            join_query(JoinRequest(resume=people[0].token)),
            **from_address("127.0.0.21"),
        )
        opened.append(back)
    finally:
        for member in (*opened, *people, opener):
            await member.close()


@requires_redis
async def test_read_positions_and_inboxes_on_redis_are_bounded_in_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each token that reported a read, or was written to, made a key of its own, kept for the
    history ttl (a week): 860,000 a day from one address's connections. Past TOKEN_KEYS (5
    here) the least recently written go; the newest are kept."""
    monkeypatch.setattr(backend_base, "TOKEN_KEYS", 5)
    redis_server = start_redis()
    backend = RedisBackend(Settings(broker_url=redis_server.url), "node-1")
    try:
        await started(backend)
        joined = await backend.channels.publish("readers", EventKind.JOIN, "reader")
        said = await backend.channels.publish("readers", EventKind.MESSAGE, "reader", "hi")
        assert joined is not None and said is not None
        registry = backend.registry
        for n in range(20):
            await registry.keep_read_position(f"t{n:02d}", "readers", said.epoch, said.offset)
        for n in range(3):
            await registry.note_direct(f"d{n}", "@reader", "someone")
        redis = redis_server.client()
        kept = {k.decode() for k in redis.scan_iter("chat:read:*")}
        kept |= {k.decode() for k in redis.scan_iter("chat:inbox:*")}
        assert len(kept) <= 5, kept
        assert "chat:inbox:d2" in kept  # the newest stay
        assert await registry.read_position("t19", "readers", said.epoch) == said.offset
        assert await registry.read_position("t00", "readers", said.epoch) is None
    finally:
        await backend.close()
        redis_server.stop()
