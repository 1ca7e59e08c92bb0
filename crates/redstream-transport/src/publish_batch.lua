#!lua
-- publish_batch: XADDs of encoded events, all or nothing (see publisher.rs).
-- KEYS: the batch's streams, each once.
-- ARGV: the events' envelopes, in order; then each stream's approximate MAXLEN, 0 for none;
-- then, only when there are two streams or more, one string of each event's stream position
-- in KEYS, one byte per event (two, high byte first, past 255 streams). Last, because the
-- client learns the streams as it encodes.
-- Every stream is checked before the first write: the user may XADD to it (with its MAXLEN;
-- ACL rules look at keys, not values, so a placeholder stands for the envelope) and run TYPE
-- on it, and it holds a stream or nothing. Declared with no flags, so Redis refuses the script
-- as a whole when it is out of memory or a read-only replica. Answers the entry ids, in order,
-- as one string separated by spaces: one reply instead of one per event.
local streams = #KEYS
local events = #ARGV - streams
local positions
if streams > 1 then
  events = events - 1
  positions = ARGV[#ARGV]
end
local wide = streams > 255
if positions and #positions ~= events * (wide and 2 or 1) then
  return redis.error_reply('ERR publish_batch: ' .. #positions .. ' bytes of stream positions for ' ..
    events .. ' events (nothing of the batch was written)')
end
local byte = string.byte
-- The position in KEYS of event i's stream.
local function stream_of(i)
  if not positions then
    return 1
  elseif wide then
    local high, low = byte(positions, 2 * i - 1, 2 * i)
    return high * 256 + low
  end
  return byte(positions, i)
end
local fresh = {}
local maxlens = {}
for k = 1, streams do
  local key, maxlen = KEYS[k], ARGV[events + k]
  local allowed
  if maxlen == '0' then
    allowed = redis.acl_check_cmd('XADD', key, '*', 'event', '-')
  else
    allowed = redis.acl_check_cmd('XADD', key, 'MAXLEN', '~', maxlen, '*', 'event', '-')
    maxlens[k] = maxlen
  end
  if not allowed then
    return redis.error_reply('NOPERM this user has no permissions to run the XADD command on ' ..
      key .. ' (nothing of the batch was written)')
  end
  if not redis.acl_check_cmd('TYPE', key) then
    return redis.error_reply('NOPERM this user has no permissions to run the TYPE command on ' ..
      key .. ', which the batch runs to check key types first (nothing was written)')
  end
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= 'stream' then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. kind ..
      ', not a stream (nothing of the batch was written)')
  end
  fresh[k] = kind == 'none'
end
-- An XADD can still fail after the checks: on a stream whose ids are used up (its last id at
-- the top, 18446744073709551615-18446744073709551615, as only a hand-written id can put it).
-- The entries this call wrote before it are then deleted again (XDEL, or DEL of a stream the
-- batch created) and the error answered: no reader saw them, the script being atomic. Entries
-- an XADD's MAXLEN trimmed stay trimmed (they were past the stream's retention).
local ids = {}
local function undo(failed, k, reply)
  local err = type(reply) == 'table' and reply['err'] or 'ERR unexpected XADD reply'
  local kept = {}
  for j = 1, failed - 1 do
    local s = stream_of(j)
    local deleted
    if fresh[s] then
      deleted = redis.pcall('DEL', KEYS[s])
    end
    if deleted == nil or (type(deleted) == 'table' and deleted['err']) then
      deleted = redis.pcall('XDEL', KEYS[s], ids[j])
    end
    if type(deleted) == 'table' and deleted['err'] then
      kept[#kept + 1] = KEYS[s] .. ' ' .. ids[j]
    end
  end
  if #kept > 0 then
    return redis.error_reply(err .. ' (XADD to ' .. KEYS[k] .. '; the batch\'s entries ' ..
      'written before it could not be deleted again: ' .. table.concat(kept, ', ') .. ')')
  end
  return redis.error_reply(err .. ' (XADD to ' .. KEYS[k] .. '; nothing of the batch was kept)')
end
local pcall = redis.pcall
-- One stream (most batches): a loop per shape, with nothing but the XADD per event.
if not positions then
  local key, maxlen = KEYS[1], maxlens[1]
  if maxlen then
    for i = 1, events do
      local id = pcall('XADD', key, 'MAXLEN', '~', maxlen, '*', 'event', ARGV[i])
      if type(id) ~= 'string' then return undo(i, 1, id) end
      ids[i] = id
    end
  else
    for i = 1, events do
      local id = pcall('XADD', key, '*', 'event', ARGV[i])
      if type(id) ~= 'string' then return undo(i, 1, id) end
      ids[i] = id
    end
  end
  return table.concat(ids, ' ')
end
for i = 1, events do
  local k = stream_of(i)
  local maxlen = maxlens[k]
  local id
  if maxlen then
    id = pcall('XADD', KEYS[k], 'MAXLEN', '~', maxlen, '*', 'event', ARGV[i])
  else
    id = pcall('XADD', KEYS[k], '*', 'event', ARGV[i])
  end
  if type(id) ~= 'string' then return undo(i, k, id) end
  ids[i] = id
end
return table.concat(ids, ' ')
