"""The bare Textual app for bench/client_bench.py: one ``Input``, nothing else.

    python bench/input_app.py [--url WS_URL --count N --signals DIR] [--show]

What a key typed into chat-tui is compared with: the same Textual, the same terminal (a tmux
pane), the same way of typing and of reading the screen, and an app that does nothing but show
what is typed. With ``--url``, its event loop also takes a flood the bare way (an httpx-ws
client that parses each frame, as the benchmark's bare receiver does, and nothing else), so a
key typed mid-flood can be compared too. It tells the benchmark where it is by creating files
in ``--signals``: ``joined`` (connected), ``quarter`` (a quarter of the flood parsed),
``done`` (the last message parsed; it holds the longest event-loop stall and the CPU time
from "joined" on, as JSON, measured as bench/tui_probe.py does for chat-tui: a task that
sleeps 5 ms at a time).

With ``--show``, the app also shows each message, as one line of Textual's own ``Log`` above
the ``Input`` (a log whose cost follows the screen): the least a Textual app that shows a flood
has to do, for what the screen's updates alone cost an event loop on this machine. Its "done"
comes once the last message is parsed and written; the benchmark waits for it on the screen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from textual.app import App, ComposeResult
from textual.widgets import Input, Log

# With --show, lines are written to the Log this many at a time (a line at a time, the Log
# asks for a refresh and a scroll per line, and that is what would be measured).
SHOWN_AT_ONCE = 50


class InputApp(App[None]):
    CSS = "Input { dock: bottom; }"

    def __init__(self, url: str | None, count: int, signals: Path | None, show: bool) -> None:
        super().__init__()
        self.url, self.count, self.signals, self.show = url, count, signals, show
        self.stall = 0.0  # the longest event-loop stall since "joined"

    def compose(self) -> ComposeResult:
        if self.show:
            yield Log()
        yield Input(placeholder="type here")

    def on_mount(self) -> None:
        self.query_one(Input).focus()
        if self.url is not None:
            self.run_worker(self.receive(), exclusive=True, exit_on_error=False)
            self.run_worker(self.tick(), group="tick", exit_on_error=False)

    async def tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.005)
            self.stall = max(self.stall, loop.time() - before - 0.005)

    def signal(self, name: str) -> None:
        assert self.signals is not None
        (self.signals / name).touch()

    async def receive(self) -> None:
        import httpx
        from httpx_ws import aconnect_ws

        from chat_protocol.frames import FrameKind
        from chat_protocol.v1 import parse_frame

        assert self.url is not None
        last = f"flood {self.count - 1} "
        quarter = self.count // 4
        received = 0
        log = self.query_one(Log) if self.show else None
        shown: list[str] = []
        async with httpx.AsyncClient() as client, aconnect_ws(self.url, client) as ws:
            parse_frame(await ws.receive_text())  # our join notice
            self.signal("joined")
            self.stall, cpu = 0.0, time.process_time()
            while True:
                frame = parse_frame(await ws.receive_text())
                if frame.kind is FrameKind.MESSAGE:
                    received += 1
                    if log is not None:
                        shown.append(f"{time.strftime('%H:%M')} {frame.name} :: {frame.text}")
                        if len(shown) == SHOWN_AT_ONCE or frame.text.startswith(last):
                            log.write_lines(shown)  # one refresh for them all
                            shown.clear()
                    if received == quarter:
                        self.signal("quarter")
                    if frame.text.startswith(last):
                        assert self.signals is not None
                        measured = {"stall": self.stall, "cpu": time.process_time() - cpu}
                        staged = self.signals / "done.tmp"
                        staged.write_text(json.dumps(measured))
                        staged.rename(self.signals / "done")  # whole when it appears
                        break


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--signals", type=Path)
    parser.add_argument("--show", action="store_true", help="each message in a Textual Log")
    args = parser.parse_args()
    InputApp(args.url, args.count, args.signals, args.show).run()


if __name__ == "__main__":
    main()
