#!lua
-- publish_batch: XADDs of encoded events, all or nothing (see publisher.rs).
-- KEYS: the batch's streams, each once.
-- ARGV[1..#KEYS]: each stream's approximate MAXLEN, 0 for none.
-- Then two per event, in order: the position of its stream in KEYS, its envelope.
-- Every stream is checked before the first write: the user may XADD to it (with its MAXLEN;
-- ACL rules look at keys, not values, so a placeholder stands for the envelope) and run TYPE
-- on it, and it holds a stream or nothing. Declared with no flags, so Redis refuses the script
-- as a whole when it is out of memory or a read-only replica. Answers the entry ids, in order,
-- as one string separated by spaces: one reply instead of one per event.
local streams = #KEYS
for k = 1, streams do
  local key, maxlen = KEYS[k], ARGV[k]
  local allowed
  if maxlen == '0' then
    allowed = redis.acl_check_cmd('XADD', key, '*', 'event', '-')
  else
    allowed = redis.acl_check_cmd('XADD', key, 'MAXLEN', '~', maxlen, '*', 'event', '-')
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
end
local ids = {}
for i = streams + 1, #ARGV, 2 do
  local k = tonumber(ARGV[i])
  local maxlen = ARGV[k]
  if maxlen == '0' then
    ids[#ids + 1] = redis.call('XADD', KEYS[k], '*', 'event', ARGV[i + 1])
  else
    ids[#ids + 1] = redis.call('XADD', KEYS[k], 'MAXLEN', '~', maxlen, '*', 'event', ARGV[i + 1])
  end
end
return table.concat(ids, ' ')
