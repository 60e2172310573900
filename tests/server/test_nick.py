"""Nick changes (issue 15): a chat.v2 member takes a new name in every room its token is in, on
every process; text members read "OLD is now known as NEW"; the old name stays the token's for
the reservation window. Both brokers (races on 3 processes: test_nick_properties.py)."""

from __future__ import annotations

import asyncio
import itertools
import secrets

from chat_protocol.close import CloseCode
from chat_protocol.names import CHOSEN_RULE
from chat_protocol.query import JoinRequest, join_query
from chat_protocol.v1 import format_message, format_nick
from chat_protocol.v2 import NICK_CHANGES, NICK_WINDOW, change_nick
from chat_testing.clusters import running_cluster
from chat_testing.marks import requires_redis
from chat_testing.servers import RunningServer
from tests.server.test_names import refused
from tests.server.wsclients import V2Member, join, join_v2

_rooms = itertools.count()


def fresh_room() -> str:
    return f"nick-{next(_rooms)}-{secrets.token_hex(2)}"


def fresh_name(prefix: str = "Nia") -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def until_type(member: V2Member, kind: str) -> dict:
    return (await member.recv_until(lambda f: f.get("type") == kind))[-1]


def renamed_token(token: str, name: str) -> str:
    """The token after a nick change, as docs/protocol.md says: the new name, the same secret."""
    return f"{name}.{token.partition('.')[2]}"


async def test_a_nick_change_reaches_every_room_of_the_token(shared_server: RunningServer) -> None:
    one, two = fresh_room(), fresh_room()
    me = await join_v2(shared_server.chat_url(one))
    me_too = await join_v2(shared_server.chat_url(two), join_query(JoinRequest(resume=me.token)))
    other = await join_v2(shared_server.chat_url(two))
    text_member = await join(shared_server.chat_url(two))
    old, new = me.name, fresh_name()
    try:
        await me.send("before", "n1")
        await me.ws.send(change_nick(new))
        for member in (me, me_too, other):  # its own connections too
            frame = await until_type(member, "nick")
            assert (frame["old"], frame["new"]) == (old, new)
        assert await text_member.recv() == format_nick(old, new)
        # Its messages go out under the new name, in every room.
        await me_too.send("after", "n2")
        said = await until_type(other, "message")
        assert (said["name"], said["text"]) == (new, "after")
        assert await text_member.recv() == format_message(new, "after")
        assert shared_server.get_json(f"/rooms/{two}")["members"].count(new) == 1
        assert old not in shared_server.get_json(f"/rooms/{one}")["members"]
        # History keeps the name each message was said under.
        late = await join_v2(shared_server.chat_url(one), "history=5")
        said_then = [(f["name"], f["text"]) for f in await late.backlog()]
        assert said_then == [(old, "before")]
        await late.close()
    finally:
        for member in (me, me_too, other, text_member):
            await member.close()


async def test_the_old_name_stays_the_tokens_and_resumes_the_new_one(
    shared_server: RunningServer,
) -> None:
    old, new = fresh_name("Ola"), fresh_name("Ola")
    me = await join_v2(shared_server.chat_url(fresh_room()), f"name={old}")
    await me.ws.send(change_nick(new))
    await until_type(me, "nick")
    await me.close()
    # Nobody else can take the name it left (while reserved), whatever its case.
    url = shared_server.chat_url(fresh_room()) + f"?name={old.upper()}"
    assert await refused(url) == (CloseCode.POLICY_VIOLATION, f"name taken: {old.upper()}")
    # ... the old token (a client that missed the change) resumes the new name ...
    again = await join_v2(
        shared_server.chat_url(fresh_room()), join_query(JoinRequest(resume=me.token))
    )
    assert (again.name, again.welcome["resumed"]) == (new, True)
    assert again.token == renamed_token(me.token, new)
    await again.close()
    # ... and so does the token under its new name.
    query = join_query(JoinRequest(resume=renamed_token(me.token, new)))
    third = await join_v2(shared_server.chat_url(fresh_room()), query)
    assert (third.name, third.welcome["resumed"]) == (new, True)
    # It may take its old name back.
    await third.ws.send(change_nick(old))
    frame = await until_type(third, "nick")
    assert (frame["old"], frame["new"]) == (new, old)
    await third.close()


async def test_a_taken_or_invalid_name_gets_an_error_and_changes_nothing(
    shared_server: RunningServer,
) -> None:
    room = fresh_room()
    holder_name = fresh_name("Hol")
    holder = await join(shared_server.chat_url(room) + f"?name={holder_name}")
    me = await join_v2(shared_server.chat_url(room))
    try:
        await me.ws.send(change_nick(holder_name.lower(), nonce="k1"))
        refusal = await until_type(me, "error")
        assert refusal == {
            "type": "error",
            "text": f"name taken: {holder_name.lower()}",
            "nonce": "k1",
        }
        await asyncio.sleep(1)  # nick frames: at most one a second (a rule of its own)
        await me.ws.send(change_nick("9lives"))
        assert (await until_type(me, "error"))["text"] == f"invalid name: {CHOSEN_RULE}"
        await me.send("still me", "s1")
        assert (await until_type(me, "message"))["name"] == me.name
        assert me.name in shared_server.get_json(f"/rooms/{room}")["members"]
    finally:
        await me.close()
        await holder.close()


async def test_name_changes_are_rate_limited(shared_server: RunningServer) -> None:
    me = await join_v2(shared_server.chat_url(fresh_room()))
    names = [fresh_name("Rt") for _ in range(NICK_CHANGES + 1)]
    try:
        for name in names[:NICK_CHANGES]:
            await me.ws.send(change_nick(name))
            assert (await until_type(me, "nick"))["new"] == name
            await asyncio.sleep(1)  # past the per-second rule for nick frames
        await me.ws.send(change_nick(names[-1]))
        refusal = await until_type(me, "error")
        assert refusal["text"] == (
            f"name changes: at most {NICK_CHANGES} every {NICK_WINDOW:g} s; still {names[-2]}"
        )
    finally:
        await me.close()


async def test_a_text_client_cannot_change_its_name(shared_server: RunningServer) -> None:
    room = fresh_room()
    text_member = await join(shared_server.chat_url(room))
    try:
        # A text frame is always a message, whatever it looks like.
        await text_member.ws.send(change_nick("Zed" + secrets.token_hex(3)))
        frame = await text_member.recv()
        assert frame.startswith(f"{text_member.name} :: ")
    finally:
        await text_member.close()


@requires_redis
async def test_a_nick_change_reaches_the_tokens_rooms_on_other_processes() -> None:
    with running_cluster(2, rate_limit=0) as cluster:
        me = await join_v2(cluster.url(0, fresh_room()))
        there = fresh_room()
        me_there = await join_v2(cluster.url(1, there), join_query(JoinRequest(resume=me.token)))
        other = await join(cluster.url(1, there))
        new = fresh_name("Far")
        try:
            await me.ws.send(change_nick(new))
            assert (await until_type(me_there, "nick"))["new"] == new
            assert await other.recv() == format_nick(me.name, new)
            await me_there.send("from afar", "f1")
            assert await other.recv() == format_message(new, "from afar")
            listed = cluster.nodes[0].get_json(f"/rooms/{there}")["members"]
            assert new in listed and me.name not in listed
        finally:
            await me.close()
            await me_there.close()
            await other.close()


async def test_a_token_in_another_case_resumes_the_name_as_held(
    shared_server: RunningServer,
) -> None:
    """A token's name spelled in another case is the same name: it comes back as held, and
    the connection follows the next nick change like the others (no stale copy of it)."""
    carol = fresh_name("Carol")
    first = await join_v2(shared_server.chat_url(fresh_room()), f"name={carol}")
    secret = first.token.partition(".")[2]
    second = await join_v2(
        shared_server.chat_url(fresh_room()),
        join_query(JoinRequest(resume=f"{carol.swapcase()}.{secret}")),
    )
    try:
        assert (second.name, second.token) == (carol, first.token)
        # A change of case is a nick change too: held as changed, resumed as changed.
        await first.ws.send(change_nick(carol.upper()))
        assert (await until_type(second, "nick"))["new"] == carol.upper()
        third = await join_v2(
            shared_server.chat_url(fresh_room()),
            join_query(JoinRequest(resume=first.token)),
        )
        assert third.name == carol.upper()
        await third.close()
    finally:
        await first.close()
        await second.close()


async def test_an_upper_case_generated_name_cannot_be_chosen(
    shared_server: RunningServer,
) -> None:
    me = await join_v2(shared_server.chat_url(fresh_room()))
    try:
        await me.ws.send(change_nick(me.name.upper()))
        refusal = await until_type(me, "error")
        assert (
            refusal["text"]
            == "invalid name: names of the form user_abcdef12 are the server's to give"
        )
    finally:
        await me.close()
