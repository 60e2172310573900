"""Fair shares per client address (issue 16): one address cannot take the server's connections,
handshakes or message rate from the others. Clients play distinct addresses by binding their
source to 127.x.y.z (every one reaches a server bound to 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import signal
import socket
from collections.abc import Awaitable, Callable

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chat_protocol.close import CloseCode
from chat_server.addresses import address_key, client_address, networks
from chat_server.transport import proxy_protocol
from chat_testing.clusters import FAST, FAST_NODE_TTL, running_cluster
from chat_testing.marks import requires_redis
from chat_testing.servers import RunningServer
from chat_testing.waits import wait_until
from tests.server.hostile import fresh_room, observed
from tests.server.wsclients import join

pytestmark = pytest.mark.fault


def from_address(host: str) -> dict[str, object]:
    """Connect from ``host``, reading ahead without bound (a held connection that reads
    nothing must still take its close at once)."""
    return {"local_addr": (host, 0), "max_queue": None}


async def kept_or_refused(
    ws: websockets.ClientConnection, held: list[websockets.ClientConnection]
) -> int | None:
    """The close code if ``ws`` is refused at once, else None (and it is kept in ``held``)."""
    try:
        await asyncio.wait_for(ws.recv(), 5)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    held.append(ws)
    return None


async def test_one_address_cannot_take_the_others_connections(
    server_factory: Callable[..., RunningServer],
) -> None:
    """The probe: 127.0.0.2 opens connections until refused; 127.0.0.3 then joins and chats,
    and the healthy pair in another room loses nothing."""
    server = server_factory(max_connections_per_address=20, max_handshakes_per_address=0)
    room = fresh_room("share")
    async with observed(server, fresh_room("share-pair")) as pair:
        held = []
        refused = None
        for _ in range(40):
            ws = await websockets.connect(server.chat_url(room), **from_address("127.0.0.2"))
            try:
                await asyncio.wait_for(ws.recv(), 5)  # its join notice: it is in
            except ConnectionClosed as closed:
                refused = closed.rcvd
                break
            held.append(ws)
        assert len(held) == 20
        assert refused is not None
        assert (refused.code, refused.reason) == (
            CloseCode.TRY_AGAIN_LATER,
            "too many connections from your address",
        )
        other = await join(server.chat_url(room), **from_address("127.0.0.3"))
        await other.ws.send("I still get in")
        assert await other.recv_until(lambda f: f.endswith(":: I still get in"))
        await other.close()
        for ws in held:
            await ws.close()
    pair.check()


def _upgrade(port: int, source: str) -> tuple[int, str | None]:
    """A raw WebSocket handshake from ``source``: the status and Retry-After."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=5, source_address=(source, 0)
    )
    connection.request(
        "GET",
        "/chat/handshakes",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    response = connection.getresponse()
    status, retry = response.status, response.getheader("Retry-After")
    connection.close()
    return status, retry


def test_new_handshakes_per_address_are_limited_before_any_websocket_work(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory(max_handshakes_per_address=10)
    statuses = [_upgrade(server.port, "127.0.0.4")[0] for _ in range(10)]
    assert statuses == [101] * 10
    status, retry = _upgrade(server.port, "127.0.0.4")
    assert status == 429 and retry is not None and int(retry) >= 1  # a minute's share spent
    assert _upgrade(server.port, "127.0.0.5")[0] == 101  # another address: its own share
    # A refusal is counted in /metrics, not logged: a line each would be the attacker's.
    wait_until(lambda: server.log().count("left room=handshakes") == 11, what="their leaves")
    lines = len(server.log().splitlines())
    assert {_upgrade(server.port, "127.0.0.4")[0] for _ in range(50)} == {429}
    assert len(server.log().splitlines()) == lines


async def test_an_address_shares_one_message_rate_over_its_connections(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory(max_messages_per_address=5)
    room = fresh_room("rate")
    senders = [await join(server.chat_url(room), **from_address("127.0.0.6")) for _ in range(4)]
    try:
        # 4 connections, 10 messages each at once: each is within its own 10/s, the address
        # is not within its 5/s (10 in a burst).
        await asyncio.gather(*(s.ws.send(f"m{i}") for s in senders for i in range(10)))
        frames = await senders[-1].recv_until(
            lambda f: f.startswith("error: you are sending too fast"), timeout=10
        )
        assert "limit 5 messages per second from your address" in frames[-1]
    finally:
        for sender in senders:
            await sender.close()


async def test_behind_a_trusted_proxy_the_forwarded_address_counts(
    server_factory: Callable[..., RunningServer],
) -> None:
    """Connections from the proxy (127.0.0.7) count against the address it forwards; its own
    address is nobody's share, and a forged header from elsewhere is not believed."""
    server = server_factory(max_connections_per_address=2, trusted_proxy=["127.0.0.7/32"])
    room = fresh_room("proxy")
    url = server.chat_url(room)

    async def via(forwarded: str, source: str = "127.0.0.7") -> int | None:
        """The close code if refused at once, else None (kept open in ``held``)."""
        ws = await websockets.connect(
            url, additional_headers={"X-Forwarded-For": forwarded}, **from_address(source)
        )
        return await kept_or_refused(ws, held)

    held: list[websockets.ClientConnection] = []
    try:
        assert [await via("203.0.113.9") for _ in range(2)] == [None, None]
        assert await via("203.0.113.9") == CloseCode.TRY_AGAIN_LATER  # that client's share
        assert await via("198.51.100.1, 203.0.113.10") is None  # the rightmost untrusted one
        # Not from the proxy: the header is the client's own word, and the peer counts.
        assert [await via("203.0.113.11", "127.0.0.8") for _ in range(2)] == [None, None]
        assert await via("192.0.2.1", "127.0.0.8") == CloseCode.TRY_AGAIN_LATER
    finally:
        for ws in held:
            await ws.close()


def test_idle_sockets_of_one_address_push_out_only_their_own(
    server_factory: Callable[..., RunningServer],
) -> None:
    """A client from 127.0.0.11 is slow to send its handshake; meanwhile 127.0.0.9 fills the
    pending table twice over with idle sockets. The idle ones are closed to make room (the
    oldest of the address with the most), and the slow client, the oldest of all, gets in."""
    server = server_factory(max_pending=20, handshake_timeout=30)
    slow = socket.create_connection(("127.0.0.1", server.port), source_address=("127.0.0.11", 0))
    idle = [
        socket.create_connection(("127.0.0.1", server.port), source_address=("127.0.0.9", 0))
        for _ in range(40)
    ]
    try:
        idle[0].settimeout(5)
        assert idle[0].recv(64).startswith(b"HTTP/1.1 503")
        slow.sendall(
            b"GET /chat/slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        slow.settimeout(5)
        assert slow.recv(64).startswith(b"HTTP/1.1 101")
    finally:
        for sock in (slow, *idle):
            with contextlib.suppress(OSError):
                sock.close()


@pytest.mark.parametrize(
    ("peer", "headers", "trusted", "counted"),
    [
        ("192.0.2.1", [], [], "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", [], [], "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", [], [], "192.0.2.7"),
        ("10.0.0.1", [(b"x-forwarded-for", b"198.51.100.3")], [], "10.0.0.1"),
        ("10.0.0.1", [(b"x-forwarded-for", b"198.51.100.3")], ["10.0.0.0/8"], "198.51.100.3"),
        (
            "10.0.0.1",
            [(b"x-forwarded-for", b"198.51.100.3, 10.0.0.2")],
            ["10.0.0.0/8"],
            "198.51.100.3",
        ),
        ("10.0.0.1", [(b"forwarded", b'for="[2001:db8::1]:443"')], ["10.0.0.0/8"], "2001:db8::/64"),
        ("10.0.0.1", [(b"x-forwarded-for", b"not-an-address")], ["10.0.0.0/8"], "10.0.0.1"),
    ],
)
def test_which_address_counts(
    peer: str, headers: list[tuple[bytes, bytes]], trusted: list[str], counted: str
) -> None:
    assert client_address(peer, headers, networks(trusted)) == counted
    assert address_key(counted.partition("/")[0]) in (counted, address_key(counted))


async def test_loopback_counts_like_any_address(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory(max_connections_per_address=1)
    first = await join(server.chat_url(fresh_room("loop")))
    try:
        with pytest.raises((ConnectionClosed, InvalidStatus, AssertionError)):
            second = await join(server.chat_url(fresh_room("loop")))
            await second.recv()
    finally:
        await first.close()


async def test_join_and_leave_churn_from_one_address_is_held_to_its_handshake_share(
    server_factory: Callable[..., RunningServer],
) -> None:
    """The probe's churn (joins and leaves as fast as one address can): each cycle is a new
    handshake, so the room hears at most the address's share of them, while another
    address's member there goes on chatting."""
    server = server_factory(max_handshakes_per_address=60)
    room = fresh_room("churn")
    watcher = await join(server.chat_url(room), **from_address("127.0.0.13"))
    refused = cycles = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2
    while loop.time() < deadline:
        try:
            ws = await websockets.connect(server.chat_url(room), **from_address("127.0.0.12"))
        except InvalidStatus as exc:
            assert exc.response.status_code == 429
            refused += 1
            continue
        await ws.recv()
        await ws.close()
        cycles += 1
    assert cycles <= 62 and refused > 0  # a minute's share (60), and what 2 s add to it
    await watcher.ws.send("still chatting")
    frames = await watcher.recv_until(lambda f: f.endswith(":: still chatting"), timeout=10)
    assert sum(f.endswith(" joined the chat") for f in frames) == cycles
    await watcher.close()


# --- the PROXY protocol -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "client", "length"),
    [
        (b"PROXY TCP4 198.51.100.7 10.0.0.1 40000 80\r\nGET /", ("198.51.100.7", 40000), 43),
        (b"PROXY TCP6 2001:db8::5 ::1 40000 80\r\n", ("2001:db8::5", 40000), 37),
        (b"PROXY UNKNOWN\r\n", None, 15),
        (
            proxy_protocol.V2_SIGNATURE + b"\x21\x11\x00\x0c"
            + bytes([203, 0, 113, 9, 10, 0, 0, 1]) + (41000).to_bytes(2, "big") + b"\x00\x50",
            ("203.0.113.9", 41000), 28,
        ),
        (proxy_protocol.V2_SIGNATURE + b"\x20\x00\x00\x00", None, 16),  # LOCAL: a health check
        (b"PROXY TCP4 198.51", None, None),  # not all there yet
        (proxy_protocol.V2_SIGNATURE[:7], None, None),
    ],
)  # fmt: skip
def test_proxy_protocol_headers_are_read(
    data: bytes, client: tuple[str, int] | None, length: int | None
) -> None:
    header = proxy_protocol.parse(data)
    if length is None:
        assert header is None
    else:
        assert header == proxy_protocol.Header(client, length)


@pytest.mark.parametrize(
    "data",
    [
        b"GET /chat/x HTTP/1.1\r\n",
        b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n",
        b"PROXY TCP4 2001:db8::5 10.0.0.1 1 2\r\n",
        b"PROXY " + b"x" * 120,
        proxy_protocol.V2_SIGNATURE + b"\x21\x11\xff\xff",
    ],
)
def test_what_is_no_proxy_protocol_header_is_refused(data: bytes) -> None:
    with pytest.raises(proxy_protocol.Invalid):
        proxy_protocol.parse(data)


async def test_behind_a_proxy_protocol_balancer_the_clients_address_counts(
    server_factory: Callable[..., RunningServer],
) -> None:
    """HAProxy's ``send-proxy-v2`` (and v1): the header's address takes the shares, and a
    connection from the trusted balancer without a header is refused."""
    server = server_factory(
        max_connections_per_address=2, trusted_proxy=["127.0.0.7/32"], proxy_protocol=True
    )
    url = server.chat_url(fresh_room("pp"))

    async def via(header: bytes, source: str = "127.0.0.7") -> int | None:
        sock = socket.create_connection(("127.0.0.1", server.port), source_address=(source, 0))
        sock.sendall(header)
        ws = await websockets.connect(url, sock=sock, max_queue=None)
        return await kept_or_refused(ws, held)

    def v1(host: str) -> bytes:
        return f"PROXY TCP4 {host} 127.0.0.1 40000 {server.port}\r\n".encode()

    def v2(host: str) -> bytes:
        body = bytes(map(int, host.split("."))) + bytes(4) + (41000).to_bytes(2, "big") * 2
        return proxy_protocol.V2_SIGNATURE + b"\x21\x11" + len(body).to_bytes(2, "big") + body

    held: list[websockets.ClientConnection] = []
    try:
        assert [await via(v1("203.0.113.9")), await via(v2("203.0.113.9"))] == [None, None]
        assert await via(v2("203.0.113.9")) == CloseCode.TRY_AGAIN_LATER  # that client's share
        assert await via(v1("203.0.113.10")) is None
        # From elsewhere no header is expected (and one would be a bad request).
        assert [await via(b"", "127.0.0.8") for _ in range(2)] == [None, None]
        with pytest.raises(InvalidStatus) as refused:
            await via(b"")  # the balancer itself must send one
        assert refused.value.response.status_code == 400
    finally:
        for ws in held:
            await ws.close()


@requires_redis
async def test_on_a_shared_broker_an_address_has_one_share_over_every_process() -> None:
    """Three processes, a share of 4: a client spreading its connections over them is still
    held to 4; a connection that ends, or a process that dies, gives its place back."""
    with running_cluster(3, env=FAST, max_connections_per_address=4) as cluster:
        room = fresh_room("cluster-share")
        urls = [node.chat_url(room) for node in cluster.nodes]
        held: list[websockets.ClientConnection] = []

        async def connect(node: int) -> int | None:
            ws = await websockets.connect(urls[node], **from_address("127.0.0.12"))
            return await kept_or_refused(ws, held)

        try:
            assert [await connect(n % 3) for n in range(4)] == [None] * 4
            assert [await connect(n) for n in range(3)] == [CloseCode.TRY_AGAIN_LATER] * 3
            await held.pop(0).close()  # on process 0: its place is free on every process
            await wait_for_place(lambda: connect(2))
            # Process 1 dies with one of them: once it is reaped, that place is free too.
            cluster.nodes[1].stop(signal.SIGKILL)
            await wait_for_place(lambda: connect(0), timeout=FAST_NODE_TTL * 4)
        finally:
            for ws in held:
                with contextlib.suppress(Exception):
                    await ws.close()


async def wait_for_place(connect: Callable[[], Awaitable[int | None]], timeout: float = 5) -> None:
    """Until ``connect`` is let in (each refused attempt is gone at once)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while await connect() is not None:
        assert asyncio.get_running_loop().time() < deadline, "no place came free"
        await asyncio.sleep(0.1)
