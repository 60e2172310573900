"""Server benchmark: chat_server against a naive baseline, side by side, fresh processes per run.

Run from the repository root (bench extras: ``pip install -e '.[bench]'``)::

    python bench/server_bench.py              # full run, ~10 minutes on 2 cores
    python bench/server_bench.py --quick      # smoke run, ~2 minutes, 1 repeat (not run in CI)
    python bench/server_bench.py --scenarios stall-ref,stall --repeats 5 --json out.json
    python bench/server_bench.py --write      # also replace "## Server" in docs/performance.md

Servers (each run starts a fresh process, pinned to CPU 0):

* ``ours``      - ``python -m chat_server run --rate-limit 0`` (uvicorn + websockets-sansio
  subclass, bounded per-member buffers, one writer task per member).
* ``baseline``  - ``bench/baseline_server.py``: the original design, FastAPI + uvicorn defaults,
  a ChatRoom that awaits each member's ``send_text`` in turn.
* ``websockets`` - the plain ``websockets`` library with ``broadcast()`` (reference point).
* ``uv-wsproto``, ``uv-websockets``, ``uv-sansio`` - ``uvicorn chat_server:app --ws ...``: our
  app on each of uvicorn's WebSocket implementations, without our protocol subclass (fan-out
  scenario only), to justify the choice of implementation.

The load generator is a separate process (this file with ``--worker``) pinned to CPU 1, using
picows (a Cython WebSocket client) on uvloop; it reports its own CPU use so that one can see it
is not the bottleneck. All traffic goes to 127.0.0.1.

Scenarios:

* ``fanout`` - 1 room x 100 members, 4 senders, as fast as possible with a bounded window of
  messages in flight: delivered frames/s and server CPU per delivered frame.
* ``paced``  - the same room at 200 messages/s (timestamp in each message): p50/p99 latency,
  lost messages, server CPU per delivered frame.
* ``rooms``  - 50 rooms x 4 members, one sender per room, windowed: delivered frames/s.
* ``stall-ref`` / ``stall`` - the paced room with messages padded to 4 KiB, without and with one
  extra stalled member (raw TCP, small SO_RCVBUF, never reads): healthy members' latency,
  lost messages, whether and when the stalled member was evicted, server RSS over the run.
* ``idle``   - 2,000 idle connections (200 rooms x 10): server RSS per connection.

The report is a Markdown table of medians over the repeats, with ratios to the baseline.

On a Redis broker (``ours-redis``, ``main-redis``, ...) it also reports redis-server's CPU per
1,000 messages sent (user + system, from /proc) and, from ``INFO commandstats`` (reset at the
start of the measured window), the event script's calls per message and Redis's time in it
per call and per message (``usec``: wall time inside Redis, so a redis-server that shares a
busy core reads high; its CPU is the steadier number). redis-server gets a core of its own
where there is a third (``--redis-cpu`` to choose).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = 0
LOAD_CPU = 1
# redis-server gets a core of its own where there is a third; on two cores it is left to the
# scheduler (pinned to either, it would take that core from the server or the load generator)
# unless --redis-cpu says which.
REDIS_CPU: int | None = 2

# --- scenario parameters ------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "window", "paced" or "idle"
    rooms: int = 1
    members: int = 100
    senders: int = 4  # per room
    window: int = 0  # messages in flight per room (window mode)
    rate: float = 0.0  # messages/s per room (paced mode)
    pad: int = 0  # pad each message text to this many characters
    stalled: bool = False
    warmup: float = 1.0
    duration: float = 4.0
    servers: tuple[str, ...] = ("ours", "baseline", "websockets")


# A message text may be at most 4096 characters; padded so that the delivered frame
# ("user_abcdef12 :: " + text) is exactly 4 KiB.
PAD_4K = 4096 - len("user_abcdef12 :: ")

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "fanout",
            "window",
            window=128,
            servers=(
                "ours",
                "baseline",
                "websockets",
                "uv-sansio",
                "uv-websockets",
                "uv-wsproto",
            ),
        ),
        Scenario("paced", "paced", rate=200.0, warmup=0.0),
        Scenario("rooms", "window", rooms=50, members=4, senders=1, window=16),
        Scenario("stall-ref", "paced", rate=200.0, pad=PAD_4K, warmup=0.0, duration=9.0),
        Scenario("stall", "paced", rate=200.0, pad=PAD_4K, stalled=True, warmup=0.0, duration=9.0),
        Scenario("idle", "idle", rooms=200, members=10, senders=0, warmup=0.0, duration=1.0),
    )
}


def quick(s: Scenario) -> Scenario:
    if s.kind == "idle":
        return replace(s, rooms=50)
    if s.name.startswith("stall"):
        # Still long enough for the kernel buffers to fill and the eviction to happen.
        return replace(s, duration=7.0)
    return replace(s, duration=2.0, warmup=min(s.warmup, 0.5))


# --- load generator (runs in the worker process) -----------------------------------------------

JOINED = b" joined the chat"
LEFT = b" left the chat"
SEP = b" :: "


class Room:
    """One room's members as the load generator sees them, with its send window."""

    def __init__(self, index: int, gen: LoadGen) -> None:
        self.index = index
        self.gen = gen
        self.conns: list[Any] = []
        self.senders: list[Any] = []
        self.sent = 0
        self.delivered = 0
        self.join_notices = 0
        self.n = 0  # members, fixed once sending starts
        self.limit = 0  # window * n
        self.sending = False
        self.latencies: list[int] | None = None
        self.payload = b"hello from the benchmark, message of an ordinary length"

    def pump(self) -> None:
        """Window mode: keep ``window`` messages in flight (counted over all members)."""
        n = self.n
        limit = self.limit
        senders = self.senders
        text = self.gen.text_type
        while self.sending and self.sent * n - self.delivered < limit:
            senders[self.sent % len(senders)].transport.send(text, self.payload)
            self.sent += 1


class LoadGen:
    def __init__(self, params: dict[str, Any]) -> None:
        from picows import WSMsgType

        self.params = params
        self.text_type = WSMsgType.TEXT
        self.rooms: list[Room] = []
        self.latencies: list[int] = []
        self.leaves: list[tuple[bytes, float]] = []
        self.t_send0 = 0.0

    def on_notice(self, conn: Any, data: bytes) -> None:
        if data.endswith(JOINED):
            if conn.name is None:
                conn.name = data[: -len(JOINED)]
            conn.room.join_notices += 1
        elif data.endswith(LEFT):
            self.leaves.append((data[: -len(LEFT)], time.monotonic() - self.t_send0))


def make_listener_class() -> type:
    from picows import WSListener, WSMsgType

    text, close = WSMsgType.TEXT, WSMsgType.CLOSE

    class Conn(WSListener):  # type: ignore[misc]
        def __init__(self, gen: LoadGen, room: Room) -> None:
            super().__init__()
            self.gen = gen
            self.room = room
            self.transport: Any = None
            self.name: bytes | None = None
            self.received = 0
            self.close_code: int | None = None
            self.disconnected = False

        def on_ws_connected(self, transport: Any) -> None:
            self.transport = transport

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            # The hot path of the load generator: kept to a few operations per frame.
            if frame.msg_type == text:
                data = frame.get_payload_as_bytes()
                i = data.find(SEP)
                if i < 0:
                    self.gen.on_notice(self, data)
                    return
                self.received += 1
                room = self.room
                room.delivered += 1
                if room.latencies is not None:
                    fields = data[i + 4 : i + 64].split(b" ", 3)
                    room.latencies.append(time.monotonic_ns() - int(fields[2]))
                elif room.sending and room.sent * room.n - room.delivered < room.limit:
                    room.pump()
            elif frame.msg_type == close:
                self.close_code = int(frame.get_close_code())
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            self.disconnected = True

    return Conn


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.01)


class StalledMember:
    """A raw TCP WebSocket client with a tiny receive buffer that never reads after joining."""

    def __init__(self, port: int, room: str) -> None:
        self.port = port
        self.path = f"/chat/{room}"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.name = b""

    async def join(self) -> None:
        loop = asyncio.get_running_loop()
        sock = self.sock
        # Before connect, so that the advertised window stays small.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", self.port))
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        await loop.sock_sendall(sock, request)
        data = b""
        deadline = time.monotonic() + 10
        # Read the 101 response and then exactly the join notice (the first frame), no more.
        while b"\r\n\r\n" not in data:
            data += await asyncio.wait_for(loop.sock_recv(sock, 1), deadline - time.monotonic())
        if not data.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"stalled member handshake failed: {data[:80]!r}")
        header = await self._read_exactly(2, deadline)
        payload = await self._read_exactly(header[1] & 0x7F, deadline)
        self.name = payload[: -len(JOINED)]

    async def _read_exactly(self, n: int, deadline: float) -> bytes:
        loop = asyncio.get_running_loop()
        data = b""
        while len(data) < n:
            chunk = await asyncio.wait_for(
                loop.sock_recv(self.sock, n - len(data)), deadline - time.monotonic()
            )
            if not chunk:
                raise RuntimeError("stalled member: connection closed during handshake")
            data += chunk
        return data

    async def state(self, timeout: float = 2.0) -> str:
        """After the run: read what is pending to see whether and how the server let go."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        buffer = bytearray()
        frames = 0
        close: str | None = None
        outcome = "still open"
        try:
            while time.monotonic() < deadline and close is None:
                chunk = await asyncio.wait_for(
                    loop.sock_recv(self.sock, 1 << 16), deadline - time.monotonic()
                )
                if not chunk:
                    outcome = "closed"
                    break
                buffer += chunk
                # Frames from the server, unmasked; we are aligned after the join notice.
                while len(buffer) >= 2:
                    n, start = buffer[1] & 0x7F, 2
                    if n == 126:
                        n, start = int.from_bytes(buffer[2:4]), 4
                    elif n == 127:
                        n, start = int.from_bytes(buffer[2:10]), 10
                    if len(buffer) < start + n:
                        break
                    if buffer[0] & 0x0F == 0x8:
                        payload = bytes(buffer[start : start + n])
                        code = int.from_bytes(payload[:2])
                        close = f"close frame {code} {payload[2:].decode(errors='replace')!r}"
                    frames += 1
                    del buffer[: start + n]
        except (ConnectionResetError, BrokenPipeError):
            outcome = "reset"
        except TimeoutError:
            pass
        if close is not None:
            outcome = f"got {close}"
        return f"{outcome} after {frames} pending frames"


async def watch_stalled(gen: LoadGen, stalled: StalledMember, run_over: asyncio.Event) -> str:
    """Wake the stalled member once the others see it leave, and see how it was closed.

    A close frame queued behind megabytes that the peer never reads cannot arrive, so it only
    reads once evicted: then the 1008 frame can come through within the server's grace period.
    """
    while not run_over.is_set():
        if any(name == stalled.name for name, _ in gen.leaves):
            return "read on eviction: " + await stalled.state(timeout=4.0)
        await asyncio.sleep(0.01)
    return "read after the run: " + await stalled.state()


async def run_load(params: dict[str, Any]) -> dict[str, Any]:
    import psutil
    from picows import ws_connect

    s = Scenario(**{**params["scenario"], "servers": ()})
    ports = params["ports"]
    port = ports[0]
    servers = [psutil.Process(pid) for pid in params["server_pids"]]
    redis = [psutil.Process(pid) for pid in params.get("redis_pids", [])]
    gen = LoadGen(params)
    conn_class = make_listener_class()
    result: dict[str, Any] = {}

    connect_limit = asyncio.Semaphore(64)

    def rss() -> int:
        return sum(server.memory_info().rss for server in servers)

    async def connect(room: Room, index: int) -> Any:
        # With several server processes, a room's members are spread over them in turn.
        url = f"ws://127.0.0.1:{ports[index % len(ports)]}/chat/bench{room.index}"
        async with connect_limit:
            _, conn = await ws_connect(lambda: conn_class(gen, room), url)
        return conn

    gen.rooms = [Room(i, gen) for i in range(s.rooms)]
    rss_before = rss()
    t_connect = time.monotonic()
    if s.kind == "idle":
        conns = await asyncio.gather(*(connect(r, i) for r in gen.rooms for i in range(s.members)))
        for c in conns:
            c.room.conns.append(c)
    else:
        # One by one, so that each member's first frame is its own join notice.
        for room in gen.rooms:
            for i in range(s.members):
                room.conns.append(await connect(room, i))
    expected_joins = s.members * (s.members + 1) // 2
    await wait_for(
        lambda: all(r.join_notices >= expected_joins for r in gen.rooms),
        30,
        "every join notice",
    )
    result["connect_seconds"] = round(time.monotonic() - t_connect, 2)

    stalled: StalledMember | None = None
    if s.stalled:
        stalled = StalledMember(port, "bench0")
        await stalled.join()
        room0 = gen.rooms[0]
        await wait_for(
            lambda: room0.join_notices >= expected_joins + s.members, 10, "the stalled join"
        )

    for room in gen.rooms:
        room.senders = room.conns[: s.senders]

    rss_samples: list[int] = []
    sampling = True

    async def sample_rss() -> None:
        while sampling:
            with contextlib.suppress(psutil.Error):
                rss_samples.append(rss())
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample_rss())
    run_over = asyncio.Event()
    stalled_state: asyncio.Task[str] | None = None
    if stalled is not None:
        stalled_state = asyncio.create_task(watch_stalled(gen, stalled, run_over))

    def snapshot() -> Snapshot:
        cpu = sum(c.user + c.system for c in (server.cpu_times() for server in servers))
        redis_cpu = sum(t.user + t.system for t in (r.cpu_times() for r in redis))
        cores = psutil.cpu_times(percpu=True)
        return Snapshot(
            time.monotonic(),
            cpu,
            time.process_time(),
            sum(r.delivered for r in gen.rooms),
            sum(r.sent for r in gen.rooms),
            redis_cpu,
            # guest time is already in user; idle, iowait and steal are not this core's work.
            tuple(c.user + c.nice + c.system + c.irq + c.softirq for c in cores),
        )

    if s.kind == "idle":
        await asyncio.sleep(s.duration)  # let the server settle before reading its RSS
        rss_after = rss()
        n = s.rooms * s.members
        result["connections"] = n
        result["rss_before_mib"] = rss_before / 2**20
        result["rss_after_mib"] = rss_after / 2**20
        result["kib_per_conn"] = (rss_after - rss_before) / n / 1024
    elif s.kind == "window":
        for room in gen.rooms:
            room.n = len(room.conns)
            room.limit = s.window * room.n
            room.sending = True
            room.pump()
        await asyncio.sleep(s.warmup)
        reset_redis_stats(params.get("redis_ports", []))
        start = snapshot()
        await asyncio.sleep(s.duration)
        end = snapshot()
        redis_script_stats(result, params.get("redis_ports", []), end.sent - start.sent)
        for room in gen.rooms:
            room.sending = False
        _rates(result, start, end)
    else:
        for room in gen.rooms:
            room.latencies = gen.latencies
        gen.t_send0 = time.monotonic()
        reset_redis_stats(params.get("redis_ports", []))
        start = snapshot()
        max_lag = await pace(gen, s)
        sent = sum(r.sent for r in gen.rooms)
        healthy = [c for r in gen.rooms for c in r.conns]
        # Drain: until every healthy member has everything, or nothing moved for 2 s.
        last, last_change = -1, time.monotonic()
        drain_deadline = time.monotonic() + 6
        while time.monotonic() < drain_deadline:
            got = sum(r.delivered for r in gen.rooms)
            if got >= sum(r.sent * len(r.conns) for r in gen.rooms):
                break
            if got != last:
                last, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > 2.0:
                break
            await asyncio.sleep(0.02)
        end = snapshot()
        _rates(result, start, end)
        redis_script_stats(result, params.get("redis_ports", []), end.sent - start.sent)
        lat = sorted(gen.latencies)
        result["sent"] = sent
        result["pacing_max_lag_ms"] = round(max_lag * 1e3, 2)
        result["lost"] = sum(max(0, c.room.sent - c.received) for c in healthy)
        result["members_with_losses"] = sum(1 for c in healthy if c.received < c.room.sent)
        if lat:
            result["p50_ms"] = lat[len(lat) // 2] / 1e6
            result["p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e6
            result["max_ms"] = lat[-1] / 1e6
        names = {c.name for c in healthy}
        result["healthy_members_left"] = sum(1 for name, _ in gen.leaves if name in names)
        if stalled is not None:
            seen = [t for name, t in gen.leaves if name == stalled.name]
            result["stalled_evicted"] = bool(seen)
            result["stalled_leave_seen_by"] = len(seen)
            result["stalled_evicted_after_s"] = round(min(seen), 2) if seen else None
            run_over.set()
            if stalled_state is not None:
                result["stalled_socket"] = await stalled_state
    sampling = False
    await sampler
    if rss_samples:
        result["rss_start_mib"] = rss_samples[0] / 2**20
        result["rss_max_mib"] = max(rss_samples) / 2**20
        result["rss_end_mib"] = rss_samples[-1] / 2**20
    for room in gen.rooms:
        for c in room.conns:
            if c.transport is not None and not c.disconnected:
                c.transport.disconnect(graceful=False)
    if stalled is not None:
        stalled.sock.close()
    return result


def redis_command(port: int, *args: str) -> bytes:
    """One command to the run's redis-server; its reply's payload (a status or bulk string).
    Blocking: used only outside the measured window, or at its very edges."""
    packed = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%b\r\n" % (len(a.encode()), a.encode()) for a in args
    )
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.sendall(packed)
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n")
        if not head.startswith(b"$"):
            return head[1:]
        size = int(head[1:])
        while len(rest) < size:
            rest += sock.recv(65536)
        return rest[:size]


def reset_redis_stats(ports: list[int]) -> None:
    """Zero INFO commandstats: what it shows at the end is the measured window's."""
    for port in ports:
        redis_command(port, "CONFIG", "RESETSTAT")


def redis_script_stats(result: dict[str, Any], ports: list[int], sent: int) -> None:
    """The event script's share of Redis (every master's, in a cluster), from INFO
    commandstats: its calls per message sent, Redis's own time per call (usec_per_call) and
    per message. (The commands a script runs are counted inside its time, and again in their
    own lines: only EVALSHA is read.)"""
    if not ports or not sent:
        return
    calls = usec = 0
    for port in ports:
        info = redis_command(port, "INFO", "commandstats").decode()
        for line in info.splitlines():
            if line.startswith("cmdstat_evalsha:"):
                stats = dict(part.split("=") for part in line.partition(":")[2].split(","))
                calls, usec = calls + int(stats["calls"]), usec + int(stats["usec"])
    result["redis_evalsha_calls_per_message"] = calls / sent
    result["redis_evalsha_us_per_call"] = usec / calls if calls else None
    result["redis_evalsha_us_per_message"] = usec / sent


@dataclass(frozen=True)
class Snapshot:
    wall: float
    server_cpu: float
    load_cpu: float
    frames: int
    sent: int  # messages sent by the load generator
    redis_cpu: float
    core_busy: tuple[float, ...]  # busy seconds of every core, whoever ran there


def _rates(result: dict[str, Any], start: Snapshot, end: Snapshot) -> None:
    wall = end.wall - start.wall
    frames = end.frames - start.frames
    server_cpu = end.server_cpu - start.server_cpu
    load_cpu = end.load_cpu - start.load_cpu
    result["seconds"] = round(wall, 3)
    result["frames"] = frames
    result["frames_per_s"] = frames / wall
    result["server_cpu_pct"] = 100 * server_cpu / wall
    result["server_us_per_frame"] = 1e6 * server_cpu / frames if frames else None
    result["load_cpu_pct"] = 100 * load_cpu / wall
    sent = end.sent - start.sent
    redis_cpu = end.redis_cpu - start.redis_cpu
    if redis_cpu and sent:
        result["redis_cpu_pct"] = 100 * redis_cpu / wall
        result["redis_ms_per_1k_messages"] = 1e6 * redis_cpu / sent
    # The machine is shared: how much of each pinned core went to other processes meanwhile.
    busy = [e - s for s, e in zip(start.core_busy, end.core_busy, strict=True)]
    if len(busy) > max(SERVER_CPU, LOAD_CPU):
        other_server = busy[SERVER_CPU] - server_cpu
        other_load = busy[LOAD_CPU] - load_cpu
        result["other_cpu_on_server_core_pct"] = max(0.0, 100 * other_server / wall)
        result["other_cpu_on_load_core_pct"] = max(0.0, 100 * other_load / wall)


async def pace(gen: LoadGen, s: Scenario) -> float:
    """Send ``s.rate`` messages/s per room for ``s.duration`` s; returns the worst lateness."""
    text = gen.text_type
    interval = 1.0 / s.rate
    t0 = time.monotonic()
    k = 0
    total = int(s.rate * s.duration)
    max_lag = 0.0
    filler = b"x" * s.pad
    while k < total:
        now = time.monotonic()
        due = min(total, int((now - t0) * s.rate) + 1)
        if k < due:
            max_lag = max(max_lag, now - (t0 + k * interval))
        while k < due:
            for room in gen.rooms:
                head = b"m %d %d " % (k, time.monotonic_ns())
                body = head + filler[: max(0, s.pad - len(head))]
                room.senders[k % len(room.senders)].transport.send(text, body)
                room.sent += 1
            k += 1
        await asyncio.sleep(max(0.0, t0 + k * interval - time.monotonic()))
    return max_lag


def worker_main(raw: str) -> None:
    params = json.loads(raw)
    _raise_nofile()
    try:
        import uvloop

        result = uvloop.run(asyncio.wait_for(run_load(params), params["timeout"]))
    except ImportError:
        result = asyncio.run(asyncio.wait_for(run_load(params), params["timeout"]))
    json.dump(result, sys.stdout)


# --- orchestration -----------------------------------------------------------------------------


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# A checkout of another commit (``--main-checkout``) run as server ``main``: the same
# measurements of the code before a change, side by side in one script.
MAIN_CHECKOUT: Path | None = None
# Servers that need a redis-server, and how many chat-server processes each runs.
REDIS_SERVERS = {
    "ours-redis": 1,
    "ours-redis-aa": 1,
    "ours-redis-nohist": 1,
    "cluster2": 2,
    "main-redis": 1,
    "ours-rcluster": 1,
}
# Servers whose broker is a Redis Cluster of this many masters (no replicas) rather than one
# redis-server.
REDIS_CLUSTER_SERVERS = {"ours-rcluster": 3}
# A server name ending so runs that server with history off (--history-size 0): history's cost.
NO_HISTORY = "-nohist"


def server_command(
    server: str, port: int, broker_url: str | None = None
) -> tuple[list[str], dict[str, str], Path]:
    """(argv, environment, working directory) of one server process."""
    py = sys.executable
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_SERVER_")}
    if server.endswith(NO_HISTORY):
        args, env, cwd = server_command(server.removesuffix(NO_HISTORY), port, broker_url)
        return [*args, "--history-size", "0"], env, cwd
    # Same log level everywhere: per-connection info lines are not what is measured.
    common = ["--port", str(port), "--log-level", "warning"]
    ours = [py, "-m", "chat_server", "run", "--rate-limit", "0", *common]
    if server in {"ours", "ours-aa"}:  # ours-aa: the same code again, to know the noise
        return ours, env, ROOT
    if server in {"ours-memory", "ours-memory-aa"}:  # memory://, whatever the default is
        return [*ours, "--broker-url", "memory://"], env, ROOT
    if server == "ours-sqlite":  # the embedded broker, on a fresh database file
        database = Path(tempfile.mkdtemp(prefix="bench-sqlite-")) / "chat.db"
        return [*ours, "--broker-url", f"sqlite://{database}"], env, ROOT
    if server in REDIS_SERVERS and server != "main-redis":
        assert broker_url is not None
        return [*ours, "--broker-url", broker_url], env, ROOT
    if server in {"main", "main-redis"}:
        if MAIN_CHECKOUT is None:
            raise ValueError("server 'main' needs --main-checkout PATH")
        env["PYTHONPATH"] = str(MAIN_CHECKOUT)
        if server == "main-redis":
            assert broker_url is not None
            return [*ours, "--broker-url", broker_url], env, MAIN_CHECKOUT
        return ours, env, MAIN_CHECKOUT
    baseline = str(ROOT / "bench" / "baseline_server.py")
    if server == "baseline":
        return [py, baseline, *common], env, ROOT
    if server == "websockets":
        return [py, baseline, "--impl", "websockets", *common], env, ROOT
    impl = {
        "uv-sansio": "websockets-sansio",
        "uv-websockets": "websockets",
        "uv-wsproto": "wsproto",
    }
    if server in impl:
        env["CHAT_SERVER_RATE_LIMIT"] = "0"
        uv = [py, "-m", "uvicorn", "chat_server:app", "--ws", impl[server], *common]
        return uv, env, ROOT
    raise ValueError(f"unknown server {server!r}")


def _pin(cpu: int) -> Callable[[], None] | None:
    if len(os.sched_getaffinity(0)) < 2 or (os.cpu_count() or 1) < 2:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


@dataclass
class Running:
    ports: list[int]
    pids: list[int]
    logs: list[Path]
    redis_pids: list[int] = field(default_factory=list)
    redis_ports: list[int] = field(default_factory=list)


def _answers_http(port: int) -> bool:
    """/health answers 200 (a Redis node only once it reaches Redis); any server: it listens."""
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            status = sock.recv(64)
            return status.startswith(b"HTTP/1.") and status[9:12] != b"503"
    except OSError:
        return False


@contextlib.contextmanager
def _redis_server() -> Iterator[tuple[str, int]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_pin(REDIS_CPU)
        if REDIS_CPU is not None and REDIS_CPU in os.sched_getaffinity(0)
        else None,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), 0.5) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer within 10 s")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", [proc.pid], [port]
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def _redis_cluster(masters: int) -> Iterator[tuple[str, list[int], list[int]]]:
    """A Redis Cluster of ``masters`` masters, no replicas (chat_testing's, as the tests
    run it: made with ``redis-cli --cluster create``)."""
    from chat_testing.redis_clusters import start_cluster

    cluster = start_cluster(masters, 0)
    try:
        nodes = cluster.masters()
        yield cluster.url, [n.process.pid for n in nodes if n.process], [n.port for n in nodes]
    finally:
        cluster.stop()


@contextlib.contextmanager
def running_server(server: str) -> Iterator[Running]:
    with contextlib.ExitStack() as stack:
        broker_url, redis_pids, redis_ports = None, [], []
        if server in REDIS_CLUSTER_SERVERS:
            cluster = _redis_cluster(REDIS_CLUSTER_SERVERS[server])
            broker_url, redis_pids, redis_ports = stack.enter_context(cluster)
        elif server in REDIS_SERVERS:
            broker_url, redis_pids, redis_ports = stack.enter_context(_redis_server())
        running = Running([], [], [], redis_pids, redis_ports)
        procs = []
        for _ in range(REDIS_SERVERS.get(server, 1)):
            port = free_port()
            args, env, cwd = server_command(server, port, broker_url)
            log = Path(tempfile.mkstemp(prefix=f"bench-{server}-", suffix=".log")[1])
            with log.open("wb") as log_file:
                proc = subprocess.Popen(
                    args,
                    cwd=cwd,
                    env=env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_pin(SERVER_CPU),
                )
            stack.callback(_stop, proc)
            procs.append(proc)
            running.ports.append(port)
            running.pids.append(proc.pid)
            running.logs.append(log)
        deadline = time.monotonic() + 30
        for proc, port, log in zip(procs, running.ports, running.logs, strict=True):
            while not _answers_http(port):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{server} exited: {log.read_text(errors='replace')[-2000:]}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{server} did not answer within 30 s")
                time.sleep(0.05)
        yield running


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_once(server: str, scenario: Scenario) -> dict[str, Any]:
    timeout = scenario.warmup + scenario.duration + 60
    with running_server(server) as running:
        params = {
            "scenario": {k: v for k, v in scenario.__dict__.items() if k != "servers"},
            "ports": running.ports,
            "server_pids": running.pids,
            "redis_pids": running.redis_pids,
            "redis_ports": running.redis_ports,
            "timeout": timeout,
        }
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(params)],
            capture_output=True,
            text=True,
            timeout=timeout + 10,
            preexec_fn=_pin(LOAD_CPU),
        )
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed ({server}, {scenario.name}):\n{proc.stderr}")
        result: dict[str, Any] = json.loads(proc.stdout)
    server_log = "".join(log.read_text(errors="replace") for log in running.logs)
    for log in running.logs:
        log.unlink()
    result["server_log_evictions"] = server_log.count("reason=slow consumer")
    return result


@dataclass
class Results:
    runs: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, scenario: str, server: str, result: dict[str, Any]) -> None:
        self.runs.setdefault((scenario, server), []).append(result)

    def median(self, scenario: str, server: str, key: str) -> float | None:
        values = [r[key] for r in self.runs.get((scenario, server), []) if r.get(key) is not None]
        if not values or not all(isinstance(v, int | float) for v in values):
            return None
        return float(statistics.median(values))


# (metric key, column title, format, higher is better)
COLUMNS: dict[str, list[tuple[str, str, str, bool]]] = {
    "window": [
        ("frames_per_s", "delivered frames/s", "{:,.0f}", True),
        ("server_us_per_frame", "server CPU us/frame", "{:.1f}", False),
        ("server_cpu_pct", "server CPU %", "{:.0f}", True),
        ("load_cpu_pct", "load-gen CPU %", "{:.0f}", True),
        ("other_cpu_on_server_core_pct", "others on server core %", "{:.0f}", False),
        ("redis_ms_per_1k_messages", "redis-server CPU ms / 1k msgs", "{:.1f}", False),
        ("redis_evalsha_us_per_call", "evalsha usec/call", "{:.1f}", False),
        ("redis_evalsha_calls_per_message", "evalsha calls/msg", "{:.2f}", False),
        ("redis_evalsha_us_per_message", "evalsha usec/msg", "{:.1f}", False),
    ],
    "paced": [
        ("p50_ms", "p50 ms", "{:.2f}", False),
        ("p99_ms", "p99 ms", "{:.2f}", False),
        ("lost", "lost frames", "{:,.0f}", False),
        ("server_us_per_frame", "server CPU us/frame", "{:.1f}", False),
        ("rss_max_mib", "max RSS MiB", "{:.1f}", False),
        ("load_cpu_pct", "load-gen CPU %", "{:.0f}", True),
        ("other_cpu_on_server_core_pct", "others on server core %", "{:.0f}", False),
        ("redis_ms_per_1k_messages", "redis-server CPU ms / 1k msgs", "{:.1f}", False),
        ("redis_evalsha_us_per_call", "evalsha usec/call", "{:.1f}", False),
        ("redis_evalsha_us_per_message", "evalsha usec/msg", "{:.1f}", False),
    ],
    "idle": [
        ("kib_per_conn", "RSS KiB/connection", "{:.1f}", False),
        ("rss_after_mib", "RSS MiB with all connected", "{:.1f}", False),
    ],
}


# Columns that get a ratio to the baseline (not counts like lost frames, nor the load generator).
RATIO_KEYS = {
    "frames_per_s",
    "server_us_per_frame",
    "p50_ms",
    "p99_ms",
    "rss_max_mib",
    "kib_per_conn",
    "rss_after_mib",
}
# Above this the load generator may be what limits throughput: the number is a lower bound.
LOAD_SATURATED_PCT = 90.0


def report(
    results: Results,
    scenarios: list[Scenario],
    repeats: int,
    command: str,
    ratio_to: str = "baseline",
    only: set[str] | None = None,
) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        f"Medians of {repeats} run(s) each; ratio = x {ratio_to}.",
    ]
    for s in scenarios:
        columns = COLUMNS[s.kind]
        lines += ["", f"### {s.name}: {describe(s)}", ""]
        head = ["server"] + [f"{title}" for _, title, _, _ in columns]
        extra = s.name == "stall"
        if extra:
            head += ["stalled member", "evicted after s", "server log", "stalled socket"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for server in _servers(s, only):
            if (s.name, server) not in results.runs:
                continue
            cells = [server]
            for key, _, fmt, _ in columns:
                value = results.median(s.name, server, key)
                base = results.median(s.name, ratio_to, key)
                cell = "n/a" if value is None else fmt.format(value)
                if value is not None and base and server != ratio_to and key in RATIO_KEYS:
                    cell += f" ({value / base:.2f}x)"
                if key == "load_cpu_pct" and value is not None and value > LOAD_SATURATED_PCT:
                    cell += " (saturated: throughput is a lower bound)"
                cells.append(cell)
            if extra:
                runs = results.runs[(s.name, server)]
                evicted = sum(1 for r in runs if r.get("stalled_evicted"))
                cells.append(f"evicted in {evicted}/{len(runs)}")
                after = results.median(s.name, server, "stalled_evicted_after_s")
                cells.append("-" if after is None else f"{after:.1f}")
                logged = sum(r.get("server_log_evictions", 0) for r in runs)
                cells.append(f"{logged} 'slow consumer' evictions")
                cells.append("; ".join(sorted({str(r.get("stalled_socket")) for r in runs})))
            lines.append("| " + " | ".join(cells) + " |")
        if s.name == "stall":
            lines.append("")
            for server in _servers(s, only):
                p99 = results.median("stall", server, "p99_ms")
                ref = results.median("stall-ref", server, "p99_ms")
                if p99 is None or not ref:
                    continue
                pairs = zip(
                    results.runs.get(("stall-ref", server), []),
                    results.runs.get(("stall", server), []),
                    strict=False,
                )
                paired = [
                    b["p99_ms"] / a["p99_ms"]
                    for a, b in pairs
                    if a.get("p99_ms") and b.get("p99_ms") is not None
                ]
                lines.append(
                    f"- {server}: healthy members' p99 with a stalled member / without = "
                    f"{p99 / ref:.2f}x ({p99:.2f} ms vs {ref:.2f} ms); median of the "
                    f"back-to-back pairs {statistics.median(paired):.2f}x "
                    f"({', '.join(f'{r:.2f}' for r in paired)})"
                )
            lines.append(
                "- (the baseline's latencies cover only the frames it delivered before its "
                "room stopped)"
            )
    return "\n".join(lines)


def _servers(s: Scenario, only: set[str] | None) -> list[str]:
    """The scenario's servers, or those chosen with --servers, in that order."""
    if only is None:
        return list(s.servers)
    return [srv for srv in s.servers if srv in only] + sorted(only - set(s.servers))


def describe(s: Scenario) -> str:
    if s.kind == "idle":
        return f"{s.rooms * s.members:,} idle connections ({s.rooms} rooms x {s.members})"
    where = f"{s.rooms} room(s) x {s.members} members, {s.senders} sender(s) per room"
    size = f", messages padded to {s.pad + 17} B frames" if s.pad else ""
    stall = ", plus 1 stalled member" if s.stalled else ""
    if s.kind == "window":
        how = f"as fast as possible ({s.window} messages in flight per room)"
    else:
        how = f"paced at {s.rate:g} messages/s per room"
    return f"{where}, {how}, {s.duration:g} s{size}{stall}"


# What the progress lines on stderr show of each run.
SUMMARY_KEYS = {
    "frames_per_s",
    "p50_ms",
    "p99_ms",
    "lost",
    "server_us_per_frame",
    "load_cpu_pct",
    "server_cpu_pct",
    "other_cpu_on_server_core_pct",
    "other_cpu_on_load_core_pct",
    "kib_per_conn",
    "stalled_evicted",
    "rss_max_mib",
    "redis_ms_per_1k_messages",
    "redis_evalsha_us_per_call",
    "redis_evalsha_calls_per_message",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description="chat_server vs naive baseline", formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="short smoke run, 1 repeat")
    parser.add_argument("--repeats", type=int, help="runs per server and scenario (default 3)")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated subset of: " + ", ".join(SCENARIOS),
    )
    parser.add_argument(
        "--servers",
        help="comma-separated servers to run (default: each scenario's own); also: main "
        "(with --main-checkout), ours-aa (ours again, for A/A noise), ours-memory and "
        "ours-memory-aa (memory://), ours-sqlite (sqlite:// on a fresh file), ours-redis and "
        "ours-redis-aa (one process on a fresh redis-server), main-redis (--main-checkout's "
        "code on one), cluster2 (two processes on one redis-server, each "
        "room's members split between them); any of ours with -nohist appended (ours-nohist, "
        "ours-redis-nohist): the same with history off",
    )
    parser.add_argument(
        "--main-checkout",
        type=Path,
        help="a checkout of the code to compare with, run as server 'main' "
        "(e.g. git worktree add /tmp/base main)",
    )
    parser.add_argument(
        "--ratio-to",
        default="baseline",
        help="the server ratios are relative to (default baseline)",
    )
    parser.add_argument(
        "--window", type=int, help="messages in flight per room in fanout/rooms (override)"
    )
    parser.add_argument(
        "--redis-cpu",
        type=int,
        help="the core redis-server is pinned to (default 2 where there is one, else none; "
        f"{LOAD_CPU}: the load generator's, keeping it off the server's)",
    )
    parser.add_argument("--json", type=Path, help="also write every run's raw numbers here")
    parser.add_argument(
        "--write",
        action="store_true",
        help='replace the "## Server" section of docs/performance.md',
    )
    parser.add_argument(
        "--write-section",
        metavar="TITLE",
        help='replace (or add) the "### TITLE" part of "## Server" with this report',
    )
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker)
        return
    _raise_nofile()
    global MAIN_CHECKOUT, REDIS_CPU
    MAIN_CHECKOUT = args.main_checkout.resolve() if args.main_checkout else None
    if args.redis_cpu is not None:
        REDIS_CPU = args.redis_cpu
    repeats = args.repeats or (1 if args.quick else 3)
    chosen = [SCENARIOS[name] for name in args.scenarios.split(",") if name]
    if args.quick:
        chosen = [quick(s) for s in chosen]
    if args.window:
        chosen = [replace(s, window=args.window) if s.kind == "window" else s for s in chosen]
    only = set(args.servers.split(",")) if args.servers else None
    results = Results()
    t0 = time.monotonic()
    # stall-ref and stall run in pairs (same server, back to back): their p99s are compared.
    groups: list[list[Scenario]] = []
    for s in chosen:
        if s.name == "stall" and groups and groups[-1][0].name == "stall-ref":
            groups[-1].append(s)
        else:
            groups.append([s])
    for group in groups:
        servers = _servers(group[0], only)
        # Interleaved, so that slow phases of a noisy machine hit every server alike.
        for rep, server, s in (
            (rep, server, s) for rep in range(repeats) for server in servers for s in group
        ):
            result = run_once(server, s)
            results.add(s.name, server, result)
            summary = {
                k: round(v, 2) if isinstance(v, float) else v
                for k, v in result.items()
                if k in SUMMARY_KEYS
            }
            elapsed = time.monotonic() - t0
            print(f"[{elapsed:5.0f}s] {s.name} {server} #{rep + 1}: {summary}", file=sys.stderr)
    command = " ".join(["python bench/server_bench.py", *sys.argv[1:]])
    text = report(results, chosen, repeats, command, args.ratio_to, only)
    print(text)
    print(f"\n(total {time.monotonic() - t0:.0f} s)", file=sys.stderr)
    if args.json:
        raw = [
            {"scenario": sc, "server": srv, "runs": runs}
            for (sc, srv), runs in results.runs.items()
        ]
        args.json.write_text(json.dumps({"command": command, "results": raw}, indent=1))
    if args.write:
        write_section(text)
    if args.write_section:
        write_subsection(args.write_section, text)


DOC_INTRO = """\
## Server

`bench/server_bench.py` runs chat_server (`ours`) side by side with a baseline that broadcasts
the naive way (`bench/baseline_server.py`: the original design, FastAPI + uvicorn defaults, a
ChatRoom that awaits each member's `send_text` in turn) and, as a reference point, the plain
`websockets` library with `broadcast()`. Every run starts fresh server processes, pinned to CPU 0;
the load generator (picows on uvloop) is another process pinned to CPU 1. The scenarios and
columns are described in the script's docstring.

    pip install -e '.[bench]'
    python bench/server_bench.py            # about 7-10 minutes; --write updates this section
    python bench/server_bench.py --quick    # about 2 minutes, 1 repeat (CI does not run it)

Reading the numbers:

- The machine has 2 cores shared with other work. "others on server core %" is the CPU other
  processes took on the server's core during the run: when it is high, throughput and
  latency of that run are depressed (p99 latency follows it closely: about 1 ms on a quiet
  core, 4-8 ms when others take 20-80 % of it); CPU per delivered frame is the steadier number.
- "load-gen CPU %" is the load generator's own CPU. Marked *saturated* above 90 %: the load
  generator, not the server, then limits throughput, which is a lower bound for the server.
- `uv-sansio`, `uv-websockets`, `uv-wsproto` run `uvicorn chat_server:app --ws ...`: our app on
  each of uvicorn's WebSocket implementations, without chat_server's protocol subclass (so
  with the per-member writer tasks of the plain-ASGI fallback), to compare the implementations.
- `stall-ref` and `stall` run back to back per server; the stalled member is a raw TCP client
  with a 4 KiB SO_RCVBUF that stops reading after its join notice and reads again only once the
  others see it leave (so that the server's close frame can reach it).

Latest numbers:

"""


def write_subsection(title: str, text: str) -> None:
    """Replace (or add, at the end) "### {title}" up to the next "### " heading or the end."""
    path = ROOT / "docs" / "performance.md"
    old = path.read_text()
    heading = f"\n### {title}\n"
    body = heading + "\n" + text.replace("\n### ", "\n#### ") + "\n"
    start = old.find(heading)
    if start == -1:
        new = old.rstrip("\n") + "\n" + body
    else:
        end = old.find("\n### ", start + len(heading))
        new = old[:start] + body + ("" if end == -1 else old[end:])
    path.write_text(new)


def write_section(text: str) -> None:
    """Replace (or add) the "## Server" section; other sections are left as they are."""
    path = ROOT / "docs" / "performance.md"
    old = path.read_text() if path.exists() else "# Performance\n"
    body = DOC_INTRO + text + "\n"
    start = old.find("## Server")
    if start == -1:
        new = old.rstrip("\n") + "\n\n" + body
    else:
        end = old.find("\n## ", start + 1)
        new = old[:start] + body + ("" if end == -1 else "\n" + old[end + 1 :])
    path.write_text(new)


if __name__ == "__main__":
    main()
