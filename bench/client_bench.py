"""Client benchmark (issues 9 and 17): what the user sees, the real chat-tui in tmux against bare
clients.

    python bench/client_bench.py [--messages 20000] [--repeats 5] [--memory-rooms 5]
                                 [--recovery-repeats 5] [--write | --only 'NAME;NAME']

A real ``chat-server`` runs as a subprocess on a free loopback port (``--rate-limit 0
--send-buffer 268435456``: it neither drops nor evicts). A sender process (this script with
``--send``) floods one room. In each repeat, one receiver at a time takes the same flood:

* ``bare``: an httpx-ws client in this process that only receives and parses frames; the time
  from "go" until the last frame is parsed (the baseline);
* ``bare A/A``: the same again, to know the noise of the machine;
* ``Textual, one Input``: bench/input_app.py, a bare Textual app with one ``Input``, in the
  same kind of tmux pane, whose event loop takes the flood the bare client's way (and shows
  nothing of it); its time is until the last frame is parsed, and it has the same 5 ms ticker
  for the longest event-loop stall. It is what a key typed into chat-tui is compared with;
* ``Textual's own Log``: the same app showing every message in Textual's own ``Log`` widget
  (``--show``); its time is until the last message is on the pane's screen. What a flood's
  screen updates cost a Textual app here, beside chat-tui's;
* ``chat-tui``: the real program (``chat_tui.cli.main``, via bench/tui_probe.py, which adds a
  5 ms ticker that records the longest event-loop stall) in a tmux pane of 160x48,
  ``TERM=xterm-256color``; the time from "go" until the flood's last message is on the pane's
  screen (``capture-pane`` over one tmux control-mode client, polled every few milliseconds);
* ``chat-tui, scrollback 1000``: the same with ``scrollback = 1000`` in its config file, so that
  the flood passes the bound 20 times.

While chat-tui (or the Textual app) takes the flood, a key is typed (tmux ``send-keys``) once a
quarter of the flood is on screen (parsed, for the Textual app), and the time until it shows
in the input box is measured; the same key typed when nothing happens gives the idle figure.
Memory: chat-tui joins ``--memory-rooms`` rooms, each gets 10,000 messages, every room is shown
once, then its RSS is read. Then bench/recovery_bench.py's reconnect runs
``--recovery-repeats`` times.

``--write`` replaces the "## Client" section of docs/performance.md (keeping its subsections,
"### History"), its "### Recovery" (bench/recovery_bench.py's table) and the table of
"## A screen that keeps up (issue 17)" at the end (keeping its own subsections).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_ws import aconnect_ws

from chat_protocol.frames import FrameKind
from chat_protocol.v1 import parse_frame
from chat_testing.servers import RunningServer, start_server

ROOT = Path(__file__).resolve().parent.parent

WIDTH, HEIGHT = 160, 48
BODY = "the quick brown fox jumps over the lazy dog"
POLL = 0.003
PROBE = ROOT / "bench" / "tui_probe.py"
INPUT_APP = ROOT / "bench" / "input_app.py"


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
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- chat-tui in tmux -----------------------------------------------------------------------------


class Terminal:
    """chat-tui in a pane of a private tmux server, read through one control-mode client."""

    def __init__(
        self,
        server_url: str,
        rooms: list[str],
        scrollback: int | None,
        checkout: Path | None = None,
        program: list[str] | None = None,
        config: str = "",
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="chat-bench-"))
        self.socket = f"chat-bench-{uuid.uuid4().hex[:10]}"
        self.probe = self.dir / "probe.json"
        config_text = config
        config = self.dir / "config" / "chat-tui"
        config.mkdir(parents=True)
        if scrollback is not None:
            config_text = f"scrollback = {scrollback}\n{config_text}"
        (config / "config.toml").write_text(config_text)
        skip = {"COLUMNS", "LINES", "TMUX", "TMUX_PANE", "CHAT_SERVER_URL"}
        self.env = {k: v for k, v in os.environ.items() if k not in skip}
        self.env.update(
            TERM="xterm-256color",
            XDG_CONFIG_HOME=str(self.dir / "config"),
            XDG_STATE_HOME=str(self.dir / "state"),
            XDG_DATA_HOME=str(self.dir / "data"),  # its logs on disk (not the user's)
        )
        command = [
            "env",
            "TERM=xterm-256color",
            f"CHAT_TUI_PROBE={self.probe}",
            # Another checkout's chat_tui, ahead of this one's (the editable install's finder
            # comes after sys.path).
            *([f"PYTHONPATH={checkout}"] if checkout else []),
            sys.executable,
            *(
                program
                if program is not None
                else [str(PROBE), "--server", server_url, "--no-autostart", *rooms]
            ),
        ]
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "bench", "-x", str(WIDTH),
                  "-y", str(HEIGHT), shlex.join(command))  # fmt: skip
        self.control = subprocess.Popen(
            ["tmux", "-L", self.socket, "-C", "attach", "-t", "bench"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
            text=True,
            bufsize=1,
        )
        self._read_answer("attach")  # the attach's own %begin/%end
        self.command("refresh-client -f no-output")  # only answers, not the pane's output

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            check=True,
            env=self.env,
            timeout=30,
        ).stdout

    def command(self, line: str) -> list[str]:
        """One command over the control client; its output lines."""
        assert self.control.stdin is not None
        self.control.stdin.write(line + "\n")
        self.control.stdin.flush()
        return self._read_answer(line)

    def _read_answer(self, line: str) -> list[str]:
        assert self.control.stdout is not None
        out: list[str] = []
        inside = False
        while True:
            row = self.control.stdout.readline()
            if not row:
                raise RuntimeError("the tmux control client went away")
            row = row.rstrip("\n")
            if row.startswith("%begin"):
                inside, out = True, []
            elif row.startswith(("%end", "%error")) and inside:
                if row.startswith("%error"):
                    raise RuntimeError(f"tmux: {line}: {out}")
                return out
            elif inside:
                out.append(row)

    def screen(self) -> list[str]:
        return self.command("capture-pane -p -t bench")

    def keys(self, *keys: str) -> None:
        self.command("send-keys -t bench " + " ".join(shlex.quote(k) for k in keys))

    def wait(self, condition: Callable[[list[str]], bool], timeout: float, what: str) -> float:
        """Poll the screen until ``condition``; returns when it first held."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.screen()
            if condition(rows):
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not on screen after {timeout} s:\n" + "\n".join(rows))
            time.sleep(POLL)

    @property
    def pid(self) -> int:
        """The probe's process (the pane's command, or its child under env)."""
        import psutil

        pane = int(self.tmux("display-message", "-p", "-t", "bench", "#{pane_pid}").strip())
        for process in [psutil.Process(pane), *psutil.Process(pane).children(recursive=True)]:
            if any(str(PROBE) in part for part in process.cmdline()):
                return process.pid
        raise RuntimeError("the chat-tui process was not found")

    def measure(self) -> dict[str, float]:
        """The probe's window so far (stall, RSS), and a new window from now."""
        self.probe.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while not self.probe.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the probe did not answer")
            time.sleep(0.01)
        time.sleep(0.01)  # written in one call; let it land
        result: dict[str, float] = json.loads(self.probe.read_text())
        return result

    def close(self) -> None:
        socket_path = ""
        with contextlib.suppress(RuntimeError, subprocess.SubprocessError, OSError):
            socket_path = self.tmux("display-message", "-p", "#{socket_path}").strip()
        with_suppress(lambda: self.keys("C-q"))
        with_suppress(lambda: self.tmux("kill-server"))
        if socket_path:
            Path(socket_path).unlink(missing_ok=True)
        self.control.kill()
        self.control.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def with_suppress(action: Callable[[], object]) -> None:
    with contextlib.suppress(RuntimeError, subprocess.SubprocessError, OSError):
        action()


def shows(text: str) -> Callable[[list[str]], bool]:
    return lambda rows: any(text in row for row in rows)


FLOOD_ROW = re.compile(r"flood (\d+) the quick")


def newest_shown(rows: list[str]) -> int:
    """The highest flood message number on screen (-1: none)."""
    numbers = [int(m.group(1)) for row in rows for m in FLOOD_ROW.finditer(row)]
    return max(numbers, default=-1)


def input_row(rows: list[str]) -> str:
    return rows[-3] if len(rows) >= 3 else ""


def key_latency(term: Terminal, marker: str, anywhere: bool = False) -> float:
    """Type ``marker`` and wait until the input box shows it (``anywhere``: on the screen);
    seconds."""
    start = time.perf_counter()
    term.keys("-l", marker)
    seen = term.wait(
        shows(marker) if anywhere else (lambda rows: marker in input_row(rows)),
        30,
        f"the key {marker!r}",
    )
    term.keys("C-u")
    return seen - start


# --- receivers ---------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    stall: float = 0.0
    key: float = 0.0  # a key typed mid-flood: seconds until it showed
    idle_key: float = 0.0  # the same with nothing happening
    cpu: float = 0.0  # the receiving process's CPU time for the flood (all its threads)
    gc: float = 0.0  # the longest garbage collection during the flood


async def run_bare(server: RunningServer, room: str, count: int) -> Run:
    sender = Sender(server.ws_url, [room], count)
    last = final_text(count)
    async with httpx.AsyncClient() as client, aconnect_ws(server.chat_url(room), client) as ws:
        parse_frame(await ws.receive_text())  # our join notice
        cpu = time.process_time()
        start = sender.go()
        received = 0
        while True:
            frame = parse_frame(await ws.receive_text())
            if frame.kind is FrameKind.MESSAGE:
                received += 1
                if frame.text == last:
                    break
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
    sender.finish()
    assert received == count, f"bare client got {received} of {count}"
    return Run(seconds, cpu=cpu)


def run_tui(
    server: RunningServer,
    room: str,
    count: int,
    scrollback: int | None,
    checkout: Path | None = None,
) -> Run:
    term = Terminal(server.ws_url, [room], scrollback, checkout)
    try:
        term.wait(shows(f"joined {room} as"), 60, "joining")
        sender = Sender(server.ws_url, [room], count)
        # The sender's join is a quiet one (the smart join filter hides it): the member list
        # says it is there.
        term.wait(shows("members (2)"), 30, "the sender's join")
        idle_key = key_latency(term, "idlekey")
        term.measure()  # the stall window starts now
        start = sender.go()
        # A key typed once a quarter of the flood is on screen.
        term.wait(lambda rows: newest_shown(rows) >= count // 4, 120, "a quarter of the flood")
        key = key_latency(term, "midflood")
        done = term.wait(shows(final_text(count)), 300, "the flood's last message")
        seconds = done - start
        probe = term.measure()
        sender.finish()
        return Run(seconds, probe["stall"], key, idle_key, probe["cpu"], probe["gc_worst"])
    finally:
        term.close()


def run_input(server: RunningServer, room: str, count: int, show: bool = False) -> Run:
    """The bare Textual app with one Input (bench/input_app.py) in the same kind of pane: the
    same key typed idle and once a quarter of the same flood is parsed in its event loop.
    ``show``: it also shows each message in Textual's own Log (its time is then until the last
    one is on the screen)."""
    signals = Path(tempfile.mkdtemp(prefix="chat-bench-input-"))
    program = [str(INPUT_APP), "--url", server.chat_url(room), "--count", str(count)]
    if show:
        program.append("--show")
    term = Terminal(server.ws_url, [room], None, program=[*program, "--signals", str(signals)])

    def signalled(name: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while not (signals / name).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the input app did not signal {name!r}")
            time.sleep(POLL)
        return time.perf_counter()

    try:
        term.wait(shows("type here"), 60, "the input app")
        signalled("joined", 30)
        sender = Sender(server.ws_url, [room], count)
        time.sleep(0.3)  # the sender's join notice, parsed
        idle_key = key_latency(term, "idlekey", anywhere=True)
        start = sender.go()
        signalled("quarter", 120)
        key = key_latency(term, "midflood", anywhere=True)
        done = signalled("done", 300)
        if show:
            done = term.wait(shows(final_text(count)), 60, "the Log's last message")
        measured = json.loads((signals / "done").read_text())
        sender.finish()
        return Run(done - start, measured["stall"], key, idle_key, measured["cpu"])
    finally:
        term.close()
        shutil.rmtree(signals, ignore_errors=True)


def run_memory(server: RunningServer, rooms: int, count: int) -> dict[str, float]:
    names = [f"mem-{uuid.uuid4().hex[:6]}-{i}" for i in range(rooms)]
    term = Terminal(server.ws_url, names, None)
    try:
        term.wait(shows(f"joined {names[0]} as"), 60, "joining")
        sender = Sender(server.ws_url, names, count)
        before = term.measure()["rss"]
        sender.go()
        for number, name in enumerate(names, start=1):  # every room shown once
            term.keys(f"M-{number}")
            term.wait(lambda rows, n=name: f"#{n}" in rows[0], 60, f"room {name}")
            term.keys("End")
            term.wait(shows(final_text(count)), 300, f"{name}'s last message")
        sender.finish()
        after = term.measure()
        return {"before": before, "after": after["rss"], "peak": after["peak_rss"]}
    finally:
        term.close()


# --- main ------------------------------------------------------------------------------------


TEXTUAL = "Textual, one Input"
# The same app showing each message in Textual's own Log: what the screen's updates cost.
TEXTUAL_LOG = "Textual's own Log"
VARIANTS = ("bare", "bare A/A", TEXTUAL, TEXTUAL_LOG, "chat-tui", "chat-tui, scrollback 1000")
# With --compare: this chat-tui against another checkout's, each with its A/A partner.
COMPARED = (
    "bare", "bare A/A", TEXTUAL, TEXTUAL_LOG, "chat-tui", "chat-tui A/A", "chat-tui (compared)"
)  # fmt: skip


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    server = start_server(rate_limit=0, send_buffer=256 * 2**20, log_level="warning")
    variants = COMPARED if args.compare else VARIANTS
    if args.only:
        chosen = {"bare", *args.only.split(";")}
        variants = tuple(name for name in variants if name in chosen)
    try:
        results: dict[str, list[Run]] = {name: [] for name in variants}
        for repeat in range(args.repeats):
            for name in variants:
                room = f"flood-{repeat}-{uuid.uuid4().hex[:6]}"
                if name.startswith("bare"):
                    run = await run_bare(server, room, args.messages)
                elif name in (TEXTUAL, TEXTUAL_LOG):
                    show = name == TEXTUAL_LOG
                    run = await asyncio.to_thread(run_input, server, room, args.messages, show)
                else:
                    bound = 1000 if "1000" in name else None
                    checkout = args.compare if "compared" in name else None
                    run = await asyncio.to_thread(
                        run_tui, server, room, args.messages, bound, checkout
                    )
                results[name].append(run)
                print(
                    f"repeat {repeat + 1}: {name:<26} {run.seconds:7.3f} s  cpu {run.cpu:6.3f} s  "
                    f"stall {run.stall * 1000:5.1f} ms (gc {run.gc * 1000:4.1f})  "
                    f"key {run.key * 1000:6.1f} ms  "
                    f"(idle {run.idle_key * 1000:5.1f} ms)",
                    file=sys.stderr,
                )
        memory = None
        if args.memory_rooms:
            memory = await asyncio.to_thread(run_memory, server, args.memory_rooms, 10_000)
            print(f"memory: {memory}", file=sys.stderr)
    finally:
        server.stop()
    return {"results": results, "memory": memory}


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(args: argparse.Namespace, data: dict[str, Any]) -> str:
    results: dict[str, list[Run]] = data["results"]
    bare = median([r.seconds for r in results["bare"]])
    bare_cpu = median([r.cpu for r in results["bare"]])
    lines = [
        f"Flood of {args.messages:,} messages into the active room, {args.repeats} repeats, "
        "medians; the receivers take turns within each repeat. chat-tui's time is until the "
        "last message is on the screen of its tmux pane (160x48):",
        "",
        "| receiver | time until the last message is shown | msgs/s | ratio to bare (runs) | "
        "CPU time of the receiving process (ratio) | "
        "longest event-loop stall, median (worst) | key typed mid-flood, shown after, median "
        "(worst) | the same key when idle, median (worst) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        seconds = median([r.seconds for r in runs])
        ratios = "/".join(f"{r.seconds / bare:.2f}" for r in runs)
        row = f"| {name} | {seconds:.3f} s | {args.messages / seconds:,.0f} | "
        row += f"**{seconds / bare:.2f}** ({ratios}) | "
        cpu = median([r.cpu for r in runs])
        row += f"{cpu:.2f} s ({cpu / bare_cpu:.2f}) | "
        if name.startswith("bare"):
            row += "- | - | - |"
        else:
            stall = median([r.stall for r in runs]) * 1000
            worst = max(r.stall for r in runs) * 1000
            key = median([r.key for r in runs]) * 1000
            worst_key = max(r.key for r in runs) * 1000
            idle = median([r.idle_key for r in runs]) * 1000
            worst_idle = max(r.idle_key for r in runs) * 1000
            row += f"{stall:.0f} ms ({worst:.0f} ms) | "
            row += f"{key:.0f} ms ({worst_key:.0f} ms) | {idle:.0f} ms ({worst_idle:.0f} ms) |"
        lines.append(row)
    lines += [
        "",
        "The chat-tui figures include the probe's 5 ms ticker (bench/tui_probe.py) and the "
        "rendering for a real pane. The Textual row is bench/input_app.py, a bare Textual app "
        "with one `Input` whose event loop takes the same flood the bare client's way and shows "
        "nothing of it: its time is until its last frame is parsed, and it is there for its "
        "stall and its keys, typed and read as chat-tui's are. The Log row is the same app "
        "showing every message in Textual's own `Log` (written 50 lines at a time), its time "
        "until the last one is on the screen: what the screen's updates of a flood cost a "
        "Textual app on this machine. The machine is shared: the A/A "
        "row says how far one run's ratio can be off; the medians over the turns are what to "
        "read.",
    ]
    if "chat-tui (compared)" in results:
        # Per repeat, each chat-tui's time against the other's of the same turn.
        ours, again = results["chat-tui"], results["chat-tui A/A"]
        other = results["chat-tui (compared)"]
        versus = [a.seconds / b.seconds for a, b in zip(ours, other, strict=True)]
        noise = [a.seconds / b.seconds for a, b in zip(again, ours, strict=True)]
        cpu = [a.cpu / b.cpu for a, b in zip(ours, other, strict=True)]
        lines += [
            "",
            f"chat-tui against {args.compare}'s: time {median(versus):.2f}x "
            f"({'/'.join(f'{v:.2f}' for v in versus)}), CPU {median(cpu):.2f}x; "
            f"A/A (chat-tui against itself) {median(noise):.2f}x "
            f"({'/'.join(f'{v:.2f}' for v in noise)}).",
        ]
    memory = data["memory"]
    if memory:
        lines += [
            "",
            f"Memory: chat-tui in tmux with {args.memory_rooms} rooms, 10,000 messages into each "
            f"(scrollback 10,000), every room shown once: RSS {memory['before'] / 2**20:.0f} MiB "
            f"before the floods, {memory['after'] / 2**20:.0f} MiB after "
            f"(peak {memory['peak'] / 2**20:.0f} MiB).",
        ]
    return "\n".join(lines)


# The table of issue 17 ("A screen that keeps up"): what was measured before, and the goals.
ISSUE_17 = "## A screen that keeps up (issue 17)"
BEFORE = {
    "flood": "1.48 (worst run 2.09)",
    "stall": "38 ms (worst 65 ms)",
    "key": "41 ms (worst 103-202 ms)",
    "recovery": "2.26",
    "memory": "82 MiB (59 before the floods)",
}


def issue_17(args: argparse.Namespace, data: dict[str, Any], recovery: Any) -> str:
    """The issue's table: before, goal, now (medians, worst runs, A/A) and whether it is met."""
    results: dict[str, list[Run]] = data["results"]
    bare = median([r.seconds for r in results["bare"]])
    tui, textual, again = results["chat-tui"], results[TEXTUAL], results["bare A/A"]

    def ratios(runs: list[Run]) -> tuple[float, float]:
        values = [r.seconds / bare for r in runs]
        return median(values), max(values)

    flood, flood_worst = ratios(tui)
    noise, noise_worst = ratios(again)
    stall = median([r.stall for r in tui]) * 1000
    stall_worst = max(r.stall for r in tui) * 1000
    plain_stall = median([r.stall for r in textual]) * 1000
    plain_stall_worst = max(r.stall for r in textual) * 1000
    shown = results[TEXTUAL_LOG]
    log_stall = median([r.stall for r in shown]) * 1000
    log_stall_worst = max(r.stall for r in shown) * 1000
    key = median([r.key for r in tui]) * 1000
    key_worst = max(r.key for r in tui) * 1000
    plain_key = median([r.key for r in textual]) * 1000
    plain_key_worst = max(r.key for r in textual) * 1000
    idle_worst = max(r.idle_key for r in tui) * 1000
    plain_idle_worst = max(r.idle_key for r in textual) * 1000

    def met(ok: bool) -> str:
        return "**yes**" if ok else "**no**"

    rows = [
        "| measure | before | goal | now: median (worst run) | met |",
        "|---|---|---|---|---|",
        f"| {args.messages:,}-message flood, time until the last message is on screen, vs a "
        f"bare httpx-ws client | {BEFORE['flood']} | at most 1.3, worst run at most 1.5 | "
        f"**{flood:.2f}** (worst {flood_worst:.2f}); A/A (bare against bare) {noise:.2f} "
        f"(worst {noise_worst:.2f}) | {met(flood <= 1.3 and flood_worst <= 1.5)} |",
        f"| longest event-loop stall during the flood | {BEFORE['stall']} | at most 33 ms "
        f"worst: two frames at 60 Hz | **{stall:.0f} ms (worst {stall_worst:.0f} ms)**; the "
        f"bare Textual app taking the same flood the bare client's way: {plain_stall:.0f} ms "
        f"(worst {plain_stall_worst:.0f} ms); the same app showing it in Textual's own `Log`: "
        f"{log_stall:.0f} ms (worst {log_stall_worst:.0f} ms) | {met(stall_worst <= 33)} |",
        f"| a key typed mid-flood, until it shows | {BEFORE['key']} | worst at most 2x the "
        f"same key in a bare Textual app with one `Input` | **{key:.0f} ms (worst "
        f"{key_worst:.0f} ms)**; the bare Textual app, mid-flood: {plain_key:.0f} ms (worst "
        f"{plain_key_worst:.0f} ms): worst {key_worst / plain_key_worst:.2f}x. Idle: worst "
        f"{idle_worst:.0f} ms against {plain_idle_worst:.0f} ms | "
        f"{met(key_worst <= 2 * plain_key_worst)} |",
    ]
    if recovery is not None:
        rbare = statistics.median(r.seconds for r in recovery["bare"])
        rtui = [r.seconds / rbare for r in recovery["chat-tui"]]
        raa = [r.seconds / rbare for r in recovery["chat-tui A/A"]]
        rnoise = [r.seconds / rbare for r in recovery["bare A/A"]]
        rows.append(
            f"| reconnect after {args.missed:,} missed messages, to a gap-free screen, vs a "
            f"bare chat.v2 client (bench/recovery_bench.py) | {BEFORE['recovery']} | at most "
            f"1.5 | **{median(rtui):.2f}** (worst {max(rtui):.2f}); chat-tui A/A "
            f"{median(raa):.2f} (worst {max(raa):.2f}); bare A/A {median(rnoise):.2f} | "
            f"{met(median(rtui) <= 1.5)} |"
        )
    memory = data["memory"]
    if memory:
        after, before = memory["after"] / 2**20, memory["before"] / 2**20
        rows.append(
            f"| RSS with {args.memory_rooms} rooms x 10,000 messages | {BEFORE['memory']} | at "
            f"most 64 MiB | **{after:.0f} MiB** ({before:.0f} before the floods) | "
            f"{met(after <= 64)} |"
        )
    return (
        f"{args.repeats} repeats of the flood (each receiver in turn within a repeat)"
        + (f", {args.recovery_repeats} of the reconnect" if recovery is not None else "")
        + "; medians, the worst run in brackets. The bare Textual app is bench/input_app.py "
        "(one `Input`), in the same kind of tmux pane, typed into and read the same way, "
        "taking the same flood with the bare client's code in its event loop.\n\n" + "\n".join(rows)
    )


def write_issue_17(text: str) -> None:
    """Replace (or add, at the end) the section of issue 17's table, keeping whatever
    follows its table (the prose written by hand, from "### " on)."""
    path = ROOT / "docs" / "performance.md"
    old = path.read_text()
    body = (
        f"{ISSUE_17}\n\n"
        "Reproduce with `python bench/client_bench.py --write` (about five minutes; needs "
        'tmux), which writes this table, the "## Client" section and its "### Recovery".\n\n'
        f"{text}\n"
    )
    start = old.find(ISSUE_17)
    if start == -1:
        new = old.rstrip("\n") + "\n\n" + body
    else:
        end = old.find("\n## ", start + 1)
        section = old[start:] if end == -1 else old[start : end + 1]
        kept = section.find("\n### ")
        if kept != -1:
            body += section[kept:].rstrip("\n") + "\n"
        new = old[:start] + body + ("" if end == -1 else "\n" + old[end + 1 :])
    path.write_text(new)


def write_section(text: str, command: str) -> None:
    path = ROOT / "docs" / "performance.md"
    body = (
        "## Client\n\n"
        f"Reproduce with `{command}` (a few minutes; needs tmux; a 2-core machine shared with "
        "other work, so the numbers are noisy: the A/A row says how much; ratios are what "
        "matter).\n\n"
        "The server runs with `--rate-limit 0 --send-buffer 268435456` so that it neither drops "
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
        # Its own text has no subsections: those that follow (recovery, history) are kept.
        history = section.find("\n### ")
        if history != -1:
            body += section[history:].rstrip("\n") + "\n"
        new = old[:start] + body + ("" if end == -1 else "\n" + old[end + 1 :])
    path.write_text(new)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--send":
        url, rooms, count = sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])
        asyncio.run(send_flood(url, rooms, count))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-rooms", type=int, default=5, help="0 = skip the memory run")
    parser.add_argument("--write", action="store_true", help="update docs/performance.md")
    parser.add_argument(
        "--recovery-repeats",
        type=int,
        default=5,
        help="repeats of bench/recovery_bench.py's reconnect, for issue 17's table (0: none)",
    )
    parser.add_argument("--missed", type=int, default=1000, help="for the reconnect")
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="CHECKOUT",
        help="run this chat-tui, itself again (A/A) and CHECKOUT's chat_tui side by side "
        "(instead of the scrollback variant); prints the table, writes nothing",
    )
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help="these receivers only, separated by ';' (bare always runs: the ratios' base); "
        "prints, writes nothing",
    )
    args = parser.parse_args()
    if args.only and args.write:
        parser.error("--only prints its table; it does not --write")
    if args.compare and args.write:
        parser.error("--compare prints its table; it does not --write")
    if shutil.which("tmux") is None:
        parser.error("tmux is needed: the benchmark reads chat-tui's screen in a tmux pane")
    if args.repeats < 1 and args.write:
        parser.error("--write needs the flood (--repeats 1 or more)")
    data = asyncio.run(main_async(args))
    if args.repeats < 1:  # the memory run alone (while working on memory)
        print(f"memory: {data['memory']}")
        return 0
    text = report(args, data)
    print(text)
    recovery = None
    if args.recovery_repeats and not args.compare:
        import recovery_bench

        again = argparse.Namespace(missed=args.missed, repeats=args.recovery_repeats)
        recovery = recovery_bench.main_async_runs(again)
        recovery_text = recovery_bench.report(again, recovery)
        print("\n" + recovery_text)
    table = None if args.compare or args.only else issue_17(args, data, recovery)
    if table is not None:
        print("\n" + table)
    if args.write:
        write_section(text, "python bench/client_bench.py --write")
        if recovery is not None:
            recovery_bench.write_section(recovery_text)
        if table is not None:
            write_issue_17(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
