"""One chat connection in one room, from its accept to its leave notice.

The handshake checks (origin, room name, connection limit) are the endpoint's
(``app.ChatEndpoint``); a :class:`ChatSession` starts with an accepted room name. It is the
same for every backend: it talks to the room hub and the broker's interfaces only.

A session joins in this order: it enters the hub (its member receives from now on, gated until
its own join comes through), publishes its join, and, when it replays history (``?history=N``,
chat.v2), reads the room's messages up to the join's offset while its member holds whatever is
published after the join; then the welcome and the history go out, then the held events, then
live. The join's offset is the boundary: every message at or below it was published before the
join, every one above it after, so nothing is missed or sent twice, on any broker.

Every way out goes through :meth:`ChatSession._leave`, exactly once: the member stops
receiving, leaves the hub, and its leave is announced and its name released. A session is
let go from outside its receive loop with :meth:`ChatSession.drop` (slow consumer, a room
whose live stream broke, the broker gone); that closes the connection without waiting on a
socket that may not drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from chat_server import protocol
from chat_server.backends.base import BrokerUnavailable, Publishing
from chat_server.connection import AsgiMember, Member, TokenBucket, TransportMember
from chat_server.events import EventKind, Published, StoredMessage
from chat_server.protocol import CloseCode, JoinRequest
from chat_server.uvicorn_ws import ABORT_EXTENSION, FRAMES_EXTENSION, WITHIN_RATE_KEY

if TYPE_CHECKING:
    from chat_server.app import ChatServer, NameLease

log = logging.getLogger("chat_server")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Minimum time between two "you are sending too fast" notices to one connection.
FLOOD_NOTICE_INTERVAL = 1.0
NOT_IN_ROOM = protocol.NOT_IN_ROOM_REASON
# Messages of one connection on their way through the broker at once (in order).
PUBLISH_WINDOW = 16
_MESSAGE = EventKind.MESSAGE
_NOT_IN_ROOM = ("not in the room", (CloseCode.SERVICE_RESTART, NOT_IN_ROOM))


def _failure(pending: Publishing) -> tuple[str, tuple[int, str]] | None:
    """Why a settled publish did not go out (log code, close), or None if it did."""
    try:
        published = pending.result()
    except BrokerUnavailable as exc:
        return "broker unavailable", (CloseCode.TRY_AGAIN_LATER, unavailable_reason(exc))
    if published is None:
        # The broker no longer has this member in the room (it lost its data, the cluster
        # took this node for dead, or a newer connection took the name).
        return _NOT_IN_ROOM
    return None


# Where the broker is (its URL, host and port) is the operator's to know, not every client's:
# /health and the log say it; a close reason says only what went wrong.
_BROKER_ADDRESS = re.compile(
    r" at (?:rediss?|unix)://\S+?(?=:? |$)|(?:rediss?|unix)://\S+|"
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}\b"
)


def unavailable_reason(exc: BrokerUnavailable) -> str:
    """The close reason for a broker outage (a close reason is at most 123 bytes)."""
    detail = _BROKER_ADDRESS.sub(lambda m: "" if m[0].startswith(" at ") else "(address)", str(exc))
    return f"broker unavailable: {detail}"[:120]


class ChatSession:
    def __init__(
        self,
        server: ChatServer,
        scope: Scope,
        receive: Receive,
        send: Send,
        room: str,
        request: JoinRequest | None = None,
        v2: bool = False,
    ) -> None:
        self.server = server
        self.room = room
        self.request = request or JoinRequest()
        self.v2 = v2
        self._receive = receive
        self._send = send
        extensions = scope.get("extensions") or {}
        self._abort = extensions.get(ABORT_EXTENSION)
        self._sink = extensions.get(FRAMES_EXTENSION)
        self.name = ""
        self.lease: NameLease | None = None
        self._join_serial: int | None = None  # our join's: what our messages and leave carry
        # Counted against the connection limit from here until it has left its room.
        server.connections += 1
        self._counted = True
        self.member: Member | None = None
        self.left = False
        # Set once the join publish is over (done or failed): a leave is announced after it.
        self._join_settled = asyncio.Event()

    async def run(self) -> None:
        server = self.server
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if self.v2:
            accept["subprotocol"] = protocol.SUBPROTOCOL_V2
        await self._send(accept)
        try:
            lease = await server.claim_name(self.request.resume, tokened=self.v2)
        except BrokerUnavailable as exc:
            await self._close_now(CloseCode.TRY_AGAIN_LATER, unavailable_reason(exc))
            return
        self.lease = lease
        self.name = lease.name
        settings = server.settings
        options: dict[str, Any] = {
            "v2": self.v2,
            "hold": self.v2 or self.request.history > 0,
            "ack_prefix": None if lease.token is None else lease.token_id + ":",
        }
        member: Member
        if self._sink is not None:
            member = TransportMember(
                self.name, self.room, settings.send_buffer, self._dropped, self._sink, **options
            )
        else:
            member = AsgiMember(
                self.name, self.room, settings.send_buffer, self._dropped, self._send, **options
            )
        self.member = member
        server.sessions.add(self)
        close: tuple[int, str] | None = None
        code: int | str = CloseCode.NORMAL
        try:
            joined = await self._join(member)
            if joined is not None and not isinstance(joined, BrokerUnavailable):
                joined = await self._replay(member, joined)
            if isinstance(joined, BrokerUnavailable):
                code = "broker unavailable"
                close = (CloseCode.TRY_AGAIN_LATER, unavailable_reason(joined))
            elif joined is not None and not self.left:
                log.info("joined room=%s name=%s", self.room, self.name)
                code, close = await self._receive_frames(member)
        finally:
            leaving = self._leave(code)
            if leaving is not None:
                await leaving
            await member.drain()
            if close is not None:
                await self._close_now(*close)

    async def _join(self, member: Member) -> Published | BrokerUnavailable | None:
        """Enter the room and announce it; ``None`` if dropped meanwhile."""
        try:
            await self.server.hub.enter(self.room, member)
            if self.left:
                return None
            joined = await self.server.channels.publish(self.room, EventKind.JOIN, self.name)
            if joined is None:
                return BrokerUnavailable("it refused the join")
            self._join_serial = joined.serial
            return None if self.left else joined
        except BrokerUnavailable as exc:
            return exc
        finally:
            self._join_settled.set()

    async def _replay(
        self, member: Member, joined: Published
    ) -> Published | BrokerUnavailable | None:
        """Welcome (chat.v2), history or recovery, then live (see the module's docstring)."""
        request, settings = self.request, self.server.settings
        if not (self.v2 or request.history):
            return joined
        try:
            async with asyncio.timeout(settings.broker_timeout):
                await member.joined()
                backlog, recovered = await self._backlog(joined)
        except TimeoutError:
            return BrokerUnavailable("the room's history did not come in time")
        except BrokerUnavailable as exc:
            return exc
        if self.left:
            return None
        frames: list[str] = []
        if self.v2:
            lease = self.lease
            assert lease is not None and lease.token is not None
            frames.append(
                protocol.v2_welcome(
                    self.room, self.name, joined.epoch, joined.offset, str(lease.token),
                    recovered, lease.resumed, len(backlog),
                )
            )  # fmt: skip
            frames += [protocol.v2_message(m.name, m.text, m.offset, m.time) for m in backlog]
        else:
            frames += [protocol.format_message(m.name, m.text) for m in backlog]
        member.go_live(frames)
        return joined

    async def _backlog(self, joined: Published) -> tuple[list[StoredMessage], bool | None]:
        """What precedes live: (messages up to the join's offset, recovered)."""
        request, settings = self.request, self.server.settings
        history = self.server.backend.history
        # What is promised retained is the last history_size messages: Redis's trimming
        # (MAXLEN ~) may keep a few more, which must not make recovery depend on the broker.
        limit = min(settings.recovery_limit, settings.history_size)
        recovered: bool | None = None
        if request.since is not None:
            recovered = False
            since = request.since
            if (
                request.epoch == joined.epoch
                and since <= joined.offset
                and joined.offset - since <= limit
            ):
                missed = await history.since(self.room, since, joined.offset)
                if missed is not None:
                    return missed, True
        count = min(request.history, limit)
        if count <= 0:
            return [], recovered
        return await history.latest(self.room, joined.offset, count), recovered

    async def _receive_frames(self, member: Member) -> tuple[int | str, tuple[int, str] | None]:
        """Read and publish the member's frames until it goes; returns (log code, close)."""
        settings = self.server.settings
        publish = self.server.channels.publish
        receive = self._receive
        room, name = self.room, self.name
        bucket = TokenBucket(settings.rate_limit, settings.rate_burst)
        last_flood_notice = 0.0
        max_chars = settings.max_message_chars
        max_bytes = settings.max_frame_bytes
        inflight: deque[Publishing] = deque()
        v2 = self.v2
        refuse = self._refuse
        ref = self._join_serial
        lease = self.lease
        key_prefix = None if lease is None or lease.token is None else lease.token_id + ":"
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return message.get("code", CloseCode.NORMAL), None
            if self.left:  # dropped while this frame was on its way: it is not broadcast
                return CloseCode.NORMAL, None
            text = message.get("text")
            if text is None:
                return "binary frame", (
                    CloseCode.UNSUPPORTED_DATA,
                    "binary frames are not supported",
                )
            if len(text) > max_bytes // 4 and len(text.encode()) > max_bytes:
                return "frame too big", (CloseCode.MESSAGE_TOO_BIG, f"frame over {max_bytes} bytes")
            nonce: str | None = None
            if v2:
                try:
                    send = protocol.parse_v2_send(text)
                except protocol.FrameError as exc:
                    refuse(str(exc), exc.nonce)
                    continue
                text, nonce = send.text, send.nonce
            # chat-server judges the rate when the frame arrives; plain uvicorn cannot.
            within_rate = message.get(WITHIN_RATE_KEY)
            if not (bucket.take() if within_rate is None else within_rate):
                now = time.monotonic()
                # A send with a nonce is answered, always: its client must know it was not sent.
                if nonce is not None or now - last_flood_notice >= FLOOD_NOTICE_INTERVAL:
                    if nonce is None:
                        last_flood_notice = now
                    refuse(
                        f"you are sending too fast (limit {settings.rate_limit:g} "
                        f"messages per second); messages were dropped",
                        nonce,
                    )
                continue
            if len(text) > max_chars:
                refuse(
                    f"message too long ({len(text)} characters; the limit is "
                    f"{max_chars}); it was not sent",
                    nonce,
                )
                continue
            clean = protocol.sanitize(text)
            if clean is None:
                if nonce is not None:
                    refuse("empty message (nothing left after sanitising); it was not sent", nonce)
                continue
            key = None if nonce is None or key_prefix is None else key_prefix + nonce
            # Issued now, in order; the member's next frames are read while it is under way.
            pending = publish(room, _MESSAGE, name, clean, key, ref)
            if pending.done():  # the memory broker: published already
                try:
                    published = pending.result()
                    if published is not None:
                        if published.duplicate and nonce is not None:
                            self._ack(nonce, published)
                        continue
                except BrokerUnavailable:
                    pass
                return _failure(pending) or _NOT_IN_ROOM
            if nonce is not None:
                pending.add_done_callback(lambda done, nonce=nonce: self._acked(done, nonce))
            pending.add_done_callback(self._publish_settled)
            inflight.append(pending)
            while inflight and inflight[0].done():
                inflight.popleft()
            if len(inflight) >= PUBLISH_WINDOW:
                # Bounded: no more frames are read until the oldest is through.
                with contextlib.suppress(Exception):
                    await inflight[0]

    def _refuse(self, description: str, nonce: str | None = None) -> None:
        """Tell the member that what it sent is not published (and which send, in chat.v2)."""
        member = self.member
        if member is None:
            return
        if self.v2:
            member.deliver_private(protocol.v2_error(description, nonce))
        else:
            member.deliver_private(protocol.format_error(description))

    def _ack(self, nonce: str, published: Published) -> None:
        # A duplicate: nothing was published now, so no event brings its ack; it is sent here.
        if self.member is not None:
            self.member.deliver_private(protocol.v2_ack(nonce, published.offset, published.time))

    def _acked(self, pending: Publishing, nonce: str) -> None:
        if pending.cancelled():
            return
        try:
            published = pending.result()
        except BrokerUnavailable:
            return
        if published is not None and published.duplicate:
            self._ack(nonce, published)

    def _publish_settled(self, pending: Publishing) -> None:
        if not pending.cancelled() and (failed := _failure(pending)) is not None:
            # Not published: the member never sees its echo, and learns why.
            self.drop(*failed[1])

    def drop(self, code: int, reason: str) -> None:
        """Let go of this connection from outside its receive loop."""
        if self.member is not None:
            self.member.drop(code, reason)  # calls back _dropped once

    def _dropped(self, member: Member, code: int, reason: str) -> None:
        log.warning("evicted room=%s name=%s reason=%s", self.room, self.name, reason)
        for pending in (self._leave(reason), self._close_later(code, reason)):
            if pending is not None:
                self.server.spawn(pending)

    def _leave(self, code: int | str) -> Awaitable[None] | None:
        """Out of the room, once: the rest (announcing it) is returned to be awaited."""
        if self.left or self.member is None:
            return None
        self.left = True
        self.member.close()
        self.server.hub.exit(self.room, self.member)
        self.server.sessions.discard(self)
        self.uncount()
        log.info("left room=%s name=%s code=%s", self.room, self.name, code)
        return self._announce_leave()

    def uncount(self) -> None:
        """Free this connection's place under the connection limit (once)."""
        if self._counted:
            self._counted = False
            self.server.connections -= 1

    async def _announce_leave(self) -> None:
        channels, registry = self.server.channels, self.server.registry
        await self._join_settled.wait()  # a leave never overtakes its own join
        # Without the broker neither can be done now; the broker's reaper does them later.
        with contextlib.suppress(BrokerUnavailable):
            # Only our own join's presence: not a newer connection's under the same name.
            await channels.publish(self.room, EventKind.LEAVE, self.name, ref=self._join_serial)
            await registry.release_name(self.name)

    def _close_later(self, code: int, reason: str) -> Awaitable[None] | None:
        """Close without waiting on a socket that may not drain (abort-capable servers)."""
        if self._abort is not None:
            self._abort(code, reason, self.server.settings.close_grace)
            return None
        return _close_politely(self._send, code, reason, self.server.settings.close_grace)

    async def _close_now(self, code: int, reason: str) -> None:
        closing = self._close_later(code, reason)
        if closing is not None:
            await closing


async def _close_politely(send: Send, code: int, reason: str, timeout: float) -> None:
    with contextlib.suppress(Exception, asyncio.TimeoutError):
        await asyncio.wait_for(
            send({"type": "websocket.close", "code": code, "reason": reason}), timeout
        )
