"""Tools of the fault suite: raw frames and requests, a healthy pair of members that watches the
room while a probe runs, and the server's memory and CPU around it.

Every probe records what it saw (outcome, RSS, CPU, observer latency) with :func:`record`;
``bench/faults.py`` collects those records into the fault table.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import resource
import socket
import statistics
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

from chat_protocol.v1 import SEPARATOR
from chat_testing.servers import RunningServer
from tests.server.wsclients import Member, join_many

REPORT_ENV = "CHAT_FAULT_REPORT"
# Observer latency p99 the tests hold the server to. The target is 100 ms, which
# bench/faults.py reports; the tests leave room for a machine shared with other test runs, and
# still catch the failures they guard against (0.6 s to 10 s).
OBSERVER_P99_LIMIT = 0.4
OBSERVER_INTERVAL = 0.125  # 8 messages per second, within the default rate limit


_rooms = itertools.count()


def fresh_room(prefix: str = "fault") -> str:
    """A room no other test uses."""
    return f"{prefix}-{next(_rooms)}"


def raise_open_files(wanted: int) -> None:
    """Let this test process hold ``wanted`` sockets (the soft limit, up to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def record(probe: str, **figures: Any) -> None:
    """Append one probe's figures to the report file, when bench/faults.py asked for one."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps({"probe": probe, **figures}) + "\n")


def text_frames_received(server: RunningServer) -> int:
    """Text frames the server has read from its clients so far (``GET /metrics``)."""
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=5) as response:
        families = text_string_to_metric_families(response.read().decode())
    return round(
        sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "chat_frames_received_total" and sample.labels.get("type") == "text"
        )
    )


# --- raw WebSocket pieces ----------------------------------------------------------------------


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True, mask: bool = True) -> bytes:
    """A client-to-server frame (RFC 6455 5.2), masked unless told otherwise."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask else 0
    if n < 126:
        header = bytes((first, mask_bit | n))
    elif n < 65536:
        header = bytes((first, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, mask_bit | 127)) + n.to_bytes(8, "big")
    if not mask:
        return header + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


def handshake_request(
    port: int, path: str, extra: str = "", key: str | None = None, host: str | None = None
) -> bytes:
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    host = host or f"127.0.0.1:{port}"
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def read_response(
    sock: socket.socket, timeout: float = 5.0, until_close_frame: bool = False
) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (or ``timeout``, or with
    ``until_close_frame`` its WebSocket close frame): (data, closed)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until_close_frame and b"\r\n\r\n" in data:
            rest = data.partition(b"\r\n\r\n")[2]
            if not data.startswith(b"HTTP/1.1 101") or close_frame_of(rest) is not None:
                return data, False
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def status_of(response: bytes) -> int | None:
    if not response.startswith(b"HTTP/1."):
        return None
    return int(response.split(b" ", 2)[1])


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Unmasked server-to-client frames in ``data`` (a trailing partial frame is dropped)."""
    frames = []
    at = 0
    while at + 2 <= len(data):
        opcode = data[at] & 0x0F
        length = data[at + 1] & 0x7F
        at += 2
        if length == 126:
            length = int.from_bytes(data[at : at + 2], "big")
            at += 2
        elif length == 127:
            length = int.from_bytes(data[at : at + 8], "big")
            at += 8
        if at + length > len(data):
            break
        frames.append((opcode, data[at : at + length]))
        at += length
    return frames


def close_frame_of(data: bytes) -> tuple[int, str] | None:
    """The close frame's code and reason among the server's frames, if it sent one."""
    for opcode, payload in server_frames(data):
        if opcode == 0x8 and len(payload) >= 2:
            return int.from_bytes(payload[:2], "big"), payload[2:].decode(errors="replace")
    return None


def open_raw(port: int, path: str, extra: str = "", timeout: float = 10.0) -> socket.socket:
    """A raw WebSocket, handshake done (as a client must, before it sends any frame)."""
    sock = connect(port, timeout=timeout)
    sock.sendall(handshake_request(port, path, extra))
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)  # byte by byte: every frame after the head stays unread
        assert byte, f"closed during the handshake: {head!r}"
        head += byte
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def after_handshake(data: bytes) -> bytes:
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 101"), data[:200]
    return rest


# --- the server's process ---------------------------------------------------------------------


@dataclass
class Usage:
    """The server's RSS and CPU time, sampled at the start of a probe and on demand."""

    server: RunningServer
    process: psutil.Process = field(init=False)
    rss_before: int = field(init=False)
    cpu_before: float = field(init=False)

    def __post_init__(self) -> None:
        self.process = psutil.Process(self.server.process.pid)
        self.rss_before = self.rss()
        self.cpu_before = self.cpu()

    def rss(self) -> int:
        return self.process.memory_info().rss

    def cpu(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def figures(self) -> dict[str, Any]:
        rss = self.rss()
        return {
            "rss_before_mb": round(self.rss_before / 2**20, 1),
            "rss_after_mb": round(rss / 2**20, 1),
            "cpu_s": round(self.cpu() - self.cpu_before, 2),
        }


# --- the healthy pair -------------------------------------------------------------------------


@dataclass
class Observer:
    """Two members of one room: one says something every OBSERVER_INTERVAL, both must hear
    all of it, in order, promptly."""

    sender: Member
    listener: Member
    latencies: list[float] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)
    echoed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        sent_at: dict[str, float] = {}

        async def send() -> None:
            i = 0
            while not stop.is_set():
                text = f"observer {i}"
                sent_at[text] = time.monotonic()
                self.sent.append(text)
                await self.sender.ws.send(text)
                i += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), OBSERVER_INTERVAL)

        async def listen(member: Member, into: list[str], timed: bool) -> None:
            prefix = self.sender.name + SEPARATOR
            quiet_since: float | None = None
            while not (stop.is_set() and len(into) >= len(self.sent)):
                try:
                    frame = await member.recv(timeout=0.25)
                except TimeoutError:
                    # Once stopped, what has not come in 10 s is lost (check says so).
                    if stop.is_set():
                        quiet_since = quiet_since or time.monotonic()
                        if time.monotonic() - quiet_since > 10:
                            return
                    continue
                quiet_since = None
                if not frame.startswith(prefix):
                    continue  # joins and leaves of others
                text = frame[len(prefix) :]
                if timed:
                    self.latencies.append(time.monotonic() - sent_at[text])
                into.append(text)

        await asyncio.gather(
            send(), listen(self.listener, self.heard, True), listen(self.sender, self.echoed, False)
        )

    def p99(self) -> float:
        if len(self.latencies) < 2:
            return max(self.latencies, default=0.0)
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[98]

    def check(self, p99_limit: float = OBSERVER_P99_LIMIT) -> None:
        """Everything arrived, in order, with p99 latency under the limit."""
        assert self.heard == self.sent, ("lost or reordered", len(self.sent), len(self.heard))
        assert self.echoed == self.sent, ("echo lost", len(self.sent), len(self.echoed))
        assert self.p99() < p99_limit, f"observer p99 {self.p99():.3f} s"


@contextlib.asynccontextmanager
async def observed(
    server: RunningServer, room: str, min_seconds: float = 1.0
) -> AsyncIterator[Observer]:
    """Run the healthy pair in ``room`` around the block (at least ``min_seconds``)."""
    sender, listener = await join_many(server.chat_url(room), 2)
    observer = Observer(sender, listener)
    stop = asyncio.Event()
    task = asyncio.create_task(observer.run(stop))
    started = time.monotonic()
    try:
        yield observer
        await asyncio.sleep(max(0.0, min_seconds - (time.monotonic() - started)))
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 30)
        finally:
            await sender.close()
            await listener.close()


async def in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)
