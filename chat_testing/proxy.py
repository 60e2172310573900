"""A TCP relay for tests, on a free loopback port, in a thread of its own.

Two uses, for what a real network does and a test cannot otherwise make happen:

* in front of redis-server, to make one connection go silent while its socket stays open
  (what a proxy or failover does to a pub/sub subscription): ``blackhole(...)``;
* in front of chat-server processes, as the load balancer of a cluster: each connection goes
  to the first target that accepts, in the proxy's order of preference, so that a client
  whose server was killed is reconnected to another;
* in front of one chat-server, to drop a client's connection while the server stays up
  (``cut(...)``), or as a proxy that does not pass the ``Sec-WebSocket-Protocol`` header on
  (``strip_subprotocols=True``): the server then speaks the original text protocol, as a
  server that has no chat.v2 does.

Apart from that header it only relays bytes; what is tested is the behaviour on either side.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from chat_testing.ports import free_port

HELLO_BYTES = 4096  # of what the client sent first, kept to tell connections apart
HEAD_END = b"\r\n\r\n"


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


class TcpProxy:
    def __init__(self, targets: list[int], *, strip_subprotocols: bool = False) -> None:
        self.targets = targets
        self.strip_subprotocols = strip_subprotocols
        self.port = free_port()
        self.relays: list[Relay] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: asyncio.Event | None = None  # created in the proxy's loop

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *_: object) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _start(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for relay in self.relays:
            for writer in relay.writers:
                writer.close()

    def blackhole(self, matches: Callable[[bytes], bool]) -> int:
        """From now on, drop what the target sends on every open connection whose first bytes
        from the client match; the sockets stay open. Returns how many were silenced."""

        async def silence() -> int:
            chosen = [r for r in self.relays if matches(bytes(r.hello)) and r.writers]
            for relay in chosen:
                relay.silenced = True
            return len(chosen)

        return int(self._call(silence()))  # type: ignore[call-overload]

    def cut(self, matches: Callable[[bytes], bool] = lambda hello: True) -> int:
        """Close both sides of every open connection whose first bytes from the client match
        (to the client, a connection that died without a close frame). Returns how many."""

        async def close() -> int:
            chosen = [r for r in self.relays if matches(bytes(r.hello)) and r.writers]
            for relay in chosen:
                for writer in relay.writers:
                    writer.transport.abort()
            return len(chosen)

        return int(self._call(close()))  # type: ignore[call-overload]

    def hold(self) -> None:
        """From now on, new connections are accepted but wait (not yet passed on to a target)
        until :meth:`release`: decides when a reconnecting client gets through."""
        self._call(self._set_open(False))

    def release(self) -> None:
        self._call(self._set_open(True))

    async def _set_open(self, is_open: bool) -> None:
        assert self._open is not None
        if is_open:
            self._open.set()
        else:
            self._open.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        relay = Relay()
        assert self._open is not None
        await self._open.wait()
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
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, up=True), pipe(up_reader, writer, up=False))
        relay.writers = []
