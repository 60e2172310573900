"""Instructions per delivered frame, counted by callgrind: the noise-free figure of the server's
per-frame cost, for comparing two checkouts when the machine is too noisy for CPU time.

    python bench/instructions.py                              # this checkout, rooms shape
    python bench/instructions.py --compare /tmp/base          # and another checkout, side by side
    python bench/instructions.py --shape 1,50,200             # one room of 50 (fan-out)

Needs valgrind (``apt-get install valgrind``). Each server runs ``chat-server run --rate-limit 0``
under ``valgrind --tool=callgrind`` with this checkout's interpreter and packages; a checkout
given to ``--compare`` is put first on ``PYTHONPATH``, so its ``chat_server`` is the one run.
The shape is ROOMS,MEMBERS,MESSAGES: every room gets MEMBERS text-protocol members, and one
member of each sends MESSAGES messages, as fast as it can; every member reads all of them.
Counters are zeroed once everyone has joined and dumped once every member has read every
message, so the count is the steady path: read, check, publish, fan out, write (about 4
minutes for the default shape under valgrind's 50x slowdown).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import websockets

from chat_testing.ports import free_port
from chat_testing.waits import wait_until

ROOT = Path(__file__).resolve().parent.parent


async def drive(port: int, pid: int, rooms: int, members: int, messages: int) -> None:
    url = f"ws://127.0.0.1:{port}/chat"
    joined = []
    for room in range(rooms):
        sockets = [
            await websockets.connect(f"{url}/room{room}", max_size=None, open_timeout=120)
            for _ in range(members)
        ]
        joined.append(sockets)
    for sockets in joined:  # every join notice read: the room is quiet
        for index, ws in enumerate(sockets):
            for _ in range(members - index):
                await asyncio.wait_for(ws.recv(), 120)
    subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)

    async def read(ws: websockets.ClientConnection) -> None:
        for _ in range(messages):
            await asyncio.wait_for(ws.recv(), 300)

    async def send(ws: websockets.ClientConnection) -> None:
        for number in range(messages):
            await ws.send(f"message number {number} " + "x" * 40)

    await asyncio.gather(
        *(read(ws) for sockets in joined for ws in sockets),
        *(send(sockets[0]) for sockets in joined),
    )
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
    for sockets in joined:
        for ws in sockets:
            await ws.close()


def measure(checkout: Path | None, shape: tuple[int, int, int], out_dir: Path) -> float:
    """Instructions per delivered frame of ``checkout``'s server (None: this one)."""
    rooms, members, messages = shape
    port = free_port()
    out = out_dir / f"callgrind.{port}"
    env = dict(os.environ, PYTHONHASHSEED="0")
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
         "-m", "chat_server", "run", "--port", str(port), "--rate-limit", "0",
         "--log-level", "warning"],
        cwd=checkout or ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, timeout=180, interval=0.5, what="the server under valgrind")
        asyncio.run(drive(port, server.pid, rooms, members, messages))
    finally:
        server.terminate()
        server.wait(120)
    # The dump taken at --dump is the one numbered .1 (the rest is start-up and shutdown).
    for line in (out.parent / f"{out.name}.1").read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1]) / (rooms * members * messages)
    raise RuntimeError(f"no totals in {out}.1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="10,4,300", help="ROOMS,MEMBERS,MESSAGES")
    parser.add_argument("--compare", type=Path, metavar="CHECKOUT", help="another checkout")
    args = parser.parse_args()
    rooms, members, messages = (int(part) for part in args.shape.split(","))
    checkouts: list[Path | None] = [None]
    if args.compare:
        checkouts.append(args.compare.resolve())
    with tempfile.TemporaryDirectory(prefix="chat-callgrind-") as out_dir:
        counts = [measure(c, (rooms, members, messages), Path(out_dir)) for c in checkouts]
    print(f"shape: {rooms} room(s) x {members} members, {messages} messages per room")
    print(f"this checkout: {counts[0]:,.0f} instructions per delivered frame")
    if args.compare:
        print(f"{args.compare}: {counts[1]:,.0f} ({counts[0] / counts[1]:.3f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
