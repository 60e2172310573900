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

On a Redis Cluster (``redis+cluster://``) the same runs over the links to every master
(``cluster.py``, ``routes.py``), with the cluster's key layout (``keys.py``): a probe per
master, and a failure of any master's link is the broker failing, as with one Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import RedisError

from chat_server.backends.base import (
    MAX_RULES,
    Backend,
    BrokerStatus,
    BrokerUnavailable,
    Change,
    Kick,
    PersonChanged,
    Rule,
    RuleDropped,
    RuleKind,
    RulesFull,
    governed_from_json,
    governed_to_json,
)
from chat_server.backends.redis.channels import RedisChannels
from chat_server.backends.redis.cluster import Address, ClusterLinks
from chat_server.backends.redis.context import RedisContext, hash_pairs
from chat_server.backends.redis.history import RedisHistory
from chat_server.backends.redis.links import (
    CommandLink,
    PubSubLink,
    connection_factory,
    describe,
)
from chat_server.backends.redis.registry import RedisRegistry
from chat_server.backends.redis.routes import ClusterRoutes, Routes, SingleRoutes
from chat_server.backends.redis.scripts import SCRIPTS
from chat_server.backends.urls import CLUSTER_SCHEME, scheme_of
from chat_server.events import EventKind
from chat_server.loop_lag import running_time
from chat_server.ops.settings import Settings

log = logging.getLogger("chat_server.redis")

RETRY_INTERVAL = 0.2  # between reconnection attempts: back within 1 s of Redis answering
WATCH_INTERVAL = 0.1
# A room event is refused by Redis after its deadline; the node gives up a little later, so
# that "gave up" means "never published".
GIVE_UP_MARGIN = 0.25
REAP_BATCH = 16  # dead nodes handled per reaper round
# A cluster node's probe channels: tried in turn for one whose slot each master owns.
PROBE_PARTS = 4096


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
        routes: Routes
        if scheme_of(settings.broker_url) == CLUSTER_SCHEME:
            self._single: SingleRoutes | None = None
            self._cluster: ClusterRoutes | None = ClusterRoutes(self._new_cluster_links())
            routes = self._cluster
        else:
            make = connection_factory(settings.broker_url, settings.broker_timeout)
            link = CommandLink(make, self._link_failed)
            pubsub = PubSubLink(make, self._on_message, self._link_failed)
            queries = CommandLink(make, self._link_failed)
            self._single, self._cluster = SingleRoutes(link, pubsub, queries), None
            routes = self._single
        self.redis = RedisContext(settings, node_id, routes)
        self.keys = routes.keys
        # The command that tells every node: a sharded channel's in a cluster.
        self._publish = "SPUBLISH" if routes.cluster else "PUBLISH"
        self._people = self.keys.people_channel.encode()
        self._governance = self.keys.governance_channel.encode()
        self._probe_channels: list[str] = []
        self.channels = RedisChannels(self.redis)
        self.registry = RedisRegistry(self.redis)
        self.history = RedisHistory(self.redis)
        self._registered = False
        self._eviction_told = False  # a warning about the eviction policy was logged
        self._probes: dict[bytes, float] = {}  # probe token -> when it was sent
        self._probe_tokens = itertools.count()
        self._failure: asyncio.Future[str] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()  # the first connection attempt ended
        self._reaping: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return masked(self._url)

    @property
    def routes(self) -> Routes:
        return self.redis.routes

    def _new_cluster_links(self) -> ClusterLinks:
        return ClusterLinks(
            self._url,
            f"chat:{self.node_id}",
            self._on_message,
            self._missed,
            connect_timeout=self.timeout,
            prepare=self._prepare_master,
            on_down=self._link_failed,
        )

    def _missed(self, channels: list[str]) -> None:
        """Channels subscribed again after Redis dropped them while the links stayed up: a
        slot migration moved them (a lost link is the broker failing: a new incarnation,
        subscribed afresh, never this). Each is made good by what it carries."""
        for channel in channels:
            room = self.keys.room_of_channel(channel.encode())
            if room is not None:
                if room in self.channels.subscribed:
                    self.channels.interrupted(room, "the room's channel moved to another master")
            elif channel == self.keys.governance_channel:
                # Rules are kept in Redis: read again. (A kick told meanwhile is not: the
                # kicked member stays, as if the kick had come before it joined.)
                log.warning("governance channel moved: reading the rules again")
                if self._on_rules_missed is not None:
                    self._spawn(self._on_rules_missed())
            elif channel == self.keys.people_channel:
                # Away, back, new names and direct-message notices told meanwhile are not
                # heard here; each is also kept where it is read (names, inboxes).
                log.warning("people channel moved: changes told meanwhile were not heard")
            # A probe channel: the probes through it go on, and tell if it stops delivering.

    async def start(self) -> None:
        """Connect in the background: until Redis answers, the node is unavailable.

        Returns after the first attempt (at most ``broker_timeout``): the server takes no
        connection before it, so that a normal start never answers a join with "connecting"
        (with ``--workers``, one worker's /health said the chat was up while another,
        already taking joins, was still connecting). Redis down, the server starts anyway
        and says so (1013, /health 503) until it is up."""
        self._supervisor = asyncio.create_task(self._supervise())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout + 1):
                await self._attempted.wait()

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for task in list(self._reaping):
            task.cancel()
        if self.routes.down_reason is None:
            # Leaving the cluster: whatever is still registered here is announced and freed
            # now rather than when the heartbeat lapses.
            with contextlib.suppress(BrokerUnavailable, RedisError, TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await self.redis.call("ZADD", self.keys.nodes, "XX", 0, self.node_id)
                    await self.reap(self.node_id)
        if self._single is not None:
            await self._single.link.close()
            await self._single.pubsub.close()
            await self._single.queries.close()
        if self._cluster is not None:
            await self._cluster.links.close()

    def _become(self, node_id: str) -> None:
        """Take ``node_id``: a new incarnation, after an outage."""
        self.node_id = node_id
        self.redis.become(node_id)
        self.channels.incarnated()

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if self.channels.received(channel, data):
            return
        if channel.startswith(b"chat:node:"):  # a probe (one per master in a cluster)
            self._probes.pop(data, None)
        elif channel == self._people and self._on_person is not None:
            head, _, text = data.decode(errors="replace").partition("\n")
            token_id, code, name = [*head.split(" "), "", "", ""][:3]
            with contextlib.suppress(ValueError):  # a newer node's change: not ours to act on
                self._on_person(PersonChanged(token_id, Change(code), name, text))
        elif channel == self._governance:
            try:
                governed = governed_from_json(data)
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable governance message bytes=%s", len(data))
                return
            self._governed(governed)

    async def announce(self, changed: PersonChanged) -> None:
        payload = f"{changed.token_id} {changed.change.value} {changed.name}\n{changed.text}"
        await self.redis.call(self._publish, self.keys.people_channel, payload)

    # --- governance ---------------------------------------------------------------------------

    async def keep_rule(self, rule: Rule) -> None:
        field = f"{rule.kind.value} {rule.key}"
        args = [field, rule.to_json(), MAX_RULES, self.keys.governance_channel, self._publish]
        if await self.redis.script("keep_rule", [self.keys.rules], args):
            return
        await self.rules()  # forget the rules that ended, then try once more
        if not await self.redis.script("keep_rule", [self.keys.rules], args):
            raise RulesFull

    async def drop_rule(self, kind: RuleKind, key: str) -> bool:
        told = governed_to_json(RuleDropped(kind, key))
        args = [f"{kind.value} {key}", told, self.keys.governance_channel, self._publish]
        return bool(await self.redis.script("drop_rule", [self.keys.rules], args))

    async def rules(self) -> list[Rule]:
        raw = await self.redis.call("HGETALL", self.keys.rules)
        now, kept, ended = time.time(), [], []
        for field, data in zip(raw[::2], raw[1::2], strict=True):
            try:
                rule = Rule.from_json(data)
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable rule field=%s", field.decode(errors="replace"))
                continue
            if rule.live(now):
                kept.append(rule)
            else:
                ended.append(field)
        if ended:
            await self.redis.call("HDEL", self.keys.rules, *ended)
        return kept

    async def kick(self, kick: Kick) -> None:
        kicked = governed_to_json(kick)
        await self.redis.call(self._publish, self.keys.governance_channel, kicked)

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
                self._attempted.set()
                await asyncio.sleep(RETRY_INTERVAL)
                continue
            outage_logged = False
            self._set_status(BrokerStatus(True))
            self._attempted.set()
            reason = await self._watch(self._failure)
            log.warning("redis at %s failed: %s", self.url, reason)
            self._drop_links(reason)
            self._set_status(BrokerStatus(False, reason))
            await asyncio.sleep(RETRY_INTERVAL)

    def _drop_links(self, reason: str) -> None:
        self.routes.fail(reason)
        self._probes.clear()

    async def _connect(self) -> None:
        if self._registered:
            # A new incarnation: whatever the old one registered is reaped, not resumed.
            old = self.node_id
            self._become(f"{old.rsplit('-', 1)[0]}-{secrets.token_hex(3)}")
            self._spawn_reap(old, expire_first=True)
            self._registered = False
        if self._single is not None:
            await self._connect_single(self._single)
        else:
            assert self._cluster is not None
            await self._connect_cluster(self._cluster)
        self.channels.connected()
        await self._heartbeat(register=True)
        channels = [*self._probe_channels, self.keys.people_channel]
        channels.append(self.keys.governance_channel)
        channels += [self.keys.room_channel(room) for room in self.channels.subscribed]
        await self.routes.subscribe(channels)
        # The whole path, end to end, before anyone is told it works.
        await self._probe()
        while self._probes:
            await asyncio.sleep(0.005)
        self._registered = True

    async def _connect_single(self, single: SingleRoutes) -> None:
        await single.link.connect(f"chat:{self.node_id}:commands")
        await self._check_eviction(single.link)
        single.redis_run_id = await self._run_id(single.link)
        await single.pubsub.connect(f"chat:{self.node_id}:pubsub")
        await single.queries.connect(f"chat:{self.node_id}:queries")
        await asyncio.gather(
            *(single.link.call("SCRIPT", "LOAD", s.source) for s in SCRIPTS.values())
        )
        self._probe_channels = [self.redis.node_channel.decode()]

    async def _connect_cluster(self, cluster: ClusterRoutes) -> None:
        """New links to the cluster's masters, every one of them prepared (``_prepare_master``)
        before the node is available: a failure of any later is the broker failing."""
        await cluster.links.close()
        cluster.run_ids = {}
        cluster.links = self._new_cluster_links()
        await cluster.links.start()
        self._probe_channels = self._cluster_probe_channels(cluster.links)

    async def _prepare_master(self, address: Address, link: CommandLink) -> None:
        """On every master, before it serves: its eviction policy, its run_id (its rooms'
        epochs are its own), the scripts (a promoted replica has none)."""
        await self._check_eviction(link)
        assert self._cluster is not None
        self._cluster.run_ids[address] = await self._run_id(link)
        await asyncio.gather(*(link.call("SCRIPT", "LOAD", s.source) for s in SCRIPTS.values()))

    def _cluster_probe_channels(self, links: ClusterLinks) -> list[str]:
        """One of this node's channels on each master: a probe through every subscriber
        link, since any of them can stop delivering without closing."""
        wanted = set(links.masters)
        found: list[str] = []
        for part in range(PROBE_PARTS):
            channel = self.keys.node_channel(self.node_id, part)
            owner = links.owner(channel)
            if owner in wanted:
                wanted.discard(owner)
                found.append(channel)
                if not wanted:
                    break
        return found

    async def _check_eviction(self, link: CommandLink) -> None:
        """Refuse a Redis that may evict any key when full: names, a room's numbering and who
        is where would vanish without a word (a resume then gets a new name, a room numbers
        again from 1). ``noeviction`` is right; a ``volatile-*`` policy can only take keys
        that expire anyway (history, reservations), early: said once, not refused."""
        try:
            reply = await link.call("CONFIG", "GET", "maxmemory-policy")
        except RedisError as exc:  # a managed Redis may forbid CONFIG: say so, once
            if not self._eviction_told:
                log.warning(
                    "cannot check redis's maxmemory-policy (%s): it must be noeviction or "
                    "volatile-*, or the chat's state can vanish when redis is full",
                    describe(exc),
                )
                self._eviction_told = True
            return
        policy = reply[1].decode(errors="replace") if len(reply) >= 2 else ""
        if policy.startswith("allkeys-"):
            # Short: /health and the 1013 close carry it, cut to a line.
            raise BrokerUnavailable(
                f"maxmemory-policy {policy} may evict the chat's keys: set noeviction"
            )
        if policy.startswith("volatile-") and not self._eviction_told:
            log.warning(
                "redis's maxmemory-policy is %s: when redis is full, history and name "
                "reservations can go before their time (noeviction keeps them)",
                policy,
            )
            self._eviction_told = True

    async def _run_id(self, link: CommandLink) -> str:
        """The Redis process's run_id: a restart, even from a snapshot, has a new one."""
        info = await link.call("INFO", "server")
        for line in info.decode(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key == "run_id":
                return value.strip()
        raise BrokerUnavailable("redis did not say its run_id")

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
        args = [self.node_id, ttl_ms, "1" if register else "0"]
        ok, now = await self.redis.script("heartbeat", [self.keys.nodes], args)
        self.redis.clock_offset_ms = now - (sent + time.time() * 1000) / 2
        if not ok:
            raise BrokerUnavailable(
                f"this node missed its heartbeats for over {self.settings.node_ttl:g} s "
                f"and was declared dead"
            )

    async def _probe(self) -> None:
        sent = []
        for channel in self._probe_channels:
            token = str(next(self._probe_tokens)).encode()
            self._probes[token] = running_time()
            sent.append(self.redis.call(self._publish, channel, token))
        await asyncio.gather(*sent)

    async def _check_timeouts(self) -> None:
        limit = self.timeout + GIVE_UP_MARGIN
        waited = self.routes.oldest_wait()
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
        dead = await self.redis.script("dead_nodes", [self.keys.nodes], [REAP_BATCH])
        for node in dead:
            await self.reap(node.decode())

    def _spawn(self, work: Awaitable[None]) -> None:
        """Run ``work`` in the background (kept until done; cancelled on close)."""
        task = asyncio.ensure_future(work)
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    def _spawn_reap(self, node: str, expire_first: bool = False) -> None:
        async def reap() -> None:
            with contextlib.suppress(BrokerUnavailable, RedisError):
                while not self.status.available:
                    await asyncio.sleep(RETRY_INTERVAL)
                if expire_first:
                    await self.redis.call("ZADD", self.keys.nodes, "XX", 0, node)
                await self.reap(node)

        task = asyncio.create_task(reap())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def reap(self, node: str) -> None:
        """Announce a dead node's members as left, free its names and forget it."""
        layout = self.keys
        announced = 0
        for room, name in await self._members_of(node):
            if await self.channels.room_event(room, EventKind.LEAVE, node, name) is not None:
                announced += 1
        node_keys = [
            layout.nodes,
            layout.node_rooms(node) if layout.cluster else layout.node_members(node),
            layout.node_names(node),
            layout.reserved,
            layout.addresses,
            layout.node_addresses(node),
        ]
        if layout.cluster:
            node_keys.append(layout.node_member_counts)
        forgotten = await self.redis.script(
            "forget_node",
            node_keys,
            [
                node,
                layout.name_key_prefix,
                self.redis.reservation_ms,
                self.settings.max_reservations,
            ],
        )
        if announced:
            log.warning("reaped node=%s left=%d", node, announced)
        elif forgotten:
            log.info("forgot node=%s", node)

    async def _members_of(self, node: str) -> list[tuple[str, str]]:
        """(room, name) of every member ``node`` holds: its members set on one Redis; in a
        cluster, the presence entries that name it in each of its rooms."""
        layout = self.keys
        if not layout.cluster:
            entries = await self.redis.call("SMEMBERS", layout.node_members(node))
            return [tuple(e.decode().partition(" ")[::2]) for e in entries]  # type: ignore[misc]
        owner = node.encode()
        rooms = [r.decode() for r in await self.redis.call("SMEMBERS", layout.node_rooms(node))]
        presences = await asyncio.gather(
            *(self.redis.call("HGETALL", layout.room_presence(room)) for room in rooms)
        )
        return [
            (room, name.decode())
            for room, presence in zip(rooms, presences, strict=True)
            for name, entry in hash_pairs(presence)
            if entry.partition(b" ")[0] == owner
        ]
