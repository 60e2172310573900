"""The two connections a node keeps to Redis, on redis-py's asyncio ``Connection``.

redis-py does the connecting (TCP, TLS for ``rediss://``, Unix sockets, AUTH, SELECT, the
RESP parser, hiredis when installed); these classes do what a chat node needs on top:

* :class:`CommandLink`: every command of the node on one connection, pipelined. One write
  is in flight at a time: commands issued while Redis answers the last one go out together
  in the next (at once when nothing is in flight), replies are matched in order, and the
  node's commands reach Redis in the order they were issued (a member's join before its
  first message). A :class:`Gathered` command (a room's events in one script call) takes
  more parts until it is written, in the place where it was issued. The age of the oldest
  unanswered command is watched by the backend.
* :class:`PubSubLink`: the subscriber connection. ``subscribe`` resolves when Redis confirms
  the subscription, so nothing published after it can be missed. Its reader hands every
  message to a callback that never blocks: Redis never has to buffer for a slow node.

Neither ever dies silently: any error, EOF or protocol surprise marks the link down with a
reason, fails every pending call with ``BrokerUnavailable`` and tells the backend, which
reconnects. There are no queues without bound: a call on a link that is down fails at once,
and what is queued on a live link is bounded by the node's connections, each of which awaits
its own call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from chat_server.backends.base import BrokerUnavailable
from chat_server.backends.urls import SENTINEL_SCHEME, SentinelUrl, parse_sentinel_url
from chat_server.loop_lag import running_time

log = logging.getLogger("chat_server.redis")

MakeConnection = Callable[[], AbstractConnection]
READ_SIZE = 256 * 1024
OnFailure = Callable[[str], None]
Convert = Callable[[Any], Any]


def connection_factory(url: str, connect_timeout: float) -> MakeConnection:
    """New, unconnected redis-py connections to ``url``, configured for a chat node.

    For ``redis+sentinel://`` each connection asks the sentinels for the service's master
    when it connects (redis-py's ``SentinelConnectionPool``): every reconnect goes to the
    master of the moment, so a node follows a failover by itself."""
    options: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_keepalive": True,
        # Liveness is the backend's business (timeouts and probes): no hidden pings or retries.
        "health_check_interval": 0,
        "retry": Retry(NoBackoff(), 0),
    }
    if urlsplit(url).scheme == SENTINEL_SCHEME:
        pool: ConnectionPool = _sentinel_pool(parse_sentinel_url(url), connect_timeout, options)
    else:
        pool = ConnectionPool.from_url(url, **options)
    # RESP2 whatever the URL says: pub/sub messages are then plain replies on their connection.
    pool.connection_kwargs["protocol"] = 2
    # No maintenance push notifications (Redis Enterprise's): with RESP2 and without hiredis
    # redis-py 8 refuses every connection over them rather than going without.
    pool.connection_kwargs["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    return pool.make_connection


def _sentinel_pool(
    target: SentinelUrl, connect_timeout: float, options: dict[str, Any]
) -> SentinelConnectionPool:
    # Each sentinel gets a share of the connect deadline: one that hangs (paused, or behind
    # a dead link) must leave time to ask the next one and to reach the master.
    share = connect_timeout / (len(target.sentinels) + 1)
    sentinel = _Sentinels(
        target.sentinels,
        sentinel_kwargs={
            "socket_connect_timeout": share,
            "socket_timeout": share,
            "socket_keepalive": True,
            "health_check_interval": 0,
            "retry": Retry(NoBackoff(), 0),
            "protocol": 2,
        },
    )
    return SentinelConnectionPool(
        target.service,
        sentinel,
        is_master=True,
        check_connection=False,
        db=target.db,
        username=target.username,
        password=target.password,
        **options,
    )


class _Sentinels(Sentinel):
    async def discover_master(self, service_name: str) -> tuple[str, int]:
        """redis-py's, with a short reason when no sentinel names a master: it becomes
        /health's and the log's reason, where redis-py's would list every sentinel's client."""
        unreachable = 0
        for index, sentinel in enumerate(self.sentinels):
            try:
                masters = await sentinel.sentinel_masters()
            except (RedisConnectionError, RedisTimeoutError, ResponseError):
                unreachable += 1
                continue
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):
                # The one that answered is asked first next time.
                self.sentinels[0], self.sentinels[index] = sentinel, self.sentinels[0]
                return state["ip"], state["port"]
        answered = len(self.sentinels) - unreachable
        raise MasterNotFoundError(
            f"no sentinel names a master for {service_name!r} "
            f"({answered} of {len(self.sentinels)} answered; a failover under way?)"
        )


def encode_bulk(value: str | bytes | int) -> bytes:
    """One RESP bulk string (what redis-py's pack_command does, for hot paths)."""
    if isinstance(value, str):
        value = value.encode()
    elif isinstance(value, int):
        value = b"%d" % value
    return b"$%d\r\n%b\r\n" % (len(value), value)


async def reply_batches(conn: AbstractConnection) -> AsyncIterator[list[Any]]:
    """Every reply (or pub/sub message) that arrives on ``conn``, in batches of what one read
    brought. With hiredis (installed with redis[hiredis]) this feeds redis-py's own hiredis
    reader straight from the socket: one call per read, not one per reply, which is most of
    the node's cost per message on a busy room. Error replies come as ``ResponseError``
    objects, in their place."""
    parser = conn._parser  # redis-py < 9: its parser and stream, used as redis-py does
    reader = getattr(parser, "_reader", None)
    stream = getattr(conn, "_reader", None)
    if not isinstance(parser, _AsyncHiredisParser) or reader is None or stream is None:
        while True:
            try:
                yield [await conn.read_response(timeout=math.inf)]
            except ResponseError as exc:
                yield [exc]
    gets, feed, read = reader.gets, reader.feed, stream.read
    while True:
        replies = []
        while (reply := gets()) is not NOT_ENOUGH_DATA:
            replies.append(reply)
        if replies:
            yield replies
        data = await read(READ_SIZE)
        if not data:
            raise ConnectionError("redis closed the connection")
        feed(data)


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."


class Gathered:
    """A command that takes more parts while it waits in the outbox (several room events in
    one script call): the writer seals it when it takes it, and then it is final."""

    __slots__ = ("sealed",)

    def __init__(self) -> None:
        self.sealed = False

    def seal(self) -> bytes:
        """The command as written; called once, by the writer."""
        raise NotImplementedError


class _Wire:
    """One connection and what is queued for it: a link gets a new one per connection, so
    that nothing of a failed connection (its outbox, a task that outlived it) touches the
    next one."""

    __slots__ = ("answered", "conn", "outbox", "tasks", "wakeup")

    def __init__(self, conn: AbstractConnection) -> None:
        self.conn = conn
        self.outbox: list[list[bytes] | Gathered] = []
        self.wakeup = asyncio.Event()
        # Set when every command written has its reply (a CommandLink writes again then).
        self.answered = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []


class Link:
    """What both links share: one connection, a writer task and a reader task."""

    def __init__(self, make_connection: MakeConnection, on_failure: OnFailure) -> None:
        self._make_connection = make_connection
        self._on_failure = on_failure
        self._wire: _Wire | None = None
        self.down_reason: str | None = "not connected"

    @property
    def up(self) -> bool:
        return self.down_reason is None

    async def connect(self, client_name: str) -> None:
        conn = self._make_connection()
        conn.client_name = client_name  # CLIENT SETNAME on connect: visible in CLIENT LIST
        try:
            await conn.connect()
        except BaseException:
            await _disconnect(conn)
            raise
        wire = self._wire = _Wire(conn)
        self.down_reason = None
        wire.tasks = [
            asyncio.create_task(self._guard(wire, self._write_loop(wire))),
            asyncio.create_task(self._guard(wire, self._read_loop(wire))),
        ]

    def _send(self, *args: Any) -> None:
        wire = self._wire
        assert wire is not None
        wire.outbox.append(wire.conn.pack_command(*args))
        wire.wakeup.set()

    def _send_packed(self, data: bytes) -> None:
        wire = self._wire
        assert wire is not None
        wire.outbox.append([data])
        wire.wakeup.set()

    async def _write_loop(self, wire: _Wire) -> None:
        while wire is self._wire:
            await wire.wakeup.wait()
            await self._turn(wire)
            wire.wakeup.clear()
            outbox, wire.outbox = wire.outbox, []
            if outbox and wire is self._wire:
                self._sending(len(outbox))
                # One buffer, one write: a list would be one system call per part.
                parts: list[bytes] = []
                for command in outbox:
                    if type(command) is list:
                        parts += command
                    else:
                        parts.append(command.seal())  # type: ignore[union-attr]
                data = b"".join(parts)
                await wire.conn.send_packed_command(data, False)

    async def _turn(self, wire: _Wire) -> None:
        """Until the link may write what is queued (at once, unless a subclass says)."""

    def _sending(self, count: int) -> None:
        """``count`` commands are about to be written."""

    async def _read_loop(self, wire: _Wire) -> None:
        raise NotImplementedError

    async def _guard(self, wire: _Wire, loop: Any) -> None:
        try:
            await loop
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # an error, EOF or a surprise: never die silently
            if wire is self._wire:
                if not isinstance(exc, OSError | RedisConnectionError):
                    log.error("redis link failed", exc_info=exc)  # a surprise: say where
                self.fail(f"lost the connection to redis: {describe(exc)}")

    def fail(self, reason: str) -> None:
        """Mark the link down (once per connection), abort it and fail what is pending."""
        if self.down_reason is not None:
            return
        self.down_reason = reason
        wire, self._wire = self._wire, None
        if wire is not None:
            current = asyncio.current_task()
            for task in wire.tasks:
                if task is not current:
                    task.cancel()
            wire.wakeup.set()  # a writer that shrugged off its cancellation sees it is over
            asyncio.get_running_loop().create_task(_disconnect(wire.conn))
        self._failed(BrokerUnavailable(reason))
        self._on_failure(reason)

    def _failed(self, exc: BrokerUnavailable) -> None:
        """Fail whatever the link was waiting for."""

    async def close(self) -> None:
        self.down_reason = "closed"
        wire, self._wire = self._wire, None
        self._failed(BrokerUnavailable("closed"))
        if wire is not None:
            for task in wire.tasks:
                task.cancel()
            wire.wakeup.set()
            await _disconnect(wire.conn)


async def _disconnect(conn: AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.disconnect(nowait=True)


class CommandLink(Link):
    def __init__(self, make_connection: MakeConnection, on_failure: OnFailure) -> None:
        super().__init__(make_connection, on_failure)
        # In the outbox, then written (with when), in order: a future and its reply's converter.
        self._waiting: deque[tuple[asyncio.Future[Any], Convert | None]] = deque()
        self._inflight: deque[tuple[asyncio.Future[Any], Convert | None, float]] = deque()

    def call(self, *args: Any) -> asyncio.Future[Any]:
        """Send one command; the future gets its reply (or the error, or BrokerUnavailable)."""
        future = asyncio.get_running_loop().create_future()
        if self.down_reason is not None:
            future.set_exception(BrokerUnavailable(self.down_reason))
            return future
        self._waiting.append((future, None))
        self._send(*args)
        return future

    def call_packed(
        self, command: bytes, convert: Callable[[Any], Any] | None = None
    ) -> asyncio.Future[Any]:
        """:meth:`call` for a command already encoded (see :func:`encode_bulk`); ``convert``
        turns the reply (or error reply) into the future's result, or raises."""
        future = asyncio.get_running_loop().create_future()
        if self.down_reason is not None:
            future.set_exception(BrokerUnavailable(self.down_reason))
            return future
        self._waiting.append((future, convert))
        self._send_packed(command)
        return future

    def call_gathered(
        self, command: Gathered, convert: Callable[[Any], Any] | None = None
    ) -> asyncio.Future[Any]:
        """:meth:`call_packed` for a command that may take more parts until the writer seals
        it (in this loop iteration or the next): its place among the node's commands is where
        it was issued."""
        future = asyncio.get_running_loop().create_future()
        if self.down_reason is not None:
            command.sealed = True
            future.set_exception(BrokerUnavailable(self.down_reason))
            return future
        self._waiting.append((future, convert))
        wire = self._wire
        assert wire is not None
        wire.outbox.append(command)
        wire.wakeup.set()
        return future

    async def _turn(self, wire: _Wire) -> None:
        """One write in flight at a time: what is issued while Redis answers the last one
        goes out together once it has (a group commit: when busy, fewer and larger writes
        and script calls, for Redis and for this process; when idle, no wait at all). A
        write that is never answered is the watchdog's (``oldest_wait``)."""
        while self._inflight and wire is self._wire:
            wire.answered.clear()
            await wire.answered.wait()

    def _sending(self, count: int) -> None:
        now = running_time()
        waiting, inflight = self._waiting, self._inflight
        for _ in range(count):
            future, convert = waiting.popleft()
            inflight.append((future, convert, now))

    def oldest_wait(self) -> float:
        """Seconds the oldest unanswered command has waited (0 if none)."""
        if self._inflight:
            return running_time() - self._inflight[0][2]
        return 0.0

    async def _read_loop(self, wire: _Wire) -> None:
        inflight = self._inflight
        async for replies in reply_batches(wire.conn):
            if wire is not self._wire:
                return
            for reply in replies:
                if not inflight:
                    raise RuntimeError(f"a reply that no command asked for: {reply!r:.80}")
                future, convert, _ = inflight.popleft()
                if future.done():
                    continue
                if convert is not None:
                    try:
                        reply = convert(reply)
                    except Exception as exc:
                        reply = exc
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                    future.exception()  # whoever awaits it still gets it; no "never retrieved"
                else:
                    future.set_result(reply)
            if not inflight:
                wire.answered.set()

    def _failed(self, exc: BrokerUnavailable) -> None:
        pending = [f for f, _, _ in self._inflight] + [f for f, _ in self._waiting]
        self._inflight.clear()
        self._waiting.clear()
        for future in pending:
            if not future.done():
                future.set_exception(exc)
                # Nobody may be left to await it (a caller that was cancelled).
                future.exception()


class PubSubLink(Link):
    def __init__(
        self,
        make_connection: MakeConnection,
        on_message: Callable[[bytes, bytes], None],
        on_failure: OnFailure,
    ) -> None:
        super().__init__(make_connection, on_failure)
        self._on_message = on_message
        # Per channel, the subscribe calls Redis has not confirmed yet, in order.
        self._confirming: dict[bytes, deque[asyncio.Future[None]]] = {}

    def subscribe(self, channels: Iterable[str]) -> asyncio.Future[None]:
        """Subscribe; resolves once Redis has confirmed every one of ``channels``."""
        loop = asyncio.get_running_loop()
        channels = list(channels)
        if self.down_reason is not None:
            failed: asyncio.Future[None] = loop.create_future()
            failed.set_exception(BrokerUnavailable(self.down_reason))
            failed.exception()
            return failed
        confirmations = []
        for channel in channels:
            confirmation: asyncio.Future[None] = loop.create_future()
            self._confirming.setdefault(channel.encode(), deque()).append(confirmation)
            confirmations.append(confirmation)
        self._send("SUBSCRIBE", *channels)
        if len(confirmations) == 1:
            # Done the moment the reader sees the confirmation, before any later message.
            return confirmations[0]
        return asyncio.ensure_future(_all(confirmations))

    def unsubscribe(self, channel: str) -> None:
        if self.down_reason is None:
            self._send("UNSUBSCRIBE", channel)

    async def _read_loop(self, wire: _Wire) -> None:
        on_message = self._on_message
        async for replies in reply_batches(wire.conn):
            if wire is not self._wire:
                return
            for reply in replies:
                kind = reply[0]
                if kind == b"message":
                    on_message(reply[1], reply[2])
                elif kind == b"subscribe":
                    self._confirmed(reply[1])
                elif kind not in (b"unsubscribe", b"pong"):
                    raise RuntimeError(f"unexpected pub/sub reply {reply!r:.80}")

    def _confirmed(self, channel: bytes) -> None:
        waiting = self._confirming.get(channel)
        if waiting:
            confirmation = waiting.popleft()
            if not waiting:
                del self._confirming[channel]
            if not confirmation.done():
                confirmation.set_result(None)

    def _failed(self, exc: BrokerUnavailable) -> None:
        confirming, self._confirming = self._confirming, {}
        for waiting in confirming.values():
            for confirmation in waiting:
                if not confirmation.done():
                    confirmation.set_exception(exc)
                    confirmation.exception()


async def _all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        await future
