"""What one client can make a Redis-backed server keep (issue 16, holes 2 and 3), read from
Redis itself: its keys and ``used_memory``, for this checkout and (``--compare``) another.

    python bench/bounds.py                      # this checkout
    python bench/bounds.py --compare /tmp/base  # and another, side by side

Two floods, each from one client address, each against a fresh redis-server:

* **rooms**: ROOMS rooms, each joined, given one message and left (the hole: every room's
  sequence, history and nonces kept for the history ttl);
* **names**: NAMES chat.v2 connections, each given a chosen name and closed (the hole: every
  name kept in reserve for its token).

The server runs with its defaults except for the bounds given (``--history-rooms``,
``--max-reservations``), and the per-address shares off (they would stop the flood first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat_testing.redis_servers import start_redis  # noqa: E402
from chat_testing.servers import SERVER_ROOT_ENV, start_server  # noqa: E402


async def flood_rooms(url: str, rooms: int) -> None:
    for n in range(rooms):
        async with websockets.connect(f"{url}/chat/flood-{n}") as ws:
            await ws.recv()  # our join notice
            await ws.send("one message")
            await ws.recv()


async def flood_names(url: str, names: int) -> None:
    for n in range(names):
        async with websockets.connect(
            f"{url}/chat/names?name=Flood{n}", subprotocols=["chat.v2"]
        ) as ws:
            await ws.recv()  # the welcome


def measure(checkout: Path | None, flood: str, count: int, bounds: dict[str, int]) -> dict:
    redis = start_redis("--save", "", "--appendonly", "no")
    env = {SERVER_ROOT_ENV: str(checkout)} if checkout is not None else {}
    previous = os.environ.get(SERVER_ROOT_ENV)
    os.environ.update(env)
    try:
        server = start_server(broker_url=redis.url, rate_limit=0, **bounds)
        client = redis.client()
        before = client.info("memory")["used_memory"]
        began = time.monotonic()
        run = flood_rooms if flood == "rooms" else flood_names
        asyncio.run(run(server.ws_url, count))
        seconds = time.monotonic() - began
        time.sleep(1.0)  # the last leaves and releases
        pattern = "chat:room:flood-*:seq" if flood == "rooms" else "chat:name:flood*"
        kept = sum(1 for _ in client.scan_iter(pattern, count=1000))
        grown = client.info("memory")["used_memory"] - before
        server.stop()
        return {"kept": kept, "keys": client.dbsize(), "grown_mib": grown / 2**20, "s": seconds}
    finally:
        redis.stop()
        if previous is None:
            os.environ.pop(SERVER_ROOT_ENV, None)
        else:
            os.environ[SERVER_ROOT_ENV] = previous


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", type=Path, metavar="CHECKOUT", help="another checkout")
    parser.add_argument("--rooms", type=int, default=3000)
    parser.add_argument("--names", type=int, default=3000)
    parser.add_argument("--history-rooms", type=int, default=1000)
    parser.add_argument("--max-reservations", type=int, default=1000)
    args = parser.parse_args()
    checkouts: list[Path | None] = [None]
    if args.compare:
        checkouts.append(args.compare.resolve())
    for flood, count, bounds in (
        ("rooms", args.rooms, {"history_rooms": args.history_rooms}),
        ("names", args.names, {"max_reservations": args.max_reservations}),
    ):
        for checkout in checkouts:
            result = measure(checkout, flood, count, bounds)
            where = "this checkout" if checkout is None else str(checkout)
            print(json.dumps({"flood": flood, "count": count, **bounds, "checkout": where,
                              **{k: round(v, 2) for k, v in result.items()}}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
