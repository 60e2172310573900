"""Exactly-once within the room's bound on nonces, on each broker's own code (memory, sqlite,
Redis): past the bound, the token that holds the most nonces forgets first.

The room-wide bound is 20,000 nonces; it is made small here (a monkeypatch of the constant the
broker reads) so that a flood past it takes milliseconds, not 20,000 sends per broker. The
path from a WebSocket to the broker's publish is the same as in test_promises'
``test_others_cannot_flush_a_senders_exactly_once_window``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chat_server.backends import memory
from chat_server.backends.base import Backend
from chat_server.backends.memory import MemoryBackend
from chat_server.backends.redis import channels as redis_channels
from chat_server.backends.redis.backend import RedisBackend
from chat_server.backends.sqlite import SqliteBackend
from chat_server.events import Duplicate, EventKind
from chat_server.ops.settings import Settings
from chat_testing.brokers import started
from chat_testing.marks import requires_redis
from chat_testing.redis_servers import start_redis

pytestmark = pytest.mark.memory_only  # each broker is made here, not per the suite's broker

PER_ROOM = 60


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=requires_redis)])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Backend]:
    monkeypatch.setattr(memory, "DEDUP_PER_ROOM", PER_ROOM)  # memory's and sqlite's
    monkeypatch.setattr(redis_channels, "DEDUP_PER_ROOM", PER_ROOM)
    redis = None
    made: Backend
    if request.param == "memory":
        made = MemoryBackend(Settings(broker_url="memory://"), "node-1")
    elif request.param == "sqlite":
        made = SqliteBackend(Settings(broker_url=f"sqlite://{tmp_path / 'chat.db'}"), "node-1")
    else:
        redis = start_redis()
        made = RedisBackend(Settings(broker_url=redis.url), "node-1")
    try:
        await started(made)
        yield made
    finally:
        await made.close()
        if redis is not None:
            redis.stop()


async def test_a_flood_of_many_tokens_forgets_its_own_nonces_not_a_quiet_members(
    backend: Backend,
) -> None:
    """A quiet member sends one message; a flood past the room's bound comes from three
    tokens (90 sends with nonces against a bound of 60). The member's re-send of its message,
    after a reconnect that did not see its ack, is still recognised; the flood's oldest are
    what was forgotten. (The oldest nonces of the room went first, the quiet member's with
    them: its message was published twice.)"""
    channels = backend.channels
    room = "bounded"
    joins = {}
    for name in ("quiet", "loud1", "loud2", "loud3"):
        joined = await channels.publish(room, EventKind.JOIN, name)
        assert joined is not None
        joins[name] = joined.serial
    first = await channels.publish(
        room, EventKind.MESSAGE, "quiet", "only once", "q:1", joins["quiet"]
    )
    assert first is not None and not isinstance(first, Duplicate)
    flood = [
        channels.publish(room, EventKind.MESSAGE, name, f"{name} {n}", f"{name}:{n}", joins[name])
        for n in range(30)
        for name in ("loud1", "loud2", "loud3")
    ]
    assert not any(isinstance(p, Duplicate) for p in await asyncio.gather(*flood))

    again = await channels.publish(
        room, EventKind.MESSAGE, "quiet", "only once", "q:1", joins["quiet"]
    )
    assert isinstance(again, Duplicate) and again.offset == first.offset
    # Each loud token kept its newest (60 in all with the quiet one's: 19 or 20 each); its
    # oldest was forgotten, and is published anew.
    newest = await channels.publish(
        room, EventKind.MESSAGE, "loud1", "x", "loud1:29", joins["loud1"]
    )
    assert isinstance(newest, Duplicate)
    oldest = await channels.publish(
        room, EventKind.MESSAGE, "loud2", "x", "loud2:0", joins["loud2"]
    )
    assert oldest is not None and not isinstance(oldest, Duplicate)
