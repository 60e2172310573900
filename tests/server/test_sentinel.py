"""``redis+sentinel://``: two chat-servers on a master, a replica and three sentinels, all real
processes. The master is killed; the sentinels promote the replica, and both chat-servers
follow it by themselves. See docs/scaling.md, "Redis Sentinel".

What must hold: the chat is back on both servers within the documented time; a client that
comes back either recovers exactly or is told that the room's numbering started over (a new
epoch); nothing its sender saw acknowledged is silently gone.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from chat_protocol.close import CloseCode
from chat_server.backends.base import BrokerUnavailable, public_reason
from chat_server.backends.redis.backend import masked
from chat_server.backends.urls import SentinelUrl, is_shared, parse_sentinel_url
from chat_testing.clusters import FAST
from chat_testing.marks import requires_redis
from chat_testing.redis_servers import (
    RedisSentinel,
    RedisServer,
    start_redis,
    start_replica,
    start_sentinels,
)
from chat_testing.servers import RunningServer, start_server, wait_ready
from chat_testing.waits import eventually, wait_until
from tests.server.test_redis_faults import health
from tests.server.wsclients import (
    join_v2,
    nothing_lost_silently,
    one_chat,
    read_until_closed,
    recovered_or_told,
    resume_query,
)

SERVICE = "chat"
PASSWORD = "s3cret-sentinel-pw"
DOWN_AFTER = 1.0  # sentinel down-after-milliseconds, in s
# The chat is back on every node within this of the master's death (docs/scaling.md): the
# sentinels take DOWN_AFTER to agree it is down, about a second more to elect a leader and
# promote the replica; each node asks them again every 0.2 s. Plus what a loaded 2-core
# machine may add.
BACK_WITHIN = DOWN_AFTER + 4.0
SLACK = 2.0


@dataclass
class SentinelChat:
    master: RedisServer
    replica: RedisServer
    sentinels: list[RedisSentinel]
    nodes: list[RunningServer]
    url: str

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        for server in [*self.sentinels, self.replica, self.master]:
            server.stop()


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[SentinelChat]:
    master = start_redis(password=PASSWORD)
    servers: list[RedisServer] = [master]
    try:
        replica = start_replica(master)
        servers.append(replica)
        sentinels = start_sentinels(master, service=SERVICE, directory=tmp_path)
        servers += sentinels
        hosts = ",".join(s.url for s in sentinels)
        url = f"redis+sentinel://:{PASSWORD}@{hosts}/{SERVICE}/0"
        nodes = [start_server(broker_url=url, env=FAST, wait=False, rate_limit=0) for _ in range(2)]
        chat = SentinelChat(master, replica, sentinels, nodes, url)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    try:
        for node in nodes:
            wait_ready(node)
        yield chat
    finally:
        chat.stop()


@requires_redis
async def test_a_failover_is_followed_by_every_node_and_loses_nothing_silently(
    chat: SentinelChat,
) -> None:
    room = "sentinel"
    node0, node1 = chat.nodes
    status, body = health(node0)
    assert status == 200 and body["broker"]["kind"] == "redis", body
    # Where the broker is, as /health says it: the password masked.
    assert body["broker"]["url"].startswith("redis+sentinel://:***@"), body["broker"]
    assert PASSWORD not in json.dumps(body)

    # The two chat-servers are one chat.
    a = await join_v2(node0.chat_url(room))
    b = await join_v2(node1.chat_url(room))
    await a.recv_until(lambda f: f["type"] == "join" and f["name"] == b.name)
    await one_chat(a, b, "before")
    await one_chat(b, a, "before, back")
    epoch = str(a.welcome["epoch"])

    # A burst in flight when the master dies: whatever was acknowledged must not vanish.
    sent = 30
    for i in range(sent):
        await a.send(f"burst {i}", nonce=f"burst-{i}")
    frames = await a.recv_until(lambda f: f["type"] == "ack" and f["nonce"] == "burst-4")
    chat.master.stop(signal.SIGKILL)
    killed = time.monotonic()
    # What the replica had when its master died: read at once, while it is surely still a
    # replica (the sentinels wait down-after-milliseconds before they even vote) and nothing
    # can change it (its master is gone; once it is promoted, the new epoch's first event
    # would clear the room).
    replica = chat.replica.client()
    assert replica.info("replication")["role"] == "slave"
    history = replica.xrange(f"chat:room:{room}:history")
    replicated = {int(entry_id.decode().partition("-")[0]) for entry_id, _ in history}

    # nonce -> offset, in the old epoch
    acks: dict[str, int] = {f["nonce"]: f["offset"] for f in frames if f["type"] == "ack"}
    seen = max(int(f["offset"]) for f in frames if "offset" in f)  # the newest a has seen
    close, seen = await read_until_closed(a, seen, acks, 5 + SLACK)
    code, reason = close.code, close.reason
    # The master's connection drops at once: the outage policy (docs/scaling.md, "When Redis
    # fails") closes everyone with 1013 rather than let them talk into the void.
    assert code == CloseCode.TRY_AGAIN_LATER and "broker unavailable" in reason, (code, reason)
    assert PASSWORD not in reason and "127.0.0.1" not in reason, reason
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(5 + SLACK):
            while True:
                await b.recv(5 + SLACK)
    burst_acked = {n: o for n, o in acks.items() if n.startswith("burst-")}
    assert "burst-4" in burst_acked

    # Every node follows the new master by itself.
    wait_until(
        lambda: all(s.master_port_now() == chat.replica.port for s in chat.sentinels),
        timeout=BACK_WITHIN + SLACK,
        interval=0.05,
        what="the sentinels to promote the replica",
    )
    promoted = time.monotonic() - killed
    for node in chat.nodes:
        wait_until(
            lambda n=node: health(n)[0] == 200,
            timeout=BACK_WITHIN + SLACK,
            interval=0.05,
            what=f"node {node.port} back",
        )
    back = time.monotonic() - killed
    print(f"failover: promoted after {promoted:.2f} s, chat back on both nodes after {back:.2f} s")
    assert back < BACK_WITHIN + SLACK, back
    # Each node is a new incarnation there; the old ones (replicated) are reaped.
    wait_until(lambda: health(node1)[1]["cluster"]["nodes"] == 2, timeout=5, what="reaped")
    assert chat.replica.client().info("replication")["role"] == "master"

    # The client comes back: exact recovery, or told that the room started over.
    a2 = await join_v2(node0.chat_url(room), resume_query(a, since=seen, history=50))
    assert a2.name == a.name
    kept = await recovered_or_told(a2, seen, epoch)
    # Nothing acknowledged is silently lost: on the promoted replica, or a new epoch.
    nothing_lost_silently(burst_acked, replicated, kept)

    # And the two chat-servers are one chat again, on the new master.
    b2 = await join_v2(node1.chat_url(room), resume_query(b))
    await a2.recv_until(lambda f: f["type"] == "join" and f["name"] == b2.name)
    await one_chat(a2, b2, "after")
    await one_chat(b2, a2, "after, back")
    await eventually(lambda: len(chat.replica.clients("chat:")) >= 6, what="every link")
    for member in (a2, b2):
        await member.close()
    for node in chat.nodes:
        assert PASSWORD not in node.log(), "the broker's password in a log"


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("redis+sentinel://h1:1,h2:2/chat", SentinelUrl((("h1", 1), ("h2", 2)), "chat")),
        (
            "redis+sentinel://ann:p%40ss@h1,[::1]:26380/svc/3",
            SentinelUrl((("h1", 26379), ("::1", 26380)), "svc", 3, "ann", "p@ss"),
        ),
        ("redis+sentinel://:pw@h1:1/chat/0", SentinelUrl((("h1", 1),), "chat", 0, None, "pw")),
    ],
)
def test_a_sentinel_url_names_sentinels_service_db_and_the_masters_credentials(
    url: str, parsed: SentinelUrl
) -> None:
    assert parse_sentinel_url(url) == parsed
    assert is_shared(url)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h1:1",  # no service
        "redis+sentinel://h1:1/",
        "redis+sentinel://h1:1/chat/zero",
        "redis+sentinel://h1:1/chat/0/more",
        "redis+sentinel://h1:99999/chat",
        "redis+sentinel://h1:1,/chat",
        "redis+sentinel://h1:1/chat?db=1",
    ],
)
def test_a_malformed_sentinel_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_sentinel_url(url)


def test_a_sentinel_urls_password_is_masked_and_its_addresses_kept_from_clients() -> None:
    url = "redis+sentinel://:hunter2@10.0.0.5:26379,10.0.0.6:26379/chat/0"
    assert masked(url) == "redis+sentinel://:***@10.0.0.5:26379,10.0.0.6:26379/chat/0"
    reason = public_reason(BrokerUnavailable(f"cannot reach redis at {masked(url)}: refused"))
    assert reason == "cannot reach redis: refused"
