"""``chat-tui`` with a stall probe, for bench/client_bench.py: the same program, measured inside.

Runs ``chat_tui.cli.main`` exactly as the ``chat-tui`` console script does, plus one task in
the app's event loop that sleeps 5 ms at a time and records how late it wakes (the longest
event-loop stall). ``SIGUSR1`` starts a measurement window; ``SIGUSR2`` writes the window's
longest stall, CPU time (all threads), longest and total garbage collection and the
process's RSS as JSON to ``$CHAT_TUI_PROBE``, and starts a new window.

For finding where the time goes (bench/flood_profile.py), optionally:

* ``$CHAT_TUI_SLOW``: a file where every event-loop callback longer than ``$CHAT_TUI_SLOW_MS``
  (10) is logged, with the time spent in garbage collection meanwhile; each window starts
  with a line "--- measured";
* ``$CHAT_TUI_OBJECTS``: a file where each window's end appends what the garbage collector
  tracks, by type;
* ``$CHAT_TUI_COUNT``: count the log's syncs, the screen's updates and the controller's
  drains (in the JSON);
* ``$CHAT_TUI_PATCH``: a file of Python run before the program, to try a change (or switch
  one off) without editing the program.
"""

from __future__ import annotations

import asyncio
import gc
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
        self.gc_worst = 0.0  # the longest garbage collection
        self.gc_total = 0.0
        self._gc_start = 0.0
        gc.callbacks.append(self.on_gc)

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            took = time.perf_counter() - self._gc_start
            self.gc_worst = max(self.gc_worst, took)
            self.gc_total += took

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
        self.gc_worst = self.gc_total = 0.0
        for key in COUNTED:
            COUNTED[key] = 0

    def report(self) -> None:
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        cpu = time.process_time() - self.cpu
        if os.environ.get("CHAT_TUI_OBJECTS"):  # what the collector has to look at, by type
            import collections

            kinds = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
            with open(os.environ["CHAT_TUI_OBJECTS"], "a") as out:
                out.write(f"{sum(kinds.values())} objects: {kinds.most_common(25)}\n")
                shapes = collections.Counter(
                    tuple(type(x).__qualname__ for x in o)
                    for o in gc.get_objects()
                    if type(o) is tuple
                )
                out.write(f"tuples: {shapes.most_common(8)}\n")
        self.out.write_text(
            json.dumps(
                {
                    "stall": self.worst,
                    "rss": rss,
                    "peak_rss": peak,
                    "cpu": cpu,
                    "gc_worst": self.gc_worst,
                    "gc_total": self.gc_total,
                    **COUNTED,
                }
            )
        )
        if os.environ.get("CHAT_TUI_SLOW"):  # the slow callbacks' log: a window begins
            with open(os.environ["CHAT_TUI_SLOW"], "a") as log:
                log.write("--- measured\n")
        self.reset()


def log_slow_callbacks(out: Path, threshold: float = 0.010) -> None:
    """Append every event-loop callback that ran longer than ``threshold`` to ``out``: its
    duration and what it was (``$CHAT_TUI_SLOW``; for finding what makes a stall)."""
    run = asyncio.events.Handle._run
    collected = [0.0, 0.0]  # total time in garbage collections; when the current one began

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collected[1] = time.perf_counter()
        else:
            collected[0] += time.perf_counter() - collected[1]

    gc.callbacks.append(on_gc)

    def where(handle: asyncio.events.Handle) -> str:
        task = getattr(handle._callback, "__self__", None)  # a task's step or wakeup
        coro = task.get_coro() if isinstance(task, asyncio.Task) else None
        frames = []
        while coro is not None and getattr(coro, "cr_frame", None) is not None:
            code = coro.cr_frame.f_code
            frames.append(f"{code.co_qualname}:{coro.cr_frame.f_lineno}")
            coro = coro.cr_await
        return " > ".join(frames) if frames else repr(handle)

    def timed(handle: asyncio.events.Handle) -> None:
        before = where(handle)
        start, gc_before = time.perf_counter(), collected[0]
        run(handle)
        took = time.perf_counter() - start
        if took > threshold:
            in_gc = (collected[0] - gc_before) * 1000
            with out.open("a") as log:
                log.write(f"{took * 1000:6.1f} ms (gc {in_gc:5.1f} ms)  {before}\n")

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]


COUNTED: dict[str, int] = {}


def count_calls() -> None:
    """Count the log's syncs, the screen's updates and the controller's drains
    (``$CHAT_TUI_COUNT``: reported with the rest)."""
    from textual.screen import Screen

    from chat_tui.controller import ChatController
    from chat_tui.widgets.message_log import MessageLog

    for owner, name in (
        (MessageLog, "_sync"),
        (Screen, "_on_timer_update"),
        (ChatController, "drain"),
    ):
        original = getattr(owner, name)
        key = f"{owner.__name__}.{name}"
        COUNTED[key] = 0

        def counted(*args: object, _original=original, _key=key, **kwargs: object) -> object:
            COUNTED[_key] += 1
            return _original(*args, **kwargs)

        setattr(owner, name, counted)


def install() -> None:
    probe = Probe(Path(os.environ["CHAT_TUI_PROBE"]))
    mount = app_module.ChatApp.on_mount
    tasks: list[asyncio.Task[None]] = []

    def on_mount(self: app_module.ChatApp) -> None:
        mount(self)
        tasks.append(asyncio.get_running_loop().create_task(probe.run()))

    app_module.ChatApp.on_mount = on_mount  # type: ignore[method-assign]
    if os.environ.get("CHAT_TUI_COUNT"):
        count_calls()
    if os.environ.get("CHAT_TUI_SLOW"):
        threshold = float(os.environ.get("CHAT_TUI_SLOW_MS", "10")) / 1000
        log_slow_callbacks(Path(os.environ["CHAT_TUI_SLOW"]), threshold)


if __name__ == "__main__":
    if os.environ.get("CHAT_TUI_PATCH"):
        # A throwaway change to try without editing the program: Python run first.
        exec(Path(os.environ["CHAT_TUI_PATCH"]).read_text())
    install()
    sys.exit(main(sys.argv[1:]))
