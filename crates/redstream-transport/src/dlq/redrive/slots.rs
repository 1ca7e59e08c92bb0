//! The redrive on a Redis Cluster: the dead-letter stream (`events:{dlq}`) and the target
//! stream (`events:{order.created}`) are in different slots, so one script cannot hold both.
//! Each dead letter moves with one command at a time, each on its own key's slot, in the order
//! that never loses an event:
//!
//! 1. `TYPE <target>`: a key of another type leaves the dead letter in place (skipped);
//! 2. `XRANGE <dlq> <id> <id>`: a dead letter already gone is skipped;
//! 3. the repeat check of the cluster layout (`HGET` on the redrive record, in the dead-letter
//!    stream's slot): a repeat is deleted (`XDEL`) instead of republished, as by the script;
//! 4. `XADD <target>` of the entry's fields;
//! 5. `XDEL <dlq> <id>`, only after the `XADD` succeeded;
//! 6. `HSET` of the record field when the original entry is still pending (`XPENDING`).
//!
//! **The repeat rule.** Not atomic, unlike the script on one server: a failure between the
//! `XADD` and the `XDEL` (the error says so, naming the new entry) leaves the dead letter in
//! place, and two redrives of the same dead letter at the same moment may both pass step 2. In
//! both cases a later (or the other) redrive republishes the event again: a repeat, with the
//! same event id, which handlers deduplicate on [`Event::id`](redstream_core::Event::id). A
//! dead letter is never deleted before its event was written again.

use redis::Value;
use redstream_core::{Error, Result};

use super::RedriveReport;
use super::plan::Plan;
use super::script::redrive_record;
use crate::commands::{Commands, Traffic};
use crate::reply;
use crate::transport::RedisTransport;

impl RedisTransport {
    /// Republishes `plans` one at a time across slots (see the module docs).
    pub(super) async fn redrive_across_slots(
        &self,
        plans: Vec<Plan>,
        report: &mut RedriveReport,
    ) -> Result<()> {
        let writes = self.commands(Traffic::Write);
        let names = &self.inner.names;
        let dlq = names.dlq();
        let record = redrive_record(names);
        for plan in plans {
            let kind: String = writes
                .query("TYPE", &plan.target, redis::cmd("TYPE").arg(&plan.target))
                .await
                .map_err(|err| failed(err, report, &dlq))?;
            if kind != "stream" && kind != "none" {
                report.skip(
                    plan.dlq_id,
                    format!(
                        "{} is not a stream; the dead letter is left in place",
                        plan.target
                    ),
                );
                continue;
            }
            let present: Value = writes
                .query(
                    "XRANGE",
                    &dlq,
                    redis::cmd("XRANGE")
                        .arg(&dlq)
                        .arg(&plan.dlq_id)
                        .arg(&plan.dlq_id),
                )
                .await
                .map_err(|err| failed(err, report, &dlq))?;
            let present = reply::entries(present).is_ok_and(|entries| !entries.is_empty());
            if !present {
                report.skip(
                    plan.dlq_id,
                    "no longer in the dead-letter stream: redriven or deleted by another client",
                );
                continue;
            }
            if !plan.record.is_empty() {
                let earlier: Option<String> = writes
                    .query(
                        "HGET",
                        &record,
                        redis::cmd("HGET").arg(&record).arg(&plan.record),
                    )
                    .await
                    .map_err(|err| failed(err, report, &dlq))?;
                if earlier.is_some() || plan.repeat {
                    let _: u64 = writes
                        .query("XDEL", &dlq, redis::cmd("XDEL").arg(&dlq).arg(&plan.dlq_id))
                        .await
                        .map_err(|err| failed(err, report, &dlq))?;
                    if earlier.is_some() && !still_pending(&writes, &plan).await {
                        let _: u64 = writes
                            .query(
                                "HDEL",
                                &record,
                                redis::cmd("HDEL").arg(&record).arg(&plan.record),
                            )
                            .await
                            .map_err(|err| failed(err, report, &dlq))?;
                    }
                    tracing::info!(
                        dlq_id = %plan.dlq_id,
                        republished_as = earlier.as_deref().unwrap_or_default(),
                        "dead letter removed: a repeat of one redriven already"
                    );
                    report.repeats += 1;
                    continue;
                }
            }
            let mut xadd = redis::cmd("XADD");
            xadd.arg(&plan.target);
            let max_len = self.max_len(&plan.target);
            if max_len > 0 {
                xadd.arg("MAXLEN").arg("~").arg(max_len);
            }
            xadd.arg("*");
            for (name, value) in &plan.fields {
                xadd.arg(name).arg(value);
            }
            let id: String = writes
                .query("XADD", &plan.target, &xadd)
                .await
                .map_err(|err| failed(err, report, &dlq))?;
            let deleted: Result<u64> = writes
                .query("XDEL", &dlq, redis::cmd("XDEL").arg(&dlq).arg(&plan.dlq_id))
                .await;
            match deleted {
                Ok(0) => tracing::warn!(
                    dlq_id = %plan.dlq_id,
                    republished_as = %id,
                    "the dead letter was deleted by another client while it was redriven: its \
                     event may have been republished twice (same event id)"
                ),
                Ok(_) => {}
                Err(err) => {
                    report.redriven += 1;
                    return Err(Error::backend(
                        err.kind(),
                        "redrive",
                        dlq.clone(),
                        format!(
                            "{err} (dead letter {} was republished as {id} but could not be \
                             deleted: delete it by hand, or a later redrive repeats it); {} dead \
                             letters were redriven",
                            plan.dlq_id, report.redriven
                        ),
                    ));
                }
            }
            if !plan.record.is_empty() && still_pending(&writes, &plan).await {
                let _: u64 = writes
                    .query(
                        "HSET",
                        &record,
                        redis::cmd("HSET").arg(&record).arg(&plan.record).arg(&id),
                    )
                    .await
                    .map_err(|err| failed(err, report, &dlq))?;
            }
            report.redriven += 1;
        }
        tracing::info!(redriven = report.redriven, "dead letters redriven");
        Ok(())
    }
}

/// Whether the entry a dead letter was moved from is still pending in its group (a repeat of it
/// may then still come): `XPENDING <stream> <group> <id> <id> 1`. An error (no group) is no.
async fn still_pending(writes: &Commands, plan: &Plan) -> bool {
    let (stream, group, entry_id) = &plan.source;
    let reply: Result<Value> = writes
        .query(
            "XPENDING",
            stream,
            redis::cmd("XPENDING")
                .arg(stream)
                .arg(group)
                .arg(entry_id)
                .arg(entry_id)
                .arg(1),
        )
        .await;
    matches!(reply, Ok(Value::Array(rows)) if !rows.is_empty())
}

/// A failure of the redrive, saying how many dead letters were redriven before it; the one
/// being moved is still in the dead-letter stream.
fn failed(err: Error, report: &RedriveReport, dlq: &str) -> Error {
    Error::backend(
        err.kind(),
        "redrive",
        dlq.to_owned(),
        format!(
            "{err}; {} dead letters were redriven before this failure, and the one that failed \
             is still in the dead-letter stream",
            report.redriven
        ),
    )
}
