"""What a join and a leave cost Redis: one Redis against a Redis Cluster's masters.

One chat-server on each broker in turn; CYCLES join-and-leave cycles (a connection that
joins one of 50 rooms, reads its own join and closes; 32 at a time), then the same time idle.
Reported per cycle: the node's CPU and each redis-server's CPU less its own idle work over as
long (a cluster's nodes keep a cron and a bus busy). In a cluster, the directory's master
(names, nodes, counts, the room index: ``keys.CLUSTER``) is named.

    python bench/join_cost.py [CYCLES]
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterator

import psutil
import websockets

from chat_server.backends.redis.keys import CLUSTER
from chat_testing.redis_clusters import start_cluster
from chat_testing.redis_servers import start_redis
from chat_testing.servers import start_server

ROOMS = 50
AT_ONCE = 32


async def cycles(url_of: Callable[[int], str], count: int) -> None:
    limit = asyncio.Semaphore(AT_ONCE)

    async def one(i: int) -> None:
        async with limit:
            ws = await websockets.connect(url_of(i))
            await ws.recv()  # the own join: joined
            await ws.close()

    await asyncio.gather(*(one(i) for i in range(count)))


def cpu(processes: list[psutil.Process]) -> list[float]:
    return [sum(p.cpu_times()[:2]) for p in processes]


@contextlib.contextmanager
def broker(kind: str) -> Iterator[tuple[str, list[psutil.Process], list[str]]]:
    if kind == "redis":
        redis = start_redis()
        try:
            assert redis.process is not None
            yield redis.url, [psutil.Process(redis.process.pid)], ["redis"]
        finally:
            redis.stop()
        return
    cluster = start_cluster(3, 0)
    try:
        masters = cluster.masters()
        directory = cluster.master_of(CLUSTER.rooms)
        names = ["directory" if m is directory else f"master {m.port}" for m in masters]
        yield (
            cluster.url,
            [psutil.Process(m.process.pid) for m in masters if m.process is not None],
            names,
        )
    finally:
        cluster.stop()


def measure(kind: str, count: int) -> None:
    with broker(kind) as (url, redis, names):
        server = start_server(broker_url=url, rate_limit=0)
        try:
            node = psutil.Process(server.process.pid)

            def url_of(i: int) -> str:
                return server.chat_url(f"room{i % ROOMS}")

            asyncio.run(cycles(url_of, 300))  # warm-up
            start, node_start = time.monotonic(), sum(node.cpu_times()[:2])
            busy_start = cpu(redis)
            asyncio.run(cycles(url_of, count))
            wall = time.monotonic() - start
            busy = [b - a for a, b in zip(busy_start, cpu(redis), strict=True)]
            node_cpu = sum(node.cpu_times()[:2]) - node_start
            idle_start = cpu(redis)
            time.sleep(wall)
            idle = [b - a for a, b in zip(idle_start, cpu(redis), strict=True)]
        finally:
            server.stop()
    per = {n: round((b - i) / count * 1e6) for n, b, i in zip(names, busy, idle, strict=True)}
    print(
        f"{kind}: {count / wall:.0f} cycles/s; node {node_cpu / count * 1e6:.0f} us a cycle; "
        f"redis us a cycle: {per}"
    )


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    for kind in ("redis", "cluster"):
        measure(kind, count)


if __name__ == "__main__":
    main()
