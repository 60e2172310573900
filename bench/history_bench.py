"""What history costs the server, side by side (issue 7).

    python bench/history_bench.py [--repeats 5] [--rooms 20]

For each broker (``memory://``, and ``redis://`` on a fresh ``redis-server`` when it is
installed):

* **recover 1,000**: a chat.v2 client that missed 1,000 messages reconnects with
  ``?since=...&epoch=...``; the time from its connect to the last recovered message, median
  of ``--repeats``, beside the time to a plain join with nothing to replay (the baseline: the
  handshake and the welcome), so that the difference is what the recovery itself costs.
* **memory per retained message**: ``--rooms`` rooms get 1,000 messages of 100 characters
  each on a server with history on and on one with it off (``--history-size 0``); the
  difference in the server's RSS (memory) or in Redis's ``used_memory`` (redis), divided by
  the messages retained.

Fan-out CPU per delivered frame with history on vs off is measured by
``bench/server_bench.py --servers ours,ours-nohist,ours-redis,ours-redis-nohist``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import time
from collections.abc import Iterator

import psutil
import redis
import websockets

from chat_protocol.limits import HISTORY_SIZE
from chat_protocol.v2 import SUBPROTOCOL as SUBPROTOCOL_V2
from chat_protocol.v2 import send as v2_send
from chat_testing.redis_servers import RedisServer, start_redis
from chat_testing.servers import RunningServer, start_server

MISSED = 1000
TEXT = "x" * 100


@contextlib.contextmanager
def chat_server(**options: object) -> Iterator[RunningServer]:
    server = start_server(rate_limit=0, log_level="warning", **options)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


async def fill(url: str, count: int) -> tuple[str, int]:
    """Send ``count`` messages into a room; (epoch, offset) of the room afterwards."""
    async with websockets.connect(url, subprotocols=[SUBPROTOCOL_V2]) as ws:
        welcome = json.loads(await ws.recv())
        window = 200
        acked = 0
        sent = 0
        offset = 0
        while acked < count:
            while sent < count and sent - acked < window:
                await ws.send(v2_send(TEXT, f"n{sent}"))
                sent += 1
            frame = json.loads(await ws.recv())
            if frame["type"] == "ack":
                acked += 1
                offset = frame["offset"]
        return welcome["epoch"], offset


async def timed_join(url: str) -> float:
    started = time.perf_counter()
    async with websockets.connect(url, subprotocols=[SUBPROTOCOL_V2]) as ws:
        welcome = json.loads(await ws.recv())
        for _ in range(welcome["history"]):
            await ws.recv()
        elapsed = time.perf_counter() - started
    return elapsed


async def recovery(port: int, repeats: int) -> dict[str, float]:
    joins, recoveries = [], []
    for i in range(repeats):
        room = f"recover-{i}"
        url = f"ws://127.0.0.1:{port}/chat/{room}"
        epoch, offset = await fill(url, MISSED)
        joins.append(await timed_join(url))
        since = offset - MISSED
        recoveries.append(await timed_join(f"{url}?since={since}&epoch={epoch}"))
    return {"join_ms": statistics.median(joins) * 1000,
            "recover_ms": statistics.median(recoveries) * 1000}  # fmt: skip


async def fill_rooms(port: int, rooms: int) -> None:
    for r in range(rooms):
        await fill(f"ws://127.0.0.1:{port}/chat/keep-{r}", MISSED)


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def measure_memory_broker(rooms: int, repeats: int) -> dict[str, float]:
    results: dict[str, float] = {}
    with chat_server() as server:
        results.update(asyncio.run(recovery(server.port, repeats)))
    grown = {}
    for label, size in (("on", HISTORY_SIZE), ("off", 0)):
        with chat_server(history_size=size) as server:
            asyncio.run(fill_rooms(server.port, 1))  # warm up the process's allocator
            before = rss(server.process.pid)
            asyncio.run(fill_rooms(server.port, rooms))
            grown[label] = rss(server.process.pid) - before
    results["bytes_per_message"] = (grown["on"] - grown["off"]) / (rooms * MISSED)
    return results


def measure_redis_broker(rooms: int, repeats: int) -> dict[str, float]:
    results: dict[str, float] = {}
    with redis_server() as store, chat_server(broker_url=store.url) as server:
        results.update(asyncio.run(recovery(server.port, repeats)))
    grown = {}
    for label, size in (("on", HISTORY_SIZE), ("off", 0)):
        with (
            redis_server() as store,
            chat_server(history_size=size, broker_url=store.url) as server,
        ):
            client = redis.Redis(port=store.port)
            before = int(client.info("memory")["used_memory"])
            asyncio.run(fill_rooms(server.port, rooms))
            grown[label] = int(client.info("memory")["used_memory"]) - before
    results["bytes_per_message"] = (grown["on"] - grown["off"]) / (rooms * MISSED)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rooms", type=int, default=20)
    args = parser.parse_args()
    rows = [("memory://", measure_memory_broker(args.rooms, args.repeats))]
    if shutil.which("redis-server"):
        rows.append(("redis://", measure_redis_broker(args.rooms, args.repeats)))
    print(f"python bench/history_bench.py --repeats {args.repeats} --rooms {args.rooms}\n")
    print("| broker | join, nothing to replay (median ms) | recover 1,000 missed (median ms) "
          "| memory per retained message (bytes) |")  # fmt: skip
    print("| --- | --- | --- | --- |")
    for broker, r in rows:
        print(f"| `{broker}` | {r['join_ms']:.1f} | {r['recover_ms']:.1f} "
              f"| {r['bytes_per_message']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
