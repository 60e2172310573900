"""Protocol conformance against a real server, with third-party clients."""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import time

import psutil
import pytest
import websocket  # websocket-client, the original design's client library

from chat_protocol.frames import FrameKind
from chat_protocol.names import is_valid_name
from chat_protocol.v1 import parse_frame
from chat_testing.servers import RunningServer
from chat_testing.waits import wait_until
from tests.server.wsclients import (
    assert_one_order_under_concurrent_senders,
    join,
    join_many,
    raw_handshake,
)

_rooms = itertools.count()


def fresh_room(prefix: str = "room") -> str:
    return f"{prefix}-{next(_rooms)}"


async def test_first_frame_is_own_join_notice_and_others_see_it(
    shared_server: RunningServer,
) -> None:
    url = shared_server.chat_url(fresh_room())
    alice = await join(url)
    assert is_valid_name(alice.name)
    bob = await join(url)
    assert await alice.recv() == f"{bob.name} joined the chat"
    assert bob.name != alice.name
    await alice.close()
    await bob.close()


async def test_message_is_echoed_and_broadcast_to_everyone(shared_server: RunningServer) -> None:
    members = await join_many(shared_server.chat_url(fresh_room()), 3)
    await members[1].ws.send("hello, room")
    expected = f"{members[1].name} :: hello, room"
    for member in members:
        assert await member.recv() == expected
    for member in members:
        await member.close()


async def test_one_order_for_all_members_under_concurrent_senders(
    shared_server: RunningServer,
) -> None:
    members = await join_many(shared_server.chat_url(fresh_room()), 5)
    await assert_one_order_under_concurrent_senders(members, per_sender=60)
    for member in members:
        await member.close()


async def test_rooms_are_isolated(shared_server: RunningServer) -> None:
    a = await join(shared_server.chat_url(fresh_room("iso-a")))
    b = await join(shared_server.chat_url(fresh_room("iso-b")))
    await a.ws.send("only for room a")
    await b.ws.send("only for room b")
    assert await a.recv() == f"{a.name} :: only for room a"
    assert await b.recv() == f"{b.name} :: only for room b"
    with pytest.raises(TimeoutError):
        await a.recv(timeout=0.3)
    await a.close()
    await b.close()


async def test_leave_is_announced_on_close(shared_server: RunningServer) -> None:
    alice, bob = await join_many(shared_server.chat_url(fresh_room()), 2)
    await bob.close()
    assert await alice.recv() == f"{bob.name} left the chat"
    await alice.close()


async def test_leave_is_announced_when_tcp_drops_without_close_frame(
    shared_server: RunningServer,
) -> None:
    room = fresh_room()
    alice = await join(shared_server.chat_url(room))
    sock = raw_handshake(shared_server.port, f"/chat/{room}")
    joined = parse_frame(await alice.recv())
    assert joined.kind is FrameKind.JOIN
    # RST instead of a close frame: the peer vanishes.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    assert await alice.recv() == f"{joined.name} left the chat"
    await alice.close()


async def test_500_names_are_unique_and_well_formed(shared_server: RunningServer) -> None:
    url = shared_server.chat_url(fresh_room("names"))
    members = []
    for batch in range(10):
        members += await asyncio.gather(*(join(url, max_queue=None) for _ in range(50)))
        del batch
    names = [m.name for m in members]
    assert len(set(names)) == 500
    assert all(is_valid_name(n) for n in names)
    await asyncio.gather(*(m.close() for m in members))


@pytest.mark.parametrize(
    "text",
    [
        "Привет, мир",
        "日本語のテキスト",
        "emoji 🐍🎉 and combining é",
        "right-to-left שלום עליכם",
        "multi\nline\n  indented\ttab",
        "looks like markup [bold red]x[/] and :: separators :: inside",
    ],
)
async def test_text_arrives_intact(shared_server: RunningServer, text: str) -> None:
    member = await join(shared_server.chat_url(fresh_room()))
    await member.ws.send(text)
    frame = await member.recv_parsed()
    assert (frame.kind, frame.name, frame.text) == (FrameKind.MESSAGE, member.name, text)
    await member.close()


def test_original_client_library_websocket_client(shared_server: RunningServer) -> None:
    room = fresh_room("orig")
    first = websocket.create_connection(shared_server.chat_url(room), timeout=5)
    # Joined (its own notice read) before the second connects: the room's order is then
    # first, second, whatever the broker's timing.
    name = parse_frame(first.recv()).name
    second = websocket.create_connection(shared_server.chat_url(room), timeout=5)
    try:
        other = parse_frame(second.recv()).name
        assert first.recv() == f"{other} joined the chat"
        second.send("from the original client")
        assert first.recv() == f"{other} :: from the original client"
        assert second.recv() == f"{other} :: from the original client"
        assert name != other
    finally:
        second.close()
        assert first.recv() == f"{other} left the chat"
        first.close()


async def test_http_endpoints_list_rooms_and_members(shared_server: RunningServer) -> None:
    room_b, room_a = fresh_room("zz-http"), fresh_room("aa-http")
    b1 = await join(shared_server.chat_url(room_b))
    a1, a2 = await join_many(shared_server.chat_url(room_a), 2)

    health = shared_server.get_json("/health")
    assert health["status"] == "ok"
    assert health["connections"] >= 3 and health["rooms"] >= 2
    # Since the server process started: more than nothing, never more than its age.
    age = time.time() - psutil.Process(shared_server.process.pid).create_time()
    assert 0 < health["uptime_seconds"] <= age

    # The listing is computed at most once a second for everyone (another test on this shared
    # server may just have asked): it shows the new rooms within that second.
    def listed() -> bool:
        rooms = shared_server.get_json("/rooms")
        assert rooms == sorted(rooms, key=lambda r: r["room"])
        counts = {r["room"]: r["members"] for r in rooms}
        return counts.get(room_a) == 2 and counts.get(room_b) == 1

    wait_until(listed, timeout=3, interval=0.1, what="both rooms listed with their members")

    assert shared_server.get_json(f"/rooms/{room_a}") == {
        "room": room_a,
        "members": [a1.name, a2.name],
    }
    for member in (a1, a2, b1):
        await member.close()

    def room_gone() -> bool:
        return room_a not in {r["room"] for r in shared_server.get_json("/rooms")}

    wait_until(room_gone, what="empty room to disappear")
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as info:
        shared_server.get_json(f"/rooms/{room_a}")
    assert info.value.code == 404
