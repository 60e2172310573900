"""The Redis path of a publish alone: what one message costs Redis, and this process.

One chat node (``RedisBackend``, in this process) on a fresh ``redis-server`` publishes
``--messages`` chat messages to ``--rooms`` rooms it is subscribed to, in passes of
``--batch`` per room (one script call per room and pass: what a busy room's senders get
through while Redis answers the last call), each pass once the last has landed, and waits
for every one to come back on its subscription. Reported per message:
redis-server's CPU (user + system, from /proc), the event script's time in Redis (INFO
commandstats' usec for EVALSHA) and its calls, and this process's CPU (building the calls,
reading the replies, decoding the pub/sub messages: the server's share of the Redis path).

    python bench/redis_path_bench.py --batch 1,4,16 --repeats 3

Pin it for steadier numbers (``taskset -c 0``); redis-server is pinned to the other core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chat_server.backends.redis.backend import RedisBackend
from chat_server.events import EventKind, RoomEvent
from chat_server.ops.settings import Settings
from chat_testing.redis_servers import start_redis


async def run(
    url: str, redis_pid: int, rooms: int, batch: int, messages: int, history: int
) -> dict[str, float]:
    settings = Settings(broker_url=url, history_size=history)
    backend = RedisBackend(settings, f"bench-{os.getpid()}")
    available = asyncio.Event()
    backend.on_status(lambda status: available.set() if status.available else None)
    await backend.start()
    await asyncio.wait_for(available.wait(), 10)
    channels = backend.channels
    heard = 0
    everything = asyncio.Event()
    total = messages - messages % (rooms * batch)

    def deliver(room: str, event: RoomEvent) -> None:
        nonlocal heard
        if event.kind is EventKind.MESSAGE:
            heard += 1
            if heard == total:
                everything.set()

    channels.bind(deliver)
    names = [f"bench{r}" for r in range(rooms)]
    refs = {}
    for room in names:
        await channels.subscribe(room)
        joined = await channels.publish(room, EventKind.JOIN, "user_bench0001")
        assert joined is not None
        refs[room] = joined.serial
    routes = backend.redis.routes  # one Redis: the key only chooses a cluster's master
    await routes.call("", "CONFIG", "RESETSTAT")
    redis = psutil.Process(redis_pid)
    cpu0, own0, t0 = sum(redis.cpu_times()[:2]), time.process_time(), time.monotonic()
    text = "m 123456 1234567890123456789 " + "x" * 20  # the rooms benchmark's messages
    sent = 0
    while sent < total:
        # One pass: ``batch`` events per room, each room's in one call; the next pass once
        # they have all landed (counted by callback: gather would wrap each in a task).
        passed = asyncio.Event()
        left = rooms * batch

        def landed(_: object, passed: asyncio.Event = passed) -> None:
            nonlocal left
            left -= 1
            if not left:
                passed.set()

        for room in names:
            for _ in range(batch):
                landing = channels.publish(
                    room, EventKind.MESSAGE, "user_bench0001", text, None, refs[room]
                )
                landing.add_done_callback(landed)
        await passed.wait()
        sent += rooms * batch
    await asyncio.wait_for(everything.wait(), 30)
    elapsed = time.monotonic() - t0
    cpu = sum(redis.cpu_times()[:2]) - cpu0
    own = time.process_time() - own0
    info = await routes.call("", "INFO", "commandstats")
    await backend.close()
    stats: dict[str, str] = {}
    for line in info.decode().splitlines():
        if line.startswith("cmdstat_evalsha:"):
            stats = dict(part.split("=") for part in line.partition(":")[2].split(","))
    return {
        "msgs_per_s": total / elapsed,
        "redis_cpu_us_per_msg": 1e6 * cpu / total,
        "evalsha_us_per_call": float(stats.get("usec_per_call", 0)),
        "evalsha_calls_per_msg": int(stats.get("calls", 0)) / total,
        "evalsha_us_per_msg": int(stats.get("usec", 0)) / total,
        "node_cpu_us_per_msg": 1e6 * own / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--batch", default="1,4,16", help="messages per room per iteration")
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--history-size", type=int, default=Settings().history_size)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    extra = ("--save", "", "--appendonly", "no")
    rows = []
    for batch in [int(b) for b in args.batch.split(",")]:
        runs = []
        for _ in range(args.repeats):
            server = start_redis(*extra)
            assert server.process is not None
            if len(cpus) > 1:
                os.sched_setaffinity(server.process.pid, {cpus[-1]})
            try:
                runs.append(
                    asyncio.run(
                        run(
                            server.url,
                            server.process.pid,
                            args.rooms,
                            batch,
                            args.messages,
                            args.history_size,
                        )
                    )
                )
            finally:
                server.stop()
        medians = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        rows.append((batch, medians))
        print(f"batch {batch}: {medians}", file=sys.stderr)
    keys = list(rows[0][1])
    print("| messages per room per iteration | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for batch, medians in rows:
        print(f"| {batch} | " + " | ".join(f"{medians[k]:,.2f}" for k in keys) + " |")
    print(f"\nMedians of {args.repeats} runs; {args.rooms} rooms; {args.messages:,} messages.")


if __name__ == "__main__":
    main()
