"""What a memory:// server's history costs in memory: rooms filled with 1,000 messages of 4,096
characters each, everyone gone, the server's RSS growth with the history bounds effectively off
and with the defaults (``--history-bytes``, ``--history-total-bytes``).

    python bench/history_rss.py [ROOMS]      # default 20
"""

from __future__ import annotations

import argparse
import asyncio

import websockets

from chat_testing.servers import start_server

MESSAGES = 1000
TEXT = "z" * 4090


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def fill(url: str, rooms: int) -> None:
    for room in range(rooms):
        async with websockets.connect(f"{url}/chat/big{room}", max_queue=None) as ws:
            await ws.recv()  # our join notice
            for number in range(MESSAGES):
                await ws.send(f"{number:04d} {TEXT}")
            last = f"{MESSAGES - 1:04d} {TEXT}"
            while not str(await ws.recv()).endswith(last):
                pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rooms", type=int, nargs="?", default=20)
    args = parser.parse_args()
    for label, options in (
        ("bounds off", {"history_bytes": 10**10, "history_total_bytes": 10**12}),
        ("defaults", {}),
    ):
        server = start_server(rate_limit=0, **options)
        try:
            before = rss_mib(server.process.pid)
            asyncio.run(fill(server.ws_url, args.rooms))
            grew = rss_mib(server.process.pid) - before
        finally:
            server.stop()
        print(f"{label}: {args.rooms} room(s) x {MESSAGES} x 4,096 characters: +{grew:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
