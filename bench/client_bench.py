"""Client benchmark (issue 3): a flooded room, the real ChatApp against a bare httpx-ws client.

    python bench/client_bench.py [--messages 20000] [--repeats 5] [--memory-rooms 5]

A real ``chat-server`` runs as a subprocess on a free loopback port (rate limit off). A sender
process (this script with ``--send``) floods one room; in this process one receiver at a time
takes the flood, and the time from "go" until the last message is in its log is measured:

* ``bare``: an httpx-ws client that only receives and parses frames (the baseline);
* ``chatapp``: the real ``ChatApp`` (headless, ``App.run_test``), its RoomConnection worker
  posting what arrives in batches (a Textual message per 5 ms of a flood), the app appending
  to the room's Scrollback and the MessageLog (line API) following at the bottom;
* ``null``: a minimal app whose worker posts a Textual message per frame and shows nothing
  (what one message per frame costs by itself);
* ``messagelog``: a minimal app with just a MessageLog fed by that worker, an entry per message;
* ``richlog``: the naive approach, the same worker and one ``RichLog.write`` per message.

The receivers take turns within each repeat; the table gives medians. While an app takes the
flood, a ticker task (``asyncio.sleep(0.005)`` in a loop) records the longest event-loop stall.
Memory: a fresh process per variant receives ``--memory-rooms`` rooms x 10,000 messages and
reports its peak RSS.

``--write`` replaces the generated part of the "## Client" section of docs/performance.md and
keeps its "### History" subsection (numbers of earlier versions, written by hand).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from httpx_ws import aconnect_ws
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.message import Message
from textual.widgets import RichLog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat_server import protocol  # noqa: E402
from chat_tui.app import ChatApp  # noqa: E402
from chat_tui.config import Config  # noqa: E402
from chat_tui.connection import ConnectionState  # noqa: E402
from chat_tui.scrollback import Entry, EntryKind, Scrollback  # noqa: E402
from chat_tui.widgets.message_log import MessageLog  # noqa: E402
from tests.servers import RunningServer, start_server  # noqa: E402

SIZE = (120, 40)
TICK = 0.005
BODY = "the quick brown fox jumps over the lazy dog"


def final_text(n: int) -> str:
    return f"flood {n - 1} {BODY}"


# --- the sender (a separate process, so that it does not share this one's event loop) ---------


async def send_flood(url: str, rooms: list[str], count: int) -> None:
    import websockets

    sockets = [await websockets.connect(f"{url}/chat/{room}", max_queue=None) for room in rooms]
    done = [asyncio.Event() for _ in rooms]

    async def drain(ws: Any, finished: asyncio.Event) -> None:
        last = final_text(count)
        async for frame in ws:
            if isinstance(frame, str) and frame.endswith(last):
                finished.set()

    readers = [asyncio.create_task(drain(ws, ev)) for ws, ev in zip(sockets, done, strict=True)]
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for ws in sockets:
        for i in range(count):
            await ws.send(f"flood {i} {BODY}")
    for ev in done:
        await ev.wait()
    for ws in sockets:
        await ws.close()
    for reader in readers:
        reader.cancel()


class Sender:
    """The flooding process: connected and waiting until :meth:`go`."""

    def __init__(self, url: str, rooms: list[str], count: int) -> None:
        args = [sys.executable, __file__, "--send", url, ",".join(rooms), str(count)]
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"sender did not start: {line!r}")

    def go(self) -> float:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()
        return time.perf_counter()

    def finish(self) -> None:
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- measuring --------------------------------------------------------------------------------


@dataclass
class Ticker:
    """Longest event-loop stall while running: how late a 5 ms sleep comes back.

    Also the longest garbage-collector pause meanwhile, to tell the two apart.
    """

    worst: float = 0.0
    worst_gc: float = 0.0
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    _gc_began: float = 0.0

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_began = time.perf_counter()
        else:
            self.worst_gc = max(self.worst_gc, time.perf_counter() - self._gc_began)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(TICK)
            self.worst = max(self.worst, loop.time() - before - TICK)

    def start(self) -> None:
        gc.callbacks.append(self._gc)
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> float:
        assert self.task is not None
        gc.callbacks.remove(self._gc)
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        return self.worst


@dataclass
class Run:
    seconds: float
    stall: float
    gc: float = 0.0  # longest garbage-collector pause during the flood


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


# --- receivers ---------------------------------------------------------------------------------


async def run_bare(server: RunningServer, room: str, count: int) -> Run:
    sender = Sender(server.ws_url, [room], count)
    last = final_text(count)
    async with httpx.AsyncClient() as client, aconnect_ws(server.chat_url(room), client) as ws:
        protocol.parse_frame(await ws.receive_text())  # our join notice
        ticker = Ticker()
        ticker.start()
        start = sender.go()
        received = 0
        while True:
            frame = protocol.parse_frame(await ws.receive_text())
            if frame.kind is protocol.FrameKind.MESSAGE:
                received += 1
                if frame.text == last:
                    break
        seconds = time.perf_counter() - start
        stall = await ticker.stop()
    sender.finish()
    assert received == count, f"bare client got {received} of {count}"
    return Run(seconds, stall, ticker.worst_gc)


async def run_chatapp(server: RunningServer, room: str, count: int) -> Run:
    config = Config(server=server.ws_url, rooms=[room], autostart=False)
    app = ChatApp(config)
    last = final_text(count)
    sender = Sender(server.ws_url, [room], count)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(
            lambda: (
                room in app.rooms
                and app.rooms[room].state is ConnectionState.CONNECTED
                and app.rooms[room].name is not None
            ),
            20,
            "the ChatApp to join",
        )
        await pilot.pause()
        rs = app.rooms[room]
        log = app.log_view
        finished = asyncio.Event()
        done_at: list[float] = []
        arrived: list[int] = []
        added = log.entry_added

        seen = [0]  # entries appended before the previous call

        def entry_added(scrollback: Scrollback) -> None:  # the same call, timed
            added(scrollback)
            # A call may report several entries (a batch): look at all that are new.
            total, first = scrollback.total_appended, scrollback.first_index
            for index in range(max(seen[0], first, base), total):
                entry = scrollback[index - first]
                if entry.kind is EntryKind.MESSAGE and entry.text == last and not done_at:
                    done_at.append(time.perf_counter())
                    arrived.append(index + 1 - base)
                    finished.set()
            seen[0] = total

        log.entry_added = entry_added  # type: ignore[method-assign]
        base = rs.scrollback.total_appended
        ticker = Ticker()
        ticker.start()
        start = sender.go()
        await asyncio.wait_for(finished.wait(), 300)
        # In the log is on screen: the view takes arrivals in at most every APPLY_INTERVAL.
        await wait_for(lambda: not log.pending, 10, "the log to show the last message")
        on_screen = time.perf_counter()
        stall = await ticker.stop()
        await pilot.pause()
        shown = [log.render_line(y).text for y in range(log.size.height)]
        assert any(last in row for row in shown), "the last message is not on screen"
        assert arrived == [count], f"ChatApp logged {arrived} of {count}"
    sender.finish()
    return Run(on_screen - start, stall, ticker.worst_gc)


class FrameArrived(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class ReceiverApp(App[None]):
    """A worker reading one room with httpx-ws, a Textual message per frame (as RoomConnection)."""

    def __init__(self, url: str, last: str) -> None:
        super().__init__()
        self.url = url
        self.last = last
        self.joined = asyncio.Event()
        self.finished = asyncio.Event()
        self.done_at = 0.0
        self.received = 0

    @work(exit_on_error=False)
    async def receive(self) -> None:
        async with httpx.AsyncClient() as client, aconnect_ws(self.url, client) as ws:
            protocol.parse_frame(await ws.receive_text())
            self.joined.set()
            while True:
                self.post_message(FrameArrived(await ws.receive_text()))

    def on_mount(self) -> None:
        # One handler: Textual would call an on_mount of every class in the MRO.
        self.setup()
        self.receive()

    def setup(self) -> None:
        pass

    def on_frame_arrived(self, event: FrameArrived) -> None:
        frame = protocol.parse_frame(event.text)
        if frame.kind is not protocol.FrameKind.MESSAGE:
            return
        self.received += 1
        self.add(frame)
        if frame.text == self.last:
            self.done_at = time.perf_counter()
            self.finished.set()

    def add(self, frame: protocol.Frame) -> None:
        raise NotImplementedError


class NullApp(ReceiverApp):
    """Textual's share: the same worker and messages, and nothing shown."""

    def add(self, frame: protocol.Frame) -> None:
        pass


class MessageLogApp(ReceiverApp):
    def compose(self) -> ComposeResult:
        yield MessageLog()

    def setup(self) -> None:
        self.scrollback = Scrollback()
        self.log_view = self.query_one(MessageLog)
        self.log_view.show(self.scrollback)

    def add(self, frame: protocol.Frame) -> None:
        from datetime import datetime

        self.scrollback.append(Entry(EntryKind.MESSAGE, frame.text, datetime.now(), frame.name))
        self.log_view.entry_added(self.scrollback)


class RichLogApp(ReceiverApp):
    def compose(self) -> ComposeResult:
        yield RichLog(max_lines=10_000, markup=False, wrap=True)

    def setup(self) -> None:
        self.rich_log = self.query_one(RichLog)

    def add(self, frame: protocol.Frame) -> None:
        line = Text.assemble(
            (time.strftime("%H:%M"), "dim"), " ", (frame.name or "?", "bold"), " ", frame.text
        )
        self.rich_log.write(line)


def run_receiver_app(cls: type[ReceiverApp]) -> Callable[[RunningServer, str, int], Awaitable[Run]]:
    async def run(server: RunningServer, room: str, count: int) -> Run:
        sender = Sender(server.ws_url, [room], count)
        app = cls(server.chat_url(room), final_text(count))
        async with app.run_test(size=SIZE) as pilot:
            await asyncio.wait_for(app.joined.wait(), 20)
            await pilot.pause()
            ticker = Ticker()
            ticker.start()
            start = sender.go()
            await asyncio.wait_for(app.finished.wait(), 600)
            if isinstance(app, MessageLogApp):  # on screen, as for the ChatApp
                await wait_for(lambda: not app.log_view.pending, 10, "the log")
                app.done_at = time.perf_counter()
            stall = await ticker.stop()
            await pilot.pause()
            assert app.received == count, f"{cls.__name__} got {app.received} of {count}"
        sender.finish()
        return Run(app.done_at - start, stall, ticker.worst_gc)

    return run


VARIANTS: dict[str, Callable[[RunningServer, str, int], Awaitable[Run]]] = {
    "bare": run_bare,
    "chatapp": run_chatapp,
    "null": run_receiver_app(NullApp),
    "messagelog": run_receiver_app(MessageLogApp),
    "richlog": run_receiver_app(RichLogApp),
}


# --- memory (a fresh process per variant) ------------------------------------------------------


async def memory_child(variant: str, url: str, rooms: list[str], count: int) -> dict[str, float]:
    process = psutil.Process()
    rss_start = process.memory_info().rss
    last = final_text(count)
    if variant == "chatapp":
        sender = Sender(url, rooms, count)
        app = ChatApp(Config(server=url, rooms=rooms, autostart=False, scrollback=10_000))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(
                lambda: all(r in app.rooms and app.rooms[r].name is not None for r in rooms),
                30,
                "rooms joined",
            )
            rss_ready = process.memory_info().rss
            sender.go()

            def all_in() -> bool:
                # The last message, maybe followed by the sender's leave notice.
                return all(
                    any(entry.text == last for entry in list(reversed(app.rooms[r].scrollback))[:3])
                    for r in rooms
                )

            await wait_for(all_in, 300, "all rooms flooded")
            for number in range(1, len(rooms) + 1):  # show every room once
                await pilot.press(f"alt+{number}")
                await pilot.pause()
            entries = sum(len(app.rooms[r].scrollback) for r in rooms)
            rss_end = process.memory_info().rss
        sender.finish()
    else:  # richlog: one RichLog per room, as a naive client would keep them
        from textual.containers import Vertical

        class Naive(App[None]):
            def compose(self) -> ComposeResult:
                with Vertical():
                    for _ in rooms:
                        yield RichLog(max_lines=10_000, markup=False, wrap=True)

        app2 = Naive()
        async with app2.run_test(size=SIZE) as pilot:
            logs = list(app2.query(RichLog))
            rss_ready = process.memory_info().rss
            # Fed from here, not over the network: with five rooms flooding, the naive client
            # falls so far behind that its connections fail (WebSocketNetworkError), and this
            # measures what its scrollback costs, not that.
            for index in range(len(rooms)):
                for i in range(count):
                    logs[index].write(
                        Text.assemble(
                            (time.strftime("%H:%M"), "dim"),
                            " ",
                            ("user_abcdef12", "bold"),
                            " ",
                            f"flood {i} {BODY}",
                        )
                    )
                await pilot.pause()
            entries = sum(len(log.lines) for log in logs)
            rss_end = process.memory_info().rss
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "entries": entries,
        "rss_start_mib": rss_start / 2**20,
        "rss_ready_mib": rss_ready / 2**20,
        "rss_end_mib": rss_end / 2**20,
        "peak_rss_mib": peak_kib / 1024,
    }


def measure_memory(server: RunningServer, variant: str, rooms: int) -> dict[str, float]:
    names = [f"mem{variant}{i}" for i in range(rooms)]
    args = [sys.executable, __file__, "--memory-child", variant, server.ws_url, ",".join(names)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"memory child {variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- main ------------------------------------------------------------------------------------


def relayout_cost() -> tuple[int, float]:
    """Seconds to re-measure 10,000 entries for a new width (what a resize costs)."""

    async def go() -> tuple[int, float]:
        class Host(App[None]):
            def compose(self) -> ComposeResult:
                yield MessageLog()

        app = Host()
        scrollback = Scrollback()
        async with app.run_test(size=SIZE) as pilot:
            log = app.query_one(MessageLog)
            log.show(scrollback)
            from datetime import datetime

            for i in range(10_000):
                scrollback.append(
                    Entry(EntryKind.MESSAGE, final_text(i + 1), datetime.now(), "user_abcdef12")
                )
                log.entry_added(scrollback)
            costs = []
            for width in (80, 50, 120, 70, 100):
                await pilot.resize_terminal(width, SIZE[1])
                await wait_for(lambda w=width: log.last_relayout[0] and log.virtual_size.width
                               == log.scrollable_content_region.width, 20, "re-wrap")  # fmt: skip
                costs.append(log.last_relayout[1])
            return 10_000, statistics.median(costs)

    return asyncio.run(go())


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    server = start_server(rate_limit=0, send_buffer=64 * 2**20, log_level="warning")
    try:
        results: dict[str, list[Run]] = {name: [] for name in args.variants}
        for repeat in range(args.repeats):
            for name in args.variants:
                room = f"flood-{name}-{repeat}"
                # Each run starts from a collected heap: what earlier runs left behind (whole
                # apps with their logs) would otherwise make one run's GC pause another's.
                gc.collect()
                objects = len(gc.get_objects())
                run = await VARIANTS[name](server, room, args.messages)
                results[name].append(run)
                print(
                    f"repeat {repeat + 1}: {name:<11} {run.seconds:7.3f} s  "
                    f"stall {run.stall * 1000:6.1f} ms  gc {run.gc * 1000:6.1f} ms  "
                    f"(objects before: {objects:,})",
                    file=sys.stderr,
                )
        memory = {}
        if args.memory_rooms:
            for variant in ("chatapp", "richlog"):
                memory[variant] = measure_memory(server, variant, args.memory_rooms)
                print(f"memory {variant}: {memory[variant]}", file=sys.stderr)
    finally:
        server.stop()
    return {"results": results, "memory": memory}


def report(args: argparse.Namespace, data: dict[str, Any], relayout: tuple[int, float]) -> str:
    results: dict[str, list[Run]] = data["results"]
    bare = statistics.median(r.seconds for r in results["bare"])
    lines = [
        f"Flood of {args.messages:,} messages into the active room, {args.repeats} repeats, "
        "medians (receivers take turns within each repeat):",
        "",
        "| receiver | time until the last message is in the log | msgs/s | ratio to bare | "
        "longest event-loop stall, median (worst run) | longest GC pause, median |",
        "|---|---|---|---|---|---|",
    ]
    labels = {
        "bare": "bare httpx-ws client (baseline)",
        "chatapp": "**ChatApp** (real app, frames in batches, MessageLog line API)",
        "null": "minimal app, a Textual message per frame, nothing shown",
        "messagelog": "minimal app, a Textual message per frame + MessageLog",
        "richlog": "naive: minimal app + RichLog.write per message",
    }
    for name, runs in results.items():
        seconds = statistics.median(r.seconds for r in runs)
        stall = statistics.median(r.stall for r in runs) * 1000
        worst = max(r.stall for r in runs) * 1000
        lines.append(
            f"| {labels[name]} | {seconds:.3f} s | {args.messages / seconds:,.0f} | "
            f"{seconds / bare:.2f} | {stall:.0f} ms ({worst:.0f} ms) | "
            f"{statistics.median(r.gc for r in runs) * 1000:.0f} ms |"
        )
    if data["memory"]:
        lines += [
            "",
            f"Memory, {args.memory_rooms} rooms x {args.messages_memory:,} messages each "
            "(a fresh process per receiver; RSS from psutil, peak from ru_maxrss). The ChatApp "
            "receives its rooms' floods from the server and then shows each room once; the "
            "naive RichLogs are written from the process itself, because over the network that "
            "client falls so far behind that its connections fail:",
            "",
            "| receiver | entries kept | RSS before flood | RSS after | peak RSS |",
            "|---|---|---|---|---|",
        ]
        for name, m in data["memory"].items():
            label = {"chatapp": "ChatApp (Scrollback + MessageLog)",
                     "richlog": "naive: one RichLog per room"}[name]  # fmt: skip
            lines.append(
                f"| {label} | {m['entries']:,} | {m['rss_ready_mib']:.0f} MiB | "
                f"{m['rss_end_mib']:.0f} MiB | {m['peak_rss_mib']:.0f} MiB |"
            )
    entries, seconds = relayout
    lines += [
        "",
        f"Resize: re-measuring {entries:,} entries for a new width takes {seconds * 1000:.0f} ms "
        "(median of 5 widths; done at once on the resize, rows themselves are rendered only "
        "for the screen).",
    ]
    return "\n".join(lines)


def write_section(text: str, command: str) -> None:
    path = ROOT / "docs" / "performance.md"
    body = (
        "## Client\n\n"
        f"Reproduce with `{command}` (about a few minutes; a 2-core machine shared with "
        "other work, so the numbers are noisy; ratios are what matter).\n\n"
        "The server runs with `--rate-limit 0 --send-buffer 67108864` so that it neither drops "
        "nor evicts during the flood; the sender is a separate process.\n\n"
        f"{text}\n"
    )
    old = path.read_text() if path.exists() else "# Performance\n"
    start = old.find("## Client")
    if start == -1:
        new = old.rstrip("\n") + "\n\n" + body
    else:
        end = old.find("\n## ", start + 1)
        section = old[start:] if end == -1 else old[start : end + 1]
        history = section.find("\n### History")
        if history != -1:
            body += section[history:].rstrip("\n") + "\n"
        new = old[:start] + body + ("" if end == -1 else "\n" + old[end + 1 :])
    path.write_text(new)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--send":
        url, rooms, count = sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])
        asyncio.run(send_flood(url, rooms, count))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        variant, url, rooms = sys.argv[2], sys.argv[3], sys.argv[4].split(",")
        result = asyncio.run(memory_child(variant, url, rooms, 10_000))
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-rooms", type=int, default=5, help="0 = skip the memory run")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--write", action="store_true", help="update docs/performance.md")
    args = parser.parse_args()
    args.messages_memory = 10_000
    if args.variants[0] != "bare":
        args.variants = ["bare", *[v for v in args.variants if v != "bare"]]
    data = asyncio.run(main_async(args))
    text = report(args, data, relayout_cost())
    print(text)
    if args.write:
        write_section(text, "python bench/client_bench.py --write")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
