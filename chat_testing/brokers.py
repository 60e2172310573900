"""The broker a test's servers use, chosen by name, so that the same suites run on each.

* ``memory``: ``memory://``, each server its own (the default of every test server);
* ``sqlite``: ``sqlite://``, each server its own file (the embedded default of ``chat-server``);
* ``redis``: one real ``redis-server``;
* ``sentinel``: ``redis+sentinel://`` on a master, a replica and three sentinels;
* ``cluster``: ``redis+cluster://`` on a Redis Cluster of three masters, a replica each.

``CHAT_TEST_BROKERS`` (comma-separated, default ``memory,redis``) picks the brokers the server
suite is parametrized over; ``CHAT_TEST_SHARED_BROKER`` (``redis``, ``sentinel`` or
``cluster``, default ``redis``) the one that several processes share in ``running_cluster``.
CI runs the defaults within its time, and the conformance, history and names suites once
more on ``cluster`` (.ci/run); the others are run on demand, e.g.::

    CHAT_TEST_BROKERS=sqlite,sentinel CHAT_TEST_SHARED_BROKER=sentinel \
        python -m pytest tests/server/test_conformance.py tests/server/test_history.py \
        tests/server/test_cluster.py tests/server/test_history_cluster.py
"""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import redis

from chat_server.backends.base import Backend
from chat_server.backends.redis.keys import CLUSTER, SINGLE, Layout
from chat_testing.redis_clusters import RedisCluster, start_cluster
from chat_testing.redis_servers import (
    RedisSentinel,
    RedisServer,
    start_redis,
    start_replica,
    start_sentinels,
)

BROKERS_ENV = "CHAT_TEST_BROKERS"
SHARED_BROKER_ENV = "CHAT_TEST_SHARED_BROKER"
DEFAULT_BROKERS = ("memory", "redis")
KINDS = frozenset({"memory", "sqlite", "redis", "sentinel", "cluster"})
# Brokers several processes can share.
SHARED_KINDS = frozenset({"redis", "sentinel", "cluster"})
SENTINEL_SERVICE = "chat"


def chosen_brokers() -> list[str]:
    """The brokers of ``CHAT_TEST_BROKERS``, in its order (a name not known is an error: a typo
    must not quietly test less)."""
    raw = os.environ.get(BROKERS_ENV, "")
    kinds = [k.strip() for k in raw.split(",") if k.strip()] or list(DEFAULT_BROKERS)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"{BROKERS_ENV}: unknown broker(s) {unknown} (known: {sorted(KINDS)})")
    return kinds


def shared_broker() -> str:
    kind = os.environ.get(SHARED_BROKER_ENV, "").strip() or "redis"
    if kind not in SHARED_KINDS:
        raise ValueError(f"{SHARED_BROKER_ENV}: {kind!r} is not one of {sorted(SHARED_KINDS)}")
    return kind


class SharedBroker(Protocol):
    """What the tests need of a broker that several chat-servers share."""

    def broker_url(self, db: int = 0) -> str: ...

    layout: Layout  # the chat's key names on it

    def client(self) -> redis.Redis: ...

    def admins(self) -> list[redis.Redis]:
        """A plain client of each master (``CLIENT LIST``, ``INFO``: per server)."""
        ...

    def subscribers(self, channel: str) -> int:
        """How many connections subscribe ``channel`` (sharded in a cluster)."""
        ...

    def stop(self) -> None: ...


@dataclass
class SingleRedis:
    server: RedisServer

    def broker_url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.server.port}/{db}"

    layout: Layout = SINGLE

    def client(self) -> redis.Redis:
        return self.server.client()

    def admins(self) -> list[redis.Redis]:
        return [self.server.client()]

    def subscribers(self, channel: str) -> int:
        return _numsub(self.client(), channel)

    def stop(self) -> None:
        self.server.stop()


@dataclass
class SentinelRedis:
    """A master, its replica and three sentinels: servers find the master through them."""

    master: RedisServer
    replica: RedisServer
    sentinels: list[RedisSentinel] = field(default_factory=list)
    layout: Layout = SINGLE

    def broker_url(self, db: int = 0) -> str:
        hosts = ",".join(s.url for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}/{db}"

    def client(self) -> redis.Redis:
        """The master of the moment, as the first sentinel names it."""
        port = self.sentinels[0].master_port_now()
        server = self.master if port == self.master.port else self.replica
        return server.client()

    def admins(self) -> list[redis.Redis]:
        return [self.client()]

    def subscribers(self, channel: str) -> int:
        return _numsub(self.client(), channel)

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.master]:
            server.stop()


@dataclass
class ClusterRedis:
    """A Redis Cluster: servers find its masters from any node."""

    cluster: RedisCluster
    layout: Layout = CLUSTER

    @property
    def master(self) -> RedisServer:
        """The master of the first slots (the chat's directory is elsewhere: see keys.py)."""
        return self.cluster.masters()[0]

    def broker_url(self, db: int = 0) -> str:
        assert db == 0, "a Redis Cluster has database 0 only"
        return self.cluster.url

    def client(self) -> redis.RedisCluster:
        node = self.cluster.live()[0]
        return redis.RedisCluster(host="127.0.0.1", port=node.port, protocol=2)

    def admins(self) -> list[redis.Redis]:
        return [node.admin() for node in self.cluster.masters()]

    def subscribers(self, channel: str) -> int:
        owner = self.cluster.master_of(channel).admin()
        reply = owner.execute_command("PUBSUB", "SHARDNUMSUB", channel)
        return int(dict(zip(reply[::2], reply[1::2], strict=True))[channel.encode()])

    def flush(self) -> None:
        """Every master emptied (a test's servers start on an empty cluster)."""
        for node in self.cluster.masters():
            node.admin().flushall()

    def stop(self) -> None:
        self.cluster.stop()


def start_shared_broker(
    kind: str | None = None, *redis_args: str
) -> SingleRedis | SentinelRedis | ClusterRedis:
    kind = kind or shared_broker()
    if kind == "cluster":
        return ClusterRedis(start_cluster(3, 1, *redis_args))
    master = start_redis(*redis_args)
    if kind == "redis":
        return SingleRedis(master)
    started: list[RedisServer] = [master]
    try:
        replica = start_replica(master, *redis_args)
        started.append(replica)
        return SentinelRedis(master, replica, start_sentinels(master, service=SENTINEL_SERVICE))
    except BaseException:
        for server in started:
            server.stop()
        raise


def _numsub(client: redis.Redis, channel: str) -> int:
    return int(dict(client.pubsub_numsub(channel))[channel.encode()])


_files = itertools.count()


def sqlite_url(directory: Path) -> str:
    """A fresh database file in ``directory``, for one server."""
    return f"sqlite://{directory / f'chat-{os.getpid()}-{next(_files)}.db'}"


async def started(backend: Backend, timeout: float = 10.0) -> None:
    """Start a backend in this process; return once its broker is available (at once for the
    one-process brokers, once connected for Redis)."""
    available = asyncio.Event()
    backend.on_status(lambda status: available.set() if status.available else None)
    await backend.start()
    if not backend.status.available:
        await asyncio.wait_for(available.wait(), timeout)
