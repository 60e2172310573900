"""History and recovery across 3 processes on one Redis (issue 7).

The property: whenever and wherever a member joins while others send on every node, what it
gets (history or recovery, then live) is one run of consecutive offsets without gap or
duplicate, each offset carrying the message every other member saw at it.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat_protocol.query import JoinRequest, join_query
from chat_testing.clusters import Cluster, running_cluster
from chat_testing.marks import requires_redis
from tests.server.wsclients import V2Member, join_v2, resume_query

pytestmark = requires_redis

NODES = 3
PER_SENDER = 40  # one sender per node
_rooms = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster(NODES, rate_limit=0) as c:
        yield c


@dataclass
class Reader:
    """Every message a v2 member receives (backlog and live), as (offset, name, text)."""

    member: V2Member
    messages: list[tuple[int, str, str]] = field(default_factory=list)
    acks: dict[str, int] = field(default_factory=dict)
    latest: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, until: int, acks: int = 0) -> None:
        """Read until the room's message ``until`` and ``acks`` acks are in."""
        welcome = self.member.welcome
        for frame in await self.member.backlog():
            self.messages.append((frame["offset"], frame["name"], frame["text"]))
        # Past the backlog, the room is where it was when this member joined.
        self.latest = welcome["offset"]
        self.changed.set()
        while self.latest < until or len(self.acks) < acks:
            frame = await self.member.recv(10)
            if frame["type"] == "message":
                self.messages.append((frame["offset"], frame["name"], frame["text"]))
                self.latest = frame["offset"]
                self.changed.set()
            elif frame["type"] == "ack":
                self.acks[frame["nonce"]] = frame["offset"]

    async def reached(self, offset: int) -> None:
        while self.latest < offset:
            self.changed.clear()
            await self.changed.wait()


async def send_all(member: V2Member, count: int) -> dict[str, str]:
    """Send ``count`` messages with nonces, without waiting; nonce -> text."""
    sent = {}
    for i in range(count):
        nonce = f"{member.name}-{i}"
        sent[nonce] = f"{member.name} #{i}"
        await member.send(sent[nonce], nonce)
        await asyncio.sleep(0)
    return sent


joiner = st.tuples(
    st.integers(0, NODES - 1),  # node
    st.integers(0, NODES * PER_SENDER),  # joins once the room has this many messages
    st.sampled_from(["history", "since"]),
    st.integers(0, 60),  # history=N, or how far back from the latest offset to recover
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(joiners=st.lists(joiner, min_size=1, max_size=5))
def test_history_and_live_meet_without_gap_or_duplicate(
    cluster: Cluster, joiners: list[tuple[int, int, str, int]]
) -> None:
    asyncio.run(asyncio.wait_for(_play(cluster, joiners), 60))


async def _play(cluster: Cluster, joiners: list[tuple[int, int, str, int]]) -> None:
    room = f"hcl-{next(_rooms)}-{secrets.token_hex(2)}"
    total = NODES * PER_SENDER
    observer = Reader(await join_v2(cluster.url(0, room)))
    epoch = observer.member.welcome["epoch"]
    assert observer.member.welcome["offset"] == 0
    watching = asyncio.create_task(observer.run(total))
    senders = [Reader(await join_v2(cluster.url(node, room))) for node in range(NODES)]
    reading = [asyncio.create_task(s.run(total, PER_SENDER)) for s in senders]
    sent = await asyncio.gather(*(send_all(s.member, PER_SENDER) for s in senders))

    joined: list[tuple[Reader, str, int, int]] = []
    for node, after, mode, amount in sorted(joiners, key=lambda j: j[1]):
        await observer.reached(after)
        since = max(0, observer.latest - amount)
        query = f"history={amount}" if mode == "history" else f"since={since}&epoch={epoch}"
        reader = Reader(await join_v2(cluster.url(node, room), query))
        reading.append(asyncio.create_task(reader.run(total)))
        joined.append((reader, mode, amount, since))
    await asyncio.gather(watching, *reading)

    reference = observer.messages
    assert [m[0] for m in reference] == list(range(1, total + 1)), "the sequence has a gap"
    by_offset = {m[0]: m for m in reference}
    # Each sender's acks name the offsets at which everyone saw its messages.
    for sender, texts in zip(senders, sent, strict=True):
        assert set(sender.acks) == set(texts)
        for nonce, offset in sender.acks.items():
            assert by_offset[offset][1:] == (sender.member.name, texts[nonce])
    for reader, mode, amount, since in joined:
        welcome = reader.member.welcome
        at_join = welcome["offset"]
        if mode == "history":
            assert welcome["recovered"] is None
            first = at_join - min(amount, at_join) + 1
        else:
            assert welcome["recovered"] is True
            first = since + 1
        assert welcome["history"] == at_join - first + 1
        assert reader.messages == reference[first - 1 :], (mode, amount, since, at_join)
    for reader in [observer, *senders, *(j[0] for j in joined)]:
        await reader.member.close()


async def test_a_name_resumed_on_another_process_recovers_and_never_duplicates(
    cluster: Cluster,
) -> None:
    room = f"hcl-resume-{secrets.token_hex(2)}"
    watcher = await join_v2(cluster.url(2, room))
    alice = await join_v2(cluster.url(0, room))
    await alice.send("before the reconnect", "n-1")
    ack = (await alice.recv_until(lambda f: f["type"] == "ack"))[-1]
    await alice.close()

    # Back on another process: the same name, what was missed, and a re-sent nonce is
    # acknowledged with its first offset, not published again.
    back = await join_v2(cluster.url(1, room), resume_query(alice, since=ack["offset"] - 1))
    assert back.name == alice.name and back.welcome["resumed"] is True
    assert back.welcome["recovered"] is True
    assert [f["text"] for f in await back.backlog()] == ["before the reconnect"]
    await back.send("before the reconnect", "n-1")
    again = (await back.recv_until(lambda f: f["type"] == "ack"))[-1]
    assert again["offset"] == ack["offset"]
    await back.send("after", "n-2")
    seen = await watcher.recv_until(lambda f: f.get("text") == "after")
    texts = [f["text"] for f in seen if f["type"] == "message"]
    assert texts == ["before the reconnect", "after"]
    assert [f["type"] for f in seen if f["type"] in ("join", "leave")] == ["join", "leave", "join"]

    # Someone else's token, made up on a third process: a fresh name.
    forged = f"{alice.name}.{secrets.token_urlsafe(16)}"
    stranger = await join_v2(cluster.url(2, room), join_query(
        JoinRequest(resume=forged)
    ))  # fmt: skip
    assert stranger.name != alice.name and stranger.welcome["resumed"] is False
    for member in (stranger, back, watcher):
        await member.close()
