-- One stream's summary without the contents of its entries: the dashboard's bounded
-- replacement for XINFO STREAM, whose reply carries the first and last entries whole (see
-- summary.rs next to this file). Entries are read here only for their ids.
--
-- KEYS[1]  the stream
--
-- Reply: {type} when the key is not a stream (`none` when it does not exist); otherwise
-- {'stream', length, first id, last id, server seconds, server microseconds, groups,
-- entries added}, where
-- each group is {name, consumers, pending, last delivered id, lag, oldest pending id, its idle
-- milliseconds, oldest undelivered id}. Where there is none, a nil (Lua false): no entries, no
-- lag (before Redis 7, or unknown after deletions), nothing pending or undelivered. `entries
-- added` is XINFO STREAM's `entries-added`, the count of every entry ever added (trimming and
-- XDEL do not lower it); nil before Redis 7, and for a user who may not run XINFO STREAM.
--
-- On Redis 7 and later, when the user may run it, XINFO STREAM gives the length, both end ids
-- and `entries-added` in one call that reads each end entry once (into the script's memory,
-- never into the reply); otherwise XLEN, XRANGE and XREVRANGE give the length and the ids.
--
-- Reading an entry for its id copies it into the script's memory, which takes time in
-- proportion to its size, so no entry is read twice: the last entry of a stream of one is its
-- first, and a group that has been delivered nothing past the first entry has it as its oldest
-- undelivered one.
local stream = KEYS[1]
-- A command the user may not run is named at once (Redis 7 can tell; 6.2 fails at the call).
if redis.acl_check_cmd then
  for _, check in ipairs({{'TYPE', stream}, {'XLEN', stream}, {'XRANGE', stream, '-', '+'},
      {'XREVRANGE', stream, '+', '-'}, {'XINFO', 'GROUPS', stream}, {'XPENDING', stream, 'g'},
      {'TIME'}}) do
    if not redis.acl_check_cmd(unpack(check)) then
      local command = string.lower(check[1])
      if check[1] == 'XINFO' then
        command = 'xinfo|groups'
      end
      return redis.error_reply('NOPERM this user has no permissions to run the \'' .. command ..
        '\' command, which the dashboard needs')
    end
  end
end
local kind = redis.call('TYPE', stream)['ok']
if kind ~= 'stream' then
  return {kind}
end
local LARGE = 1048576

-- The id of the only entry of an XRANGE reply, or false; frees a large entry at once.
local function only_id(reply)
  local entry = reply[1]
  if not entry then
    return false
  end
  local id, size = entry[1], 0
  for _, part in ipairs(entry[2]) do
    size = size + #part
  end
  if size > LARGE and collectgarbage then
    entry, reply = nil, nil
    collectgarbage()
  end
  return id
end

-- Whether id `a` comes before id `b`: compares their numbers as text (the shorter number is
-- the smaller; Redis writes them without leading zeros).
local function before(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if not (a_ms and b_ms) then
    return true
  end
  local function smaller(x, y)
    if #x ~= #y then
      return #x < #y
    end
    return x < y
  end
  if a_ms ~= b_ms then
    return smaller(a_ms, b_ms)
  end
  return smaller(a_seq, b_seq)
end

-- The size of an entry of a reply ({id, {field, value, ...}}), or 0 for none.
local function entry_size(entry)
  local size = 0
  if entry then
    for _, part in ipairs(entry[2]) do
      size = size + #part
    end
  end
  return size
end

local length, first, last
local entries_added = false
if redis.acl_check_cmd and redis.acl_check_cmd('XINFO', 'STREAM', stream) then
  local reply = redis.call('XINFO', 'STREAM', stream)
  local info = {}
  for i = 1, #reply - 1, 2 do
    info[reply[i]] = reply[i + 1]
  end
  length = info['length']
  entries_added = info['entries-added'] or false
  local first_entry, last_entry = info['first-entry'], info['last-entry']
  first = first_entry and first_entry[1] or false
  last = last_entry and last_entry[1] or false
  if entry_size(first_entry) + entry_size(last_entry) > LARGE and collectgarbage then
    reply, info, first_entry, last_entry = nil, nil, nil, nil
    collectgarbage()
  end
else
  length = redis.call('XLEN', stream)
  first = only_id(redis.call('XRANGE', stream, '-', '+', 'COUNT', 1))
  last = first
  if length > 1 then
    last = only_id(redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1))
  end
end
local groups = {}
for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local g = {}
  for i = 1, #info - 1, 2 do
    g[info[i]] = info[i + 1]
  end
  local name = g['name']
  local pending = tonumber(g['pending']) or 0
  local delivered = g['last-delivered-id'] or '0-0'
  local lag = g['lag']
  if lag == nil then
    lag = false
  end
  local pending_id, pending_idle = false, false
  if pending > 0 then
    local oldest = redis.call('XPENDING', stream, name, '-', '+', 1)[1]
    if oldest then
      pending_id, pending_idle = oldest[1], oldest[3]
    end
  end
  local undelivered = false
  if first and before(delivered, first) then
    undelivered = first
  elseif last and lag ~= 0 and before(delivered, last) then
    undelivered = only_id(redis.call('XRANGE', stream, '(' .. delivered, '+', 'COUNT', 1))
  end
  groups[#groups + 1] = {
    name, tonumber(g['consumers']) or 0, pending, delivered, lag, pending_id, pending_idle, undelivered,
  }
end
local time = redis.call('TIME')
return {'stream', length, first, last, time[1], time[2], groups, entries_added}
