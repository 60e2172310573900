"""A dialect of the protocol as one object: what a server sends in it and how a client reads
it, what a client sends in it and how a server reads it.

Two codecs exist: ``v1.CODEC`` (the original text protocol) and ``v2.CODEC`` (``chat.v2``).
A server picks one per connection at the handshake (:func:`negotiate`), a client from the
subprotocol the server selected (:func:`selected`); neither branches on the dialect anywhere
else. ``slot`` numbers the codecs, so that a server can keep one encoded copy of a room's
event per codec.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Protocol

from chat_protocol import v1, v2
from chat_protocol.frames import ClientFrame, ServerFrame


class Codec(Protocol):
    name: str  # "text" or "chat.v2"
    subprotocol: str | None  # what the handshake selects for it
    slot: int  # 0, 1, ...: its index in CODECS
    # It welcomes, numbers messages, issues resume tokens and acknowledges nonces.
    numbered: bool

    def message(self, name: str, text: str, offset: int, time: float) -> str:
        """A chat message frame (live, history or recovered)."""

    def presence(self, joined: bool, name: str, time: float) -> str:
        """A member's join or leave."""

    def nick(self, old: str, new: str, time: float) -> str:
        """A member's name change."""

    def kick(self, name: str, reason: str, time: float) -> str:
        """A member removed from the room by an operator or moderator, in place of its leave."""

    def topic(self, topic: str | None, time: float) -> str:
        """The room's topic changed (``None``: cleared)."""

    def error(self, description: str, nonce: str | None = None) -> str:
        """Something refused, for one connection (``nonce``: the send it refuses)."""

    def ack(self, nonce: str, offset: int, time: float) -> str:
        """Numbered dialects: the send with ``nonce`` is published as message ``offset``."""

    def typing(self, name: str) -> str:
        """Numbered dialects: ``name`` is typing in the room."""

    def away(self, name: str, message: str | None, time: float) -> str:
        """Numbered dialects: ``name`` is away with ``message`` (``None``: back)."""

    def direct(self, name: str, time: float) -> str:
        """Numbered dialects: ``name`` wrote in the conversation with them (``@name``)."""

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
        """Numbered dialects: the first frame, in place of the own join notice (``read``: the
        offset the token last read in the room, if one is kept; ``topic``: the room's;
        ``max_chars``: the longest message text the server takes)."""

    def parse(self, frame: str) -> ServerFrame:
        """A server frame as a client reads it; never raises."""

    def send(self, text: str, nonce: str | None = None) -> str:
        """A chat message as a client sends it."""

    def read(self, frame: str) -> ClientFrame:
        """A client frame as a server reads it; raises ``FrameError``."""


CODECS: Final[tuple[Codec, ...]] = (v1.CODEC, v2.CODEC)


def negotiate(offered: Iterable[str]) -> Codec:
    """The server's choice among the subprotocols a client offered: chat.v2 if offered."""
    return v2.CODEC if v2.SUBPROTOCOL in offered else v1.CODEC


def selected(subprotocol: str | None) -> Codec:
    """The codec of the subprotocol a server selected (none: the text protocol)."""
    return v2.CODEC if subprotocol == v2.SUBPROTOCOL else v1.CODEC
