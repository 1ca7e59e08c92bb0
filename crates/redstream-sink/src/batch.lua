#!lua
-- One batch of redstream-sink, all or nothing (see script.rs): every check comes before the
-- first write, so the server either refuses the batch whole or writes it whole.
--
-- KEYS[1]   the stream
-- KEYS[2]   the sink's progress key; absent with exactly_once off
-- ARGV[1]   the MAXLEN ~ bound, or '' for none
-- ARGV[2]   with durability, the replicas the sink's WAIT after the batch asks for, else ''
-- ARGV[3]   and its timeout in milliseconds
-- ARGV[4]   '1' when the sink expects the progress key to record ARGV[5] and ARGV[6], '0' when
--           it expects it to record nothing
-- ARGV[5]   the expected last_event_id
-- ARGV[6]   the expected position
-- ARGV[7]   this batch's last event id
-- ARGV[8]   this batch's position ('' for none)
-- ARGV[9..] the events, each as its wire-format JSON envelope
--
-- Replies {'written', '<entry id> <entry id> ...'}: the new entries' ids in one string, in
-- order, separated by spaces (one bulk reply rather than one per event, which a client reads
-- several times faster); {'recorded'} when the progress key already records this batch;
-- {'changed', <last_event_id>, <position>, <'1' when the key records a batch>} when it records
-- something other than what the sink expected. The last two write nothing.
local stream, progress = KEYS[1], KEYS[2]
local maxlen, first = ARGV[1], 9

-- Permissions, for every command below with its keys and arguments, and for the WAIT the sink
-- sends after it: a refusal comes before any write. The XADDs of a batch differ only in their
-- event, and an ACL decides on the command and its keys, so the first one stands for all.
local commands = {}
if #ARGV >= first then
  if maxlen == '' then
    commands[1] = {'XADD', stream, '*', 'event', ARGV[first]}
  else
    commands[1] = {'XADD', stream, 'MAXLEN', '~', maxlen, '*', 'event', ARGV[first]}
  end
end
if progress then
  commands[#commands + 1] = {'HSET', progress, 'last_event_id', ARGV[7], 'position', ARGV[8]}
  commands[#commands + 1] = {'HMGET', progress, 'last_event_id', 'position'}
  commands[#commands + 1] = {'TYPE', progress}
end
commands[#commands + 1] = {'TYPE', stream}
if ARGV[2] ~= '' then
  commands[#commands + 1] = {'WAIT', ARGV[2], ARGV[3]}
end
for _, args in ipairs(commands) do
  if not redis.acl_check_cmd(unpack(args)) then
    local on = args[1] == 'WAIT' and '' or ' on the key ' .. args[2]
    return redis.error_reply('NOPERM this user has no permissions to run the ' .. args[1] ..
      ' command' .. on .. ' (nothing of the batch was written)')
  end
end

-- Key types: a stream and a hash, or keys that do not exist yet.
local function wrong_type(key, want)
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= want then
    return redis.error_reply('WRONGTYPE the key ' .. key .. ' holds a ' .. kind .. ', not a ' ..
      want .. ' (nothing of the batch was written)')
  end
end
local refused = wrong_type(stream, 'stream') or (progress and wrong_type(progress, 'hash'))
if refused then
  return refused
end

-- The progress: this batch already written, or something else than the sink expected.
if progress then
  local recorded = redis.call('HMGET', progress, 'last_event_id', 'position')
  local last, position = recorded[1], recorded[2] or ''
  if last == ARGV[7] and position == ARGV[8] then
    return {'recorded'}
  end
  local expected = ARGV[4] == '1'
  if (last and not expected) or (expected and (last ~= ARGV[5] or position ~= ARGV[6])) then
    return {'changed', last or '', position, last and '1' or '0'}
  end
end

-- The writes. XADD with '*' cannot be refused here but for a stream whose last id is the
-- largest possible one (18446744073709551615-18446744073709551615), which no sink writes.
-- One loop per shape, so that nothing but the XADD runs per event.
local ids, call = {}, redis.call
if maxlen == '' then
  for i = first, #ARGV do
    ids[i - first + 1] = call('XADD', stream, '*', 'event', ARGV[i])
  end
else
  for i = first, #ARGV do
    ids[i - first + 1] = call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'event', ARGV[i])
  end
end
if progress then
  redis.call('HSET', progress, 'last_event_id', ARGV[7], 'position', ARGV[8])
end
return {'written', table.concat(ids, ' ')}
