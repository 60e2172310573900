"""The channel backend on Redis: one pub/sub channel per room, every event from one script.

A publish runs the room event script (``scripts.py``), which advances the room's sequence,
updates its presence and history and publishes, in one atomic step; its command is put
together here from parts encoded once (this is the publish's hot path). Events come back on
the subscriber link and go to the hub.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
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
from chat_server.backends.redis.links import encode_bulk
from chat_server.backends.redis.scripts import SCRIPTS
from chat_server.events import Duplicate, EventKind

log = logging.getLogger("chat_server.redis")

ROOM_CACHE_SIZE = 4096


def room_event_keys(room: str) -> tuple[str, ...]:
    """The event script's keys before the member node's set (KEYS 1-4)."""
    return (keys.room_sequence(room), keys.room_presence(room), keys.room_nodes(room), keys.ROOMS)


def room_history_keys(room: str) -> tuple[str, ...]:
    """The event script's keys after the member node's set (KEYS 6-8)."""
    return (keys.room_history(room), keys.room_nonces(room), keys.room_nonce_order(room))


_KIND_BULKS = {kind: encode_bulk(code) for kind, code in codec.KIND_CODES.items()}
_NO_NONCE = encode_bulk(codec.NO_NONCE)
_IDLE_ROOMS = encode_bulk(keys.IDLE_ROOMS)
# EVALSHA {sha} 10 KEYS[1-10] ARGV[1-19]: 32 parts in all.
_ROOM_EVENT_HEAD = b"*32\r\n" + b"".join(
    map(encode_bulk, ("EVALSHA", SCRIPTS["room_event"].sha, "10"))
)


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
        self._room_cache: dict[str, tuple[bytes, bytes, bytes, bytes]] = {}
        self._retention_tail = b""
        self.incarnated()

    def connected(self, run_id: str) -> None:
        """Connected to the Redis process ``run_id`` (whose rooms' epochs are its own)."""
        settings = self._redis.settings
        # ARGV 13-19 of the event script: the same for every event while this Redis runs.
        self._retention_tail = b"".join(
            map(
                encode_bulk,
                (
                    settings.history_size,
                    DEDUP_PER_TOKEN,
                    keys.NODE_KEY_PREFIX,
                    DEDUP_PER_ROOM,
                    run_id,
                    settings.history_rooms,
                    keys.ROOM_KEY_PREFIX,
                ),
            )
        )

    def incarnated(self) -> None:
        """This node has a new id (``redis.node_id``, at start and after an outage)."""
        redis = self._redis
        node_id = redis.node_id
        # A room's epoch is this token and Redis's clock when its sequence starts: unique per
        # node incarnation and per start.
        epoch_token = secrets.token_hex(2)
        # The parts of the event script's command that are this node's, encoded once.
        self._own_member_parts = (encode_bulk(keys.node_members(node_id)), encode_bulk(node_id))
        ttl = max(1, round(redis.settings.history_ttl))
        self._own_tail = b"".join(map(encode_bulk, (node_id, epoch_token, ttl)))

    def bind(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def subscribe(self, room: str) -> asyncio.Future[None]:
        self.subscribed.add(room)
        return self._redis.pubsub.subscribe([keys.room_channel(room)])

    def unsubscribe(self, room: str) -> None:
        self.subscribed.discard(room)
        self._redis.pubsub.unsubscribe(keys.room_channel(room))

    def received(self, channel: bytes, data: bytes) -> bool:
        """A pub/sub message: a room's event goes to the hub. False if ``channel`` is not a
        room's."""
        if not channel.startswith(keys.ROOM_CHANNEL_PREFIX_BYTES):
            return False
        room = channel[len(keys.ROOM_CHANNEL_PREFIX_BYTES) :].decode()
        try:
            event = codec.decode(data)
        except codec.MalformedEvent as exc:
            # Skipped here; the next event's serial shows the room's members the gap.
            log.error("room=%s %s", room, exc)
            return True
        if self._deliver is not None:
            self._deliver(room, event)
        return True

    def publish(
        self,
        room: str,
        kind: EventKind,
        name: str,
        text: str = "",
        nonce: str | None = None,
        ref: int | None = None,
    ) -> asyncio.Future[Landed | Duplicate | None]:
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
    ) -> asyncio.Future[Landed | Duplicate | None]:
        """Issue the room event script now, for a member of ``member_node`` (this node's, or a
        dead node's that a reaper announces); the future gets where it landed, ``None`` if the
        member was not present."""
        redis = self._redis
        room_keys, history_keys, room_args, no_token = self._room_parts(room)
        if member_node == redis.node_id:
            members_key, member = self._own_member_parts
        else:
            members_key = encode_bulk(keys.node_members(member_node))
            member = encode_bulk(member_node)
        name_b, text_b = name.encode(), text.encode()
        if nonce is None:
            nonce_b, token_key = _NO_NONCE, no_token
        else:
            nonce_b = encode_bulk(codec.encode_nonce(nonce))
            token_key = encode_bulk(keys.room_token_nonces(room, dedup_token(nonce)))
        deadline = b"%d" % (redis.redis_now_ms() + redis.timeout * 1000)
        ref_b = b"-" if ref is None else b"%d" % ref
        # The hot path of a publish: KEYS 1-10, then ARGV 1-19 in the script's order.
        command = b"".join(
            (
                _ROOM_EVENT_HEAD,
                room_keys,
                members_key,
                history_keys,
                token_key,
                _IDLE_ROOMS,
                room_args,
                _KIND_BULKS[kind],
                member,
                b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(name_b), name_b, len(text_b), text_b),
                nonce_b,
                self._own_tail,
                b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(deadline), deadline, len(ref_b), ref_b),
                self._retention_tail,
            )
        )
        return redis.link.call_packed(command, self._reply)

    def _reply(self, reply: Any) -> Landed | Duplicate | None:
        redis = self._redis
        if isinstance(reply, NoScriptError):
            # Loaded on every connect: someone flushed Redis's scripts. Connect again.
            asyncio.get_running_loop().call_soon(
                redis.link.fail, "redis lost its scripts (SCRIPT FLUSH?)"
            )
            raise BrokerUnavailable("redis lost its scripts")
        if isinstance(reply, ResponseError):
            raise redis.refused(reply)
        if isinstance(reply, Exception):
            raise reply
        if len(reply) == 1:
            if reply[0] == -1:
                raise BrokerUnavailable(f"redis took over {redis.timeout:g} s to publish")
            return None
        serial, offset, epoch, time_ms = reply
        if serial == -2:
            return Duplicate(offset, epoch.decode(), time_ms / 1000)
        return Landed((serial, offset, epoch.decode(), time_ms / 1000))

    def _room_parts(self, room: str) -> tuple[bytes, bytes, bytes, bytes]:
        """The room's keys and arguments of the event script, encoded once (a hot path), and
        the KEYS[9] of a message without nonce (never written: any of the room's keys)."""
        parts = self._room_cache.get(room)
        if parts is None:
            if len(self._room_cache) >= ROOM_CACHE_SIZE:
                self._room_cache.clear()
            parts = self._room_cache[room] = (
                b"".join(map(encode_bulk, room_event_keys(room))),
                b"".join(map(encode_bulk, room_history_keys(room))),
                encode_bulk(keys.room_channel(room)) + encode_bulk(room),
                encode_bulk(keys.room_nonce_order(room)),
            )
        return parts
