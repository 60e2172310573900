"""Every close the server sends, as values: one table of code, reason, metric label, and what
a client does about it (compare centrifuge's ``disconnect.go``).

The server closes with a :class:`Close` (and a detail where its reason has one); its metrics
count the value's ``label``. A client turns what it received, a code and a reason, into a
value once, with :func:`received`, and acts on its ``then``. Nothing decides anything by
reading a reason's words anywhere else: rewording a reason here changes what every side shows,
never what any side does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Final

# The longest close reason: a close frame's payload is at most 125 bytes, 2 of them the code.
MAX_REASON_BYTES: Final = 123


class CloseCode(IntEnum):
    """The WebSocket close codes of this protocol (RFC 6455 7.4.1, and IANA's 1012/1013)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server shuts down (websockets' own code for it)
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003  # a binary frame
    NO_STATUS = 1005  # a close frame without a code
    ABNORMAL = 1006  # no close frame at all: the connection dropped
    INVALID_DATA = 1007  # invalid UTF-8
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011  # keepalive ping timeout
    SERVICE_RESTART = 1012  # the server restarts, or lost track of the member
    TRY_AGAIN_LATER = 1013  # full, or its broker is unavailable
    # Private-use codes (RFC 6455 7.4.2): an operator's or moderator's action, a token's end.
    KICKED = 4001
    BANNED = 4003
    TOKEN_EXPIRED = 4004


_CODE_NAMES: Final[dict[int, str]] = {
    CloseCode.NORMAL: "normal closure",
    CloseCode.GOING_AWAY: "server going away",
    CloseCode.PROTOCOL_ERROR: "protocol error",
    CloseCode.UNSUPPORTED_DATA: "unsupported data",
    CloseCode.NO_STATUS: "no status",
    CloseCode.ABNORMAL: "connection dropped",
    CloseCode.INVALID_DATA: "invalid data",
    CloseCode.POLICY_VIOLATION: "policy violation",
    CloseCode.MESSAGE_TOO_BIG: "message too big",
    CloseCode.INTERNAL_ERROR: "internal error",
    CloseCode.SERVICE_RESTART: "server restarting",
    CloseCode.TRY_AGAIN_LATER: "try again later",
    CloseCode.KICKED: "kicked",
    CloseCode.BANNED: "banned",
    CloseCode.TOKEN_EXPIRED: "token expired",
}


def code_name(code: int) -> str:
    """A close code's meaning in words ("" for a code this protocol does not use)."""
    return _CODE_NAMES.get(code, "")


class Counted(StrEnum):
    """How the server's metrics count a close it sends."""

    REFUSAL = "refusal"  # before the connection was in its room
    EVICTION = "eviction"  # for what the member did, or what the broker did to it
    SHUTDOWN = "shutdown"
    OTHER = "other"


class Then(StrEnum):
    """What a client does after the close."""

    RECONNECT = "reconnect"  # connect again, with the usual backoff
    BACK_OFF = "back off"  # the same would happen again soon: wait the longest backoff
    GIVE_UP = "give up"  # not again until the user asks
    # The server refused the query: a client that asked for chat.v2's parameters without
    # getting chat.v2 (a proxy dropped the subprotocol) asks again without them.
    FALL_BACK = "fall back"
    # The server refused the name asked for: connect again at once without asking for it.
    WITHOUT_NAME = "without name"


@dataclass(frozen=True, slots=True)
class Close:
    """One kind of close. ``reason`` is the reason's text, with ``{}`` where a detail goes."""

    code: CloseCode
    reason: str
    label: str  # its metric label (chat_refusals_total / chat_evictions_total)
    counted: Counted
    then: Then
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        head, _, tail = self.reason.partition("{}")
        detail = "(.*)" if "{}" in self.reason else ""
        object.__setattr__(
            self, "_pattern", re.compile(re.escape(head) + detail + re.escape(tail), re.S)
        )

    def text(self, detail: object = None) -> str:
        """The reason on the wire: a close reason is at most 123 bytes of UTF-8 (RFC 6455
        5.5.1), so a longer one is cut at a character's boundary within them."""
        if "{}" not in self.reason:
            return self.reason
        text = self.reason.format("" if detail is None else detail)
        if len(text) <= MAX_REASON_BYTES // 4:  # short enough in any encoding of it
            return text
        return text.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


# --- the table -------------------------------------------------------------------------------

_R, _E = Counted.REFUSAL, Counted.EVICTION
C = CloseCode

INVALID_ROOM: Final = Close(C.POLICY_VIOLATION, "invalid room name: {}", "room", _R, Then.GIVE_UP)
INVALID_QUERY: Final = Close(C.POLICY_VIOLATION, "invalid query: {}", "query", _R, Then.FALL_BACK)
INVALID_NAME: Final = Close(C.POLICY_VIOLATION, "invalid name: {}", "name", _R, Then.WITHOUT_NAME)
NAME_TAKEN: Final = Close(C.POLICY_VIOLATION, "name taken: {}", "name", _R, Then.WITHOUT_NAME)
# Direct messages (``/chat/@NAME``): chat.v2 only, with the resume token of the client's name.
DIRECT_NEEDS_V2: Final = Close(
    C.POLICY_VIOLATION, "direct messages need chat.v2", "direct", _R, Then.GIVE_UP
)
DIRECT_NEEDS_TOKEN: Final = Close(
    C.POLICY_VIOLATION,
    "direct messages need the resume token of your name",
    "direct",
    _R,
    Then.RECONNECT,
)
# Give up: nobody holds or keeps the name. (A client whose conversation was up may try again
# with its backoff: a broker that restarted empty knows a name again only once its holder's
# client has reconnected.)
NOT_HERE: Final = Close(C.POLICY_VIOLATION, "{} is not here", "direct", _R, Then.GIVE_UP)
# What operators and moderators decide (docs/protocol.md, "Governance").
ROOM_LOCKED: Final = Close(C.POLICY_VIOLATION, "room locked", "locked", _R, Then.GIVE_UP)
NOT_ALLOWED: Final = Close(
    C.POLICY_VIOLATION, "not allowed in this room", "not_allowed", _R, Then.GIVE_UP
)
KICKED: Final = Close(C.KICKED, "kicked: {}", "kicked", _E, Then.GIVE_UP)
BANNED: Final = Close(C.BANNED, "banned: {}", "banned", _E, Then.GIVE_UP)
# A signed token's ``exp`` passed: connect again with a fresh one.
TOKEN_EXPIRED: Final = Close(C.TOKEN_EXPIRED, "token expired", "token", _E, Then.RECONNECT)
# One client address's share of the server's connections is used up.
ADDRESS_FULL: Final = Close(
    C.TRY_AGAIN_LATER, "too many connections from your address", "address", _R, Then.BACK_OFF
)
# One client address brought more rooms into being than its share (a flood of rooms).
ROOMS_FULL: Final = Close(
    C.TRY_AGAIN_LATER, "too many new rooms from your address", "address", _R, Then.BACK_OFF
)
SERVER_FULL: Final = Close(
    C.TRY_AGAIN_LATER, "server full ({} connections)", "limit", _R, Then.RECONNECT
)
BROKER_UNAVAILABLE: Final = Close(
    C.TRY_AGAIN_LATER, "broker unavailable: {}", "broker", _R, Then.RECONNECT
)
NOT_IN_ROOM: Final = Close(
    C.SERVICE_RESTART,
    "the broker no longer has you in the room; reconnect",
    "broker",
    _E,
    Then.RECONNECT,
)
MISSED_EVENTS: Final = Close(
    C.SERVICE_RESTART, "missed frames from the broker; reconnect", "broker", _E, Then.RECONNECT
)
SHUTDOWN: Final = Close(C.SERVICE_RESTART, "", "shutdown", Counted.SHUTDOWN, Then.RECONNECT)
REPLACED: Final = Close(
    C.POLICY_VIOLATION,
    "replaced by a newer connection under the same name",
    "replaced",
    _E,
    Then.GIVE_UP,
)
SLOW_CONSUMER: Final = Close(
    C.POLICY_VIOLATION, "slow consumer", "slow_consumer", _E, Then.BACK_OFF
)
FLOOD: Final = Close(C.POLICY_VIOLATION, "flood: {}", "flood", _E, Then.GIVE_UP)
BINARY: Final = Close(
    C.UNSUPPORTED_DATA, "binary frames are not supported", "binary", _E, Then.BACK_OFF
)
TOO_BIG: Final = Close(C.MESSAGE_TOO_BIG, "frame over {} bytes", "size", _E, Then.BACK_OFF)
INVALID_UTF8: Final = Close(C.INVALID_DATA, "invalid UTF-8", "invalid_utf8", _E, Then.RECONNECT)
PING_TIMEOUT: Final = Close(
    C.INTERNAL_ERROR, "keepalive ping timeout", "ping_timeout", _E, Then.RECONNECT
)
# Something the server did not expect went wrong with this connection alone.
SERVER_ERROR: Final = Close(
    C.INTERNAL_ERROR, "server error", "other", Counted.OTHER, Then.RECONNECT
)

# Closes whose reason is someone else's (websockets' parser, another server): by code alone.
PROTOCOL_ERROR: Final = Close(C.PROTOCOL_ERROR, "{}", "protocol_error", _E, Then.RECONNECT)
_BY_CODE: Final[dict[int, Close]] = {
    C.NORMAL: Close(C.NORMAL, "{}", "other", Counted.OTHER, Then.RECONNECT),
    C.GOING_AWAY: Close(C.GOING_AWAY, "{}", "shutdown", Counted.SHUTDOWN, Then.RECONNECT),
    C.PROTOCOL_ERROR: PROTOCOL_ERROR,
    C.UNSUPPORTED_DATA: Close(C.UNSUPPORTED_DATA, "{}", "binary", _E, Then.BACK_OFF),
    C.INVALID_DATA: Close(C.INVALID_DATA, "{}", "invalid_utf8", _E, Then.RECONNECT),
    C.POLICY_VIOLATION: Close(C.POLICY_VIOLATION, "{}", "other", Counted.OTHER, Then.GIVE_UP),
    C.MESSAGE_TOO_BIG: Close(C.MESSAGE_TOO_BIG, "{}", "size", _E, Then.BACK_OFF),
    C.INTERNAL_ERROR: Close(C.INTERNAL_ERROR, "{}", "ping_timeout", _E, Then.RECONNECT),
    C.SERVICE_RESTART: Close(C.SERVICE_RESTART, "{}", "shutdown", Counted.SHUTDOWN, Then.RECONNECT),
    C.TRY_AGAIN_LATER: Close(C.TRY_AGAIN_LATER, "{}", "limit", _R, Then.RECONNECT),
    C.KICKED: Close(C.KICKED, "{}", "kicked", _E, Then.GIVE_UP),
    C.BANNED: Close(C.BANNED, "{}", "banned", _E, Then.GIVE_UP),
    C.TOKEN_EXPIRED: Close(C.TOKEN_EXPIRED, "{}", "token", _E, Then.RECONNECT),
}
_ANY: Final = Close(C.NORMAL, "{}", "other", Counted.OTHER, Then.RECONNECT)

TABLE: Final[tuple[Close, ...]] = (
    INVALID_ROOM,
    INVALID_QUERY,
    INVALID_NAME,
    NAME_TAKEN,
    DIRECT_NEEDS_V2,
    DIRECT_NEEDS_TOKEN,
    NOT_HERE,
    ROOM_LOCKED,
    NOT_ALLOWED,
    KICKED,
    BANNED,
    TOKEN_EXPIRED,
    SERVER_FULL,
    ADDRESS_FULL,
    ROOMS_FULL,
    BROKER_UNAVAILABLE,
    NOT_IN_ROOM,
    MISSED_EVENTS,
    SHUTDOWN,
    REPLACED,
    SLOW_CONSUMER,
    FLOOD,
    BINARY,
    TOO_BIG,
    INVALID_UTF8,
    PING_TIMEOUT,
    SERVER_ERROR,
)
_BY_CODE_IN_TABLE: Final[dict[int, tuple[Close, ...]]] = {
    code: tuple(c for c in TABLE if c.code == code) for code in {c.code for c in TABLE}
}

# The labels /metrics counts (fixed vocabularies: never a room, a name or any text).
EVICTIONS: Final = tuple(
    dict.fromkeys(c.label for c in (*TABLE, *_BY_CODE.values()) if c.counted is _E)
)


def by_code(code: int) -> Close:
    """The close a code alone means (for closes whose reason is not ours)."""
    return _BY_CODE.get(code, _ANY)


@dataclass(frozen=True, slots=True)
class Received:
    """A close as a client received it: the table's value, with the code and reason."""

    close: Close
    code: int
    reason: str

    @property
    def then(self) -> Then:
        return self.close.then


def received(code: int, reason: str) -> Received:
    """What a close means, from its code and reason as they arrived: the one place where a
    reason's text is read back into a value (a reason not in the table means what its code
    means)."""
    for close in _BY_CODE_IN_TABLE.get(code, ()):
        if close._pattern.fullmatch(reason):
            return Received(close, code, reason)
    return Received(by_code(code), code, reason)
