"""The client's HTTP against a hostile server, on loopback TCP servers written here: answers
that never end, arrive a byte at a time, or are compressed into bombs; a handshake that drips,
or chooses a subprotocol that was not offered (found by a hostile-server run: an endless
/health body took chat-tui to 5 GB, a member list gzipped twice to 4.2 GB and 20 s of frozen
screen, a dripped /rooms answer held one connection per reconnect for minutes).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from chat_tui import connection as connection_module
from chat_tui.bounded_http import get_bounded, get_status
from chat_tui.commands import fetch_members
from chat_tui.events import ConnectionState, StateChanged
from tests.tui.test_connection import running

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LIMIT = 64 * 1024


@contextlib.asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[str]:
    """``http://127.0.0.1:PORT`` of a server that runs ``handler`` for every connection."""

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Cancelled: the test is over and the server closing.
        with contextlib.suppress(
            ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError
        ):
            await handler(reader, writer)
        writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for client in list(getattr(server, "_clients", ())):  # hold no one (3.11 has no
            client.abort()  # close_clients())
        await server.wait_closed()


def answer_with(head: bytes, body: bytes = b"", *, forever: bytes = b"") -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head + body)
        await writer.drain()
        while forever:  # chunked, without end
            writer.write(b"%x\r\n%s\r\n" % (len(forever), forever))
            await writer.drain()

    return handler


async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}":
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.2)  # each read comes well within httpx's per-read timeout


async def test_an_endless_body_is_read_no_further_than_the_limit() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with (
        tcp_server(answer_with(head, forever=b" " * 65536)) as url,
        httpx.AsyncClient() as client,
    ):
        status, body = await get_bounded(client, url + "/health", limit=LIMIT, deadline=10)
        assert (status, body) == (200, None)
        # The probe of a lost server asks for the status only: it reads none of it.
        assert await get_status(client, url + "/health", deadline=10) == 200


async def test_a_compressed_bomb_is_inflated_no_further_than_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))  # 64 MiB in about 64 KB
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb)
    async with tcp_server(answer_with(head, bomb)) as url, httpx.AsyncClient() as client:
        tracemalloc.start()
        try:
            status, body = await get_bounded(client, url, limit=LIMIT, deadline=10)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert (status, body) == (200, None)
    assert peak < 2 * len(bomb) + 8 * LIMIT, peak  # what came, and the limit: not 64 MiB


async def test_a_gzip_within_the_limit_is_read_and_stacked_encodings_are_refused() -> None:
    said = b'{"members": ["alice"]}'
    packed = gzip.compress(said)
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed)
    twice = gzip.compress(packed)
    stacked = (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip, gzip\r\nContent-Length: %d\r\n\r\n"
        % len(twice)
    )
    async with (
        tcp_server(answer_with(head, packed)) as once_url,
        tcp_server(answer_with(stacked, twice)) as twice_url,
    ):
        async with httpx.AsyncClient() as client:
            assert await get_bounded(client, once_url, limit=LIMIT, deadline=10) == (200, said)
            with pytest.raises(httpx.DecodingError):
                await get_bounded(client, twice_url, limit=LIMIT, deadline=10)
        # What /who says of it: no list, and why.
        line, names, _ = await fetch_members(twice_url.replace("http", "ws"), "lobby")
        assert names is None and "no answer from" in line and "DecodingError" in line


async def test_an_answer_dripped_a_byte_at_a_time_meets_its_deadline() -> None:
    async with tcp_server(drip) as url, httpx.AsyncClient(timeout=5) as client:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(httpx.TimeoutException):
            await get_bounded(client, url, limit=LIMIT, deadline=1.0)
        with pytest.raises(httpx.TimeoutException):
            await get_status(client, url, deadline=1.0)
        assert loop.time() - began < 5  # two deadlines, not 40 bytes at 0.2 s each, twice


async def test_a_dripped_handshake_is_given_up_and_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection_module, "HANDSHAKE_TIMEOUT", 1.0)
    async with (
        tcp_server(drip) as url,
        running(url.replace("http", "ws"), "dripped") as (_, rec, _),
    ):
        offline = await rec.wait_for(
            lambda: [e for e in rec.of(StateChanged) if e.state is ConnectionState.OFFLINE],
            "the attempt given up",
        )
        assert offline[0].detail == "the server did not finish the handshake in 1 s"


def upgrade_choosing(subprotocol: str) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = (await reader.readuntil(b"\r\n\r\n")).decode()
        key = next(
            line.split(":", 1)[1].strip()
            for line in request.split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        magic = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        accept = base64.b64encode(hashlib.sha1((key + magic).encode()).digest()).decode()
        writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
                f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        await reader.read()  # until the client goes

    return handler


async def test_a_subprotocol_that_was_not_offered_fails_the_connection() -> None:
    """The client took a server that chose "evil.v9" for one of the text protocol, and showed
    its JSON as chat. RFC 6455: the client fails such a connection."""
    async with (
        tcp_server(upgrade_choosing("evil.v9")) as url,
        running(url.replace("http", "ws"), "chosen") as (_, rec, _),
    ):
        failed = await rec.wait_for(
            lambda: [e for e in rec.of(StateChanged) if e.state is ConnectionState.FAILED],
            "the connection failed",
        )
        assert failed[0].detail == "the server chose a subprotocol that was not offered ('evil.v9')"
        assert ConnectionState.CONNECTED not in rec.states()
