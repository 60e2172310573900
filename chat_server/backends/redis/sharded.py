"""The sharded pub/sub connection to one Redis Cluster master (``SSUBSCRIBE``, Redis ≥ 7).

One of these per master, not per slot or channel: a node subscribes every room whose slot
that master owns on one connection, with one reader. What differs from
:class:`~chat_server.backends.redis.links.PubSubLink`:

* every ``SSUBSCRIBE`` names channels of a single slot: Redis refuses one that spans slots
  (``CROSSSLOT``), even slots of the same master: the bug redis-py #4038 fixed in its
  resubscribe;
* a command can be refused (``MOVED``: the slot is elsewhere now), so replies are matched to
  commands in order, and the refusal fails that command's future only;
* Redis itself unsubscribes a channel whose slot leaves the master (a migration, or the
  master demoted): that ``sunsubscribe``, which no command asked for, goes to
  ``on_unsubscribed`` so the cluster can subscribe it again where the slot went (redis-py
  #4044's case).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from chat_server.backends.base import BrokerUnavailable
from chat_server.backends.redis.links import Link, MakeConnection, OnFailure, _Wire, reply_batches

SUBSCRIBE, UNSUBSCRIBE, MESSAGE = b"ssubscribe", b"sunsubscribe", b"smessage"


@dataclass(slots=True)
class _Command:
    """A command sent and not yet answered: Redis answers each channel it names, in order."""

    kind: bytes
    unanswered: list[bytes]
    done: asyncio.Future[None]


class ShardedPubSubLink(Link):
    def __init__(
        self,
        make_connection: MakeConnection,
        on_message: Callable[[bytes, bytes], None],
        on_unsubscribed: Callable[[str], None],
        on_failure: OnFailure,
    ) -> None:
        super().__init__(make_connection, on_failure)
        self._on_message = on_message
        self._on_unsubscribed = on_unsubscribed
        self._commands: deque[_Command] = deque()
        # Subscribed on this connection: as Redis confirmed, less those asked to go (a
        # channel subscribed again before Redis confirms its unsubscribe must be sent again,
        # not taken for subscribed). A new connection starts empty.
        self.channels: set[str] = set()

    async def connect(self, client_name: str) -> None:
        self.channels = set()
        await super().connect(client_name)

    def subscribe(self, channels: Iterable[str]) -> asyncio.Future[None]:
        """``SSUBSCRIBE`` channels that share one slot; resolves once Redis has confirmed
        every one (nothing published after that can be missed), or fails with Redis's
        refusal (``MovedError``) or ``BrokerUnavailable``."""
        return self._command(SUBSCRIBE, list(channels))

    def unsubscribe(self, channel: str) -> asyncio.Future[None]:
        self.channels.discard(channel)
        return self._command(UNSUBSCRIBE, [channel])

    def _command(self, kind: bytes, channels: list[str]) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.down_reason is not None:
            done.set_exception(BrokerUnavailable(self.down_reason))
            done.exception()  # an unsubscribe's is not awaited
            return done
        self._commands.append(_Command(kind, [c.encode() for c in channels], done))
        self._send(kind.decode().upper(), *channels)
        return done

    async def _read_loop(self, wire: _Wire) -> None:
        on_message, commands = self._on_message, self._commands
        async for replies in reply_batches(wire.conn):
            if wire is not self._wire:
                return
            for reply in replies:
                if isinstance(reply, Exception):  # refuses the oldest command, all of it
                    if not commands:
                        raise RuntimeError(f"an error no command asked for: {reply!r:.80}")
                    _settle(commands.popleft().done, reply)
                    continue
                kind = reply[0]
                if kind == MESSAGE:
                    on_message(reply[1], reply[2])
                elif kind in (SUBSCRIBE, UNSUBSCRIBE):
                    channel = reply[1].decode()
                    if kind == SUBSCRIBE:
                        self.channels.add(channel)
                    else:
                        self.channels.discard(channel)
                    head = commands[0] if commands else None
                    if head is not None and head.kind == kind and reply[1] in head.unanswered:
                        head.unanswered.remove(reply[1])
                        if not head.unanswered:
                            commands.popleft()
                            _settle(head.done, None)
                    elif kind == UNSUBSCRIBE:  # Redis's own: the slot left this master
                        self._on_unsubscribed(channel)
                    else:
                        raise RuntimeError(f"a confirmation nobody asked for: {reply!r:.80}")
                else:
                    raise RuntimeError(f"unexpected pub/sub reply {reply!r:.80}")

    def _failed(self, exc: BrokerUnavailable) -> None:
        commands, self._commands = self._commands, deque()
        for command in commands:
            _settle(command.done, exc)


def _settle(future: asyncio.Future[None], outcome: BaseException | None) -> None:
    if future.done():
        return
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)
        future.exception()  # whoever awaits it still gets it; no "never retrieved"
