"""Every key and channel name the Redis backend uses (documented in docs/scaling.md).

Room names are ``[A-Za-z0-9_-]``, names ``user_...`` or chosen (``[A-Za-z0-9_-]``), node ids
host-pid-random: none contains a space, so ``"{room} {name}"`` is an unambiguous member entry.
"""

from __future__ import annotations

from chat_protocol.names import name_key

PREFIX = "chat:"

# Sorted set, all scores 0: rooms that have presence entries, by name (paged with BYLEX).
# (``chat:rooms`` was a set before; a new name, so that an older cluster's key is no surprise.)
ROOMS = PREFIX + "room-index"
# Sorted set: rooms without members, by when they emptied (ms): past ``--history-rooms`` of
# them, the one idle longest is forgotten (its sequence, history and nonces).
IDLE_ROOMS = PREFIX + "idle-rooms"
# Sorted set: the name records kept only as reservations, by when they expire (ms): past
# ``--max-reservations``, the one that ends first ends now.
RESERVED = PREFIX + "reserved"
# Hash: client address -> its connections on every live node (``--max-connections-per-address``
# over the cluster); each node's own share in ``node_addresses``.
ADDRESSES = PREFIX + "addresses"
NODES = PREFIX + "nodes"  # sorted set: node id -> expiry of its heartbeat (ms, Redis clock)
ROOM_CHANNEL_PREFIX = PREFIX + "room:"  # pub/sub: one channel per room
NODE_CHANNEL_PREFIX = PREFIX + "node:"  # pub/sub: one channel per node (its probes)
# pub/sub: "{token id} {change} {name}\n{text}" (``base.PersonChanged``: away, back, a new
# name, a direct message), heard by every node.
PEOPLE_CHANNEL = PREFIX + "people"
# Hash: "{kind} {key}" -> a rule's JSON (``base.Rule``: bans, mutes, rooms' settings, moderator
# tokens), kept without expiry (each rule carries its own end); and the channel where every
# rule kept or dropped, and every kick, is told to every node (``base.governed_to_json``).
RULES = PREFIX + "rules"
GOVERNANCE_CHANNEL = PREFIX + "governance"


def room_channel(room: str) -> str:
    return ROOM_CHANNEL_PREFIX + room


def node_channel(node: str) -> str:
    return NODE_CHANNEL_PREFIX + node


def room_sequence(room: str) -> str:
    """Hash: ``e`` epoch, ``r`` the run_id of the Redis process that numbered it, ``o`` last
    message offset, ``n`` last event serial; ``x`` when the room's keys' expiry is next
    refreshed (ms, Redis clock: once per ttl/8, not at every event) and ``h`` the history size
    of that refresh."""
    return f"{PREFIX}room:{room}:seq"


def room_history(room: str) -> str:
    """Stream: the room's last messages, entry id "{offset}-0", fields n (name), t (text),
    m (time, ms)."""
    return f"{PREFIX}room:{room}:history"


def room_nonces(room: str) -> str:
    """Hash: de-duplication key of a recent message ("{token id}:{nonce}") -> "offset time"."""
    return f"{PREFIX}room:{room}:nonces"


def room_nonce_order(room: str) -> str:
    """List: the same keys, oldest first (the oldest is forgotten past the room's window)."""
    return f"{PREFIX}room:{room}:nonce-order"


def room_token_nonces(room: str, token: str) -> str:
    """List: one token's keys in the room, oldest first (forgotten past its own window)."""
    return f"{PREFIX}room:{room}:nonce-order:{token}"


def room_presence(room: str) -> str:
    """Hash: name -> "{node} {serial of its join}"."""
    return f"{PREFIX}room:{room}:presence"


def room_nodes(room: str) -> str:
    """Hash: node -> how many of the room's members it holds."""
    return f"{PREFIX}room:{room}:nodes"


def node_members(node: str) -> str:
    """Set: "{room} {name}" of every member the node holds (what a reaper announces)."""
    return f"{PREFIX}node:{node}:members"


def node_names(node: str) -> str:
    """Set: the names the node claimed, in lower case (``name_key``)."""
    return f"{PREFIX}node:{node}:names"


def node_addresses(node: str) -> str:
    """Hash: client address -> how many of its connections the node holds."""
    return f"{PREFIX}node:{node}:addresses"


def name(name: str) -> str:
    """Hash: node -> how many of its connections hold the name; ``n``: the name as held (its
    case as chosen); ``d``: the digest of the name's resume token; ``a``: its away message,
    while away; ``f``: the name it became (a token's former name, kept for it after a nick
    change for the reservation window: resumed, it resumes the new one). A token's name that
    nobody holds expires after the reservation window.
    Keyed by the name in lower case: names are unique whatever their case."""
    return f"{PREFIX}name:{name_key(name)}"


def read_positions(token_id: str) -> str:
    """Hash: room -> "{epoch} {offset}" the token last read there; expires with history."""
    return f"{PREFIX}read:{token_id}"


def inbox(token_id: str) -> str:
    """Hash: conversation -> who wrote last, for conversations the token has unread direct
    messages in and no connection to; expires with history."""
    return f"{PREFIX}inbox:{token_id}"


ROOM_KEY_PREFIX = PREFIX + "room:"
NODE_KEY_PREFIX = PREFIX + "node:"
NAME_KEY_PREFIX = PREFIX + "name:"

ROOM_CHANNEL_PREFIX_BYTES = ROOM_CHANNEL_PREFIX.encode()
