"""``redis+cluster://``: two chat-servers on a Redis Cluster of three masters with a replica
each, all real processes. The master of one room's slot is killed; the cluster promotes its
replica, and both chat-servers follow by themselves. See docs/scaling.md, "Redis Cluster".

What must hold, as with Sentinel: the chat is back on both servers within the documented
time; a client that comes back either recovers exactly or is told that the room's numbering
started over (a new epoch); nothing its sender saw acknowledged is silently gone. And what a
cluster adds: a room on a master that did not fail keeps its epoch and recovers exactly.

The suites of one Redis (conformance, scale-out, history) run on a cluster with
``CHAT_TEST_BROKERS=cluster CHAT_TEST_SHARED_BROKER=cluster`` (see chat_testing/brokers.py).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from redis.crc import key_slot
from websockets.exceptions import ConnectionClosed

from chat_protocol.close import CloseCode
from chat_server.backends.redis.keys import CLUSTER
from chat_testing.clusters import FAST
from chat_testing.marks import requires_redis
from chat_testing.redis_clusters import FAILOVER_WITHIN, ClusterNode, RedisCluster, start_cluster
from chat_testing.servers import RunningServer, start_server, wait_ready
from chat_testing.waits import wait_until
from tests.server.test_redis_faults import health
from tests.server.wsclients import (
    V2Member,
    join_v2,
    nothing_lost_silently,
    one_chat,
    read_until_closed,
    recovered_or_told,
    resume_query,
)

pytestmark = [requires_redis, pytest.mark.xdist_group("redis-cluster")]

# The chat is back on every node within this of the master's death (docs/scaling.md): the
# cluster's failover (node timeout, election), then a node's reconnect, which asks again every
# 0.2 s; FAILOVER_WITHIN already holds what a loaded 2-core machine adds.
BACK_WITHIN = FAILOVER_WITHIN
SLACK = 5.0


@dataclass
class ClusterChat:
    redis: RedisCluster
    nodes: list[RunningServer]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.redis.stop()


@pytest.fixture
def chat() -> Iterator[ClusterChat]:
    redis = start_cluster(3, 1)
    try:
        nodes = [
            start_server(broker_url=redis.url, env=FAST, wait=False, rate_limit=0) for _ in range(2)
        ]
    except BaseException:
        redis.stop()
        raise
    chat = ClusterChat(redis, nodes)
    try:
        for node in nodes:
            wait_ready(node)
        yield chat
    finally:
        chat.stop()


def rooms_on(redis: RedisCluster) -> tuple[str, str, ClusterNode]:
    """Two rooms on two different masters, neither the directory's; the first one's master."""
    owner = {n.port: n for n in redis.masters()}
    directory = redis.master_of(CLUSTER.rooms).port
    found: dict[int, str] = {}
    for i in itertools.count():
        room = f"shard{i}"
        port = redis.master_of(CLUSTER.room_sequence(room)).port
        if port != directory and port not in found:
            found[port] = room
        if len(found) == 2:
            break
    (doomed_port, doomed), (_, spared) = found.items()
    return doomed, spared, owner[doomed_port]


def wait_back(nodes: list[RunningServer]) -> None:
    """Until every node answers /health with 200 again."""
    for node in nodes:
        wait_until(
            lambda n=node: health(n)[0] == 200,
            timeout=BACK_WITHIN + SLACK,
            interval=0.05,
            what=f"node {node.port} back",
        )


async def test_a_killed_master_fails_over_and_loses_nothing_silently(chat: ClusterChat) -> None:
    node0, node1 = chat.nodes
    status, body = health(node0)
    assert status == 200 and body["broker"]["url"].startswith("redis+cluster://"), body
    doomed, spared, master = rooms_on(chat.redis)

    # The two chat-servers are one chat, in a room on each of two masters.
    a = await join_v2(node0.chat_url(doomed))
    b = await join_v2(node1.chat_url(doomed))
    await a.recv_until(lambda f: f["type"] == "join" and f["name"] == b.name)
    await one_chat(a, b, "before")
    c = await join_v2(node0.chat_url(spared))
    d = await join_v2(node1.chat_url(spared))
    await c.recv_until(lambda f: f["type"] == "join" and f["name"] == d.name)
    spared_seen = await one_chat(d, c, "spared before")
    epoch, spared_epoch = str(a.welcome["epoch"]), str(c.welcome["epoch"])

    # A burst in flight when the master dies: whatever was acknowledged must not vanish.
    sent = 30
    for i in range(sent):
        await a.send(f"burst {i}", nonce=f"burst-{i}")
    frames = await a.recv_until(lambda f: f["type"] == "ack" and f["nonce"] == "burst-4")
    replica = chat.redis.replicas_of(master)[0]
    chat.redis.kill(master)
    killed = time.monotonic()
    # What the replica had when its master died, read while it is surely still a replica
    # (the cluster waits its node timeout before it even votes).
    reader = redis.Redis(port=replica.port, single_connection_client=True)
    reader.execute_command("READONLY")  # a replica answers for its master's slots
    history = reader.xrange(CLUSTER.room_history(doomed))
    reader.close()
    replicated = {int(entry_id.decode().partition("-")[0]) for entry_id, _ in history}

    acks: dict[str, int] = {f["nonce"]: f["offset"] for f in frames if f["type"] == "ack"}
    seen = max(int(f["offset"]) for f in frames if "offset" in f)
    close, seen = await read_until_closed(a, seen, acks, 5 + SLACK)
    code = close.code
    # A lost master is a broker failure: the outage policy (docs/scaling.md, "When Redis
    # fails") closes everyone with 1013 rather than let them talk into the void.
    assert code == CloseCode.TRY_AGAIN_LATER, code
    burst_acked = {n: o for n, o in acks.items() if n.startswith("burst-")}
    assert "burst-4" in burst_acked
    for member in (b, c, d):
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5 + SLACK):
                while True:
                    await member.recv(5 + SLACK)

    promoted = chat.redis.wait_failover(master, timeout=BACK_WITHIN + SLACK)
    promoted_after = time.monotonic() - killed
    wait_back(chat.nodes)
    back = time.monotonic() - killed
    print(
        f"cluster failover: replica {promoted.port} promoted after {promoted_after:.2f} s, "
        f"chat back on both nodes after {back:.2f} s"
    )
    assert back < BACK_WITHIN + SLACK, back
    # Each node is a new incarnation; the old ones are reaped.
    wait_until(lambda: health(node1)[1]["cluster"]["nodes"] == 2, timeout=10, what="reaped")

    # The failed master's room: exact recovery, or told that it started over.
    a2 = await join_v2(node0.chat_url(doomed), resume_query(a, since=seen, history=50))
    assert a2.name == a.name  # the names live in the directory's slot, on a master alive
    kept = await recovered_or_told(a2, seen, epoch)
    # Nothing acknowledged is silently lost: on the promoted replica, or a new epoch.
    nothing_lost_silently(burst_acked, replicated, kept)

    # The other master's room lost nothing: same epoch, exact recovery.
    c2 = await join_v2(node0.chat_url(spared), resume_query(c, since=spared_seen, history=50))
    assert c2.name == c.name
    assert str(c2.welcome["epoch"]) == spared_epoch, c2.welcome
    assert c2.welcome["recovered"] is True, c2.welcome
    assert await c2.backlog() == []

    # And the two chat-servers are one chat again, in both rooms.
    b2 = await join_v2(node1.chat_url(doomed), resume_query(b))
    await a2.recv_until(lambda f: f["type"] == "join" and f["name"] == b2.name)
    await one_chat(a2, b2, "after")
    await one_chat(b2, a2, "after, back")
    d2 = await join_v2(node1.chat_url(spared), resume_query(d))
    await c2.recv_until(lambda f: f["type"] == "join" and f["name"] == d2.name)
    assert await one_chat(d2, c2, "spared after") == spared_seen + 1
    for member in (a2, b2, c2, d2):
        await member.close()


async def test_a_rooms_slot_migrated_to_another_master_keeps_the_chat(chat: ClusterChat) -> None:
    # What `redis-cli --cluster reshard` does to one room: its keys move (MIGRATE), its slot's
    # owner changes, and Redis unsubscribes its sharded channel on the old master.
    node0, node1 = chat.nodes
    room, _, master = rooms_on(chat.redis)
    a = await join_v2(node0.chat_url(room))
    b = await join_v2(node1.chat_url(room))
    await a.recv_until(lambda f: f["type"] == "join" and f["name"] == b.name)
    await one_chat(a, b, "before")

    slot = key_slot(CLUSTER.room_sequence(room).encode())
    target = next(n for n in chat.redis.masters() if n is not master)
    chat.redis.move_slot(slot, target)
    assert chat.redis.master_of(CLUSTER.room_sequence(room)) is target

    # Nobody is closed for the broker (1013): a migration is not a failure. The channel was
    # lost for a moment, so each node resumes its members or closes them with 1012 (a gap,
    # then they come back); either way the chat goes on between the two nodes.
    async def settled(member: V2Member, url: str) -> V2Member:
        """``member`` if it stays (2 s without a frame), else its resumed connection."""
        try:
            while True:
                await member.recv(2)
        except TimeoutError:
            return member
        except ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == CloseCode.SERVICE_RESTART, exc
            return await join_v2(url, resume_query(member))

    a2 = await settled(a, node0.chat_url(room))
    b2 = await settled(b, node1.chat_url(room))
    assert (a2.name, b2.name) == (a.name, b.name)
    if b2 is not b:
        await a2.recv_until(lambda f: f["type"] == "join" and f["name"] == b2.name)
    await one_chat(a2, b2, "after the move")
    await one_chat(b2, a2, "after the move, back")
    for node in chat.nodes:
        assert health(node)[0] == 200
        assert "broker unavailable" not in node.log()
    for member in (a2, b2):
        await member.close()


async def test_the_directorys_master_killed_fails_over_with_names_and_rooms_kept(
    chat: ClusterChat,
) -> None:
    # The directory (names, nodes, the room index: keys.py) is one slot: its master's death
    # is the same failover, and what it held comes back from the replica.
    node0, node1 = chat.nodes
    room, _, _ = rooms_on(chat.redis)  # a room on another master
    directory = chat.redis.master_of(CLUSTER.rooms)
    a = await join_v2(node0.chat_url(room))
    b = await join_v2(node1.chat_url(room))
    await a.recv_until(lambda f: f["type"] == "join" and f["name"] == b.name)
    seen = await one_chat(a, b, "before")
    epoch = str(a.welcome["epoch"])
    # The names' records reached the replica (asynchronous replication: a claim made just
    # before the kill could be lost, as with Sentinel; not what this test is about).
    replica = chat.redis.replicas_of(directory)[0]
    wait_until(
        lambda: (
            replica.admin().info("replication")["slave_repl_offset"]
            >= directory.admin().info("replication")["master_repl_offset"]
        ),
        what="the directory's replica in step",
    )
    chat.redis.kill(directory)
    for member in (a, b):
        close, _ = await read_until_closed(member, 0, {}, 5 + SLACK)
        assert close.code == CloseCode.TRY_AGAIN_LATER, close
    chat.redis.wait_failover(directory, timeout=BACK_WITHIN + SLACK)
    wait_back(chat.nodes)
    a2 = await join_v2(node0.chat_url(room), resume_query(a, since=seen, history=50))
    b2 = await join_v2(node1.chat_url(room), resume_query(b, since=seen, history=50))
    assert (a2.name, b2.name) == (a.name, b.name)
    assert str(a2.welcome["epoch"]) == epoch and a2.welcome["recovered"] is True, a2.welcome
    await a2.recv_until(lambda f: f["type"] == "join" and f["name"] == b2.name)
    assert await one_chat(b2, a2, "after") == seen + 1
    assert {r["room"] for r in node0.get_json("/rooms")} >= {room}
    for member in (a2, b2):
        await member.close()


async def test_messages_in_flight_while_slots_move_land_once_and_nobody_loses_the_broker(
    chat: ClusterChat,
) -> None:
    # A room's call that meets a migration (MOVED, ASK, TRYAGAIN) did not run: it is sent
    # again where the slot is. The directory's slot moving costs no one the broker either.
    node0, node1 = chat.nodes
    room, _, master = rooms_on(chat.redis)
    a = await join_v2(node0.chat_url(room))
    b = await join_v2(node1.chat_url(room))
    await a.recv_until(lambda f: f["type"] == "join" and f["name"] == b.name)
    target = next(n for n in chat.redis.masters() if n is not master)
    slot = key_slot(CLUSTER.room_sequence(room).encode())
    sent = 200
    for i in range(sent):
        await a.send(f"moving {i}", nonce=f"m-{i}")
    await a.recv_until(lambda f: f["type"] == "ack" and f["nonce"] == "m-20")
    chat.redis.move_slot(slot, target)
    directory = chat.redis.master_of(CLUSTER.rooms)
    other = next(n for n in chat.redis.masters() if n is not directory)
    chat.redis.move_slot(key_slot(CLUSTER.rooms.encode()), other)

    # Every message reaches b once, in order, or b is told (1012) and resumes; a's acks all
    # come, or a is told and sends again what was not acknowledged (as chat-tui does).
    texts: list[str] = []
    try:
        frames = await b.recv_until(
            lambda f: f["type"] == "message" and f["text"] == f"moving {sent - 1}", timeout=20
        )
        texts = [f["text"] for f in frames if f["type"] == "message"]
        assert texts == [f"moving {i}" for i in range(sent)], texts
    except ConnectionClosed as exc:
        assert exc.rcvd is not None and exc.rcvd.code == CloseCode.SERVICE_RESTART, exc
    for node in chat.nodes:
        assert health(node)[0] == 200
        assert "broker unavailable" not in node.log(), node.log()[-2000:]
    for member in (a, b):
        await member.close()
