"""Several real ``chat-server`` processes sharing one real ``redis-server`` (or, with
``CHAT_TEST_SHARED_BROKER=sentinel``, one Sentinel service: ``chat_testing/brokers.py``): one
chat."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chat_testing.brokers import SharedBroker, SingleRedis, start_shared_broker
from chat_testing.redis_servers import RedisServer
from chat_testing.servers import RunningServer, start_server, wait_ready

# Short failure timings so that the tests of them take seconds, not the defaults' tens of
# seconds; the defaults themselves are covered by test_cluster's bound check.
FAST = {
    "CHAT_SERVER_BROKER_TIMEOUT": "1.5",
    "CHAT_SERVER_NODE_TTL": "4.5",
    "CHAT_SERVER_PROBE_INTERVAL": "0.5",
}
FAST_NODE_TTL = 4.5
FAST_BROKER_TIMEOUT = 1.5
FAST_PROBE_INTERVAL = 0.5


@dataclass
class Cluster:
    redis: RedisServer  # the master the nodes started on
    nodes: list[RunningServer]
    broker: SharedBroker | None = None  # what the nodes share, if more than ``redis``

    def url(self, node: int, room: str) -> str:
        return self.nodes[node].chat_url(room)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        (self.broker or SingleRedis(self.redis)).stop()


def start_nodes(
    redis: RedisServer | SharedBroker,
    count: int,
    env: dict[str, str] | None = None,
    **options: Any,
) -> list[RunningServer]:
    """``count`` chat-servers on ``redis``, started side by side; returns once all answer."""
    env = {**FAST, **(env or {})}
    url = redis.url if isinstance(redis, RedisServer) else redis.broker_url()
    nodes = [start_server(broker_url=url, env=env, wait=False, **options) for _ in range(count)]
    for node in nodes:
        wait_ready(node)
    return nodes


@contextlib.contextmanager
def running_cluster(
    count: int = 3,
    *redis_args: str,
    env: dict[str, str] | None = None,
    shared_kind: str | None = None,
    **options: Any,
) -> Iterator[Cluster]:
    """``count`` chat-servers on a shared broker of ``shared_kind`` (by default
    ``CHAT_TEST_SHARED_BROKER``'s, ``redis`` unless it says)."""
    shared = start_shared_broker(shared_kind, *redis_args)
    master = shared.server if isinstance(shared, SingleRedis) else shared.master
    try:
        cluster = Cluster(master, start_nodes(shared, count, env, **options), shared)
    except BaseException:
        shared.stop()
        raise
    try:
        yield cluster
    finally:
        cluster.stop()
