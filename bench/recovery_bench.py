"""Client recovery benchmark (issue 7): from reconnect to a gap-free screen after missed messages.

    python bench/recovery_bench.py [--missed 1000] [--repeats 5] [--write]

A real ``chat-server`` (memory broker, ``--rate-limit 0``) runs on a free loopback port. In each
repeat, one receiver at a time misses ``--missed`` messages of a room and comes back:

* ``bare``: an httpx-ws chat.v2 client in this process joins, leaves, the messages are sent, and
  it joins again asking for recovery (``since``/``epoch``/``resume``); the time from that
  connect until the last recovered frame is parsed (the baseline: server, network, parsing);
* ``bare A/A``: the same again, to know the noise of the machine;
* ``chat-tui``: the real program (via bench/tui_probe.py) in a tmux pane of 160x48, reaching the
  server through a relay (chat_testing/proxy.py). The relay drops its connection and holds the
  reconnect; the messages are sent; then the relay lets it through (and ctrl+r is typed). The
  time from that moment until the screen is whole again: "reconnected" shown and the newest
  rows of the log the last missed messages, consecutive, ending with the last one
  (``capture-pane`` over one tmux control-mode client, polled every few milliseconds);
* ``chat-tui A/A``: the same again, with a fresh program.

``--write`` replaces the "### Recovery" part of docs/performance.md's "## Client" section.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import websockets
from client_bench import BODY, Terminal, shows
from httpx_ws import aconnect_ws

from chat_protocol.frames import Frame, Welcome
from chat_protocol.query import JoinRequest, join_query
from chat_protocol.v2 import SUBPROTOCOL as SUBPROTOCOL_V2
from chat_protocol.v2 import parse_frame as parse_v2_frame
from chat_testing.proxy import TcpProxy
from chat_testing.servers import RunningServer, start_server

ROOT = Path(__file__).resolve().parent.parent

VARIANTS = ["bare", "bare A/A", "chat-tui", "chat-tui A/A"]
MISSED = re.compile(r"missed (\d+) ")


def missed_text(i: int) -> str:
    return f"missed {i} {BODY}"


async def send_missed(server: RunningServer, room: str, count: int) -> None:
    """``count`` messages into ``room``, all published (the last one's echo came back)."""
    async with websockets.connect(server.chat_url(room), max_queue=None) as ws:
        await ws.recv()  # our join notice
        for i in range(count):
            await ws.send(missed_text(i))
        last = missed_text(count - 1)
        async for frame in ws:
            if isinstance(frame, str) and frame.endswith(last):
                break


async def run_bare(server: RunningServer, room: str, count: int) -> float:
    async with httpx.AsyncClient() as client:
        async with aconnect_ws(server.chat_url(room), client, subprotocols=[SUBPROTOCOL_V2]) as ws:
            welcome = parse_v2_frame(await ws.receive_text())
            assert isinstance(welcome, Welcome)
        await send_missed(server, room, count)
        query = join_query(JoinRequest(0, welcome.offset, welcome.epoch, welcome.resume))
        start = time.perf_counter()
        async with aconnect_ws(
            f"{server.chat_url(room)}?{query}", client, subprotocols=[SUBPROTOCOL_V2]
        ) as ws:
            again = parse_v2_frame(await ws.receive_text())
            assert isinstance(again, Welcome) and again.recovered, again
            last = None
            for _ in range(again.history):
                last = parse_v2_frame(await ws.receive_text())
            seconds = time.perf_counter() - start
    assert again.history == count and isinstance(last, Frame), again
    assert last.text == missed_text(count - 1)
    return seconds


def gap_free(count: int) -> Callable[[list[str]], bool]:
    """The screen is whole: "reconnected" shown, and the log's message rows the last missed
    messages, one after the other, ending with the last."""

    def check(rows: list[str]) -> bool:
        if not any("── reconnected ──" in row for row in rows):
            return False
        numbers = [int(m.group(1)) for row in rows if (m := MISSED.search(row))]
        return (
            len(numbers) > 10
            and numbers[-1] == count - 1
            and numbers == list(range(numbers[0], count))
        )

    return check


@dataclass
class Run:
    seconds: float
    stall: float = 0.0
    cpu: float = 0.0


def run_tui(server: RunningServer, room: str, count: int) -> Run:
    with TcpProxy([server.port]) as relay:
        term = Terminal(f"ws://127.0.0.1:{relay.port}", [room], None)
        try:
            term.wait(shows(f"joined {room} as"), 60, "joining")
            relay.hold()
            relay.cut()
            term.wait(lambda rows: not rows[0].rstrip().endswith(" connected"), 30, "offline")
            asyncio.run(send_missed(server, room, count))
            term.measure()  # the stall window starts now
            start = time.perf_counter()
            relay.release()
            term.keys("C-r")
            done = term.wait(gap_free(count), 120, "the recovered messages")
            probe = term.measure()
            return Run(done - start, probe["stall"], probe["cpu"])
        finally:
            term.close()


def main_async_runs(args: argparse.Namespace) -> dict[str, list[Run]]:
    server = start_server(rate_limit=0, send_buffer=256 * 2**20, log_level="warning")
    try:
        results: dict[str, list[Run]] = {name: [] for name in VARIANTS}
        for repeat in range(args.repeats):
            for name in VARIANTS:
                room = f"recover-{repeat}-{uuid.uuid4().hex[:6]}"
                if name.startswith("bare"):
                    run = Run(asyncio.run(run_bare(server, room, args.missed)))
                else:
                    run = run_tui(server, room, args.missed)
                results[name].append(run)
                print(
                    f"repeat {repeat + 1}: {name:<14} {run.seconds:7.3f} s  "
                    f"cpu {run.cpu:6.3f} s  stall {run.stall * 1000:5.1f} ms",
                    file=sys.stderr,
                )
    finally:
        server.stop()
    return results


def report(args: argparse.Namespace, results: dict[str, list[Run]]) -> str:
    bare = statistics.median(r.seconds for r in results["bare"])
    lines = [
        f"Reconnect after {args.missed:,} missed messages (recovery), {args.repeats} repeats, "
        "medians; the receivers take turns within each repeat. chat-tui's time is from the "
        "moment its reconnect is let through until its tmux pane (160x48) shows "
        '"reconnected" and the last missed messages, consecutive:',
        "",
        "| receiver | time to a gap-free screen | ratio to bare (runs) | "
        "CPU time of chat-tui meanwhile | longest event-loop stall, median (worst) |",
        "|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        seconds = statistics.median(r.seconds for r in runs)
        ratios = "/".join(f"{r.seconds / bare:.2f}" for r in runs)
        row = f"| {name} | {seconds * 1000:.0f} ms | **{seconds / bare:.2f}** ({ratios}) | "
        if name.startswith("bare"):
            row += "- | - |"
        else:
            cpu = statistics.median(r.cpu for r in runs)
            stall = statistics.median(r.stall for r in runs) * 1000
            worst = max(r.stall for r in runs) * 1000
            row += f"{cpu:.2f} s | {stall:.0f} ms ({worst:.0f} ms) |"
        lines.append(row)
    return "\n".join(lines)


def write_section(text: str) -> None:
    path = ROOT / "docs" / "performance.md"
    old = path.read_text()
    body = (
        "### Recovery\n\n"
        "Reproduce with `python bench/recovery_bench.py --write` (about a minute; needs tmux).\n\n"
        f"{text}\n\n"
        "The bare client is the floor: a new connection, the server reading the missed "
        "messages from its ring and sending them, and parsing them. What chat-tui adds is "
        "its handshake, the recovered messages put into the log in offset order (one event "
        "for all of them, one re-measure of the log), and drawing the pane; the A/A rows say "
        "how much of a difference between two runs is noise.\n"
    )
    start = old.find("### Recovery")
    if start == -1:
        # Before the client section's history, or at its end.
        client = old.find("## Client")
        anchor = old.find("\n### History", client)
        if anchor == -1:
            anchor = old.find("\n## ", client + 1)
        new = old[: anchor + 1] + body + "\n" + old[anchor + 1 :]
    else:
        end = min(
            (i for i in (old.find("\n### ", start + 1), old.find("\n## ", start + 1)) if i != -1),
            default=len(old),
        )
        new = old[:start] + body + old[end:]
    path.write_text(new)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--missed", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="update docs/performance.md")
    args = parser.parse_args()
    results = main_async_runs(args)
    text = report(args, results)
    print(text)
    if args.write:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
