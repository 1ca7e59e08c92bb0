//! The redrive script, the redrive record of the cluster layout, and running the script for a
//! batch of dead letters in one round trip.

use std::collections::HashSet;

use redstream_core::{Error, Result};
use tracing::Instrument;

use super::RedriveReport;
use crate::commands::Traffic;
use crate::keys::StreamNames;
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
pub(super) fn redrive_record(names: &StreamNames) -> String {
    redstream_core::keys::companion(&names.dlq(), "redriven")
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
/// Before anything, the script checks that the user may run each of its commands on its keys
/// (`redis.acl_check_cmd`), the record's `HGET`/`HSET`/`HDEL` and the `XPENDING` too when a
/// record is kept, so a missing permission is a `NOPERM` that changed nothing (an `XPENDING`
/// refused later would read as "not pending", and the record would miss a field).
/// The only writes are the `XADD` and then the `XDEL` (and the record's `HSET`), in that order:
/// a refusal of the `XADD` (`NOPERM` on the target, `OOM`, `READONLY`) leaves the dead letter
/// untouched, because Redis does not roll back a script's earlier writes when a later command
/// fails. Checking that the dead letter is still there first (a read) keeps concurrent redrives
/// from republishing it twice.
const REDRIVE_SCRIPT: &str = r"
local checks = {{'TYPE', KEYS[2]}, {'XRANGE', KEYS[1], '-', '+'}, {'XADD', KEYS[2], '*', 'f', 'v'},
  {'XDEL', KEYS[1], '0-1'}}
if ARGV[3] ~= '' then
  checks[#checks + 1] = {'HGET', KEYS[3], 'f'}
  checks[#checks + 1] = {'HSET', KEYS[3], 'f', 'v'}
  checks[#checks + 1] = {'HDEL', KEYS[3], 'f'}
  checks[#checks + 1] = {'XPENDING', KEYS[4], 'g', '-', '+', '1'}
end
for _, check in ipairs(checks) do
  if not redis.acl_check_cmd(unpack(check)) then
    return redis.error_reply('NOPERM this user has no permissions to run the ' .. check[1] ..
      ' command on ' .. check[2] .. ', which a redrive needs (nothing was changed)')
  end
end
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

impl RedisTransport {
    /// Republishes the dead letters that can be (see `plan.rs`) and deletes them from the
    /// dead-letter stream, one script call each, all in one round trip; reports the others.
    /// `seen` holds the record fields of the dead letters handled earlier in the same call.
    pub(super) async fn redrive_entries(
        &self,
        entries: Vec<reply::RawEntry>,
        report: &mut RedriveReport,
        seen: &mut HashSet<String>,
    ) -> Result<()> {
        let mut plans = self.plan_redrives(entries, report);
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
        if self.inner.conn.topology() == redstream_core::connection::Topology::Cluster {
            return self.redrive_across_slots(plans, report).await;
        }
        let names = &self.inner.names;
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
                // No record is kept for this dead letter (the plain layout): name no key the
                // user would need a permission for.
                .arg(if plan.record.is_empty() {
                    &dlq
                } else {
                    &record
                })
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
