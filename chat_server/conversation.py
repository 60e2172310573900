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


def conversation_room(token_a: str, token_b: str) -> str:
    """The broker's room of the conversation between two tokens' users: the same from either
    side."""
    return names.DIRECT_PREFIX + "~".join(sorted((token_a, token_b)))


class Conversation:
    """One connection's side of a conversation with ``peer`` (the name it was addressed by)."""

    def __init__(self, node: Node, peer: str) -> None:
        self.node = node
        self.peer = peer
        self.room = ""  # once opened
        self._peer_token = ""
        self._told_away: str | None = None  # the peer's away message last told us
        self._reaching = self._reach_again = False

    async def open(self, lease: NameLease) -> Ending | None:
        """Between our token (resumed, never a new one) and the token that holds or keeps the
        peer's name; an ending if there is no such conversation to open."""
        if not lease.resumed or lease.token is None:
            return Ending(close.DIRECT_NEEDS_TOKEN)
        digest = await self.node.backend.registry.name_digest(self.peer)
        if digest is None:
            return Ending(close.NOT_HERE, self.peer)
        self._peer_token = tokens.token_id(digest)
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
                present = {names.name_key(m) for m in await registry.members(self.room)}
                if names.name_key(self.peer) not in present:
                    changed = PersonChanged(self._peer_token, Change.DIRECT, name)
                    await backend.announce(changed)
                away = (await registry.away([self.peer])).get(self.peer)
                if away != self._told_away:
                    self._told_away = away
                    if away is not None:
                        member.deliver_private(member.codec.away(self.peer, away, time.time()))
                if not self._reach_again:
                    return
        except BrokerUnavailable:
            return  # everyone is closed then anyway
        finally:
            self._reaching = False
