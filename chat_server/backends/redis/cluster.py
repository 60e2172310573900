"""The links of a chat node to a Redis Cluster (``redis+cluster://``): per master, one
:class:`CommandLink` and one :class:`ShardedPubSubLink`, and the slot map that routes to them.

* **Commands** go to the master that owns their key's slot (CRC16 mod 16384 of the key, or
  of its ``{hash tag}``: a room's keys are tagged with the room, so that the script that
  numbers, stores and publishes its events touches one slot). ``MOVED``: the map is stale, the
  command is sent once more to the node named, and the map is refreshed. ``ASK``: the slot is
  being migrated and the key is already on the target: ``ASKING`` and the command go there.
* **Sharded pub/sub**: channels are subscribed on the master of their slot, one
  ``SSUBSCRIBE`` per slot, on that master's one subscriber connection.
* **Failures stay local**: a master's link that goes down fails only the calls on that master
  (``BrokerUnavailable``), and makes the supervisor ask the cluster again who owns what (after
  a failover, a promoted replica). Until it knows, calls for that master's slots fail at once,
  and it asks again every ``RETRY_INTERVAL`` (with nothing amiss, every ``REFRESH_INTERVAL``).
  Channels that were subscribed on a master whose link went down, or that Redis unsubscribed
  (their slot moved), are subscribed again where their slot is now, and ``on_missed`` names
  them: messages published in between may never have reached this node.

Nothing here is specific to the chat but the names of the connections: the backend decides
what the keys and channels are (``keys.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError

from chat_server.backends.base import BrokerUnavailable
from chat_server.backends.redis.links import CommandLink, Gathered, connection_factory, describe
from chat_server.backends.redis.sharded import ShardedPubSubLink
from chat_server.backends.urls import ClusterUrl, parse_cluster_url

log = logging.getLogger("chat_server.redis.cluster")

Address = tuple[str, int]
# How often the supervisor asks again while some slot has no reachable master (a failover
# under way: the cluster takes its node timeout, then an election, to promote a replica).
RETRY_INTERVAL = 0.2
# How often it asks anyway, with nothing amiss: a slot can change hands without a word to
# this node (a subscription that Redis did not unsubscribe when its slot moved).
REFRESH_INTERVAL = 5.0
# A call that came back TRYAGAIN (a migration has split its keys) is sent again after this.
TRYAGAIN_DELAY = 0.05
TRYAGAIN_TIMES = 10  # a migration of a slot's keys takes one or two, under load a few more


def slot_of(key: str | bytes) -> int:
    """The key's hash slot (its ``{hash tag}``'s, if it has a non-empty one)."""
    return key_slot(key.encode() if isinstance(key, str) else key)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class SlotMap:
    """Who owns each slot, as one node said (``CLUSTER SLOTS``)."""

    owners: tuple[Address | None, ...]
    replicas: frozenset[Address] = frozenset()
    # Read on every call's way out (``down_reason``): counted once, not over 16384 slots.
    masters: frozenset[Address] = field(init=False)
    unowned: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "masters", frozenset(a for a in self.owners if a is not None))
        object.__setattr__(self, "unowned", self.owners.count(None))

    @classmethod
    def parse(cls, reply: list[Any], asked: Address) -> SlotMap:
        owners: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        replicas: set[Address] = set()
        for start, end, master, *others in reply:
            owner = _address(master, asked)
            for slot in range(int(start), int(end) + 1):
                owners[slot] = owner
            replicas.update(_address(r, asked) for r in others)
        return cls(tuple(owners), frozenset(replicas))

    def moved(self, slot: int, owner: Address) -> SlotMap:
        """This map with one slot's owner corrected (what a ``MOVED`` says)."""
        owners = list(self.owners)
        owners[slot] = owner
        return SlotMap(tuple(owners), self.replicas)


def _address(entry: list[Any], asked: Address) -> Address:
    # An empty host: the node does not know its own address; it is the one that was asked.
    host = _text(entry[0]) or asked[0]
    return host, int(entry[1])


@dataclass
class _Node:
    """One master and its links."""

    address: Address
    command: CommandLink
    pubsub: ShardedPubSubLink
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one connect at a time

    @property
    def name(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    @property
    def up(self) -> bool:
        return self.command.up and self.pubsub.up


class ClusterLinks:
    def __init__(
        self,
        url: str,
        client_name: str,
        on_message: Callable[[bytes, bytes], None],
        on_missed: Callable[[list[str]], None],
        connect_timeout: float = 2.0,
        prepare: Callable[[Address, CommandLink], Awaitable[None]] | None = None,
        on_down: Callable[[str], None] | None = None,
    ) -> None:
        """``on_message(channel, data)`` for every sharded message; ``on_missed(channels)``
        once channels that were subscribed and lost are subscribed again; ``prepare(address,
        link)`` runs on every new master's command link before it serves calls (``SCRIPT
        LOAD``); ``on_down(reason)`` whenever a master's link goes down (the chat's backend
        takes that as the broker failing, as with one Redis)."""
        self.target: ClusterUrl = parse_cluster_url(url)
        self._client_name = client_name
        self._on_message = on_message
        self._on_missed = on_missed
        self._connect_timeout = connect_timeout
        self._prepare = prepare
        self._on_down = on_down
        self._map = SlotMap((None,) * REDIS_CLUSTER_HASH_SLOTS)
        self._nodes: dict[Address, _Node] = {}
        self._wanted: set[str] = set()
        # Wanted channels the caller was told are subscribed (or told failed): subscribed
        # again later, they are named to on_missed. Found afresh each pass (what is not on
        # its slot's master now), so no path by which a subscription is lost needs to say so.
        self._promised: set[str] = set()
        self._dirty = asyncio.Event()
        self._next_pass: asyncio.Future[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self.down_reasons: dict[Address, str] = {}

    # -- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Learn the map from a seed and connect to every master; then keep it so."""
        await self._pass()
        if self.down_reason is not None:
            await self.close()
            raise BrokerUnavailable(self.down_reason)
        self._supervisor = asyncio.create_task(self._supervise())

    async def close(self) -> None:
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        for node in list(self._nodes.values()):
            await self._drop(node, "closed")

    @property
    def down_reason(self) -> str | None:
        """Why some slot has no master this node can reach (None: every slot has one)."""
        unowned = self._map.unowned
        if unowned:
            return f"{unowned} slots have no master (cluster not ready?)"
        for address in sorted(self._map.masters):
            node = self._nodes.get(address)
            if node is None or not node.up:
                reason = self.down_reasons.get(address, "not connected")
                return f"no link to master {address[0]}:{address[1]}: {reason}"
        return None

    @property
    def masters(self) -> list[Address]:
        return sorted(self._map.masters)

    def owner(self, key: str | bytes) -> Address | None:
        return self._map.owners[slot_of(key)]

    def oldest_waits(self) -> dict[Address, float]:
        """Per master, seconds its oldest unanswered command has waited (the backend's
        watchdog: past its timeout, :meth:`fail` that master)."""
        return {a: n.command.oldest_wait() for a, n in self._nodes.items()}

    def fail(self, address: Address, reason: str) -> None:
        """Take a master's links down (it stopped answering): its calls fail, the map is
        asked for again, its channels are subscribed again where their slots are then."""
        node = self._nodes.get(address)
        if node is not None:
            node.pubsub.fail(reason)
            node.command.fail(reason)

    # -- commands ------------------------------------------------------------------------

    async def call(self, key: str | bytes, *args: Any) -> Any:
        """Run ``args`` on the master of ``key``'s slot (every key it names must share it)."""
        return await self._routed(slot_of(key), lambda link: link.call(*args))

    async def call_packed(
        self, key: str | bytes, command: bytes, convert: Callable[[Any], Any] | None = None
    ) -> Any:
        """:meth:`call` for a command already encoded; ``convert`` as CommandLink's, applied
        once the command has found its master (a redirection is not an answer)."""
        try:
            reply = await self._routed(slot_of(key), lambda link: link.call_packed(command))
        except BrokerUnavailable:
            raise
        except Exception as exc:
            if convert is None:
                raise
            reply = exc
        return reply if convert is None else convert(reply)

    def call_gathered(
        self, key: str | bytes, command: Gathered, convert: Callable[[Any], Any] | None = None
    ) -> asyncio.Future[Any]:
        """``CommandLink.call_gathered`` on the master of ``key``'s slot. Not redirected
        here: a ``MOVED``, ``ASK`` or ``TRYAGAIN`` reaches ``convert`` as the reply, and the
        caller sends the sealed command again (:meth:`resend`)."""
        owner = self._map.owners[slot_of(key)]
        try:
            link = self._command_link(owner)
        except BrokerUnavailable as exc:
            command.sealed = True
            return _failed(exc)
        return link.call_gathered(command, convert)

    def resend(
        self,
        key: str | bytes,
        command: bytes,
        error: MovedError | AskError | TryAgainError,
        convert: Callable[[Any], Any],
    ) -> asyncio.Future[Any]:
        """A gathered call that came back ``MOVED``, ``ASK`` or ``TRYAGAIN`` (not run), sent
        again: to the slot's new master, to the migration's target (after ``ASKING``), or to
        the same master a moment later (a migration has split the keys). A room's later calls
        come back the same way, in order, and are sent again in that order."""
        if isinstance(error, MovedError):
            self._map = self._map.moved(error.slot_id, error.node_addr)
            self._mark_dirty()
            return self._packed_to(error.node_addr, command, convert)
        if isinstance(error, AskError):
            return self._packed_to(error.node_addr, command, convert, asking=True)
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Any] = loop.create_future()

        def again() -> None:
            sent = self._packed_to(self._map.owners[slot_of(key)], command, convert)
            sent.add_done_callback(lambda done: _pass_on(done, result))

        loop.call_later(TRYAGAIN_DELAY, again)
        return result

    def _packed_to(
        self,
        address: Address | None,
        command: bytes,
        convert: Callable[[Any], Any],
        asking: bool = False,
    ) -> asyncio.Future[Any]:
        try:
            link = self._command_link(address)
        except BrokerUnavailable as exc:
            return _failed(exc)
        if asking:  # the next command on the connection: adjacent, as ASK requires
            link.call("ASKING").add_done_callback(_retrieved)
        return link.call_packed(command, convert)

    async def call_node(self, address: Address, *args: Any) -> Any:
        """Run ``args`` on one master (what is per node: ``SCRIPT LOAD``, ``PING``, ``TIME``)."""
        return await self._command_link(address).call(*args)

    def _command_link(self, address: Address | None) -> CommandLink:
        node = self._nodes.get(address) if address is not None else None
        if node is None or not node.command.up:
            self._mark_dirty()
            reason = self.down_reasons.get(address, "not connected") if address else None
            raise BrokerUnavailable(
                f"no link to {address[0]}:{address[1]}: {reason}" if address else "no master"
            )
        return node.command

    async def _routed(self, slot: int, send: Callable[[CommandLink], Awaitable[Any]]) -> Any:
        try:
            return await self._redirected(slot, send)
        except ClusterDownError as exc:
            # The cluster refuses while some slot has no master (with the default
            # cluster-require-full-coverage): a failover under way, not a bad command.
            self._mark_dirty()
            raise BrokerUnavailable(f"redis cluster: {describe(exc)}") from exc

    async def _redirected(self, slot: int, send: Callable[[CommandLink], Awaitable[Any]]) -> Any:
        """``send`` to the slot's master, and once more where a ``MOVED`` or ``ASK`` says; a
        ``TRYAGAIN`` (a migration has split the keys of a script or a multi-key command: it
        did not run) is sent again a moment later, a few times. It was taken for a refusal:
        the node dropped its links and closed everyone, while the directory's slot moved."""
        for _ in range(TRYAGAIN_TIMES):
            try:
                return await self._redirected_once(slot, send)
            except TryAgainError:
                await asyncio.sleep(TRYAGAIN_DELAY)
        return await self._redirected_once(slot, send)

    async def _redirected_once(
        self, slot: int, send: Callable[[CommandLink], Awaitable[Any]]
    ) -> Any:
        try:
            return await send(self._command_link(self._map.owners[slot]))
        except MovedError as moved:  # the map is stale: once more where the slot is now
            self._map = self._map.moved(moved.slot_id, moved.node_addr)
            self._mark_dirty()
            node = await self._connected(moved.node_addr)
            return await send(node.command)
        except AskError as ask:  # being migrated, this key already there: this once, there
            node = await self._connected(ask.node_addr)
            node.command.call("ASKING")  # the next command on the connection: no await
            return await send(node.command)

    # -- sharded pub/sub -----------------------------------------------------------------

    async def subscribe(self, channels: Iterable[str]) -> None:
        """Subscribe ``channels`` where their slots are; returns once Redis confirmed every
        one. ``BrokerUnavailable`` if some could not be: they stay wanted, and once the
        supervisor has subscribed them they are named to ``on_missed``."""
        channels = set(channels)
        self._wanted |= channels
        failed = await self._rehome(self._misplaced(channels))
        if failed:
            # A MOVED (or a master that was lost): a pass of the supervisor re-homes them.
            await self.refresh()
            failed = self._misplaced(failed)
        self._promised |= channels & self._wanted
        if failed:
            raise BrokerUnavailable(f"could not subscribe {len(failed)} channels")

    def unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)
        self._promised.discard(channel)
        for node in self._nodes.values():
            if channel in node.pubsub.channels:
                node.pubsub.unsubscribe(channel)

    def subscribed(self, channel: str) -> Address | None:
        """The master ``channel`` is subscribed on now (a live link confirmed it), if any."""
        for node in self._nodes.values():
            if node.pubsub.up and channel in node.pubsub.channels:
                return node.address
        return None

    def _misplaced(self, channels: Iterable[str]) -> set[str]:
        """Those of ``channels`` wanted and not subscribed (on a live link) on the master
        the map names for their slot now."""
        misplaced = set()
        for channel in channels:
            if channel not in self._wanted:
                continue
            owner = self._map.owners[slot_of(channel)]
            node = self._nodes.get(owner) if owner is not None else None
            if node is None or not node.pubsub.up or channel not in node.pubsub.channels:
                misplaced.add(channel)
        return misplaced

    async def _rehome(self, channels: set[str]) -> set[str]:
        """:meth:`_subscribe`, then ``on_missed`` for those subscribed before."""
        before = channels & self._promised
        failed = await self._subscribe(channels)
        back = before - failed
        if back:
            self._on_missed(sorted(back))
        return failed

    async def _subscribe(self, channels: Iterable[str]) -> set[str]:
        """One SSUBSCRIBE per slot on its master's link; returns the channels not confirmed."""
        by_slot: dict[int, list[str]] = defaultdict(list)
        for channel in channels:
            by_slot[slot_of(channel)].append(channel)
        sent: list[tuple[_Node | None, list[str], asyncio.Future[None] | None]] = []
        for slot, group in by_slot.items():
            owner = self._map.owners[slot]
            node = self._nodes.get(owner) if owner is not None else None
            if node is None or not node.pubsub.up:
                sent.append((None, group, None))
            else:
                sent.append((node, group, node.pubsub.subscribe(group)))
        failed: set[str] = set()
        for node, group, confirmed in sent:
            if node is None or confirmed is None:
                failed.update(group)
                continue
            try:
                await confirmed
            except (BrokerUnavailable, MovedError, AskError) as exc:
                log.info("redis cluster: SSUBSCRIBE on %s failed: %r", node.name, exc)
                failed.update(group)
                continue
            for channel in group:
                if channel not in self._wanted:  # unsubscribed while it was being subscribed
                    node.pubsub.unsubscribe(channel)
        return failed

    def _on_unsubscribed(self, channel: str) -> None:
        """Redis unsubscribed ``channel`` on some master: its slot moved away."""
        if channel in self._wanted:
            self._mark_dirty()

    # -- the supervisor ------------------------------------------------------------------

    async def refresh(self) -> None:
        """Have the supervisor ask the cluster who owns what, and wait until it has."""
        if self._next_pass is None:
            self._next_pass = asyncio.get_running_loop().create_future()
        waiting = self._next_pass
        self._dirty.set()
        if self._supervisor is None:  # not started (or closed): do it here
            await self._pass()
            return
        await asyncio.shield(waiting)

    def _mark_dirty(self) -> None:
        self._dirty.set()

    async def _supervise(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), REFRESH_INTERVAL)
            try:
                await self._pass()
                settled = self.down_reason is None and not self._misplaced(self._wanted)
            except Exception as exc:  # never die silently: say it, and try again
                log.error("redis cluster: refreshing the slot map failed", exc_info=exc)
                settled = False
            if not settled:
                await asyncio.sleep(RETRY_INTERVAL)  # a back-off, not a wait for a condition
                self._dirty.set()

    async def _pass(self) -> None:
        """Ask for the map, connect to its masters, let go of the others, re-home channels."""
        self._dirty.clear()
        done, self._next_pass = self._next_pass, None
        try:
            slot_map = await self._ask_map()
            if slot_map is not None:
                self._map = slot_map
            masters = self._map.masters
            for address in [a for a in self._nodes if a not in masters]:
                await self._drop(self._nodes[address], "no longer a master")
            await asyncio.gather(*(self._connected(a, quiet=True) for a in masters))
            misplaced = self._misplaced(self._wanted)
            for channel in misplaced:
                old = self.subscribed(channel)
                if old is not None:  # on a master that no longer owns its slot
                    self._nodes[old].pubsub.unsubscribe(channel)
            if misplaced:
                await self._rehome(misplaced)
        finally:
            if done is not None and not done.done():
                done.set_result(None)

    async def _ask_map(self) -> SlotMap | None:
        """``CLUSTER SLOTS`` from the first node that answers: the masters this node is
        linked to, then the seeds and every other node it has heard of."""
        for node in list(self._nodes.values()):
            if node.command.up:
                with contextlib.suppress(Exception):
                    reply = await asyncio.wait_for(
                        node.command.call("CLUSTER", "SLOTS"), self._connect_timeout
                    )
                    return SlotMap.parse(reply, node.address)
        others = dict.fromkeys([*self.target.seeds, *self._map.replicas, *self._map.masters])
        for address in others:
            if address in self._nodes and self._nodes[address].command.up:
                continue
            try:
                reply = await asyncio.wait_for(self._ask_once(address), self._connect_timeout)
            except Exception as exc:
                log.debug("redis cluster: %s:%d did not answer: %s", *address, describe(exc))
                continue
            return SlotMap.parse(reply, address)
        return None

    async def _ask_once(self, address: Address) -> Any:
        conn = self._factory(address)()
        try:
            await conn.connect()
            await conn.send_command("CLUSTER", "SLOTS")
            return await conn.read_response()
        finally:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

    def _factory(self, address: Address) -> Callable[[], Any]:
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        target = self.target
        auth = ""
        if target.username or target.password:
            user = _quote(target.username or "")
            auth = f"{user}:{_quote(target.password)}@" if target.password else f"{user}@"
        return connection_factory(f"redis://{auth}{host}:{address[1]}/0", self._connect_timeout)

    async def _connected(self, address: Address, quiet: bool = False) -> _Node:
        """The node at ``address`` with both links up (connecting what is down). ``quiet``:
        a failure to connect is recorded (``down_reasons``) rather than raised."""
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = self._new_node(address)
        async with node.lock:
            try:
                if not node.command.up:
                    await asyncio.wait_for(
                        node.command.connect(self._client_name), self._connect_timeout
                    )
                    if self._prepare is not None:
                        await asyncio.wait_for(
                            self._prepare(address, node.command), self._connect_timeout
                        )
                if not node.pubsub.up:
                    await asyncio.wait_for(
                        node.pubsub.connect(self._client_name + ":pubsub"), self._connect_timeout
                    )
                self.down_reasons.pop(address, None)
            except Exception as exc:
                reason = f"cannot connect: {describe(exc)}"
                self.down_reasons[address] = reason
                if not quiet:
                    raise BrokerUnavailable(f"no link to {node.name}: {reason}") from exc
        return node

    def _new_node(self, address: Address) -> _Node:
        make = self._factory(address)
        node: _Node

        def failed(reason: str) -> None:
            self.down_reasons[address] = reason
            log.warning("redis cluster: link to %s down: %s", node.name, reason)
            self._mark_dirty()
            if self._on_down is not None:
                self._on_down(f"a master, {node.name}: {reason}")

        node = _Node(
            address,
            CommandLink(make, failed),
            ShardedPubSubLink(make, self._on_message, self._on_unsubscribed, failed),
        )
        return node

    async def _drop(self, node: _Node, reason: str) -> None:
        del self._nodes[node.address]
        log.info("redis cluster: leaving %s: %s", node.name, reason)
        await node.command.close()
        await node.pubsub.close()


def _quote(text: str) -> str:
    return quote(text, safe="")


def _failed(exc: BaseException) -> asyncio.Future[Any]:
    """A call that failed before it was sent (its exception retrieved: the caller's
    callbacks read it, or nobody needs to)."""
    failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    failed.set_exception(exc)
    failed.exception()
    return failed


def _pass_on(done: asyncio.Future[Any], result: asyncio.Future[Any]) -> None:
    """``done``'s outcome, given to ``result``."""
    if result.done():
        return
    if done.cancelled():
        result.cancel()
    elif done.exception() is not None:
        result.set_exception(done.exception())  # type: ignore[arg-type]
    else:
        result.set_result(done.result())


def _retrieved(done: asyncio.Future[Any]) -> None:
    """A reply nobody waits for (``ASKING``'s): its error, if any, is not "never retrieved"."""
    if not done.cancelled():
        done.exception()
