"""The channel backend on Redis: one pub/sub channel per room, every event from one script.

A publish runs the room events script (``scripts.py``), which advances the room's sequence,
updates its presence and history and publishes, in one atomic step. The events a node issues
for one room before its command link next writes go in one call of it, and come back in one
pub/sub message (``codec.py``): under load a call carries many, so that Redis, and this
process, pay for a call once for all of them. The call is put together here from parts
encoded once (this is the publish's hot path). Events come back on the subscriber link and
go to the hub.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Generator
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from chat_server.backends.base import (
    DEDUP_PER_ROOM,
    DEDUP_PER_TOKEN,
    BrokerUnavailable,
    ChannelBackend,
    Deliver,
    dedup_token,
)
from chat_server.backends.redis import codec, keys
from chat_server.backends.redis.context import RedisContext
from chat_server.backends.redis.links import Gathered, encode_bulk
from chat_server.backends.redis.scripts import SCRIPTS
from chat_server.events import Duplicate, EventKind

log = logging.getLogger("chat_server.redis")

ROOM_CACHE_SIZE = 4096
ROOM_OCCUPIED = 1  # a cluster's event call's state: a join made or kept the room occupied


def room_event_keys(layout: keys.Layout, room: str) -> tuple[str, ...]:
    """The event script's keys of the room (KEYS 1-8; in a cluster, 4 and 8 are not used
    there and stand in as keys of the room's slot)."""
    sequence = layout.room_sequence(room)
    return (
        sequence,
        layout.room_presence(room),
        layout.room_nodes(room),
        sequence if layout.cluster else layout.rooms,
        layout.room_history(room),
        layout.room_nonces(room),
        layout.room_nonce_tokens(room),
        sequence if layout.cluster else layout.idle_rooms,
    )


_KIND_BULKS = {kind: encode_bulk(code) for kind, code in codec.KIND_CODES.items()}
_MESSAGE = EventKind.MESSAGE
_MESSAGE_BULK = _KIND_BULKS[_MESSAGE]
_NO_NONCE = encode_bulk(codec.NO_NONCE)
_NO_REF = encode_bulk("-")
_ROOM_EVENTS_HEAD = b"".join(map(encode_bulk, ("EVALSHA", SCRIPTS["room_events"].sha)))
ROOM_KEYS, FIXED_ARGS, KEYS_PER_EVENT, ARGS_PER_EVENT = 8, 15, 2, 6
# Events in one script call at most (a burst makes several): bounds the call's time in Redis
# and its Lua stack (a call unpacks its nonces).
MAX_BATCH = 128
# Times a room's call may be sent again elsewhere by a cluster (MOVED, ASK, TRYAGAIN): a
# migration takes one or two; TRYAGAIN waits TRYAGAIN_DELAY each (cluster.py).
MAX_REDIRECTS = 40


class Landed(tuple[int, int, str, float]):
    """Where a room event landed: (serial, offset, epoch, time), as the event script returned
    it (an ``events.Published``)."""

    __slots__ = ()
    duplicate = False

    @property
    def serial(self) -> int:
        return self[0]

    @property
    def offset(self) -> int:
        return self[1]

    @property
    def epoch(self) -> str:
        return self[2]

    @property
    def time(self) -> float:
        return self[3]


class RedisChannels(ChannelBackend):
    def __init__(self, redis: RedisContext) -> None:
        self._redis = redis
        self._deliver: Deliver | None = None
        # The rooms the hub wants: resubscribed whenever the subscriber connects again.
        self.subscribed: set[str] = set()
        self._room_cache: dict[str, tuple[bytes, bytes, bytes]] = {}
        self._senders: dict[tuple[str, str, int | None], tuple[bytes, bytes, bytes]] = {}
        # Each room's script call that still takes events (until the link's writer seals it).
        self._gathering: dict[str, _RoomBatch] = {}
        # ARGV 6-12 of the event script, per Redis process (a cluster's masters each have
        # their run_id): the same for every call while that process runs.
        self._retention_tails: dict[str, bytes] = {}
        self._directory: set[asyncio.Task[None]] = set()  # a cluster's directory steps
        self._split_mode = redis.routes.cluster
        # ARGV 14 and 15: whether in a cluster, the room's history bound in bytes.
        self._call_tail = encode_bulk("1" if self._split_mode else "0") + encode_bulk(
            redis.settings.history_bytes
        )
        self.incarnated()

    def connected(self) -> None:
        """Connected to Redis again: its processes' run_ids are the routes' now."""
        self._retention_tails = {}
        self._room_cache = {}

    def _retention_tail(self, run_id: str) -> bytes:
        tail = self._retention_tails.get(run_id)
        if tail is None:
            settings, layout = self._redis.settings, self._redis.keys
            tail = self._retention_tails[run_id] = b"".join(
                map(
                    encode_bulk,
                    (
                        settings.history_size,
                        DEDUP_PER_TOKEN,
                        layout.node_key_prefix,
                        DEDUP_PER_ROOM,
                        run_id,
                        settings.history_rooms,
                        layout.room_key_prefix,
                    ),
                )
            )
        return tail

    def incarnated(self) -> None:
        """This node has a new id (``redis.node_id``, at start and after an outage)."""
        redis = self._redis
        node_id = redis.node_id
        # A room's epoch is this token and Redis's clock when its sequence starts: unique per
        # node incarnation and per start.
        epoch_token = secrets.token_hex(2)
        # The parts of the event script's command that are this node's, encoded once.
        self._own_member_parts = (
            encode_bulk(redis.keys.node_members(node_id)),
            encode_bulk(node_id),
        )
        self._senders = {}
        ttl = max(1, round(redis.settings.history_ttl))
        # ARGV 3-5: origin, epoch token, ttl.
        self._own_tail = b"".join(map(encode_bulk, (node_id, epoch_token, ttl)))

    def bind(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def subscribe(self, room: str) -> asyncio.Future[None]:
        self.subscribed.add(room)
        redis = self._redis
        channel = redis.keys.room_channel(room)
        if not redis.routes.cluster:
            return redis.routes.subscribe([channel])
        return asyncio.ensure_future(self._subscribe_in_cluster(room, channel))

    async def _subscribe_in_cluster(self, room: str, channel: str) -> None:
        """In a cluster, the room goes in this node's rooms (what a reaper reads: no member
        sets there) before the subscription is live, and so before any member's join."""
        redis = self._redis
        await redis.call("SADD", redis.keys.node_rooms(redis.node_id), room)
        await redis.routes.subscribe([channel])

    def unsubscribe(self, room: str) -> None:
        self.subscribed.discard(room)
        # (In a cluster the room stays in the node's rooms: a member's leave may still be on
        # its way, and the set goes with the node.)
        self._redis.routes.unsubscribe(self._redis.keys.room_channel(room))

    def received(self, channel: bytes, data: bytes) -> bool:
        """A pub/sub message: a room's events go to the hub. False if ``channel`` is not a
        room's."""
        room = self._redis.keys.room_of_channel(channel)
        if room is None:
            return False
        try:
            events = codec.decode(data)
        except codec.MalformedEvent as exc:
            # Skipped here; the next event's serial shows the room's members the gap.
            log.error("room=%s %s", room, exc)
            return True
        deliver = self._deliver
        if deliver is not None:
            for event in events:
                deliver(room, event)
        return True

    def publish(
        self,
        room: str,
        kind: EventKind,
        name: str,
        text: str = "",
        nonce: str | None = None,
        ref: int | None = None,
    ) -> _Landing:
        return self.room_event(room, kind, self._redis.node_id, name, text, nonce, ref)

    def room_event(
        self,
        room: str,
        kind: EventKind,
        member_node: str,
        name: str,
        text: str = "",
        nonce: str | None = None,
        ref: int | None = None,
    ) -> _Landing:
        """Issue the room event now, for a member of ``member_node`` (this node's, or a dead
        node's that a reaper announces); what it returns gets where it landed, ``None`` if
        the member was not present. Events for one room issued before the link writes go in
        one script call, in the order issued, at the place of the first."""
        batch = self._gathering.get(room)
        if batch is None or batch.sealed or len(batch.landings) >= MAX_BATCH:
            down = self._redis.routes.down_reason
            if down is not None:
                failed = _Landing()
                failed.settle(error=BrokerUnavailable(down))
                return failed
            batch = self._open_batch(room)
        # The hot path of a publish: this event's KEYS and its ARGV, in the script's order
        # (the parts that are the sender's, encoded once per sender).
        sender = self._senders.get((member_node, name, ref))
        if sender is None:
            sender = self._sender(member_node, name, ref)
        members_key, member_and_name, ref_b = sender
        if self._split_mode:
            members_key = batch.no_token  # a key of the room's slot: member sets are not kept
        text_b = text.encode()
        if nonce is None:
            nonce_b, token_key = _NO_NONCE, batch.no_token
        else:
            nonce_b = encode_bulk(codec.encode_nonce(nonce))
            token_key = encode_bulk(self._redis.keys.room_token_nonces(room, dedup_token(nonce)))
        batch.keys.append(members_key + token_key)
        batch.args.append(
            b"%b%b$%d\r\n%b\r\n%b%b"
            % (
                # A message's is the common case: Enum's hash is a Python call.
                _MESSAGE_BULK if kind is _MESSAGE else _KIND_BULKS[kind],
                member_and_name,
                len(text_b),
                text_b,
                nonce_b,
                ref_b,
            )
        )
        landing = _Landing()
        batch.landings.append(landing)
        return landing

    def _sender(self, member_node: str, name: str, ref: int | None) -> tuple[bytes, bytes, bytes]:
        """The event script's parts that are one sender's: its node's members key, its node
        and name (ARGV), its ref."""
        if len(self._senders) >= ROOM_CACHE_SIZE:
            self._senders.clear()
        if member_node == self._redis.node_id:
            members_key, member = self._own_member_parts
        else:
            members_key = encode_bulk(self._redis.keys.node_members(member_node))
            member = encode_bulk(member_node)
        parts = self._senders[(member_node, name, ref)] = (
            members_key,
            member + encode_bulk(name),
            _NO_REF if ref is None else encode_bulk(ref),
        )
        return parts

    def _open_batch(self, room: str) -> _RoomBatch:
        room_keys, room_args, no_token, room_key = self._room_parts(room)
        redis = self._redis
        deadline = b"%d" % (redis.redis_now_ms() + redis.timeout * 1000)
        fixed = self._retention_tail(redis.routes.run_id(room_key)) + encode_bulk(deadline)
        batch = _RoomBatch(
            self, room, room_keys, room_args, no_token, fixed + self._call_tail, room_key
        )
        self._gathering[room] = batch
        issued = redis.routes.call_gathered(room_key, batch, batch.landed)
        issued.add_done_callback(batch.settled)
        return batch

    def _sealed(self, batch: _RoomBatch) -> None:
        if self._gathering.get(batch.room) is batch:
            del self._gathering[batch.room]

    def _landed(self, reply: Any, landings: list[_Landing], room: str) -> None:
        """Each event's outcome, from the script's reply (see scripts.ROOM_EVENTS)."""
        redis = self._redis
        if isinstance(reply, NoScriptError):
            # Loaded on every connect: someone flushed Redis's scripts. Connect again.
            asyncio.get_running_loop().call_soon(
                redis.routes.fail, "redis lost its scripts (SCRIPT FLUSH?)"
            )
            raise BrokerUnavailable("redis lost its scripts")
        if isinstance(reply, ResponseError):
            raise redis.refused(reply)
        if isinstance(reply, Exception):
            raise reply
        index = 2 + 3 * len(landings)
        if len(reply) > index + 2 or (len(reply) > index and reply[index]):
            # A cluster's room that a join or a leave changed: the directory's side, in its
            # own slot (scripts.ROOM_STATE). A join's outcome waits for it, so that whoever
            # was told "joined" finds the room listed and counted; a leave's does not, so
            # that its name (released once it lands) is free as soon as the leave is seen.
            if reply[index] != ROOM_OCCUPIED:
                self._settle(reply, landings)
                landings = []
            task = asyncio.get_running_loop().create_task(
                self._directory_step(room, reply, index, landings)
            )
            self._directory.add(task)
            task.add_done_callback(self._directory.discard)
            return
        self._settle(reply, landings)

    def _settle(self, reply: Any, landings: list[_Landing]) -> None:
        epoch = reply[0].decode()
        time = reply[1] / 1000
        index = 2
        for landing in landings:
            serial, offset, when = reply[index], reply[index + 1], reply[index + 2]
            index += 3
            if serial > 0:
                landing.settle(Landed((serial, offset, epoch, time)))
            elif serial == 0:
                landing.settle(None)
            elif serial == -2:
                landing.settle(Duplicate(offset, epoch, when / 1000))
            else:
                landing.settle(
                    error=BrokerUnavailable(f"redis took over {self._redis.timeout:g} s to publish")
                )

    async def _directory_step(
        self, room: str, reply: Any, index: int, landings: list[_Landing]
    ) -> None:
        redis = self._redis
        layout = redis.keys
        state, serial, deltas = reply[index], reply[index + 1], reply[index + 2 :]
        try:
            forget = await redis.script(
                "room_state",
                [layout.rooms, layout.idle_rooms, layout.room_states, layout.node_member_counts],
                [room, reply[1], serial, state, redis.settings.history_rooms, *deltas],
            )
            if landings:
                self._settle(reply, landings)
            for idle in forget:
                idle_room = idle.decode()
                await redis.script(
                    "forget_room",
                    [
                        layout.room_sequence(idle_room),
                        layout.room_history(idle_room),
                        layout.room_nonces(idle_room),
                        layout.room_nonce_tokens(idle_room),
                        layout.room_presence(idle_room),
                    ],
                    [],
                )
        except BrokerUnavailable as exc:
            # The broker is failing: everyone is told by that. The index is a directory (who
            # is where is the rooms' presence); the room's next join or leave sets it right.
            log.info("room=%s directory step not done: %s", room, exc)
        finally:
            if landings and not landings[0].done():
                self._settle(reply, landings)  # the events were published all the same

    def _room_parts(self, room: str) -> tuple[bytes, bytes, bytes, str]:
        """The room's keys and arguments of the event script, encoded once (a hot path), the
        token key of a message without nonce (never written: any of the room's keys), and a
        key of the room (its slot, in a cluster)."""
        parts = self._room_cache.get(room)
        if parts is None:
            if len(self._room_cache) >= ROOM_CACHE_SIZE:
                self._room_cache.clear()
            layout = self._redis.keys
            sequence = layout.room_sequence(room)
            parts = self._room_cache[room] = (
                b"".join(map(encode_bulk, room_event_keys(layout, room))),
                encode_bulk(layout.room_channel(room)) + encode_bulk(room),
                encode_bulk(layout.room_nonce_tokens(room)),
                sequence,
            )
        return parts


class _RoomBatch(Gathered):
    """One room's events in one script call, taken until the link's writer seals it."""

    __slots__ = (
        "args",
        "channels",
        "fixed",
        "keys",
        "landings",
        "no_token",
        "packed",
        "redirects",
        "room",
        "room_args",
        "room_key",
        "room_keys",
    )

    def __init__(
        self,
        channels: RedisChannels,
        room: str,
        room_keys: bytes,
        room_args: bytes,
        no_token: bytes,
        fixed: bytes,
        room_key: str,
    ) -> None:
        super().__init__()
        self.fixed = fixed  # ARGV 6-15
        self.room_key = room_key  # a key of the room's slot
        self.packed = b""  # the call as written, once sealed
        self.redirects = 0  # times a cluster sent it elsewhere
        self.channels = channels
        self.room = room
        self.room_keys = room_keys
        self.room_args = room_args
        self.no_token = no_token
        self.keys: list[bytes] = []
        self.args: list[bytes] = []
        self.landings: list[_Landing] = []

    def seal(self) -> bytes:
        self.sealed = True
        channels = self.channels
        channels._sealed(self)
        count = len(self.landings)
        # EVALSHA sha numkeys, KEYS, ARGV (counted in arguments: some parts hold two).
        nkeys = ROOM_KEYS + KEYS_PER_EVENT * count
        parts = 3 + nkeys + FIXED_ARGS + ARGS_PER_EVENT * count
        self.packed = b"".join(
            (
                b"*%d\r\n" % parts,
                _ROOM_EVENTS_HEAD,
                encode_bulk(nkeys),
                self.room_keys,
                *self.keys,
                self.room_args,
                channels._own_tail,
                self.fixed,
                *self.args,
            )
        )
        return self.packed

    def landed(self, reply: Any) -> None:
        if isinstance(reply, ResponseError) and self.redirects < MAX_REDIRECTS:
            # A cluster's slot that moved or is moving: the call did not run; sent again
            # where the slot is (in order with the room's later calls, which come back the
            # same way). Past a few, as any refusal: the broker is failing.
            resent = self.channels._redis.routes.resend(
                self.room_key, self.packed, reply, self.landed
            )
            if resent is not None:
                self.redirects += 1
                resent.add_done_callback(self.settled)
                return
        self.channels._landed(reply, self.landings, self.room)

    def settled(self, issued: asyncio.Future[None]) -> None:
        """The call is over: if it failed (the link went down, an error reply), so did each
        of its events."""
        self.sealed = True
        self.channels._sealed(self)
        if issued.cancelled():
            exc: BaseException = BrokerUnavailable("cancelled")
        else:
            exc_or_none = issued.exception()
            if exc_or_none is None:
                return
            exc = exc_or_none
        for landing in self.landings:
            if not landing.done():
                landing.settle(error=exc)


class _Landing:
    """A room event's outcome, once its script call is answered (a ``Publishing``). Not an
    asyncio future: one is made per event, and a future's callbacks each cost a turn of the
    loop; these are called at once, in order, when the reply is read."""

    __slots__ = ("_callbacks", "_error", "_settled", "_value")

    def __init__(self) -> None:
        self._settled = False
        self._value: Landed | Duplicate | None = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Any], object]] = []

    def done(self) -> bool:
        return self._settled

    def cancelled(self) -> bool:
        return False

    def result(self) -> Landed | Duplicate | None:
        if self._error is not None:
            raise self._error
        return self._value

    def add_done_callback(self, callback: Callable[[Any], object]) -> None:
        if self._settled:
            callback(self)
        else:
            self._callbacks.append(callback)

    def settle(
        self, value: Landed | Duplicate | None = None, error: BaseException | None = None
    ) -> None:
        self._settled, self._value, self._error = True, value, error
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:  # one publisher's trouble must not stop the link's reader
                log.exception("a publish's callback failed")

    def __await__(self) -> Generator[Any, None, Landed | Duplicate | None]:
        if not self._settled:
            waiter = asyncio.get_running_loop().create_future()
            self.add_done_callback(lambda _: waiter.done() or waiter.set_result(None))
            yield from waiter
        return self.result()
