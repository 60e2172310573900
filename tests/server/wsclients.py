"""Small client helpers over third-party WebSocket libraries and raw sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from chat_protocol.frames import Frame, FrameKind
from chat_protocol.query import JoinRequest, join_query
from chat_protocol.v1 import format_join, parse_frame
from chat_protocol.v2 import SUBPROTOCOL as SUBPROTOCOL_V2
from chat_protocol.v2 import send as v2_send


async def close_reading(ws: ClientConnection) -> None:
    """Close ``ws`` at once, whatever it has not read: the library stops reading the socket
    once 16 frames wait unread, so the server's close frame would never be seen and close()
    would wait its 10 s timeout. Reading (and dropping) what waits lets the close through."""

    async def drain() -> None:
        # A test's own reader may be in recv already: then it reads, and this need not.
        with contextlib.suppress(websockets.ConnectionClosed, websockets.ConcurrencyError):
            async for _ in ws:
                pass

    reader = asyncio.create_task(drain())
    await ws.close()
    await reader


@dataclass
class Member:
    ws: ClientConnection
    name: str

    async def recv(self, timeout: float = 5.0) -> str:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(frame, str)
        return frame

    async def recv_until(self, predicate: Callable[[str], bool], timeout: float = 5.0) -> list[str]:
        """Every frame up to and including the first one matching ``predicate``."""
        seen: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                seen.append(frame)
                if predicate(frame):
                    return seen

    async def recv_parsed(self, timeout: float = 5.0) -> Frame:
        return parse_frame(await self.recv(timeout))

    async def close(self) -> None:
        await close_reading(self.ws)


async def join(url: str, **kwargs: object) -> Member:
    """Connect and read the first frame, which must be our own join notice."""
    ws = await websockets.connect(url, **kwargs)  # type: ignore[arg-type]
    first = parse_frame(await asyncio.wait_for(ws.recv(), 5))
    assert first.kind is FrameKind.JOIN, first
    assert first.name is not None
    return Member(ws, first.name)


async def join_many(url: str, count: int, **kwargs: object) -> list[Member]:
    """Join one by one, so that each member has read the joins of those after it."""
    members: list[Member] = []
    for _ in range(count):
        member = await join(url, **kwargs)
        for earlier in members:
            assert await earlier.recv() == format_join(member.name)
        members.append(member)
    return members


async def assert_one_order_under_concurrent_senders(members: list[Member], per_sender: int) -> None:
    """Every member sends ``per_sender`` messages at once; all receive one order, in which
    each sender's own messages keep theirs."""

    async def send_all(index: int) -> None:
        for i in range(per_sender):
            await members[index].ws.send(f"{index}:{i}")

    await asyncio.gather(*(send_all(i) for i in range(len(members))))
    total = per_sender * len(members)
    sequences = [[await m.recv() for _ in range(total)] for m in members]
    assert all(seq == sequences[0] for seq in sequences)
    for index, member in enumerate(members):
        own = [f for f in sequences[0] if f.startswith(member.name + " :: ")]
        assert own == [f"{member.name} :: {index}:{i}" for i in range(per_sender)]


def raw_handshake(port: int, path: str, rcvbuf: int | None = None) -> socket.socket:
    """A WebSocket handshake by hand: a peer that does only what the test makes it do."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)  # byte by byte: leave every frame after the headers unread
        assert chunk, "server closed during handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def server_send_queue(server_port: int, peer: socket.socket) -> int | None:
    """Bytes the kernel still holds to send on the server's side of ``peer``'s connection
    (Linux's /proc/net/tcp), or None once the server's socket is gone."""
    peer_port = peer.getsockname()[1]
    with open("/proc/net/tcp") as table:
        next(table)  # the header
        for line in table:
            fields = line.split()
            local_port = int(fields[1].rpartition(":")[2], 16)
            remote_port = int(fields[2].rpartition(":")[2], 16)
            if local_port == server_port and remote_port == peer_port:
                return int(fields[4].partition(":")[0], 16)
    return None


# --- chat.v2 ------------------------------------------------------------------------------------


@dataclass
class V2Member:
    """A chat.v2 connection: its welcome, then JSON frames."""

    ws: ClientConnection
    welcome: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.welcome["name"])

    @property
    def token(self) -> str:
        return str(self.welcome["resume"])

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(frame, str)
        body = json.loads(frame)
        assert isinstance(body, dict)
        return body

    async def recv_many(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        return [await self.recv(timeout) for _ in range(count)]

    async def recv_until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                seen.append(frame)
                if predicate(frame):
                    return seen

    async def backlog(self) -> list[dict[str, Any]]:
        """The history or recovery the welcome announced."""
        return await self.recv_many(int(self.welcome["history"]))

    async def send(self, text: str, nonce: str | None = None) -> None:
        await self.ws.send(v2_send(text, nonce))

    async def close(self) -> None:
        await close_reading(self.ws)


async def join_v2(url: str, query: str = "", **kwargs: Any) -> V2Member:
    """Connect with chat.v2 (``query`` without its ``?``) and read the welcome."""
    target = f"{url}?{query}" if query else url
    ws = await websockets.connect(target, subprotocols=[SUBPROTOCOL_V2], **kwargs)
    assert ws.subprotocol == SUBPROTOCOL_V2
    first = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert first["type"] == "welcome", first
    return V2Member(ws, first)


def resume_query(member: V2Member, since: int | None = None, history: int = 0) -> str:
    """The query that takes ``member``'s name back (and recovers after ``since``)."""
    epoch = str(member.welcome["epoch"]) if since is not None else None
    return join_query(JoinRequest(history=history, since=since, epoch=epoch, resume=member.token))


async def acked(member: V2Member, nonce: str) -> int:
    """Read until the ack of ``nonce``; its offset."""
    frames = await member.recv_until(lambda f: f["type"] == "ack" and f["nonce"] == nonce)
    return int(frames[-1]["offset"])


async def one_chat(a: V2Member, b: V2Member, text: str) -> int:
    """A message of ``a`` reaches ``b`` (on another node, say); its offset."""
    nonce = "n-" + "".join(c if c.isalnum() else "-" for c in text)
    await a.send(text, nonce=nonce)
    offset = await acked(a, nonce)
    await b.recv_until(lambda f: f["type"] == "message" and f["text"] == text)
    return offset


async def recovered_or_told(rejoined: V2Member, seen: int, epoch: str) -> bool:
    """A failover's promise to a client back with ``since=seen`` of ``epoch``: every message
    after ``seen`` recovered exactly, or told that the room started over (a new epoch, and
    ``recovered: false``). Whether the epoch was kept."""
    backlog = await rejoined.backlog()
    if str(rejoined.welcome["epoch"]) != epoch:
        assert rejoined.welcome["recovered"] is False, rejoined.welcome
        return False
    assert rejoined.welcome["recovered"] is True, rejoined.welcome
    recovered = {f["offset"] for f in backlog if f["type"] == "message"}
    assert recovered == set(range(seen + 1, int(rejoined.welcome["offset"]) + 1)), backlog
    return True


async def read_until_closed(
    member: V2Member, seen: int, acks: dict[str, int], timeout: float
) -> tuple[Close, int]:
    """Read until the server closes (within ``timeout``): its close, and the newest offset
    seen, ``seen`` or later (each ack's offset noted in ``acks`` on the way)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                frame = await member.recv(timeout)
                if frame["type"] == "ack":
                    acks[frame["nonce"]] = frame["offset"]
                if "offset" in frame:
                    seen = max(seen, int(frame["offset"]))
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, exc
        return exc.rcvd, seen


def nothing_lost_silently(acked: dict[str, int], replicated: set[int], kept: bool) -> None:
    """A failover's promise to a sender: every message acknowledged to it (nonce -> offset)
    is on the replica that took over (``replicated``: the offsets it had), or the room's epoch
    changed (``kept`` false: its clients are told messages may be missing)."""
    missing = {n: o for n, o in acked.items() if o not in replicated}
    print(
        f"acknowledged before the close: {len(acked)}, of which on the replica: "
        f"{len(acked) - len(missing)}; epoch {'kept' if kept else 'changed'}"
    )
    assert not missing or not kept, missing
