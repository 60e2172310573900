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
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

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
    """A parsed server frame. ``name`` is set for messages, joins and leaves."""

    kind: FrameKind
    text: str
    name: str | None = None


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
