"""Before a connection is a WebSocket: request heads, handshakes, deadlines, descriptors.

Each probe runs with a healthy pair of members as observer (``hostile.observed``) and records
its figures for bench/faults.py.
"""

from __future__ import annotations

import asyncio
import resource
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidHandshake

from chat_testing.servers import RunningServer
from chat_testing.waits import wait_until
from tests.server.hostile import (
    Usage,
    connect,
    fresh_room,
    handshake_request,
    observed,
    raise_open_files,
    read_response,
    record,
    status_of,
)
from tests.server.wsclients import join

pytestmark = [pytest.mark.fault, pytest.mark.memory_only]


def endless_head(port: int, path: str, upgrade: bool, limit: int) -> tuple[int, bytes]:
    """Send a header that never ends until the server stops taking it (or ``limit`` bytes):
    how much went out, and what came back."""
    sock = connect(port)
    start = handshake_request(port, path)[:-2] if upgrade else b"GET /health HTTP/1.1\r\n"
    sock.sendall(start + b"X-Endless: ")
    chunk = b"a" * 65536
    sent = 0
    try:
        while sent < limit:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass  # the server closed: what matters is how far it let us get
    response, _ = read_response(sock, timeout=3)
    sock.close()
    return sent, response


@pytest.mark.parametrize("upgrade", [False, True], ids=["health", "upgrade"])
async def test_endless_request_head_is_refused_431_with_memory_flat(
    server_factory: Callable[..., RunningServer], upgrade: bool
) -> None:
    server = server_factory()
    usage = Usage(server)
    async with observed(server, fresh_room()) as observer:
        sent, response = await asyncio.to_thread(
            endless_head, server.port, "/chat/x", upgrade, 64 * 2**20
        )
    figures = usage.figures()
    growth = usage.rss() - usage.rss_before
    record(
        f"endless request head ({'upgrade' if upgrade else '/health'})",
        outcome=f"HTTP {status_of(response)} after {sent / 2**20:.1f} MiB sent",
        observer_p99_ms=round(observer.p99() * 1000, 1),
        **figures,
    )
    assert status_of(response) == 431, response[:200]
    # It stopped reading within a read or two of the 16 KiB limit, nowhere near the 64 MiB.
    assert sent < 8 * 2**20, sent
    assert growth < 8 * 2**20, growth
    observer.check()


def too_many_headers(port: int, count: int) -> bytes:
    sock = connect(port)
    headers = "".join(f"X-H{i}: v\r\n" for i in range(count))
    sock.sendall(f"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode())
    response, closed = read_response(sock, timeout=3)
    sock.close()
    assert closed
    return response


async def test_header_count_is_bounded(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory()
    assert status_of(await asyncio.to_thread(too_many_headers, server.port, 98)) == 200
    response = await asyncio.to_thread(too_many_headers, server.port, 100)
    assert status_of(response) == 431 and b"more than 100 headers" in response


BAD_HANDSHAKES = {
    "no key": lambda port: handshake_request(port, "/chat/bad").replace(
        b"Sec-WebSocket-Key", b"X-Not-The-Key"
    ),
    "garbage key": lambda port: handshake_request(port, "/chat/bad", key="%%%not base64%%%"),
    "empty key": lambda port: handshake_request(port, "/chat/bad", key=""),
    "wrong version": lambda port: handshake_request(port, "/chat/bad").replace(
        b"Version: 13", b"Version: 8"
    ),
    "duplicate key": lambda port: handshake_request(
        port, "/chat/bad", extra="Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    ),
    "duplicate version": lambda port: handshake_request(
        port, "/chat/bad", extra="Sec-WebSocket-Version: 13\r\n"
    ),
    "duplicate origin": lambda port: handshake_request(
        port, "/chat/bad", extra="Origin: http://a.example\r\nOrigin: http://b.example\r\n"
    ),
}


def bad_handshakes(port: int, rounds: int) -> dict[str, set[int | None]]:
    statuses: dict[str, set[int | None]] = {name: set() for name in BAD_HANDSHAKES}
    for _ in range(rounds):
        for name, build in BAD_HANDSHAKES.items():
            sock = connect(port)
            sock.sendall(build(port))
            response, closed = read_response(sock, timeout=3)
            sock.close()
            statuses[name].add(status_of(response) if closed else -1)
    return statuses


async def test_rejected_handshakes_are_answered_and_leave_nothing_behind(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory()
    usage = Usage(server)
    # Warm up: the first few of anything allocate caches, which are not a leak.
    await asyncio.to_thread(bad_handshakes, server.port, 20)
    rss_warm = usage.rss()
    log_warm = len(server.log())
    async with observed(server, fresh_room()) as observer:
        statuses = await asyncio.to_thread(bad_handshakes, server.port, 300)
    growth = usage.rss() - rss_warm
    log_growth = len(server.log()) - log_warm
    figures = usage.figures()

    started = time.monotonic()
    server.stop(signal.SIGTERM)
    stop_seconds = time.monotonic() - started
    record(
        "rejected handshakes x2100",
        outcome=f"answered {sorted(map(str, set().union(*statuses.values())))}, "
        f"log +{log_growth} B, SIGTERM exit in {stop_seconds:.1f} s",
        observer_p99_ms=round(observer.p99() * 1000, 1),
        **figures,
    )
    # Every one is answered with a 4xx and closed by the server (-1: left open).
    for name, seen in statuses.items():
        assert seen and all(s is not None and 400 <= s < 500 for s in seen), (name, seen)
    assert growth < 4 * 2**20, growth
    assert "Traceback" not in server.log()
    assert log_growth < 10_000, log_growth
    # Nothing is left in uvicorn's connection set to wait for at shutdown.
    assert stop_seconds < 1.5, stop_seconds
    observer.check()


def test_an_origin_that_is_no_url_is_refused_without_a_traceback(
    server_factory: Callable[..., RunningServer],
) -> None:
    """``Host: [::1`` and ``Origin: http://[::1`` (an IPv6 literal never closed): parsing the
    origin raised, and each attempt was a 500 and a traceback (found by a hostile-client run).
    It is an origin that is not allowed: 403."""
    server = server_factory()
    for _ in range(3):
        sock = connect(server.port)
        sock.sendall(
            handshake_request(server.port, "/chat/o", host="[::1", extra="Origin: http://[::1\r\n")
        )
        response, closed = read_response(sock, timeout=3)
        sock.close()
        assert closed and status_of(response) == 403, response
    assert "Traceback" not in server.log()


MALFORMED_UPGRADES = {
    "129 headers": lambda port: handshake_request(
        port, "/chat/m", extra="".join(f"X-H{i}: v\r\n" for i in range(129))
    ),
    "header line over 8 KiB": lambda port: handshake_request(
        port, "/chat/m", extra=f"X-Long: {'v' * 9000}\r\n"
    ),
    "request line over 8 KiB": lambda port: handshake_request(port, "/chat/m?" + "q" * 9000),
    "upgrade with a body": lambda port: (
        handshake_request(port, "/chat/m", extra="Content-Length: 5\r\n") + b"hello"
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED_UPGRADES))
async def test_malformed_upgrade_is_answered_and_closed(
    server_factory: Callable[..., RunningServer], case: str
) -> None:
    server = server_factory()
    log_before = server.log()

    def probe() -> tuple[bytes, bool]:
        sock = connect(server.port)
        sock.sendall(MALFORMED_UPGRADES[case](server.port))
        try:
            return read_response(sock, timeout=3)
        finally:
            sock.close()

    response, closed = await asyncio.to_thread(probe)
    record(
        f"malformed upgrade: {case}",
        outcome=f"HTTP {status_of(response)}, {'closed' if closed else 'left open'}",
    )
    assert closed, "the server left the connection open"
    status = status_of(response)
    assert status is not None and 400 <= status < 500, response[:200]
    # Counted in /metrics, not logged: a line per request would be a flood of lines.
    assert server.log() == log_before


def hold(port: int, mode: str, stop: threading.Event) -> tuple[bytes, float | None]:
    """A connection that never finishes its request: (what the server said, when it closed)."""
    sock = connect(port, timeout=30)
    started = time.monotonic()
    sock.settimeout(0.5)
    request = handshake_request(port, "/chat/slow")
    data = b""
    at = 0
    if mode == "partial":
        sock.sendall(request[:40])
    while not stop.is_set() and time.monotonic() - started < 25:
        if mode == "slowloris" and at < len(request) - 2:
            try:
                sock.sendall(request[at : at + 1])
            except OSError:
                return data, time.monotonic() - started
            at += 1
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            sock.close()
            return data, time.monotonic() - started
        data += chunk
    sock.close()
    return data, None


async def test_connections_that_never_finish_a_request_are_closed_by_the_deadline(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory()  # the default deadline: 10 s from accept
    stop = threading.Event()
    modes = ["idle", "partial", "slowloris"]
    try:
        async with observed(server, fresh_room()) as observer:
            results = await asyncio.gather(
                *(asyncio.to_thread(hold, server.port, mode, stop) for mode in modes)
            )
    finally:
        stop.set()
    # A slowloris sending a byte every 0.5 s is not a request in progress forever.
    for mode, (data, closed_after) in zip(modes, results, strict=True):
        record(
            f"never-finished request: {mode}",
            outcome=f"HTTP {status_of(data)} after {closed_after:.1f} s"
            if closed_after is not None
            else "still open after 25 s",
        )
    for mode, (data, closed_after) in zip(modes, results, strict=True):
        assert closed_after is not None and 9 <= closed_after < 16, (mode, closed_after)
        assert status_of(data) == 408, (mode, data[:200])
    observer.check()


async def test_idle_sockets_past_the_fd_limit_do_not_lock_out_clients(
    server_factory: Callable[..., RunningServer],
) -> None:
    raise_open_files(4096)
    # The server starts with a soft limit of 1024 open files, as a default shell gives it.
    server = server_factory(open_files=1024)
    usage = Usage(server)
    idle = []
    for _ in range(1100):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        idle.append(sock)
    try:
        started = time.monotonic()
        try:
            member = await join(server.chat_url(fresh_room()), open_timeout=5)
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            member, joined = None, f"new client could not join ({type(exc).__name__})"
        else:
            joined = f"new client joined in {time.monotonic() - started:.2f} s"
        health = await asyncio.to_thread(server.health)
        record(
            "1,100 idle TCP sockets, fd soft limit 1024",
            outcome=f"{joined}, /health {'ok' if health else 'failed'}",
            **usage.figures(),
        )
        assert member is not None and health is not None
        assert time.monotonic() - started < 5
        await member.close()
    finally:
        for sock in idle:
            sock.close()
    assert "open files limit raised from 1024" in server.log()


async def test_pending_connections_beyond_the_cap_displace_the_oldest(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory(max_pending=20)
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(20)]
    try:
        # A real client still gets in: the oldest idle connection made room for it.
        member = await join(server.chat_url(fresh_room()), open_timeout=5)
        response, closed = await asyncio.to_thread(read_response, idle[0], 3)
        assert closed and status_of(response) == 503, response
        await member.close()
    finally:
        for sock in idle:
            sock.close()


async def test_fd_limit_below_max_connections_is_logged(
    server_factory: Callable[..., RunningServer],
) -> None:
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here: nothing to warn about")
    server = server_factory(open_files=256)
    # Whatever the hard limit is, --max-connections 10**9 needs more.
    server2 = server_factory(max_connections=10**9)
    assert "open files limit raised from 256" in server.log()
    wait_until(lambda: "below what --max-connections 1000000000 needs" in server2.log())


async def test_ordinary_clients_pass_the_guard(
    server_factory: Callable[..., RunningServer],
) -> None:
    """The guard must not get in the way of ordinary use: keep-alive HTTP and a chat."""
    server = server_factory()
    sock = connect(server.port)
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    sock.sendall(request + request)
    data, _ = await asyncio.to_thread(read_response, sock, 1)
    sock.close()
    assert data.count(b"HTTP/1.1 200") == 2, data
    async with websockets.connect(server.chat_url("ok")) as ws:
        first = await asyncio.wait_for(ws.recv(), 5)
        assert isinstance(first, str) and first.endswith(" joined the chat")
        await ws.send("hello")
        assert (await asyncio.wait_for(ws.recv(), 5)).endswith(" :: hello")


def test_a_request_whose_body_never_comes_is_answered_408_and_a_body_too_big_413_at_once(
    server_factory: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """An admin request that declares a body and never sends all of it was closed at the
    deadline with no answer at all; one that declares 100 MB was read up to the bound before
    the 413 (found by a hostile-client run)."""
    token = secrets.token_hex(16)
    tokens = tmp_path / "admin-tokens"
    tokens.write_text(f"ops {token}\n")
    server = server_factory(admin_token_file=tokens, handshake_timeout=2)

    def post(length: int, body: bytes, wait: float) -> bytes:
        """What the server sent within ``wait`` seconds (up to its close)."""
        sock = connect(server.port, timeout=10)
        sock.sendall(
            b"POST /admin/kick HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %b\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
            % (token.encode(), length, body)
        )
        data, _ = read_response(sock, timeout=wait)
        sock.close()
        return data

    assert status_of(post(99_999_999, b"{", wait=1.5)) == 413  # before the 2 s deadline
    assert status_of(post(100, b"{}", wait=10)) == 408  # at the deadline
    assert "Traceback" not in server.log()
