"""The broker interface: a channel backend for the rooms' events and a registry for names and
presence, behind one :class:`Backend` per process, chosen by URL scheme (see ``__init__``).

Contract every backend keeps:

* **One order per room.** Every subscriber of a room, on any node, receives the room's events
  in one and the same order, each stamped with its serial, offset and epoch
  (see ``chat_server.events``) in the same atomic step as the publish.
* **Subscriptions are live when they say so.** ``subscribe`` resolves once every later publish
  to the room is certain to reach this node; ``subscribe`` and ``unsubscribe`` take effect in
  the order they are called.
* **Delivery never waits.** The backend hands each arriving event to the ``deliver`` callback
  (the room hub) synchronously; the callback never blocks, so a slow member can never slow
  the backend's reader.
* **Presence follows the announcements.** Publishing a join also records the member in the
  room's presence, publishing a leave removes it, in the same atomic step, so that presence
  and what members were told never disagree. A leave of a member who is no longer present
  (already announced, for example by a reaper) publishes nothing and returns ``None``: every
  leave is announced once.
* **Names are unique** among all live connections of every node sharing the backend, except
  that a name issued with a resume token may be held by several connections of that token (a
  client in several rooms). Such a name stays reserved for its token for the reservation
  window after its last connection ends.
* **A message is in history if and only if it was published**, in the same atomic step:
  history is what was delivered live, with the same offsets. A message whose nonce the room
  already published for the same token (among that token's last ``DEDUP_PER_TOKEN`` nonces
  in the room, within ``DEDUP_PER_ROOM`` of the room's in all, the heaviest token's oldest
  forgotten first) is not published again.
* **A name joins a room once.** A join of a name already present in the room (the same token
  from a newer connection) first publishes the old connection's leave, with the text
  ``events.REPLACED``; that connection's later messages and leave publish nothing (they carry
  the serial of their own join as ``ref``).
* **It never pretends.** When the backend cannot reach its store it raises
  :class:`BrokerUnavailable` at once and reports ``status.available == False`` to the
  ``on_status`` callback, rather than accepting publishes that nobody will hear.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from chat_protocol.http import ROOMS_PAGE
from chat_server.events import EventKind, Published, RoomEvent, StoredMessage

Deliver = Callable[[str, RoomEvent], None]
# (room, why): the room's channel was interrupted; events published meanwhile may be missing.
Interrupted = Callable[[str, str], None]


class Change(StrEnum):
    """What happened to a person (every connection of one token), told to every node."""

    AWAY = "a"  # text: the away message
    BACK = "b"
    NICK = "n"  # name: the old name, text: the new one
    DIRECT = "d"  # name wrote to the token's user in a conversation it has no connection to


@dataclass(frozen=True, slots=True)
class PersonChanged:
    token_id: str
    change: Change
    name: str
    text: str = ""


OnPerson = Callable[[PersonChanged], None]


class RuleKind(StrEnum):
    """What an operator or moderator decided that lasts (``chat_server.governance``)."""

    BAN = "ban"  # key: "{room or ''} name:{name key}" / "... address:{network}"
    MUTE = "mute"  # key: "{room} {name key}"
    ROOM = "room"  # key: the room; value: topic, slow, locked
    TOKEN = "token"  # key: a moderator token's digest; value: label, rooms


@dataclass(frozen=True, slots=True)
class Rule:
    """One lasting decision, kept by the broker for every node: ``value`` is JSON's, and the
    rule ends by itself at ``expires`` (Unix time; None: never)."""

    kind: RuleKind
    key: str
    value: dict[str, Any]
    expires: float | None = None

    def live(self, now: float) -> bool:
        return self.expires is None or now < self.expires

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind.value,
                "key": self.key,
                "value": self.value,
                "expires": self.expires,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> Rule:
        """Raises ValueError (or KeyError, TypeError) for what is not a rule."""
        body = json.loads(data)
        expires = body.get("expires")
        return cls(
            RuleKind(body["kind"]),
            str(body["key"]),
            dict(body["value"]),
            None if expires is None else float(expires),
        )


@dataclass(frozen=True, slots=True)
class RuleDropped:
    kind: RuleKind
    key: str


@dataclass(frozen=True, slots=True)
class Kick:
    """Close ``name``'s connections to ``room`` (every room: None) with ``reason``."""

    name: str
    room: str | None
    reason: str


# What every node is told of the operators' decisions: a rule kept or dropped, a kick.
Governed = Rule | RuleDropped | Kick
OnGoverned = Callable[[Governed], None]
# Rules the broker keeps at most (bans, mutes, rooms' settings, moderator tokens).
MAX_RULES = 100_000


class RulesFull(Exception):
    """MAX_RULES are kept already: drop some (or wait for bans to end) first."""


def governed_to_json(governed: Governed) -> str:
    if isinstance(governed, Rule):
        return governed.to_json()
    if isinstance(governed, RuleDropped):
        return json.dumps({"dropped": governed.kind.value, "key": governed.key})
    return json.dumps({"kick": governed.name, "room": governed.room, "reason": governed.reason})


def governed_from_json(data: str | bytes) -> Governed:
    """Raises ValueError (or KeyError, TypeError) for what is none of them."""
    body = json.loads(data)
    if "dropped" in body:
        return RuleDropped(RuleKind(body["dropped"]), str(body["key"]))
    if "kick" in body:
        room = body.get("room")
        return Kick(str(body["kick"]), None if room is None else str(room), str(body["reason"]))
    return Rule.from_json(data)


# Nonces remembered per room for exactly-once: each token's last DEDUP_PER_TOKEN sends with a
# nonce (so that others' sends cannot age them out), and at most DEDUP_PER_ROOM in all (past
# it, the oldest of the token holding the most go first: a flood of many tokens makes its own
# tokens forget, not a quiet member).
DEDUP_PER_TOKEN = 1000
DEDUP_PER_ROOM = 20_000
# Read positions (token, room) the memory broker keeps at most (the least recently read go).
READ_POSITIONS = 100_000
# Conversations with unread direct messages kept per token (past it, no more are noted), and
# tokens the memory broker keeps them for (the least recently written to go first).
DIRECTS_PER_TOKEN = 100
INBOXES = 100_000
# On Redis: the tokens' keys of read positions and inboxes kept at most (the least recently
# written go), and the rooms one token's read positions are kept for.
TOKEN_KEYS = 200_000
READ_ROOMS_PER_TOKEN = 1000


def dedup_token(key: str) -> str:
    """The token part of a de-duplication key ("{token id}:{nonce}")."""
    return key.partition(":")[0]


class Publishing(Protocol):
    """A publish under way: awaitable, and checkable without awaiting (``asyncio.Future``'s
    ``done``/``result``), so that a connection can keep several in flight, in order."""

    def done(self) -> bool: ...

    def cancelled(self) -> bool: ...

    def result(self) -> Published | None: ...

    def add_done_callback(self, callback: Callable[[Any], object]) -> None: ...

    def __await__(self) -> Generator[Any, None, Published | None]: ...


class Settled:
    """A publish that completed when it was issued (the memory backend's)."""

    __slots__ = ("_value",)

    def __init__(self, value: Published | None) -> None:
        self._value = value

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def result(self) -> Published | None:
        return self._value

    def add_done_callback(self, callback: Callable[[Any], object]) -> None:
        callback(self)

    def __await__(self) -> Generator[Any, None, Published | None]:
        return self._value
        yield  # a generator: awaiting it never suspends


class BrokerUnavailable(Exception):
    """The broker cannot be reached; ``str(exc)`` says why, for the operator (the log,
    ``/health``); :func:`public_reason` is what a client may be told."""


# Where the broker is (its URL, host and port) is the operator's to know, not every client's:
# /health and the log say it; a close reason says only what went wrong.
_BROKER_ADDRESS = re.compile(
    r" at (?:rediss?|unix|redis\+sentinel|redis\+cluster)://\S+?(?=:? |$)|"
    r"(?:rediss?|unix|redis\+sentinel|redis\+cluster)://\S+|"
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}\b"
)


def public_reason(exc: BrokerUnavailable) -> str:
    """What went wrong, without where the broker is: the detail of a 1013 close."""
    return _BROKER_ADDRESS.sub(lambda m: "" if m[0].startswith(" at ") else "(address)", str(exc))


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    available: bool
    reason: str = ""  # why it is unavailable; empty while available


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds or keeps a name: the name as it is held now (its case as chosen; for a
    former name of a token, the name it became) and the digest of its token, if it has one."""

    name: str
    digest: str | None


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """Every node sharing the backend, as the registry knows them."""

    nodes: int
    rooms: int
    connections: int  # members of rooms, on every live node


class ChannelBackend(ABC):
    """Carries each room's events between the nodes, one channel per room."""

    _interrupted: Interrupted | None = None

    @abstractmethod
    def bind(self, deliver: Deliver) -> None:
        """Set the one callback that receives every event of every subscribed room."""

    def on_interrupted(self, callback: Interrupted) -> None:
        """Set who is told that a subscribed room's channel was lost and subscribed again
        (a broker that moves a channel: a Redis Cluster's slot migration). The others close
        every member instead when a subscription fails; they never call it."""
        self._interrupted = callback

    def interrupted(self, room: str, why: str) -> None:
        """Tell whoever asked (:meth:`on_interrupted`) that ``room``'s channel was lost."""
        if self._interrupted is not None:
            self._interrupted(room, why)

    @abstractmethod
    def subscribe(self, room: str) -> Awaitable[None]:
        """Start receiving ``room``'s events; the awaitable resolves once that is live.

        Raises (when awaited) :class:`BrokerUnavailable` if it cannot be made live.
        """

    @abstractmethod
    def unsubscribe(self, room: str) -> None:
        """Stop receiving ``room``'s events (after the last local member left)."""

    @abstractmethod
    def publish(
        self,
        room: str,
        kind: EventKind,
        name: str,
        text: str = "",
        nonce: str | None = None,
        ref: int | None = None,
    ) -> Publishing:
        """Publish one event to every subscriber of ``room`` on every node.

        The publish is issued when this is called, so publishes keep the order of the calls;
        the result is where it landed (a join's offset is the room's last message offset when
        the member joined), a :class:`~chat_server.events.Duplicate` for a message whose
        ``nonce`` (the sender's de-duplication key) the room already published, or ``None`` if
        the member is not present in the room (for a message or leave with ``ref``: not with
        the join whose serial ``ref`` is), in which case nothing was published. Awaiting it
        raises :class:`BrokerUnavailable` if it could not be published.
        """


class History(ABC):
    """The messages each room retains (its current epoch's), for history and recovery."""

    @abstractmethod
    async def latest(self, room: str, upto: int, count: int) -> list[StoredMessage]:
        """The last ``count`` retained messages with offset <= ``upto``, oldest first."""

    @abstractmethod
    async def since(self, room: str, after: int, upto: int) -> list[StoredMessage] | None:
        """Every message with offset in (``after``, ``upto``], in order, if all of them are
        retained; ``None`` if any is not (never a partial range)."""


class Registry(ABC):
    """Names and presence shared by every node, with expiry for nodes that die."""

    @abstractmethod
    async def claim_name(self, name: str, digest: str | None = None) -> bool:
        """Take ``name`` for one connection of this node; ``False`` if it is held or reserved.

        With ``digest`` (of a resume token, see ``chat_server.tokens``) the name is the
        token's: :meth:`resume_name` takes it again, also after its last connection ended,
        for the reservation window.
        """

    @abstractmethod
    async def holder(self, name: str) -> Holder | None:
        """Who holds or keeps ``name`` (in any case; a former name leads to the name it
        became), if anyone."""

    @abstractmethod
    async def resume_name(self, name: str, digest: str) -> str | None:
        """One more connection of the token whose digest is ``digest`` takes ``name``, or the
        name it became if it is a former name of the token (see :meth:`rename_name`): that
        name; ``None`` if the name is no longer that token's (it expired, or never was)."""

    @abstractmethod
    async def rename_name(self, old: str, new: str, digest: str) -> bool:
        """The token whose digest is ``digest`` takes ``new`` in place of ``old`` for all the
        connections that hold ``old``; ``False`` if ``old`` is not the token's or ``new`` is
        held or kept by anyone else. ``old`` stays the token's for the reservation window: a
        former name, that nobody else can claim and that resumes as ``new``."""

    @abstractmethod
    async def release_name(self, name: str) -> None:
        """One connection of this node lets go of ``name`` (of the name it became, if it is a
        former name)."""

    @abstractmethod
    async def set_away(self, name: str, message: str | None) -> None:
        """``name`` is away with ``message`` (``None``: back), for as long as the name is held
        or kept for its token; nothing if it is neither."""

    @abstractmethod
    async def away(self, names: list[str]) -> dict[str, str]:
        """The away messages of those of ``names`` who are away."""

    @abstractmethod
    async def read_position(self, token_id: str, room: str, epoch: str) -> int | None:
        """The offset the token last read in ``room``, if one is kept for that epoch."""

    @abstractmethod
    async def keep_read_position(self, token_id: str, room: str, epoch: str, offset: int) -> None:
        """The token has read ``room`` up to ``offset`` of ``epoch`` (kept as long as the
        room's history, at most READ_POSITIONS of them per process on the memory broker);
        never past the room's newest message, and not at all once the epoch is not the
        room's."""

    @abstractmethod
    async def note_direct(self, token_id: str, room: str, sender: str) -> None:
        """``sender`` wrote to the token's user in the conversation ``room``: its next welcome
        elsewhere says so until it reports a read there (kept as long as the room's history,
        for at most DIRECTS_PER_TOKEN conversations)."""

    @abstractmethod
    async def directs(self, token_id: str) -> dict[str, str]:
        """The token's conversations noted by :meth:`note_direct`: room -> who wrote last."""

    @abstractmethod
    async def clear_direct(self, token_id: str, room: str) -> None:
        """The token's user read the conversation ``room``: no longer to be said."""

    @abstractmethod
    async def count_address(self, address: str, limit: int) -> bool:
        r"""One more connection from the client ``address`` on any node, unless it holds
        ``limit`` of them already (False). Each counted one is :meth:`uncount_address`\ ed
        once; a dead node's are forgotten with it."""

    @abstractmethod
    async def uncount_address(self, address: str) -> None:
        """One connection from ``address`` on this node ended."""

    @abstractmethod
    async def rooms(self, after: str = "", limit: int = ROOMS_PAGE) -> dict[str, int]:
        """Rooms (never conversations) that have members on a live node, with their member
        counts, in name order: at most ``limit`` of them, from the first after ``after``."""

    @abstractmethod
    async def members(self, room: str) -> list[str]:
        """``room``'s members on live nodes, in join order; empty if it has none."""

    @abstractmethod
    async def cluster(self) -> ClusterInfo:
        """Counts kept as events happen: never a walk of every room."""


class Backend(ABC):
    """A process's broker: its channels, its registry, and whether it can reach its store."""

    #: What ``--broker-url`` scheme selects it, for ``/health``.
    kind: str
    channels: ChannelBackend
    registry: Registry
    history: History

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.status = BrokerStatus(available=True)
        self._on_status: Callable[[BrokerStatus], None] | None = None
        self._on_person: OnPerson | None = None
        self._on_governed: OnGoverned | None = None
        self._on_rules_missed: Callable[[], Awaitable[None]] | None = None

    def on_rules_missed(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Call ``callback`` when rules may have been kept or dropped unheard (a broker whose
        governance channel moved and was subscribed again, the node staying up): it reads
        them all again."""
        self._on_rules_missed = callback

    @property
    @abstractmethod
    def url(self) -> str:
        """Where it connects, with any password masked."""

    @abstractmethod
    async def start(self) -> None:
        """Connect; raises :class:`BrokerUnavailable` if the store cannot be reached at all."""

    @abstractmethod
    async def close(self) -> None: ...

    def on_person(self, callback: OnPerson) -> None:
        """Call ``callback`` on every node for every :meth:`announce` of any node."""
        self._on_person = callback

    @abstractmethod
    async def announce(self, changed: PersonChanged) -> None:
        """Tell every node (this one too) what happened to the connections of a token (away,
        back, a new name, a direct message), so that each acts on it for those it holds."""

    def on_governed(self, callback: OnGoverned) -> None:
        """Call ``callback`` on every node for every rule kept or dropped and every kick."""
        self._on_governed = callback

    @abstractmethod
    async def keep_rule(self, rule: Rule) -> None:
        """Keep ``rule`` (in place of any of the same kind and key) and tell every node.
        Raises :class:`RulesFull` for a new rule past MAX_RULES."""

    @abstractmethod
    async def drop_rule(self, kind: RuleKind, key: str) -> bool:
        """Forget a rule and tell every node; ``False`` if there was none."""

    @abstractmethod
    async def rules(self) -> list[Rule]:
        """Every rule in force (what a node starts from, and reloads after an outage)."""

    @abstractmethod
    async def kick(self, kick: Kick) -> None:
        """Tell every node to close the connections ``kick`` names."""

    def _governed(self, governed: Governed) -> None:
        if self._on_governed is not None:
            self._on_governed(governed)

    def on_status(self, callback: Callable[[BrokerStatus], None]) -> None:
        """Call ``callback`` on every change of :attr:`status`."""
        self._on_status = callback

    def _set_status(self, status: BrokerStatus) -> None:
        if status == self.status:
            return
        self.status = status
        if self._on_status is not None:
            self._on_status(status)
