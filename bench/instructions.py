"""Instructions per delivered frame, counted by callgrind: the noise-free figure of the server's
per-frame cost, for comparing two checkouts when the machine is too noisy for CPU time.

    python bench/instructions.py                              # this checkout, rooms shape
    python bench/instructions.py --compare /tmp/base          # and another checkout, side by side
    python bench/instructions.py --shape 1,50,200             # one room of 50 (fan-out)
    python bench/instructions.py --kind typing --shape 50,4,1  # chat.v2 typing frames

``--kind`` is what is sent: ``message`` (text-protocol members, the default), ``v2-message``
(chat.v2 members), or one of chat.v2's frames other than a send:
``typing``, ``away``, ``nick``. For those every member sends MESSAGES of them (their own rules
space them: typing every 3 s, away every second, nick changes 3 per 30 s, so keep MESSAGES at
1) and the count is per frame delivered (typing reaches the others, away and nick everyone).

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
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import websockets

from chat_protocol import v2
from chat_testing.ports import free_port
from chat_testing.waits import wait_until

ROOT = Path(__file__).resolve().parent.parent


KINDS = ("message", "v2-message", "typing", "away", "nick")


def received_per_send(kind: str, members: int) -> int:
    """Frames each member reads for one send of each kind by every sender."""
    if kind in ("message", "v2-message"):
        return 1  # one sender per room
    return members - 1 if kind == "typing" else members


async def drive(port: int, pid: int, shape: tuple[int, int, int], kind: str) -> int:
    """Returns how many frames were delivered."""
    rooms, members, messages = shape
    url = f"ws://127.0.0.1:{port}/chat"
    numbered = kind != "message"
    options = {"subprotocols": [v2.SUBPROTOCOL]} if numbered else {}
    joined = []
    for room in range(rooms):
        sockets = [
            await websockets.connect(
                f"{url}/room{room}", max_size=None, open_timeout=120, **options
            )
            for _ in range(members)
        ]
        joined.append(sockets)
    for sockets in joined:  # every join notice (or welcome) read: the room is quiet
        for index, ws in enumerate(sockets):
            for _ in range(members - index):
                await asyncio.wait_for(ws.recv(), 120)
    subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)
    each = received_per_send(kind, members)

    async def read(ws: websockets.ClientConnection) -> None:
        for _ in range(messages * each):
            frame = await asyncio.wait_for(ws.recv(), 300)
            if numbered and json.loads(frame)["type"] == "error":
                raise RuntimeError(f"refused: {frame}")

    def frame(number: int, sender: int) -> str:
        if kind == "message":
            return f"message number {number} " + "x" * 40
        if kind == "v2-message":
            return v2.send(f"message number {number} " + "x" * 40)  # no nonce: no ack
        if kind == "typing":
            return v2.TYPING_FRAME
        if kind == "away":
            return v2.away(f"away number {number}")
        return v2.change_nick(f"Bench{sender}x{number}x{port}")

    async def send(ws: websockets.ClientConnection, sender: int) -> None:
        for number in range(messages):
            await ws.send(frame(number, sender))

    senders: list[tuple[websockets.ClientConnection, int]] = []
    for room, sockets in enumerate(joined):
        chosen = sockets[:1] if kind in ("message", "v2-message") else sockets
        senders += [(ws, room * members + index) for index, ws in enumerate(chosen)]
    await asyncio.gather(
        *(read(ws) for sockets in joined for ws in sockets),
        *(send(ws, index) for ws, index in senders),
    )
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
    for sockets in joined:
        for ws in sockets:
            await ws.close()
    return rooms * members * messages * each


# --limits: every input limit on, as by default, but too high to refuse anything (variables, so
# that a checkout that lacks one of them still starts): what judging the input costs.
LIMITS_ARGS = ["--rate-limit", "1000000", "--rate-burst", "1000000",
               "--max-frame-rate", "1000000000", "--max-byte-rate", "1000000000000"]  # fmt: skip
LIMITS_ENV = {
    "CHAT_SERVER_MAX_CONNECTIONS_PER_ADDRESS": "100000",
    "CHAT_SERVER_MAX_HANDSHAKES_PER_ADDRESS": "100000",
    "CHAT_SERVER_MAX_MESSAGES_PER_ADDRESS": "1000000000",
}


def measure(
    checkout: Path | None,
    shape: tuple[int, int, int],
    out_dir: Path,
    kind: str = "message",
    limits: bool = False,
) -> float:
    """Instructions per delivered frame of ``checkout``'s server (None: this one)."""
    port = free_port()
    out = out_dir / f"callgrind.{port}"
    env = dict(os.environ, PYTHONHASHSEED="0", **(LIMITS_ENV if limits else {}))
    limit_args = LIMITS_ARGS if limits else ["--rate-limit", "0"]
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
         "-m", "chat_server", "run", "--port", str(port), *limit_args,
         "--log-level", "warning"],
        cwd=checkout or ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, timeout=180, interval=0.5, what="the server under valgrind")
        delivered = asyncio.run(drive(port, server.pid, shape, kind))
    finally:
        server.terminate()
        server.wait(120)
    # The dump taken at --dump is the one numbered .1 (the rest is start-up and shutdown).
    for line in (out.parent / f"{out.name}.1").read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1]) / delivered
    raise RuntimeError(f"no totals in {out}.1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="10,4,300", help="ROOMS,MEMBERS,MESSAGES")
    parser.add_argument("--compare", type=Path, metavar="CHECKOUT", help="another checkout")
    parser.add_argument("--kind", choices=KINDS, default="message", help="what is sent")
    parser.add_argument(
        "--limits",
        action="store_true",
        help="every input limit on (too high to refuse anything), not --rate-limit 0",
    )
    args = parser.parse_args()
    rooms, members, messages = (int(part) for part in args.shape.split(","))
    checkouts: list[Path | None] = [None]
    if args.compare:
        checkouts.append(args.compare.resolve())
    with tempfile.TemporaryDirectory(prefix="chat-callgrind-") as out_dir:
        counts = [
            measure(c, (rooms, members, messages), Path(out_dir), args.kind, args.limits)
            for c in checkouts
        ]
    print(f"shape: {rooms} room(s) x {members} members, {messages} {args.kind} frames per sender")
    print(f"this checkout: {counts[0]:,.0f} instructions per delivered frame")
    if args.compare:
        print(f"{args.compare}: {counts[1]:,.0f} ({counts[0] / counts[1]:.3f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
