"""``chat.v2``: the JSON subprotocol. One JSON object per text frame, in both directions.

A client that offers the WebSocket subprotocol :data:`SUBPROTOCOL` and gets it speaks this
instead of the text protocol (``v1``): the server welcomes it first (its name, the room's epoch
and offset, a resume token), numbers every message, and acknowledges every send that carried a
nonce. Each frame type is one builder and one entry of a reader table below.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from chat_protocol import names, text, v1
from chat_protocol.frames import (
    Ack,
    Away,
    ClientFrame,
    Frame,
    FrameError,
    FrameKind,
    Nick,
    Read,
    Send,
    ServerFrame,
    Typing,
    Welcome,
)

SUBPROTOCOL: Final = "chat.v2"

# A nonce: 1-64 printable ASCII characters, no spaces.
NONCE_PATTERN: Final = re.compile(r"[!-~]{1,64}")
MAX_NONCE_CHARS: Final = 64


class Type(StrEnum):
    """The ``type`` of a chat.v2 frame."""

    WELCOME = "welcome"
    MESSAGE = "message"
    JOIN = "join"
    LEAVE = "leave"
    ERROR = "error"
    ACK = "ack"
    SEND = "send"  # a client's
    TYPING = "typing"  # a client's (no fields), and the server's (with the typist's name)
    READ = "read"  # a client's: read up to an offset
    AWAY = "away"  # a client's (with a message), and the server's (with the name too)
    BACK = "back"  # a client's, and the server's (with the name)
    NICK = "nick"  # a client's (the name it wants), and the server's (old and new)
    DIRECT = "direct"  # the server's: someone wrote to you (open "@name")
    KICK = "kick"  # the server's: a member removed by an operator (in place of its leave)
    TOPIC = "topic"  # the server's: the room's topic changed


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# --- time -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def format_time(seconds: float) -> str:
    """Server time as chat.v2 carries it: RFC 3339, UTC, milliseconds (``...T12:34:56.789Z``)."""
    ms = round(seconds * 1000)
    return f"{_second(ms // 1000)}.{ms % 1000:03d}Z"


# Times a client can show in any local zone: a server's claim outside them is clamped.
EARLIEST: Final = datetime(1970, 1, 2, tzinfo=UTC)
LATEST: Final = datetime(9999, 12, 30, tzinfo=UTC)


def parse_time(text: str) -> datetime:
    """A chat.v2 time as an aware datetime in UTC, clamped to [EARLIEST, LATEST]; raises
    ValueError if it is not a time with a zone."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r}")
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        return EARLIEST if moment.year < 5000 else LATEST
    return min(max(moment, EARLIEST), LATEST)


def _offset(value: Any) -> int:
    """A message offset as a server may send it: a whole number, 0 or more, below 2**63."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ValueError(f"not an offset: {value!r:.40}")
    return value


# --- frames from the server -----------------------------------------------------------------


def welcome(
    room: str,
    name: str,
    epoch: str,
    offset: int,
    resume: str,
    recovered: bool | None,
    resumed: bool,
    history: int,
    read: int | None = None,
    topic: str | None = None,
    max_chars: int | None = None,
) -> str:
    body: dict[str, Any] = {
        "type": Type.WELCOME,
        "room": room,
        "name": name,
        "epoch": epoch,
        "offset": offset,
        "resume": resume,
        "recovered": recovered,
        "resumed": resumed,
        "history": history,
    }
    if read is not None:  # only for a token that reported reads here: opt-in by use
        body["read"] = read
    if topic:  # only in a room that has one
        body["topic"] = topic
    if max_chars is not None:
        body["max_chars"] = max_chars
    return _dumps(body)


def message(name: str, text: str, offset: int, time: float) -> str:
    # The text as the sender's sanitised text: no continuation indent in JSON.
    return _dumps(
        {
            "type": Type.MESSAGE,
            "name": name,
            "text": text,
            "offset": offset,
            "time": format_time(time),
        }
    )


def presence(joined: bool, name: str, time: float) -> str:
    return _dumps(
        {"type": Type.JOIN if joined else Type.LEAVE, "name": name, "time": format_time(time)}
    )


def error(description: str, nonce: str | None = None) -> str:
    body: dict[str, Any] = {"type": Type.ERROR, "text": description}
    if nonce is not None:
        body["nonce"] = nonce
    return _dumps(body)


def is_typing(name: str) -> str:
    return _dumps({"type": Type.TYPING, "name": name})


def is_away(name: str, message: str, time: float) -> str:
    return _dumps({"type": Type.AWAY, "name": name, "message": message, "time": format_time(time)})


def is_back(name: str, time: float) -> str:
    return _dumps({"type": Type.BACK, "name": name, "time": format_time(time)})


def nick(old: str, new: str, time: float) -> str:
    return _dumps({"type": Type.NICK, "old": old, "new": new, "time": format_time(time)})


def direct(name: str, time: float) -> str:
    return _dumps({"type": Type.DIRECT, "name": name, "time": format_time(time)})


def kick(name: str, reason: str, time: float) -> str:
    return _dumps({"type": Type.KICK, "name": name, "reason": reason, "time": format_time(time)})


def topic_changed(topic: str | None, time: float) -> str:
    return _dumps({"type": Type.TOPIC, "topic": topic, "time": format_time(time)})


def ack(nonce: str, offset: int, time: float) -> str:
    return _dumps({"type": Type.ACK, "nonce": nonce, "offset": offset, "time": format_time(time)})


def _name(value: Any) -> str:
    """A member's name as a server of this protocol sends it: a valid one (a name of another
    shape, say 200 characters of it, is a frame that cannot be read: a hostile server's join
    flood of such names took seconds of the members panel's layout)."""
    if not isinstance(value, str) or not names.is_valid_name(value):
        raise ValueError(f"not a name: {value!r:.40}")
    return value


def _read_message(body: dict[str, Any]) -> ServerFrame:
    return Frame(
        FrameKind.MESSAGE,
        str(body["text"]),
        _name(body["name"]),
        offset=_offset(body["offset"]),
        time=parse_time(body["time"]),
    )


def _read_presence(body: dict[str, Any]) -> ServerFrame:
    name = _name(body["name"])
    if body["type"] == Type.JOIN:
        return Frame(FrameKind.JOIN, v1.format_join(name), name, time=parse_time(body["time"]))
    return Frame(FrameKind.LEAVE, v1.format_leave(name), name, time=parse_time(body["time"]))


def _read_error(body: dict[str, Any]) -> ServerFrame:
    nonce = body.get("nonce")
    return Frame(FrameKind.ERROR, str(body["text"]), nonce=None if nonce is None else str(nonce))


def _read_ack(body: dict[str, Any]) -> ServerFrame:
    return Ack(str(body["nonce"]), _offset(body["offset"]), parse_time(body["time"]))


def _read_welcome(body: dict[str, Any]) -> ServerFrame:
    recovered = body["recovered"]
    return Welcome(
        str(body["room"]),
        str(body["name"]),
        str(body["epoch"]),
        _offset(body["offset"]),
        str(body["resume"]),
        None if recovered is None else bool(recovered),
        bool(body.get("resumed", False)),
        _offset(body.get("history", 0)),
        None if body.get("read") is None else _offset(body["read"]),
        None if not body.get("topic") else str(body["topic"]),
        _limit(body.get("max_chars")),
    )


def _limit(value: Any) -> int | None:
    """A limit the server announces: a positive whole number, else none (not an error: a
    client that cannot read it checks nothing before sending)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31:
        return value
    return None


def _read_typing(body: dict[str, Any]) -> ServerFrame:
    return Frame(FrameKind.TYPING, "", _name(body["name"]))


def _read_away(body: dict[str, Any]) -> ServerFrame:
    return Frame(
        FrameKind.AWAY,
        str(body.get("message", "")),
        _name(body["name"]),
        time=parse_time(body["time"]),
    )


def _read_back(body: dict[str, Any]) -> ServerFrame:
    return Frame(FrameKind.BACK, "", _name(body["name"]), time=parse_time(body["time"]))


def _read_nick(body: dict[str, Any]) -> ServerFrame:
    return Frame(
        FrameKind.NICK, _name(body["new"]), _name(body["old"]), time=parse_time(body["time"])
    )


def _read_direct(body: dict[str, Any]) -> ServerFrame:
    return Frame(FrameKind.DIRECT, "", _name(body["name"]), time=parse_time(body["time"]))


def _read_kick(body: dict[str, Any]) -> ServerFrame:
    reason = str(body.get("reason") or "")
    return Frame(FrameKind.KICK, reason, _name(body["name"]), time=parse_time(body["time"]))


def _read_topic(body: dict[str, Any]) -> ServerFrame:
    return Frame(FrameKind.TOPIC, str(body.get("topic") or ""), time=parse_time(body["time"]))


_SERVER_FRAMES: Final[dict[str, Callable[[dict[str, Any]], ServerFrame]]] = {
    Type.TYPING: _read_typing,
    Type.AWAY: _read_away,
    Type.BACK: _read_back,
    Type.NICK: _read_nick,
    Type.DIRECT: _read_direct,
    Type.KICK: _read_kick,
    Type.TOPIC: _read_topic,
    Type.MESSAGE: _read_message,
    Type.JOIN: _read_presence,
    Type.LEAVE: _read_presence,
    Type.ERROR: _read_error,
    Type.ACK: _read_ack,
    Type.WELCOME: _read_welcome,
}


def parse_frame(frame: str) -> ServerFrame:
    """Classify a frame received from a server. Never raises: a frame that cannot be read
    (not JSON, nested too deep, a value out of range) is a notice with the frame as its text."""
    try:
        body = json.loads(frame)
        return _SERVER_FRAMES[body["type"]](body)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
        return Frame(FrameKind.NOTICE, frame)


# --- frames from the client -----------------------------------------------------------------


def send(text: str, nonce: str | None = None) -> str:
    body: dict[str, Any] = {"type": Type.SEND, "text": text}
    if nonce is not None:
        body["nonce"] = nonce
    return _dumps(body)


# A client's "my user is typing here" (at most one every TYPING_EVERY seconds; shown by the
# others until TYPING_SHOWN seconds pass without another, or a message of the typist's).
TYPING_FRAME: Final = _dumps({"type": Type.TYPING})
TYPING_EVERY: Final = 3.0
TYPING_SHOWN: Final = 6.0
# A client reports what its user has read at most once every READ_EVERY seconds.
READ_EVERY: Final = 1.0


def read_up_to(offset: int) -> str:
    return _dumps({"type": Type.READ, "offset": offset})


# Away messages are one line of at most this many characters (after sanitising).
MAX_AWAY_CHARS: Final = 200
# Away and back, from one connection: at most one a second.
AWAY_EVERY: Final = 1.0


def away(message: str = "") -> str:
    return _dumps({"type": Type.AWAY, "message": message})


BACK_FRAME: Final = _dumps({"type": Type.BACK})


def _read_away_frame(body: dict[str, Any], nonce: str | None) -> Away:
    message = body.get("message", "")
    if not isinstance(message, str):
        raise FrameError("an away message is text", nonce)
    clean = text.sanitize(message.replace("\n", " ").replace("\t", " ")) or ""
    if len(clean) > MAX_AWAY_CHARS:
        raise FrameError(
            f"away message too long ({len(clean)} characters; the limit is {MAX_AWAY_CHARS})",
            nonce,
        )
    return Away(clean)


# Name changes: at most NICK_CHANGES per token in any NICK_WINDOW seconds (on each process).
NICK_CHANGES: Final = 3
NICK_WINDOW: Final = 30.0


def change_nick(name: str, nonce: str | None = None) -> str:
    body: dict[str, Any] = {"type": Type.NICK, "name": name}
    if nonce is not None:
        body["nonce"] = nonce
    return _dumps(body)


def _read_nick_frame(body: dict[str, Any], nonce: str | None) -> Nick:
    name = body.get("name")
    if not isinstance(name, str):
        raise FrameError("a nick needs a name", nonce)
    return Nick(name, nonce)


def _read_read(body: dict[str, Any], nonce: str | None) -> Read:
    try:
        return Read(_offset(body.get("offset")))
    except ValueError:
        raise FrameError("a read needs an offset (a whole number, 0 or more)", nonce) from None


def _read_send(body: dict[str, Any], nonce: str | None) -> Send:
    text = body.get("text")
    if not isinstance(text, str):
        raise FrameError("a send needs a text", nonce)
    return Send(text, nonce)


# A reader per type of client frame: the body and its valid nonce in, the frame out.
_CLIENT_FRAMES: Final[dict[str, Callable[[dict[str, Any], str | None], ClientFrame]]] = {
    Type.SEND: _read_send,
    Type.TYPING: lambda body, nonce: Typing(),
    Type.READ: _read_read,
    Type.AWAY: _read_away_frame,
    Type.BACK: lambda body, nonce: Away(None),
    Type.NICK: _read_nick_frame,
}


def parse_client_frame(frame: str) -> ClientFrame:
    """A client frame. A frame that is not a JSON object is plain text: a send without nonce.
    Raises :class:`FrameError` for a JSON object that is not a valid client frame."""
    if not frame.startswith("{"):
        return Send(frame)
    try:
        body = json.loads(frame)
    except json.JSONDecodeError:
        return Send(frame)
    except ValueError:  # valid JSON with a number of more digits than Python converts
        raise FrameError("malformed frame: a number too long") from None
    except RecursionError:  # valid JSON, nested deeper than any frame of this protocol
        raise FrameError("malformed frame: nested too deeply") from None
    if not isinstance(body, dict):
        return Send(frame)
    nonce = body.get("nonce")
    if nonce is not None and not (isinstance(nonce, str) and NONCE_PATTERN.fullmatch(nonce)):
        raise FrameError(
            f"invalid nonce: 1-{MAX_NONCE_CHARS} printable ASCII characters, no spaces"
        )
    kind = body.get("type")
    # Any JSON value may be there: only a string can name a frame (a dict is not hashable).
    reader = _CLIENT_FRAMES.get(kind) if isinstance(kind, str) else None  # type: ignore[arg-type]
    if reader is None:
        raise FrameError(f"unknown frame type {str(body.get('type'))[:40]!r}", nonce)
    return reader(body, nonce)


class JsonCodec:
    """chat.v2 as a codec (see ``chat_protocol.codec``)."""

    name: Final = SUBPROTOCOL
    subprotocol: Final = SUBPROTOCOL
    slot: Final = 1
    # A welcome instead of the own join notice, resume tokens, acks, numbered messages.
    numbered: Final = True

    # --- server to client ---

    def message(self, name: str, text: str, offset: int, time: float) -> str:
        return message(name, text, offset, time)

    def presence(self, joined: bool, name: str, time: float) -> str:
        return presence(joined, name, time)

    def nick(self, old: str, new: str, time: float) -> str:
        return nick(old, new, time)

    def direct(self, name: str, time: float) -> str:
        return direct(name, time)

    def kick(self, name: str, reason: str, time: float) -> str:
        return kick(name, reason, time)

    def topic(self, topic: str | None, time: float) -> str:
        return topic_changed(topic, time)

    def error(self, description: str, nonce: str | None = None) -> str:
        return error(description, nonce)

    def ack(self, nonce: str, offset: int, time: float) -> str:
        return ack(nonce, offset, time)

    def typing(self, name: str) -> str:
        return is_typing(name)

    def away(self, name: str, message: str | None, time: float) -> str:
        return is_back(name, time) if message is None else is_away(name, message, time)

    def welcome(
        self,
        room: str,
        name: str,
        epoch: str,
        offset: int,
        resume: str,
        recovered: bool | None,
        resumed: bool,
        history: int,
        read: int | None = None,
        topic: str | None = None,
        max_chars: int | None = None,
    ) -> str:
        return welcome(
            room, name, epoch, offset, resume, recovered, resumed, history, read, topic, max_chars
        )

    def parse(self, frame: str) -> ServerFrame:
        return parse_frame(frame)

    # --- client to server ---

    def send(self, text: str, nonce: str | None = None) -> str:
        return send(text, nonce)

    def read(self, frame: str) -> ClientFrame:
        return parse_client_frame(frame)


CODEC: Final = JsonCodec()
