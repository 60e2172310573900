"""A conversation of two people (``/chat/@NAME``): which room of the broker it is, and what a
message said in it sets off.

A conversation belongs to two resume tokens, not to two names: its room is named after both
tokens (``conversation_room``), so either side's ``@NAME`` reaches it, a nick change keeps it,
and no room name (which has no ``@``) can be it. Everything else (numbering, history,
recovery, exactly-once) is a room's, through the same session.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from chat_protocol import close, names
from chat_server import tokens
from chat_server.backends.base import BrokerUnavailable, Change, PersonChanged
from chat_server.checks import Ending

if TYPE_CHECKING:
    from chat_server.member import Member
    from chat_server.node import NameLease, Node


# The other person is told at most this often (seconds) per connection of ours: one frame
# opens the conversation; a flood of them would only be noise.
TELL_EVERY = 1.0


def conversation_room(token_a: str, token_b: str) -> str:
    """The broker's room of the conversation between two tokens' users: the same from either
    side."""
    return names.DIRECT_PREFIX + "~".join(sorted((token_a, token_b)))


def conversation_peer(room: str, token_id: str) -> str | None:
    """The other token of the conversation ``room`` of ``token_id``'s user (None if the room
    is not one of theirs)."""
    pair = room.removeprefix(names.DIRECT_PREFIX).split("~")
    if len(pair) != 2 or token_id not in pair:
        return None
    return pair[1] if pair[0] == token_id else pair[0]


class Conversation:
    """One connection's side of a conversation with ``peer`` (the name it was addressed by)."""

    def __init__(self, node: Node, peer: str) -> None:
        self.node = node
        self.peer = peer
        self.room = ""  # once opened
        self._peer_token = ""
        self._told_away: str | None = None  # the peer's away message last told us
        self._told_at = -TELL_EVERY  # when the peer was last told (monotonic)
        self._reaching = self._reach_again = False

    async def open(self, lease: NameLease) -> Ending | None:
        """Between our token (resumed, never a new one) and the token that holds or keeps the
        peer's name; an ending if there is no such conversation to open."""
        if not lease.resumed or lease.token is None:
            return Ending(close.DIRECT_NEEDS_TOKEN)
        held = await self.node.backend.registry.holder(self.peer)
        if held is None or held.digest is None:
            return Ending(close.NOT_HERE, self.peer)
        self.peer = held.name  # as held now (a former name: the name it became)
        self._peer_token = tokens.token_id(held.digest)
        self.room = conversation_room(lease.token_id, self._peer_token)
        return None

    def said(self, name: str, member: Member) -> None:
        """After each message of ours: the peer is noted as having something unread here (for
        their welcomes elsewhere until they read it), told now if they have no connection to
        it, and if they are away, we are told, once per away spell. Never waited for; one
        look at a time (messages that come meanwhile make one more)."""
        if self._reaching:
            self._reach_again = True
            return
        self._reaching = True
        self.node.spawn(self._reach(name, member))

    async def _reach(self, name: str, member: Member) -> None:
        backend = self.node.backend
        registry = backend.registry
        try:
            while True:
                self._reach_again = False
                await registry.note_direct(self._peer_token, self.room, name)
                # Only the two of us can be in it: anyone here but us is them.
                ours = names.name_key(name)
                members = await registry.members(self.room)
                now = time.monotonic()
                here = any(names.name_key(m) != ours for m in members)
                # Once told, their client opens it: more would only be noise.
                if not here and now - self._told_at >= TELL_EVERY:
                    self._told_at = now
                    await backend.announce(PersonChanged(self._peer_token, Change.DIRECT, name))
                # Their name now (they may have changed it since we addressed them).
                held = await registry.holder(self.peer)
                if (
                    held is not None
                    and held.digest is not None
                    and (tokens.token_id(held.digest) == self._peer_token)
                ):
                    self.peer = held.name
                away = (await registry.away([self.peer])).get(self.peer)
                if away != self._told_away:
                    self._told_away = away
                    # In it, they told the conversation themselves (an away frame).
                    if away is not None and not here:
                        member.deliver_private(member.codec.away(self.peer, away, time.time()))
                if not self._reach_again:
                    return
        except BrokerUnavailable:
            return  # everyone is closed then anyway
        finally:
            self._reaching = False
