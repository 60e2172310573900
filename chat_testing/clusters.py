"""Several real ``chat-server`` processes sharing one real ``redis-server``: one chat."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chat_testing.redis_servers import RedisServer, start_redis
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
    redis: RedisServer
    nodes: list[RunningServer]

    def url(self, node: int, room: str) -> str:
        return self.nodes[node].chat_url(room)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.redis.stop()


def start_nodes(
    redis: RedisServer, count: int, env: dict[str, str] | None = None, **options: Any
) -> list[RunningServer]:
    """``count`` chat-servers on ``redis``, started side by side; returns once all answer."""
    env = {**FAST, **(env or {})}
    nodes = [
        start_server(broker_url=redis.url, env=env, wait=False, **options) for _ in range(count)
    ]
    for node in nodes:
        wait_ready(node)
    return nodes


@contextlib.contextmanager
def running_cluster(
    count: int = 3, *redis_args: str, env: dict[str, str] | None = None, **options: Any
) -> Iterator[Cluster]:
    redis = start_redis(*redis_args)
    try:
        cluster = Cluster(redis, start_nodes(redis, count, env, **options))
    except BaseException:
        redis.stop()
        raise
    try:
        yield cluster
    finally:
        cluster.stop()
