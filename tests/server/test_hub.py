"""The room hub's sequence checks, in-process, with a channel backend the test drives.

Real brokers make these situations only by timing (an event still on its way from before a
room was left and entered again, an event lost on the live path), which no test can make
happen on demand; the cluster tests cover the same code with real processes and Redis.
"""

from __future__ import annotations

import asyncio

from chat_server.backends.base import ChannelBackend, Deliver, Publishing
from chat_server.events import EventKind, RoomEvent
from chat_server.hub import HubMember, RoomHub
from chat_testing.waits import eventually


class Channels(ChannelBackend):
    """Subscriptions that go live when the test says so; events that the test delivers."""

    def __init__(self) -> None:
        self.deliver: Deliver | None = None
        self.pending: dict[str, asyncio.Future[None]] = {}

    def bind(self, deliver: Deliver) -> None:
        self.deliver = deliver

    def subscribe(self, room: str) -> asyncio.Future[None]:
        future = self.pending[room] = asyncio.get_running_loop().create_future()
        return future

    def unsubscribe(self, room: str) -> None:
        self.pending.pop(room, None)

    def publish(self, *args: object, **kwargs: object) -> Publishing:
        raise NotImplementedError


class Recorder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[int] = []

    def deliver(self, event: RoomEvent) -> None:
        self.got.append(event.serial)


def event(serial: int, epoch: str = "e1") -> RoomEvent:
    return RoomEvent(EventKind.MESSAGE, "user_aaaaaa00", "x", serial, serial, epoch, 0.0, "n")


async def entered(channels: Channels, hub: RoomHub, member: HubMember) -> asyncio.Task[None]:
    task = asyncio.create_task(hub.enter("r", member))
    # The subscription is requested, not yet live.
    await eventually(lambda: "r" in channels.pending, timeout=5, interval=0, what="subscribe")
    return task


async def test_events_from_before_a_subscription_is_live_are_neither_delivered_nor_counted() -> (
    None
):
    channels, lost = Channels(), []
    hub = RoomHub(channels, lambda room, members, why: lost.append(why))
    member = Recorder("user_bbbbbb00")
    entering = await entered(channels, hub, member)
    assert channels.deliver is not None
    channels.deliver("r", event(7))  # still on its way from an earlier subscription
    channels.pending["r"].set_result(None)  # Redis confirms: live from here
    await entering
    for serial in (12, 13, 14):  # 8-11 were published while unsubscribed: not a gap
        channels.deliver("r", event(serial))
    assert member.got == [12, 13, 14]
    assert lost == []


async def test_a_gap_or_a_new_epoch_hands_the_room_s_members_over_once() -> None:
    channels = Channels()
    lost: list[tuple[list[HubMember], str]] = []
    hub = RoomHub(channels, lambda room, members, why: lost.append((members, why)))
    a, b = Recorder("user_aaaaaa01"), Recorder("user_aaaaaa02")
    first = await entered(channels, hub, a)
    channels.pending["r"].set_result(None)
    await first
    await hub.enter("r", b)
    assert channels.deliver is not None
    for serial in (1, 2, 2, 3):  # a duplicate is dropped
        channels.deliver("r", event(serial))
    channels.deliver("r", event(5))  # 4 was lost
    assert a.got == b.got == [1, 2, 3]
    assert lost == [([a, b], "1 event(s) lost on the way")]
    channels.deliver("r", event(6))  # counted from the event that showed the gap
    channels.deliver("r", event(1, epoch="e2"))  # the sequence started over
    assert a.got == [1, 2, 3, 6]
    assert lost[1] == ([a, b], "the room's sequence started over")
