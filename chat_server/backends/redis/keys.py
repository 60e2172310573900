"""Every key and channel name the Redis backend uses (documented in docs/scaling.md).

Two layouts of the same keys: :data:`SINGLE` for one Redis (or Sentinel's master), as the
chat has always named them, and :data:`CLUSTER` for a Redis Cluster, where a key's hash tag
decides its slot:

* everything of one room is tagged with the room (``chat:room:{lobby}:seq``), so that the
  script that numbers, stores and publishes its events touches one slot, and its channel is a
  sharded one of that slot;
* everything that is not a room's (names, nodes, per-address counts, read positions, rules,
  the room index) is tagged ``{dir}``: the directory, one slot, so that the scripts that keep
  it (a name's claim, a dead node's reaping, an address's count) stay single-slot as they
  are. Its load grows with connections, not messages (docs/scaling.md, "Redis Cluster").

Room names are ``[A-Za-z0-9_-]`` (conversations ``@{token}~{token}``), names ``user_...`` or
chosen (``[A-Za-z0-9_-]``), node ids host-pid-random: none contains a space or a brace, so
``"{room} {name}"`` is an unambiguous member entry and a room is a hash tag as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chat_protocol.names import name_key


@dataclass(frozen=True)
class Layout:
    cluster: bool
    # The prefix of every key that is not a room's: "chat:" or, in a cluster, the directory's.
    base: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", "chat:{dir}:" if self.cluster else "chat:")

    # --- what is not a room's ----------------------------------------------------------------

    @property
    def rooms(self) -> str:
        """Sorted set, all scores 0: rooms that have presence entries, by name (paged with
        BYLEX). (``chat:rooms`` was a set before; a new name, so that an older cluster's key is
        no surprise.)"""
        return self.base + "room-index"

    @property
    def idle_rooms(self) -> str:
        """Sorted set: rooms without members, by when they emptied (ms; 0 for a room where
        nothing was said): past ``--history-rooms`` of them, the lowest is forgotten (its
        sequence, history and nonces): a room without history first, then the one idle
        longest. (A cluster's directory keeps them by when they emptied only.)"""
        return self.base + "idle-rooms"

    @property
    def room_states(self) -> str:
        """Cluster only. Hash: room -> "{time} {serial}" of the room event call that last
        changed the room index or the idle rooms for it: the directory's updates come from
        the rooms' slots, in any order, and only a newer one is applied."""
        return self.base + "room-states"

    @property
    def reserved(self) -> str:
        """Sorted set: the name records kept only as reservations, by when they expire (ms):
        past ``--max-reservations``, the one that ends first ends now."""
        return self.base + "reserved"

    @property
    def addresses(self) -> str:
        """Hash: client address -> its connections on every live node
        (``--max-connections-per-address`` over the cluster); each node's own share in
        ``node_addresses``."""
        return self.base + "addresses"

    @property
    def nodes(self) -> str:
        """Sorted set: node id -> expiry of its heartbeat (ms, Redis clock)."""
        return self.base + "nodes"

    @property
    def node_member_counts(self) -> str:
        """Cluster only. Hash: node -> the members of rooms it holds, kept by the directory's
        side of each room event call (a node's members set is the single Redis's count)."""
        return self.base + "node-members"

    @property
    def people_channel(self) -> str:
        """Pub/sub: "{token id} {change} {name}\\n{text}" (``base.PersonChanged``: away, back,
        a new name, a direct message), heard by every node."""
        return self.base + "people"

    @property
    def rules(self) -> str:
        """Hash: "{kind} {key}" -> a rule's JSON (``base.Rule``: bans, mutes, rooms' settings,
        moderator tokens), kept without expiry (each rule carries its own end)."""
        return self.base + "rules"

    @property
    def governance_channel(self) -> str:
        """Where every rule kept or dropped, and every kick, is told to every node
        (``base.governed_to_json``); in the rules' slot (a script publishes to it)."""
        return self.base + "governance"

    @property
    def node_key_prefix(self) -> str:
        return self.base + "node:"

    @property
    def name_key_prefix(self) -> str:
        return self.base + "name:"

    def node_channel(self, node: str, part: int | None = None) -> str:
        """Pub/sub: a node's own channel (its probes). In a cluster, one per master: ``part``
        makes a channel of another slot (``RedisBackend._probe_channels``)."""
        if not self.cluster:
            return f"chat:node:{node}"
        return f"chat:node:{{{node}.{part or 0}}}"

    def node_members(self, node: str) -> str:
        """Set: "{room} {name}" of every member the node holds (what a reaper announces).
        Single Redis only: in a cluster the room's presence is the record (``node_rooms``)."""
        return f"{self.node_key_prefix}{node}:members"

    def node_rooms(self, node: str) -> str:
        """Cluster only. Set: every room the node subscribed to in this incarnation, added
        before its first member there joins: the rooms whose presence a reaper reads."""
        return f"{self.node_key_prefix}{node}:rooms"

    def node_names(self, node: str) -> str:
        """Set: the names the node claimed, in lower case (``name_key``)."""
        return f"{self.node_key_prefix}{node}:names"

    def node_addresses(self, node: str) -> str:
        """Hash: client address -> how many of its connections the node holds."""
        return f"{self.node_key_prefix}{node}:addresses"

    def name(self, name: str) -> str:
        """Hash: node -> how many of its connections hold the name; ``n``: the name as held
        (its case as chosen); ``d``: the digest of the name's resume token; ``a``: its away
        message, while away; ``f``: the name it became (a token's former name, kept for it
        after a nick change for the reservation window: resumed, it resumes the new one). A
        token's name that nobody holds expires after the reservation window.
        Keyed by the name in lower case: names are unique whatever their case."""
        return f"{self.name_key_prefix}{name_key(name)}"

    def read_positions(self, token_id: str) -> str:
        """Hash: room -> "{epoch} {offset}" the token last read there; expires with history."""
        return f"{self.base}read:{token_id}"

    @property
    def token_keys(self) -> str:
        """Sorted set: the tokens' keys of read positions and inboxes, by when each was last
        written (us): past ``TOKEN_KEYS``, the least recently written go."""
        return self.base + "token-keys"

    def inbox(self, token_id: str) -> str:
        """Hash: conversation -> who wrote last, for conversations the token has unread
        direct messages in and no connection to; expires with history."""
        return f"{self.base}inbox:{token_id}"

    # --- a room's -----------------------------------------------------------------------------

    @property
    def room_key_prefix(self) -> str:
        """Single Redis only: what a room's keys start with (the event script forgets an idle
        room by it)."""
        return "chat:room:"

    def _room(self, room: str) -> str:
        return f"chat:room:{{{room}}}" if self.cluster else f"chat:room:{room}"

    def room_channel(self, room: str) -> str:
        """Pub/sub: the room's events (a sharded channel in a cluster)."""
        return self._room(room)

    def room_of_channel(self, channel: bytes) -> str | None:
        """The room whose channel ``channel`` is, if it is a room's."""
        if not channel.startswith(b"chat:room:"):
            return None
        room = channel[10:]
        if self.cluster:
            if not (room.startswith(b"{") and room.endswith(b"}")):
                return None
            room = room[1:-1]
        return room.decode()

    def room_sequence(self, room: str) -> str:
        """Hash: ``e`` epoch, ``r`` the run_id of the Redis process that numbered it, ``o``
        last message offset, ``n`` last event serial; ``x`` when the room's keys' expiry is
        next refreshed (ms, Redis clock: once per ttl/8, not at every event) and ``h`` the
        history size of that refresh."""
        return self._room(room) + ":seq"

    def room_history(self, room: str) -> str:
        """Stream: the room's last messages, entry id "{offset}-0", fields n (name), t (text),
        m (time, ms)."""
        return self._room(room) + ":history"

    def room_nonces(self, room: str) -> str:
        """Hash: de-duplication key of a recent message ("{token id}:{nonce}") -> "offset
        time"."""
        return self._room(room) + ":nonces"

    def room_nonce_tokens(self, room: str) -> str:
        """Sorted set: the key of each token's list (``room_token_nonces``), scored by how many
        it holds (past the room's window, the heaviest's oldest is forgotten first)."""
        return self._room(room) + ":nonce-tokens"

    def room_token_nonces(self, room: str, token: str) -> str:
        """List: one token's keys in the room, oldest first (forgotten past its own window)."""
        return f"{self._room(room)}:nonce-order:{token}"

    def room_presence(self, room: str) -> str:
        """Hash: name -> "{node} {serial of its join}"."""
        return self._room(room) + ":presence"

    def room_nodes(self, room: str) -> str:
        """Hash: node -> how many of the room's members it holds."""
        return self._room(room) + ":nodes"


SINGLE = Layout(cluster=False)
CLUSTER = Layout(cluster=True)
