"""Direct messages (issue 15): ``/chat/@NAME`` with chat.v2 and the resume token of one's name
opens the conversation of two people, which behaves like a room (numbered, history, recovery,
exactly-once) and is nobody else's; the recipient is told on any connection, or at their next
welcome; a sender to someone away is told once. Both brokers, and across processes on Redis."""

from __future__ import annotations

import asyncio
import itertools
import secrets

import websockets

from chat_protocol.close import CloseCode
from chat_protocol.query import JoinRequest, join_query
from chat_protocol.v2 import away, change_nick, read_up_to
from chat_testing.clusters import running_cluster
from chat_testing.marks import requires_redis
from chat_testing.servers import RunningServer
from chat_testing.waits import eventually
from tests.server.test_names import refused
from tests.server.wsclients import V2Member, join_v2

_rooms = itertools.count()


def fresh_room() -> str:
    return f"dm-{next(_rooms)}-{secrets.token_hex(2)}"


def fresh_name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def until_type(member: V2Member, kind: str, timeout: float = 5.0) -> dict:
    return (await member.recv_until(lambda f: f.get("type") == kind, timeout))[-1]


async def person(url: str, prefix: str) -> V2Member:
    """Someone in a room of their own, with a chosen name and its token."""
    return await join_v2(url, f"name={fresh_name(prefix)}")


async def conversation(
    server_url: str, me: V2Member, peer: str, history: int = 0, **query: object
) -> V2Member:
    request = JoinRequest(history=history, resume=me.token, **query)  # type: ignore[arg-type]
    return await join_v2(f"{server_url}/chat/@{peer}", join_query(request))


async def test_a_conversation_needs_chat_v2_a_token_and_someone_there(
    shared_server: RunningServer,
) -> None:
    bob = await person(shared_server.chat_url(fresh_room()), "Bob")
    base = shared_server.ws_url
    try:
        code_reason = await refused(f"{base}/chat/@{bob.name}")
        assert code_reason == (CloseCode.POLICY_VIOLATION, "direct messages need chat.v2")
        code_reason = await refused(f"{base}/chat/@{bob.name}", subprotocols=["chat.v2"])
        assert code_reason == (
            CloseCode.POLICY_VIOLATION,
            "direct messages need the resume token of your name",
        )
        nobody = fresh_name("Nobody")
        query = join_query(JoinRequest(resume=bob.token))
        code_reason = await refused(f"{base}/chat/@{nobody}?{query}", subprotocols=["chat.v2"])
        assert code_reason == (CloseCode.POLICY_VIOLATION, f"{nobody} is not here")
    finally:
        await bob.close()


async def test_a_conversation_is_a_room_of_two(shared_server: RunningServer) -> None:
    base = shared_server.ws_url
    alice_room = fresh_room()
    alice = await person(shared_server.chat_url(alice_room), "Alice")
    bob = await person(shared_server.chat_url(fresh_room()), "Bob")
    carol = await person(shared_server.chat_url(fresh_room()), "Carol")
    opened: list[V2Member] = []
    try:
        to_bob = await conversation(base, alice, bob.name)
        opened.append(to_bob)
        assert to_bob.welcome["room"] == f"@{bob.name}"
        await to_bob.send("hi bob", "a1")
        mine = await until_type(to_bob, "message")
        assert (mine["name"], mine["text"], mine["offset"]) == (alice.name, "hi bob", 1)
        # Bob has no connection to it: his room connection hears who wrote, within a second.
        told = await until_type(bob, "direct", timeout=1.0)
        assert told["name"] == alice.name
        # Either side's address reaches the same conversation, with its history.
        to_alice = await conversation(base, bob, alice.name, history=10)
        opened.append(to_alice)
        assert to_alice.welcome["room"] == f"@{alice.name}"
        assert [(m["name"], m["text"]) for m in await to_alice.backlog()] == [
            (alice.name, "hi bob")
        ]
        await to_alice.send("hi alice", "b1")
        reply = await until_type(to_bob, "message")
        assert (reply["name"], reply["text"], reply["offset"]) == (bob.name, "hi alice", 2)
        # Exactly once: the same nonce again is acked with the original, not said again.
        await to_bob.send("hi bob", "a1")
        assert (await until_type(to_bob, "ack"))["offset"] == 1
        # Nobody else reads it: Carol's "@bob" is her own conversation with Bob, empty.
        carols = await conversation(base, carol, bob.name, history=10)
        opened.append(carols)
        assert carols.welcome["history"] == 0 and carols.welcome["offset"] == 0

        # A conversation is no room: never listed, never looked up.
        def listed() -> list[str]:
            return [item["room"] for item in shared_server.get_json("/rooms")]

        # (GET /rooms answers from a short cache: once it shows alice's room, it is current.)
        rooms = await eventually(lambda: alice_room in (found := listed()) and found)
        assert not any(room.startswith("@") for room in rooms)
    finally:
        for member in (*opened, alice, bob, carol):
            await member.close()


async def test_a_conversation_recovers_exactly_after_a_reconnect(
    shared_server: RunningServer,
) -> None:
    base = shared_server.ws_url
    alice = await person(shared_server.chat_url(fresh_room()), "Alice")
    bob = await person(shared_server.chat_url(fresh_room()), "Bob")
    try:
        to_bob = await conversation(base, alice, bob.name)
        await to_bob.send("one", "1")
        await until_type(to_bob, "message")
        epoch, seen = to_bob.welcome["epoch"], 1
        await to_bob.close()
        to_alice = await conversation(base, bob, alice.name)
        for text in ("two", "three"):
            await to_alice.send(text, text)
        await to_alice.close()
        again = await conversation(base, alice, bob.name, since=seen, epoch=epoch)
        assert again.welcome["recovered"] is True
        assert [m["text"] for m in await again.backlog()] == ["two", "three"]
        await again.close()
    finally:
        await alice.close()
        await bob.close()


async def test_someone_offline_but_reserved_is_told_at_their_next_welcome(
    shared_server: RunningServer,
) -> None:
    base = shared_server.ws_url
    alice = await person(shared_server.chat_url(fresh_room()), "Alice")
    bob = await person(shared_server.chat_url(fresh_room()), "Bob")
    await bob.close()  # gone, but his name is kept for his token
    try:
        to_bob = await conversation(base, alice, bob.name)
        await to_bob.send("while you were out", "o1")
        await until_type(to_bob, "message")
        await to_bob.close()
        back = await join_v2(
            shared_server.chat_url(fresh_room()), join_query(JoinRequest(resume=bob.token))
        )
        told = await until_type(back, "direct")
        assert told["name"] == alice.name
        # Opening it shows the message as unread (nothing read there) ...
        opened = await conversation(base, back, alice.name, history=10)
        assert "read" not in opened.welcome
        assert [m["text"] for m in await opened.backlog()] == ["while you were out"]
        await back.close()
        # ... and every welcome says so until it is read there.
        again = await join_v2(
            shared_server.chat_url(fresh_room()), join_query(JoinRequest(resume=bob.token))
        )
        assert (await until_type(again, "direct"))["name"] == alice.name
        await again.close()
        await opened.ws.send(read_up_to(1))

        async def still_told() -> bool:
            quiet = await join_v2(
                shared_server.chat_url(fresh_room()), join_query(JoinRequest(resume=bob.token))
            )
            await quiet.send("marker", "m1")
            frames = await quiet.recv_until(lambda f: f.get("type") == "message")
            await quiet.close()
            return "direct" in [f["type"] for f in frames]

        deadline = asyncio.get_running_loop().time() + 5
        while await still_told():
            assert asyncio.get_running_loop().time() < deadline, "still told after the read"
        await opened.close()
    finally:
        await alice.close()


async def test_writing_to_someone_away_says_so_once(shared_server: RunningServer) -> None:
    base = shared_server.ws_url
    alice = await person(shared_server.chat_url(fresh_room()), "Alice")
    bob = await person(shared_server.chat_url(fresh_room()), "Bob")
    try:
        await bob.ws.send(away("lunch"))
        await until_type(bob, "away")
        to_bob = await conversation(base, alice, bob.name)
        await to_bob.send("you there?", "q1")
        told = await until_type(to_bob, "away")
        assert (told["name"], told["message"]) == (bob.name, "lunch")
        frames = []
        for text in ("hello?", "still?", "marker"):
            await to_bob.send(text, text)
            frames += await to_bob.recv_until(lambda f, t=text: f.get("text") == t)
        assert "away" not in [f["type"] for f in frames]  # once per away spell
        await to_bob.close()
    finally:
        await alice.close()
        await bob.close()


@requires_redis
async def test_a_conversation_across_processes() -> None:
    with running_cluster(2, rate_limit=0) as cluster:
        alice = await person(cluster.url(0, fresh_room()), "Alice")
        bob = await person(cluster.url(1, fresh_room()), "Bob")
        node0, node1 = cluster.nodes[0].ws_url, cluster.nodes[1].ws_url
        opened: list[V2Member] = []
        try:
            to_bob = await conversation(node0, alice, bob.name)
            opened.append(to_bob)
            await to_bob.send("across", "x1")
            assert (await until_type(bob, "direct", timeout=1.0))["name"] == alice.name
            to_alice = await conversation(node1, bob, alice.name, history=5)
            opened.append(to_alice)
            assert [m["text"] for m in await to_alice.backlog()] == ["across"]
            await to_alice.send("and back", "y1")
            frames = await to_bob.recv_until(lambda f: f.get("text") == "and back")
            assert frames[-1]["name"] == bob.name
        finally:
            for member in (*opened, alice, bob):
                await member.close()


async def test_a_text_client_cannot_reach_a_conversation_by_any_spelling(
    shared_server: RunningServer,
) -> None:
    base = shared_server.ws_url
    for path in ("/chat/@", "/chat/@bad%20name", "/chat/%40x"):
        async with websockets.connect(base + path) as ws:
            await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == CloseCode.POLICY_VIOLATION


async def test_a_conversation_knows_its_person_after_a_nick_change(
    shared_server: RunningServer,
) -> None:
    """The peer renamed while both are in the conversation: they are not told of what they
    see there, and their away is said under their new name."""
    base = shared_server.ws_url
    alice = await person(shared_server.chat_url(fresh_room()), "Alice")
    bob = await person(shared_server.chat_url(fresh_room()), "Bob")
    to_bob = await conversation(base, alice, bob.name)
    to_alice = await conversation(base, bob, alice.name)
    try:
        new = fresh_name("Robert")
        await bob.ws.send(change_nick(new))
        assert (await until_type(to_alice, "nick"))["new"] == new
        for text in ("one", "two", "three"):
            await to_bob.send(text, text)
        await to_alice.recv_until(lambda f: f.get("text") == "three")
        await bob.send("marker", "m1")
        frames = await bob.recv_until(lambda f: f.get("text") == "marker")
        assert "direct" not in [f["type"] for f in frames]  # they were there to see it
        await bob.ws.send(away("renamed and away"))
        await until_type(bob, "away")
        await to_bob.send("still there?", "q")
        told = await until_type(to_bob, "away")
        assert (told["name"], told["message"]) == (new, "renamed and away")
    finally:
        for member in (to_bob, to_alice, alice, bob):
            await member.close()


async def test_a_writer_renamed_since_is_told_by_their_new_name(
    shared_server: RunningServer,
) -> None:
    """Alice wrote to Bob, who was out, then became someone else: Bob's next welcome names
    her new name, under which the conversation opens (a notice under the old name would make
    a client open a second conversation with the same person)."""
    base = shared_server.ws_url
    alice = await person(shared_server.chat_url(fresh_room()), "Alice")
    bob = await person(shared_server.chat_url(fresh_room()), "Bob")
    await bob.close()
    try:
        to_bob = await conversation(base, alice, bob.name)
        await to_bob.send("while you were out", "o1")
        await until_type(to_bob, "message")
        await to_bob.close()
        renamed = fresh_name("Alicia")
        await alice.ws.send(change_nick(renamed))
        assert (await until_type(alice, "nick"))["new"] == renamed
        back = await join_v2(
            shared_server.chat_url(fresh_room()), join_query(JoinRequest(resume=bob.token))
        )
        told = await until_type(back, "direct")
        assert told["name"] == renamed
        opened = await conversation(base, back, told["name"], history=10)
        assert [m["text"] for m in await opened.backlog()] == ["while you were out"]
        for member in (opened, back):
            await member.close()
    finally:
        await alice.close()
