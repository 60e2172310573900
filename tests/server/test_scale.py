"""Thousands of connections, churn, a soak, and shutdown under load.

The soak lasts ``CHAT_SOAK_SECONDS`` (8 in CI; ``bench/faults.py --soak 600`` for the full
ten minutes) and prints a summary line per window (per minute when it runs that long). The
churn runs ``CHAT_CHURN_CYCLES`` connect/disconnect cycles (3,000 in CI, 20,000 in
``bench/faults.py``), the idle test ``CHAT_IDLE_CONNECTIONS`` (5,000 in CI, 10,000 there).
CI's figures are smaller to keep the whole suite under five minutes on a 2-core machine; the
fault table runs the full ones.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from chat_protocol.frames import FrameKind
from chat_protocol.v1 import SEPARATOR, parse_frame
from chat_testing.servers import RunningServer, start_server
from chat_testing.waits import wait_until
from tests.server.hostile import (
    OBSERVER_P99_LIMIT,
    Usage,
    client_frame,
    handshake_request,
    raise_open_files,
    record,
)
from tests.server.wsclients import Member, join

# One at a time, in one worker (pytest-xdist group): each keeps a core busy, and side by side
# they would measure each other (the soak's latency, the time to join ten thousand).
pytestmark = [
    pytest.mark.fault,
    pytest.mark.scale,
    pytest.mark.memory_only,
    pytest.mark.xdist_group("scale"),
]

# The suite's sizes (CI's five minutes); bench/faults.py runs the table's, larger ones.
SOAK_SECONDS = float(os.environ.get("CHAT_SOAK_SECONDS", "8"))
CHURN_CYCLES = int(os.environ.get("CHAT_CHURN_CYCLES", "3000"))
IDLE = int(os.environ.get("CHAT_IDLE_CONNECTIONS", "5000"))


# --- raw asyncio members: cheap enough for ten thousand ---------------------------------------


@dataclass
class RawMember:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    name: str


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return head[0] & 0x0F, await reader.readexactly(length)


async def raw_open(port: int, room: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    writer.write(handshake_request(port, f"/chat/{room}"))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def raw_join(port: int, room: str) -> RawMember:
    reader, writer = await raw_open(port, room)
    opcode, payload = await read_frame(reader)
    joined = parse_frame(payload.decode())
    assert opcode == 0x1 and joined.kind is FrameKind.JOIN, payload
    assert joined.name is not None
    return RawMember(reader, writer, joined.name)


async def close_frame(member: RawMember) -> tuple[int, str]:
    """Read (skipping room traffic) until the server's close frame."""
    while True:
        opcode, payload = await read_frame(member.reader)
        if opcode == 0x8:
            return int.from_bytes(payload[:2], "big"), payload[2:].decode()


async def leave_cleanly(member: RawMember) -> int:
    """Our close frame, the server's answer, then the server closes TCP: its close code."""
    member.writer.write(client_frame(0x8, (1000).to_bytes(2, "big")))
    code, _ = await asyncio.wait_for(close_frame(member), 30)
    await asyncio.wait_for(member.reader.read(), 30)  # EOF: the server closed the socket
    member.writer.close()
    return code


async def in_batches(coros: list, size: int) -> list:
    results = []
    for start in range(0, len(coros), size):
        results += await asyncio.gather(*coros[start : start + size])
    return results


async def test_idle_connections_up_to_the_bound_then_all_closed_cleanly(
    server_factory: Callable[..., RunningServer],
) -> None:
    raise_open_files(25_000)
    # No keepalive: these raw members never answer a ping, and joining thousands on a busy
    # machine can take longer than a ping's interval and timeout together.
    server = server_factory(max_connections=IDLE, ping_interval=0)
    usage = Usage(server)
    started = time.monotonic()
    members = await in_batches([raw_join(server.port, f"idle-{i % 200}") for i in range(IDLE)], 250)
    connect_seconds = time.monotonic() - started
    assert server.get_json("/health")["connections"] == IDLE
    per_connection = (usage.rss() - usage.rss_before) / IDLE
    # One more is told the server is full.
    reader, writer = await raw_open(server.port, "idle-extra")
    code, reason = await asyncio.wait_for(close_frame(RawMember(reader, writer, "")), 10)
    writer.close()
    assert code == 1013 and str(IDLE) in reason
    started = time.monotonic()
    codes = await in_batches([leave_cleanly(m) for m in members], 500)
    close_seconds = time.monotonic() - started
    wait_until(lambda: server.get_json("/health")["connections"] == 0, what="all gone")
    figures = usage.figures()
    record(
        f"{IDLE:,} idle connections",
        outcome=f"held ({per_connection / 1024:.1f} KiB each, joined in {connect_seconds:.0f} s), "
        f"one more closed 1013, all closed with 1000 in {close_seconds:.0f} s",
        **figures,
    )
    assert set(codes) == {1000}
    assert per_connection < 64 * 1024, per_connection


async def test_connect_disconnect_cycles_keep_memory_flat(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory()
    usage = Usage(server)

    async def cycles(worker: int, count: int) -> None:
        for i in range(count):
            member = await raw_join(server.port, f"churn-{(worker + i) % 10}")
            assert await leave_cleanly(member) == 1000

    workers = 20
    warm_up = CHURN_CYCLES // 10
    per_worker = (CHURN_CYCLES - warm_up) // workers
    await asyncio.gather(*(cycles(w, warm_up // workers) for w in range(workers)))
    warm = usage.rss()
    started = time.monotonic()
    await asyncio.gather(*(cycles(w, per_worker) for w in range(workers)))
    took = time.monotonic() - started
    wait_until(lambda: server.get_json("/health")["connections"] == 0, what="all gone")
    growth = usage.rss() - warm
    record(
        f"{CHURN_CYCLES:,} connect/disconnect cycles",
        outcome=(
            f"RSS {growth / 2**20:+.1f} MiB after warm-up "
            f"({per_worker * workers / took:.0f} cycles/s)"
        ),
        **usage.figures(),
    )
    assert growth < 6 * 2**20, growth


# --- the soak --------------------------------------------------------------------------------


@dataclass
class Window:
    sent: int = 0
    delivered: int = 0
    latencies: list[float] = field(default_factory=list)


async def test_soak_50_rooms_500_messages_per_second_with_churn(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory()
    usage = Usage(server)
    rooms = [f"soak-{i}" for i in range(50)]
    stable: dict[str, list[Member]] = {}
    for room in rooms:
        stable[room] = [await join(server.chat_url(room), max_queue=None) for _ in range(3)]
    window_seconds = 60.0 if SOAK_SECONDS >= 120 else SOAK_SECONDS / 4
    windows: list[Window] = []
    sent_at: dict[str, float] = {}
    expected: dict[str, list[str]] = {room: [] for room in rooms}
    received: dict[tuple[str, int], list[str]] = {}
    stop = asyncio.Event()
    churned = 0

    async def listen(room: str, index: int, member: Member) -> None:
        got = received.setdefault((room, index), [])
        prefix = stable[room][0].name + SEPARATOR
        while True:
            try:
                frame = await member.recv(timeout=1)
            except TimeoutError:
                if stop.is_set():
                    return
                continue
            if frame.startswith(prefix):
                text = frame[len(prefix) :]
                got.append(text)
                window = windows[-1]
                window.delivered += 1
                window.latencies.append(time.monotonic() - sent_at[text])

    async def send() -> None:
        i = 0
        interval = 1 / 500
        next_at = time.monotonic()
        while not stop.is_set():
            room = rooms[i % len(rooms)]
            text = f"{room} {i}"
            sent_at[text] = time.monotonic()
            expected[room].append(text)
            windows[-1].sent += 1
            await stable[room][0].ws.send(text)
            i += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def churn() -> None:
        # Members join and leave all the time: one more every 0.2 s, each stays about 2 s.
        nonlocal churned
        rng = random.Random(8)
        passers: list[tuple[float, Member]] = []
        while not stop.is_set():
            # Never reading is fine: an unbounded client queue keeps the socket drained.
            member = await join(server.chat_url(rng.choice(rooms)), max_queue=None)
            passers.append((time.monotonic() + 2, member))
            churned += 1
            while passers and passers[0][0] < time.monotonic():
                await passers.pop(0)[1].close()
            await asyncio.sleep(0.2)
        for _, member in passers:
            await member.close()

    summaries: list[str] = []
    rss_by_window: list[int] = []
    p99_by_window: list[float] = []
    windows.append(Window())
    tasks = [asyncio.create_task(send()), asyncio.create_task(churn())]
    tasks += [
        asyncio.create_task(listen(room, index, member))
        for room in rooms
        for index, member in enumerate(stable[room])
    ]
    cpu_at = usage.cpu()
    started = time.monotonic()
    for n in range(1, round(SOAK_SECONDS / window_seconds) + 1):
        await asyncio.sleep(max(0.0, started + n * window_seconds - time.monotonic()))
        done = windows[-1]
        windows.append(Window())
        cpu_now = usage.cpu()
        lat = sorted(done.latencies) or [0.0]
        p99 = statistics.quantiles(lat, n=100, method="inclusive")[98] if len(lat) > 1 else lat[0]
        rss = usage.rss()
        rss_by_window.append(rss)
        p99_by_window.append(p99)
        line = (
            f"{'minute' if window_seconds == 60 else 'window'} {n}: sent {done.sent}, "
            f"delivered {done.delivered}, p50 {statistics.median(lat) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms, RSS {rss / 2**20:.1f} MiB, "
            f"server CPU {(cpu_now - cpu_at) / window_seconds:.0%}, joins/leaves {churned}"
        )
        cpu_at = cpu_now
        summaries.append(line)
        print(line, file=sys.stderr)
    stop.set()
    await asyncio.gather(*tasks)
    lost = sum(len(expected[room]) - len(received[(room, i)]) for room in rooms for i in range(3))
    record("soak", outcome=f"{SOAK_SECONDS:.0f} s, {lost} lost", lines=summaries)
    for room in rooms:
        for i in range(3):
            assert received[(room, i)] == expected[room], (room, i)
    # Memory flat after the first window; latency stable throughout.
    assert rss_by_window[-1] - rss_by_window[0] < 8 * 2**20, rss_by_window
    assert max(p99_by_window) < OBSERVER_P99_LIMIT, p99_by_window
    for members in stable.values():
        for member in members:
            await member.close()


# --- shutdown under load ---------------------------------------------------------------------


async def test_sigterm_with_1000_clients_closes_every_one_and_exits_0(
    server_factory: Callable[..., RunningServer],
) -> None:
    raise_open_files(25_000)
    server = server_factory()
    members = await in_batches([raw_join(server.port, f"term-{i % 20}") for i in range(1000)], 250)
    sent = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    codes = await asyncio.wait_for(asyncio.gather(*(close_frame(m) for m in members)), 10)
    closed_after = time.monotonic() - sent
    while server.process.poll() is None and time.monotonic() - sent < 10:
        await asyncio.sleep(0.02)
    exited_after = time.monotonic() - sent
    record(
        "SIGTERM with 1,000 clients",
        outcome=f"{sum(c in (1001, 1012) for c, _ in codes)} close frames in "
        f"{closed_after:.2f} s, exit {server.process.returncode} in {exited_after:.2f} s",
    )
    assert all(code in (1001, 1012) for code, _ in codes)
    assert server.process.returncode == 0
    assert exited_after < 5, exited_after
    for member in members:
        member.writer.close()


async def test_sigkill_then_restart_rebinds_at_once_and_clients_rejoin(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory()
    # Unbounded client queues: members that do not read must not hold up their own close.
    members = [await join(server.chat_url("phoenix"), max_queue=None) for _ in range(50)]
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(5)
    for member in members:
        member.ws.transport.abort()  # their server is gone
    started = time.monotonic()
    again = start_server(port=server.port)
    try:
        restart_seconds = time.monotonic() - started
        rejoined = [await join(again.chat_url("phoenix"), max_queue=None) for _ in members]
        assert again.get_json("/health")["connections"] == len(members)
        record(
            "SIGKILL then restart on the same port",
            outcome=f"rebound and answering in {restart_seconds:.1f} s, 50 clients rejoined",
        )
        assert restart_seconds < 10
        for member in rejoined:
            await member.close()
    finally:
        again.stop()
