"""The original text protocol: the dialect of every client that asks for nothing new.

Frames are WebSocket text frames:

* chat message:   ``{name} :: {text}``
* join notice:    ``{name} joined the chat``
* leave notice:   ``{name} left the chat``
* error notice:   ``error: {description}`` (sent to one connection only)
* name change:    ``{old} is now known as {new}`` (a chat.v2 member's ``nick``)
* kick notice:    ``{name} was kicked: {reason}`` (in place of its leave notice)
* topic notice:   ``topic: {topic}`` (right after the own join notice, and when it changes;
  ``topic: `` alone when it is cleared)

A frame without ``" :: "`` is a notice. A message's line breaks travel as ``"\\n"`` plus
:data:`CONTINUATION_INDENT`, so that a client that prints frames line by line can never show a
continuation line as a frame of its own (see :func:`encode_lines`). Every frame a client sends
is one chat message.
"""

from __future__ import annotations

from typing import Final

from chat_protocol.frames import Frame, FrameKind, Send, ServerFrame
from chat_protocol.names import is_valid_name

SEPARATOR: Final = " :: "
JOINED_SUFFIX: Final = " joined the chat"
LEFT_SUFFIX: Final = " left the chat"
ERROR_PREFIX: Final = "error: "
NICK_INFIX: Final = " is now known as "
KICKED_INFIX: Final = " was kicked: "
TOPIC_PREFIX: Final = "topic: "

# Every line of a multi-line message after the first goes out behind this indent: a frame's
# first line starts with a name or ``error: ``, never with a space, so no continuation line can
# pass for a message, a notice or a join.
CONTINUATION_INDENT: Final = "  "


def encode_lines(text: str) -> str:
    """How a message's text travels in a frame: each line break is followed by
    :data:`CONTINUATION_INDENT`. :func:`decode_lines` is its exact inverse.

    ``text`` must be sanitised, so that ``\\n`` is its only line break.
    """
    return text.replace("\n", "\n" + CONTINUATION_INDENT) if "\n" in text else text


def decode_lines(text: str) -> str:
    """The message text of a frame, as its sender's sanitised text: the exact inverse of
    :func:`encode_lines`. Lines without the indent (a server that does not encode) stay as
    they are."""
    return text.replace("\n" + CONTINUATION_INDENT, "\n") if "\n" in text else text


def format_message(name: str, text: str) -> str:
    """A chat message frame; ``text`` is sanitised (see ``chat_protocol.text``)."""
    return f"{name}{SEPARATOR}{encode_lines(text)}"


def format_join(name: str) -> str:
    return f"{name}{JOINED_SUFFIX}"


def format_leave(name: str) -> str:
    return f"{name}{LEFT_SUFFIX}"


def format_nick(old: str, new: str) -> str:
    return f"{old}{NICK_INFIX}{new}"


def format_kick(name: str, reason: str) -> str:
    # A notice stays a notice: the reason never contains the chat separator.
    return f"{name}{KICKED_INFIX}{reason.replace(SEPARATOR, ' : ')}"


def format_topic(topic: str | None) -> str:
    # A notice stays a notice: the topic is one line, without the chat separator.
    return TOPIC_PREFIX + (topic or "").replace(SEPARATOR, " : ")


def format_error(description: str) -> str:
    # An error notice must stay a notice: it never contains the chat separator.
    return ERROR_PREFIX + description.replace(SEPARATOR, " : ")


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
    if frame.startswith(TOPIC_PREFIX):
        return Frame(FrameKind.TOPIC, frame[len(TOPIC_PREFIX) :])
    kicked, infix, reason = frame.partition(KICKED_INFIX)
    if infix and is_valid_name(kicked):
        return Frame(FrameKind.KICK, reason, kicked)
    old, infix, new = frame.partition(NICK_INFIX)
    if infix and is_valid_name(old) and is_valid_name(new):
        return Frame(FrameKind.NICK, new, old)
    return Frame(FrameKind.NOTICE, frame)


class TextCodec:
    """The text protocol as a codec (see ``chat_protocol.codec``)."""

    name: Final = "text"
    subprotocol: Final = None
    slot: Final = 0
    # No welcome, no tokens, no acks, no numbers: the own join notice is the first frame.
    numbered: Final = False

    # --- server to client ---

    def message(self, name: str, text: str, offset: int, time: float) -> str:
        # format_message, without its calls for a one-line text: once per event on the
        # server's fan-out path.
        if "\n" in text:
            text = encode_lines(text)
        return f"{name}{SEPARATOR}{text}"

    def presence(self, joined: bool, name: str, time: float) -> str:
        return format_join(name) if joined else format_leave(name)

    def nick(self, old: str, new: str, time: float) -> str:
        return format_nick(old, new)

    def kick(self, name: str, reason: str, time: float) -> str:
        return format_kick(name, reason)

    def topic(self, topic: str | None, time: float) -> str:
        return format_topic(topic)

    def error(self, description: str, nonce: str | None = None) -> str:
        return format_error(description)

    def ack(self, nonce: str, offset: int, time: float) -> str:
        raise TypeError("the text protocol has no acks")

    def typing(self, name: str) -> str:
        raise TypeError("the text protocol has no typing frames")

    def away(self, name: str, message: str | None, time: float) -> str:
        raise TypeError("the text protocol has no away frames")

    def direct(self, name: str, time: float) -> str:
        raise TypeError("the text protocol has no direct messages")

    def welcome(self, *args: object) -> str:
        raise TypeError("the text protocol has no welcome: the own join notice comes first")

    def parse(self, frame: str) -> ServerFrame:
        return parse_frame(frame)

    # --- client to server ---

    def send(self, text: str, nonce: str | None = None) -> str:
        return text

    # A text frame is a message as it is: read into a Send directly, without a call of its own.
    read = staticmethod(Send)


CODEC: Final = TextCodec()
