"""Typing (issue 15): a chat.v2 member's "is typing" reaches the room's other chat.v2 members,
never a text member, never history, and at most once every 3 s per connection; both brokers."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from collections.abc import Callable

import pytest

from chat_protocol.v1 import format_message
from chat_protocol.v2 import TYPING_EVERY, TYPING_FRAME, read_up_to
from chat_testing.servers import RunningServer
from tests.server.wsclients import join, join_v2

_rooms = itertools.count()


def fresh_room() -> str:
    return f"typing-{next(_rooms)}-{secrets.token_hex(2)}"


async def test_typing_reaches_the_other_chat_v2_members_only(shared_server: RunningServer) -> None:
    url = shared_server.chat_url(fresh_room())
    typist = await join_v2(url)
    watcher = await join_v2(url)
    text_member = await join(url)
    await typist.recv_until(lambda f: f.get("type") == "join" and f["name"] == text_member.name)
    await watcher.recv_until(lambda f: f.get("type") == "join" and f["name"] == text_member.name)
    try:
        await typist.ws.send(TYPING_FRAME)
        assert await watcher.recv() == {"type": "typing", "name": typist.name}
        # Then a message: the text member's next frame is it (no typing before it), and the
        # typist never hears its own typing.
        await typist.send("done typing", "n1")
        assert await text_member.recv() == format_message(typist.name, "done typing")
        own = await typist.recv_until(lambda f: f.get("type") == "message")
        assert [f["type"] for f in own] == ["ack", "message"]
        assert (await watcher.recv())["type"] == "message"
        # Never stored: a late joiner's history has the message only.
        late = await join_v2(url, "history=10")
        assert [f["type"] for f in await late.backlog()] == ["message"]
        await late.close()
    finally:
        for member in (typist, watcher, text_member):
            await member.close()


async def test_typing_more_often_than_every_3_s_is_refused_once(
    shared_server: RunningServer,
) -> None:
    url = shared_server.chat_url(fresh_room())
    typist = await join_v2(url)
    watcher = await join_v2(url)
    await typist.recv()  # the watcher's join
    try:
        started = asyncio.get_running_loop().time()
        for _ in range(20):
            await typist.ws.send(TYPING_FRAME)
        await typist.send("marker", "m1")
        answers = await typist.recv_until(lambda f: f.get("type") == "message")
        errors = [f for f in answers if f["type"] == "error"]
        assert len(errors) == 1 and errors[0]["text"].startswith("typing: at most once every 3 s")
        seen = await watcher.recv_until(lambda f: f.get("type") == "message")
        assert [f["type"] for f in seen] == ["typing", "message"]
        # Once the interval has passed, the next one goes out again.
        wait = TYPING_EVERY - (asyncio.get_running_loop().time() - started)
        await asyncio.sleep(max(0.0, wait) + 0.1)  # the interval is the behaviour under test
        await typist.ws.send(TYPING_FRAME)
        assert await watcher.recv() == {"type": "typing", "name": typist.name}
    finally:
        await typist.close()
        await watcher.close()


async def test_a_text_client_sending_typing_json_sends_text(shared_server: RunningServer) -> None:
    # The text protocol has no frame types: the JSON is a message like any other text.
    url = shared_server.chat_url(fresh_room())
    member = await join(url)
    try:
        await member.ws.send(TYPING_FRAME)
        assert await member.recv() == format_message(member.name, TYPING_FRAME)
        assert json.loads(TYPING_FRAME) == {"type": "typing"}
    finally:
        await member.close()


@pytest.mark.parametrize("frame", [TYPING_FRAME, read_up_to(0)], ids=["typing", "read"])
async def test_typing_and_reads_cost_no_message(
    server_factory: Callable[..., RunningServer], frame: str
) -> None:
    # With a burst of 2 messages, a typing or read frame in between leaves both for messages.
    server = server_factory(rate_limit=1, rate_burst=2)
    member = await join_v2(server.chat_url(fresh_room()))
    try:
        await member.ws.send(frame)
        await member.send("one", "n1")
        await member.send("two", "n2")
        frames = await member.recv_until(lambda f: f.get("text") == "two")
        assert [f["type"] for f in frames] == ["ack", "message", "ack", "message"]
    finally:
        await member.close()
