"""A room event as it crosses Redis pub/sub.

The publish script writes the header, so that the stamps it assigns travel with the event::

    v1 {serial} {offset} {epoch} {time_ms} {kind} {origin} {name} {nonce}\\n{text}

``kind`` is ``m``, ``j``, ``l``, ``t`` (typing), ``a`` (away), ``b`` (back), ``n`` (nick)
or ``k`` (kick: a leave); ``nonce`` is
``-`` for none, else percent-encoded (it may hold any character); the text is everything after
the first newline, verbatim.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from chat_server.events import EventKind, RoomEvent

VERSION = "v1"
KIND_CODES = {
    EventKind.MESSAGE: "m",
    EventKind.JOIN: "j",
    EventKind.LEAVE: "l",
    EventKind.TYPING: "t",
    EventKind.AWAY: "a",
    EventKind.BACK: "b",
    EventKind.NICK: "n",
    EventKind.KICK: "k",
}
_KINDS = {code: kind for kind, code in KIND_CODES.items()}
NO_NONCE = "-"


def encode_nonce(nonce: str | None) -> str:
    return NO_NONCE if nonce is None else quote(nonce, safe="")


class MalformedEvent(ValueError):
    pass


def decode(data: bytes) -> RoomEvent:
    text = data.decode()
    head, _, body = text.partition("\n")
    fields = head.split(" ")
    if len(fields) != 9 or fields[0] != VERSION:
        raise MalformedEvent(f"not a {VERSION} room event: {head[:80]!r}")
    _, serial, offset, epoch, time_ms, kind, origin, name, nonce = fields
    try:
        return RoomEvent(
            _KINDS[kind],
            name,
            body,
            int(serial),
            int(offset),
            epoch,
            int(time_ms) / 1000,
            origin,
            None if nonce == NO_NONCE else unquote(nonce),
        )
    except (KeyError, ValueError) as exc:
        raise MalformedEvent(f"malformed room event: {head[:80]!r}") from exc
