//! The readers: the consumer's own pending entries first, then one blocking `XREADGROUP` per
//! poll over the reader's streams.
//!
//! Outside a cluster a subscription has one reader, over all its streams. On a Redis Cluster
//! one `XREADGROUP` may only name keys of one slot (`CROSSSLOT` otherwise), so the
//! subscription's streams are grouped by slot ([`Sub::slot_groups`]) and each group has a
//! reader of its own, blocking on a dedicated connection of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, Value};
use redstream_core::connection::Connection;
use redstream_core::{Error, ErrorKind, Result};
use tokio::sync::oneshot;

use super::claim;
use super::sub::{Delivery, Stall, Sub};
use crate::commands::{is_nogroup, redis_code};
use crate::connection;
use crate::reply;

impl Sub {
    fn xreadgroup(&self, streams: &[usize], after: &str, block: Option<Duration>) -> Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&*self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.options.read_count);
        if let Some(block) = block {
            cmd.arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX));
        }
        cmd.arg("STREAMS");
        for &i in streams {
            cmd.arg(&self.spec(i).key);
        }
        for _ in streams {
            cmd.arg(after);
        }
        cmd
    }

    /// Maps an `XREADGROUP` reply to entries with their stream index.
    fn entries_of(&self, reply: Value) -> Result<Vec<(usize, reply::RawEntry)>> {
        let streams = reply::read_reply(reply).map_err(|reason| {
            Error::backend(
                ErrorKind::Unexpected,
                "XREADGROUP",
                self.describe.clone(),
                reason,
            )
        })?;
        let mut out = Vec::new();
        for (key, entries) in streams {
            let Some(&i) = self.by_key.get(&key) else {
                tracing::warn!(stream = %key, "XREADGROUP answered for a stream it was not asked for");
                continue;
            };
            out.extend(entries.into_iter().map(|entry| (i, entry)));
        }
        Ok(out)
    }

    /// New entries: one `XREADGROUP ... BLOCK` over the streams of `group`, on the reader's
    /// connection.
    async fn read_new(
        &self,
        group: &[usize],
        conn: &mut Option<Connection>,
    ) -> Result<Vec<(usize, reply::RawEntry)>> {
        if conn.is_none() {
            *conn = Some(connection::blocking_connection(&self.conn, &self.options).await?);
        }
        let Some(blocking) = conn.as_mut() else {
            return Err(Error::backend(
                ErrorKind::Unexpected,
                "XREADGROUP",
                self.describe.clone(),
                "no reading connection",
            ));
        };
        let cmd = self.xreadgroup(group, ">", Some(self.options.block_time));
        let reply: Value = cmd
            .query_async(blocking)
            .await
            .map_err(|err| Error::from_redis("XREADGROUP", self.describe.clone(), err))?;
        self.entries_of(reply)
    }

    /// Says that reading works again after a stall, at the level the stall was reported at.
    fn log_recovery(&self, stall: &mut Stall) {
        if let Some((failures, stalled_for)) = stall.recovered() {
            tracing::warn!(
                group = %self.group,
                streams = %self.describe,
                failures,
                ?stalled_for,
                "reading again after a stall"
            );
        }
    }

    /// Re-reads this consumer's own pending entries in the streams of `group`, stream by
    /// stream.
    async fn reread_own_pending(
        &self,
        group: &[usize],
        leftover: &mut Vec<Delivery>,
    ) -> Result<()> {
        for &i in group {
            let mut after = "0".to_owned();
            loop {
                if self.stop.is_cancelled() {
                    return Ok(());
                }
                // With the delivery counts before the re-read (which adds one to each): the
                // same entries, this consumer's pending ones after `after`.
                let start = if after == "0" {
                    "-".to_owned()
                } else {
                    format!("({after}")
                };
                let mut pipe = redis::pipe();
                pipe.add_command(claim::own_pending_before(
                    self,
                    i,
                    &start,
                    self.options.read_count,
                ))
                .add_command(self.xreadgroup(&[i], &after, None));
                let (pending, reply): (Value, Value) = match self
                    .redis
                    .pipe("XREADGROUP", &self.spec(i).key, &pipe)
                    .await
                {
                    Ok(replies) => replies,
                    // A group that does not exist has nothing pending.
                    Err(err) if is_nogroup(&err) => {
                        self.recover_nogroup(&[i], &err).await;
                        break;
                    }
                    Err(err) => return Err(err),
                };
                let entries = self.entries_of(reply)?;
                let Some((_, last)) = entries.last() else {
                    break;
                };
                after = last.id.clone();
                let count = entries.len();
                tracing::debug!(stream = %self.spec(i).key, count, "re-reading own pending entries");
                self.dispatch_claimed(
                    i,
                    entries.into_iter().map(|(_, e)| e).collect(),
                    &claim::Snapshot::of(pending),
                    leftover,
                )
                .await?;
                if count < self.options.read_count {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Re-reads own pending entries of the streams of `sub.slot_groups[group]`, then reads new ones
/// until stopped. Returns deliveries it read but could not queue because the subscription
/// stopped.
pub(super) async fn read_loop(
    sub: Arc<Sub>,
    group: usize,
    conn: Connection,
    ready: oneshot::Sender<()>,
) -> Vec<Delivery> {
    let streams: Vec<usize> = sub.slot_groups.get(group).cloned().unwrap_or_default();
    let mut conn = Some(conn);
    let mut leftover = Vec::new();
    let mut stall = Stall::default();
    loop {
        let result = tokio::select! {
            biased;
            () = sub.stop.cancelled() => return leftover,
            result = sub.reread_own_pending(&streams, &mut leftover) => result,
        };
        match result {
            Ok(()) => break,
            Err(err) => {
                if !sub.after_read_error(&err, &mut stall, &mut conn).await {
                    return leftover;
                }
            }
        }
    }
    // This group's claim passes start only now, so they do not claim what the re-read is about
    // to deliver.
    let _ = ready.send(());

    sub.log_recovery(&mut stall);
    let mut unblocked = false;
    loop {
        let result = tokio::select! {
            biased;
            () = sub.stop.cancelled() => break,
            result = sub.read_new(&streams, &mut conn) => result,
        };
        let entries = match result {
            Ok(entries) => entries,
            // The server ended the blocked read because a stream it waited on was deleted
            // (`UNBLOCKED the stream key no longer exists`): on a cluster, its slot is moving
            // to another master, and `MIGRATE` deletes the key here once it is there. Read
            // again at once, which follows the slot (`ASK`, then `MOVED`); backing off as after
            // other (retryable) errors would stall the stream on every resharding.
            // Once in a row: a second one is a failure like any other.
            Err(err) if !unblocked && redis_code(&err) == Some("UNBLOCKED") => {
                tracing::debug!(group = %sub.group, error = %err, "blocked read ended by the server; reading again");
                unblocked = true;
                continue;
            }
            Err(err) => {
                if !sub.after_read_error(&err, &mut stall, &mut conn).await {
                    break;
                }
                continue;
            }
        };
        unblocked = false;
        sub.log_recovery(&mut stall);
        let mut deleted: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut deliveries = Vec::with_capacity(entries.len());
        for (stream, entry) in entries {
            let Some(fields) = entry.fields else {
                deleted.entry(stream).or_default().push(entry.id);
                continue;
            };
            deliveries.push(sub.delivery(stream, entry.id, 1, fields));
        }
        sub.dispatch_read(deliveries, &mut leftover).await;
        for (stream, ids) in deleted {
            sub.ack_deleted(stream, &ids).await;
        }
        if sub.stop.is_cancelled() {
            break;
        }
        // With a dropping strategy the buffer never makes `dispatch` wait: wait for room here,
        // or a full buffer would make this loop read (and drop) as fast as Redis answers.
        if !sub.buffer.has_room() && !sub.buffer.room(&sub.stop).await {
            break;
        }
        // Handled entries whose `XACK` keeps failing are held in memory: stop reading at the
        // limit until they are acknowledged.
        if !sub.acks[group].room(&sub.stop, &sub.group).await {
            break;
        }
    }
    leftover
}
