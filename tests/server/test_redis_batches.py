"""The Redis path's batches: every event a node has for one room in one loop iteration goes in
one script call and one PUBLISH, each event still with its own serial and offset, in history
if and only if delivered, de-duplicated by nonce, and refused past the call's deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chat_server.backends.base import DEDUP_PER_TOKEN, BrokerUnavailable
from chat_server.backends.redis import codec
from chat_server.backends.redis.backend import RedisBackend
from chat_server.events import Duplicate, EventKind, RoomEvent
from chat_server.ops.settings import Settings
from chat_testing.brokers import started
from chat_testing.marks import requires_redis
from chat_testing.redis_servers import RedisServer, start_redis

pytestmark = requires_redis


def test_one_message_carries_a_call_s_events_whatever_their_text() -> None:
    texts = ["plain", "two\nlines", "", "naïve ✓ with a trailing newline\n"]
    numbers = " ".join(f"{i + 1} {i} {len(t.encode())}" for i, t in enumerate(texts))
    words = " ".join(f"m user_{i} {codec.encode_nonce(f'tok:{i} x')}" for i in range(len(texts)))
    data = f"v2 e1 1700000000123 node-1\n{numbers}\n{words}\n{''.join(texts)}".encode()
    events = codec.decode(data)
    assert [(e.serial, e.offset, e.name, e.text, e.nonce) for e in events] == [
        (i + 1, i, f"user_{i}", t, f"tok:{i} x") for i, t in enumerate(texts)
    ]
    assert {(e.epoch, e.time, e.origin) for e in events} == {("e1", 1700000000.123, "node-1")}
    # ASCII only: the texts are cut from one decoded string.
    (plain,) = codec.decode(b"v2 e1 1 n\n1 1 5\nj user_a -\nhello")
    assert (plain.kind, plain.text, plain.nonce) == (EventKind.JOIN, "hello", None)
    # What a node before v2 published still reads.
    (old,) = codec.decode(b"v1 3 2 e1 1700000000123 j node-1 user_a -\nhello\nthere")
    assert (old.kind, old.serial, old.text, old.nonce) == (EventKind.JOIN, 3, "hello\nthere", None)
    for bad in (
        b"v2 e1 1 n\n1 1 9\nm a -\nshort",  # a text shorter than said
        b"v2 e1 1 n\n1 1 2\nm a -\nlonger",  # or longer
        b"v2 e1 1 n\n1 1 0\nq a -\n",  # no such kind
        b"v2 e1 1 n\n1 1\nm a -\n",  # a number missing
        b"v3 x",
    ):
        with pytest.raises(codec.MalformedEvent):
            codec.decode(bad)


@pytest.fixture(scope="module")
def redis_server() -> AsyncIterator[RedisServer]:
    server = start_redis()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.fixture
async def backend(redis_server: RedisServer) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(Settings(broker_url=redis_server.url), "test-node-1")
    await started(backend)
    yield backend
    await backend.close()


def evalsha_calls(redis_server: RedisServer) -> int:
    stats = redis_server.client().info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0))


async def test_a_loop_iteration_s_events_for_a_room_are_one_call_each_numbered(
    backend: RedisBackend, redis_server: RedisServer
) -> None:
    channels = backend.channels
    heard: list[RoomEvent] = []
    channels.bind(lambda room, event: heard.append(event))
    await channels.subscribe("batched")
    joined = await channels.publish("batched", EventKind.JOIN, "user_a")
    assert joined is not None
    before = evalsha_calls(redis_server)

    # Issued in one loop iteration: one call. The repeated nonce is the first one's.
    nonces = ["tok:1", "tok:2", "tok:1", None, "tok:3"]
    pending = [
        channels.publish("batched", EventKind.MESSAGE, "user_a", f"m{i}", nonce, joined.serial)
        for i, nonce in enumerate(nonces)
    ]
    landed = await asyncio.gather(*pending)
    assert evalsha_calls(redis_server) - before == 1
    delivered = [p for p in landed if p is not None and not p.duplicate]
    assert [p.offset for p in delivered] == [1, 2, 3, 4]
    assert [p.serial for p in delivered] == [joined.serial + i for i in range(1, 5)]
    duplicate = landed[2]
    assert isinstance(duplicate, Duplicate) and duplicate.offset == landed[0].offset

    # Delivered in order, once each, and in history exactly as delivered.
    while len(heard) < 5:  # the join, then the four messages
        await asyncio.sleep(0.005)
    assert [(e.kind, e.text, e.offset) for e in heard[1:]] == [
        (EventKind.MESSAGE, text, offset)
        for text, offset in [("m0", 1), ("m1", 2), ("m3", 3), ("m4", 4)]
    ]
    stored = await backend.history.since("batched", 0, 4)
    assert stored is not None and [m.text for m in stored] == ["m0", "m1", "m3", "m4"]
    # The room's keys expire (set once per eighth of their ttl, not per event).
    client = redis_server.client()
    for key in ("seq", "history", "nonces", "nonce-tokens"):
        assert client.ttl(f"chat:room:batched:{key}") > 0, key

    # A member not present (a stale ref) is refused in the same call as the others' events.
    stale, fine = await asyncio.gather(
        channels.publish(
            "batched", EventKind.MESSAGE, "user_a", "old join", None, joined.serial + 99
        ),
        channels.publish("batched", EventKind.MESSAGE, "user_a", "m5", None, joined.serial),
    )
    assert stale is None and fine is not None and fine.offset == 5


async def test_a_call_past_its_deadline_publishes_none_of_its_events(
    backend: RedisBackend,
) -> None:
    channels = backend.channels
    joined = await channels.publish("late", EventKind.JOIN, "user_b")
    assert joined is not None
    # Redis's clock as this node sees it, far behind: the call arrives past its deadline.
    backend.redis.clock_offset_ms -= 3_600_000
    results = await asyncio.gather(
        *(channels.publish("late", EventKind.MESSAGE, "user_b", f"m{i}") for i in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, BrokerUnavailable) for r in results), results
    assert await backend.history.latest("late", 10, 10) == []


async def test_past_its_window_a_token_s_oldest_nonce_is_forgotten(
    backend: RedisBackend, redis_server: RedisServer
) -> None:
    channels = backend.channels
    joined = await channels.publish("window", EventKind.JOIN, "user_c")
    assert joined is not None
    ref = joined.serial
    sends = [
        channels.publish("window", EventKind.MESSAGE, "user_c", "m", f"tok:{i}", ref)
        for i in range(DEDUP_PER_TOKEN + 2)
    ]
    assert all(p is not None and not p.duplicate for p in await asyncio.gather(*sends))
    again_old, again_new = await asyncio.gather(
        channels.publish("window", EventKind.MESSAGE, "user_c", "m", "tok:0", ref),
        channels.publish("window", EventKind.MESSAGE, "user_c", "m", f"tok:{DEDUP_PER_TOKEN}", ref),
    )
    assert again_old is not None and not again_old.duplicate  # forgotten: published anew
    assert isinstance(again_new, Duplicate) and again_new.offset == DEDUP_PER_TOKEN + 1
    client = redis_server.client()
    assert client.llen("chat:room:window:nonce-order:tok") == DEDUP_PER_TOKEN
    assert client.hlen("chat:room:window:nonces") == DEDUP_PER_TOKEN


async def test_a_big_history_is_read_a_page_at_a_time_and_no_further_than_is_sent(
    redis_server: RedisServer,
) -> None:
    """A join read its room's whole history in one command: 1,000 messages of 16 KiB were
    16 MiB, 110 ms of Redis, every other command of the node waiting behind it; 40 such joins
    from one address made the node take Redis for dead and close everyone (a hostile-client
    run). Reads are pages of PAGE and stop past what one connection is sent."""
    backend = RedisBackend(
        Settings(broker_url=redis_server.url, max_backlog_bytes=1024 * 1024), "test-node-2"
    )
    await started(backend)
    try:
        client = redis_server.client()
        key = backend.redis.keys.room_history("big")
        text = "x" * 16 * 1024
        with client.pipeline() as pipe:
            for offset in range(1, 1001):
                pipe.xadd(key, {"n": "user_a", "t": text, "m": 1_765_022_400_000}, id=f"{offset}-0")
            pipe.execute()
        client.config_resetstat()

        newest = await backend.history.latest("big", 1000, 1000)
        # The newest that hold more than the 1 MiB sent: 65 of 16 KiB (the caller cuts it).
        assert [m.offset for m in newest] == list(range(1000 - len(newest) + 1, 1001))
        assert 64 < len(newest) <= 2 * 64
        calls = client.info("commandstats")["cmdstat_xrevrange"]["calls"]
        assert calls == 2  # two pages of 64, not one of 1,000

        # A recovery of more than is sent comes back as its newest part, not None.
        part = await backend.history.since("big", 0, 1000)
        assert part is not None and part[-1].offset == 1000 and len(part) < 1000
        # One that is not retained whole, and small, is still None.
        client.xtrim(key, minid="990-0")
        assert await backend.history.since("big", 980, 1000) is None
        assert [m.offset for m in await backend.history.since("big", 995, 1000) or []] == [
            996, 997, 998, 999, 1000,
        ]  # fmt: skip
    finally:
        await backend.close()
