//! Redrives: dead letters written back to the stream they came from, once.

use std::collections::HashSet;

use redis::Value;
use redstream_core::wire::EVENT_FIELD;
use redstream_core::{Error, ErrorKind, Result};
use tracing::Instrument;

use super::{DeadLetterEntry, PAGE};
use crate::commands::Traffic;
use crate::keys::{KeyLayout, StreamNames, is_legacy_name, validate_event_type};
use crate::reply;
use crate::transport::RedisTransport;

/// The redrive record: a hash next to the dead-letter stream (in its cluster slot) with a field
/// `<entry id> <stream>` for a dead letter redriven in the cluster layout while a repeat of it
/// could still come, whose value is the id it was republished as.
///
/// A repeat comes only from an entry still pending in its group (its consumer died between the
/// dead letter's `XADD` and the `XACK`), so a field is written only when the original entry is
/// pending at the redrive (`XPENDING <stream> <group> <id> <id> 1`), and removed when its
/// repeat is removed (kept while the entry is still pending, since another repeat may come).
/// After a normal move and redrive the key does not exist.
pub(crate) fn redrive_record(names: &StreamNames) -> String {
    redstream_core::keys::companion(&names.dlq(), "redriven")
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedriveReport {
    /// Dead letters published again and removed from the dead-letter stream.
    pub redriven: usize,
    /// Dead letters removed without being published: repeats of a dead letter of the same
    /// entry (same `stream` and `entry_id`) that was redriven already. Only the cluster layout
    /// writes such repeats (see the module docs) and keeps the record that finds them.
    pub repeats: usize,
    /// Dead letters left in the dead-letter stream, with the reason.
    pub skipped: Vec<SkippedDeadLetter>,
}

/// A dead letter a redrive left where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedDeadLetter {
    /// Its id in the dead-letter stream (or the id asked for, when there is no such entry).
    pub id: String,
    /// Why it was not redriven.
    pub reason: String,
}

impl RedriveReport {
    fn skip(&mut self, id: impl Into<String>, reason: impl Into<String>) {
        let (id, reason) = (id.into(), reason.into());
        tracing::warn!(dlq_id = %id, reason = %reason, "dead letter not redriven");
        self.skipped.push(SkippedDeadLetter { id, reason });
    }
}

/// A dead letter ready to be republished.
struct Plan {
    dlq_id: String,
    target: String,
    /// Its field in the redrive record (cluster layout): `<entry id> <stream>` of the entry it
    /// was moved from; empty when none is kept.
    record: String,
    /// The entry it was moved from, for the record's `XPENDING` check: its stream, group and id
    /// (used only when `record` is not empty).
    source: (String, String, String),
    /// Whether a dead letter of the same entry was republished earlier in this redrive call: it
    /// is then removed as a repeat.
    repeat: bool,
    /// The fields of the entry to write: `event` and the envelope, or a raw entry's fields.
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Moves one dead letter back to its stream, atomically. KEYS: the dead-letter stream, the
/// target stream, the redrive record (a hash next to the dead-letter stream, used in the cluster
/// layout), the stream the dead letter was moved from (for `XPENDING`; the target when no record
/// is kept). ARGV: the dead letter's id, `MAXLEN ~` (0: none), the dead letter's field in the
/// record (empty: none), the group and entry id it was moved from, `repeat` when the caller
/// knows it is a repeat (empty otherwise), then the fields of the entry to write, name and value
/// in turn.
///
/// Returns the new entry id; nil when the dead letter was already gone; `repeat:<id>` when the
/// record shows that the entry it was moved from was redriven already (as `<id>`, empty when
/// that was earlier in the same call): the dead letter is a repeat, and it is deleted instead of
/// republished, and its record field with it unless the entry is still pending (another repeat
/// may come then).
///
/// The record keeps a field only while a repeat can come: the original entry still pending in
/// its group. A redrive of a dead letter whose entry was acknowledged records nothing.
///
/// The only writes are the `XADD` and then the `XDEL` (and the record's `HSET`), in that order:
/// a refusal of the `XADD` (`NOPERM` on the target, `OOM`, `READONLY`) leaves the dead letter
/// untouched, because Redis does not roll back a script's earlier writes when a later command
/// fails. Checking that the dead letter is still there first (a read) keeps concurrent redrives
/// from republishing it twice.
const REDRIVE_SCRIPT: &str = r"
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'stream' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' holds a ' .. kind .. ', not a stream')
end
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return false
end
local function pending()
  local reply = redis.pcall('XPENDING', KEYS[4], ARGV[4], ARGV[5], ARGV[5], 1)
  return type(reply) == 'table' and not reply['err'] and #reply > 0
end
if ARGV[3] ~= '' then
  local earlier = redis.call('HGET', KEYS[3], ARGV[3])
  if earlier or ARGV[6] == 'repeat' then
    redis.call('XDEL', KEYS[1], ARGV[1])
    if earlier and not pending() then
      redis.call('HDEL', KEYS[3], ARGV[3])
    end
    return 'repeat:' .. (earlier or '')
  end
end
local id
if tonumber(ARGV[2]) > 0 then
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 7))
else
  id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 7))
end
local deleted = redis.pcall('XDEL', KEYS[1], ARGV[1])
if type(deleted) == 'table' and deleted['err'] then
  return redis.error_reply(deleted['err'] .. ' (the event was republished as ' .. id ..
    ' but its dead letter could not be deleted: delete it by hand, or a later redrive repeats it)')
end
if ARGV[3] ~= '' and pending() then
  redis.call('HSET', KEYS[3], ARGV[3], id)
end
return id
";

/// Checks an id given to a redrive: `<ms>-<seq>`, or for ranges also `<ms>`, `-`, `+` and an
/// exclusive `(` prefix.
fn check_id(id: &str, range: bool) -> Result<()> {
    let valid = |id: &str| {
        let (ms, seq) = id
            .split_once('-')
            .map_or((id, None), |(ms, seq)| (ms, Some(seq)));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        digits(ms) && seq.is_none_or(digits) && (range || seq.is_some())
    };
    let ok = if range {
        matches!(id, "-" | "+") || valid(id.strip_prefix('(').unwrap_or(id))
    } else {
        valid(id)
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(
            format!("dead-letter entry id {id:?}"),
            if range {
                "expected a stream id such as 1700000000000-0, a millisecond time, - or +, \
                 optionally prefixed with ( for an exclusive bound"
            } else {
                "expected a stream entry id such as 1700000000000-0"
            },
        ))
    }
}

impl RedisTransport {
    /// Redrives every dead letter present when it starts (dead letters added meanwhile are left
    /// for the next call).
    pub async fn redrive_all(&self) -> Result<RedriveReport> {
        self.redrive_range("-", "+").await
    }

    /// Redrives the dead letters with these ids. Ids that are not in the dead-letter stream are
    /// reported as skipped.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an id that is not a stream entry id (nothing is redriven
    /// then); a Redis error if reading or writing fails.
    pub async fn redrive_ids(&self, ids: &[&str]) -> Result<RedriveReport> {
        for id in ids {
            check_id(id, false)?;
        }
        let dlq = self.inner.names.dlq();
        let mut report = RedriveReport::default();
        // The record fields of the dead letters handled in this call: a second dead letter of
        // the same entry is a repeat.
        let mut seen = HashSet::new();
        for chunk in ids.chunks(PAGE) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("XRANGE").arg(&dlq).arg(*id).arg(*id);
            }
            let replies: Vec<Value> = self
                .commands(Traffic::Write)
                .pipe("XRANGE", &dlq, &pipe)
                .await?;
            let mut found = Vec::with_capacity(chunk.len());
            for (id, reply) in chunk.iter().zip(replies) {
                let entries = reply::entries(reply).map_err(|reason| {
                    Error::backend(ErrorKind::Unexpected, "XRANGE", dlq.clone(), reason)
                })?;
                match entries.into_iter().next() {
                    Some(entry) => found.push(entry),
                    None => report.skip(*id, "not in the dead-letter stream"),
                }
            }
            self.redrive_entries(found, &mut report, &mut seen).await?;
        }
        Ok(report)
    }

    /// Redrives the dead letters with ids from `start` to `end`, inclusive (`XRANGE` syntax: `-`
    /// and `+` for the ends of the stream, a `(` prefix for an exclusive bound). With `+`, the end
    /// is the last dead letter present when the call starts.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a malformed bound; a Redis error if reading or writing
    /// fails (batches done before the error stay done).
    pub async fn redrive_range(&self, start: &str, end: &str) -> Result<RedriveReport> {
        check_id(start, true)?;
        check_id(end, true)?;
        let dlq = self.inner.names.dlq();
        let mut report = RedriveReport::default();
        // The record fields of the dead letters handled in this call: a second dead letter of
        // the same entry is a repeat.
        let mut seen = HashSet::new();
        let end = if end == "+" {
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(&dlq).arg("+").arg("-").arg("COUNT").arg(1);
            let reply: Value = self
                .commands(Traffic::Write)
                .query("XREVRANGE", &dlq, &cmd)
                .await?;
            let last = reply::entries(reply).map_err(|reason| {
                Error::backend(ErrorKind::Unexpected, "XREVRANGE", dlq.clone(), reason)
            })?;
            match last.into_iter().next() {
                Some(entry) => entry.id,
                None => return Ok(report),
            }
        } else {
            end.to_owned()
        };
        let mut from = start.to_owned();
        loop {
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&dlq).arg(&from).arg(&end).arg("COUNT").arg(PAGE);
            let reply: Value = self
                .commands(Traffic::Write)
                .query("XRANGE", &dlq, &cmd)
                .await?;
            let entries = reply::entries(reply).map_err(|reason| {
                Error::backend(ErrorKind::Unexpected, "XRANGE", dlq.clone(), reason)
            })?;
            let Some(last) = entries.last().map(|e| e.id.clone()) else {
                break;
            };
            let full = entries.len() == PAGE;
            self.redrive_entries(entries, &mut report, &mut seen)
                .await?;
            if !full || last == end {
                break;
            }
            from = format!("({last}");
        }
        Ok(report)
    }

    /// The dead letter's field in the redrive record: `<entry id> <stream>` of the entry it was
    /// moved from, in the cluster layout; empty (no record) otherwise, and for dead letters
    /// written by hand (no entry id, group or stream). Whether the script writes it depends on
    /// the entry still being pending.
    fn record_field(&self, dead: &DeadLetterEntry) -> String {
        if self.inner.names.layout() != KeyLayout::Cluster
            || dead.entry_id.is_empty()
            || dead.group.is_empty()
            || dead.stream.is_empty()
        {
            return String::new();
        }
        format!("{} {}", dead.entry_id, dead.stream)
    }

    /// Where a dead letter is redriven: the stream it records, except a name of the layout
    /// before this version (`{prefix}:type#lane`) or none at all, where the stream of its event
    /// type is used instead. `None` when neither gives a stream.
    fn redrive_target(&self, recorded: &str, event_type: &str) -> Option<String> {
        let names = &self.inner.names;
        if !recorded.is_empty() && !is_legacy_name(names.prefix(), recorded) {
            return Some(recorded.to_owned());
        }
        validate_event_type(event_type, &self.inner.options.limits)
            .ok()
            .map(|()| names.stream(event_type))
    }

    /// Republishes decodable dead letters and deletes them from the dead-letter stream, in one
    /// transaction; reports the others.
    async fn redrive_entries(
        &self,
        entries: Vec<reply::RawEntry>,
        report: &mut RedriveReport,
        seen: &mut HashSet<String>,
    ) -> Result<()> {
        let limits = &self.inner.options.limits;
        let names = &self.inner.names;
        let mut plans = Vec::with_capacity(entries.len());
        for entry in entries {
            let dead = DeadLetterEntry::from_raw(entry, limits);
            let record = self.record_field(&dead);
            let source = (
                dead.stream.clone(),
                dead.group.clone(),
                dead.entry_id.clone(),
            );
            if dead.raw {
                let recorded =
                    !dead.stream.is_empty() && !is_legacy_name(names.prefix(), &dead.stream);
                match dead.field_bytes {
                    Some(fields) if !fields.is_empty() && recorded => plans.push(Plan {
                        record,
                        source,
                        repeat: false,
                        dlq_id: dead.id,
                        target: dead.stream,
                        fields,
                    }),
                    Some(_) if !recorded => {
                        report.skip(dead.id, "it records no stream to write its fields back to")
                    }
                    _ => report.skip(
                        dead.id,
                        "its `event` field does not hold the entry's fields as an array of \
                         [name, value] pairs; inspect it with XRANGE",
                    ),
                }
                continue;
            }
            let Some(event) = &dead.event else {
                let reason = dead.decode_error.as_deref().unwrap_or("no event");
                report.skip(
                    dead.id,
                    format!("its event cannot be decoded ({reason}); inspect it with XRANGE and fix or delete it by hand"),
                );
                continue;
            };
            let Some(target) = self.redrive_target(&dead.stream, event.event_type()) else {
                report.skip(
                    dead.id,
                    format!(
                        "it records no stream and its event type {:?} names none",
                        event.event_type()
                    ),
                );
                continue;
            };
            plans.push(Plan {
                record,
                source,
                repeat: false,
                dlq_id: dead.id,
                target,
                fields: vec![(EVENT_FIELD.as_bytes().to_vec(), dead.raw_event.into_bytes())],
            });
        }
        if plans.is_empty() {
            return Ok(());
        }
        // A second dead letter of an entry republished earlier in this call is a repeat, whether
        // or not the record kept a field for it (it keeps none once the entry is acknowledged).
        for plan in &mut plans {
            if !plan.record.is_empty() && !seen.insert(plan.record.clone()) {
                plan.repeat = true;
            }
        }
        let dlq = names.dlq();
        let record = redrive_record(names);
        // One script call per dead letter, all in one round trip. Each call checks the target's
        // type, then deletes the dead letter and republishes it only if the delete removed it:
        // two clients redriving the same dead letter at once (the CLI and the dashboard, say)
        // republish it once, and a target of the wrong type leaves the dead letter in place.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for plan in &plans {
            let (source, group, entry_id) = &plan.source;
            let source = if plan.record.is_empty() {
                &plan.target
            } else {
                source
            };
            pipe.cmd("EVAL")
                .arg(REDRIVE_SCRIPT)
                .arg(4)
                .arg(&dlq)
                .arg(&plan.target)
                .arg(&record)
                .arg(source)
                .arg(&plan.dlq_id)
                .arg(self.max_len(&plan.target))
                .arg(&plan.record)
                .arg(group)
                .arg(entry_id)
                .arg(if plan.repeat { "repeat" } else { "" });
            for (name, value) in &plan.fields {
                pipe.arg(name).arg(value);
            }
        }
        let span = tracing::info_span!("redrive", entries = plans.len());
        let results: Vec<redis::RedisResult<Option<String>>> = self
            .commands(Traffic::Write)
            .pipe("EVAL redrive (XDEL + XADD)", &dlq, &pipe)
            .instrument(span)
            .await?;
        let mut failed = None;
        for (plan, result) in plans.into_iter().zip(results) {
            match result {
                Ok(Some(reply)) => match reply.strip_prefix("repeat:") {
                    Some(earlier) => {
                        tracing::info!(
                            dlq_id = %plan.dlq_id,
                            republished_as = %earlier,
                            "dead letter removed: a repeat of one redriven already"
                        );
                        report.repeats += 1;
                    }
                    None => report.redriven += 1,
                },
                Ok(None) => report.skip(
                    plan.dlq_id,
                    "no longer in the dead-letter stream: redriven or deleted by another client",
                ),
                Err(err) if err.code() == Some("WRONGTYPE") => report.skip(
                    plan.dlq_id,
                    format!(
                        "{} is not a stream; the dead letter is left in place",
                        plan.target
                    ),
                ),
                // Any other refusal (READONLY after a failover, NOPERM, OOM...) is the server's
                // failure, not this dead letter's: the caller hears it as an error, with its kind,
                // rather than a report that looks like success.
                Err(err) => {
                    failed.get_or_insert(err);
                }
            }
        }
        tracing::info!(redriven = report.redriven, "dead letters redriven");
        if let Some(err) = failed {
            let err = Error::from_redis("EVAL redrive (XDEL + XADD)", dlq.clone(), err);
            return Err(Error::backend(
                err.kind(),
                "redrive",
                dlq,
                format!(
                    "{err}; {} dead letters were redriven before this failure, and each one \
                     that failed is still in the dead-letter stream",
                    report.redriven
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redstream_core::ErrorKind;

    #[test]
    fn ids_are_checked() {
        for ok in ["1-0", "1700000000000-12"] {
            check_id(ok, false).unwrap();
            check_id(ok, true).unwrap();
        }
        for ok in ["-", "+", "(1-0", "1700000000000"] {
            check_id(ok, true).unwrap();
        }
        for bad in ["", "-", "+", "1", "a-1", "1-", "1-0 ", "(1-0"] {
            assert_eq!(
                check_id(bad, false).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
        for bad in ["", "x", "((1-0", "1-a"] {
            assert!(check_id(bad, true).is_err(), "{bad:?}");
        }
    }
}
