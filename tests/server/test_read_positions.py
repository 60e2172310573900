"""Where you stopped reading (issue 15): a chat.v2 token reports the offset it has read in a
room; its next welcome there carries it. Both brokers."""

from __future__ import annotations

import asyncio
import itertools
import secrets

from chat_protocol.query import JoinRequest, join_query
from chat_protocol.v2 import read_up_to
from chat_testing.servers import RunningServer
from tests.server.wsclients import V2Member, join_v2

_rooms = itertools.count()


def fresh_room() -> str:
    return f"read-{next(_rooms)}-{secrets.token_hex(2)}"


async def say(member: V2Member, *texts: str) -> int:
    """Send ``texts``; the offset of the last."""
    offset = 0
    for text in texts:
        nonce = secrets.token_hex(4)
        await member.send(text, nonce)
        frames = await member.recv_until(lambda f, n=nonce: f.get("nonce") == n)
        offset = frames[-1]["offset"]
    return offset


async def welcome_once_kept(url: str, token: str, wanted: int) -> dict:
    """Join again with ``token`` until the welcome carries ``wanted`` (keeping it is not
    awaited by the frame that reports it); the welcome."""
    query = join_query(JoinRequest(resume=token))
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        again = await join_v2(url, query)
        await again.close()
        if again.welcome.get("read") == wanted:
            return again.welcome
        assert asyncio.get_running_loop().time() < deadline, again.welcome
        await asyncio.sleep(0.05)


async def test_the_welcome_says_where_the_token_stopped_reading(
    shared_server: RunningServer,
) -> None:
    room = fresh_room()
    url = shared_server.chat_url(room)
    reader = await join_v2(url)
    assert "read" not in reader.welcome  # nothing kept: the welcome is as it always was
    last = await say(reader, "one", "two", "three")
    await reader.ws.send(read_up_to(last - 1))
    await reader.close()
    welcome = await welcome_once_kept(url, reader.token, last - 1)
    assert welcome["name"] == reader.name and welcome["offset"] == last
    # Another token, or another room, has nothing kept.
    other = await join_v2(url)
    elsewhere = await join_v2(shared_server.chat_url(fresh_room()), f"resume={reader.token}")
    try:
        assert "read" not in other.welcome and "read" not in elsewhere.welcome
    finally:
        await other.close()
        await elsewhere.close()


async def test_a_bad_or_too_frequent_read_gets_an_error(shared_server: RunningServer) -> None:
    member = await join_v2(shared_server.chat_url(fresh_room()))
    try:
        await member.ws.send('{"type":"read","offset":-1}')
        assert (await member.recv())["text"].startswith("a read needs an offset")
        await member.ws.send('{"type":"read"}')
        assert (await member.recv())["text"].startswith("a read needs an offset")
        for _ in range(5):
            await member.ws.send(read_up_to(0))
        await member.send("marker", "m1")
        frames = await member.recv_until(lambda f: f.get("type") == "message")
        errors = [f["text"] for f in frames if f["type"] == "error"]
        assert errors == ["read: at most twice a second; not kept"]
    finally:
        await member.close()


async def test_a_read_past_the_newest_message_is_kept_as_the_newest(
    shared_server: RunningServer,
) -> None:
    url = shared_server.chat_url(fresh_room())
    reader = await join_v2(url)
    last = await say(reader, "only")
    await reader.ws.send(read_up_to(1_000_000))
    await reader.close()
    assert (await welcome_once_kept(url, reader.token, last))["read"] == last
