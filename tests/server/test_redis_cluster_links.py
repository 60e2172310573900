"""The Redis Cluster link layer (``chat_server.backends.redis.cluster``) against a real
cluster: 3 masters with a replica each, made with ``redis-cli --cluster create``. See
docs/scaling.md, "Redis Cluster".

What must hold: a command reaches the master of its key's slot, and a room's hash-tagged keys
share one (a script touching them all runs); a stale map is corrected by the cluster's
``MOVED`` and ``ASK``; sharded pub/sub delivers, one subscriber connection per master, and
follows its slots (a migration, a restart, a failover), naming the channels that may have
missed messages meanwhile; a dead master fails only its own calls.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from redis.exceptions import ClusterCrossSlotError, MovedError

from chat_server.backends.base import BrokerUnavailable
from chat_server.backends.redis.cluster import ClusterLinks, slot_of
from chat_server.backends.redis.links import CommandLink
from chat_server.backends.urls import parse_cluster_url
from chat_testing.marks import requires_redis
from chat_testing.ports import free_port
from chat_testing.redis_clusters import FAILOVER_WITHIN, ClusterNode, RedisCluster, running_cluster
from chat_testing.waits import eventually

# One cluster (six redis-servers) for the whole file, on one worker: not one per worker.
pytestmark = [requires_redis, pytest.mark.xdist_group("redis-cluster")]

SEQ, HISTORY = "chat:room:{lobby}:seq", "chat:room:{lobby}:history"


def channel(room: str) -> str:
    """A room's sharded channel: tagged with the room, so in the slot of the room's keys."""
    return f"chat:room:{{{room}}}"


# A script like the room event's: numbers the event, stores it, publishes it, in one step.
NUMBER_STORE_PUBLISH = """
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
redis.call('XADD', KEYS[2], offset .. '-0', 't', ARGV[2])
redis.call('SPUBLISH', ARGV[1], offset .. ' ' .. ARGV[2])
return offset
"""


SCRIPT_SHA = hashlib.sha1(NUMBER_STORE_PUBLISH.encode()).hexdigest()


async def load_script(address: tuple[str, int], link: CommandLink) -> None:
    """What the backend does on every master it connects to: Redis does not replicate its
    script cache, so a promoted replica has none."""
    assert await link.call("SCRIPT", "LOAD", NUMBER_STORE_PUBLISH) == SCRIPT_SHA.encode()


class Heard:
    """What the links told: messages per channel, and the channels named as missed."""

    def __init__(self) -> None:
        self.messages: dict[str, list[bytes]] = {}
        self.missed: list[list[str]] = []

    def message(self, channel: bytes, data: bytes) -> None:
        self.messages.setdefault(channel.decode(), []).append(data)

    def on_missed(self, channels: list[str]) -> None:
        self.missed.append(channels)

    def got(self, channel: str, data: bytes) -> bool:
        return data in self.messages.get(channel, [])

    def was_missed(self, channel: str) -> bool:
        return any(channel in names for names in self.missed)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with running_cluster(masters=3, replicas=1) as running:
        yield running


@pytest.fixture
def heard() -> Heard:
    return Heard()


@pytest.fixture
async def links(cluster: RedisCluster, heard: Heard) -> AsyncIterator[ClusterLinks]:
    # One seed (a master or a replica): the others are learnt from its map.
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in cluster.live()[:1])
    links = ClusterLinks(
        url, "test-node", heard.message, heard.on_missed, connect_timeout=1.0, prepare=load_script
    )
    await links.start()
    try:
        yield links
    finally:
        await links.close()


def rooms_on(cluster: RedisCluster, master: ClusterNode, count: int) -> list[str]:
    """``count`` room names whose slots are distinct and all on ``master``."""
    owners = cluster.slot_owners()
    found: dict[int, str] = {}
    index = 0
    while len(found) < count:
        room = f"room{index}"
        slot = slot_of(channel(room))
        if owners[slot] == master.port and slot not in found:
            found[slot] = room
        index += 1
    return list(found.values())


def move_from_to(cluster: RedisCluster, key: str) -> tuple[ClusterNode, ClusterNode]:
    """The master of ``key``'s slot, and another that it can be moved to."""
    source = cluster.master_of(key)
    return source, next(m for m in cluster.masters() if m is not source)


def port_of(links: ClusterLinks, key: str) -> int:
    owner = links.owner(key)
    assert owner is not None
    return owner[1]


async def test_a_rooms_keys_share_a_slot_and_reach_its_master(
    cluster: RedisCluster, links: ClusterLinks
) -> None:
    assert slot_of(SEQ) == slot_of(HISTORY) == slot_of(channel("lobby")) == slot_of("lobby")
    master = cluster.master_of(SEQ)
    assert port_of(links, SEQ) == master.port
    await links.call(SEQ, "DEL", SEQ, HISTORY)

    offsets = [
        await links.call(SEQ, "EVAL", NUMBER_STORE_PUBLISH, 2, SEQ, HISTORY, channel("lobby"), t)
        for t in ("hello", "again")
    ]

    assert offsets == [1, 2]
    # On the master of the slot, and nowhere else.
    assert master.admin().hget(SEQ, "o") == b"2"
    assert master.admin().xlen(HISTORY) == 2
    for other in cluster.masters():
        if other is not master:
            with pytest.raises(MovedError):
                other.admin().hget(SEQ, "o")
    # Keys of two slots in one command are refused by Redis, not split by the links.
    other_room = next(r for r in (f"r{i}" for i in range(100)) if slot_of(r) != slot_of(SEQ))
    with pytest.raises(ClusterCrossSlotError):
        await links.call(SEQ, "MGET", SEQ, f"chat:room:{{{other_room}}}:seq")


async def test_a_moved_slot_is_followed_and_an_ask_is_obeyed(
    cluster: RedisCluster, links: ClusterLinks
) -> None:
    key = "chat:name:{alice}"
    await links.call(key, "SET", key, "first")
    source, target = move_from_to(cluster, key)
    cluster.move_slot(slot_of(key), target)
    assert port_of(links, key) == source.port  # the links' map is stale now

    # MOVED: the command is sent again to the new owner, and the map corrected.
    assert await links.call(key, "GET", key) == b"first"
    assert port_of(links, key) == target.port
    await links.refresh()
    assert port_of(links, key) == target.port

    # ASK: half way through a migration a key already moved is served by the target.
    back = source
    slot = slot_of(key)
    src, dst = target.admin(), back.admin()
    dst.execute_command(
        "CLUSTER", "SETSLOT", slot, "IMPORTING", src.execute_command("CLUSTER", "MYID")
    )
    src.execute_command(
        "CLUSTER", "SETSLOT", slot, "MIGRATING", dst.execute_command("CLUSTER", "MYID")
    )
    src.execute_command("MIGRATE", "127.0.0.1", back.port, key, 0, 5000)
    try:
        assert await links.call(key, "GET", key) == b"first"
        assert port_of(links, key) == target.port  # an ASK is for this once: no new owner
    finally:
        cluster.move_slot(slot, back)  # finishes the migration: every node agrees again


async def test_sharded_messages_arrive_on_one_connection_per_master(
    cluster: RedisCluster, links: ClusterLinks, heard: Heard
) -> None:
    # Several slots of each master: one SSUBSCRIBE per slot, one connection per master.
    rooms = [room for master in cluster.masters() for room in rooms_on(cluster, master, 3)]
    await links.subscribe(channel(room) for room in rooms)

    for index, room in enumerate(rooms):
        # Through the links (routed to the owner), and straight to the owner.
        await links.call(channel(room), "SPUBLISH", channel(room), f"via-links {index}")
        cluster.master_of(channel(room)).admin().spublish(channel(room), f"direct {index}")

    for index, room in enumerate(rooms):
        for data in (f"via-links {index}", f"direct {index}"):
            await eventually(lambda r=room, d=data: heard.got(channel(r), d.encode()), timeout=5)
    for master in cluster.masters():
        subscribers = [c for c in master.admin().client_list() if c["name"] == "test-node:pubsub"]
        assert len(subscribers) == 1
        assert int(subscribers[0]["ssub"]) == 3

    links.unsubscribe(channel(rooms[0]))
    await eventually(lambda: links.subscribed(channel(rooms[0])) is None, timeout=5)
    assert not heard.missed


async def test_a_channel_subscribed_again_before_its_unsubscribe_is_confirmed_stays(
    cluster: RedisCluster, links: ClusterLinks, heard: Heard
) -> None:
    # A room's last member leaves and a new one enters at once: the SSUBSCRIBE follows the
    # SUNSUBSCRIBE that Redis has not confirmed yet. It must be sent, not taken as done.
    room = channel("left-and-entered")
    await links.subscribe([room])
    links.unsubscribe(room)
    await links.subscribe([room])

    await links.call(room, "SPUBLISH", room, "after the second subscribe")
    await eventually(lambda: heard.got(room, b"after the second subscribe"), timeout=5)
    assert links.subscribed(room) == ("127.0.0.1", cluster.master_of(room).port)
    assert not heard.missed


async def test_a_subscription_follows_its_slot_to_another_master(
    cluster: RedisCluster, links: ClusterLinks, heard: Heard
) -> None:
    room = "migrating"
    source, target = move_from_to(cluster, channel(room))
    await links.subscribe([channel(room)])
    assert links.subscribed(channel(room)) == source.address

    cluster.move_slot(slot_of(channel(room)), target)

    # Redis unsubscribed it on the source; the links subscribe it on the target, and say
    # that messages may have been missed in between.
    await eventually(lambda: heard.was_missed(channel(room)), timeout=5)
    assert links.subscribed(channel(room)) == target.address
    target.admin().spublish(channel(room), b"after the move")
    await eventually(lambda: heard.got(channel(room), b"after the move"), timeout=5)


async def test_a_subscribe_on_a_stale_map_finds_the_slot(
    cluster: RedisCluster, links: ClusterLinks, heard: Heard
) -> None:
    room = "moved-before"
    source, target = move_from_to(cluster, channel(room))
    cluster.move_slot(slot_of(channel(room)), target)
    assert port_of(links, channel(room)) == source.port  # nothing told the links

    await links.subscribe([channel(room)])  # refused with MOVED, then where the slot is

    assert links.subscribed(channel(room)) == target.address
    target.admin().spublish(channel(room), b"found")
    await eventually(lambda: heard.got(channel(room), b"found"), timeout=5)
    assert not heard.missed  # never subscribed before: nothing to have missed


async def test_a_restarted_master_gets_its_subscriptions_back(
    cluster: RedisCluster, links: ClusterLinks, heard: Heard
) -> None:
    # Several slots on the one master: resubscribing them in one SSUBSCRIBE would be refused
    # (CROSSSLOT, redis-py #4038).
    master = cluster.master_of(SEQ)
    rooms = rooms_on(cluster, master, 3)
    await links.subscribe(channel(r) for r in rooms)

    cluster.kill(master)
    cluster.restart(master)
    cluster.wait_ok()

    for room in rooms:
        await eventually(lambda r=room: heard.was_missed(channel(r)), timeout=FAILOVER_WITHIN)
    for index, room in enumerate(rooms):
        owner = cluster.master_of(channel(room))  # itself, or its replica if it failed over
        assert links.subscribed(channel(room)) == owner.address
        owner.admin().spublish(channel(room), f"back {index}")
        await eventually(lambda r=room, i=index: heard.got(channel(r), f"back {i}".encode()))


async def test_a_master_that_stops_answering_is_failed_and_reconnected(
    cluster: RedisCluster, links: ClusterLinks, heard: Heard
) -> None:
    master = cluster.master_of(SEQ)
    await links.subscribe([channel("lobby")])
    master.pause()  # SIGSTOP: its sockets stay open, nothing answers
    try:
        stuck = asyncio.ensure_future(links.call(SEQ, "PING"))
        # What the backend's watchdog sees, and does past its timeout.
        await eventually(lambda: links.oldest_waits()[master.address] > 0.2, timeout=5)
        links.fail(master.address, "no answer in time")
        with pytest.raises(BrokerUnavailable, match="no answer in time"):
            await stuck
    finally:
        master.resume()
    await eventually(lambda: heard.was_missed(channel("lobby")), timeout=FAILOVER_WITHIN)
    assert links.subscribed(channel("lobby")) == master.address
    assert await links.call(SEQ, "PING")


async def test_a_killed_master_fails_over_and_only_its_calls_fail(
    cluster: RedisCluster, links: ClusterLinks, heard: Heard
) -> None:
    master = cluster.master_of(SEQ)
    assert cluster.replicas_of(master)
    elsewhere = next(r for r in (f"r{i}" for i in range(100)) if cluster.master_of(r) is not master)
    await links.subscribe([channel("lobby"), channel(elsewhere)])

    cluster.kill(master)

    # Its calls fail (at once, or once the link notices), the other masters' do not.
    async def refused() -> bool:
        assert await links.call(elsewhere, "SET", elsewhere, "still here")
        try:
            await links.call(SEQ, "PING")
        except BrokerUnavailable:
            return True
        return False

    await eventually_async(refused, timeout=5)
    assert links.down_reason is not None

    promoted = cluster.wait_failover(master)
    try:
        # Commands and the subscription resume on the promoted replica, scripts loaded.
        await eventually(lambda: links.down_reason is None, timeout=FAILOVER_WITHIN)
        assert port_of(links, SEQ) == promoted.port
        await links.call(SEQ, "DEL", SEQ, HISTORY)
        assert (
            await links.call(SEQ, "EVALSHA", SCRIPT_SHA, 2, SEQ, HISTORY, channel("lobby"), "x")
            == 1
        )
        assert await links.call(elsewhere, "GET", elsewhere) == b"still here"
        await eventually(lambda: heard.was_missed(channel("lobby")), timeout=5)
        assert not heard.was_missed(channel(elsewhere))
        assert links.subscribed(channel("lobby")) == promoted.address
        promoted.admin().spublish(channel("lobby"), b"after the failover")
        await eventually(lambda: heard.got(channel("lobby"), b"after the failover"), timeout=5)
    finally:
        cluster.restart(master)  # back, as the replica of the promoted one
        cluster.wait_ok()


async def eventually_async(condition: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """:func:`eventually` for a condition that must await (a call through the links)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {condition}")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("url", "seeds", "password"),
    [
        ("redis+cluster://127.0.0.1:7000", (("127.0.0.1", 7000),), None),
        (
            "redis+cluster://:p%40ss@a:7000,b,[::1]:7002/",
            (("a", 7000), ("b", 6379), ("::1", 7002)),
            "p@ss",
        ),
    ],
)
def test_cluster_urls(url: str, seeds: tuple[tuple[str, int], ...], password: str | None) -> None:
    parsed = parse_cluster_url(url)
    assert (parsed.seeds, parsed.password) == (seeds, password)


@pytest.mark.parametrize(
    "url", ["redis+cluster://a:7000/1", "redis+cluster://a:x", "redis+cluster://a?x=1", "redis://a"]
)
def test_bad_cluster_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_cluster_url(url)


async def test_no_seed_answers(heard: Heard) -> None:
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    links = ClusterLinks(url, "test-node", heard.message, heard.on_missed, connect_timeout=1.0)
    with pytest.raises(BrokerUnavailable, match="no master"):
        await links.start()
