"""The Lua scripts: every change to shared state is one atomic step in Redis.

Times are Redis's clock (``TIME``, in ms), so that nodes with skewed clocks agree on expiry.
A node is alive while its score in ``chat:nodes`` is at least Redis's now.

The room events script is the one place where a room's sequence advances, in the same step
as the publish, so that every subscriber sees one numbered order (Centrifugo's model of a
per-channel offset + epoch). History (a stream per room, ``XADD`` beside the ``PUBLISH``) and
de-duplication by nonce are in this same script; one call numbers and publishes a batch of
events (every event a node has for the room when its command link writes).
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

# A room's per-token nonce lists are named in its ``nonce-tokens`` sorted set: deleted with it
# (left behind, each outlived its room by the history ttl: a week of keys per sender).
_DROP_NONCE_LISTS = """
local function drop_nonce_lists(tokens_key)
  local lists = redis.call('ZRANGE', tokens_key, 0, -1)
  for i = 1, #lists, 500 do redis.call('DEL', unpack(lists, i, math.min(i + 499, #lists))) end
end
"""

# Every event a node has for one room in one turn of its loop, in one call (a publish costs
# Redis a fraction of a script call, not one each), numbered in the order given.
# KEYS: 1 sequence, 2 presence, 3 room's node counts, 4 rooms, 5 history (a stream),
#       6 nonces (hash: key -> "offset time"), 7 nonces per token (a sorted set: the token's
#       list's key, scored by its length),
#       8 rooms without members, by when they emptied (a sorted set); then per event i
#       (from 0): 9 + 2i the member's node's members, 10 + 2i the sender's token's nonces in
#       order (a list; for a message with a nonce, else any of the room's keys: unused)
# ARGV: 1 channel, 2 room, 3 origin (the publishing node: a reaper announces for another),
#       4 the publisher's epoch token: a room whose sequence starts now gets the epoch
#       "{token}{Redis's clock in ms, hex}", different from any epoch before it,
#       5 ttl of the room's keys (s), from its last event, 6 history size (0 = no history),
#       7 nonces kept per token, 8 the node key prefix, 9 nonces kept per room,
#       10 Redis's run_id as the node read it when it connected,
#       11 rooms without members whose history is kept at most, 12 the room key prefix,
#       13 deadline (ms, Redis clock; 0 = none): a call that arrives after it is refused, so a
#       node that gave up waiting can tell its members "not sent" and be right (the first
#       event's: the others were issued in the same loop iteration);
#       14 '1' in a Redis Cluster (the room's slot only: see below), else '0';
#       15 bytes the room's history keeps at most (each message's text and 100 more);
#       then 6 per event (from 15 + 6i + 1): kind (m/j/l/t/a/b/n/k), the member's node, name,
#       text, nonce ('-' for none: the sender's de-duplication key, codec-encoded),
#       ref (the serial of the member's own join; '-': any join by the member's node).
# Returns {epoch, now, then three per event}: {serial, offset, 0} once published; {0, 0, 0}
# if the member is not (for a message or leave with a ref: not with that join) present:
# nothing was published; {-1, 0, 0} if past the deadline; {-2, offset, time} for a message
# whose nonce the room already published (the original's; nothing published now).
#
# In a Redis Cluster the script touches the room's slot only: KEYS 4, 8 and the members keys
# are any of the room's keys (unused), the nodes' member sets are not kept (a node's rooms
# are: keys.node_rooms), and the room index and idle rooms are the caller's next step (the
# directory's slot: ROOM_STATE), told by more values at the end of the reply: 1 if the call
# made or kept the room occupied by a join, 2 if it emptied it (3: and nothing was said in it),
# else 0; the last serial; then node, change for each node whose members here changed (the
# directory counts them). The events go out with SPUBLISH (the room's sharded channel).
#
# One PUBLISH carries the call's events (codec.py, v2). History is written here, beside it: a
# message is in the stream (entry id "{offset}-0") if and only if it was delivered live. A
# join of a name already present (the same token's newer connection) first publishes the old
# connection's leave ("replaced").
#
# The sequence hash (``keys.room_sequence``) is read once and written once per call; its
# ``x`` is when the room's keys' expiry is next due: they are set to live ttl + ttl/8 from
# then, so that a room's keys outlive its last event by ttl to ttl + ttl/8 with one round of
# EXPIREs per ttl/8, not per event. A key this call creates gets its expiry at once: the
# sequence (a new epoch), the stream (the sequence's first message, or ``h``, the history
# size of the last round, differs), the nonces (their list's first).
#
# A room's epoch belongs to the Redis process (its run_id) that numbered it: after Redis
# restarted, whatever it had kept may be older than what was said (a snapshot taken before the
# last messages), so the room's numbering starts over under a new epoch rather than giving
# the same offsets to new messages.
ROOM_EVENTS = (
    _DROP_NONCE_LISTS
    + r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = (#ARGV - 15) / 6
local split = ARGV[14] == '1'
if ARGV[13] ~= '0' and now > tonumber(ARGV[13]) then
  local late = {'', now}
  for i = 0, count - 1 do late[3 + 3 * i], late[4 + 3 * i], late[5 + 3 * i] = -1, 0, 0 end
  return late
end
local room, node_prefix = ARGV[2], ARGV[8]
local ttl = tonumber(ARGV[5])
local slack = math.ceil(ttl / 8)
local seq = redis.call('HMGET', KEYS[1], 'e', 'r', 'o', 'n', 'x', 'h', 'c', 'k')
local epoch = seq[1]
if epoch and seq[2] ~= ARGV[10] then epoch = false end
local offset, serial = tonumber(seq[3] or '0'), tonumber(seq[4] or '0')
-- The bytes of every message the sequence stored, and of those before the oldest kept (as
-- last seen): the history weighs the difference.
local weighed, kept_from = tonumber(seq[7] or '0'), tonumber(seq[8] or '0')
-- Due, or the history size not the one the keys' expiry was last set with (a stream that
-- comes into being in mid-sequence gets its expiry at once).
local refresh = not epoch or now >= tonumber(seq[5] or '0') or seq[6] ~= ARGV[6]
local started, changed, forget, occupancy = false, false, false, false
-- In a cluster, each node's members here changed by (for the directory's counts).
local deltas, moved = {}, {}
local function counted(owner, d)
  if split then
    if deltas[owner] == nil then moved[#moved + 1], deltas[owner] = owner, 0 end
    deltas[owner] = deltas[owner] + d
  end
  return redis.call('HINCRBY', KEYS[3], owner, d)
end
local function start()
  if epoch then return end
  -- A sequence starting over: what is left of an older one is nobody's history.
  drop_nonce_lists(KEYS[7])
  redis.call('DEL', KEYS[1], KEYS[5], KEYS[6], KEYS[7])
  epoch = ARGV[4] .. string.format('%x', now)
  offset, serial, started, refresh = 0, 0, true, true
  weighed, kept_from = 0, 0
end
-- Presence entries ("{node} {join serial}") read once per call, kept as they change.
local present_cache, owners, joins = {}, {}, {}
local function presence(name)
  local p = present_cache[name]
  if p == nil then
    p = redis.call('HGET', KEYS[2], name)
    present_cache[name] = p
    if p then owners[name], joins[name] = string.match(p, '^(%S+) (%S+)$') end
  end
  return p, owners[name], joins[name]
end
local function set_presence(name, value)
  if value then
    redis.call('HSET', KEYS[2], name, value)
    owners[name], joins[name] = string.match(value, '^(%S+) (%S+)$')
  else
    redis.call('HDEL', KEYS[2], name)
    owners[name], joins[name] = nil, nil
  end
  present_cache[name] = value
end
local out = {false, now}
-- What is told (codec.py, v2): numbers, words and texts apart.
local numbers, words, texts = {}, {}, {}
local function publish(k, who, nonce, text)
  local n = #numbers
  numbers[n + 1], numbers[n + 2], numbers[n + 3] = serial, offset, #text
  words[n + 1], words[n + 2], words[n + 3] = k, who, nonce
  texts[#texts + 1] = text
end
local size, stored = tonumber(ARGV[6]), 0
local room_nonces, token_nonces, token_keys  -- made with the call's first nonce
for i = 0, count - 1 do
  local a = 15 + 6 * i
  local kind, node, name, text = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local nonce, ref = ARGV[a + 5], ARGV[a + 6]
  local members_key = KEYS[9 + 2 * i]
  local n = #out
  local present, owner, joined = presence(name)
  if kind ~= 'j' and (owner ~= node or (ref ~= '-' and joined ~= ref)) then
    if (kind == 'l' or kind == 'k') and owner ~= node and not split then
      redis.call('SREM', members_key, room .. ' ' .. name)
    end
    out[n + 1], out[n + 2], out[n + 3] = 0, 0, 0
  else
    start()
    local seen = kind == 'm' and nonce ~= '-' and redis.call('HGET', KEYS[6], nonce)
    if seen then
      local o, w = string.match(seen, '^(%d+) (%d+)$')
      out[n + 1], out[n + 2], out[n + 3] = -2, tonumber(o), tonumber(w)
    else
      changed = true
      local entry = kind ~= 'm' and room .. ' ' .. name  -- a member entry: not for messages
      if kind == 'm' then offset = offset + 1 end
      if kind == 'j' and present then
        -- The old connection leaves first, as every member sees it.
        set_presence(name, false)
        if owner ~= node and not split then
          redis.call('SREM', node_prefix .. owner .. ':members', entry)
        end
        if counted(owner, -1) <= 0 then redis.call('HDEL', KEYS[3], owner) end
        serial = serial + 1
        publish('l', name, '-', 'replaced')
      end
      serial = serial + 1
      if kind == 'm' then
        if size > 0 then
          -- The sequence's first message makes its stream: it gets its expiry now.
          if offset == 1 then refresh = true end
          stored = stored + 1
          -- 'c': the sequence's bytes before this message (the byte bound below cuts by it).
          redis.call('XADD', KEYS[5], offset .. '-0', 'n', name, 't', text, 'm', now, 'c', weighed)
          weighed = weighed + #text + 100
        end
        if nonce ~= '-' then
          if not room_nonces then room_nonces, token_nonces, token_keys = {}, {}, {} end
          redis.call('HSET', KEYS[6], nonce, offset .. ' ' .. now)
          room_nonces[#room_nonces + 1] = nonce
          local token_key = KEYS[10 + 2 * i]
          local mine = token_nonces[token_key]
          if not mine then
            mine = {}
            token_nonces[token_key] = mine
            token_keys[#token_keys + 1] = token_key
          end
          mine[#mine + 1] = nonce
        end
      elseif kind == 't' or kind == 'a' or kind == 'b' then
        -- Typing, away, back: in the room's order, never stored.
      elseif kind == 'n' then
        -- A new name (the text) for the same entry: the join's serial stays its ref. A stale
        -- entry of the new name (a dead node's, not reaped yet) is taken over.
        local stale = presence(text)
        if stale then
          local stale_owner = string.match(stale, '^(%S+)')
          if not split then
            redis.call('SREM', node_prefix .. stale_owner .. ':members', room .. ' ' .. text)
          end
          if counted(stale_owner, -1) <= 0 then redis.call('HDEL', KEYS[3], stale_owner) end
        end
        set_presence(name, false)
        set_presence(text, present)
        if not split then
          redis.call('SREM', members_key, entry)
          redis.call('SADD', members_key, room .. ' ' .. text)
        end
      elseif kind == 'j' then
        occupancy = true
        set_presence(name, node .. ' ' .. serial)
        counted(node, 1)
        if not split then
          redis.call('ZREM', KEYS[8], room)
          redis.call('SADD', members_key, entry)
          -- Conversations ("@...") are nobody's to list.
          if string.sub(room, 1, 1) ~= '@' then redis.call('ZADD', KEYS[4], 0, room) end
        end
      else
        set_presence(name, false)
        if not split then redis.call('SREM', members_key, entry) end
        if counted(node, -1) <= 0 then redis.call('HDEL', KEYS[3], node) end
        if split then
          occupancy = true
          if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('DEL', KEYS[3]) end
        elseif redis.call('EXISTS', KEYS[2]) == 0 then
          redis.call('DEL', KEYS[3])
          redis.call('ZREM', KEYS[4], room)
          -- Idle now: past the bound, the room idle longest is forgotten (one here, one more
          -- when the set grew past it: never a long walk in one event).
          -- A room where nothing was said goes first (score 0): it has no history to lose.
          redis.call('ZADD', KEYS[8], offset > 0 and now or 0, room)
          for _ = 1, 2 do
            if redis.call('ZCARD', KEYS[8]) <= tonumber(ARGV[11]) then break end
            local oldest = redis.call('ZPOPMIN', KEYS[8])[1]
            local p = ARGV[12] .. oldest
            if oldest == room then
              forget = true  -- at the end: this call still numbers and publishes
            elseif redis.call('EXISTS', p .. ':presence') == 0 then
              drop_nonce_lists(p .. ':nonce-tokens')
              redis.call('DEL', p .. ':seq', p .. ':history', p .. ':nonces', p .. ':nonce-tokens')
            end
          end
        end
      end
      -- A message's nonce, or a join's mark (its connection's: events.JOIN_MARK).
      publish(kind, name, (kind == 'm' or kind == 'j') and nonce or '-', text)
      out[n + 1], out[n + 2], out[n + 3] = serial, offset, 0
    end
  end
end
local function told(reply)
  -- In a cluster: whether the room is occupied now, for the directory (see above).
  if split then
    local state = 0
    if occupancy then
      state = redis.call('EXISTS', KEYS[2]) == 1 and 1 or (offset > 0 and 2 or 3)
    end
    reply[#reply + 1], reply[#reply + 2] = state, serial
    for _, n in ipairs(moved) do
      if deltas[n] ~= 0 then reply[#reply + 1], reply[#reply + 2] = n, deltas[n] end
    end
  end
  return reply
end
if not changed then
  out[1] = epoch or ''
  return told(out)
end
out[1] = epoch
if stored > 0 and offset % 64 < stored then
  -- Trimmed (whole nodes of the stream, "~") each time the offsets pass a multiple of 64:
  -- about size messages kept, never fewer, for one XTRIM per 64 rather than per message.
  redis.call('XTRIM', KEYS[5], 'MAXLEN', '~', size)
end
if stored > 0 and weighed - kept_from > tonumber(ARGV[15]) then
  -- Over its bytes: the oldest messages go until the rest fit (never the newest). Read a few
  -- at a time from the oldest (a full room drops one or two a message; a lowered bound, up
  -- to 1,024 a call, the rest at the next).
  local floor, newest, dropped, from = weighed - tonumber(ARGV[15]), offset, 0, '-'
  for page_size in string.gmatch('4 16 64 64 64 64 64 64 64 64 64 64 64 64 64 64 64', '%d+') do
    local page = redis.call('XRANGE', KEYS[5], from, '+', 'COUNT', tonumber(page_size))
    local cut = false
    for _, entry in ipairs(page) do
      local at, flat, c = tonumber(string.match(entry[1], '^(%d+)')), entry[2], -1
      for f = 1, #flat, 2 do
        if flat[f] == 'c' then c = tonumber(flat[f + 1]) end
      end
      -- An entry without 'c' was written before bytes were counted: older than any that was.
      if c >= floor or at >= newest then
        kept_from, cut = c, true
        break
      end
      dropped = dropped + 1
      from = (at + 1) .. '-0'
    end
    if cut or #page < tonumber(page_size) then break end
  end
  if dropped > 0 then
    redis.call('XTRIM', KEYS[5], 'MAXLEN', redis.call('XLEN', KEYS[5]) - dropped)
  end
end
if room_nonces then
  -- The oldest n of a list of nonces, and their entries (LRANGE and LTRIM: LPOP's count is
  -- Redis 6.2's).
  local function forget(list, n)
    redis.call('HDEL', KEYS[6], unpack(redis.call('LRANGE', list, 0, n - 1)))
    redis.call('LTRIM', list, n, -1)
  end
  -- Each token keeps its own last nonces (others' sends cannot age them out); KEYS[7] counts
  -- them per token. The room keeps ARGV[9] in all: past it, the token holding the most loses
  -- its oldest first (a flood of many tokens forgets its own, not a quiet member's).
  if redis.call('EXISTS', KEYS[7]) == 0 then refresh = true end  -- the room's first: new keys
  local per_token = tonumber(ARGV[7])
  for _, token_key in ipairs(token_keys) do
    local mine = token_nonces[token_key]
    local kept = redis.call('RPUSH', token_key, unpack(mine))
    if kept > per_token then
      forget(token_key, kept - per_token)
      kept = per_token
    end
    redis.call('EXPIRE', token_key, ttl + slack)
    redis.call('ZADD', KEYS[7], kept, token_key)
  end
  local over = redis.call('HLEN', KEYS[6]) - tonumber(ARGV[9])
  while over > 0 do
    local top = redis.call('ZREVRANGE', KEYS[7], 0, 1, 'WITHSCORES')
    if not top[1] then break end
    local count = tonumber(top[2])
    -- Down to the next heaviest's count, not below: the heaviest take turns.
    local n = math.min(over, count, math.max(1, count - tonumber(top[4] or '0')))
    forget(top[1], n)
    if n >= count then
      redis.call('ZREM', KEYS[7], top[1])
    else
      redis.call('ZINCRBY', KEYS[7], -n, top[1])
    end
    over = over - n
  end
end
if forget and redis.call('EXISTS', KEYS[2]) == 0 then
  -- This room, empty now, was the idle one past the bound: its sequence goes (the next
  -- event starts another), unless someone joined it in this same call.
  drop_nonce_lists(KEYS[7])
  redis.call('DEL', KEYS[1], KEYS[5], KEYS[6], KEYS[7])
else
  local fields = {'o', offset, 'n', serial, 'c', weighed, 'k', kept_from}
  if started then
    fields[#fields + 1], fields[#fields + 2] = 'e', epoch
    fields[#fields + 1], fields[#fields + 2] = 'r', ARGV[10]
  end
  if refresh then
    fields[#fields + 1], fields[#fields + 2] = 'x', now + slack * 1000
    fields[#fields + 1], fields[#fields + 2] = 'h', ARGV[6]
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  if refresh then
    -- The room's keys live at least ttl seconds after its last event.
    for k = 5, 7 do redis.call('EXPIRE', KEYS[k], ttl + slack) end
    redis.call('EXPIRE', KEYS[1], ttl + slack)
  end
end
redis.call(split and 'SPUBLISH' or 'PUBLISH', ARGV[1],
  'v2 ' .. epoch .. ' ' .. now .. ' ' .. ARGV[3] .. '\n'
  .. table.concat(numbers, ' ') .. '\n' .. table.concat(words, ' ') .. '\n'
  .. table.concat(texts))
return told(out)
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

# The tokens' keys of read positions and inboxes (``keys.token_keys``, a sorted set by when
# each was last written, in microseconds, in their slot): past the bound, the least recently
# written go, two at most a call (each key expired with the history ttl, but a token a
# connection made a key of its own: 860,000 a day from one address).
_INDEXED = """
local function indexed(index, key, bound)
  local t = redis.call('TIME')
  redis.call('ZADD', index, tonumber(t[1]) * 1000000 + tonumber(t[2]), key)  -- us: in order
  local over = redis.call('ZCARD', index) - tonumber(bound)
  if over > 0 then
    local gone = redis.call('ZPOPMIN', index, math.min(over, 2))
    for i = 1, #gone, 2 do redis.call('DEL', gone[i]) end
  end
end
"""

# KEYS: 1 the token's read positions, 2 the tokens' keys, 3 the room's sequence (not in a
# cluster: another slot; then ARGV 7 and 8 are its epoch and newest offset, as the node read
# them just before). ARGV: 1 room, 2 epoch, 3 offset read, 4 ttl (s), 5 tokens' keys kept at
# most, 6 rooms a token's positions are kept for at most. Kept as "{epoch} {offset}", never
# past the room's newest message; not at all if the epoch is no longer the room's, nor a new
# room's past the bound.
KEEP_READ = (
    _INDEXED
    + """
local epoch, newest
if #KEYS >= 3 then
  epoch, newest = redis.call('HGET', KEYS[3], 'e'), redis.call('HGET', KEYS[3], 'o')
else
  epoch, newest = ARGV[7], ARGV[8]
end
if epoch ~= ARGV[2] then return 0 end
newest = newest or '0'
local offset = ARGV[3]
if #offset > #newest or (#offset == #newest and offset > newest) then offset = newest end
local full = redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[6])
if full and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. offset)
redis.call('EXPIRE', KEYS[1], ARGV[4])
indexed(KEYS[2], KEYS[1], ARGV[5])
return 1
"""
)

# KEYS: 1 the token's inbox, 2 the tokens' keys. ARGV: 1 conversation, 2 who wrote,
# 3 conversations kept at most, 4 ttl (s), 5 tokens' keys kept at most. Past the bound, a
# conversation not noted yet is not.
NOTE_DIRECT = (
    _INDEXED
    + """
local full = redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3])
if full and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
indexed(KEYS[2], KEYS[1], ARGV[5])
return 1
"""
)

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
# address counts, 6 the node's; in a cluster, 2 is the node's rooms (announced by the
# caller: not checked here) and 7 the nodes' member counts.
# ARGV: 1 node, 2 name key prefix, 3 reservation (ms), 4 most reservations kept.
# Once a dead node's members are all announced: let go of its names (a token's name stays
# reserved for the reservation window) and forget it. Returns 1 when done, 0 if it is alive
# or still has members to announce.
FORGET_NODE = (
    _PRELUDE
    + _NAME_RECORD
    + """
if alive(KEYS[1], ARGV[1]) then return 0 end
if #KEYS >= 7 then
  redis.call('DEL', KEYS[2])
  redis.call('HDEL', KEYS[7], ARGV[1])
elseif redis.call('SCARD', KEYS[2]) > 0 then
  return 0
end
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

# KEYS: 1 rooms, 2 nodes, 3 (in a cluster) the nodes' member counts. ARGV: 1 node key prefix.
# Returns {live nodes, rooms with members, members (connections in rooms)}, in time that
# grows with the nodes, not the rooms (a dead node's rooms count until it is reaped).
CLUSTER = (
    _PRELUDE
    + """
local nodes = redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf')
local connections = 0
for _, node in ipairs(nodes) do
  if #KEYS >= 3 then
    connections = connections + tonumber(redis.call('HGET', KEYS[3], node) or '0')
  else
    connections = connections + redis.call('SCARD', ARGV[1] .. node .. ':members')
  end
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

# KEYS: 1 rules. ARGV: 1 field, 2 the rule's JSON, 3 most rules kept, 4 governance channel,
# 5 how it is told (PUBLISH; SPUBLISH in a cluster, the channel in the rules' slot).
# Returns 1 once kept and told, 0 for a new rule past the bound.
KEEP_RULE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
    and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call(ARGV[5], ARGV[4], ARGV[2])
return 1
"""

# KEYS: 1 rules. ARGV: 1 field, 2 what is told ("dropped"), 3 governance channel, 4 as
# KEEP_RULE's 5.
DROP_RULE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call(ARGV[4], ARGV[3], ARGV[2])
return 1
"""

# In a cluster, the directory's side of a room event call (ROOM_EVENTS, "occupied"), in the
# directory's slot: calls of different rooms' slots reach it in any order, so each carries the
# call's time and last serial, and only a newer one than the last applied counts.
# KEYS: 1 rooms, 2 rooms without members, 3 the rooms' states, 4 the nodes' member counts.
# ARGV: 1 room, 2 the call's time (ms, Redis clock), 3 its last serial, 4 '1' occupied, '2'
# empty, '3' empty and nothing was said in it, '0' neither, 5 rooms without members whose
# history is kept at most; then node, change pairs (counts add up in any order: applied
# whatever the time).
# Returns the rooms to forget now (FORGET_ROOM, each in its own slot): past the bound, the
# room idle longest (one, and one more when the set grew past it); a room where nothing was
# said first (score 0): it has no history to lose.
ROOM_STATE = """
for i = 6, #ARGV, 2 do
  -- Exactly 0 only: a leave's change may come before its join's (another node's call).
  if redis.call('HINCRBY', KEYS[4], ARGV[i], ARGV[i + 1]) == 0 then
    redis.call('HDEL', KEYS[4], ARGV[i])
  end
end
if ARGV[4] == '0' then return {} end
local room, t, serial = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local last = redis.call('HGET', KEYS[3], room)
if last then
  local lt, ls = string.match(last, '^(%d+) (%d+)$')
  lt, ls = tonumber(lt), tonumber(ls)
  if lt > t or (lt == t and ls >= serial) then return {} end
end
redis.call('HSET', KEYS[3], room, ARGV[2] .. ' ' .. ARGV[3])
if ARGV[4] == '1' then
  redis.call('ZREM', KEYS[2], room)
  -- Conversations ("@...") are nobody's to list.
  if string.sub(room, 1, 1) ~= '@' then redis.call('ZADD', KEYS[1], 0, room) end
  return {}
end
redis.call('ZREM', KEYS[1], room)
redis.call('ZADD', KEYS[2], ARGV[4] == '3' and 0 or t, room)
local forget = {}
for _ = 1, 2 do
  if redis.call('ZCARD', KEYS[2]) <= tonumber(ARGV[5]) then break end
  local oldest = redis.call('ZPOPMIN', KEYS[2])[1]
  redis.call('HDEL', KEYS[3], oldest)
  forget[#forget + 1] = oldest
end
return forget
"""

# In a cluster: forget an idle room (ROOM_STATE said), in its own slot, unless someone joined
# it meanwhile. KEYS: 1 sequence, 2 history, 3 nonces, 4 nonces per token, 5 presence.
FORGET_ROOM = (
    _DROP_NONCE_LISTS
    + """
if redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
drop_nonce_lists(KEYS[4])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
"""
)


@dataclass(frozen=True)
class Script:
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


SCRIPTS = {
    name: Script(source)
    for name, source in {
        "room_events": ROOM_EVENTS,
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
        "room_state": ROOM_STATE,
        "forget_room": FORGET_ROOM,
    }.items()
}
