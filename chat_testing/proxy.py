"""A TCP relay for tests and benchmarks, on a free loopback port, in a thread of its own.

For what a real network does and a test cannot otherwise make happen:

* in front of one chat-server, to drop a client's connections while the server stays up
  (:meth:`TcpProxy.cut`: to the client, connections that died without a close frame), and to
  hold a reconnecting client back until the test lets it through (:meth:`TcpProxy.hold`,
  :meth:`TcpProxy.release`: decides who gets back first, or lets the server restart first);
* in front of chat-server processes, as the load balancer of a cluster: each connection goes
  to the first target that accepts, in the proxy's order of preference, so that a client
  whose server was killed is reconnected to another;
* in front of redis-server, to make one connection go silent while its socket stays open
  (what a proxy or failover does to a pub/sub subscription): :meth:`TcpProxy.blackhole`; and
  to know when a client has sent something (:meth:`TcpProxy.watch`);
* as a proxy that does not pass the ``Sec-WebSocket-Protocol`` header on
  (``strip_subprotocols=True``): the server then speaks the original text protocol, as a
  server that has no chat.v2 does.

Apart from that header it only relays bytes; what is tested is the behaviour on either side.

The relay runs its own event loop in a thread, so it serves a test's event loop and plain
threads alike. :meth:`~TcpProxy.hold`, :meth:`~TcpProxy.release` and :meth:`~TcpProxy.watch`
take effect at once without waiting for that thread; :meth:`~TcpProxy.cut` and
:meth:`~TcpProxy.blackhole` return once the relay's thread has done it (it never waits for the
caller's loop, so an async test may call them directly: they block it for that moment only).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from chat_testing.ports import free_port

HELLO_BYTES = 4096  # of what the client sent first, kept to tell connections apart
HEAD_END = b"\r\n\r\n"
CALL_TIMEOUT = 10.0

T = TypeVar("T")


def without_subprotocols(head: bytes) -> bytes:
    """An HTTP request head without its Sec-WebSocket-Protocol header lines."""
    lines = head.split(b"\r\n")
    return b"\r\n".join(
        line for line in lines if not line.lower().startswith(b"sec-websocket-protocol:")
    )


@dataclass
class Relay:
    hello: bytearray = field(default_factory=bytearray)
    target: int = 0
    silenced: bool = False
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


@dataclass
class _Watch:
    needle: bytes
    seen: threading.Event = field(default_factory=threading.Event)


class TcpProxy:
    def __init__(self, targets: list[int], *, strip_subprotocols: bool = False) -> None:
        self.targets = targets
        self.strip_subprotocols = strip_subprotocols
        self.port = free_port()
        self.relays: list[Relay] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._holding = False
        self._held: list[asyncio.Future[None]] = []  # connections waiting for release()
        self._watches: list[_Watch] = []

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *_: object) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for relay in self.relays:
            for writer in relay.writers:
                writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def blackhole(self, matches: Callable[[bytes], bool]) -> int:
        """From now on, drop what the target sends on every open connection whose first bytes
        from the client match; the sockets stay open. Returns how many were silenced."""

        async def silence() -> int:
            chosen = [r for r in self.relays if matches(bytes(r.hello)) and r.writers]
            for relay in chosen:
                relay.silenced = True
            return len(chosen)

        return self._call(silence())

    def cut(self, matches: Callable[[bytes], bool] = lambda hello: True) -> int:
        """Close both sides of every open connection whose first bytes from the client match
        (to the client, a connection that died without a close frame; the target stays up).
        Returns how many."""

        async def close() -> int:
            chosen = [r for r in self.relays if matches(bytes(r.hello)) and r.writers]
            for relay in chosen:
                for writer in relay.writers:
                    writer.transport.abort()
            return len(chosen)

        return self._call(close())

    def hold(self) -> None:
        """From now on, new connections are accepted but wait (not yet passed on to a target)
        until :meth:`release`: decides when a reconnecting client gets through. Open
        connections are not affected."""
        self._holding = True

    def release(self) -> None:
        """Pass the held connections on, and every new one from now on."""
        self._holding = False
        self._loop.call_soon_threadsafe(self._let_through)

    def watch(self, needle: bytes) -> threading.Event:
        """An event set once ``needle`` has passed from a client towards its target (on any
        connection, from now on): the client has sent it, whatever the target does with it."""
        watch = _Watch(needle)
        self._watches.append(watch)
        return watch.seen

    def _let_through(self) -> None:
        held, self._held = self._held, []
        for waiter in held:
            if not waiter.done():
                waiter.set_result(None)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        # Ended by _stop(): the task ends as if the connection had, because asyncio's server
        # logs an error for a handler task that ends cancelled (Python 3.11).
        with contextlib.suppress(asyncio.CancelledError):
            await self._relay(reader, writer)
        self._tasks.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        relay = Relay()
        while self._holding:  # checked and queued in one step: release() cannot slip between
            waiter = asyncio.get_running_loop().create_future()
            self._held.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                writer.transport.abort()
                raise
        for index, port in enumerate(self.targets):
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            relay.target = index
            break
        else:
            writer.close()  # nothing accepts: the client sees the connection closed
            return
        relay.writers = [writer, up_writer]
        self.relays.append(relay)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            tail = b""  # the end of the previous read, for a watched needle cut in two
            with contextlib.suppress(
                OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError
            ):
                if up and self.strip_subprotocols:
                    head = await src.readuntil(HEAD_END)
                    relay.hello += head[:HELLO_BYTES]
                    dst.write(without_subprotocols(head))
                while data := await src.read(65536):
                    if up and len(relay.hello) < HELLO_BYTES:
                        relay.hello += data[: HELLO_BYTES - len(relay.hello)]
                    if not up and relay.silenced:
                        continue
                    dst.write(data)
                    if up and self._watches:
                        tail = self._seen(tail + data)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(
                pipe(reader, up_writer, up=True), pipe(up_reader, writer, up=False)
            )
        except asyncio.CancelledError:  # the proxy stops
            for end in (writer, up_writer):
                end.transport.abort()
            raise
        finally:
            relay.writers = []

    def _seen(self, data: bytes) -> bytes:
        """Set the watches whose needle is in ``data``; returns what to keep for the next."""
        longest = 0
        for watch in list(self._watches):
            if watch.needle in data:
                watch.seen.set()
            longest = max(longest, len(watch.needle))
        return data[-longest + 1 :] if longest > 1 else b""
