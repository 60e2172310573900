"""History, recovery, resumed names and exactly-once (issue 7), on both brokers.

The original protocol's own suite (test_conformance.py) runs with history on (the default):
a client that asks for nothing new sees what it always saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from chat_protocol.close import REPLACED, CloseCode
from chat_protocol.frames import FrameKind
from chat_protocol.limits import MAX_MESSAGE_CHARS
from chat_protocol.names import is_valid_name
from chat_protocol.query import JoinRequest, join_query
from chat_protocol.v1 import format_join, format_leave, parse_frame
from chat_protocol.v2 import SUBPROTOCOL as SUBPROTOCOL_V2
from chat_protocol.v2 import send as v2_send
from chat_server.backends.memory import CHECK_EVERY
from chat_testing.servers import RunningServer, start_server
from tests.server.wsclients import Member, V2Member, join, join_v2, resume_query

_rooms = itertools.count()
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
SMALL = {"history_size": 5, "recovery_limit": 8, "name_reservation": 0.5, "rate_limit": 0}


def fresh_room(prefix: str = "hist") -> str:
    return f"{prefix}-{next(_rooms)}-{secrets.token_hex(2)}"


@pytest.fixture(scope="module")
def small_server(
    shared_broker_options: Callable[[], dict[str, object]],
) -> Iterator[RunningServer]:
    """History 5 messages, recovery 8, names reserved 0.5 s."""
    server = start_server(**SMALL, **shared_broker_options())
    try:
        yield server
    finally:
        server.stop()


async def send_and_wait(member: V2Member, texts: list[str]) -> list[int]:
    """Send ``texts`` with nonces; the offsets their acks gave, in order."""
    offsets = []
    for i, text in enumerate(texts):
        nonce = f"{member.name}-{i}-{secrets.token_hex(3)}"
        await member.send(text, nonce)
        frames = await member.recv_until(lambda f, n=nonce: f.get("nonce") == n)
        offsets.append(frames[-1]["offset"])
    return offsets


async def closed_with(ws: Any, timeout: float = 5.0) -> tuple[int | None, str | None]:
    try:
        async with asyncio.timeout(timeout):
            async for _ in ws:
                pass
    except ConnectionClosed:
        pass
    return ws.close_code, ws.close_reason


# --- ?history=N for any client ----------------------------------------------------------------


async def test_a_text_client_gets_history_right_after_its_join_notice(
    shared_server: RunningServer,
) -> None:
    url = shared_server.chat_url(fresh_room())
    alice = await join(url)
    for text in ("first", "second\nline", "third"):
        await alice.ws.send(text)
        await alice.recv()
    late = await websockets.connect(url + "?history=2")
    own = parse_frame(await asyncio.wait_for(late.recv(), 5))
    assert own.kind is FrameKind.JOIN
    # Ordinary frames, the continuation indent included, oldest first.
    assert await asyncio.wait_for(late.recv(), 5) == f"{alice.name} :: second\n  line"
    assert await asyncio.wait_for(late.recv(), 5) == f"{alice.name} :: third"
    assert await alice.recv() == format_join(own.name or "")
    await alice.ws.send("live")
    assert await asyncio.wait_for(late.recv(), 5) == f"{alice.name} :: live"
    await late.close()
    await alice.close()


async def test_history_above_the_servers_limit_is_capped(small_server: RunningServer) -> None:
    url = small_server.chat_url(fresh_room())
    alice = await join_v2(url)
    await send_and_wait(alice, [f"m{i}" for i in range(7)])
    late = await join_v2(url, "history=999999999")
    # The room keeps 5; the rest is gone, never an error.
    assert late.welcome["history"] == 5
    assert [f["text"] for f in await late.backlog()] == ["m2", "m3", "m4", "m5", "m6"]
    await late.close()
    await alice.close()


@pytest.mark.parametrize(
    ("v2", "query", "reason"),
    [
        (False, "history=x", "history must be a whole number"),
        (False, "history=-1", "history must be a whole number"),
        (False, "history=1&history=2", "history given twice"),
        (False, "since=1&epoch=ab", "since needs the chat.v2 subprotocol"),
        (False, "resume=abc", "resume needs the chat.v2 subprotocol"),
        (True, "since=1", "since and epoch go together"),
        (True, "since=one&epoch=ab", "since must be a message offset"),
        (True, "since=1&epoch=a-b", "epoch must be 1-32 letters and digits"),
        (True, "resume=" + "x" * 129, "resume must be 1-128 characters"),
    ],
)
async def test_a_malformed_query_is_closed_1008_with_its_reason(
    shared_server: RunningServer, v2: bool, query: str, reason: str
) -> None:
    url = shared_server.chat_url(fresh_room()) + "?" + query
    ws = await websockets.connect(url, subprotocols=[SUBPROTOCOL_V2] if v2 else None)
    code, text = await closed_with(ws)
    assert code == CloseCode.POLICY_VIOLATION
    assert text is not None and reason in text


# --- chat.v2 frames ------------------------------------------------------------------------


async def test_v2_welcome_messages_notices_and_acks(shared_server: RunningServer) -> None:
    room = fresh_room()
    url = shared_server.chat_url(room)
    alice = await join_v2(url)
    welcome = alice.welcome
    assert list(welcome) == [
        "type", "room", "name", "epoch", "offset", "resume", "recovered", "resumed", "history",
        "max_chars",
    ]  # fmt: skip
    assert welcome["max_chars"] == 4096  # the server's limit, for a client to check first
    assert welcome["room"] == room and is_valid_name(alice.name)
    assert welcome["offset"] == 0 and welcome["history"] == 0
    assert welcome["recovered"] is None and welcome["resumed"] is False
    assert re.fullmatch(r"[A-Za-z0-9]{1,32}", welcome["epoch"])
    assert alice.token.startswith(alice.name + ".")

    bob = await join(url)  # a text client in the same room
    joined = await alice.recv()
    assert joined["type"] == "join" and joined["name"] == bob.name
    assert TIME.fullmatch(joined["time"])

    await alice.send("two\nlines", "n-1")
    ack, message = await alice.recv_many(2)
    # The ack first, then the message: the client knows its own before it sees it.
    assert ack == {"type": "ack", "nonce": "n-1", "offset": 1, "time": message["time"]}
    assert message == {
        "type": "message", "name": alice.name, "text": "two\nlines", "offset": 1,
        "time": message["time"],
    }  # fmt: skip
    assert TIME.fullmatch(message["time"])
    assert await bob.recv() == f"{alice.name} :: two\n  lines"

    await bob.ws.send("from text")
    assert await bob.recv() == f"{bob.name} :: from text"
    frame = await alice.recv()
    assert frame == {
        "type": "message", "name": bob.name, "text": "from text", "offset": 2,
        "time": frame["time"],
    }  # fmt: skip
    await bob.close()
    left = await alice.recv_until(lambda f: f["type"] == "leave")
    assert left[-1]["name"] == bob.name and TIME.fullmatch(left[-1]["time"])
    await alice.close()


async def test_v2_client_frames_and_their_refusals(shared_server: RunningServer) -> None:
    alice = await join_v2(shared_server.chat_url(fresh_room()))
    await alice.ws.send("a plain text frame")  # a send without nonce: no ack
    frame = await alice.recv()
    assert (frame["type"], frame["text"]) == ("message", "a plain text frame")
    await alice.ws.send("{not json")  # not a JSON object: plain text too
    assert (await alice.recv())["text"] == "{not json"
    await alice.ws.send('{"type": "shout", "text": "x", "nonce": "n-2"}')
    assert await alice.recv() == {
        "type": "error", "text": "unknown frame type 'shout'", "nonce": "n-2",
    }  # fmt: skip
    for kind in ("{}", "[1]", "null"):  # any JSON: a dict was a traceback and a dropped socket
        await alice.ws.send(f'{{"type": {kind}, "nonce": "n-k"}}')
        error = await alice.recv()
        assert (error["type"], error["nonce"]) == ("error", "n-k")
        assert error["text"].startswith("unknown frame type")
    await alice.ws.send('{"type": "send", "text": "x", "nonce": "has space"}')
    error = await alice.recv()
    assert error["type"] == "error" and "invalid nonce" in error["text"] and "nonce" not in error
    await alice.ws.send('{"type": "send", "nonce": "n-3"}')
    assert await alice.recv() == {"type": "error", "text": "a send needs a text", "nonce": "n-3"}
    await alice.send("x" * (MAX_MESSAGE_CHARS + 1), "n-4")
    error = await alice.recv()
    assert error["nonce"] == "n-4" and error["text"].startswith("message too long")
    await alice.send("\x1b\x07", "n-5")
    error = await alice.recv()
    assert error["nonce"] == "n-5" and error["text"].startswith("empty message")
    await alice.close()


async def test_offsets_are_gapless_and_history_is_what_was_delivered_live(
    shared_server: RunningServer,
) -> None:
    url = shared_server.chat_url(fresh_room())
    observer = await join_v2(url)
    # Unbounded client queues: senders that do not read must not hold up their own close.
    senders = [await join_v2(url, max_queue=None) for _ in range(2)]
    senders.append(await join(url, max_queue=None))
    await observer.recv_many(3)  # their joins

    async def send_all(index: int) -> None:
        sender = senders[index]
        for i in range(20):
            if isinstance(sender, V2Member):
                await sender.send(f"{index}:{i}", f"n{i}")
            else:
                await sender.ws.send(f"{index}:{i}")

    await asyncio.gather(*(send_all(i) for i in range(3)))
    live = [f for f in await observer.recv_many(60) if f["type"] == "message"]
    assert [f["offset"] for f in live] == list(range(1, 61))
    late = await join_v2(url, "history=60")
    assert late.welcome["offset"] == 60
    assert await late.backlog() == live  # same offsets, names, texts and times
    for member in [observer, late, *senders]:
        await member.close()


# --- recovery ------------------------------------------------------------------------------------


async def test_recovery_returns_exactly_the_missed_messages_then_live(
    shared_server: RunningServer,
) -> None:
    url = shared_server.chat_url(fresh_room())
    alice, bob = await join_v2(url), await join_v2(url)
    await alice.recv()  # bob's join
    seen = (await send_and_wait(bob, ["before"]))[-1]
    await alice.recv_until(lambda f: f.get("offset") == seen)
    await alice.close()
    missed = await send_and_wait(bob, [f"missed {i}" for i in range(7)])
    back = await join_v2(url, resume_query(alice, since=seen, history=50))
    assert back.name == alice.name
    assert back.welcome["recovered"] is True and back.welcome["resumed"] is True
    assert back.welcome["offset"] == missed[-1] and back.welcome["history"] == 7
    backlog = await back.backlog()
    assert [f["offset"] for f in backlog] == missed
    assert [f["text"] for f in backlog] == [f"missed {i}" for i in range(7)]
    await bob.send("after", "after")
    frames = await back.recv_until(lambda f: f["type"] == "message")
    assert frames[-1]["text"] == "after" and frames[-1]["offset"] == missed[-1] + 1
    # Nothing missed: recovered, and nothing to replay.
    await back.close()
    again = await join_v2(url, resume_query(back, since=missed[-1] + 1))
    assert again.welcome["recovered"] is True and again.welcome["history"] == 0
    await again.close()
    await bob.close()


@pytest.mark.parametrize("position", ["other epoch", "ahead of the room"])
async def test_a_position_the_room_never_had_is_not_recovered(
    shared_server: RunningServer, position: str
) -> None:
    url = shared_server.chat_url(fresh_room())
    alice = await join_v2(url)
    offsets = await send_and_wait(alice, ["one", "two", "three"])
    epoch = "zz" + alice.welcome["epoch"] if position == "other epoch" else alice.welcome["epoch"]
    since = 1 if position == "other epoch" else offsets[-1] + 5
    query = f"since={since}&epoch={epoch}&history=2"
    back = await join_v2(url, query)
    # Not recovered: the last messages asked for with history, never a partial range.
    assert back.welcome["recovered"] is False and back.welcome["history"] == 2
    assert [f["text"] for f in await back.backlog()] == ["two", "three"]
    await back.close()
    await alice.close()


@pytest.mark.parametrize(("missed", "recovered"), [(5, True), (6, False), (9, False)])
async def test_recovery_past_retention_or_the_cap_is_refused_whole(
    small_server: RunningServer, missed: int, recovered: bool
) -> None:
    # 5 retained, at most 8 replayed: 6 missed are not all retained, 9 are over the cap.
    url = small_server.chat_url(fresh_room())
    alice = await join_v2(url)
    seen = (await send_and_wait(alice, ["seen"]))[-1]
    await send_and_wait(alice, [f"m{i}" for i in range(missed)])
    back = await join_v2(url, f"since={seen}&epoch={alice.welcome['epoch']}")
    assert back.welcome["recovered"] is recovered
    backlog = await back.backlog()
    assert [f["text"] for f in backlog] == ([f"m{i}" for i in range(missed)] if recovered else [])
    await back.close()
    await alice.close()


async def test_an_empty_room_keeps_its_history_and_sequence(shared_server: RunningServer) -> None:
    url = shared_server.chat_url(fresh_room())
    alice = await join_v2(url)
    await send_and_wait(alice, ["said before everyone left"])
    epoch = alice.welcome["epoch"]
    await alice.close()
    later = await join_v2(url, f"since=0&epoch={epoch}&history=10")
    assert later.welcome["epoch"] == epoch and later.welcome["recovered"] is True
    assert [f["text"] for f in await later.backlog()] == ["said before everyone left"]
    await later.close()


# --- names ----------------------------------------------------------------------------------------


async def test_one_token_holds_its_name_in_every_room(shared_server: RunningServer) -> None:
    first = await join_v2(shared_server.chat_url(fresh_room()))
    second = await join_v2(shared_server.chat_url(fresh_room()), resume_query(first))
    assert second.name == first.name and second.welcome["resumed"] is True
    assert second.token == first.token
    await first.close()
    await second.close()
    # After its last connection ended, within the reservation window: the same name again.
    again = await join_v2(shared_server.chat_url(fresh_room()), resume_query(first))
    assert again.name == first.name and again.welcome["resumed"] is True
    await again.close()


async def test_a_newer_connection_replaces_the_old_one_under_the_same_name(
    shared_server: RunningServer,
) -> None:
    url = shared_server.chat_url(fresh_room())
    watcher = await join(url)
    old = await join_v2(url)
    assert await watcher.recv() == format_join(old.name)
    new = await join_v2(url, resume_query(old))
    assert new.name == old.name
    # Others see an ordinary leave, then a join, under the same name.
    assert await watcher.recv() == format_leave(old.name)
    assert await watcher.recv() == format_join(old.name)
    code, reason = await closed_with(old.ws)
    assert (code, reason) == (CloseCode.POLICY_VIOLATION, REPLACED.reason)
    # The old connection's end does not take the new one out of the room.
    await new.send("still here", "n")
    assert (await new.recv_many(2))[1]["text"] == "still here"
    assert await watcher.recv() == f"{old.name} :: still here"
    assert shared_server.get_json(f"/rooms/{url.rsplit('/', 1)[1]}")["members"] == [
        watcher.name,
        old.name,
    ]
    await new.close()
    assert await watcher.recv() == format_leave(old.name)
    await watcher.close()


async def test_connections_of_one_token_joining_at_once_leave_one_of_them_in_the_room(
    shared_server: RunningServer,
) -> None:
    """Three connections with one resume token join a room at the same moment (a client that
    came back twice, or a copy of it): the room keeps one, the others are replaced. Each took
    the first join notice, of the same name, for its own, and the leave that replaced the
    older one then closed them all."""
    room = fresh_room()
    url = shared_server.chat_url(room)
    watcher = await join(url)
    first = await join_v2(url)
    await first.close()
    target = f"{url}?{resume_query(first)}"
    racing = await asyncio.gather(
        *(websockets.connect(target, subprotocols=[SUBPROTOCOL_V2]) for _ in range(3))
    )

    async def drain(ws: websockets.ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass

    draining = [asyncio.create_task(drain(ws)) for ws in racing]
    try:
        await wait_for(lambda: sum(task.done() for task in draining) >= 2, "two replaced")
        ended = [ws for ws, task in zip(racing, draining, strict=True) if task.done()]
        closes = [(ws.close_code, ws.close_reason) for ws in ended]
        assert closes == [(CloseCode.POLICY_VIOLATION, REPLACED.reason)] * 2
        (kept,) = [ws for ws, task in zip(racing, draining, strict=True) if not task.done()]
        await kept.send(v2_send("still here", "n1"))
        while (said := await watcher.recv()) != f"{first.name} :: still here":
            assert first.name in said, said  # only the replacements' leaves and joins
        assert shared_server.get_json(f"/rooms/{room}")["members"] == [watcher.name, first.name]
    finally:
        for ws in racing:
            await ws.close()
        await asyncio.gather(*draining)
        await watcher.close()


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("token", ["forged", "unknown", "malformed", "expired"])
async def test_a_token_that_is_not_a_names_own_gets_a_fresh_name(
    small_server: RunningServer, token: str
) -> None:
    url = small_server.chat_url(fresh_room())
    owner = await join_v2(url)
    if token == "forged":  # the right name, a secret of our own
        offered = f"{owner.name}.{secrets.token_urlsafe(16)}"
    elif token == "unknown":
        offered = f"user_abcdef12.{secrets.token_urlsafe(16)}"
    elif token == "malformed":
        offered = "not-a-token"
    else:
        offered = owner.token
        await owner.close()
        # What is tested is a timeout: the name's reservation (0.5 s here) runs out.
        await asyncio.sleep(SMALL["name_reservation"] + 0.3)
    other = await join_v2(url, join_query(JoinRequest(resume=offered)))
    assert other.name != owner.name and other.welcome["resumed"] is False
    assert other.token != offered and other.token.startswith(other.name + ".")
    await other.close()
    await owner.close()


# --- exactly once -------------------------------------------------------------------------------


async def test_a_resent_nonce_is_acked_with_its_offset_and_never_published_twice(
    shared_server: RunningServer,
) -> None:
    url = shared_server.chat_url(fresh_room())
    watcher = await join(url)
    alice = await join_v2(url)
    await watcher.recv()
    await alice.send("only once", "the-nonce")
    ack = (await alice.recv_many(2))[0]
    assert await watcher.recv() == f"{alice.name} :: only once"
    await alice.close()
    await watcher.recv()  # its leave
    for _ in range(2):  # any number of reconnects
        back = await join_v2(url, resume_query(alice))
        await back.send("only once", "the-nonce")
        assert await back.recv() == {**ack}
        await back.send("next", f"next-{secrets.token_hex(2)}")
        frames = await back.recv_many(2)
        assert frames[1]["text"] == "next"
        await back.close()
    seen = await watcher.recv_until(lambda f: f.endswith(":: next"))
    assert f"{alice.name} :: only once" not in seen
    await watcher.close()


async def test_every_send_dropped_for_flooding_gets_an_error_naming_its_nonce(
    server_factory: Any,
) -> None:
    server = server_factory(rate_limit=1, rate_burst=1)
    alice = await join_v2(server.chat_url(fresh_room()))
    for i in range(5):
        await alice.send(f"m{i}", f"n{i}")
    frames = await alice.recv_many(6)  # one ack + message, four errors
    acks = [f["nonce"] for f in frames if f["type"] == "ack"]
    errors = [f for f in frames if f["type"] == "error"]
    assert acks == ["n0"]
    assert [e["nonce"] for e in errors] == ["n1", "n2", "n3", "n4"]
    assert all("sending too fast" in e["text"] for e in errors)
    await alice.close()


# --- retention off, and the log -------------------------------------------------------------------


async def test_history_off_keeps_nothing(server_factory: Any) -> None:
    server = server_factory(history_size=0, rate_limit=0)
    url = server.chat_url(fresh_room())
    alice = await join_v2(url)
    offsets = await send_and_wait(alice, ["not kept"])
    late = await join_v2(url, "history=10")
    assert late.welcome["history"] == 0 and late.welcome["offset"] == offsets[-1]
    epoch = alice.welcome["epoch"]
    # Nothing missed is still a recovery; anything missed cannot be.
    caught_up = await join_v2(url, f"since={offsets[-1]}&epoch={epoch}")
    behind = await join_v2(url, f"since=0&epoch={epoch}")
    assert caught_up.welcome["recovered"] is True
    assert behind.welcome["recovered"] is False and behind.welcome["history"] == 0
    for member in (alice, late, caught_up, behind):
        await member.close()


async def test_the_log_never_shows_tokens_or_message_text(server_factory: Any) -> None:
    server = server_factory(log_level="debug", rate_limit=0)
    url = server.chat_url(fresh_room())
    alice = await join_v2(url, "history=5")
    await send_and_wait(alice, ["secret words 1234"])
    await alice.close()
    back = await join_v2(url, resume_query(alice, since=0, history=5))
    assert back.welcome["resumed"] is True
    await back.backlog()
    await back.close()
    log = server.log()
    assert f"name={alice.name}" in log  # the joins were logged
    secret = alice.token.partition(".")[2]
    assert secret not in log and "secret words" not in log


async def said_long(url: str, count: int) -> tuple[Member, list[str]]:
    """``count`` messages of 1,000 characters said in the room (each counts 1,100 against the
    history's bytes), numbered; the member who said them, once they are all out."""
    sender = await join(url, max_queue=None)
    texts = [f"{i:04d}" + "x" * 996 for i in range(count)]
    for text in texts:
        await sender.ws.send(text)
    await sender.recv_until(lambda f: f.endswith(texts[-1]))
    return sender, texts


async def test_a_rooms_history_is_bounded_in_bytes(server_factory: Any) -> None:
    """1,000-character messages against a 40,000-byte room bound (each counts 1,100): the
    history keeps the newest that fit (36), however many messages it may keep; in one
    process's memory, also what came since it was last weighed (at most CHECK_EVERY
    characters more); on Redis, exactly those."""
    server: RunningServer = server_factory(history_bytes=40_000, rate_limit=0)
    room = fresh_room("bytes")
    sender, texts = await said_long(server.chat_url(room), 100)
    late = await join(server.chat_url(room) + "?history=200")
    await late.ws.send("marker")
    kept = [f.partition(" :: ")[2] for f in await late.recv_until(lambda f: f.endswith("marker"))]
    kept = kept[:-1]
    assert kept == texts[-len(kept) :]  # the newest, in order
    assert 36 <= len(kept) <= (40_000 + CHECK_EVERY) // 1_000
    await late.close()
    await sender.close()


async def test_a_lowered_bytes_bound_applies_to_what_a_room_kept(
    server_factory: Any, broker: str
) -> None:
    """A server started again with a lower ``--history-bytes`` on the same broker: after the
    room's next message and its emptying, a late joiner gets the newest that fit (all 80 of
    1,000 characters were kept; 10,000 bytes hold 9 at most, the new message included)."""
    if broker == "memory":
        pytest.skip("a memory:// server's history ends with its process")
    first = server_factory(rate_limit=0)
    room = fresh_room("lowered")
    sender, texts = await said_long(first.chat_url(room), 80)
    await sender.close()
    first.stop()
    second = server_factory(
        history_bytes=10_000, rate_limit=0, broker_url=first.options["broker_url"]
    )
    sender = await join(second.chat_url(room))
    await sender.ws.send("marker")
    await sender.recv_until(lambda f: f.endswith("marker"))
    await sender.close()
    late = await join(second.chat_url(room) + "?history=200")
    await late.ws.send("end")
    frames = await late.recv_until(lambda f: f.endswith(":: end"))
    said = [f.partition(" :: ")[2] for f in frames if " :: " in f]
    assert said[-2:] == ["marker", "end"]
    kept = said[:-2]
    assert kept == texts[-len(kept) :]  # the newest, in order
    assert 1 <= len(kept) <= 8, len(kept)
    await late.close()


@pytest.mark.memory_only
async def test_every_rooms_history_together_is_bounded(server_factory: Any) -> None:
    """Past the total bound, the idle room's history goes first; the room written to keeps
    all it had (it is within its share)."""
    server: RunningServer = server_factory(history_bytes=20_000, history_total_bytes=30_000)
    idle_room, busy_room = fresh_room("total"), fresh_room("total")
    texts = ["y" * 1000 for _ in range(15)]  # 16,500 counted in all
    for room in (idle_room, busy_room):
        sender = await join(server.chat_url(room))
        for number, text in enumerate(texts):
            await sender.ws.send(f"{room} {number} {text}")
        await sender.recv_until(lambda f, r=room: f.endswith(f"{r} 14 {texts[-1]}"))
        await sender.close()
    for room, expected in ((idle_room, 0), (busy_room, 15)):
        late = await join(server.chat_url(room) + "?history=50")
        await late.ws.send("marker")
        frames = await late.recv_until(lambda f: f.endswith("marker"))
        assert len(frames) - 1 == expected, (room, frames[:3])
        await late.close()
