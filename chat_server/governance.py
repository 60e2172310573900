"""What operators and moderators decided, as this node enforces it: bans, mutes, rooms'
settings (topic, slow mode, lock) and moderator tokens.

The broker keeps every rule (``backends.base.Rule``) and tells every node of each one kept or
dropped, and of each kick; each node keeps its own copy in the tables here, so that the checks
on a join or a message never wait on the broker. A node loads every rule when its broker
becomes available (at start, and after an outage, when it may have missed some).

Keys (``Rule.key``):

* a ban: ``"{room} {what}"``, ``room`` empty for every room, ``what`` ``name:{name key}``,
  ``token:{token id}`` (the resume token that held a banned name) or ``address:{network}``;
* a mute: ``"{room} {name key}"``; a room's settings: the room; a moderator token: its digest.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from chat_protocol import close
from chat_protocol.close import Close
from chat_protocol.names import is_valid_room, name_key
from chat_server.backends.base import (
    Backend,
    BrokerUnavailable,
    Governed,
    Kick,
    Rule,
    RuleDropped,
    RuleKind,
)

log = logging.getLogger("chat_server")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class RoomSettings:
    topic: str | None = None
    slow: float = 0.0  # seconds between one member's messages (0: off)
    locked: bool = False
    # While locked: the resume tokens (their ids) of its members when it was locked, who may
    # come back (a restart or a dropped link reconnects everyone: "nobody new" is not them).
    # By token, not by name: a name is free once its member left (a text client's at once, a
    # token's when its reservation ends), and a member may change it meanwhile.
    members: frozenset[str] = frozenset()

    @classmethod
    def of(cls, value: dict[str, Any]) -> RoomSettings:
        topic, locked = value.get("topic"), bool(value.get("locked"))
        members = value.get("members") if locked else None
        return cls(
            topic or None,
            float(value.get("slow") or 0),
            locked,
            frozenset(m for m in members if isinstance(m, str))
            if isinstance(members, list)
            else frozenset(),
        )

    def to_value(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "slow": self.slow,
            "locked": self.locked,
            "members": sorted(self.members),
        }

    def admits(self, token_id: str | None) -> bool:
        """Whether a connection of ``token_id`` (None: without a token) may join: the room is
        open, or the token's member was in it when it was locked."""
        return not self.locked or (token_id is not None and token_id in self.members)

    def shown(self) -> dict[str, Any]:
        """As the admin API answers: how many may come back, not who (their tokens' ids)."""
        return {**self.to_value(), "members": len(self.members)}


OPEN = RoomSettings()
# Members whose last message a node remembers for slow mode.
SLOW_KEPT = 100_000


class Governable(Protocol):
    """A connection in a room, as what operators decide reaches it (``session.ChatSession``)."""

    room: str
    name: str
    client_address: str

    @property
    def token_id(self) -> str | None: ...

    def removed_by(self, why: Close, reason: str) -> None:
        """Closed by an operator's or moderator's decision (a kick, a ban): the room is told
        that it was kicked, and why."""

    def tell_topic(self, topic: str | None) -> None: ...

    def tell(self, description: str) -> None:
        """An error notice for this connection alone (``error: ...``)."""


def is_room_pattern(value: object) -> bool:
    """A room name, or a prefix of room names ending in ``*`` (a moderator's rooms, a signed
    token's ``rooms`` and ``mod``)."""
    return isinstance(value, str) and is_valid_room(value.removesuffix("*"))


def covers(patterns: Iterable[str], room: str) -> bool:
    """Whether ``room`` is one of ``patterns``."""
    return any(
        room == pattern or (pattern.endswith("*") and room.startswith(pattern[:-1]))
        for pattern in patterns
    )


def name_ban(room: str | None, name: str) -> str:
    return f"{room or ''} name:{name_key(name)}"


def token_ban(room: str | None, token_id: str) -> str:
    return f"{room or ''} token:{token_id}"


def address_ban(room: str | None, network: Network) -> str:
    return f"{room or ''} address:{network}"


def mute_key(room: str, name: str) -> str:
    return f"{room} {name_key(name)}"


def token_mute(room: str, token_id: str) -> str:
    # A token id is hexadecimal: never a name key, which starts with a letter.
    return f"{room} token:{token_id}"


def network_of(address: str) -> Network | None:
    """An address or CIDR as a network; None if it is neither."""
    try:
        return ipaddress.ip_network(address, strict=False)
    except ValueError:
        return None


class Governance:
    def __init__(self, backend: Backend, sessions: set[Any]) -> None:
        """``sessions``: the node's connections in their rooms (a set it keeps up to date)."""
        self._backend = backend
        self._sessions: set[Governable] = sessions
        self._rules: dict[tuple[RuleKind, str], Rule] = {}
        # Address bans, walked for each new connection (few: an operator's list).
        self._networks: dict[str, tuple[Network, Rule]] = {}
        # Rooms with a mute or slow mode: only their messages are looked at (the others are
        # the hot path, and pay one set lookup).
        self.restricted: set[str] = set()
        # (room, name key) -> when its last message went out, in rooms with slow mode: kept
        # by name, so that reconnecting does not start the wait afresh; the least recently
        # written forgotten past SLOW_KEPT.
        self._last_sent: OrderedDict[tuple[str, str], float] = OrderedDict()

    # --- the tables -----------------------------------------------------------------------

    async def reload(self) -> None:
        """Every rule in force, from the broker (what was missed in an outage too)."""
        with contextlib.suppress(BrokerUnavailable):
            rules = await self._backend.rules()
            self._rules.clear()
            self._networks.clear()
            for rule in rules:
                self._keep(rule)
            self._restrict()
            for session in list(self._sessions):
                self._enforce_bans(session)  # bans made while this node was cut off

    def apply(self, governed: Governed) -> None:
        """A rule kept or dropped, or a kick, from any node (this one too)."""
        if isinstance(governed, Kick):
            self._kick(governed)
            return
        room = governed.key if governed.kind is RuleKind.ROOM else None
        before = None if room is None else self.room(room)
        if isinstance(governed, RuleDropped):
            dropped = self._rules.pop((governed.kind, governed.key), None)
            self._networks.pop(governed.key, None)
            if (
                dropped is not None
                and dropped.kind is RuleKind.MUTE
                and " token:" not in dropped.key
            ):
                self._tell_muted(dropped, lifted=True)  # (its token's twin: told once, by name)
        else:
            self._keep(governed)
            if governed.kind is RuleKind.BAN:
                for session in list(self._sessions):
                    self._enforce_bans(session)
        self._restrict()
        if (
            isinstance(governed, Rule)
            and governed.kind is RuleKind.MUTE
            and " token:" not in governed.key  # its twin on the token: told once, by name
        ):
            self._tell_muted(governed)
        if room is not None and before is not None:
            after = self.room(room)
            # Every member learns what changed: a topic as a topic, slow mode as a notice (it
            # learnt it at its first message refused).
            for session in list(self._sessions):
                if session.room == room:
                    if after.topic != before.topic:
                        session.tell_topic(after.topic)
                    if after.slow != before.slow:
                        session.tell(slow_text(after.slow))

    def _keep(self, rule: Rule) -> None:
        self._rules[rule.kind, rule.key] = rule
        if rule.kind is RuleKind.BAN and " address:" in rule.key:
            network = network_of(rule.key.partition(" address:")[2])
            if network is not None:
                self._networks[rule.key] = (network, rule)

    def _restrict(self) -> None:
        restricted = set()
        for (kind, key), rule in self._rules.items():
            if kind is RuleKind.MUTE:
                restricted.add(key.partition(" ")[0])
            elif kind is RuleKind.ROOM and RoomSettings.of(rule.value).slow > 0:
                restricted.add(key)
        # In place: each session holds this set.
        self.restricted.clear()
        self.restricted.update(restricted)

    def _live(self, kind: RuleKind, key: str) -> Rule | None:
        rule = self._rules.get((kind, key))
        if rule is None:
            return None
        if not rule.live(time.time()):
            del self._rules[kind, key]
            self._networks.pop(key, None)
            return None
        return rule

    def rules(self, kind: RuleKind) -> list[Rule]:
        now = time.time()
        return [rule for (k, _), rule in self._rules.items() if k is kind and rule.live(now)]

    # --- the checks -----------------------------------------------------------------------

    def room(self, room: str) -> RoomSettings:
        rule = self._rules.get((RuleKind.ROOM, room))
        return OPEN if rule is None else RoomSettings.of(rule.value)

    def banned(
        self, room: str, name: str | None, token_id: str | None, address: str
    ) -> Rule | None:
        """The ban that keeps this connection out of ``room``, if any."""
        for scope in ("", room):
            if name is not None and (rule := self._live(RuleKind.BAN, name_ban(scope, name))):
                return rule
            if token_id is not None and (
                rule := self._live(RuleKind.BAN, token_ban(scope, token_id))
            ):
                return rule
        if self._networks:
            client = network_of(address)
            if client is not None:
                for key, (network, rule) in list(self._networks.items()):
                    scope = key.partition(" ")[0]
                    if (
                        scope in ("", room)
                        and network.version == client.version
                        and network.overlaps(client)  # type: ignore[arg-type]
                        and self._live(RuleKind.BAN, key) is not None
                    ):
                        return rule
        return None

    def slowed(self, room: str, name: str) -> float | None:
        """If ``name`` may not send in ``room`` yet (slow mode), the room's interval; else
        None, and the message counts as its last."""
        slow = self.room(room).slow
        if slow <= 0:
            return None
        key, now = (room, name_key(name)), time.monotonic()
        last = self._last_sent.get(key)
        if last is not None and now - last < slow:
            return slow
        self._last_sent[key] = now
        self._last_sent.move_to_end(key)
        if len(self._last_sent) > SLOW_KEPT:
            self._last_sent.popitem(last=False)
        return None

    def muted(self, room: str, name: str, token_id: str | None) -> Rule | None:
        rule = self._live(RuleKind.MUTE, mute_key(room, name))
        if rule is None and token_id is not None:
            rule = self._live(RuleKind.MUTE, token_mute(room, token_id))
        return rule

    def moderator(self, digest: str) -> Rule | None:
        """The moderator token whose digest is ``digest``, if one is kept."""
        return self._live(RuleKind.TOKEN, digest)

    # --- acting on live connections -------------------------------------------------------

    def _enforce_bans(self, session: Governable) -> None:
        rule = self.banned(session.room, session.name, session.token_id, session.client_address)
        if rule is not None:
            session.removed_by(close.BANNED, ban_reason(rule))

    def _tell_muted(self, rule: Rule, lifted: bool = False) -> None:
        """The member a mute silences learns it now, not at its next message; and when it
        is lifted (by an operator: one that ends by itself is said at its first refusal)."""
        room, key = rule.value.get("room"), name_key(str(rule.value.get("name")))
        said = "you are no longer muted in this room" if lifted else muted_text(rule)
        for session in list(self._sessions):
            if session.room == room and name_key(session.name) == key:
                session.tell(said)

    def _kick(self, kick: Kick) -> None:
        key = name_key(kick.name)
        for session in list(self._sessions):
            if name_key(session.name) == key and kick.room in (None, session.room):
                session.removed_by(close.KICKED, kick.reason)


def rule_reason(rule: Rule) -> str:
    return str(rule.value.get("reason") or "")


def slow_text(slow: float) -> str:
    """What a member of a room is told of its slow mode (at each message refused too)."""
    return f"slow mode: one message every {slow:g} s" if slow else "slow mode is off"


def muted_text(rule: Rule) -> str:
    """What a muted member is told, when muted and at each message refused."""
    why = rule_reason(rule)
    said = f"you are muted in this room: {why}" if why else "you are muted in this room"
    if rule.expires is not None:
        said += f" ({_span(rule.expires - time.time())} left)"
    return said


def ban_reason(rule: Rule) -> str:
    """What a banned connection is told: the reason, and how long the ban has left."""
    why = rule_reason(rule)
    if rule.expires is None:
        return why
    left = f"{_span(rule.expires - time.time())} left"
    return f"{why} ({left})" if why else left


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{round(seconds / size)} {unit}"
    return f"{max(1, round(seconds))} s"
