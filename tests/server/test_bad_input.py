"""Every bad-input and abuse rule: the exact close code or notice, and the room unaffected."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chat_protocol.close import CloseCode
from chat_protocol.frames import FrameKind
from chat_protocol.v1 import parse_frame
from chat_testing.servers import RunningServer
from chat_testing.waits import wait_until
from tests.server.wsclients import Member, join, join_many, raw_handshake

_rooms = itertools.count()


def fresh_room(prefix: str = "bad") -> str:
    return f"{prefix}-{next(_rooms)}"


async def expect_close(member: Member, code: int) -> str:
    """Read until the server closes the connection; return the close reason."""
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(5):
            while True:
                await member.ws.recv()
    assert info.value.rcvd is not None, "closed without a close frame"
    assert info.value.rcvd.code == code, info.value.rcvd
    return info.value.rcvd.reason


async def assert_room_still_works(members: list[Member]) -> None:
    """Everyone left in the room can still talk and hears everyone."""
    await members[0].ws.send("still here?")
    for member in members:
        assert await member.recv() == f"{members[0].name} :: still here?"


@pytest.mark.parametrize(
    "path", ["bad%20room", "a/b", "", "x" * 65, "%C3%A9t%C3%A9", "semi;colon", "dot.dot"]
)
async def test_invalid_room_is_closed_1008_naming_the_rule(
    shared_server: RunningServer, path: str
) -> None:
    async with websockets.connect(shared_server.chat_url(path)) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == CloseCode.POLICY_VIOLATION
    assert "A-Z, a-z, 0-9, '_' and '-'" in info.value.rcvd.reason
    assert "1-64" in info.value.rcvd.reason
    rooms = {r["room"] for r in shared_server.get_json("/rooms")}
    assert path not in rooms and "a" not in rooms


async def test_binary_frame_closes_1003_and_room_carries_on(shared_server: RunningServer) -> None:
    alice, bob, mallory = await join_many(shared_server.chat_url(fresh_room()), 3)
    await mallory.ws.send(b"\x00\x01binary")
    reason = await expect_close(mallory, CloseCode.UNSUPPORTED_DATA)
    assert "binary" in reason
    for member in (alice, bob):
        assert await member.recv() == f"{mallory.name} left the chat"
    await assert_room_still_works([alice, bob])


async def test_frame_over_64_kib_closes_1009_and_room_carries_on(
    shared_server: RunningServer,
) -> None:
    alice, mallory = await join_many(shared_server.chat_url(fresh_room()), 2)
    await mallory.ws.send("x" * (64 * 1024 + 1))
    await expect_close(mallory, CloseCode.MESSAGE_TOO_BIG)
    assert await alice.recv() == f"{mallory.name} left the chat"
    await assert_room_still_works([alice])


async def test_frame_of_exactly_64_kib_is_not_a_protocol_error(
    shared_server: RunningServer,
) -> None:
    # 64 KiB is within the frame limit but over the message limit: an error notice, no close.
    member = await join(shared_server.chat_url(fresh_room()))
    await member.ws.send("y" * (64 * 1024))
    frame = await member.recv_parsed()
    assert frame.kind is FrameKind.ERROR
    await assert_room_still_works([member])


async def test_text_over_4096_chars_is_refused_with_error_and_sender_stays(
    shared_server: RunningServer,
) -> None:
    sender, other = await join_many(shared_server.chat_url(fresh_room()), 2)
    await sender.ws.send("é" * 4097)
    notice = await sender.recv()
    assert notice.startswith("error: ")
    assert "4097" in notice and "4096" in notice and " :: " not in notice
    # Exactly at the limit is fine.
    await sender.ws.send("é" * 4096)
    expected = f"{sender.name} :: {'é' * 4096}"
    assert await sender.recv() == expected
    # The other member never saw the oversized one: the next frame is the accepted one.
    assert await other.recv() == expected


async def test_control_and_bidi_characters_are_stripped(shared_server: RunningServer) -> None:
    sender, other = await join_many(shared_server.chat_url(fresh_room()), 2)
    await sender.ws.send("\x1b[2J\x07pay\u202eload\x00\u2066 ok\r\n\tnext\x85")
    # On the wire the line break is followed by the continuation indent (docs/protocol.md).
    clean = f"{sender.name} :: [2Jpayload ok\n  \tnext"
    assert await sender.recv() == clean
    assert await other.recv() == clean
    assert parse_frame(clean).text == "[2Jpayload ok\n\tnext"


@pytest.mark.parametrize("text", ["   ", "\n\t ", "\x1b\x07", "\u200e\u202e", ""])
async def test_empty_after_stripping_is_dropped(shared_server: RunningServer, text: str) -> None:
    sender, other = await join_many(shared_server.chat_url(fresh_room()), 2)
    await sender.ws.send(text)
    await sender.ws.send("sentinel")
    # The first frame either member receives is the sentinel: the empty one went nowhere.
    assert await other.recv() == f"{sender.name} :: sentinel"
    assert await sender.recv() == f"{sender.name} :: sentinel"


async def test_flood_is_limited_with_one_notice_per_second(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory(rate_limit=10, rate_burst=20)
    flooder, other = await join_many(server.chat_url("flood"), 2)
    started = time.monotonic()
    for i in range(100):
        await flooder.ws.send(f"m{i}")

    frames = []
    last_frame_at = started
    async with asyncio.timeout(10):
        while True:
            try:
                frames.append(await flooder.recv(timeout=0.5))
            except TimeoutError:
                break
            last_frame_at = time.monotonic()
    # Tokens can only have accrued while the server was still handling the flood, which ended
    # before the last frame reached us (the bucket starts full, capped at the burst).
    elapsed = last_frame_at - started
    delivered = [f for f in frames if " :: " in f]
    errors = [f for f in frames if f.startswith("error: ")]
    # The burst gets through, then about 10/s; nothing close to all 100.
    assert 20 <= len(delivered) <= 20 + int(10 * elapsed) + 1, (len(delivered), elapsed)
    assert delivered[:20] == [f"{flooder.name} :: m{i}" for i in range(20)]
    assert 1 <= len(errors) <= int(elapsed) + 1, (errors, elapsed)
    assert "too fast" in errors[0]
    # The other member saw exactly what was delivered, in the same order, and no errors.
    seen = [await other.recv() for _ in delivered]
    assert seen == delivered
    # After a pause the flooder can talk again.
    await asyncio.sleep(0.3)  # lets 3 tokens accrue: the rule under test is time-based
    await flooder.ws.send("calm again")
    assert await other.recv() == f"{flooder.name} :: calm again"


async def test_browser_origin_is_refused_403_unless_allowed(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory(allow_origin="https://chat.example.org")
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(server.chat_url("o"), origin="https://evil.example.com")
    assert info.value.response.status_code == 403
    # A page on a host name that resolves here (DNS rebinding) is not same-origin enough.
    with pytest.raises(InvalidStatus):
        await websockets.connect(
            server.chat_url("o"),
            origin=f"http://rebound.example:{server.port}",
            additional_headers={"Host": f"rebound.example:{server.port}"},
        )
    allowed = await join(server.chat_url("o"), origin="https://chat.example.org")
    no_origin = await join(server.chat_url("o"))
    # websocket-client's default: its own target as origin.
    same_origin = await join(server.chat_url("o"), origin=f"http://127.0.0.1:{server.port}")
    for member in (allowed, no_origin, same_origin):
        await member.close()


async def test_connection_limit_closes_1013(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(max_connections=3)
    members = await join_many(server.chat_url("full"), 3)
    async with websockets.connect(server.chat_url("full")) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == CloseCode.TRY_AGAIN_LATER
    assert "3" in info.value.rcvd.reason
    await assert_room_still_works(members)
    await members[2].close()
    assert await members[0].recv() == f"{members[2].name} left the chat"
    assert await members[1].recv() == f"{members[2].name} left the chat"
    # A freed slot can be taken again.
    late = await join(server.chat_url("full"))
    await late.close()


async def test_silent_peer_is_dropped_within_ping_interval_plus_timeout(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory(ping_interval=0.5, ping_timeout=0.5)
    alice = await join(server.chat_url("dead"))
    silent = raw_handshake(server.port, "/chat/dead")  # never answers pings
    joined = parse_frame(await alice.recv())
    started = time.monotonic()
    assert await alice.recv(timeout=5) == f"{joined.name} left the chat"
    # Within interval + timeout, plus scheduling slack on a busy machine.
    assert time.monotonic() - started < 0.5 + 0.5 + 1.5
    # Logged as the eviction it is, like a slow consumer's.
    assert "evicted room=dead reason=keepalive ping timeout" in server.log()
    silent.close()
    # alice answers pings (websockets does) and stays.
    await asyncio.sleep(1.5)  # three ping rounds: the rule under test is time-based
    await assert_room_still_works([alice])
    wait_until(lambda: server.get_json("/health")["connections"] == 1, what="one connection")
