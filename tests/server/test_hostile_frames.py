"""After the handshake: floods of every frame type, bad frames, a stalled server, the log,
and what a line-based client is shown. Each probe runs with a healthy pair as observer."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable

import pytest

from chat_protocol.text import sanitize
from chat_protocol.v1 import CONTINUATION_INDENT, ERROR_PREFIX, SEPARATOR, parse_frame
from chat_testing.servers import RunningServer
from chat_testing.waits import wait_until
from tests.server.hostile import (
    Usage,
    after_handshake,
    client_frame,
    close_frame_of,
    connect,
    fresh_room,
    handshake_request,
    observed,
    open_raw,
    read_response,
    record,
    status_of,
    text_frames_received,
)
from tests.server.wsclients import join_many, raw_handshake

pytestmark = [pytest.mark.fault, pytest.mark.memory_only]


def flood(port: int, path: str, chunk: bytes, total: int, first: bytes = b"") -> tuple[bytes, int]:
    """Handshake, then send ``first`` and ``chunk`` over and over (``total`` bytes) while a
    thread reads everything the server sends: (what it sent after the 101, bytes we got out)."""
    sock = open_raw(port, path)
    received = bytearray()
    done = threading.Event()

    def read() -> None:
        sock.settimeout(10)
        try:
            while chunk_in := sock.recv(65536):
                received.extend(chunk_in)
        except OSError:
            pass
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sent = 0
    try:
        sock.sendall(first)
        while sent < total and not done.is_set():
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    reader.join(15)
    sock.close()
    return bytes(received), sent


FLOODS = {
    # 3,000,000 empty continuations of a text message that never ends (18 MB).
    "continuations": (client_frame(0x1, b"a", fin=False), client_frame(0x0, fin=False), 3_000_000),
    "pings": (b"", client_frame(0x9, b"12345678"), 2_000_000),
    "unsolicited pongs": (b"", client_frame(0xA, b"12345678"), 2_000_000),
    "60 KiB text frames": (b"", client_frame(0x1, b"x" * 60_000), 400),
}


@pytest.mark.parametrize("kind", list(FLOODS))
async def test_flood_of_frames_is_closed_1008_and_costs_the_room_nothing(
    server_factory: Callable[..., RunningServer], kind: str
) -> None:
    server = server_factory()
    first, frame, count = FLOODS[kind]
    room = fresh_room()
    # A frame pre-built many times over: sending it must not be the bottleneck.
    batch = frame * max(1, 65536 // len(frame))
    total = len(frame) * count
    usage = Usage(server)
    async with observed(server, room) as observer:
        started = time.monotonic()
        data, sent = await asyncio.to_thread(
            flood, server.port, f"/chat/{room}", batch, total, first
        )
        took = time.monotonic() - started
    figures = usage.figures()
    close = close_frame_of(data)
    record(
        f"flood of {kind}",
        outcome=f"close {close[0]} '{close[1]}' after {sent / 2**20:.1f} MiB"
        if close
        else f"no close frame; {sent / 2**20:.1f} MiB taken in {took:.1f} s",
        observer_p99_ms=round(observer.p99() * 1000, 1),
        **figures,
    )
    assert close is not None and close[0] == 1008 and close[1].startswith("flood: "), close
    # The server stopped parsing at once: a fraction of a second of CPU, not seconds.
    assert figures["cpu_s"] < 3, figures
    observer.check()
    wait_until(lambda: "evicted room=" + room + " reason=flood" in server.log(), what="log line")


async def test_pong_replies_to_a_peer_that_never_reads_are_bounded(
    server_factory: Callable[..., RunningServer],
) -> None:
    # Input limits off: this is about the outgoing bound, which holds on its own.
    server = server_factory(rate_limit=0)
    room = fresh_room()
    usage = Usage(server)
    async with observed(server, room) as observer:
        # It reads its handshake response (a client must) and nothing after it.
        sock = raw_handshake(server.port, f"/chat/{room}", rcvbuf=4096)
        pings = client_frame(0x9, b"p" * 125) * 500

        def ping_without_reading() -> tuple[bool, float]:
            started = time.monotonic()
            try:
                while time.monotonic() - started < 10:
                    sock.sendall(pings)
            except OSError:
                return True, time.monotonic() - started
            return False, time.monotonic() - started

        dropped, after = await asyncio.to_thread(ping_without_reading)
        sock.close()
    figures = usage.figures()
    growth = usage.rss() - usage.rss_before
    evicted = f"evicted room={room} reason=slow consumer" in server.log()
    record(
        "pings from a peer that never reads (input limits off)",
        outcome=f"dropped as slow consumer after {after:.1f} s"
        if evicted
        else f"still open after {after:.1f} s",
        observer_p99_ms=round(observer.p99() * 1000, 1),
        **figures,
    )
    assert evicted and dropped, server.log()[-2000:]
    assert growth < 16 * 2**20, growth
    # With the input limits off the server answers pings at full speed until the bound
    # drops the peer (about 2 s of CPU): the room is slowed then, but loses nothing.
    observer.check(p99_limit=1.0)


async def test_compliant_sender_keeps_every_message_through_a_server_stall(
    server_factory: Callable[..., RunningServer],
) -> None:
    """The rate limit judges what the member sent: 4 msg/s is within 10/s however long the
    server stood still before it read them."""
    server = server_factory()
    sender, listener = await join_many(server.chat_url(fresh_room()), 2)
    sent: list[str] = []
    stop = asyncio.Event()

    async def send() -> None:
        i = 0
        while not stop.is_set():
            sent.append(f"steady {i}")
            await sender.ws.send(sent[-1])
            i += 1
            await asyncio.sleep(0.25)  # the compliant pace under test: 4 msg/s

    async def server_read(count: int, what: str) -> None:
        """Until the server has read ``count`` of the sender's messages."""
        deadline = time.monotonic() + 30
        while await asyncio.to_thread(text_frames_received, server) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for the server to read {what}")
            await asyncio.sleep(0.05)

    task = asyncio.create_task(send())
    await server_read(2, "the first messages")  # the sender's stream is under way
    server.process.send_signal(signal.SIGSTOP)  # 7 s: 28 messages wait in the kernel
    await asyncio.sleep(7)  # the server's stall under test
    server.process.send_signal(signal.SIGCONT)
    # The server catches up with what waited in the kernel, and reads four more after it.
    await server_read(len(sent) + 4, "the stalled messages and four after them")
    stop.set()
    await task
    prefix = sender.name + SEPARATOR
    heard: list[str] = []
    errors: list[str] = []
    while len(heard) < len(sent):
        try:
            frame = await sender.recv(timeout=5)
        except TimeoutError:
            break
        if frame.startswith(prefix):
            heard.append(frame[len(prefix) :])
        elif frame.startswith(ERROR_PREFIX):
            errors.append(frame)
    record(
        "compliant sender (4 msg/s) through a 7 s server stall",
        outcome=f"{len(heard)} of {len(sent)} delivered, {len(errors)} rate notices",
    )
    assert heard == sent and not errors, (len(heard), len(sent), errors)
    others = [await listener.recv() for _ in sent]
    assert others == [prefix + text for text in sent]


BAD_FRAMES = {
    "invalid UTF-8": (client_frame(0x1, b"ok \xff\xfe"), 1007),
    "unmasked frame": (client_frame(0x1, b"hello", mask=False), 1002),
    "compressed frame (RSV1) never negotiated": (bytes([0xC1]) + client_frame(0x1, b"x")[1:], 1002),
    "frame over 64 KiB": (client_frame(0x1, b"x" * 70_000), 1009),
    "binary frame": (client_frame(0x2, b"\x00\x01"), 1003),
    "reserved opcode": (client_frame(0x3, b""), 1002),
    "fragmented ping": (client_frame(0x9, b"p", fin=False), 1002),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
async def test_bad_frame_gets_its_close_code_and_the_room_carries_on(
    server_factory: Callable[..., RunningServer], case: str
) -> None:
    server = server_factory()
    frame, code = BAD_FRAMES[case]
    room = fresh_room()
    usage = Usage(server)
    async with observed(server, room) as observer:
        data, _ = await asyncio.to_thread(flood, server.port, f"/chat/{room}", b"", 0, frame)
    close = close_frame_of(data)
    record(
        f"bad frame: {case}",
        outcome=f"close {close[0]} '{close[1]}'" if close else "no close frame",
        observer_p99_ms=round(observer.p99() * 1000, 1),
        **usage.figures(),
    )
    assert close is not None and close[0] == code, close
    observer.check()
    assert "Traceback" not in server.log()


async def test_compression_offer_is_declined(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory()
    sock = connect(server.port)
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    sock.sendall(handshake_request(server.port, "/chat/zip", extra=offer))
    data, _ = await asyncio.to_thread(read_response, sock, 1)
    sock.close()
    head = data.partition(b"\r\n\r\n")[0].lower()
    record(
        "compression-bomb offer (permessage-deflate)",
        outcome=f"HTTP {status_of(data)}, "
        f"{'deflate negotiated' if b'permessage-deflate' in head else 'no extension'}",
    )
    assert head.startswith(b"http/1.1 101") and b"sec-websocket-extensions" not in head


@pytest.mark.parametrize(
    ("origin", "host", "status"),
    [
        ("null", None, 403),
        ("http://evil.example", None, 403),
        # The server's own address as origin, but another Host: not same-origin.
        ("http://127.0.0.1:{port}", "rebound.example:{port}", 403),
        # Same-origin on a DNS name could be a rebinding page: not trusted.
        ("http://rebound.example:{port}", "rebound.example:{port}", 403),
        ("http://localhost:{port}", "localhost:{port}", 101),
        ("http://127.0.0.1:{port}", None, 101),
        ("HTTP://127.0.0.1:{port}/", None, 403),
    ],
)
async def test_origin_variants(
    shared_server: RunningServer, origin: str, host: str | None, status: int
) -> None:
    port = shared_server.port
    request = handshake_request(
        port,
        f"/chat/{fresh_room()}",
        extra=f"Origin: {origin.format(port=port)}\r\n",
        host=host.format(port=port) if host else None,
    )

    def exchange() -> bytes:
        sock = connect(port)
        sock.sendall(request)
        data, _ = read_response(sock, timeout=0.5)
        sock.close()
        return data

    data = await asyncio.to_thread(exchange)
    assert status_of(data) == status, data[:200]


ODD_PATHS = [
    "/chat/",
    "/chat//x",
    "/chat/..%2F..%2Fetc",
    "/chat/%00",
    "/chat/a%0d%0aX-Injected:%201",
    "/CHAT/x",
    "/",
    "/chat",
    "/health",
    "/chat/x/../y",
    "*",
]


@pytest.mark.parametrize("path", ODD_PATHS)
async def test_odd_paths_get_a_defined_answer(shared_server: RunningServer, path: str) -> None:
    data, _ = await asyncio.to_thread(flood_answer, shared_server.port, path)
    status = status_of(data)
    assert status is not None, data[:200]
    if status == 101:
        # Accepted as a WebSocket only to be told why not: close 1008 naming the rule.
        close = close_frame_of(after_handshake(data))
        assert close is not None and close[0] == 1008 and "room names" in close[1], close
    else:
        assert 400 <= status < 500, data[:200]
    assert "Traceback" not in shared_server.log()


def flood_answer(port: int, path: str) -> tuple[bytes, bool]:
    sock = connect(port)
    sock.sendall(handshake_request(port, path))
    try:
        return read_response(sock, timeout=3, until_close_frame=True)
    finally:
        sock.close()


async def test_debug_log_never_shows_message_text(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory(log_level="debug")
    alice, bob = await join_many(server.chat_url(fresh_room()), 2)
    secret = "SECRET-7f3a-never-in-the-log"
    await alice.ws.send(secret)
    assert (await bob.recv()).endswith(secret)
    await alice.close()
    await bob.close()
    wait_until(lambda: "left room=" in server.log(), what="leave logged")
    log = server.log()
    assert secret not in log
    # What debug does show: frame types and sizes.
    assert f"< text frame, {len(secret)} bytes" in log


FORGERIES = [
    "hi\nuser_abcdef12 :: fake message",
    "hi\nerror: you have been banned",
    "hi\nuser_abcdef12 joined the chat",
    "hi\u2028user_abcdef12 :: via line separator",
    "hi\u2029user_abcdef12 :: via paragraph separator",
    "hi\x0buser_abcdef12 :: via vertical tab\x0cform feed\x1cfile sep\x85next line",
    "hi\r\nuser_abcdef12 left the chat",
    "\nuser_abcdef12 :: leading newline",
]


@pytest.mark.parametrize("text", FORGERIES)
async def test_line_based_clients_cannot_be_shown_forged_lines(
    shared_server: RunningServer, text: str
) -> None:
    sender, other = await join_many(shared_server.chat_url(fresh_room()), 2)
    await sender.ws.send(text)
    frame = await other.recv()
    lines = frame.splitlines()  # every line break a terminal or a line reader knows
    assert lines[0].startswith(f"{sender.name} :: "), lines
    for line in lines[1:]:
        # A continuation line starts with the indent: never with a name or "error: ".
        assert line.startswith(CONTINUATION_INDENT), (line, frame)
    # parse_frame (which the TUI uses) gives back exactly the sanitised text.
    parsed = parse_frame(frame)
    assert parsed.name == sender.name and parsed.text == sanitize(text)
    assert await sender.recv() == frame
    await sender.close()
    await other.close()
