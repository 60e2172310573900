"""The room hub: this node's members by room, and the local fan-out of every room's events.

Written once for every backend. A room's channel is subscribed when its first local member
enters and unsubscribed after the last one leaves, so an event crosses the broker once per
node that has members, then goes to each local member through its own bounded buffer
(``connection.Member``). :meth:`RoomHub.deliver` never awaits: the backend's reader never
waits on a member.

A leave of a member that is still here means the broker no longer has it in the room (a newer
connection took its name there, or a reaper took it for dead): the member is told
(``removed``) and lets go.

Each room's events arrive numbered (``RoomEvent.serial``). A gap or a new epoch on the live
path means this node missed events that its members would never see: the hub never skips
them silently but hands the room's members to ``on_lost``, which drops them so that they
reconnect (a later version may repair the gap from history instead).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from chat_server.backends.base import ChannelBackend
from chat_server.events import SIGNALS, EventKind, RoomEvent

_LEAVE, _KICK = EventKind.LEAVE, EventKind.KICK
_MESSAGE = EventKind.MESSAGE


class HubMember(Protocol):
    name: str

    def deliver(self, event: RoomEvent) -> None:
        """Queue the event for this member; never blocks."""

    def removed(self, event: RoomEvent) -> None:
        """The room announced this member's own leave (it was replaced, or reaped)."""

    def signal(self, event: RoomEvent) -> None:
        """A signal of the room (``events.SIGNALS``: typing, away, back); never blocks."""


# (room, its local members, why): called when a room's local stream broke.
OnLost = Callable[[str, list[HubMember], str], None]
# (room, member, what went wrong): a member's delivery raised; the others still get the event.
OnFailed = Callable[[str, HubMember, Exception], None]


class _LocalRoom:
    __slots__ = ("epoch", "live", "members", "serial")

    def __init__(self, live: asyncio.Future[None]) -> None:
        self.live = live
        # dict keeps insertion order: members receive in join order, cheaply removed.
        self.members: dict[HubMember, None] = {}
        self.serial = 0
        self.epoch: str | None = None  # None until the first event after subscribing


class RoomHub:
    def __init__(
        self, channels: ChannelBackend, on_lost: OnLost, on_failed: OnFailed | None = None
    ) -> None:
        self._channels = channels
        self._on_lost = on_lost
        self._on_failed = on_failed
        self._rooms: dict[str, _LocalRoom] = {}
        channels.bind(self.deliver)
        channels.on_interrupted(self.interrupted)

    async def enter(self, room: str, member: HubMember) -> None:
        """Make ``member`` receive every event of ``room`` published from now on.

        Returns once the room's subscription is live; raises ``BrokerUnavailable`` (and the
        member is out again) if it cannot be.
        """
        local = self._rooms.get(room)
        if local is None:
            local = self._rooms[room] = _LocalRoom(self._channels.subscribe(room))
        local.members[member] = None
        try:
            # Shielded: one member giving up must not cancel the subscription of the others.
            await asyncio.shield(local.live)
        except BaseException:
            self.exit(room, member)
            raise

    def exit(self, room: str, member: HubMember) -> None:
        local = self._rooms.get(room)
        if local is None or local.members.pop(member, False) is False:
            return
        if not local.members:
            del self._rooms[room]
            self._channels.unsubscribe(room)

    def deliver(self, room: str, event: RoomEvent) -> None:
        local = self._rooms.get(room)
        if local is None:
            return  # unsubscribed meanwhile
        if event.serial == local.serial + 1 and event.epoch == local.epoch:
            local.serial = event.serial
        elif not self._in_line(room, local, event):
            return
        # A copy: delivering may evict a member, which takes it out of the room.
        members = tuple(local.members)
        kind = event.kind
        if kind is not _MESSAGE and kind in SIGNALS:
            for member in members:
                try:
                    member.signal(event)
                except Exception as exc:
                    if self._on_failed is None:
                        raise
                    self._on_failed(room, member, exc)
            return
        if event.kind is _LEAVE or event.kind is _KICK:
            # A member leaves the hub before its leave is announced: one that is still here
            # was replaced by a newer connection under its name, or reaped.
            for member in members:
                if member.name == event.name:
                    member.removed(event)
        for member in members:
            try:
                member.deliver(event)
            except Exception as exc:  # a bug: that member goes, the room carries on
                if self._on_failed is None:
                    raise
                self._on_failed(room, member, exc)

    def _in_line(self, room: str, local: _LocalRoom, event: RoomEvent) -> bool:
        """Whether an event that is not the next one expected is to be delivered."""
        if local.epoch is None:
            if not local.live.done():
                # Still on its way from before this subscription (the room was left and
                # entered again): not the members', nor a baseline to count gaps from.
                return False
            # The first event since the subscription became live: the baseline.
            local.epoch, local.serial = event.epoch, event.serial
            return True
        if event.epoch != local.epoch:
            self._lost(room, local, event, "the room's sequence started over")
        elif event.serial <= local.serial:
            pass  # already delivered
        else:
            missed = event.serial - local.serial - 1
            self._lost(room, local, event, f"{missed} event(s) lost on the way")
        return False

    def _lost(self, room: str, local: _LocalRoom, event: RoomEvent, why: str) -> None:
        # Members that join from here on start from this event.
        local.serial = event.serial
        local.epoch = event.epoch
        self._hand_over(room, local, why)

    def interrupted(self, room: str, why: str) -> None:
        """The room's channel was lost for a while: what was published meanwhile never came.
        Its members here go (as for a gap) and come back with recovery; the next event is the
        baseline of those who join from here on."""
        local = self._rooms.get(room)
        if local is None:
            return
        local.epoch = None
        self._hand_over(room, local, why)

    def _hand_over(self, room: str, local: _LocalRoom, why: str) -> None:
        """The room's members here missed events: each goes to ``on_lost``."""
        members = list(local.members)
        if members:
            self._on_lost(room, members, why)

    def rooms(self) -> dict[str, int]:
        """This node's rooms with their local member counts."""
        return {room: len(local.members) for room, local in self._rooms.items()}
