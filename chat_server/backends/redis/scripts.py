"""The Lua scripts: every change to shared state is one atomic step in Redis.

Times are Redis's clock (``TIME``, in ms), so that nodes with skewed clocks agree on expiry.
A node is alive while its score in ``chat:nodes`` is at least Redis's now.

The room event script is the one place where a room's sequence advances, in the same step as
the publish, so that every subscriber sees one numbered order (Centrifugo's model of a
per-channel offset + epoch). History (a stream per room, ``XADD`` beside the ``PUBLISH``) and
de-duplication by nonce are in this same script.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

# Redis's clock in ms, and whether a node is alive (cached per script run).
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local alive_cache = {}
local function alive(nodes_key, node)
  local cached = alive_cache[node]
  if cached ~= nil then return cached end
  local score = redis.call('ZSCORE', nodes_key, node)
  local result = score ~= false and tonumber(score) >= now
  alive_cache[node] = result
  return result
end
"""

# KEYS: 1 sequence, 2 presence, 3 room's node counts, 4 rooms, 5 member's node's members,
#       6 history (a stream), 7 nonces (hash: key -> "offset time"), 8 nonces in order (a list),
#       9 the sender's token's nonces in order (a list; for a message with a nonce),
#       10 rooms without members, by when they emptied (a sorted set)
# ARGV: 1 channel, 2 room, 3 kind (m/j/l/t/a/b/n), 4 the member's node, 5 name, 6 text,
#       7 nonce ('-' for none): the sender's de-duplication key (codec-encoded),
#       8 origin (the publishing node: a reaper announces for another),
#       9 the publisher's epoch token: a room whose sequence starts now gets the epoch
#       "{token}{Redis's clock in ms, hex}", different from any epoch before it,
#       10 ttl of the room's keys (s), from its last event,
#       11 deadline (ms, Redis clock; 0 = none): a publish that arrives after it is refused,
#       so a node that gave up waiting can tell its member "not sent" and be right,
#       12 ref: the serial of the member's own join ('-': any join by the member's node),
#       13 history size (0 = no history), 14 nonces kept per token, 15 the node key prefix,
#       16 nonces kept per room, 17 Redis's run_id as the node read it when it connected,
#       18 rooms without members whose history is kept at most, 19 the room key prefix.
# Returns {serial, offset, epoch, time} once published; {0} if the member is not (for a
# message or leave with a ref: not with that join) present: nothing was published; {-1} if
# past the deadline; {-2, offset, epoch, time} for a message whose nonce the room already
# published (the original's offset and time; nothing published now).
#
# History is written here, beside the PUBLISH: a message is in the stream (entry id
# "{offset}-0") if and only if it was delivered live. A join of a name already present (the
# same token's newer connection) first publishes the old connection's leave ("replaced").
#
# A room's epoch belongs to the Redis process (its run_id) that numbered it: after Redis
# restarted, whatever it had kept may be older than what was said (a snapshot taken before the
# last messages), so the room's numbering starts over under a new epoch rather than giving
# the same offsets to new messages.
ROOM_EVENT = (
    _PRELUDE
    + """
if ARGV[11] ~= '0' and now > tonumber(ARGV[11]) then return {-1} end
local kind, node, name = ARGV[3], ARGV[4], ARGV[5]
local entry = ARGV[2] .. ' ' .. name
local present = redis.call('HGET', KEYS[2], name)
local owner = present and string.match(present, '^(%S+)')
if kind ~= 'j' and (owner ~= node or (ARGV[12] ~= '-' and present ~= node .. ' ' .. ARGV[12])) then
  if (kind == 'l' or kind == 'k') and owner ~= node then redis.call('SREM', KEYS[5], entry) end
  return {0}
end
local ttl = ARGV[10]
local epoch = redis.call('HGET', KEYS[1], 'e')
if epoch and redis.call('HGET', KEYS[1], 'r') ~= ARGV[17] then
  redis.call('DEL', KEYS[1])
  epoch = false
end
if not epoch then
  epoch = ARGV[9] .. string.format('%x', now)
  redis.call('HSET', KEYS[1], 'e', epoch, 'r', ARGV[17])
  -- A sequence starting over: what is left of an older one is nobody's history.
  redis.call('DEL', KEYS[6], KEYS[7], KEYS[8])
end
local nonce = ARGV[7]
if kind == 'm' and nonce ~= '-' then
  local seen = redis.call('HGET', KEYS[7], nonce)
  if seen then
    local o, t = string.match(seen, '^(%d+) (%d+)$')
    return {-2, tonumber(o), epoch, tonumber(t)}
  end
end
local function publish(serial, offset, k, who, text)
  redis.call('PUBLISH', ARGV[1], table.concat(
    {'v1', serial, offset, epoch, now, k, ARGV[8], who, k == 'm' and nonce or '-'}, ' ')
    .. '\\n' .. text)
end
local offset
if kind == 'm' then
  offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
else
  offset = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
end
if kind == 'j' and present then
  -- The old connection leaves first, as every member sees it.
  redis.call('HDEL', KEYS[2], name)
  if owner ~= node then redis.call('SREM', ARGV[15] .. owner .. ':members', entry) end
  if redis.call('HINCRBY', KEYS[3], owner, -1) <= 0 then redis.call('HDEL', KEYS[3], owner) end
  publish(redis.call('HINCRBY', KEYS[1], 'n', 1), offset, 'l', name, 'replaced')
end
local serial = redis.call('HINCRBY', KEYS[1], 'n', 1)
if kind == 'm' then
  local size = tonumber(ARGV[13])
  if size > 0 then
    redis.call('XADD', KEYS[6], 'MAXLEN', '~', size, offset .. '-0',
      'n', name, 't', ARGV[6], 'm', now)
  end
  if nonce ~= '-' then
    -- Each token keeps its own last nonces (others' sends cannot age them out), the room
    -- its last ARGV[16] in all.
    redis.call('HSET', KEYS[7], nonce, offset .. ' ' .. now)
    if redis.call('RPUSH', KEYS[9], nonce) > tonumber(ARGV[14]) then
      redis.call('HDEL', KEYS[7], redis.call('LPOP', KEYS[9]))
    end
    if redis.call('RPUSH', KEYS[8], nonce) > tonumber(ARGV[16]) then
      redis.call('HDEL', KEYS[7], redis.call('LPOP', KEYS[8]))
    end
    redis.call('EXPIRE', KEYS[9], ttl)
  end
elseif kind == 't' or kind == 'a' or kind == 'b' then
  -- Typing, away, back: in the room's order, never stored.
elseif kind == 'n' then
  -- A new name (ARGV[6]) for the same entry: the join's serial stays its ref. A stale entry
  -- of the new name (a dead node's, not reaped yet) is taken over.
  local new = ARGV[6]
  local stale = redis.call('HGET', KEYS[2], new)
  if stale then
    local stale_owner = string.match(stale, '^(%S+)')
    redis.call('SREM', ARGV[15] .. stale_owner .. ':members', ARGV[2] .. ' ' .. new)
    if redis.call('HINCRBY', KEYS[3], stale_owner, -1) <= 0 then
      redis.call('HDEL', KEYS[3], stale_owner)
    end
  end
  redis.call('HDEL', KEYS[2], name)
  redis.call('HSET', KEYS[2], new, present)
  redis.call('SREM', KEYS[5], entry)
  redis.call('SADD', KEYS[5], ARGV[2] .. ' ' .. new)
elseif kind == 'j' then
  redis.call('ZREM', KEYS[10], ARGV[2])
  redis.call('HSET', KEYS[2], name, node .. ' ' .. serial)
  redis.call('SADD', KEYS[5], entry)
  redis.call('HINCRBY', KEYS[3], node, 1)
  -- Conversations ("@...") are nobody's to list.
  if string.sub(ARGV[2], 1, 1) ~= '@' then redis.call('ZADD', KEYS[4], 0, ARGV[2]) end
else
  redis.call('HDEL', KEYS[2], name)
  redis.call('SREM', KEYS[5], entry)
  if redis.call('HINCRBY', KEYS[3], node, -1) <= 0 then redis.call('HDEL', KEYS[3], node) end
  if redis.call('EXISTS', KEYS[2]) == 0 then
    redis.call('DEL', KEYS[3])
    redis.call('ZREM', KEYS[4], ARGV[2])
    -- Idle now: past the bound, the room idle longest is forgotten (one here, one more
    -- when the set grew past it: never a long walk in one event).
    redis.call('ZADD', KEYS[10], now, ARGV[2])
    for _ = 1, 2 do
      if redis.call('ZCARD', KEYS[10]) <= tonumber(ARGV[18]) then break end
      local oldest = redis.call('ZPOPMIN', KEYS[10])[1]
      local p = ARGV[19] .. oldest
      if redis.call('EXISTS', p .. ':presence') == 0 then
        redis.call('DEL', p .. ':seq', p .. ':history', p .. ':nonces', p .. ':nonce-order')
      end
    end
  end
end
-- The room's keys live ttl seconds after its last event.
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[6], ttl)
redis.call('EXPIRE', KEYS[7], ttl)
redis.call('EXPIRE', KEYS[8], ttl)
publish(serial, offset, kind, name, ARGV[6])
return {serial, offset, epoch, now}
"""
)

# A name's record (KEYS[1], a hash): one field per node with how many of its connections hold
# the name, and ``d``, the digest of the name's resume token, if it has one. A token's name
# that nobody holds any more stays, with an expiry: the reservation window. Reserved names are
# also in a sorted set (``reserved``, by expiry) of at most ``bound``: past it, the reservation
# that ends first ends now (a flood of tokens cannot fill Redis with names).
_NAME_RECORD = """
local function held(key)
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if f ~= 'd' and f ~= 'a' and f ~= 'n' and f ~= 'f' then return true end
  end
  return false
end
local function settle(key, reservation, reserved, bound)
  local token = false
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if f == 'd' then token = true elseif f ~= 'a' and f ~= 'n' then return end
  end
  if token and tonumber(reservation) > 0 then
    redis.call('PEXPIRE', key, reservation)
    local t = redis.call('TIME')
    redis.call('ZADD', reserved, tonumber(t[1]) * 1000 + tonumber(reservation), key)
    for _ = 1, 2 do
      if redis.call('ZCARD', reserved) <= tonumber(bound) then break end
      local oldest = redis.call('ZPOPMIN', reserved)[1]
      if not held(oldest) then redis.call('DEL', oldest) end
    end
  else
    redis.call('DEL', key)
  end
end
"""

# KEYS: 1 name, 2 nodes, 3 the node's names. ARGV: 1 node, 2 name, 3 token digest ('-': none).
# A name is taken while a registered node holds it (a dead one until a reaper has announced
# its members' leaves and forgets it: FORGET_NODE) and while its token's reservation lasts.
CLAIM_NAME = """
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local f = fields[i]
  if f == 'd' then
    if redis.call('PTTL', KEYS[1]) > 0 then return 0 end
  elseif redis.call('ZSCORE', KEYS[2], f) then
    return 0
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], 1, 'n', ARGV[2])
if ARGV[3] ~= '-' then redis.call('HSET', KEYS[1], 'd', ARGV[3]) end
redis.call('SADD', KEYS[3], string.lower(ARGV[2]))
return 1
"""

# A former name's record forwards to the name it became (field ``f``): followed at most this
# many times. ARGV[n] of the scripts below: the name key prefix.
_FOLLOW = """
local function follow(key, name, prefix)
  for _ = 1, 8 do
    local forward = redis.call('HGET', key, 'f')
    if not forward then return key, name end
    key, name = prefix .. string.lower(forward), forward
  end
  return key, name
end
"""

# KEYS: 1 name, 2 the node's names. ARGV: 1 node, 2 name, 3 token digest, 4 name key prefix.
# One more connection of the token takes its name, or the name a former name of it became
# (checked again here, atomically: the node compared the digests first, in constant time).
# Returns the name taken, or 0.
RESUME_NAME = (
    _FOLLOW
    + """
local key, name = follow(KEYS[1], ARGV[2], ARGV[4])
if redis.call('HGET', key, 'd') ~= ARGV[3] or redis.call('HEXISTS', key, 'f') == 1 then
  return 0
end
redis.call('HINCRBY', key, ARGV[1], 1)
redis.call('PERSIST', key)
redis.call('SADD', KEYS[2], string.lower(name))
return redis.call('HGET', key, 'n') or name
"""
)

# KEYS: 1 the old name, 2 the new name, 3 nodes. ARGV: 1 token digest, 2 new name,
# 3 reservation (ms), 4 node key prefix, 5 the old name in lower case.
# The token's name becomes the new one for every connection that holds it (each node's count
# moves, and each node's set of names with it); the old one forwards to it for the
# reservation window. Returns 1, or 0 if the old name is not the token's or the new one is
# held or kept by anyone else (a former name of the same token may be taken back).
RENAME_NAME = """
if redis.call('HGET', KEYS[1], 'd') ~= ARGV[1] or redis.call('HEXISTS', KEYS[1], 'f') == 1 then
  return 0
end
if KEYS[1] == KEYS[2] then
  redis.call('HSET', KEYS[1], 'n', ARGV[2])  -- the same name in another case
  return 1
end
local taken = redis.call('HGETALL', KEYS[2])
for i = 1, #taken, 2 do
  local f = taken[i]
  if f == 'd' then
    if taken[i + 1] ~= ARGV[1] and redis.call('PTTL', KEYS[2]) > 0 then return 0 end
  elseif f ~= 'a' and f ~= 'f' and f ~= 'n' and redis.call('ZSCORE', KEYS[3], f) then
    return 0
  end
end
local old_key, new_key = ARGV[5], string.lower(ARGV[2])
local fields = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[2])
for i = 1, #fields, 2 do
  local f = fields[i]
  redis.call('HSET', KEYS[2], f, fields[i + 1])
  if f ~= 'd' and f ~= 'a' and f ~= 'n' then
    redis.call('SREM', ARGV[4] .. f .. ':names', old_key)
    redis.call('SADD', ARGV[4] .. f .. ':names', new_key)
  end
end
redis.call('HSET', KEYS[2], 'n', ARGV[2])
redis.call('DEL', KEYS[1])
if tonumber(ARGV[3]) > 0 then
  redis.call('HSET', KEYS[1], 'd', ARGV[1], 'f', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"""

# KEYS: 1 name. ARGV: 1 name, 2 name key prefix. Who holds or keeps the name (a former name:
# the name it became): {name as held, digest or ''}, or nothing.
HOLDER = (
    _FOLLOW
    + """
local key, name = follow(KEYS[1], ARGV[1], ARGV[2])
if redis.call('EXISTS', key) == 0 or redis.call('HEXISTS', key, 'f') == 1 then return false end
return {redis.call('HGET', key, 'n') or name, redis.call('HGET', key, 'd') or ''}
"""
)

# KEYS: 1 name. ARGV: 1 '1' away (2 its message) or '0' back. Only a name held or kept.
SET_AWAY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'a', ARGV[2])
else
  redis.call('HDEL', KEYS[1], 'a')
end
return 1
"""

# KEYS: the names' records. Returns their away messages in order (false where not away).
AWAY = """
local away = {}
for i, key in ipairs(KEYS) do away[i] = redis.call('HGET', key, 'a') end
return away
"""

# KEYS: 1 the token's read positions, 2 the room's sequence. ARGV: 1 room, 2 epoch,
# 3 offset read, 4 ttl (s). Kept as "{epoch} {offset}", never past the room's newest message;
# not at all if the epoch is no longer the room's.
KEEP_READ = """
if redis.call('HGET', KEYS[2], 'e') ~= ARGV[2] then return 0 end
local newest = redis.call('HGET', KEYS[2], 'o') or '0'
local offset = ARGV[3]
if #offset > #newest or (#offset == #newest and offset > newest) then offset = newest end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. offset)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: 1 the token's inbox. ARGV: 1 conversation, 2 who wrote, 3 conversations kept at
# most, 4 ttl (s). Past the bound, a conversation not noted yet is not.
NOTE_DIRECT = """
local full = redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3])
if full and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: 1 name, 2 the node's names, 3 reserved names. ARGV: 1 node, 2 name, 3 reservation (ms),
# 4 name key prefix, 5 most reservations kept. (A former name: the name it became.)
RELEASE_NAME = (
    _NAME_RECORD
    + _FOLLOW
    + """
local key, name = follow(KEYS[1], ARGV[2], ARGV[4])
if redis.call('HEXISTS', key, 'f') == 1 then return 0 end
if redis.call('HINCRBY', key, ARGV[1], -1) <= 0 then
  redis.call('HDEL', key, ARGV[1])
  redis.call('SREM', KEYS[2], string.lower(name))
end
settle(key, ARGV[3], KEYS[3], ARGV[5])
return 1
"""
)

# KEYS: 1 nodes. ARGV: 1 node, 2 ttl (ms), 3 '1' to register a new node.
# Returns {1, now}, or {0, now} if the node had already expired: the cluster has declared it
# dead (its members may be announced as left by now), and it must start over.
HEARTBEAT = (
    _PRELUDE
    + """
if ARGV[3] ~= '1' and not alive(KEYS[1], ARGV[1]) then return {0, now} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return {1, now}
"""
)

# KEYS: 1 nodes. ARGV: 1 limit. The ids of up to ``limit`` expired nodes.
DEAD_NODES = (
    _PRELUDE
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[1]))
"""
)

# KEYS: 1 nodes, 2 the node's members, 3 the node's names, 4 reserved names, 5 every node's
# address counts, 6 the node's.
# ARGV: 1 node, 2 name key prefix, 3 reservation (ms), 4 most reservations kept.
# Once a dead node's members are all announced: let go of its names (a token's name stays
# reserved for the reservation window) and forget it. Returns 1 when done, 0 if it is alive
# or still has members to announce.
FORGET_NODE = (
    _PRELUDE
    + _NAME_RECORD
    + """
if alive(KEYS[1], ARGV[1]) or redis.call('SCARD', KEYS[2]) > 0 then return 0 end
for _, name in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local key = ARGV[2] .. string.lower(name)  -- as keys.name: whatever the case
  if redis.call('HDEL', key, ARGV[1]) > 0 then settle(key, ARGV[3], KEYS[4], ARGV[4]) end
end
redis.call('DEL', KEYS[3])
local counts = redis.call('HGETALL', KEYS[6])
for i = 1, #counts, 2 do
  if redis.call('HINCRBY', KEYS[5], counts[i], -tonumber(counts[i + 1])) <= 0 then
    redis.call('HDEL', KEYS[5], counts[i])
  end
end
redis.call('DEL', KEYS[6])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""
)

# Rooms and their members on live nodes; presence entries of dead nodes are skipped here and
# removed (with their leave announced) by a reaper.
_ROOM_COUNTS = """
local function room_count(room)
  local counts = redis.call('HGETALL', ARGV[1] .. room .. ':nodes')
  local n = 0
  for i = 1, #counts, 2 do
    if alive(KEYS[2], counts[i]) then n = n + tonumber(counts[i + 1]) end
  end
  return n
end
"""

# KEYS: 1 rooms, 2 nodes. ARGV: 1 room key prefix, 2 the page starts after this room ('' from
# the first), 3 at most this many rooms. Returns {room, count, room, count, ...}.
ROOMS = (
    _PRELUDE
    + _ROOM_COUNTS
    + """
local out = {}
local start = ARGV[2] == '' and '-' or '(' .. ARGV[2]
local page = redis.call('ZRANGE', KEYS[1], start, '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[3]))
for _, room in ipairs(page) do
  local n = room_count(room)
  if n > 0 then
    out[#out + 1] = room
    out[#out + 1] = n
  end
end
return out
"""
)

# KEYS: 1 presence, 2 nodes. Returns {name, join serial, ...} of members on live nodes.
MEMBERS = (
    _PRELUDE
    + """
local out = {}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local node, serial = string.match(entries[i + 1], '^(%S+) (%d+)$')
  if node and alive(KEYS[2], node) then
    out[#out + 1] = entries[i]
    out[#out + 1] = serial
  end
end
return out
"""
)

# KEYS: 1 rooms, 2 nodes. ARGV: 1 node key prefix.
# Returns {live nodes, rooms with members, members (connections in rooms)}, in time that
# grows with the nodes, not the rooms (a dead node's rooms count until it is reaped).
CLUSTER = (
    _PRELUDE
    + """
local nodes = redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf')
local connections = 0
for _, node in ipairs(nodes) do
  connections = connections + redis.call('SCARD', ARGV[1] .. node .. ':members')
end
return {#nodes, redis.call('ZCARD', KEYS[1]), connections}
"""
)


# KEYS: 1 every node's address counts, 2 this node's. ARGV: 1 address, 2 most connections.
# Returns 1 once counted, 0 if the address holds that many already.
COUNT_ADDRESS = """
if tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 1
"""

# KEYS, ARGV[1]: as COUNT_ADDRESS. Only what this node counted (a node that came back after an
# outage is a new one: the old one's counts go with it, FORGET_NODE).
UNCOUNT_ADDRESS = """
if tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') <= 0 then return 0 end
if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""

# KEYS: 1 rules. ARGV: 1 field, 2 the rule's JSON, 3 most rules kept, 4 governance channel.
# Returns 1 once kept and told, 0 for a new rule past the bound.
KEEP_RULE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
    and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return 1
"""

# KEYS: 1 rules. ARGV: 1 field, 2 what is told ("dropped"), 3 governance channel.
DROP_RULE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Script:
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


SCRIPTS = {
    name: Script(source)
    for name, source in {
        "room_event": ROOM_EVENT,
        "claim_name": CLAIM_NAME,
        "keep_read": KEEP_READ,
        "note_direct": NOTE_DIRECT,
        "set_away": SET_AWAY,
        "away": AWAY,
        "resume_name": RESUME_NAME,
        "holder": HOLDER,
        "rename_name": RENAME_NAME,
        "release_name": RELEASE_NAME,
        "heartbeat": HEARTBEAT,
        "dead_nodes": DEAD_NODES,
        "forget_node": FORGET_NODE,
        "rooms": ROOMS,
        "members": MEMBERS,
        "cluster": CLUSTER,
        "keep_rule": KEEP_RULE,
        "count_address": COUNT_ADDRESS,
        "uncount_address": UNCOUNT_ADDRESS,
        "drop_rule": DROP_RULE,
    }.items()
}
