//! Trimming a stream by hand (`XTRIM MAXLEN` / `MINID`), refusing to remove entries that are
//! still pending in a consumer group unless forced.

use redis::Value;
use redstream_core::{Error, ErrorKind, Result};

use super::checks::{check_entry_id, wrong_type};
use super::writes;
use crate::keys::validate_stream_name;
use crate::reply::{count, sequence, text};
use crate::transport::RedisTransport;

/// Finds the entries a trim would remove, checks every group's pending list for them, and
/// trims only when none is pending (or `ARGV[3]` is `1`), in one script so that no entry
/// becomes pending in between. `ARGV`: `MAXLEN` or `MINID`, its argument, force, and the most
/// entries the script may read to find where `MAXLEN` cuts.
///
/// For `MAXLEN n` the first kept entry is found by reading whichever end is shorter: the
/// `len - n` oldest entries plus one, or the `n` newest; only when a group has pending
/// entries, and never more than the limit (`{'too_long', entries}` then: a script that reads
/// millions of entries would block the server and fill its memory). Replies: `{'trimmed', n}`,
/// `{'refused', {group, pending, ...}}`, `{'too_long', n}`, `{'no_stream'}`,
/// `{'wrong_type', type}`.
const TRIM: &str = r"
local key, mode, arg, force = KEYS[1], ARGV[1], ARGV[2], ARGV[3] == '1'
local t = redis.call('TYPE', key)
t = t['ok'] or t
if t == 'none' then return {'no_stream'} end
if t ~= 'stream' then return {'wrong_type', t} end
-- The groups with pending entries: without any, nothing needs checking.
local pending_somewhere = false
if not force then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    for i = 1, #g, 2 do
      if g[i] == 'pending' and g[i + 1] > 0 then pending_somewhere = true end
    end
  end
end
local last = nil
if mode == 'MAXLEN' and pending_somewhere then
  local keep = tonumber(arg)
  local len = redis.call('XLEN', key)
  local scan = math.min(len - keep + 1, keep)
  if len > keep and scan > tonumber(ARGV[4]) then
    return {'too_long', scan}
  end
  if len > keep then
    if keep == 0 then
      last = '+'
    elseif len - keep <= keep then
      local oldest = redis.call('XRANGE', key, '-', '+', 'COUNT', len - keep + 1)
      last = '(' .. oldest[#oldest][1]
    else
      local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', keep)
      last = '(' .. newest[#newest][1]
    end
  end
elseif mode == 'MINID' and pending_somewhere and arg ~= '0' and arg ~= '0-0' then
  last = '(' .. arg
end
-- Pending entries older than the first entry were deleted before (a forced trim, XDEL):
-- this trim does not remove them, so they do not count.
local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1]
if last and first and not force then
  local refused = {}
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local name
    for i = 1, #g, 2 do if g[i] == 'name' then name = g[i + 1] end end
    local pending = redis.call('XPENDING', key, name, first[1], last, 1000)
    if #pending > 0 then
      table.insert(refused, name)
      table.insert(refused, #pending)
    end
  end
  if #refused > 0 then return {'refused', refused} end
end
return {'trimmed', redis.call('XTRIM', key, mode, arg)}
";

/// The most entries the trim script reads to find where `MAXLEN` cuts.
const MAX_SCAN: u64 = 100_000;

/// How much of a stream [`RedisTransport::trim`] keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trim {
    /// Keep the newest `n` entries (`XTRIM ... MAXLEN n`, exact).
    MaxLen(u64),
    /// Keep the entries whose id is at least this one (`XTRIM ... MINID id`): an entry id or
    /// a millisecond time.
    MinId(String),
}

/// What [`RedisTransport::trim`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrimOutcome {
    /// `removed` entries were deleted from the stream.
    Trimmed {
        /// Entries deleted.
        removed: u64,
    },
    /// Nothing was deleted: these groups have entries pending that the trim would remove, as
    /// `(group, pending entries among them)` (a count of 1000 means at least 1000).
    Refused {
        /// The groups and their pending entries that the trim would remove.
        groups: Vec<(String, u64)>,
    },
}

impl RedisTransport {
    /// Deletes the oldest entries of `stream` so that `keep` holds: exact `XTRIM ... MAXLEN`
    /// or `MINID`, never the approximate `~`. Unless `force`, it first looks for entries the
    /// trim would remove that are still pending in a consumer group (delivered, not yet
    /// acknowledged) and trims nothing when there are, reporting the groups: deleting them
    /// would leave their consumers pending entries that no longer exist. Entries a group was
    /// not delivered yet are not counted as pending, nor are pending entries older than the
    /// stream's first entry (deleted before; this trim does not remove them). The check and the
    /// trim are one script on the stream's node. When a group has pending entries, the script
    /// finds where `MAXLEN` cuts by reading the shorter side of the cut (the entries removed or
    /// those kept) inside Redis, nothing sent back, and refuses when that is over 100,000
    /// entries: a script that long would block the server. `MinId` needs no such read.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an invalid name, a malformed `MinId`, or a `MaxLen` check
    /// that would read over 100,000 entries;
    /// [`ErrorKind::NotFound`] for a missing stream; [`ErrorKind::WrongType`] for a key that
    /// is not a stream.
    pub async fn trim(&self, stream: &str, keep: &Trim, force: bool) -> Result<TrimOutcome> {
        const OP: &str = "XTRIM";
        validate_stream_name(stream)?;
        let (mode, arg) = match keep {
            Trim::MaxLen(n) => ("MAXLEN", n.to_string()),
            Trim::MinId(id) => {
                let millis = id.bytes().all(|b| b.is_ascii_digit()) && id.parse::<u64>().is_ok();
                if !millis {
                    check_entry_id("minimum id", id)?;
                }
                ("MINID", id.clone())
            }
        };
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(TRIM)
            .arg(1)
            .arg(stream)
            .arg(mode)
            .arg(&arg)
            .arg(if force { "1" } else { "0" })
            .arg(MAX_SCAN);
        let reply: Value = writes(self).query(OP, stream, &cmd).await?;
        let parts = sequence(&reply).unwrap_or_default();
        let unexpected = || {
            Error::backend(
                ErrorKind::Unexpected,
                OP,
                stream,
                "unexpected reply from the trim script",
            )
        };
        match parts.first().and_then(text).as_deref() {
            Some("trimmed") => Ok(TrimOutcome::Trimmed {
                removed: parts.get(1).and_then(count).ok_or_else(unexpected)?,
            }),
            Some("refused") => {
                let list = parts.get(1).and_then(sequence).ok_or_else(unexpected)?;
                let groups = list
                    .chunks(2)
                    .map(|pair| match pair {
                        [name, n] => Some((text(name)?, count(n)?)),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(unexpected)?;
                Ok(TrimOutcome::Refused { groups })
            }
            Some("too_long") => {
                let scan = parts.get(1).and_then(count).ok_or_else(unexpected)?;
                Err(Error::invalid_input(
                    format!("trim of stream {stream:?} to {keep:?}"),
                    format!(
                        "finding which pending entries it would remove means reading {scan} \
                         entries inside Redis, over the {MAX_SCAN} it may (a long script blocks \
                         the server); trim by id (MinId: entries older than an id or a time) \
                         or force it"
                    ),
                ))
            }
            Some("no_stream") => Err(Error::not_found(
                format!("stream {stream:?}"),
                "the key does not exist (list_streams() shows the streams)",
            )),
            Some("wrong_type") => Err(wrong_type(
                stream,
                &parts.get(1).and_then(text).unwrap_or_default(),
            )),
            _ => Err(unexpected()),
        }
    }
}
