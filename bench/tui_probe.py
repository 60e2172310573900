"""``chat-tui`` with a stall probe, for bench/client_bench.py: the same program, measured inside.

Runs ``chat_tui.cli.main`` exactly as the ``chat-tui`` console script does, plus one task in
the app's event loop that sleeps 5 ms at a time and records how late it wakes (the longest
event-loop stall). ``SIGUSR1`` starts a measurement window; ``SIGUSR2`` writes the window's
longest stall and CPU time (all threads) and the process's RSS as JSON to ``$CHAT_TUI_PROBE``,
and starts a new window.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sys
import time
from pathlib import Path

from chat_tui import app as app_module
from chat_tui.cli import main

TICK = 0.005


class Probe:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.worst = 0.0
        self.cpu = time.process_time()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self.reset)
        loop.add_signal_handler(signal.SIGUSR2, self.report)
        while True:
            before = loop.time()
            await asyncio.sleep(TICK)
            self.worst = max(self.worst, loop.time() - before - TICK)

    def reset(self) -> None:
        self.worst = 0.0
        self.cpu = time.process_time()

    def report(self) -> None:
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        cpu = time.process_time() - self.cpu
        self.out.write_text(
            json.dumps({"stall": self.worst, "rss": rss, "peak_rss": peak, "cpu": cpu})
        )
        self.reset()


def install() -> None:
    probe = Probe(Path(os.environ["CHAT_TUI_PROBE"]))
    mount = app_module.ChatApp.on_mount
    tasks: list[asyncio.Task[None]] = []

    def on_mount(self: app_module.ChatApp) -> None:
        mount(self)
        tasks.append(asyncio.get_running_loop().create_task(probe.run()))

    app_module.ChatApp.on_mount = on_mount  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    sys.exit(main(sys.argv[1:]))
