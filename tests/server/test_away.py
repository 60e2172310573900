"""Away (issue 15): a chat.v2 member's away and back reach every room its token is in, on every
process, for chat.v2 members (itself too), never text members; GET /rooms/{room} lists who is
away. Both brokers."""

from __future__ import annotations

import asyncio
import itertools
import secrets

import pytest

from chat_protocol.query import JoinRequest, join_query
from chat_protocol.v1 import format_message
from chat_protocol.v2 import AWAY_EVERY, BACK_FRAME, MAX_AWAY_CHARS, away, change_nick
from chat_testing.clusters import running_cluster
from chat_testing.marks import requires_redis
from chat_testing.servers import RunningServer
from chat_testing.waits import eventually
from tests.server.wsclients import V2Member, join, join_v2

_rooms = itertools.count()


def fresh_room() -> str:
    return f"away-{next(_rooms)}-{secrets.token_hex(2)}"


def kinds(frames: list[dict]) -> list[str]:
    return [f["type"] for f in frames]


async def until_type(member: V2Member, kind: str) -> dict:
    return (await member.recv_until(lambda f: f.get("type") == kind))[-1]


async def test_away_and_back_reach_every_room_of_the_token(shared_server: RunningServer) -> None:
    one, two = fresh_room(), fresh_room()
    me = await join_v2(shared_server.chat_url(one))
    me_too = await join_v2(shared_server.chat_url(two), join_query(JoinRequest(resume=me.token)))
    other = await join_v2(shared_server.chat_url(two))
    text_member = await join(shared_server.chat_url(two))
    try:
        await me.ws.send(away("lunch"))
        for member in (me, me_too, other):  # the away one's own connections too
            frame = await until_type(member, "away")
            assert (frame["name"], frame["message"]) == (me.name, "lunch")
        listed = shared_server.get_json(f"/rooms/{two}")
        assert listed["away"] == {me.name: "lunch"}
        assert shared_server.get_json(f"/rooms/{one}")["away"] == {me.name: "lunch"}
        await asyncio.sleep(AWAY_EVERY)  # away and back: at most once a second (the rule)
        await me.ws.send(BACK_FRAME)
        for member in (me, me_too, other):
            assert (await until_type(member, "back"))["name"] == me.name
        await eventually(lambda: "away" not in shared_server.get_json(f"/rooms/{two}"))
        # The text member heard none of it: its next frame is the next message.
        await other.send("after", "n1")
        assert await text_member.recv() == format_message(other.name, "after")
    finally:
        for member in (me, me_too, other, text_member):
            await member.close()


async def test_bad_or_too_frequent_away_gets_an_error(shared_server: RunningServer) -> None:
    member = await join_v2(shared_server.chat_url(fresh_room()))
    try:
        await member.ws.send(away("x" * (MAX_AWAY_CHARS + 1)))
        assert (await member.recv())["text"].startswith("away message too long")
        await member.ws.send('{"type":"away","message":5}')
        assert (await member.recv())["text"] == "an away message is text"
        await member.ws.send(away("one"))
        await member.ws.send(away("two"))
        # The refusal is said at once, the away once the room has it: in either order.
        frames = [await member.recv(), await member.recv()]
        assert sorted(kinds(frames)) == ["away", "error"]
        assert [f["message"] for f in frames if f["type"] == "away"] == ["one"]
        assert [f["text"] for f in frames if f["type"] == "error"] == [
            "away and back: at most once a second; not changed"
        ]
    finally:
        await member.close()


@requires_redis
async def test_away_reaches_the_tokens_rooms_on_other_processes() -> None:
    with running_cluster(2, rate_limit=0) as cluster:
        me = await join_v2(cluster.url(0, fresh_room()))
        there = fresh_room()
        me_there = await join_v2(cluster.url(1, there), join_query(JoinRequest(resume=me.token)))
        other = await join_v2(cluster.url(1, there))
        try:
            await me.ws.send(away("on the other node"))
            for member in (me_there, other):
                assert (await until_type(member, "away"))["message"] == "on the other node"
            assert cluster.nodes[0].get_json(f"/rooms/{there}")["away"] == {
                me.name: "on the other node"
            }
        finally:
            for member in (me, me_there, other):
                await member.close()


@pytest.mark.parametrize("message", ["", "a\\nb\\tc"])
async def test_an_away_message_is_one_line(shared_server: RunningServer, message: str) -> None:
    member = await join_v2(shared_server.chat_url(fresh_room()))
    try:
        await member.ws.send(away(message.replace("\\n", "\n").replace("\\t", "\t")))
        frame = await until_type(member, "away")
        assert frame["message"] == ("" if not message else "a b c")
    finally:
        await member.close()


async def test_an_away_then_a_nick_in_one_burst_keeps_the_away(
    shared_server: RunningServer,
) -> None:
    """``/away`` then ``/nick`` typed at once: the rooms hear them in that order (the away was
    said after the rename, under the new name: a new user's log read "now known as bobby",
    then "you are away"), and the listing has the new name away."""
    room = fresh_room()
    me = await join_v2(shared_server.chat_url(room))
    new = f"Quick{secrets.token_hex(3)}"
    try:
        await me.ws.send(away("quick"))
        await me.ws.send(change_nick(new))
        heard = await me.recv_until(
            lambda f: f.get("type") == "nick" or (f.get("type") == "away" and f["name"] == new)
        )
        said = [(f["type"], f.get("name") or f.get("old")) for f in heard[-2:]]
        assert said == [("away", me.name), ("nick", me.name)], heard
        listed = await eventually(
            lambda: shared_server.get_json(f"/rooms/{room}").get("away") or None
        )
        assert listed == {new: "quick"}
    finally:
        await me.close()
