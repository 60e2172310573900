"""One chat connection in one room, from its accept to its leave notice.

The handshake checks (origin, room name, query, admission) are the endpoint's
(``http/endpoint.py``); a :class:`ChatSession` starts with an admitted connection, its room and
its dialect (``chat_protocol.codec``), and talks to the room hub and the broker's interfaces
only: it is the same for every backend and every dialect.

A session joins in this order: it enters the hub (its member receives from now on, gated until
its own join comes through), publishes its join, and, when it replays history (``?history=N``,
or a numbered dialect's welcome), reads the room's messages up to the join's offset while its
member holds whatever is published after the join; then the welcome and the history go out,
then the held events, then live. The join's offset is the boundary: every message at or below
it was published before the join, every one above it after, so nothing is missed or sent
twice, on any broker.

Then it reads the member's frames (``checks.py`` judges each) and publishes them, several at a
time (:class:`Publishing`).

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
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from chat_protocol import close, names
from chat_protocol.close import Close, CloseCode
from chat_protocol.codec import Codec
from chat_protocol.frames import Away, ClientFrame, Nick, Read, Send, Typing
from chat_protocol.query import JoinRequest
from chat_server import asgi, tokens
from chat_server.backends.base import (
    BrokerUnavailable,
    Change,
    PersonChanged,
    Publishing,
    Registry,
    public_reason,
)
from chat_server.checks import Ending, FrameChecks, Refusal
from chat_server.conversation import Conversation, conversation_peer
from chat_server.events import EventKind, Published, RoomEvent, StoredMessage
from chat_server.governance import ban_reason, muted_text, slow_text
from chat_server.member import AsgiMember, Member, TransportMember, text_size
from chat_server.node import NameLease, NameRefused, Node
from chat_server.signed import Signed

log = logging.getLogger("chat_server")

# Messages of one connection on their way through the broker at once (in order). Past it the
# session reads no more frames until the oldest lands: with 16, a sender with 16 messages out
# (a paste, the rooms benchmark) waited on Redis at each one, a loop turn a message (rooms on
# Redis: 1.59x memory's CPU a frame against 1.40x with 64, side by side). What a connection
# sends is bounded by its byte and message rates before this.
PUBLISH_WINDOW = 64
_MESSAGE = EventKind.MESSAGE


def _unavailable(exc: BrokerUnavailable) -> Ending:
    return Ending(close.BROKER_UNAVAILABLE, public_reason(exc))


class ChatSession:
    def __init__(
        self,
        node: Node,
        scope: asgi.Scope,
        receive: asgi.ReceiveFn,
        send: asgi.SendFn,
        room: str,
        request: JoinRequest,
        codec: Codec,
        address: str = "unknown",
        identity: Signed | None = None,
    ) -> None:
        """An admitted connection from ``address`` (see ``Node.admit``): it is released when
        it leaves. ``identity``: what its signed token says, on a private server."""
        self.node = node
        self.client_address = address
        # The room as the client addressed it; ``room`` is the broker's (for a conversation,
        # "@NAME", its own: see conversation.py).
        self.address = room
        self.room = room
        peer = names.direct_peer(room)
        self.conversation = None if peer is None else Conversation(node, peer)
        # What the log says of the room: never who talks to whom in a conversation.
        self._logged_room = room if peer is None else names.DIRECT_PREFIX
        self.request = request
        self.identity = identity
        self._expiry: asyncio.TimerHandle | None = None
        self.codec = codec
        self._receive = receive
        self._send = send
        extensions = scope.get("extensions") or {}
        self._abort: Callable[..., None] | None = extensions.get(asgi.ABORT_EXTENSION)
        self._sink = extensions.get(asgi.FRAMES_EXTENSION)
        self._charged = extensions.get(asgi.MESSAGE_BUDGET_EXTENSION)
        self.name = ""
        self.lease: NameLease | None = None
        self._join_serial: int | None = None  # our join's: what our messages and leave carry
        self._room_verdict: bool | None = None  # on the join (_new_room_allowed), once reached
        self._epoch: str | None = None  # the room's numbering when we joined
        self._admitted = True
        self.member: Member | None = None
        self._window: PublishWindow | None = None
        self.left = False
        # Set once the join publish is over (done or failed): a leave is announced after it.
        self._join_settled = asyncio.Event()
        # Why an operator or moderator removed it (its leave is then a kick), if they did.
        self._removed_why: str | None = None
        self._counted = False  # in the broker's count of the address's connections
        self._away: asyncio.Future[None] | None = None  # the last away or back under way

    async def run(self) -> None:
        node, codec = self.node, self.codec
        accept: asgi.Message = {"type": "websocket.accept"}
        if codec.subprotocol is not None:
            accept["subprotocol"] = codec.subprotocol
        await self._send(accept)
        if not await self._counted_in_cluster():
            await self._close_now(Ending(close.ADDRESS_FULL))
            return
        governance = node.governance
        identity = self.identity
        if self.conversation is None and identity is not None and not identity.may_join(self.room):
            await self._close_now(Ending(close.NOT_ALLOWED))
            return
        # The name asked for too: a banned name may be kept for its token, and refused as taken.
        wanted = identity.name if identity is not None else self.request.name
        ban = governance.banned(self.room, wanted, None, self.client_address)
        if ban is not None:
            await self._close_now(Ending(close.BANNED, ban_reason(ban)))
            return
        try:
            lease = await self._claim()
            if self.conversation is not None:
                refusal = await self.conversation.open(lease)
                if refusal is not None:
                    await node.backend.registry.release_name(lease.name)
                    await self._close_now(refusal)
                    return
                self.room = self.conversation.room
        except BrokerUnavailable as exc:
            await self._close_now(_unavailable(exc))
            return
        except NameRefused as refused:
            await self._close_now(Ending(refused.close, refused.detail))
            return
        ban = governance.banned(
            self.room, lease.name, None if lease.token is None else lease.token_id,
            self.client_address,
        )  # fmt: skip
        # A locked room: its members when it was locked come back (their tokens' names).
        locked = self.conversation is None and not governance.room(self.room).admits(
            None if lease.token is None else lease.token_id
        )
        if ban is not None or locked:
            with contextlib.suppress(BrokerUnavailable):
                await node.backend.registry.release_name(lease.name)
            refusal = (
                Ending(close.ROOM_LOCKED) if ban is None else Ending(close.BANNED, ban_reason(ban))
            )
            await self._close_now(refusal)
            return
        self.lease = lease
        self.name = lease.name
        if identity is not None and node.verifier is not None:
            # The token's end closes the connection (4004): the client comes back with a new one.
            self._expiry = asyncio.get_running_loop().call_later(
                max(0.0, node.verifier.remaining(identity)), self.drop, close.TOKEN_EXPIRED
            )
        settings = node.settings
        address = self.client_address
        options: dict[str, Any] = {
            "hold": self.request.history > 0,
            "ack_prefix": None if lease.token is None else lease.token_id + ":",
            "on_backlog": lambda change: node.backlog_changed(address, change),
        }
        member: Member
        if self._sink is not None:
            member = TransportMember(
                self.name, self.room, codec, settings.send_buffer, self._dropped, self._sink,
                **options,
            )  # fmt: skip
        else:
            member = AsgiMember(
                self.name, self.room, codec, settings.send_buffer, self._dropped, self._send,
                **options,
            )  # fmt: skip
        topic = governance.room(self.room).topic
        if topic and not codec.numbered:
            member.after_join = codec.topic(topic, time.time())
        member.admit = self._new_room_allowed
        self.member = member
        node.add_session(self, self.token_id)
        ending: Ending | None = None
        code: int | str = CloseCode.NORMAL
        try:
            joined = await self._join(member)
            if joined is not None and not isinstance(joined, BrokerUnavailable):
                if not self._new_room_allowed(joined):
                    ending = Ending(close.ROOMS_FULL)
                    code = ending.close.label
                    joined = None
                else:
                    joined = await self._replay(member, joined)
            if isinstance(joined, BrokerUnavailable):
                ending = _unavailable(joined)
                code = ending.close.label
            elif joined is not None and not self.left:
                log.info("joined room=%s name=%s", self._logged_room, self.name)
                code, ending = await self._receive_frames(member)
        finally:
            leaving = self._leave(code)
            if leaving is not None:
                await leaving
            await member.drain()
            if ending is not None:
                await self._close_now(ending)

    async def _counted_in_cluster(self) -> bool:
        """The client address's connections over every node (on a shared broker; the node's
        own share was counted at admission): False if it holds its share already."""
        settings = self.node.settings
        limit = int(settings.per_address(settings.max_connections_per_address))
        if limit <= 0:
            return True
        try:
            counted = await self.node.backend.registry.count_address(self.client_address, limit)
        except BrokerUnavailable:
            return True  # the broker's state decides (everyone is closed with 1013)
        self._counted = counted
        return counted

    async def _claim(self) -> NameLease:
        """This connection's name: its signed token's, the one its resume token keeps, the
        one it asks for, or a new one (raises ``NameRefused``)."""
        node, identity, numbered = self.node, self.identity, self.codec.numbered
        if identity is not None:
            return await node.claim_signed(identity, numbered)
        if self.conversation is not None:
            return await node.claim_name(self.request.resume, tokened=True)
        return await node.claim_name(
            self.request.resume, tokened=numbered, wanted=self.request.name
        )

    async def _join(self, member: Member) -> Published | BrokerUnavailable | None:
        """Enter the room and announce it; ``None`` if dropped meanwhile."""
        try:
            await self.node.hub.enter(self.room, member)
            if self.left:
                return None
            joining = member.join_name = self.name
            channels = self.node.backend.channels
            joined = await channels.publish(
                self.room, EventKind.JOIN, joining, nonce=member.join_mark
            )
            if joined is None:
                return BrokerUnavailable("it refused the join")
            self._join_serial = joined.serial
            if self.name != joining:  # renamed (on another connection) while joining
                self._publish_nick(joining)
            return None if self.left else joined
        except BrokerUnavailable as exc:
            return exc
        finally:
            self._join_settled.set()

    def _new_room_allowed(self, join: Published | RoomEvent) -> bool:
        """False if this join brought the room into being (the first event of its sequence)
        past the client address's share of new rooms: a conversation too, charged to who
        opened it (80 a minute from one address took idle rooms' places past the share).
        Reached once: from the publish's result or from the join notice reaching the member,
        whichever comes first."""
        if self._room_verdict is None:
            self._room_verdict = join.serial != 1 or self.node.may_create_room(self.client_address)
        return self._room_verdict

    async def _replay(
        self, member: Member, joined: Published
    ) -> Published | BrokerUnavailable | None:
        """Welcome (numbered dialects), history or recovery, then live (see the module's
        docstring)."""
        request, settings, codec = self.request, self.node.settings, self.codec
        if not (codec.numbered or request.history):
            return joined
        read: int | None = None
        directs: dict[str, str] = {}
        try:
            async with asyncio.timeout(settings.broker_timeout):
                await member.joined()
                backlog, recovered = await self._backlog(joined)
                if codec.numbered and self.lease is not None and self.lease.token is not None:
                    registry = self.node.backend.registry
                    token_id = self.lease.token_id
                    read = await registry.read_position(token_id, self.room, joined.epoch)
                    directs = await registry.directs(token_id)
                    directs.pop(self.room, None)  # this one is open: its read position says
                    directs = await _as_named_now(registry, token_id, directs)
        except TimeoutError:
            return BrokerUnavailable("the room's history did not come in time")
        except BrokerUnavailable as exc:
            return exc
        if self.left:
            return None
        self._epoch = joined.epoch
        messages = _newest_within(
            [codec.message(m.name, m.text, m.offset, m.time) for m in backlog],
            self.node.backlog_allowed(self.client_address),
        )
        if len(messages) < len(backlog) and recovered:
            recovered = False  # not all of what was missed: the client must know
        frames: list[str] = []
        if codec.numbered:
            lease = self.lease
            assert lease is not None and lease.token is not None
            frames.append(
                codec.welcome(
                    self.address, self.name, joined.epoch, joined.offset, str(lease.token),
                    recovered, lease.resumed, len(messages), read,
                    self.node.governance.room(self.room).topic, settings.max_message_chars,
                )
            )  # fmt: skip
        # Then who wrote to us in conversations we have no connection to (chat.v2).
        now = time.time()
        notices = [codec.direct(sender, now) for sender in directs.values()]
        member.go_live(frames + messages + notices)
        return joined

    async def _backlog(self, joined: Published) -> tuple[list[StoredMessage], bool | None]:
        """What precedes live: (messages up to the join's offset, recovered)."""
        request, settings = self.request, self.node.settings
        history = self.node.backend.history
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

    async def _receive_frames(self, member: Member) -> tuple[int | str, Ending | None]:
        """Read and publish the member's frames until it goes; returns (log code, ending)."""
        receive = self._receive
        share = self.node.by_address.get(self.client_address)
        shared = share.messages if share is not None else None
        check = FrameChecks(self.node.settings, self.codec, self._charged, shared).check
        window = self._window = PublishWindow(self)
        publish = window.publish
        restricted = self.node.governance.restricted
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return message.get("code", CloseCode.NORMAL), None
            if self.left:  # dropped while this frame was on its way: it is not broadcast
                return CloseCode.NORMAL, None
            verdict = check(message)
            if isinstance(verdict, Send):
                if self.room in restricted:
                    refused = self._restriction()
                    if refused is not None:
                        self._refuse(refused, verdict.nonce)
                        continue
                failed = publish(verdict)
                if failed is not None:
                    return failed.close.label, failed
                if self.conversation is not None:
                    self.conversation.said(self.name, member)
                if window.full:
                    await window.oldest()
            elif isinstance(verdict, Refusal):
                self._refuse(verdict.description, verdict.nonce)
            elif isinstance(verdict, Ending):
                return verdict.close.label, verdict
            elif isinstance(verdict, Nick):
                # Awaited: what the member sends after a nick goes out under the new name.
                await self._change_name(verdict)
            elif verdict is not None:
                ending = self._answer(verdict)
                if ending is not None:
                    return ending.close.label, ending

    def _answer(self, frame: ClientFrame) -> Ending | None:
        """A client frame other than a send: each such type gets its case here."""
        if isinstance(frame, Typing):
            if self.node.governance.muted(self.room, self.name, self.token_id) is None:
                self._signal(EventKind.TYPING)  # a muted member's typing would say nothing
            return None
        if isinstance(frame, Read):
            self._keep_read(frame.offset)
            return None
        if isinstance(frame, Away):
            lease = self.lease
            if lease is not None and lease.token is not None:
                self._away = self.node.spawn(
                    self.node.set_away(lease.token_id, self.name, frame.message)
                )
            return None
        raise TypeError(f"no answer for a {type(frame).__name__}")

    @property
    def token_id(self) -> str | None:
        lease = self.lease
        return None if lease is None or lease.token is None else lease.token_id

    async def _change_name(self, nick: Nick) -> None:
        if self.lease is None:
            return
        away = self._away
        if away is not None and not away.done():
            # An away sent just before: kept under the name it was sent with, then renamed
            # with it (taken after the rename, it was kept under a name no longer held).
            with contextlib.suppress(Exception):
                await asyncio.shield(away)
        if self.identity is not None:
            self._refuse(
                "on this server a name is the signed token's: it cannot change", nick.nonce
            )
            return
        problem = await self.node.rename(self.lease, nick.name)
        if problem is not None:
            self._refuse(problem, nick.nonce)

    def _restriction(self) -> str | None:
        """Why a message cannot go out now in a room with mutes or slow mode, if it cannot."""
        governance = self.node.governance
        mute = governance.muted(self.room, self.name, self.token_id)
        if mute is not None:
            return muted_text(mute)
        slow = governance.slowed(self.room, self.name)
        if slow is not None:
            return slow_text(slow)
        return None

    def removed_by(self, why: Close, reason: str) -> None:
        """Closed by an operator's or moderator's decision: its leave is a kick."""
        if self._removed_why is None:
            self._removed_why = why.text(reason) if why is not close.KICKED else reason
        self.drop(why, reason)

    def tell(self, description: str) -> None:
        self._refuse(description)

    def tell_topic(self, topic: str | None) -> None:
        if self.member is not None:
            self.member.deliver_private(self.codec.topic(topic, time.time()))

    def person_changed(self, changed: PersonChanged) -> None:
        """Something happened to our token's user (every one of its connections hears it)."""
        if self.left:
            return
        change = changed.change
        if change is Change.NICK:
            self._renamed(changed.name, changed.text)
        elif self._join_serial is None:
            return  # not in the room yet: a listing or its own join says it
        elif change is Change.AWAY:
            self._signal(EventKind.AWAY, changed.text)
        elif change is Change.BACK:
            self._signal(EventKind.BACK)
        elif change is Change.DIRECT and self.member is not None:
            self.member.deliver_private(self.codec.direct(changed.name, time.time()))

    def _renamed(self, old: str, new: str) -> None:
        """Our token's name is ``new`` now: so is ours, and this room is told."""
        if self.lease is None or self.name != old:
            return  # already (a join that resumed the new name), or not ours
        self.lease = self.lease.renamed(new)
        self.name = new
        if self.member is not None:
            self.member.name = new
        if self._window is not None:
            self._window.name = new
        if self._join_serial is not None:
            self._publish_nick(old)
        # else: the join under way says it once it is through (see _join)

    def _publish_nick(self, old: str) -> None:
        """Tell the room that ``old`` (our presence there) is now our name."""
        try:
            publishing = self.node.backend.channels.publish(
                self.room, EventKind.NICK, old, self.name, ref=self._join_serial
            )
        except BrokerUnavailable:
            return
        if not publishing.done():
            publishing.add_done_callback(_outcome_ignored)

    def _keep_read(self, offset: int) -> None:
        """Keep where the token's user stopped reading here (for its next welcome)."""
        lease = self.lease
        if lease is None or lease.token is None or self._epoch is None:
            return
        registry = self.node.backend.registry
        kept = registry.keep_read_position(lease.token_id, self.room, self._epoch, offset)
        self.node.spawn(_without_broker(kept))
        if self.conversation is not None:  # read: no longer said at the next welcome
            self.node.spawn(_without_broker(registry.clear_direct(lease.token_id, self.room)))

    def _signal(self, kind: EventKind, text: str = "") -> None:
        """Tell the room (typing, away, back): nothing waits for it, and nothing is said if it
        cannot go out (a broker failure closes everyone anyway)."""
        try:
            publishing = self.node.backend.channels.publish(
                self.room, kind, self.name, text, ref=self._join_serial
            )
        except BrokerUnavailable:
            return
        if not publishing.done():
            publishing.add_done_callback(_outcome_ignored)

    def _refuse(self, description: str, nonce: str | None = None) -> None:
        """Tell the member that what it sent is not published (and which send, by nonce)."""
        if self.member is not None:
            self.member.deliver_private(self.codec.error(description, nonce))

    def _ack(self, nonce: str, published: Published) -> None:
        # A duplicate: nothing was published now, so no event brings its ack; it is sent here.
        if self.member is not None:
            self.member.deliver_private(self.codec.ack(nonce, published.offset, published.time))

    def drop(self, why: Close, detail: object = None) -> None:
        """Let go of this connection from outside its receive loop."""
        if self.member is not None:
            self.member.drop(why, detail)  # calls back _dropped once

    def _dropped(self, member: Member, why: Close, detail: object) -> None:
        log.warning(
            "evicted room=%s name=%s reason=%s", self._logged_room, self.name, why.text(detail)
        )
        for pending in (self._leave(why.label), self._close_later(Ending(why, detail))):
            if pending is not None:
                self.node.spawn(pending)

    def _leave(self, code: int | str) -> Awaitable[None] | None:
        """Out of the room, once: the rest (announcing it) is returned to be awaited."""
        if self.left or self.member is None:
            return None
        self.left = True
        if self._expiry is not None:
            self._expiry.cancel()
        self.member.close()
        self.node.hub.exit(self.room, self.member)
        self.node.remove_session(self, self.token_id)
        self.release()
        log.info("left room=%s name=%s code=%s", self._logged_room, self.name, code)
        return self._announce_leave()

    def release(self) -> None:
        """Free this connection's place under the connection limits (once)."""
        if self._admitted:
            self._admitted = False
            self.node.release(self.client_address)
        if self._counted:
            self._counted = False
            registry = self.node.backend.registry
            self.node.spawn(_without_broker(registry.uncount_address(self.client_address)))

    async def _announce_leave(self) -> None:
        backend = self.node.backend
        await self._join_settled.wait()  # a leave never overtakes its own join
        # Without the broker neither can be done now; the broker's reaper does them later.
        with contextlib.suppress(BrokerUnavailable):
            # Only our own join's presence: not a newer connection's under the same name.
            if self._removed_why is not None:
                kind, text = EventKind.KICK, self._removed_why
            else:
                kind, text = EventKind.LEAVE, ""
            # The name first: whoever sees the leave may take the name at once (a newer join
            # of it before the leave lands replaces this entry, and the leave, for this join
            # only, then finds nobody and says nothing).
            await backend.registry.release_name(self.name)
            await backend.channels.publish(self.room, kind, self.name, text, ref=self._join_serial)

    def _close_later(self, ending: Ending) -> Awaitable[None] | None:
        """Close without waiting on a socket that may not drain (abort-capable servers)."""
        grace = self.node.settings.close_grace
        if self._abort is not None:
            self._abort(ending.close, ending.detail, grace)
            return None
        return close_politely(self._send, ending.close, ending.detail, grace)

    async def _close_now(self, ending: Ending) -> None:
        closing = self._close_later(ending)
        if closing is not None:
            await closing


async def _as_named_now(
    registry: Registry, token_id: str, directs: dict[str, str]
) -> dict[str, str]:
    """Each conversation's last writer by the name they go by now: a notice under a former
    name would open a second conversation with the same person. A name that is no longer
    the conversation's other token's (it lapsed, and someone else may hold it) is not said:
    under it the conversation cannot be reached."""
    senders = list(directs.items())
    held = await asyncio.gather(*(registry.holder(sender) for _, sender in senders))
    named: dict[str, str] = {}
    for (room, _), holder in zip(senders, held, strict=True):
        if holder is None or holder.digest is None:
            continue
        if tokens.token_id(holder.digest) == conversation_peer(room, token_id):
            named[room] = holder.name
    return named


def _newest_within(frames: list[str], limit: int) -> list[str]:
    """The newest of ``frames`` (oldest first) whose bytes add up to at most ``limit``."""
    total = 0
    for index in range(len(frames) - 1, -1, -1):
        total += text_size(frames[index])
        if total > limit:
            return frames[index + 1 :]
    return frames


class PublishWindow:
    """A session's publishes under way: issued in order, at most :data:`PUBLISH_WINDOW` at
    once, the member's next frames read meanwhile. A duplicate's ack, and a publish that did
    not go out (the member is then dropped and learns why), are handled as each settles."""

    def __init__(self, session: ChatSession) -> None:
        """Once the session has joined: its room, name and join are those of every publish."""
        self._session = session
        self._publish = session.node.backend.channels.publish
        self._room, self.name, self._ref = session.room, session.name, session._join_serial
        lease = session.lease
        self._key_prefix = None if lease is None or lease.token is None else lease.token_id + ":"
        self._inflight: deque[Publishing] = deque()
        # PUBLISH_WINDOW publishes under way: read no more frames until the oldest is through.
        self.full = False

    def publish(self, send: Send) -> Ending | None:
        """Issue the publish now; an ending if it has already failed."""
        prefix, nonce = self._key_prefix, send.nonce
        key = None if nonce is None or prefix is None else prefix + nonce
        pending = self._publish(self._room, _MESSAGE, self.name, send.text, key, self._ref)
        if pending.done():  # settled at once (the memory broker): no bookkeeping needed
            try:
                published = pending.result()
            except BrokerUnavailable as exc:
                return _unavailable(exc)
            if published is not None and not published.duplicate:
                return None  # published: the common case, settled without another call
            return self._published(published, nonce)
        pending.add_done_callback(lambda done: self._settled_later(done, nonce))
        inflight = self._inflight
        inflight.append(pending)
        while inflight and inflight[0].done():
            inflight.popleft()
        self.full = len(inflight) >= PUBLISH_WINDOW
        return None

    async def oldest(self) -> None:
        """Until the oldest publish under way is through: while the window is full, no more
        frames are read."""
        with contextlib.suppress(Exception):
            await self._inflight[0]

    def _settled(self, pending: Publishing, nonce: str | None) -> Ending | None:
        """What a settled publish means: None if it went out (acking a duplicate)."""
        try:
            published = pending.result()
        except BrokerUnavailable as exc:
            return _unavailable(exc)
        return self._published(published, nonce)

    def _published(self, published: Published | None, nonce: str | None) -> Ending | None:
        if published is None:
            # The broker no longer has this member in the room (it lost its data, the cluster
            # took this node for dead, or a newer connection took the name).
            return Ending(close.NOT_IN_ROOM)
        if published.duplicate and nonce is not None:
            self._session._ack(nonce, published)
        return None

    def _settled_later(self, pending: Publishing, nonce: str | None) -> None:
        if pending.cancelled():
            return
        failed = self._settled(pending, nonce)
        if failed is not None:
            # Not published: the member never sees its echo, and learns why.
            self._session.drop(failed.close, failed.detail)


async def _without_broker(work: Awaitable[None]) -> None:
    """``work``, unless the broker is unavailable (everyone is closed then anyway)."""
    with contextlib.suppress(BrokerUnavailable):
        await work


def _outcome_ignored(done: Publishing) -> None:
    if not done.cancelled():
        with contextlib.suppress(Exception):
            done.result()  # retrieved: an exception is not "never retrieved"


async def close_politely(send: asgi.SendFn, why: Close, detail: object, timeout: float) -> None:
    """An ordinary ASGI close (plain uvicorn), given up after ``timeout``."""
    message = {"type": "websocket.close", "code": why.code, "reason": why.text(detail)}
    message[asgi.CLOSE_KEY] = why
    with contextlib.suppress(Exception, asyncio.TimeoutError):
        await asyncio.wait_for(send(message), timeout)
