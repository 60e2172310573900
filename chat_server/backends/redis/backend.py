"""``redis://``: the nodes of one chat share a Redis; this node's side of it.

What runs here, besides the two links (``links.py``):

* a **supervisor** that connects, declares the broker available only once commands, the
  subscription and a probe's round trip all work, and on any failure declares it unavailable
  (the app then closes its chat connections with 1013), reconnects every 0.2 s and, once
  Redis answers again, resubscribes this node's rooms;
* a **heartbeat**: this node's score in ``chat:nodes`` is renewed every third of
  ``node_ttl``; a node whose score lapsed is dead to the others;
* a **reaper**: dead nodes' members are announced as left (each once: the leave script
  removes the presence entry it announces) and their names freed;
* a **probe**: every ``probe_interval`` the node publishes to its own channel; an echo that
  does not come back within ``broker_timeout`` means the subscription silently stopped
  delivering (a proxy or failover can do that), which is a failure like any other;
* a **watchdog** for commands that go unanswered longer than ``broker_timeout``.

After an outage the node comes back under a new id (a new incarnation): what was registered
under the old one is reaped, by this node at once or by any other once it lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import NoScriptError, RedisError

from chat_server.backends.base import Backend, BrokerStatus, BrokerUnavailable, dedup_window
from chat_server.backends.redis import codec, keys
from chat_server.backends.redis.channels import RedisChannels
from chat_server.backends.redis.history import RedisHistory
from chat_server.backends.redis.links import (
    CommandLink,
    PubSubLink,
    connection_factory,
    describe,
    encode_bulk,
)
from chat_server.backends.redis.registry import RedisRegistry
from chat_server.backends.redis.scripts import SCRIPTS
from chat_server.events import Duplicate, EventKind
from chat_server.loop_lag import running_time
from chat_server.settings import Settings

log = logging.getLogger("chat_server.redis")

RETRY_INTERVAL = 0.2  # between reconnection attempts: back within 1 s of Redis answering
WATCH_INTERVAL = 0.1
# A room event is refused by Redis after its deadline; the node gives up a little later, so
# that "gave up" means "never published".
GIVE_UP_MARGIN = 0.25
REAP_BATCH = 16  # dead nodes handled per reaper round
ROOM_CACHE_SIZE = 4096


def room_event_keys(room: str) -> tuple[str, ...]:
    """The event script's keys before the member node's set (KEYS 1-4)."""
    return (keys.room_sequence(room), keys.room_presence(room), keys.room_nodes(room), keys.ROOMS)


def room_history_keys(room: str) -> tuple[str, ...]:
    """The event script's keys after the member node's set (KEYS 6-8)."""
    return (keys.room_history(room), keys.room_nonces(room), keys.room_nonce_order(room))


_KIND_BULKS = {kind: encode_bulk(code) for kind, code in codec.KIND_CODES.items()}
_NO_NONCE = encode_bulk(codec.NO_NONCE)
# EVALSHA {sha} 8 KEYS[1-8] ARGV[1-15]: 26 parts in all.
_ROOM_EVENT_HEAD = b"*26\r\n" + b"".join(
    map(encode_bulk, ("EVALSHA", SCRIPTS["room_event"].sha, "8"))
)


class Published(tuple[int, int, str, float]):
    """(serial, offset, epoch, time) of a room event, as the event script returned it."""

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


def masked(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


class RedisBackend(Backend):
    kind = "redis"

    def __init__(self, settings: Settings, node_id: str) -> None:
        super().__init__(node_id)
        self.settings = settings
        self._url = settings.broker_url
        self.timeout = settings.broker_timeout
        self.status = BrokerStatus(False, f"connecting to redis at {masked(settings.broker_url)}")
        make = connection_factory(settings.broker_url, settings.broker_timeout)
        self.link = CommandLink(make, self._link_failed)
        self.pubsub = PubSubLink(make, self._on_message, self._link_failed)
        self.channels = RedisChannels(self)
        self.registry = RedisRegistry(self)
        self.history = RedisHistory(self)
        self._become(node_id)
        self._registered = False
        self._clock_offset_ms = 0.0  # Redis's clock minus ours
        self._probes: dict[bytes, float] = {}  # probe token -> when it was sent
        self._probe_tokens = itertools.count()
        self._failure: asyncio.Future[str] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._reaping: set[asyncio.Task[None]] = set()
        self._room_cache: dict[str, tuple[bytes, bytes, bytes]] = {}
        # ARGV 13-15 of the event script: the same for every event of this node.
        self._retention_tail = b"".join(
            map(
                encode_bulk,
                (settings.history_size, dedup_window(settings.history_size), keys.NODE_KEY_PREFIX),
            )
        )

    @property
    def url(self) -> str:
        return masked(self._url)

    async def start(self) -> None:
        """Connect in the background: until Redis answers, the node is unavailable."""
        self._supervisor = asyncio.create_task(self._supervise())

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for task in list(self._reaping):
            task.cancel()
        if self.link.up:
            # Leaving the cluster: whatever is still registered here is announced and freed
            # now rather than when the heartbeat lapses.
            with contextlib.suppress(BrokerUnavailable, RedisError, TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await self.link.call("ZADD", keys.NODES, "XX", 0, self.node_id)
                    await self.reap(self.node_id)
        await self.link.close()
        await self.pubsub.close()

    # --- scripts and events ---------------------------------------------------------------

    async def script(self, name: str, keys_: list[str], args: list[Any]) -> Any:
        script = SCRIPTS[name]
        try:
            return await self.link.call("EVALSHA", script.sha, len(keys_), *keys_, *args)
        except NoScriptError:  # Redis lost its script cache (a restart, SCRIPT FLUSH)
            return await self.link.call("EVAL", script.source, len(keys_), *keys_, *args)

    @property
    def reservation_ms(self) -> int:
        return round(self.settings.name_reservation * 1000)

    def redis_now_ms(self) -> float:
        return time.time() * 1000 + self._clock_offset_ms

    def _become(self, node_id: str) -> None:
        """Take ``node_id`` (at start, and as a new incarnation after an outage)."""
        self.node_id = node_id
        self._node_channel = keys.node_channel(node_id).encode()
        # A room's epoch is this token and Redis's clock when its sequence starts: unique
        # per node incarnation and per start.
        epoch_token = secrets.token_hex(2)
        # The parts of the event script's command that are this node's, encoded once.
        self._own_member_parts = (encode_bulk(keys.node_members(node_id)), encode_bulk(node_id))
        ttl = max(1, round(self.settings.history_ttl))
        self._own_tail = b"".join(map(encode_bulk, (node_id, epoch_token, ttl)))

    def room_event(
        self,
        room: str,
        kind: EventKind,
        member_node: str,
        name: str,
        text: str = "",
        nonce: str | None = None,
        ref: int | None = None,
    ) -> asyncio.Future[Published | Duplicate | None]:
        """Issue the room event script (sequence, presence, history and publish in one step)
        now; the future gets where it landed, ``None`` if the member was not present."""
        room_keys, history_keys, room_args = self._room_parts(room)
        if member_node == self.node_id:
            members_key, member = self._own_member_parts
        else:  # a reaper announcing another node's member
            members_key = encode_bulk(keys.node_members(member_node))
            member = encode_bulk(member_node)
        name_b, text_b = name.encode(), text.encode()
        nonce_b = _NO_NONCE if nonce is None else encode_bulk(codec.encode_nonce(nonce))
        deadline = b"%d" % (self.redis_now_ms() + self.timeout * 1000)
        ref_b = b"-" if ref is None else b"%d" % ref
        # The hot path of a publish: KEYS 1-8, then ARGV 1-15 in the script's order.
        command = b"".join(
            (
                _ROOM_EVENT_HEAD,
                room_keys,
                members_key,
                history_keys,
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
        return self.link.call_packed(command, self._room_event_reply)

    def _room_event_reply(self, reply: Any) -> Published | Duplicate | None:
        if isinstance(reply, NoScriptError):
            # Loaded on every connect: someone flushed Redis's scripts. Connect again.
            asyncio.get_running_loop().call_soon(
                self.link.fail, "redis lost its scripts (SCRIPT FLUSH?)"
            )
            raise BrokerUnavailable("redis lost its scripts")
        if isinstance(reply, Exception):
            raise reply
        if len(reply) == 1:
            if reply[0] == -1:
                raise BrokerUnavailable(f"redis took over {self.timeout:g} s to publish")
            return None
        serial, offset, epoch, time_ms = reply
        if serial == -2:
            return Duplicate(offset, epoch.decode(), time_ms / 1000)
        return Published((serial, offset, epoch.decode(), time_ms / 1000))

    def _room_parts(self, room: str) -> tuple[bytes, bytes, bytes]:
        """The room's keys and arguments of the event script, encoded once (a hot path)."""
        parts = self._room_cache.get(room)
        if parts is None:
            if len(self._room_cache) >= ROOM_CACHE_SIZE:
                self._room_cache.clear()
            parts = self._room_cache[room] = (
                b"".join(map(encode_bulk, room_event_keys(room))),
                b"".join(map(encode_bulk, room_history_keys(room))),
                encode_bulk(keys.room_channel(room)) + encode_bulk(room),
            )
        return parts

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel.startswith(keys.ROOM_CHANNEL_PREFIX_BYTES):
            room = channel[len(keys.ROOM_CHANNEL_PREFIX_BYTES) :].decode()
            try:
                event = codec.decode(data)
            except codec.MalformedEvent as exc:
                # Skipped here; the next event's serial shows the room's members the gap.
                log.error("room=%s %s", room, exc)
                return
            self.channels.deliver(room, event)
        elif channel == self._node_channel:
            self._probes.pop(data, None)

    # --- supervision ------------------------------------------------------------------------

    def _link_failed(self, reason: str) -> None:
        if self._failure is not None and not self._failure.done():
            self._failure.set_result(reason)
        # At once, not when the supervisor next runs: nobody may publish into the void.
        self._set_status(BrokerStatus(False, reason))

    async def _supervise(self) -> None:
        outage_logged = False
        while True:
            self._failure = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self.timeout):
                    await self._connect()
            except Exception as exc:  # whatever it is, the node keeps trying: never silently
                reason = f"cannot reach redis at {self.url}: {describe(exc)}"
                if not isinstance(exc, OSError | RedisError | BrokerUnavailable | TimeoutError):
                    log.exception("unexpected error connecting to redis")
                log.debug("%s", reason)
                if not outage_logged:
                    log.warning("%s; retrying every %g s", reason, RETRY_INTERVAL)
                    outage_logged = True
                self._drop_links(reason)
                self._set_status(BrokerStatus(False, reason))
                await asyncio.sleep(RETRY_INTERVAL)
                continue
            outage_logged = False
            self._set_status(BrokerStatus(True))
            reason = await self._watch(self._failure)
            log.warning("redis at %s failed: %s", self.url, reason)
            self._drop_links(reason)
            self._set_status(BrokerStatus(False, reason))
            await asyncio.sleep(RETRY_INTERVAL)

    def _drop_links(self, reason: str) -> None:
        self.link.fail(reason)
        self.pubsub.fail(reason)
        self._probes.clear()

    async def _connect(self) -> None:
        if self._registered:
            # A new incarnation: whatever the old one registered is reaped, not resumed.
            old = self.node_id
            self._become(f"{old.rsplit('-', 1)[0]}-{secrets.token_hex(3)}")
            self._spawn_reap(old, expire_first=True)
            self._registered = False
        await self.link.connect(f"chat:{self.node_id}:commands")
        await self.pubsub.connect(f"chat:{self.node_id}:pubsub")
        await asyncio.gather(
            *(self.link.call("SCRIPT", "LOAD", s.source) for s in SCRIPTS.values())
        )
        await self._heartbeat(register=True)
        channels = [self._node_channel.decode()]
        channels += [keys.room_channel(room) for room in self.channels.subscribed]
        await self.pubsub.subscribe(channels)
        # The whole path, end to end, before anyone is told it works.
        await self._probe()
        while self._probes:
            await asyncio.sleep(0.005)
        self._registered = True

    async def _watch(self, failure: asyncio.Future[str]) -> str:
        loops = [
            asyncio.create_task(self._every(self.settings.node_ttl / 3, self._heartbeat)),
            asyncio.create_task(self._every(self.settings.probe_interval, self._probe)),
            asyncio.create_task(self._every(self.settings.node_ttl / 3, self._reap_dead)),
            asyncio.create_task(self._every(WATCH_INTERVAL, self._check_timeouts)),
        ]
        try:
            done, _ = await asyncio.wait([failure, *loops], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in loops:
                task.cancel()
        if failure.done():
            return failure.result()
        exc = next(iter(done)).exception()
        return describe(exc) if exc is not None else "stopped"

    async def _every(self, interval: float, step: Any) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await step()
            except BrokerUnavailable as exc:
                self._link_failed(str(exc))
                return
            except RedisError as exc:
                self._link_failed(f"redis error: {describe(exc)}")
                return

    async def _heartbeat(self, register: bool = False) -> None:
        sent = time.time() * 1000
        ttl_ms = int(self.settings.node_ttl * 1000)
        ok, now = await self.script(
            "heartbeat", [keys.NODES], [self.node_id, ttl_ms, "1" if register else "0"]
        )
        self._clock_offset_ms = now - (sent + time.time() * 1000) / 2
        if not ok:
            raise BrokerUnavailable(
                f"this node missed its heartbeats for over {self.settings.node_ttl:g} s "
                f"and was declared dead"
            )

    async def _probe(self) -> None:
        token = str(next(self._probe_tokens)).encode()
        self._probes[token] = running_time()
        await self.link.call("PUBLISH", self._node_channel, token)

    async def _check_timeouts(self) -> None:
        limit = self.timeout + GIVE_UP_MARGIN
        waited = self.link.oldest_wait()
        if waited > limit:
            raise BrokerUnavailable(f"redis did not answer for {waited:.1f} s")
        if self._probes:
            age = running_time() - min(self._probes.values())
            if age > limit:
                raise BrokerUnavailable(
                    f"the subscription stopped delivering (no probe echo for {age:.1f} s)"
                )

    # --- reaping ------------------------------------------------------------------------------

    async def _reap_dead(self) -> None:
        dead = await self.script("dead_nodes", [keys.NODES], [REAP_BATCH])
        for node in dead:
            await self.reap(node.decode())

    def _spawn_reap(self, node: str, expire_first: bool = False) -> None:
        async def reap() -> None:
            with contextlib.suppress(BrokerUnavailable, RedisError):
                while not self.status.available:
                    await asyncio.sleep(RETRY_INTERVAL)
                if expire_first:
                    await self.link.call("ZADD", keys.NODES, "XX", 0, node)
                await self.reap(node)

        task = asyncio.create_task(reap())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def reap(self, node: str) -> None:
        """Announce a dead node's members as left, free its names and forget it."""
        entries = await self.link.call("SMEMBERS", keys.node_members(node))
        announced = 0
        for entry in entries:
            room, _, name = entry.decode().partition(" ")
            if await self.room_event(room, EventKind.LEAVE, node, name) is not None:
                announced += 1
        forgotten = await self.script(
            "forget_node",
            [keys.NODES, keys.node_members(node), keys.node_names(node)],
            [node, keys.NAME_KEY_PREFIX, self.reservation_ms],
        )
        if announced:
            log.warning("reaped node=%s left=%d", node, announced)
        elif forgotten:
            log.info("forgot node=%s", node)
