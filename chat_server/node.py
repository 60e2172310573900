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
from typing import Protocol, TypeVar

from chat_protocol import close, names
from chat_protocol.close import Close
from chat_protocol.v2 import AWAY_EVERY, NICK_CHANGES, NICK_WINDOW
from chat_server import addresses, signed, tokens
from chat_server.backends.base import (
    Backend,
    BrokerStatus,
    BrokerUnavailable,
    Change,
    PersonChanged,
    public_reason,
)
from chat_server.governance import Governable, Governance
from chat_server.hub import HubMember, RoomHub
from chat_server.member import Member
from chat_server.ops.settings import Settings

log = logging.getLogger("chat_server")
_V = TypeVar("_V")

# Tokens whose last away change, and whose last name changes, a node remembers (for their
# rates): the least recently changed are forgotten first.
RATED_TOKENS = 10_000
ADDRESS_BURST_SECONDS = 2.0  # an address's messages: this many seconds' worth at once


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

    def renamed(self, name: str) -> NameLease:
        """The same lease under the token's new name (its token: the new name, the same
        secret)."""
        token = None if self.token is None else tokens.Token(name, self.token.secret)
        return NameLease(name, token, self.resumed)


def _remember(table: OrderedDict[str, _V], token_id: str, value: _V) -> None:
    """Keep ``value`` for ``token_id`` in a table of at most RATED_TOKENS."""
    table[token_id] = value
    table.move_to_end(token_id)
    while len(table) > RATED_TOKENS:
        table.popitem(last=False)


# Backlogs (--max-backlog-bytes each) that may be queued and not yet written at once, for the
# connections of one address, and for all: 16 MiB and 256 MiB by default.
BACKLOGS_PER_ADDRESS = 4
BACKLOGS_IN_ALL = 64


class AddressShare:
    """What one client address has of this node: its connections, the rate that all of
    them spend their messages from (``--max-messages-per-address``; None: off), and the bytes
    of history and recovery queued for them and not yet written (their backlog)."""

    __slots__ = ("backlog", "connections", "messages")

    def __init__(self, settings: Settings) -> None:
        self.connections = 0
        self.backlog = 0
        rate = settings.per_address(settings.max_messages_per_address)
        self.messages = (
            addresses.AddressRate(rate, rate * ADDRESS_BURST_SECONDS) if rate > 0 else None
        )


class NameRefused(Exception):
    """The name a connection asked for cannot be its own: ``close`` with ``detail`` says why."""

    def __init__(self, close: Close, detail: str) -> None:
        super().__init__(close.text(detail))
        self.close = close
        self.detail = detail


class Session(Governable, Protocol):
    """A connection in a room, as the node lets go of it (``session.ChatSession``)."""

    def drop(self, why: Close, detail: object = None) -> None: ...

    def person_changed(self, changed: PersonChanged) -> None: ...


class Node:
    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        self.hub = RoomHub(backend.channels, self._room_lost, self._delivery_failed)
        self.started = time.time()
        self.connections = 0  # admitted: from the handshake's checks until they left
        self.backlog = 0  # bytes of backlog queued for every connection, not yet written
        self.sessions: set[Session] = set()  # in their rooms
        self._background: set[asyncio.Task[None]] = set()
        self._away_at: OrderedDict[str, float] = OrderedDict()  # token id -> its last away
        # token id -> the times of its last name changes here
        self._nicks_at: OrderedDict[str, list[float]] = OrderedDict()
        # token id -> its sessions here: what a change of a person reaches
        self.by_token: dict[str, set[Session]] = {}
        # client address -> its share: connections now, its messages' bucket
        self.by_address: dict[str, AddressShare] = {}
        self.trusted_proxies = addresses.networks(settings.trusted_proxy)
        # client address -> the rooms it may still bring into being: kept after its last
        # connection (else each reconnect would start full), at most MAX_ADDRESSES of them
        # (addresses.remembered).
        self._new_rooms: OrderedDict[str, addresses.AddressRate] = OrderedDict()
        self.governance = Governance(backend, self.sessions)
        self.verifier = signed.Verifier.of(settings)  # None: an open server
        backend.on_status(self._broker_status)
        backend.on_person(self._person_changed)
        backend.on_governed(self.governance.apply)
        backend.on_rules_missed(self.governance.reload)

    def add_session(self, session: Session, token_id: str | None) -> None:
        self.sessions.add(session)
        if token_id is not None:
            self.by_token.setdefault(token_id, set()).add(session)

    def remove_session(self, session: Session, token_id: str | None) -> None:
        self.sessions.discard(session)
        if token_id is not None:
            held = self.by_token.get(token_id)
            if held is not None:
                held.discard(session)
                if not held:
                    del self.by_token[token_id]

    def admit(self, address: str) -> Close | None:
        """Count one more connection from ``address``, unless the node, or that address's
        share of it, is full (the close that says so); each admitted connection is
        :meth:`release`\\ d once."""
        settings = self.settings
        if self.connections >= settings.max_connections:
            return close.SERVER_FULL
        share = self.by_address.get(address)
        if share is None:
            share = self.by_address[address] = AddressShare(settings)
        elif 0 < settings.per_address(settings.max_connections_per_address) <= share.connections:
            return close.ADDRESS_FULL
        share.connections += 1
        self.connections += 1
        return None

    def release(self, address: str) -> None:
        self.connections -= 1
        share = self.by_address[address]
        share.connections -= 1
        if share.connections == 0:  # bounded by the connections: an idle address is forgotten
            del self.by_address[address]

    def backlog_allowed(self, address: str) -> int:
        """Bytes of backlog one more connection from ``address`` may be sent now: what
        connections that do not read hold is bounded per address and in all (a backlog is
        never counted against a slow consumer: 100 sockets that never read held 1.5 MB each
        until their ping timed out)."""
        settings = self.settings
        share = self.by_address.get(address)
        queued = share.backlog if share is not None else 0
        per_address = BACKLOGS_PER_ADDRESS * settings.max_backlog_bytes - queued
        in_all = BACKLOGS_IN_ALL * settings.max_backlog_bytes - self.backlog
        return max(0, min(settings.max_backlog_bytes, per_address, in_all))

    def backlog_changed(self, address: str, change: int) -> None:
        self.backlog += change
        share = self.by_address.get(address)
        if share is not None:
            share.backlog += change

    def may_create_room(self, address: str) -> bool:
        """One more room brought into being by ``address``, if its share allows it."""
        per_minute = self.settings.per_address(self.settings.max_new_rooms_per_address)
        if per_minute <= 0:
            return True
        rate = addresses.remembered(
            self._new_rooms, address, lambda: addresses.AddressRate(per_minute / 60, per_minute)
        )
        return rate.take()

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
                held = await registry.holder(token.name)
                if held is not None and tokens.matches(held.digest, token):
                    # A former name of the token (a nick change) resumes the name it became.
                    name = await registry.resume_name(token.name, token.digest)
                    if name is not None:
                        return NameLease(name, tokens.Token(name, token.secret), resumed=True)
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

    async def claim_signed(self, identity: signed.Signed, numbered: bool) -> NameLease:
        """The name of a connection with a signed token: its ``sub``, shared by every
        connection of that ``sub`` (on every node). Raises :class:`NameRefused` if someone
        else holds or keeps it."""
        registry = self.backend.registry
        token = identity.name_token()
        lease_token = token if numbered else None
        for _ in range(2):  # a claim can lose a race with another connection of the sub
            held = await registry.holder(token.name)
            if held is not None and tokens.matches(held.digest, token):
                name = await registry.resume_name(token.name, token.digest)
                if name is not None:
                    return NameLease(name, lease_token, resumed=True)
            elif held is None and await registry.claim_name(token.name, token.digest):
                # The token's own name, as a resumed one is: its conversations may open too.
                return NameLease(token.name, lease_token, resumed=True)
        raise NameRefused(close.NAME_TAKEN, identity.name)

    async def set_away(self, token_id: str, name: str, message: str | None) -> None:
        """The token's user is away (``None``: back): kept for the room listings, and said in
        every room any of its connections is in, on every node. At most once a second per
        token here: each change is said in all its rooms, so a token with many connections
        must not multiply it."""
        now = time.monotonic()
        last = self._away_at.get(token_id)
        if last is not None and now - last < AWAY_EVERY:
            return
        _remember(self._away_at, token_id, now)
        if message is None:
            changed = PersonChanged(token_id, Change.BACK, name)
        else:
            changed = PersonChanged(token_id, Change.AWAY, name, message)
        with contextlib.suppress(BrokerUnavailable):  # an outage closes everyone anyway
            await self.backend.registry.set_away(name, message)
            await self.backend.announce(changed)

    async def rename(self, lease: NameLease, new: str) -> str | None:
        """The lease's token takes the name ``new`` in every room any of its connections is
        in, on every node: ``None`` once done (or if it is the name already), else what the
        client is told. At most NICK_CHANGES per token in any NICK_WINDOW seconds here."""
        old = lease.name
        if lease.token is None:
            return "only a chat.v2 connection can change its name"
        if new == old:
            return None
        problem = names.chosen_name_problem(new)
        if problem is not None:
            return close.INVALID_NAME.text(problem)
        if self.governance.banned("", new, None, "") is not None:
            return f"{new} is banned from this server"
        token_id = lease.token_id
        now = time.monotonic()
        recent = [at for at in self._nicks_at.get(token_id, ()) if now - at < NICK_WINDOW]
        if len(recent) >= NICK_CHANGES:
            return f"name changes: at most {NICK_CHANGES} every {NICK_WINDOW:g} s; still {old}"
        # Every attempt counts (a taken name costs the broker a call too).
        _remember(self._nicks_at, token_id, [*recent, now])
        try:
            if not await self.backend.registry.rename_name(old, new, lease.token.digest):
                return close.NAME_TAKEN.text(new)
            changed = PersonChanged(token_id, Change.NICK, old, new)
            # This node's connections of the token first, at once (the sender's next frames
            # are under the new name); the others when the announcement reaches them (here
            # again, where it changes nothing).
            self._person_changed(changed)
            await self.backend.announce(changed)
        except BrokerUnavailable:
            return None  # an outage closes everyone anyway
        return None

    def _person_changed(self, changed: PersonChanged) -> None:
        sessions = list(self.by_token.get(changed.token_id, ()))
        if changed.change is Change.DIRECT:
            # Said once per node: every connection of the client would say the same.
            sessions = sessions[:1]
        for session in sessions:
            session.person_changed(changed)

    def spawn(self, coro: Awaitable[None]) -> asyncio.Future[None]:
        """Run ``coro`` in the background, kept until it is done."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

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
            self.spawn(self.governance.reload())
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
