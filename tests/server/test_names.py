"""Chosen names (issue 15): ``?name=`` for any client, unique whatever the case, on both
brokers and across processes sharing Redis."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from chat_protocol.close import CloseCode
from chat_protocol.names import CHOSEN_RULE, GENERATED_RULE
from chat_protocol.query import JoinRequest, join_query
from chat_protocol.v1 import format_join, format_leave
from chat_testing.clusters import running_cluster
from chat_testing.marks import requires_redis
from chat_testing.servers import RunningServer
from tests.server.wsclients import join, join_v2

_rooms = itertools.count()


def fresh_room() -> str:
    return f"names-{next(_rooms)}-{secrets.token_hex(2)}"


def fresh_name(prefix: str = "Ann") -> str:
    """A chosen name no other test asks for."""
    return f"{prefix}{secrets.token_hex(4)}"


async def refused(url: str, **kwargs: object) -> tuple[int, str]:
    """Connect (the handshake succeeds) and return the close that follows at once."""
    async with websockets.connect(url, **kwargs) as ws:  # type: ignore[arg-type]
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
    close = info.value.rcvd
    assert close is not None
    return close.code, close.reason


async def test_a_text_client_chooses_its_name(shared_server: RunningServer) -> None:
    room, name = fresh_room(), fresh_name()
    url = shared_server.chat_url(room)
    other = await join(url)
    chooser = await join(f"{url}?name={name}")
    assert chooser.name == name
    assert await other.recv() == format_join(name)
    await chooser.ws.send("hello")
    assert await other.recv() == f"{name} :: hello"
    assert await chooser.recv() == f"{name} :: hello"
    await chooser.close()
    assert await other.recv() == format_leave(name)
    # A text client holds its name while it is connected, no longer.
    again = await join(f"{url}?name={name}")
    assert again.name == name
    await again.close()
    await other.close()


async def test_a_name_in_use_is_taken_whatever_its_case(shared_server: RunningServer) -> None:
    name = fresh_name()
    holder = await join(shared_server.chat_url(fresh_room()) + f"?name={name}")
    try:
        # Any room, any dialect, any case: the name is one person's on the whole server.
        for asked, subprotocols in (
            (name, None),
            (name.lower(), None),
            (name.upper(), ["chat.v2"]),
        ):
            url = shared_server.chat_url(fresh_room()) + f"?name={asked}"
            code, reason = await refused(url, subprotocols=subprotocols)
            assert (code, reason) == (CloseCode.POLICY_VIOLATION, f"name taken: {asked}")
    finally:
        await holder.close()


@pytest.mark.parametrize(
    ("asked", "rule"),
    [
        ("a", CHOSEN_RULE),
        ("1abc", CHOSEN_RULE),
        ("_abc", CHOSEN_RULE),
        ("x" * 25, CHOSEN_RULE),
        ("bad%20name", CHOSEN_RULE),
        ("caf%C3%A9", CHOSEN_RULE),
        ("", CHOSEN_RULE),
        ("user_abcdef12", GENERATED_RULE),
    ],
)
async def test_an_invalid_name_is_refused_with_the_rule_it_breaks(
    shared_server: RunningServer, asked: str, rule: str
) -> None:
    for subprotocols in (None, ["chat.v2"]):
        url = shared_server.chat_url(fresh_room()) + f"?name={asked}"
        code, reason = await refused(url, subprotocols=subprotocols)
        assert (code, reason) == (CloseCode.POLICY_VIOLATION, f"invalid name: {rule}")


async def test_the_longest_and_shortest_names_are_fine(shared_server: RunningServer) -> None:
    for name in ("Z" + secrets.token_hex(1)[:1], "Q" + secrets.token_hex(12)[:23]):
        member = await join(shared_server.chat_url(fresh_room()) + f"?name={name}")
        assert member.name == name
        await member.close()


async def test_a_chat_v2_name_is_kept_by_its_token_and_shared_by_its_rooms(
    shared_server: RunningServer,
) -> None:
    name = fresh_name("Bo")
    first = await join_v2(shared_server.chat_url(fresh_room()), f"name={name}")
    assert first.name == name
    token = first.token
    both = join_query(JoinRequest(resume=token, name=name))
    # The same token in another room: the same person.
    second = await join_v2(shared_server.chat_url(fresh_room()), both)
    assert (second.name, second.welcome["resumed"]) == (name, True)
    await first.close()
    await second.close()
    # After its last connection ends the name stays the token's: nobody else gets it ...
    url = shared_server.chat_url(fresh_room()) + f"?name={name.lower()}"
    assert await refused(url) == (CloseCode.POLICY_VIOLATION, f"name taken: {name.lower()}")
    # ... and the token takes it back.
    back = await join_v2(shared_server.chat_url(fresh_room()), both)
    assert (back.name, back.welcome["resumed"]) == (name, True)
    await back.close()


async def test_a_tokens_own_name_asked_in_another_case_is_resumed_as_chosen(
    shared_server: RunningServer,
) -> None:
    name = fresh_name("Gi")
    first = await join_v2(shared_server.chat_url(fresh_room()), f"name={name}")
    await first.close()
    query = join_query(JoinRequest(resume=first.token, name=name.lower()))
    again = await join_v2(shared_server.chat_url(fresh_room()), query)
    assert (again.name, again.welcome["resumed"]) == (name, True)
    await again.close()


async def test_a_token_for_another_name_does_not_stand_in_the_way(
    shared_server: RunningServer,
) -> None:
    # chat-tui kept a token for its old name and now asks for a new one: it gets the new one.
    old = await join_v2(shared_server.chat_url(fresh_room()))
    await old.close()
    name = fresh_name("Cy")
    query = join_query(JoinRequest(resume=old.token, name=name))
    renamed = await join_v2(shared_server.chat_url(fresh_room()), query)
    assert (renamed.name, renamed.welcome["resumed"]) == (name, False)
    assert renamed.token != old.token
    await renamed.close()


async def test_history_keeps_the_name_each_message_was_said_under(
    shared_server: RunningServer,
) -> None:
    room, name = fresh_room(), fresh_name("Di")
    url = shared_server.chat_url(room)
    sayer = await join(f"{url}?name={name}")
    await sayer.ws.send("remember me")
    assert await sayer.recv() == f"{name} :: remember me"
    await sayer.close()
    late = await join(f"{url}?history=5")
    assert await late.recv() == f"{name} :: remember me"
    await late.close()


@requires_redis
async def test_a_name_is_one_persons_across_processes() -> None:
    with running_cluster(2, rate_limit=0) as cluster:
        name = fresh_name("Ed")
        holder = await join(cluster.url(0, fresh_room()) + f"?name={name}")
        try:
            url = cluster.url(1, fresh_room()) + f"?name={name.swapcase()}"
            code, reason = await refused(url)
            assert (code, reason) == (CloseCode.POLICY_VIOLATION, f"name taken: {name.swapcase()}")
        finally:
            await holder.close()

        # Free again once it is let go of (a text client's name is not reserved).
        async def free() -> bool:
            try:
                member = await join(cluster.url(1, fresh_room()) + f"?name={name}")
            except (ConnectionClosed, AssertionError):
                return False
            await member.close()
            return True

        deadline = asyncio.get_running_loop().time() + 5
        while not await free():
            assert asyncio.get_running_loop().time() < deadline, "the name was never freed"
            await asyncio.sleep(0.05)


async def test_reservations_are_bounded_the_oldest_ending_first(
    server_factory: Any,
) -> None:
    """With room for 3 reservations, the 4th and 5th names given up end the two oldest
    reservations early: those names are free again, the newer ones still kept."""
    server = server_factory(max_reservations=3)
    names = [fresh_name(f"Res{i}") for i in range(5)]
    for name in names:
        member = await join_v2(server.chat_url(fresh_room()), f"name={name}")
        await member.close()
    url = server.chat_url(fresh_room())

    async def free(name: str) -> bool:
        try:
            member = await join(f"{url}?name={name}")
        except (ConnectionClosed, AssertionError):
            return False
        await member.close()
        return True

    # Each release is its own leave: wait until the server has taken the fifth.
    deadline = asyncio.get_running_loop().time() + 5
    while not await free(names[1]):
        assert asyncio.get_running_loop().time() < deadline, "the second oldest is still kept"
    assert await free(names[0])
    assert [await free(n) for n in names[2:]] == [False, False, False]
