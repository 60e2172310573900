"""Property: however nick changes race joins that ask for a name and resumes of a token's
former name, on 3 processes sharing Redis, no name (whatever its case) ever has two holders:
every connection's name, as its room sees it, belongs to one person."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from chat_protocol.names import name_key
from chat_protocol.query import JoinRequest, join_query
from chat_protocol.v1 import SEPARATOR
from chat_protocol.v2 import change_nick
from chat_testing.clusters import Cluster, running_cluster
from chat_testing.marks import requires_redis
from tests.server.wsclients import Member, V2Member, join, join_v2

pytestmark = requires_redis

NODES = 3
PEOPLE = 3  # chat.v2 people who rename, each in the room on its own node
POOL = 4  # names everyone wants
_examples = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster(NODES, rate_limit=0) as c:
        yield c


@dataclass
class Connection:
    owner: str  # the person: a token's index, or a text client's own
    v2: V2Member | None = None
    text: Member | None = None


rename = st.tuples(st.just("rename"), st.integers(0, PEOPLE - 1), st.integers(0, POOL - 1))
claim = st.tuples(st.just("claim"), st.integers(0, NODES - 1), st.integers(0, POOL - 1))
resume = st.tuples(st.just("resume"), st.integers(0, PEOPLE - 1), st.integers(0, NODES - 1))
# Waves: the actions of a wave race each other; a wave starts once the one before is through.
actions_strategy = st.lists(
    st.lists(st.one_of(rename, claim, resume), min_size=1, max_size=4), min_size=2, max_size=4
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(actions=actions_strategy)
def test_a_name_never_has_two_holders(cluster: Cluster, actions: list[list[tuple]]) -> None:
    asyncio.run(asyncio.wait_for(_play(cluster, actions), 60))


async def _play(cluster: Cluster, actions: list[list[tuple]]) -> None:
    example = next(_examples)
    room, other_room = f"nickprop-{example}-{secrets.token_hex(2)}", f"nickprop-{example}-b"
    pool = [f"Pool{example}x{i}{secrets.token_hex(2)}" for i in range(POOL)]
    people = [await join_v2(cluster.url(i % NODES, room)) for i in range(PEOPLE)]
    connections = [Connection(str(i), v2=person) for i, person in enumerate(people)]

    async def act(action: tuple) -> None:
        kind, who, which = action
        if kind == "rename":
            await people[who].ws.send(change_nick(pool[which]))
        elif kind == "claim":
            with contextlib.suppress(ConnectionClosed, AssertionError):  # taken: fine
                member = await join(cluster.url(who, room) + f"?name={pool[which]}")
                connections.append(Connection(f"text-{len(connections)}", text=member))
        else:
            # The person's first token, which may name a former name by now.
            query = join_query(JoinRequest(resume=people[who].token))
            # Two resumes of one person in one room: the later replaces the earlier (1008).
            with contextlib.suppress(ConnectionClosed):
                member = await join_v2(cluster.url(which, other_room), query)
                connections.append(Connection(str(who), v2=member))

    for wave in actions:
        # At once: renames race the joins and resumes on the other processes.
        await asyncio.gather(*(act(a) for a in wave))
        # Through: each rename answered (its nick, or an error) before the next wave.
        for person in people:
            with contextlib.suppress(ConnectionClosed):
                await person.send(f"wave {example}", None)
                await person.recv_until(lambda f: f.get("text") == f"wave {example}")

    # Each connection says something: its room shows the name it holds now.
    holders: dict[str, set[str]] = {}
    for index, connection in enumerate(connections):
        marker = f"marker {example} {index}"
        try:
            if connection.v2 is not None:
                await connection.v2.send(marker, f"m{index}")
                said = await connection.v2.recv_until(
                    lambda f, m=marker: f.get("type") == "message" and f.get("text") == m
                )
                name = said[-1]["name"]
            else:
                assert connection.text is not None
                await connection.text.ws.send(marker)
                frames = await connection.text.recv_until(
                    lambda f, m=marker: f.endswith(SEPARATOR + m)
                )
                name = frames[-1].partition(SEPARATOR)[0]
        except ConnectionClosed:
            continue  # replaced by a newer connection of its person in that room: gone
        holders.setdefault(name_key(name), set()).add(connection.owner)
    shared = {key: owners for key, owners in holders.items() if len(owners) > 1}
    assert not shared, f"names with two holders: {shared} after {actions}"
    for node in range(NODES):
        for listed_room in (room, other_room):
            try:
                members = cluster.nodes[node].get_json(f"/rooms/{listed_room}")["members"]
            except OSError:
                continue  # nobody there
            keys = [name_key(m) for m in members]
            assert len(keys) == len(set(keys)), members
    for connection in connections:
        await (connection.v2 or connection.text).close()  # type: ignore[union-attr]
