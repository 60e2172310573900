"""Room events as they cross Redis pub/sub.

The event script writes the headers, so that the stamps it assigns travel with the events.
One message carries every event of one script call (``v2``), in four parts::

    v2 {epoch} {time_ms} {origin}\\n
    {serial} {offset} {length} ... (three numbers per event)\\n
    {kind} {name} {nonce} ... (three words per event)\\n
    {text}{text}...

where ``length`` is the text's length in bytes (a text may hold newlines): numbers, words
and texts apart, each part is read in one step rather than one per event. One event alone
(``v1``, what nodes before v2 published) reads::

    v1 {serial} {offset} {epoch} {time_ms} {kind} {origin} {name} {nonce}\\n{text}

``kind`` is ``m``, ``j``, ``l``, ``t`` (typing), ``a`` (away), ``b`` (back), ``n`` (nick)
or ``k`` (kick: a leave); ``nonce`` is ``-`` for none, else percent-encoded (it may hold any
character).
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


def decode(data: bytes) -> list[RoomEvent]:
    """The events of one pub/sub message, in order; all or none (``MalformedEvent``)."""
    if data.startswith(b"v1 "):
        return [_decode_v1(data)]
    try:
        head, numbers_b, words_b, texts_b = data.split(b"\n", 3)
        version, epoch_b, time_b, origin_b = head.split(b" ")
        numbers = list(map(int, numbers_b.split(b" ")))
        words = words_b.decode().split(" ")
        if version != b"v2" or len(numbers) != len(words) or len(words) % 3:
            raise ValueError
        epoch, time, origin = epoch_b.decode(), int(time_b) / 1000, origin_b.decode()
        texts = texts_b.decode()
        # ASCII (the common case): offsets in bytes are offsets in characters.
        ascii_only = len(texts) == len(texts_b)
        events = []
        at = 0
        number, word = iter(numbers), iter(words)
        for serial, offset, length, kind, name, nonce in zip(
            number, number, number, word, word, word, strict=True
        ):
            end = at + length
            events.append(
                RoomEvent(
                    _KINDS[kind],
                    name,
                    texts[at:end] if ascii_only else texts_b[at:end].decode(),
                    serial,
                    offset,
                    epoch,
                    time,
                    origin,
                    None if nonce == NO_NONCE else unquote(nonce),
                )
            )
            at = end
        if at != len(texts_b):
            raise ValueError
    except (KeyError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise MalformedEvent(f"malformed room events: {data[:80]!r}") from exc
    return events


def _decode_v1(data: bytes) -> RoomEvent:
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
