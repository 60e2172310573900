"""When Redis fails: stopped, killed, paused, stalled briefly, restarted empty, its data lost, a
subscription gone silent, an event out of sequence. Each has one defined outcome (see
docs/scaling.md, "When Redis fails"), tested here against a real redis-server.

The policy: a node never pretends. While it cannot reach Redis it closes its chat connections
with 1013 and a reason that says so, refuses new ones with 1013, and answers /health with 503;
within a second of Redis answering again it accepts and delivers again. A message whose
publish did not complete is never delivered later, and its sender never saw it echoed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from chat_protocol.close import CloseCode
from chat_protocol.v1 import format_join
from chat_testing.clusters import (
    FAST_BROKER_TIMEOUT,
    FAST_NODE_TTL,
    FAST_PROBE_INTERVAL,
    Cluster,
    running_cluster,
    start_nodes,
)
from chat_testing.marks import requires_redis
from chat_testing.proxy import TcpProxy
from chat_testing.redis_servers import start_redis
from chat_testing.servers import RunningServer, start_server
from chat_testing.waits import eventually, wait_until
from tests.server.wsclients import Member, join

pytestmark = requires_redis

# What a loaded 2-core machine may add to any deadline below.
SLACK = 2.0
# The watchdog gives up a little after the broker timeout (backend.GIVE_UP_MARGIN).
DETECTION = FAST_BROKER_TIMEOUT + 0.25


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    # DEBUG SLEEP stalls Redis for the short-stall test (Redis 7 refuses DEBUG by default).
    # One Redis, whatever CHAT_TEST_SHARED_BROKER says: these are its faults (sentinels would
    # fail a paused master over, which is test_sentinel's story).
    with running_cluster(
        2, "--enable-debug-command", "local", shared_kind="redis", rate_limit=0
    ) as c:
        yield c


def health(node: RunningServer) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(node.http_url + "/health", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


async def closed_with(member: Member, timeout: float) -> tuple[int, str, float, list[str]]:
    """Read until the server closes: (code, reason, seconds it took, frames read meanwhile)."""
    started = time.monotonic()
    frames: list[str] = []
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(timeout):
            while True:
                frames.append(str(await member.ws.recv()))
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason, time.monotonic() - started, frames


async def refused_with(url: str) -> tuple[int, str]:
    async with websockets.connect(url) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


async def assert_cluster_chats(cluster: Cluster, room: str) -> None:
    """Members on two nodes hear each other."""
    a = await join(cluster.url(0, room))
    b = await join(cluster.url(1, room))
    assert await a.recv() == format_join(b.name)
    await b.ws.send("across nodes again")
    for member in (a, b):
        assert await member.recv() == f"{b.name} :: across nodes again"
    await a.close()
    await b.close()


def epoch_of(cluster: Cluster, room: str) -> str | None:
    epoch = cluster.redis.client().hget(f"chat:room:{room}:seq", "e")
    return epoch.decode() if epoch is not None else None


def wait_back(cluster: Cluster, since: float) -> float:
    """Seconds from ``since`` until every node answers /health with 200."""
    for node in cluster.nodes:
        wait_until(lambda n=node: health(n)[0] == 200, timeout=10, interval=0.02, what="back")
    return time.monotonic() - since


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
async def test_redis_gone_closes_everyone_1013_refuses_and_recovers_with_a_new_epoch(
    cluster: Cluster, how: signal.Signals
) -> None:
    room = "outage"
    a = await join(cluster.url(0, room))
    b = await join(cluster.url(1, room))
    await a.ws.send("before")
    assert (await a.recv()).endswith(" joined the chat")
    assert await b.recv() == f"{a.name} :: before"
    epoch_before = epoch_of(cluster, room)

    cluster.redis.stop(how)
    for member in (a, b):
        code, reason, after, _ = await closed_with(member, DETECTION + SLACK)
        assert code == CloseCode.TRY_AGAIN_LATER and "broker unavailable" in reason, reason
        print(f"redis {how.name}: member closed 1013 after {after:.2f} s")
    for node in cluster.nodes:
        status, body = health(node)
        assert status == 503 and body["status"] == "unavailable", body
        assert body["broker"]["state"] == "unavailable" and body["reason"]
        code, reason = await refused_with(node.chat_url(room))
        assert code == CloseCode.TRY_AGAIN_LATER and "broker unavailable" in reason
        # Clients are told what is wrong, not where the broker is.
        assert str(cluster.redis.port) not in reason and "redis://" not in reason, reason

    cluster.redis.start()  # the same port, empty: no persistence
    back = wait_back(cluster, time.monotonic())
    print(f"redis back: every node answering after {back:.2f} s")
    assert back < 1.0 + SLACK / 2, back
    await assert_cluster_chats(cluster, room)
    # The sequence started over: a new epoch, offsets from 1 again.
    assert epoch_of(cluster, room) not in {None, epoch_before}
    assert cluster.redis.client().hget(f"chat:room:{room}:seq", "o") == b"1"


async def test_redis_paused_past_the_timeout_drops_the_unsent_message_for_good(
    cluster: Cluster,
) -> None:
    room = "paused"
    a = await join(cluster.url(0, room))
    b = await join(cluster.url(1, room))
    assert await a.recv() == format_join(b.name)

    cluster.redis.pause()  # SIGSTOP: sockets open, nothing answers
    try:
        await a.ws.send("sent while redis was paused")
        results = await asyncio.gather(
            *(closed_with(m, DETECTION + SLACK + 1) for m in (a, b)), return_exceptions=True
        )
    finally:
        cluster.redis.resume()
    for result in results:
        assert not isinstance(result, BaseException), result
        code, reason, after, frames = result
        assert code == CloseCode.TRY_AGAIN_LATER and "broker unavailable" in reason
        # Nobody saw it: the sender knows it was not sent.
        assert frames == [], frames
        print(f"redis paused: member closed 1013 after {after:.2f} s")
    # Once Redis resumes, the publish it had queued is refused as stale: never delivered late.
    back = wait_back(cluster, time.monotonic())
    print(f"redis resumed: every node answering after {back:.2f} s")
    late = await join(cluster.url(1, room))
    other = await join(cluster.url(0, room))
    assert await late.recv() == format_join(other.name)
    await other.ws.send("after the pause")
    assert await late.recv() == f"{other.name} :: after the pause"
    assert cluster.redis.client().hget(f"chat:room:{room}:seq", "o") in {None, b"1"}
    await late.close()
    await other.close()


async def test_a_short_redis_stall_is_ridden_out_with_nothing_lost(cluster: Cluster) -> None:
    room = "stall"
    a = await join(cluster.url(0, room))
    b = await join(cluster.url(1, room))
    assert await a.recv() == format_join(b.name)
    stall = FAST_BROKER_TIMEOUT / 3

    replies: list[object] = []
    sleeper = threading.Thread(
        target=lambda: replies.append(
            cluster.redis.client().execute_command("DEBUG", "SLEEP", stall)
        )
    )
    started = time.monotonic()
    sleeper.start()
    await eventually(cluster.redis.asleep, timeout=5, interval=0.005, what="DEBUG SLEEP")
    for i in range(5):
        await a.ws.send(f"during the stall {i}")
    expected = [f"{a.name} :: during the stall {i}" for i in range(5)]
    for member in (a, b):
        assert [await member.recv(timeout=5) for _ in expected] == expected
    sleeper.join()
    assert replies == [b"OK"] and time.monotonic() - started >= stall  # it did stall
    for node in cluster.nodes:
        assert "broker unavailable" not in node.log()
    await a.close()
    await b.close()


async def test_a_stall_of_the_node_itself_is_not_taken_for_a_broker_outage() -> None:
    """The node's own process stands still (SIGSTOP: as a starved machine or a long GC pause
    would) while a publish of its is waiting for Redis. Redis answered in time; the node must
    not declare it unavailable and close everyone because it read the answer late."""
    # Node 0 reaches Redis through a relay, which says when the publish has left the node.
    redis = start_redis("--enable-debug-command", "local")
    try:
        with TcpProxy([redis.port]) as relay:
            relayed = type(redis)(relay.port, redis.log_path)  # same server, via the relay
            nodes = start_nodes(relayed, 1, rate_limit=0) + start_nodes(redis, 1, rate_limit=0)
            try:
                await _node_stall(Cluster(redis, nodes), relay)
            finally:
                for node in nodes:
                    node.stop()
    finally:
        redis.stop()


async def _node_stall(cluster: Cluster, relay: TcpProxy) -> None:
    room = "node-stall"
    a = await join(cluster.url(0, room))
    b = await join(cluster.url(1, room))
    assert await a.recv() == format_join(b.name)
    redis_stall = FAST_BROKER_TIMEOUT / 2
    sleeper = threading.Thread(
        target=lambda: cluster.redis.client().execute_command("DEBUG", "SLEEP", redis_stall)
    )
    sleeper.start()
    # Redis is asleep: node 0's publish will wait for it.
    await eventually(cluster.redis.asleep, timeout=5, interval=0.005, what="DEBUG SLEEP")
    published = relay.watch(b"sent as the node stopped")
    await a.ws.send("sent as the node stopped")
    # Node 0 read it and sent the publish (Redis still asleep).
    await eventually(published.is_set, timeout=5, interval=0.005, what="node 0's publish")
    node = cluster.nodes[0]
    node.process.send_signal(signal.SIGSTOP)
    try:
        # The node's stall under test: well past the broker timeout, short of the node ttl.
        await asyncio.sleep(DETECTION + 1.0)
    finally:
        node.process.send_signal(signal.SIGCONT)
    sleeper.join()
    echo = f"{a.name} :: sent as the node stopped"
    for member in (a, b):
        assert await member.recv(timeout=5 + SLACK) == echo
    await b.ws.send("and after it")
    assert await a.recv(timeout=5) == f"{b.name} :: and after it"
    assert "broker unavailable" not in node.log()
    await a.close()
    await b.close()


async def test_a_subscription_that_silently_stops_is_detected_by_the_probe() -> None:
    redis = start_redis()
    try:
        with TcpProxy([redis.port]) as proxy:
            proxied = type(redis)(proxy.port, redis.log_path)  # same server, via the proxy
            nodes = start_nodes(proxied, 2, rate_limit=0)
            cluster = Cluster(redis, nodes)
            try:
                await _silent_subscription(cluster, proxy)
            finally:
                for node in nodes:
                    node.stop()
    finally:
        redis.stop()


async def _silent_subscription(cluster: Cluster, proxy: TcpProxy) -> None:
    a1, a2 = await join(cluster.url(0, "silent")), await join(cluster.url(0, "silent"))
    b = await join(cluster.url(1, "silent"))
    assert (await a1.recv()).endswith(" joined the chat")
    assert (await a1.recv()).endswith(" joined the chat")
    assert (await a2.recv()).endswith(" joined the chat")
    node1 = cluster.nodes[1].get_json("/health")["node"]["id"]
    assert proxy.blackhole(lambda hello: f"chat:{node1}:pubsub".encode() in hello) == 1

    # Node 1 no longer hears anything, though its socket is open: until its probe says so.
    code, reason, after, _ = await closed_with(b, FAST_PROBE_INTERVAL + DETECTION + SLACK)
    assert code == CloseCode.TRY_AGAIN_LATER and "subscription" in reason, reason
    print(f"silent subscription: member closed 1013 after {after:.2f} s")
    # Node 0 was never affected, and node 1 comes back on a fresh subscription.
    assert (await a1.recv()).endswith(" left the chat")
    await a2.ws.send("node 0 carries on")
    assert await a1.recv() == f"{a2.name} :: node 0 carries on"
    wait_until(lambda: health(cluster.nodes[1])[0] == 200, timeout=5, what="node 1 back")
    await assert_cluster_chats(cluster, "silent-after")
    await a1.close()
    await a2.close()


async def test_redis_losing_its_data_sends_everyone_round_again(cluster: Cluster) -> None:
    # FLUSHALL stands for a restart behind a proxy, or a failover to an empty replica: the
    # connections stay up, the nodes' registrations and the rooms' sequences are gone.
    room = "flushed"
    a = await join(cluster.url(0, room))
    b = await join(cluster.url(1, room))
    assert await a.recv() == format_join(b.name)
    await a.ws.send("one")
    for member in (a, b):
        assert await member.recv() == f"{a.name} :: one"
    epoch_before = epoch_of(cluster, room)
    ids_before = {node.get_json("/health")["node"]["id"] for node in cluster.nodes}

    cluster.redis.client().flushall()
    await a.ws.send("two")  # refused: the broker no longer has a in the room
    for member in (a, b):
        code, reason, after, frames = await closed_with(
            member, FAST_NODE_TTL / 3 + DETECTION + SLACK
        )
        assert f"{a.name} :: two" not in frames
        assert code in {CloseCode.SERVICE_RESTART, CloseCode.TRY_AGAIN_LATER}, (code, reason)
        print(f"flushall: member closed {code} ({reason}) after {after:.2f} s")
    # Each node finds out at its next heartbeat (a third of the node ttl) and registers anew.
    for node in cluster.nodes:
        wait_until(
            lambda n=node: health(n)[0] == 200 and health(n)[1]["node"]["id"] not in ids_before,
            timeout=FAST_NODE_TTL,
            what="the node to register again under a new id",
        )
    await assert_cluster_chats(cluster, room)
    assert epoch_of(cluster, room) not in {None, epoch_before}


@pytest.mark.parametrize("forged", ["gap", "epoch"])
async def test_an_event_out_of_sequence_sends_the_room_s_members_to_reconnect(
    cluster: Cluster, forged: str
) -> None:
    room, calm = "forged", "calm"
    a = await join(cluster.url(0, room))
    b = await join(cluster.url(1, room))
    c = await join(cluster.url(1, calm))
    assert await a.recv() == format_join(b.name)
    redis = cluster.redis.client()
    seq = redis.hgetall(f"chat:room:{room}:seq")
    serial, offset, epoch = int(seq[b"n"]), int(seq.get(b"o", 0)), seq[b"e"].decode()
    if forged == "gap":
        serial += 2  # one event skipped
    else:
        serial, epoch = 1, "restarted"
    now = int(time.time() * 1000)
    header = f"v1 {serial} {offset + 1} {epoch} {now} m elsewhere user_forged00 -"
    redis.publish(f"chat:room:{room}", f"{header}\nnever shown")

    for member in (a, b):
        code, reason, _, frames = await closed_with(member, 5)
        assert code == CloseCode.SERVICE_RESTART and "missed frames" in reason, reason
        assert frames == []
    # Another room on the same node never noticed.
    await c.ws.send("still fine")
    assert await c.recv() == f"{c.name} :: still fine"
    await c.close()


@requires_redis
@pytest.mark.memory_only
def test_a_redis_that_may_evict_any_key_is_refused_until_it_may_not() -> None:
    """Under ``allkeys-*`` a full Redis drops names and numbering silently: the server says so
    and serves nobody; set to ``noeviction``, it serves within a moment."""
    redis = start_redis("--save", "", "--appendonly", "no", "--maxmemory-policy", "allkeys-lru")
    server = start_server(rate_limit=0, broker_url=redis.url, wait=False)
    try:
        # 503 from the start ("connecting to redis"), then with the reason once it is asked.
        said = "maxmemory-policy allkeys-lru may evict the chat's keys: set noeviction"
        _, body = wait_until(
            lambda: (h := health_or_none(server)) and said in h[1].get("reason", "") and h,
            timeout=30,
        )
        assert body["status"] == "unavailable"
        redis.client().config_set("maxmemory-policy", "noeviction")
        wait_until(lambda: (h := health_or_none(server)) and h[0] == 200, timeout=10)
    finally:
        server.stop()
        redis.stop()


def health_or_none(node: RunningServer) -> tuple[int, dict[str, Any]] | None:
    try:
        return health(node)
    except OSError:
        return None  # not listening yet


async def test_a_server_takes_no_join_before_its_first_try_to_reach_redis() -> None:
    """Started while Redis does not answer (paused: connections open, nothing answers), a
    server waits for its first try (up to the broker timeout) before it takes connections: a
    join sent meanwhile waits and then joins, rather than being refused with "connecting to
    redis" (which, with several workers, a client met after another worker's /health had
    said the chat was up)."""
    redis = start_redis()
    redis.pause()
    server = None
    try:
        server = start_server(
            broker_url=redis.url, wait=False, env={"CHAT_SERVER_BROKER_TIMEOUT": "5"}
        )
        process = psutil.Process(server.process.pid)
        wait_until(
            lambda: any(c.raddr and c.raddr.port == redis.port for c in process.net_connections()),
            timeout=30,
            what="the server's first try to reach redis",
        )
        early = asyncio.create_task(_join_once_listening(server.chat_url("early")))
        # The window under test: a server taking connections answers a join within it.
        done, _ = await asyncio.wait({early}, timeout=1.0)
        assert not done, early.result() if not early.exception() else early.exception()
        redis.resume()
        member = await asyncio.wait_for(early, 15)
        assert member.name
        await member.close()
    finally:
        redis.resume()
        if server is not None:
            server.stop()
        redis.stop()


async def _join_once_listening(url: str) -> Member:
    """A join, tried again while nothing listens on the port yet."""
    while True:
        try:
            return await join(url)
        except OSError:
            await asyncio.sleep(0.05)
