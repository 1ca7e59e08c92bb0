-- Entries of one stream with their fields cut to previews, so that large values never cross
-- the network: the dashboard's bounded read (see preview.rs next to this file).
--
-- KEYS[1]   the stream
-- ARGV[1]   XRANGE (oldest first) or XREVRANGE (newest first)
-- ARGV[2]   the low bound: -, an id, or (id      ARGV[3]   the high bound: +, an id, or (id
-- ARGV[4]   the most entries to return
-- ARGV[5]   the budget: bytes of names and values the reply may carry
-- ARGV[6]   1: end the read before an entry that does not fit in what is left of the budget
--           (there is always a first entry); 0: read `count` entries, with previews only once
--           the budget is spent
-- ARGV[7]   the most fields returned per entry
-- ARGV[8]   1: return only the fields named from ARGV[11] on; 0: every field
-- ARGV[9]   the cap of a field not named from ARGV[12] on, and of every field's name
-- ARGV[10]  the preview of such a field or name
-- ARGV[11]  the read limit: bytes of entries this script may read; it stops after the entry
--           that reaches it (Redis copies each entry read into the script's memory, which takes
--           time in proportion to its size)
-- ARGV[12]  and on, triples: a field name, its cap, its preview
--
-- A name or value no longer than its cap and than what is left of the budget is returned whole;
-- any other as its first `preview` bytes. Either way with its full length, so that the caller
-- knows what it did not get. Entries are read one at a time (COUNT 1), so that the script holds
-- one entry in memory at a time, and garbage is collected after a large one.
--
-- Reply: {type, entries, stopped}. `type` is the key's type (TYPE); when it is not `stream`
-- there are no entries. An entry is {id, its field count, {name, name length, value, value
-- length, ...}}. `stopped` is 1 when the budget or the read limit ended the read before
-- `count` entries.
local stream = KEYS[1]
-- A command the user may not run is named at once (Redis 7 can tell; 6.2 fails at the call).
if redis.acl_check_cmd then
  for _, check in ipairs({{'TYPE', stream}, {ARGV[1], stream, '-', '+'}}) do
    if not redis.acl_check_cmd(unpack(check)) then
      return redis.error_reply('NOPERM this user has no permissions to run the \'' ..
        string.lower(check[1]) .. '\' command, which the dashboard needs')
    end
  end
end
local kind = redis.call('TYPE', stream)['ok']
if kind ~= 'stream' then
  return {kind, {}, 0}
end

local op, low, high = ARGV[1], ARGV[2], ARGV[3]
local count = tonumber(ARGV[4])
local left = tonumber(ARGV[5])
local stop = ARGV[6] == '1'
local max_fields = tonumber(ARGV[7])
local named_only = ARGV[8] == '1'
local other = {tonumber(ARGV[9]), tonumber(ARGV[10])}
local read_limit = tonumber(ARGV[11])
local named = {}
for i = 12, #ARGV - 2, 3 do
  named[ARGV[i]] = {tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])}
end
local LARGE = 1048576
local LAST = '18446744073709551615-18446744073709551615'

-- What is sent of a text of `length` bytes with these limits, in bytes.
local function sent(length, limits, budget)
  if length <= limits[1] and length <= budget then
    return length
  end
  return math.min(length, limits[2])
end

-- The fields of `raw` ({name, value, ...}) this read returns, as {name, limits} pairs.
local function kept(raw)
  local out = {}
  for i = 1, #raw - 1, 2 do
    if #out == max_fields then
      break
    end
    local limits = named[raw[i]]
    if limits or not named_only then
      out[#out + 1] = {i, limits or other}
    end
  end
  return out
end

local entries, stopped, read = {}, 0, 0
while #entries < count do
  if read >= read_limit then
    stopped = 1
    break
  end
  local page
  if op == 'XRANGE' then
    page = redis.call('XRANGE', stream, low, high, 'COUNT', 1)
  else
    page = redis.call('XREVRANGE', stream, high, low, 'COUNT', 1)
  end
  local entry = page[1]
  page = nil
  if not entry then
    break
  end
  local id, raw = entry[1], entry[2]
  entry = nil
  local fields = kept(raw)
  if stop and #entries > 0 then
    -- What this entry needs if it is returned with whole values where their caps allow.
    local need, budget = 0, math.huge
    for _, field in ipairs(fields) do
      need = need + sent(#raw[field[1]], other, budget) + sent(#raw[field[1] + 1], field[2], budget)
    end
    if need > left then
      stopped = 1
      break
    end
  end
  local out, size = {}, 0
  for _, field in ipairs(fields) do
    local name, value = raw[field[1]], raw[field[1] + 1]
    for _, part in ipairs({{name, other}, {value, field[2]}}) do
      local text, limits = part[1], part[2]
      local n = sent(#text, limits, left)
      left = left - n
      out[#out + 1] = string.sub(text, 1, n)
      out[#out + 1] = #text
    end
  end
  for _, part in ipairs(raw) do
    size = size + #part
  end
  read = read + size
  entries[#entries + 1] = {id, math.floor(#raw / 2), out}
  raw, fields = nil, nil
  if size > LARGE and collectgarbage then
    collectgarbage()
  end
  if op == 'XRANGE' then
    if id == LAST then
      break
    end
    low = '(' .. id
  else
    if id == '0-0' then
      break
    end
    high = '(' .. id
  end
end
return {kind, entries, stopped}
