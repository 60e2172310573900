"""``memory://``: one process, no I/O. Rooms are dicts and a publish is a synchronous delivery.

Each room keeps its sequence, its last ``history_size`` messages (a ring, also bounded in bytes:
``history_bytes`` per room, ``history_total_bytes`` for all) and the nonces of its recent
messages while the process lives. A room that empties is kept, idle, so that its history
and sequence survive until it is used again, unless more than ``history_rooms`` rooms are idle
(the room idle longest is forgotten first) or it has been idle for ``history_ttl``; a forgotten
room's next sequence starts over under a new epoch. With history off (``history_size`` 0) a
room is forgotten as soon as it empties.
"""

from __future__ import annotations

import asyncio
import heapq
import hmac
import itertools
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from chat_protocol.http import ROOMS_PAGE
from chat_protocol.names import direct_peer, name_key
from chat_server.backends.base import (
    DEDUP_PER_ROOM,
    DEDUP_PER_TOKEN,
    DIRECTS_PER_TOKEN,
    INBOXES,
    MAX_RULES,
    READ_POSITIONS,
    Backend,
    ChannelBackend,
    ClusterInfo,
    Deliver,
    History,
    Holder,
    Kick,
    PersonChanged,
    Publishing,
    Registry,
    Rule,
    RuleDropped,
    RuleKind,
    RulesFull,
    Settled,
)
from chat_server.backends.nonces import RoomNonces
from chat_server.events import (
    REPLACED,
    SIGNALS,
    Duplicate,
    EventKind,
    RoomEvent,
    StoredMessage,
)
from chat_server.ops.settings import Settings

_MESSAGE, _JOIN, _LEAVE = EventKind.MESSAGE, EventKind.JOIN, EventKind.LEAVE
_NICK = EventKind.NICK
MESSAGE_OVERHEAD = 100  # what a kept message counts beyond its text: its name, time, offset
CHECK_EVERY = 16 * 1024  # characters added to a room's history between two weighings
FORWARDS = 8  # a former name's forwards followed at most (a -> b -> c ...)
_SIGNALS = SIGNALS
_now = time.time
_NOT_PRESENT = Settled(None)


def new_epoch() -> str:
    return secrets.token_hex(4)


class _Published(RoomEvent):
    """A memory publish is over when it returns: the event is its own settled result."""

    __slots__ = ()

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def result(self) -> _Published:
        return self

    def add_done_callback(self, callback: Callable[[Any], object]) -> None:
        callback(self)

    def __await__(self) -> Generator[Any, None, _Published]:
        return self
        yield  # a generator: awaiting it never suspends


def _size(message: StoredMessage) -> int:
    """What a kept message counts against the history bounds (see ``history_bytes``)."""
    text = message.text
    return (len(text) if text.isascii() else len(text.encode())) + MESSAGE_OVERHEAD


class _Room:
    __slots__ = (
        "added",
        "epoch",
        "kept_bytes",
        "members",
        "nonces",
        "offset",
        "ring",
        "serial",
        "touched",
    )

    def __init__(self, history_size: int) -> None:
        self.epoch = new_epoch()
        self.offset = 0
        self.serial = 0
        # name -> serial of its join; dict keeps insertion order: listings read in join order.
        self.members: dict[str, int] = {}
        self.ring: deque[StoredMessage] | None = (
            deque(maxlen=history_size) if history_size else None
        )
        self.kept_bytes = 0  # of the ring's messages when last weighed (see _State.weigh)
        self.added = 0  # characters of messages added since
        self.nonces = RoomNonces()  # de-duplication key -> (offset, time)
        self.touched = _now()


class _Name:
    __slots__ = ("away", "digest", "expires", "forward", "holds", "shown")

    def __init__(self, shown: str, digest: str | None) -> None:
        self.shown = shown  # the name as it is held (its case as chosen)
        self.away: str | None = None  # the away message while away
        self.digest = digest
        self.holds = 1  # connections that hold it
        self.expires = 0.0  # with no holds: reserved for its token until then
        self.forward: str | None = None  # a former name of its token: the name it became


class _State:
    """What the channels, the history and the registry of one memory backend share."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names: dict[str, _Name] = {}  # by name_key: unique whatever the case
        # Reserved names by expiry (expiry, name), to forget them in time order.
        self.reserved: deque[tuple[float, str]] = deque()
        self.rooms: dict[str, _Room] = {}
        self.idle: dict[str, None] = {}  # rooms without members, the longest idle first
        # Of them, those where nothing was ever said: forgotten first past the bound (a churn
        # of joins and leaves of new rooms pushed out the history of rooms that had one).
        self.idle_silent: dict[str, None] = {}
        # Kept as members join and leave: /health never walks the rooms.
        self.occupied = 0  # rooms with members
        self.present = 0  # members of rooms
        self.kept_bytes = 0  # every room's history together
        self.room_bound = settings.history_bytes
        self.total_bound = settings.history_total_bytes
        # (token id, room) -> (epoch, offset read), the least recently read first.
        self.read: OrderedDict[tuple[str, str], tuple[str, int]] = OrderedDict()
        # token id -> {conversation: who wrote last} (Registry.note_direct)
        self.inbox: OrderedDict[str, dict[str, str]] = OrderedDict()

    def bound_for(self, state: _Room, weight: int) -> int:
        """Take ``weight`` bytes as ``state``'s history now; the bound it must be brought
        within: its own, or its share of all rooms' once the idle ones are forgotten."""
        self.kept_bytes += weight - state.kept_bytes
        state.kept_bytes = weight
        room_bound = self.room_bound
        if self.kept_bytes > self.total_bound:
            self.forget_idle(until_within=True)
            if self.kept_bytes > self.total_bound:
                room_bound = min(room_bound, self.total_bound // len(self.rooms))
        return room_bound

    def weigh(self, room: str, state: _Room) -> None:
        """Weigh ``state``'s history in bytes and bring it within the bounds: the room's, then
        all rooms' (idle rooms go first, then this room keeps no more than its share); the
        oldest messages go. Messages are added without weighing (MemoryChannels.publish):
        this runs every CHECK_EVERY characters added, so a bound is passed by at most that
        much (times four, for text of four-byte characters) between two weighings."""
        ring = state.ring
        assert ring is not None
        state.added = 0
        room_bound = self.bound_for(state, sum(map(_size, ring)))
        while state.kept_bytes > room_bound and len(ring) > 1:
            size = _size(ring.popleft())
            state.kept_bytes -= size
            self.kept_bytes -= size

    def forget(self, room: str) -> None:
        """The room's state, history and all, is gone."""
        self.kept_bytes -= self.rooms.pop(room).kept_bytes

    def keeps_idle(self) -> bool:
        return self.settings.history_size > 0 and self.settings.history_rooms > 0

    def room_emptied(self, room: str, state: _Room) -> None:
        if not self.keeps_idle():
            self.forget(room)
            return
        if state.ring is not None:
            self.weigh(room, state)  # what idle rooms keep is counted exactly
        self.mark_idle(room, state)
        self.forget_idle()

    def mark_idle(self, room: str, state: _Room) -> None:
        """``room`` is kept without members (with ``idle_silent`` if nothing was said in it)."""
        self.idle[room] = None
        if state.offset == 0:
            self.idle_silent[room] = None

    def unmark_idle(self, room: str) -> None:
        """``room`` is idle no longer (entered again, or forgotten)."""
        self.idle.pop(room, None)
        self.idle_silent.pop(room, None)

    def forget_idle(self, until_within: bool = False) -> None:
        """Idle rooms past the bound or the ttl are forgotten: past the bound those where
        nothing was said first, then the longest idle (with ``until_within``, also until
        every history is within its total bound)."""
        idle, silent, rooms = self.idle, self.idle_silent, self.rooms
        limit = self.settings.history_rooms
        expired = _now() - self.settings.history_ttl
        while idle:
            if len(idle) > limit and silent:
                room = next(iter(silent))  # nothing to lose: before any history
            else:
                room = next(iter(idle))
                over = until_within and self.kept_bytes > self.total_bound
                if len(idle) <= limit and rooms[room].touched >= expired and not over:
                    break
            self.unmark_idle(room)
            self.forget(room)

    def live_room(self, room: str) -> _Room | None:
        """The room's state, unless it is idle past the ttl (it is then forgotten)."""
        state = self.rooms.get(room)
        expired = _now() - self.settings.history_ttl
        if state is not None and room in self.idle and state.touched < expired:
            self.unmark_idle(room)
            self.forget(room)
            return None
        return state


class MemoryChannels(ChannelBackend):
    def __init__(self, state: _State, node_id: str) -> None:
        self._state = state
        self._node_id = node_id
        self._deliver: Deliver | None = None

    def bind(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def subscribe(self, room: str) -> Awaitable[None]:
        # The hub is the only subscriber there is: live at once.
        live = asyncio.get_running_loop().create_future()
        live.set_result(None)
        return live

    def unsubscribe(self, room: str) -> None:
        pass

    def publish(
        self,
        room: str,
        kind: EventKind,
        name: str,
        text: str = "",
        nonce: str | None = None,
        ref: int | None = None,
    ) -> Publishing:
        state = self._state.rooms.get(room)
        if kind is _MESSAGE:
            joined = state.members.get(name) if state is not None else None
            if joined is None or (ref is not None and joined != ref):
                return _NOT_PRESENT  # not (or no longer) in the room: nobody is to hear it
            assert state is not None
            if nonce is not None:
                seen = state.nonces.get(nonce)
                if seen is not None:
                    return Settled(Duplicate(seen[0], state.epoch, seen[1]))
            state.offset += 1
        elif kind is _JOIN:
            state = self._joining(room, state, name)
        elif kind in _SIGNALS:
            joined = state.members.get(name) if state is not None else None
            if joined is None or (ref is not None and joined != ref):
                return _NOT_PRESENT
            assert state is not None
        elif kind is _NICK:
            joined = state.members.get(name) if state is not None else None
            if joined is None or (ref is not None and joined != ref):
                return _NOT_PRESENT
            assert state is not None
            if text in state.members:  # a stale entry of the new name: taken over
                self._state.present -= 1
            # Renamed in place: listings keep the join order.
            state.members = {
                (text if member == name else member): serial
                for member, serial in state.members.items()
                if member != text
            }
        elif (
            state is None
            or (joined := state.members.get(name)) is None
            or (ref is not None and joined != ref)
        ):
            return _NOT_PRESENT
        else:
            del state.members[name]
            self._state.present -= 1
            if not state.members:
                self._state.occupied -= 1
        now = _now()
        state.touched = now
        state.serial += 1
        event = _Published(
            kind, name, text, state.serial, state.offset, state.epoch, now, self._node_id, nonce
        )
        if kind is _MESSAGE:
            ring = state.ring
            if ring is not None:
                ring.append(StoredMessage(state.offset, name, text, now))
                # What was added since the history was last weighed, roughly (characters: the
                # weighing counts bytes); weighed again every CHECK_EVERY of it.
                state.added += len(text)
                if state.added > CHECK_EVERY:
                    self._state.weigh(room, state)
            if nonce is not None:
                _remember(state, nonce, (state.offset, now))
        elif kind is _JOIN:
            if not state.members:
                self._state.occupied += 1
            state.members[name] = state.serial
            self._state.present += 1
        elif kind not in _SIGNALS and not state.members:
            self._state.room_emptied(room, state)
        if self._deliver is not None:
            self._deliver(room, event)
        return event

    def _new_room(self) -> _Room:
        """A room's state when it comes into being (a subclass may keep more)."""
        return _Room(self._state.settings.history_size)

    def _joining(self, room: str, state: _Room | None, name: str) -> _Room:
        shared = self._state
        if state is not None and room in shared.idle:
            state = shared.live_room(room)
            shared.unmark_idle(room)
        if state is None:
            state = shared.rooms[room] = self._new_room()
        if name in state.members:
            # The same token's newer connection: the old one leaves first, as others see it.
            del state.members[name]
            shared.present -= 1
            if not state.members:
                shared.occupied -= 1
            state.serial += 1
            leave = _Published(
                _LEAVE, name, REPLACED, state.serial, state.offset, state.epoch, _now(),
                self._node_id,
            )  # fmt: skip
            if self._deliver is not None:
                self._deliver(room, leave)
        return state


def _remember(state: _Room, key: str, landed: tuple[int, float]) -> None:
    """Keep a published nonce (``nonces.RoomNonces``: its token's last DEDUP_PER_TOKEN, the
    room's DEDUP_PER_ROOM, the heaviest token's oldest forgotten first)."""
    state.nonces.remember(key, landed, DEDUP_PER_TOKEN, DEDUP_PER_ROOM)


class MemoryHistory(History):
    def __init__(self, state: _State) -> None:
        self._state = state

    async def latest(self, room: str, upto: int, count: int) -> list[StoredMessage]:
        state = self._state.rooms.get(room)
        if state is None or state.ring is None or count <= 0 or not state.ring:
            return []
        ring = state.ring
        end = min(len(ring), upto - ring[0].offset + 1)
        if end <= 0:
            return []
        return list(itertools.islice(ring, max(0, end - count), end))

    async def since(self, room: str, after: int, upto: int) -> list[StoredMessage] | None:
        if upto <= after:
            return [] if upto == after else None
        state = self._state.rooms.get(room)
        if state is None or state.ring is None or not state.ring:
            return None
        ring = state.ring
        first = ring[0].offset
        if first > after + 1 or ring[-1].offset < upto:
            return None
        return list(itertools.islice(ring, after + 1 - first, upto - first + 1))


def _held_by(record: _Name | None, digest: str) -> bool:
    """Whether ``record`` is a name (not a former one) of the token whose digest is
    ``digest``; constant time."""
    return (
        record is not None
        and record.forward is None
        and record.digest is not None
        and hmac.compare_digest(record.digest, digest)
    )


class MemoryRegistry(Registry):
    def __init__(self, state: _State) -> None:
        self._state = state

    def _current(self, name: str) -> _Name | None:
        """The name's record, unless it is a reservation that has run out (then forgotten)."""
        names, key = self._state.names, name_key(name)
        record = names.get(key)
        if record is not None and record.holds == 0 and record.expires <= _now():
            del names[key]
            return None
        return record

    def _forget_expired(self) -> None:
        reserved, now = self._state.reserved, _now()
        while reserved and reserved[0][0] <= now:
            _, name = reserved.popleft()
            self._current(name)

    async def claim_name(self, name: str, digest: str | None = None) -> bool:
        self._forget_expired()
        if self._current(name) is not None:
            return False
        self._state.names[name_key(name)] = _Name(name, digest)
        return True

    async def holder(self, name: str) -> Holder | None:
        record = self._followed(name)
        if record is None or record.forward is not None:
            return None
        return Holder(record.shown, record.digest)

    def _followed(self, name: str) -> _Name | None:
        """The record of the name ``name`` is now (following a former name's forwards)."""
        record = self._current(name)
        for _ in range(FORWARDS):
            if record is None or record.forward is None:
                break
            record = self._current(record.forward)
        return record

    async def resume_name(self, name: str, digest: str) -> str | None:
        record = self._followed(name)
        if not _held_by(record, digest):
            return None
        assert record is not None
        record.holds += 1
        return record.shown

    async def rename_name(self, old: str, new: str, digest: str) -> bool:
        names = self._state.names
        record = self._current(old)
        if not _held_by(record, digest):
            return False
        assert record is not None
        if name_key(old) == name_key(new):
            record.shown = new  # the same name in another case
            return True
        self._forget_expired()
        taken = self._current(new)
        if taken is not None and not (taken.holds == 0 and taken.digest == digest):
            return False  # someone's (a former name of the same token may be taken back)
        names[name_key(new)] = record
        del names[name_key(old)]
        record.shown = new
        reservation = self._state.settings.name_reservation
        if reservation > 0:
            # Kept for the token for a while: nobody can pose as it under the name it left,
            # and a connection resuming it meanwhile resumes the new one.
            former = names[name_key(old)] = _Name(old, digest)
            former.holds = 0
            former.forward = new
            former.expires = _now() + reservation
            self._state.reserved.append((former.expires, old))
        return True

    async def release_name(self, name: str) -> None:
        names = self._state.names
        record = self._followed(name)
        if record is None or record.forward is not None:
            return
        name, key = record.shown, name_key(record.shown)
        record.holds -= 1
        if record.holds > 0:
            return
        reservation = self._state.settings.name_reservation
        if record.digest is None or reservation <= 0:
            del names[key]
            return
        record.expires = _now() + reservation
        reserved = self._state.reserved
        reserved.append((record.expires, name))
        self._forget_expired()
        # Bounded in number (each costs memory): past it, the oldest reservation ends early.
        while len(reserved) > self._state.settings.max_reservations:
            expires, oldest = reserved.popleft()
            kept = self._current(oldest)
            if kept is not None and kept.holds == 0 and kept.expires == expires:
                del self._state.names[name_key(oldest)]

    async def set_away(self, name: str, message: str | None) -> None:
        record = self._current(name)
        if record is not None:
            record.away = message

    async def away(self, names: list[str]) -> dict[str, str]:
        records = ((name, self._current(name)) for name in names)
        return {n: r.away for n, r in records if r is not None and r.away is not None}

    async def read_position(self, token_id: str, room: str, epoch: str) -> int | None:
        kept = self._state.read.get((token_id, room))
        return kept[1] if kept is not None and kept[0] == epoch else None

    async def keep_read_position(self, token_id: str, room: str, epoch: str, offset: int) -> None:
        state = self._state.rooms.get(room)
        if state is None or state.epoch != epoch:
            return  # the numbering it was read in is gone
        read = self._state.read
        read[(token_id, room)] = (epoch, min(offset, state.offset))  # never past the newest
        read.move_to_end((token_id, room))
        while len(read) > READ_POSITIONS:
            read.popitem(last=False)

    async def note_direct(self, token_id: str, room: str, sender: str) -> None:
        inbox = self._state.inbox
        noted = inbox.get(token_id)
        if noted is None:
            noted = inbox[token_id] = {}
        inbox.move_to_end(token_id)
        if room in noted or len(noted) < DIRECTS_PER_TOKEN:
            noted[room] = sender
        while len(inbox) > INBOXES:
            inbox.popitem(last=False)

    async def directs(self, token_id: str) -> dict[str, str]:
        return dict(self._state.inbox.get(token_id, {}))

    async def clear_direct(self, token_id: str, room: str) -> None:
        noted = self._state.inbox.get(token_id)
        if noted is not None:
            noted.pop(room, None)
            if not noted:
                del self._state.inbox[token_id]

    async def count_address(self, address: str, limit: int) -> bool:
        return True  # one process: the node's own count (Node.admit) is the whole of it

    async def uncount_address(self, address: str) -> None:
        pass

    async def rooms(self, after: str = "", limit: int = ROOMS_PAGE) -> dict[str, int]:
        rooms = self._state.rooms
        page = heapq.nsmallest(
            limit,
            (
                room
                for room, state in rooms.items()
                if state.members and room > after and direct_peer(room) is None
            ),
        )
        return {room: len(rooms[room].members) for room in page}

    async def members(self, room: str) -> list[str]:
        state = self._state.rooms.get(room)
        return list(state.members) if state is not None else []

    async def cluster(self) -> ClusterInfo:
        return ClusterInfo(nodes=1, rooms=self._state.occupied, connections=self._state.present)


class MemoryBackend(Backend):
    kind = "memory"

    def __init__(self, settings: Settings, node_id: str) -> None:
        super().__init__(node_id)
        self._state = _State(settings)
        self.channels = MemoryChannels(self._state, node_id)
        self.registry = MemoryRegistry(self._state)
        self.history = MemoryHistory(self._state)
        self._rules: dict[tuple[RuleKind, str], Rule] = {}

    @property
    def url(self) -> str:
        return "memory://"

    async def keep_rule(self, rule: Rule) -> None:
        now = time.time()
        if (rule.kind, rule.key) not in self._rules and len(self._rules) >= MAX_RULES:
            self._rules = {k: r for k, r in self._rules.items() if r.live(now)}
            if len(self._rules) >= MAX_RULES:
                raise RulesFull
        self._rules[rule.kind, rule.key] = rule
        self._governed(rule)  # this node is every node there is

    async def drop_rule(self, kind: RuleKind, key: str) -> bool:
        if self._rules.pop((kind, key), None) is None:
            return False
        self._governed(RuleDropped(kind, key))
        return True

    async def rules(self) -> list[Rule]:
        now = time.time()
        return [rule for rule in self._rules.values() if rule.live(now)]

    async def kick(self, kick: Kick) -> None:
        self._governed(kick)

    async def start(self) -> None:
        pass

    async def announce(self, changed: PersonChanged) -> None:
        if self._on_person is not None:
            self._on_person(changed)  # this node is every node there is

    async def close(self) -> None:
        self._state.rooms.clear()
        self._state.kept_bytes = 0
        self._state.idle.clear()
        self._state.idle_silent.clear()
        self._state.occupied = self._state.present = 0
        self._state.names.clear()
