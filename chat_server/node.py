"""This server process as a node of the chat: its settings, its broker, its room hub, the
connections it holds and the names they have. One per process, shared by every connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from chat_protocol import close, names
from chat_protocol.close import Close
from chat_protocol.v2 import AWAY_EVERY
from chat_server import tokens
from chat_server.backends.base import Backend, BrokerStatus, BrokerUnavailable, public_reason
from chat_server.hub import HubMember, RoomHub
from chat_server.member import Member
from chat_server.ops.settings import Settings

log = logging.getLogger("chat_server")

AWAY_TOKENS = 10_000  # tokens whose last away change a node remembers (for the rate)


@dataclass(frozen=True, slots=True)
class NameLease:
    """A connection's name: in a numbered dialect also its token, and whether it was resumed."""

    name: str
    token: tokens.Token | None = None
    resumed: bool = False

    @property
    def token_id(self) -> str:
        assert self.token is not None
        return tokens.token_id(self.token.digest)


class NameRefused(Exception):
    """The name a connection asked for cannot be its own: ``close`` with ``detail`` says why."""

    def __init__(self, close: Close, detail: str) -> None:
        super().__init__(close.text(detail))
        self.close = close
        self.detail = detail


class Session(Protocol):
    """A connection in a room, as the node lets go of it (``session.ChatSession``)."""

    def drop(self, why: Close, detail: object = None) -> None: ...

    def away_changed(self, token_id: str, message: str | None) -> None: ...


class Node:
    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        self.hub = RoomHub(backend.channels, self._room_lost, self._delivery_failed)
        self.started = time.time()
        self.connections = 0  # admitted: from the handshake's checks until they left
        self.sessions: set[Session] = set()  # in their rooms
        self._background: set[asyncio.Task[None]] = set()
        self._away_at: OrderedDict[str, float] = OrderedDict()  # token id -> its last away
        backend.on_status(self._broker_status)
        backend.on_away(self._away_changed)

    def admit(self) -> bool:
        """Count one more connection, unless the node is full; each admitted connection is
        :meth:`release`\\ d once."""
        if self.connections >= self.settings.max_connections:
            return False
        self.connections += 1
        return True

    def release(self) -> None:
        self.connections -= 1

    async def claim_name(
        self, resume: str | None = None, tokened: bool = False, wanted: str | None = None
    ) -> NameLease:
        """The name of a new connection: the one ``resume`` was issued with if that token is
        still its own (and it is ``wanted``, in any case, if a name is wanted), else
        ``wanted``, else a fresh one; with a token of its own if ``tokened``. Raises
        :class:`NameRefused` for a ``wanted`` name that breaks the rules or that someone else
        holds or keeps."""
        registry = self.backend.registry
        if wanted is not None:
            problem = names.chosen_name_problem(wanted)
            if problem is not None:
                raise NameRefused(close.INVALID_NAME, problem)
        if resume is not None:
            token = tokens.parse_token(resume)
            # The token's own name, asked for in another case, is still its own: resumed as
            # it was chosen (names are one whatever their case).
            if token is not None and (
                wanted is None or names.name_key(token.name) == names.name_key(wanted)
            ):
                stored = await registry.name_digest(token.name)
                if tokens.matches(stored, token) and await registry.resume_name(
                    token.name, token.digest
                ):
                    return NameLease(token.name, token, resumed=True)
        if wanted is not None:
            token = tokens.new_token(wanted) if tokened else None
            if await registry.claim_name(wanted, None if token is None else token.digest):
                return NameLease(wanted, token)
            raise NameRefused(close.NAME_TAKEN, wanted)
        while True:
            name = names.random_name()
            token = tokens.new_token(name) if tokened else None
            if await registry.claim_name(name, None if token is None else token.digest):
                return NameLease(name, token)

    async def set_away(self, token_id: str, name: str, message: str | None) -> None:
        """The token's user is away (``None``: back): kept for the room listings, and said in
        every room any of its connections is in, on every node. At most once a second per
        token here: each change is said in all its rooms, so a token with many connections
        must not multiply it."""
        now = time.monotonic()
        last = self._away_at.get(token_id)
        if last is not None and now - last < AWAY_EVERY:
            return
        self._away_at[token_id] = now
        self._away_at.move_to_end(token_id)
        while len(self._away_at) > AWAY_TOKENS:
            self._away_at.popitem(last=False)
        with contextlib.suppress(BrokerUnavailable):  # an outage closes everyone anyway
            await self.backend.registry.set_away(name, message)
            await self.backend.announce_away(token_id, name, message)

    def _away_changed(self, token_id: str, name: str, message: str | None) -> None:
        for session in list(self.sessions):
            session.away_changed(token_id, message)

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` in the background, kept until it is done."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _room_lost(self, room: str, members: list[HubMember], why: str) -> None:
        log.warning("lost events room=%s members=%d reason=%s", room, len(members), why)
        for member in members:
            if isinstance(member, Member):
                member.drop(close.MISSED_EVENTS)

    def _delivery_failed(self, room: str, member: HubMember, exc: Exception) -> None:
        log.error("delivery failed room=%s name=%s error=%s", room, member.name, type(exc).__name__)
        if isinstance(member, Member):
            member.drop(close.SERVER_ERROR)

    def _broker_status(self, status: BrokerStatus) -> None:
        if status.available:
            log.warning("broker available url=%s", self.backend.url)
            return
        log.warning(
            "broker unavailable url=%s reason=%s; closing %d connection(s)",
            self.backend.url,
            status.reason,
            len(self.sessions),
        )
        # A chat where the others silently stop hearing you is worse than a clear outage:
        # everyone is told, and reconnects once the broker answers again.
        detail = public_reason(BrokerUnavailable(status.reason))
        for session in list(self.sessions):
            session.drop(close.BROKER_UNAVAILABLE, detail)
