"""What a member's frame must pass before it is published: its type, size, dialect, rate,
length and content. One :class:`FrameChecks` per connection turns each received ASGI message
into a verdict; the session acts on it and decides nothing itself.

Under ``chat-server`` the message rate was judged when the frame arrived (the transport's
verdict travels with the message, ``asgi.WITHIN_RATE_KEY``); under plain uvicorn, when the
app reads it, with a bucket of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from chat_protocol import close, text, v2
from chat_protocol.close import Close
from chat_protocol.codec import Codec
from chat_protocol.frames import Away, ClientFrame, FrameError, Nick, Read, Send, Typing
from chat_protocol.rates import TokenBucket
from chat_server import asgi
from chat_server.addresses import AddressRate
from chat_server.ops.settings import Settings
from chat_server.stats import stats

# Minimum time between two "you are sending too fast" notices to one connection (a send with a
# nonce is always answered: its client must know it was not sent).
FLOOD_NOTICE_INTERVAL = 1.0
# Frame types with a rule of their own: the least time between two, and the error for one
# that comes sooner (a read: a client reports once a second, and the network may bring two
# closer).
_SPACED: dict[type, tuple[float, str]] = {
    Typing: (v2.TYPING_EVERY, f"typing: at most once every {v2.TYPING_EVERY:g} s; not passed on"),
    Read: (v2.READ_EVERY / 2, "read: at most twice a second; not kept"),
    Away: (v2.AWAY_EVERY, "away and back: at most once a second; not changed"),
    Nick: (v2.AWAY_EVERY, "nick: at most once a second; not changed"),
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Not published; the sender is told why (``nonce``: which send, in chat.v2)."""

    description: str
    nonce: str | None = None


@dataclass(frozen=True, slots=True)
class Ending:
    """The connection ends: closed with ``close`` (and its detail)."""

    close: Close
    detail: object = None


# A send to publish (sanitised) or another frame to answer, a refusal, the end, or None:
# dropped without a word.
Verdict = ClientFrame | Refusal | Ending | None


class FrameChecks:
    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        charged: TokenBucket | None = None,
        shared: AddressRate | None = None,
    ) -> None:
        """``charged``: the transport's message budget (``asgi.MESSAGE_BUDGET_EXTENSION``),
        for the frames it leaves to the app to judge; ``shared``: the bucket of every
        connection from the same client address (``--max-messages-per-address``)."""
        self._shared = shared
        self._address_rate = settings.max_messages_per_address
        self._codec = codec
        self._max_chars = settings.max_message_chars
        self._max_bytes = settings.max_frame_bytes
        # Fewer characters than this cannot be more than _max_bytes in UTF-8 (4 bytes at most).
        self._chars_within_bytes = settings.max_frame_bytes // 4
        self._rate_limit = settings.rate_limit
        self._bucket = (
            TokenBucket(settings.rate_limit, settings.rate_burst, time.monotonic())
            if settings.rate_limit > 0
            else None
        )
        self._last_flood_notice = -FLOOD_NOTICE_INTERVAL
        # What a message not judged at arrival is charged against now.
        self._charged = charged if charged is not None else self._bucket
        # Per frame type with a rule of its own: when one last went through, and when the
        # last error about one going too often went out.
        self._last_other: dict[type, tuple[float, float]] = {}

    def check(self, message: asgi.Message) -> Verdict:
        """The verdict on one ``websocket.receive`` message."""
        frame = message.get("text")
        if frame is None:
            return Ending(close.BINARY)
        if len(frame) > self._chars_within_bytes and len(frame.encode()) > self._max_bytes:
            return Ending(close.TOO_BIG, self._max_bytes)
        try:
            send = self._codec.read(frame)
        except FrameError as exc:
            return Refusal(str(exc), exc.nonce)
        if type(send) is not Send:
            # Not a message: it has rules of its own and costs no message (the frame and byte
            # budgets count it at arrival like any frame).
            return self._other(send)
        within = message.get(asgi.WITHIN_RATE_KEY)
        if within is None:  # not judged at arrival: judged now
            within = self._charged is None or self._charged.spend(1, time.monotonic())
            if not within:
                stats.rate_limited += 1
        if not within:
            return self._too_fast(send.nonce)
        shared = self._shared
        if shared is not None and not shared.take():
            stats.rate_limited += 1
            return self._too_fast(send.nonce, from_address=True)
        if len(send.text) > self._max_chars:
            return Refusal(
                f"message too long ({len(send.text)} characters; the limit is "
                f"{self._max_chars}); it was not sent",
                send.nonce,
            )
        raw = send.text
        if raw and raw.isascii() and raw.isprintable() and not raw.isspace():
            clean = raw  # what text.sanitize returns for such a text, without the call
        else:
            clean = text.sanitize(raw)
        if clean is None:
            if send.nonce is None:
                return None
            return Refusal(
                "empty message (nothing left after sanitising); it was not sent", send.nonce
            )
        # Sanitising most often changes nothing (the same str): then the send is as read.
        return send if clean is raw else Send(clean, send.nonce)

    def _other(self, frame: ClientFrame) -> Verdict:
        """A frame other than a send: one of a type in _SPACED goes through at most once per
        its interval; sooner, nothing is done and its error is said at most once per
        interval."""
        kind = type(frame)
        spaced = _SPACED.get(kind)
        if spaced is None:
            return frame
        every, refusal = spaced
        now = time.monotonic()
        last, notice = self._last_other.get(kind, (-every, -every))
        if now - last >= every:
            self._last_other[kind] = (now, notice)
            return frame
        if now - notice < every:
            return None
        self._last_other[kind] = (last, now)
        return Refusal(refusal)

    def _too_fast(self, nonce: str | None, from_address: bool = False) -> Refusal | None:
        now = time.monotonic()
        if nonce is None:
            if now - self._last_flood_notice < FLOOD_NOTICE_INTERVAL:
                return None
            self._last_flood_notice = now
        if from_address:
            limit = f"{self._address_rate:g} messages per second from your address"
        else:
            limit = f"{self._rate_limit:g} messages per second"
        return Refusal(f"you are sending too fast (limit {limit}); messages were dropped", nonce)
