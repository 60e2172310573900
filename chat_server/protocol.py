"""The wire protocol: the one place where names, rooms and frame formats are defined.

Everything here is documented exactly in ``docs/protocol.md``; the client imports this
module instead of re-deriving any of it.

Frames are WebSocket text frames:

* chat message:   ``{name} :: {text}``
* join notice:    ``{name} joined the chat``
* leave notice:   ``{name} left the chat``
* error notice:   ``error: {description}`` (sent to one connection only)

A frame without ``" :: "`` is a notice. A message's line breaks travel as ``"\n"`` plus
:data:`CONTINUATION_INDENT`, so that a client that prints frames line by line can never show a
continuation line as a frame of its own (see :func:`encode_lines`).

A client that offers the WebSocket subprotocol :data:`SUBPROTOCOL_V2` and gets it speaks JSON
instead, one object per frame (the ``v2_*`` builders and parsers below); the query parameters
of :class:`JoinRequest` ask for history, recovery and a resumed name. Both are opt-in: a client
that asks for neither sees exactly the frames above.
"""

from __future__ import annotations

import functools
import json
import random
import re
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final
from urllib.parse import parse_qsl, quote

CHAT_PATH_PREFIX: Final = "/chat/"

ROOM_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
ROOM_RULE: Final = "room names are 1-64 characters of A-Z, a-z, 0-9, '_' and '-'"

NAME_PATTERN: Final = re.compile(r"user_[a-z]{6}[0-9]{2}")

SEPARATOR: Final = " :: "
JOINED_SUFFIX: Final = " joined the chat"
LEFT_SUFFIX: Final = " left the chat"
ERROR_PREFIX: Final = "error: "

# Every line of a multi-line message after the first goes out behind this indent: a frame's
# first line starts with a name or ``error: ``, never with a space, so no continuation line can
# pass for a message, a notice or a join.
CONTINUATION_INDENT: Final = "  "

# Limits a server enforces by default; servers may be configured differently.
MAX_FRAME_BYTES: Final = 64 * 1024
MAX_MESSAGE_CHARS: Final = 4096


# Retention defaults (a server may be configured otherwise; see the README).
DEFAULT_HISTORY_SIZE: Final = 1000  # messages kept per room
DEFAULT_RECOVERY_LIMIT: Final = 1000  # most messages replayed on joining (history or recovery)
DEFAULT_NAME_RESERVATION: Final = 600.0  # seconds a name stays its token's after the last leave


class CloseCode:
    """WebSocket close codes the server uses, with their meaning in this protocol."""

    NORMAL: Final = 1000
    GOING_AWAY: Final = 1001  # server shutting down
    UNSUPPORTED_DATA: Final = 1003  # binary frame
    POLICY_VIOLATION: Final = 1008  # invalid room name, slow consumer
    MESSAGE_TOO_BIG: Final = 1009  # frame over MAX_FRAME_BYTES
    INTERNAL_ERROR: Final = 1011  # keepalive ping timeout
    SERVICE_RESTART: Final = 1012  # server restarting
    TRY_AGAIN_LATER: Final = 1013  # connection limit reached


# Close reasons a client may want to recognise.
REPLACED_REASON: Final = "replaced by a newer connection under the same name"
NOT_IN_ROOM_REASON: Final = "the broker no longer has you in the room; reconnect"


def is_valid_room(room: str) -> bool:
    return ROOM_PATTERN.fullmatch(room) is not None


def is_valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


def random_name(rng: random.Random | None = None) -> str:
    """A fresh candidate name; uniqueness is the broker's job (``claim_name``)."""
    r = rng or _rng
    letters = "".join(r.choices(string.ascii_lowercase, k=6))
    digits = "".join(r.choices(string.digits, k=2))
    return f"user_{letters}{digits}"


_rng = random.SystemRandom()


# --- formatting -------------------------------------------------------------------------


def format_message(name: str, text: str) -> str:
    """A chat message frame of the text protocol; ``text`` is sanitised (see :func:`sanitize`)."""
    return f"{name}{SEPARATOR}{encode_lines(text)}"


def encode_lines(text: str) -> str:
    """How a message's text travels in a text-protocol frame: each line break is followed by
    :data:`CONTINUATION_INDENT`. :func:`decode_lines` is its exact inverse.

    Only for text frames of this protocol: a structured frame format carries the text as is.
    ``text`` must be sanitised, so that ``\n`` is its only line break.
    """
    return text.replace("\n", "\n" + CONTINUATION_INDENT) if "\n" in text else text


def decode_lines(text: str) -> str:
    """The message text of a frame, as its sender's sanitised text: the exact inverse of
    :func:`encode_lines`. Lines without the indent (a server that does not encode) stay as
    they are."""
    return text.replace("\n" + CONTINUATION_INDENT, "\n") if "\n" in text else text


def format_join(name: str) -> str:
    return f"{name}{JOINED_SUFFIX}"


def format_leave(name: str) -> str:
    return f"{name}{LEFT_SUFFIX}"


def format_error(description: str) -> str:
    # An error notice must stay a notice: it never contains the chat separator.
    return ERROR_PREFIX + description.replace(SEPARATOR, " : ")


# --- sanitising -------------------------------------------------------------------------

_BIDI_CONTROLS: Final = (
    "\u200e\u200f\u061c"
    + "".join(map(chr, range(0x202A, 0x202F)))
    + "".join(map(chr, range(0x2066, 0x206A)))
)
# Line and paragraph separators other than "\n": a line-based client would break a line at
# each of them (VT, FF, FS-RS and NEL are C0/C1 controls, stripped with those).
_LINE_SEPARATORS: Final = "\u2028\u2029"
_STRIPPED: Final = (
    [chr(c) for c in range(0x00, 0x20) if chr(c) not in "\n\t"]
    + ["\x7f"]
    + [chr(c) for c in range(0x80, 0xA0)]
    + list(_BIDI_CONTROLS)
    + list(_LINE_SEPARATORS)
)
_STRIP_TABLE: Final = dict.fromkeys(map(ord, _STRIPPED))
STRIPPED_CHARACTERS: Final = frozenset(_STRIPPED)


def sanitize(text: str) -> str | None:
    """Strip control, bidi and line-separator characters (``\n`` and ``\t`` stay); ``None`` if
    nothing worth sending remains."""
    if not text.isascii() or not text.isprintable():
        text = text.translate(_STRIP_TABLE)
    if not text or text.isspace():
        return None
    return text


# --- parsing ----------------------------------------------------------------------------


class FrameKind(StrEnum):
    MESSAGE = "message"
    JOIN = "join"
    LEAVE = "leave"
    ERROR = "error"
    NOTICE = "notice"


@dataclass(frozen=True, slots=True)
class Frame:
    """A parsed server frame. ``name`` is set for messages, joins and leaves.

    chat.v2 frames also carry the message's ``offset`` and the server's ``time`` (aware, UTC);
    an error may name the ``nonce`` of the send it refuses. Text-protocol frames have none.
    """

    kind: FrameKind
    text: str
    name: str | None = None
    offset: int | None = None
    time: datetime | None = None
    nonce: str | None = None


def parse_frame(frame: str) -> Frame:
    """Classify a frame received from a server. Never raises: unknown shapes are notices."""
    head, sep, rest = frame.partition(SEPARATOR)
    if sep:
        return Frame(FrameKind.MESSAGE, decode_lines(rest), head)
    if frame.startswith(ERROR_PREFIX):
        return Frame(FrameKind.ERROR, frame[len(ERROR_PREFIX) :])
    if frame.endswith(JOINED_SUFFIX):
        name = frame[: -len(JOINED_SUFFIX)]
        if is_valid_name(name):
            return Frame(FrameKind.JOIN, frame, name)
    if frame.endswith(LEFT_SUFFIX):
        name = frame[: -len(LEFT_SUFFIX)]
        if is_valid_name(name):
            return Frame(FrameKind.LEAVE, frame, name)
    return Frame(FrameKind.NOTICE, frame)


# --- chat.v2: the JSON subprotocol ------------------------------------------------------------

SUBPROTOCOL_V2: Final = "chat.v2"

# Query parameters of /chat/{room} (every one optional; unknown ones are ignored).
QUERY_HISTORY: Final = "history"
QUERY_SINCE: Final = "since"
QUERY_EPOCH: Final = "epoch"
QUERY_RESUME: Final = "resume"
_COUNT_PATTERN: Final = re.compile(r"[0-9]{1,9}")
_OFFSET_PATTERN: Final = re.compile(r"[0-9]{1,18}")
EPOCH_PATTERN: Final = re.compile(r"[A-Za-z0-9]{1,32}")
MAX_TOKEN_CHARS: Final = 128
# A nonce: 1-64 printable ASCII characters, no spaces.
NONCE_PATTERN: Final = re.compile(r"[!-~]{1,64}")
MAX_NONCE_CHARS: Final = 64


class QueryError(ValueError):
    """A malformed query parameter; ``str(exc)`` is the 1008 close reason."""


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """What a connection asked for in its query string."""

    history: int = 0  # last N messages of the room (capped by the server)
    since: int | None = None  # recover every message after this offset ...
    epoch: str | None = None  # ... of this epoch
    resume: str | None = None  # the token of the name to take back

    @property
    def recovery(self) -> bool:
        return self.since is not None


def parse_join_query(query: str | bytes, v2: bool) -> JoinRequest:
    """The parameters of a ``/chat/{room}`` query string; raises :class:`QueryError`.

    ``since``, ``epoch`` and ``resume`` need ``chat.v2`` (only its welcome says where a client
    is, and gives tokens); ``since`` and ``epoch`` come together.
    """
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    if not query:
        return JoinRequest()
    seen: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in (QUERY_HISTORY, QUERY_SINCE, QUERY_EPOCH, QUERY_RESUME):
            if key in seen:
                raise QueryError(f"invalid query: {key} given twice")
            seen[key] = value
    history = 0
    if QUERY_HISTORY in seen:
        if not _COUNT_PATTERN.fullmatch(seen[QUERY_HISTORY]):
            raise QueryError("invalid query: history must be a whole number of messages")
        history = int(seen[QUERY_HISTORY])
    if not v2:
        for key in (QUERY_SINCE, QUERY_EPOCH, QUERY_RESUME):
            if key in seen:
                raise QueryError(f"invalid query: {key} needs the {SUBPROTOCOL_V2} subprotocol")
        return JoinRequest(history)
    since: int | None = None
    epoch = seen.get(QUERY_EPOCH)
    if (QUERY_SINCE in seen) != (epoch is not None):
        raise QueryError("invalid query: since and epoch go together")
    if QUERY_SINCE in seen:
        if not _OFFSET_PATTERN.fullmatch(seen[QUERY_SINCE]):
            raise QueryError("invalid query: since must be a message offset (0 or more)")
        since = int(seen[QUERY_SINCE])
        if epoch is None or not EPOCH_PATTERN.fullmatch(epoch):
            raise QueryError("invalid query: epoch must be 1-32 letters and digits")
    resume = seen.get(QUERY_RESUME)
    if resume is not None and not 0 < len(resume) <= MAX_TOKEN_CHARS:
        raise QueryError(f"invalid query: resume must be 1-{MAX_TOKEN_CHARS} characters")
    return JoinRequest(history, since, epoch, resume)


def join_query(request: JoinRequest) -> str:
    """The query string (without ``?``) that asks for ``request``; empty if it asks nothing."""
    parts = []
    if request.history:
        parts.append(f"{QUERY_HISTORY}={request.history}")
    if request.since is not None and request.epoch is not None:
        parts.append(f"{QUERY_SINCE}={request.since}&{QUERY_EPOCH}={request.epoch}")
    if request.resume is not None:
        parts.append(f"{QUERY_RESUME}={quote(request.resume, safe='')}")
    return "&".join(parts)


class V2(StrEnum):
    """The ``type`` of a chat.v2 frame."""

    WELCOME = "welcome"
    MESSAGE = "message"
    JOIN = "join"
    LEAVE = "leave"
    ERROR = "error"
    ACK = "ack"
    SEND = "send"  # the only type a client sends


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@functools.lru_cache(maxsize=256)
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def format_time(seconds: float) -> str:
    """Server time as chat.v2 carries it: RFC 3339, UTC, milliseconds (``...T12:34:56.789Z``)."""
    ms = round(seconds * 1000)
    return f"{_second(ms // 1000)}.{ms % 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """A chat.v2 time as an aware datetime (UTC); raises ValueError if it is not one."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r}")
    return moment


def v2_welcome(
    room: str,
    name: str,
    epoch: str,
    offset: int,
    resume: str,
    recovered: bool | None,
    resumed: bool,
    history: int,
) -> str:
    return _dumps(
        {
            "type": V2.WELCOME,
            "room": room,
            "name": name,
            "epoch": epoch,
            "offset": offset,
            "resume": resume,
            "recovered": recovered,
            "resumed": resumed,
            "history": history,
        }
    )


def v2_message(name: str, text: str, offset: int, time: float) -> str:
    # The text as the sender's sanitised text: no continuation indent in JSON.
    return _dumps(
        {
            "type": V2.MESSAGE,
            "name": name,
            "text": text,
            "offset": offset,
            "time": format_time(time),
        }
    )


def v2_presence(joined: bool, name: str, time: float) -> str:
    return _dumps(
        {"type": V2.JOIN if joined else V2.LEAVE, "name": name, "time": format_time(time)}
    )


def v2_error(description: str, nonce: str | None = None) -> str:
    body: dict[str, Any] = {"type": V2.ERROR, "text": description}
    if nonce is not None:
        body["nonce"] = nonce
    return _dumps(body)


def v2_ack(nonce: str, offset: int, time: float) -> str:
    return _dumps({"type": V2.ACK, "nonce": nonce, "offset": offset, "time": format_time(time)})


def v2_send(text: str, nonce: str | None = None) -> str:
    body: dict[str, Any] = {"type": V2.SEND, "text": text}
    if nonce is not None:
        body["nonce"] = nonce
    return _dumps(body)


@dataclass(frozen=True, slots=True)
class Send:
    """A client's chat.v2 frame: a message to publish, with its nonce if it has one."""

    text: str
    nonce: str | None = None


class FrameError(ValueError):
    """A chat.v2 client frame that is JSON but not a valid ``send``; ``nonce`` if it had one."""

    def __init__(self, description: str, nonce: str | None = None) -> None:
        super().__init__(description)
        self.nonce = nonce


def parse_v2_send(frame: str) -> Send:
    """A chat.v2 client frame. A frame that is not a JSON object is plain text: a send without
    nonce. Raises :class:`FrameError` for a JSON object that is not a valid send."""
    if not frame.startswith("{"):
        return Send(frame)
    try:
        body = json.loads(frame)
    except ValueError:
        return Send(frame)
    if not isinstance(body, dict):
        return Send(frame)
    nonce = body.get("nonce")
    if nonce is not None and not (isinstance(nonce, str) and NONCE_PATTERN.fullmatch(nonce)):
        raise FrameError(
            f"invalid nonce: 1-{MAX_NONCE_CHARS} printable ASCII characters, no spaces"
        )
    if body.get("type") != V2.SEND:
        raise FrameError(f"unknown frame type {str(body.get('type'))[:40]!r}", nonce)
    text = body.get("text")
    if not isinstance(text, str):
        raise FrameError("a send needs a text", nonce)
    return Send(text, nonce)


@dataclass(frozen=True, slots=True)
class Welcome:
    """The first frame of a chat.v2 connection."""

    room: str
    name: str
    epoch: str
    offset: int
    resume: str
    recovered: bool | None
    resumed: bool
    history: int  # message frames of history or recovery that follow, before the live ones


@dataclass(frozen=True, slots=True)
class Ack:
    nonce: str
    offset: int
    time: datetime


def parse_v2_frame(frame: str) -> Frame | Welcome | Ack:
    """Classify a chat.v2 frame received from a server. Never raises: a frame that cannot be
    read is a notice with the frame as its text."""
    try:
        body = json.loads(frame)
        kind = body["type"]
        if kind == V2.MESSAGE:
            return Frame(
                FrameKind.MESSAGE,
                str(body["text"]),
                str(body["name"]),
                offset=int(body["offset"]),
                time=parse_time(body["time"]),
            )
        if kind in (V2.JOIN, V2.LEAVE):
            name = str(body["name"])
            text = format_join(name) if kind == V2.JOIN else format_leave(name)
            joined = FrameKind.JOIN if kind == V2.JOIN else FrameKind.LEAVE
            return Frame(joined, text, name, time=parse_time(body["time"]))
        if kind == V2.ERROR:
            nonce = body.get("nonce")
            return Frame(
                FrameKind.ERROR, str(body["text"]), nonce=None if nonce is None else str(nonce)
            )
        if kind == V2.ACK:
            return Ack(str(body["nonce"]), int(body["offset"]), parse_time(body["time"]))
        if kind == V2.WELCOME:
            recovered = body["recovered"]
            return Welcome(
                str(body["room"]),
                str(body["name"]),
                str(body["epoch"]),
                int(body["offset"]),
                str(body["resume"]),
                None if recovered is None else bool(recovered),
                bool(body.get("resumed", False)),
                int(body.get("history", 0)),
            )
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return Frame(FrameKind.NOTICE, frame)
