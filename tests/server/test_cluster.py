"""Three chat-server processes on one real redis-server behave, to any client, as one server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import threading
import time
import urllib.error
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from chat_protocol.frames import FrameKind
from chat_protocol.names import is_valid_name
from chat_protocol.v1 import format_join, format_leave, parse_frame
from chat_server.ops.settings import Settings
from chat_testing.clusters import FAST, FAST_NODE_TTL, Cluster, running_cluster
from chat_testing.marks import requires_redis
from chat_testing.redis_servers import start_redis
from chat_testing.servers import start_server
from chat_testing.waits import wait_until
from tests.server.wsclients import (
    Member,
    assert_one_order_under_concurrent_senders,
    join,
    raw_handshake,
)

pytestmark = requires_redis

_rooms = itertools.count()


def fresh_room(prefix: str = "cl") -> str:
    return f"{prefix}-{next(_rooms)}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster(3, rate_limit=0) as c:
        yield c


async def join_spread(cluster: Cluster, room: str, count: int) -> list[Member]:
    """Join ``count`` members one by one, node 0, 1, 2, 0, ...; each has read the joins of
    those after it."""
    members: list[Member] = []
    for i in range(count):
        member = await join(cluster.url(i % len(cluster.nodes), room))
        for earlier in members:
            assert await earlier.recv() == format_join(member.name)
        members.append(member)
    return members


async def close_all(members: list[Member]) -> None:
    await asyncio.gather(*(m.close() for m in members))


async def test_500_names_over_three_processes_are_unique(cluster: Cluster) -> None:
    room = fresh_room("names")
    members: list[Member] = []
    for batch in range(10):
        members += await asyncio.gather(
            *(join(cluster.url((batch + i) % 3, room), max_queue=None) for i in range(50))
        )
    names = [m.name for m in members]
    assert len(set(names)) == 500
    assert all(is_valid_name(n) for n in names)
    for node in cluster.nodes:
        assert sorted(node.get_json(f"/rooms/{room}")["members"]) == sorted(names)
    await close_all(members)


async def test_one_order_per_room_for_members_on_every_process(cluster: Cluster) -> None:
    members = await join_spread(cluster, fresh_room(), 6)
    await assert_one_order_under_concurrent_senders(members, per_sender=40)
    await close_all(members)


async def test_a_late_joiner_on_another_process_starts_with_its_join_and_misses_nothing(
    cluster: Cluster,
) -> None:
    room = fresh_room("late")
    alice = await join(cluster.url(0, room))
    count = 300
    sent = asyncio.Event()
    joined = asyncio.Event()

    async def flood() -> None:
        # At least `count` messages, and on until both late joiners are in: "done" comes after
        # their joins however long those take (a flood written at once could be over first).
        i = 0
        while i < count or not joined.is_set():
            await alice.ws.send(f"m{i}")
            i += 1
            if i == 30:
                sent.set()
            await asyncio.sleep(0)  # the joins go on meanwhile
        await alice.ws.send("done")

    flooding = asyncio.create_task(flood())
    await sent.wait()
    # Mid-flood, the first members of the room on nodes 1 and 2 (each subscribes now).
    bob = await join(cluster.url(1, room))
    carol = await join(cluster.url(2, room))
    joined.set()
    await flooding

    async def until_done(member: Member) -> list[str]:
        return await member.recv_until(lambda f: f == f"{alice.name} :: done", timeout=15)

    alice_saw, bob_saw, carol_saw = await asyncio.gather(
        until_done(alice), until_done(bob), until_done(carol)
    )
    assert alice_saw.count(format_join(bob.name)) == 1
    assert alice_saw.count(format_join(carol.name)) == 1
    # Each late joiner's view is exactly alice's view after its own join notice (which
    # join() read as the member's first frame).
    for member, seen in ((bob, bob_saw), (carol, carol_saw)):
        start = alice_saw.index(format_join(member.name))
        assert seen == alice_saw[start + 1 :], member.name
    await carol.close()
    for member in (alice, bob):
        assert await member.recv() == format_leave(carol.name)
    await close_all([alice, bob])


async def test_a_new_process_hears_what_is_said_right_after_its_first_join(
    cluster: Cluster,
) -> None:
    # subscribe() returns only once Redis confirmed it: the message that the other side
    # sends the moment it sees the join can never be missed.
    for attempt in range(15):
        room = fresh_room("live")
        alice = await join(cluster.url(attempt % 3, room))
        bob = await join(cluster.url((attempt + 1) % 3, room))
        assert await alice.recv() == format_join(bob.name)
        await alice.ws.send(f"hello {attempt}")
        assert await bob.recv() == f"{alice.name} :: hello {attempt}"
        await close_all([alice, bob])


async def test_leaving_and_entering_a_busy_room_again_is_never_taken_for_lost_events(
    cluster: Cluster,
) -> None:
    # Node 1 unsubscribes after its last member leaves and subscribes again for the next,
    # while node 0 floods the room: what was on its way from before is not a gap.
    room = fresh_room("again")
    alice = await join(cluster.url(0, room), max_queue=None)
    flooding = True

    async def flood() -> None:
        i = 0
        while flooding:
            await alice.ws.send(f"m{i}")
            i += 1
            await asyncio.sleep(0.002)

    async def drain() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in alice.ws:
                pass

    tasks = [asyncio.create_task(flood()), asyncio.create_task(drain())]
    try:
        for _ in range(15):
            bob = await join(cluster.url(1, room))
            seen = [await bob.recv() for _ in range(5)]
            messages = [int(f.rpartition(" :: m")[2]) for f in seen if " :: m" in f]
            assert messages == list(range(messages[0], messages[0] + len(messages)))
            await bob.close()
    finally:
        flooding = False
        await tasks[0]
        await alice.close()
        await tasks[1]
    assert "lost events" not in cluster.nodes[1].log()


async def test_http_endpoints_are_cluster_wide(cluster: Cluster) -> None:
    room_a, room_b = fresh_room("http-a"), fresh_room("http-b")
    a = await join_spread(cluster, room_a, 4)
    b = await join_spread(cluster, room_b, 2)
    for node in cluster.nodes:
        assert node.get_json(f"/rooms/{room_a}") == {"room": room_a, "members": [m.name for m in a]}
        counts = {r["room"]: r["members"] for r in node.get_json("/rooms")}
        assert counts[room_a] == 4 and counts[room_b] == 2

    healths = [node.get_json("/health") for node in cluster.nodes]
    assert len({h["node"]["id"] for h in healths}) == 3
    for h in healths:
        assert h["status"] == "ok" and h["broker"]["state"] == "available"
        assert h["broker"]["kind"] == "redis"
        assert h["cluster"]["nodes"] == 3
        assert h["cluster"]["connections"] >= 6 and h["cluster"]["rooms"] >= 2
    # Members were spread 0, 1, 2, 0 (room a) and 0, 1 (room b).
    for node, count in zip(cluster.nodes, (3, 2, 1), strict=True):
        wait_until(
            lambda n=node, k=count: n.get_json("/health")["node"]["connections"] == k,
            what=f"{count} connection(s) on node {node.port}",
        )
    await close_all(a + b)
    for node in cluster.nodes:
        wait_until(
            lambda n=node: room_a not in {r["room"] for r in n.get_json("/rooms")},
            what="the empty room to disappear everywhere",
        )


async def test_a_room_crosses_redis_once_per_process_that_has_members(cluster: Cluster) -> None:
    room = fresh_room("numsub")
    broker = cluster.broker
    assert broker is not None
    channel = broker.layout.room_channel(room)

    def subscribers() -> int:
        return broker.subscribers(channel)

    assert subscribers() == 0
    a1 = await join(cluster.url(0, room))
    assert subscribers() == 1
    a2 = await join(cluster.url(0, room))
    b1 = await join(cluster.url(1, room))
    assert subscribers() == 2
    for member in (a1, a2):
        await member.close()
    wait_until(lambda: subscribers() == 1, what="node 0 to unsubscribe after its last member")
    await b1.close()
    wait_until(lambda: subscribers() == 0, what="no subscriber left")


async def test_a_member_that_stops_reading_never_makes_redis_buffer_for_its_process() -> None:
    # Redis cuts a pub/sub client whose output buffer passes 512 KiB; 6 MB go to a room in
    # which a member on node 1 reads nothing. The node reads on regardless.
    limit = 512 * 1024
    with running_cluster(
        2, "--client-output-buffer-limit", f"pubsub {limit} {limit // 2} 5", rate_limit=0
    ) as c:
        alice = await join(c.url(0, "stall"))
        bob = await join(c.url(1, "stall"))
        assert await alice.recv() == format_join(bob.name)
        stalled = raw_handshake(c.nodes[1].port, "/chat/stall", rcvbuf=4096)
        stalled_name = parse_frame(await alice.recv()).name
        assert await bob.recv() == format_join(stalled_name)

        peaks: list[int] = []
        sampling = True

        assert c.broker is not None
        admins = c.broker.admins()

        def sample() -> None:
            while sampling:
                for client in (client for admin in admins for client in admin.client_list()):
                    if client.get("name", "").endswith(":pubsub"):
                        peaks.append(int(client["omem"]))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        messages, payload = 1500, "p" * 4000
        try:

            async def send_all() -> None:
                for i in range(messages):
                    await alice.ws.send(f"{i} {payload}")

            async def receive_all(member: Member) -> list[str]:
                left = format_leave(stalled_name)
                return [
                    f
                    for f in await member.recv_until(
                        lambda f: f == f"{alice.name} :: {messages - 1} {payload}", timeout=30
                    )
                    if f != left
                ]

            _, alice_got, bob_got = await asyncio.gather(
                send_all(), receive_all(alice), receive_all(bob)
            )
        finally:
            sampling = False
            sampler.join()
        expected = [f"{alice.name} :: {i} {payload}" for i in range(messages)]
        assert alice_got == expected and bob_got == expected
        assert "evicted room=stall name=" + stalled_name in c.nodes[1].log()
        assert "broker unavailable" not in c.nodes[1].log()
        assert peaks and max(peaks) < limit, max(peaks)
        stalled.close()
        await close_all([alice, bob])


async def test_a_killed_process_s_members_leave_once_and_its_names_come_free() -> None:
    with running_cluster(3, rate_limit=0) as c:
        room, other = fresh_room("kill"), fresh_room("kill-other")
        members = await join_spread(c, room, 6)  # two on each node
        victims = [m for i, m in enumerate(members) if i % 3 == 2]
        survivors = [m for i, m in enumerate(members) if i % 3 != 2]
        lone = await join(c.url(2, other))
        assert c.broker is not None
        redis, name_key = c.broker.client(), c.broker.layout.name
        assert all(redis.exists(name_key(m.name)) for m in [*victims, lone])

        killed_at = time.monotonic()
        c.nodes[2].stop(signal.SIGKILL)
        expected = {format_leave(m.name) for m in victims}

        async def leaves_seen(member: Member) -> list[str]:
            seen: list[str] = []
            while set(seen) != expected:
                frame = await member.recv(timeout=FAST_NODE_TTL * 3)
                assert parse_frame(frame).kind is FrameKind.LEAVE, frame
                seen.append(frame)
            return seen

        seen = await asyncio.gather(*(leaves_seen(m) for m in survivors))
        elapsed = time.monotonic() - killed_at
        # Each leave once, within the node ttl plus a reaper round (plus slack under load).
        assert all(sorted(s) == sorted(expected) for s in seen)
        assert elapsed < FAST_NODE_TTL * (1 + 1 / 3) + 3, elapsed
        print(f"SIGKILL: leaves announced after {elapsed:.2f} s (node ttl {FAST_NODE_TTL} s)")
        for survivor in survivors:
            with pytest.raises(TimeoutError):
                await survivor.recv(timeout=0.5)  # and no second announcement

        for node in c.nodes[:2]:
            assert node.get_json(f"/rooms/{room}")["members"] == [m.name for m in survivors]
            assert other not in {r["room"] for r in node.get_json("/rooms")}
            assert node.get_json("/health")["cluster"]["nodes"] == 2
        wait_until(
            lambda: not any(redis.exists(name_key(m.name)) for m in [*victims, lone]),
            what="the dead node's names to be freed",
        )
        await close_all(survivors)


def test_default_timings_announce_a_dead_process_within_30_seconds() -> None:
    # Heartbeat ttl, then at most one reaper round (a third of it) on a surviving node; the
    # tests above measure the same mechanism with shorter settings.
    d = Settings()
    assert d.node_ttl * (1 + 1 / 3) + d.broker_timeout < 30


def test_a_password_in_the_url_is_used_and_never_shown() -> None:
    redis = start_redis("--requirepass", "s3cret-pw")
    try:
        port = redis.port
        good = start_server(broker_url=f"redis://:s3cret-pw@127.0.0.1:{port}/0", env=FAST)
        bad = start_server(broker_url=f"redis://:wrong-pw@127.0.0.1:{port}/0", env=FAST, wait=False)
        try:
            health = good.get_json("/health")
            assert health["broker"]["url"] == f"redis://:***@127.0.0.1:{port}/0"
            assert "s3cret-pw" not in good.log()

            def refused() -> str:
                try:
                    bad.get_json("/health")
                except urllib.error.HTTPError as exc:
                    return str(json.load(exc)["reason"])
                except OSError:
                    pass
                return ""

            wait_until(
                lambda: "cannot reach redis" in refused(),
                what="the wrong password to be reported (after 'connecting')",
            )
            assert "wrong-pw" not in refused()
            assert "wrong-pw" not in bad.log()
        finally:
            good.stop()
            bad.stop()
    finally:
        redis.stop()
