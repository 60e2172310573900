"""Property: however joins, leaves and messages interleave over 3 processes, every member of a
room sees one and the same sequence: each member's frames are exactly the room's order from its
own join notice on (up to its leave), and nothing sent before a leave is lost."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from chat_protocol.v1 import SEPARATOR, format_join, format_leave, format_message, parse_frame
from chat_testing.clusters import Cluster, running_cluster
from chat_testing.marks import requires_redis

pytestmark = requires_redis

NODES = 3
_rooms = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # The default failure timings, not the fault tests' short ones: this test is about order,
    # and a loaded machine must not pass for a broker outage here.
    defaults = {
        "CHAT_SERVER_BROKER_TIMEOUT": "2",
        "CHAT_SERVER_NODE_TTL": "15",
        "CHAT_SERVER_PROBE_INTERVAL": "1",
    }
    with running_cluster(NODES, env=defaults, rate_limit=0) as c:
        yield c


@dataclass
class Client:
    """A member that reads every frame from its connect on, until the connection closes."""

    node: int
    ws: websockets.ClientConnection | None = None
    name: str = ""
    frames: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    left: bool = False
    refused: str = ""  # why no join notice ever came, if it did not
    joined: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    async def run(self, url: str) -> None:
        try:
            self.ws = await websockets.connect(url, max_queue=None)
            async for frame in self.ws:
                assert isinstance(frame, str)
                if not self.frames:
                    parsed = parse_frame(frame)
                    assert parsed.name is not None and frame == format_join(parsed.name)
                    self.name = parsed.name
                    self.joined.set()
                self.frames.append(frame)
        except ConnectionClosed as exc:
            self.refused = f"closed before its join notice: {exc}"
        except OSError as exc:
            self.refused = f"could not connect: {exc}"
        finally:
            self.joined.set()  # wake whoever waits for the join: it came, or never will

    async def wait_joined(self) -> None:
        await self.joined.wait()
        assert self.name, f"node {self.node}: {self.refused}"

    def until(self, frame: str) -> list[str]:
        return self.frames[: self.frames.index(frame) + 1]


join_action = st.tuples(st.just("join"), st.integers(0, NODES - 1))
leave_action = st.tuples(st.just("leave"), st.integers(0, 15))
safe_text = st.text(
    alphabet=st.characters(whitelist_categories=("L", "N", "P", "S", "Zs")),
    min_size=0,
    max_size=12,
)
send_action = st.tuples(st.just("send"), st.integers(0, 15), safe_text)
actions_strategy = st.lists(
    st.one_of(join_action, leave_action, send_action, send_action), min_size=4, max_size=30
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(actions=actions_strategy)
def test_every_member_sees_one_sequence(cluster: Cluster, actions: list[tuple]) -> None:
    asyncio.run(asyncio.wait_for(_play(cluster, actions), 60))


async def _play(cluster: Cluster, actions: list[tuple]) -> None:
    room = f"prop-{next(_rooms)}"
    # One observer per node, there from before the first action to the end.
    observers = [Client(node) for node in range(NODES)]
    for observer in observers:
        observer.reader = asyncio.create_task(observer.run(cluster.url(observer.node, room)))
        await observer.wait_joined()
    clients: list[Client] = []
    counter = itertools.count()
    for action in actions:
        if action[0] == "join":
            client = Client(action[1])
            client.reader = asyncio.create_task(client.run(cluster.url(client.node, room)))
            clients.append(client)
        elif clients:
            client = clients[action[1] % len(clients)]
            if client.left:
                continue
            await client.wait_joined()
            assert client.ws is not None
            if action[0] == "leave":
                client.left = True
                await client.ws.close()
            else:
                text = f"{next(counter)}:{action[2]}"
                client.sent.append(text)
                await client.ws.send(text)
        await asyncio.sleep(0)  # let the others' frames interleave

    for client in clients:
        await client.wait_joined()
    # Leaves and messages still on their way (from any node) are through before the end:
    # every one of them must then be in everyone's view.
    due = {format_leave(c.name) for c in clients if c.left}
    due |= {format_message(c.name, t) for c in clients for t in c.sent}
    async with asyncio.timeout(20):
        while not due <= set(observers[0].frames):
            await asyncio.sleep(0.01)
    end = f"end of {room}"
    assert observers[0].ws is not None
    await observers[0].ws.send(end)
    end_frame = format_message(observers[0].name, end)
    present = [c for c in [*observers, *clients] if not c.left]
    async with asyncio.timeout(20):
        while not all(end_frame in c.frames for c in present):
            await asyncio.sleep(0.01)
    for client in [*observers, *clients]:
        if client.left:
            assert client.reader is not None
            await client.reader
        elif client.ws is not None:
            await client.ws.close()

    reference = observers[0].until(end_frame)
    assert len(set(reference)) == len(reference), "a frame delivered twice"
    for client in [*observers, *clients]:
        seen = client.until(end_frame) if not client.left else client.frames
        start = reference.index(format_join(client.name))
        if client.left:
            # A prefix of the room's order from its join on, ending before its own leave.
            assert seen == reference[start : start + len(seen)], client.name
        else:
            assert seen == reference[start:], client.name
        # Everything it sent was published, in its order, before it left.
        own = [
            f.partition(SEPARATOR)[2] for f in reference if f.startswith(client.name + SEPARATOR)
        ]
        assert own == client.sent + ([end] if client is observers[0] else [])
        if client.left:
            leave = format_leave(client.name)
            assert reference.count(leave) == 1
            assert reference.index(leave) > max(
                [reference.index(format_message(client.name, t)) for t in client.sent],
                default=start,
            )
