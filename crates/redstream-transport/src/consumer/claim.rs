//! Claiming: redelivery of failed and abandoned entries, and keeping the entries a consumer holds.
//!
//! # The claimer
//!
//! Every `claim_interval`, each subscription runs `XAUTOCLAIM <stream> <group> <consumer>
//! <claim_idle_time> <cursor> COUNT n JUSTID` over each of its streams, following the cursor until it
//! comes back to `0-0`. That takes every entry pending for longer than `claim_idle_time`,
//! whoever holds it: entries whose handler failed (they stay pending, so this is how they are
//! retried), entries of consumers that crashed or were killed mid-batch (seed 004: "workers
//! automatically claim idle messages"), and entries released by a full buffer. `n` is at most
//! the free room in the subscription's buffer, less what other passes asked for and have not
//! delivered yet, so claiming never makes the buffer drop anything.
//!
//! A pass goes over the streams in turn, starting one stream further at each tick, so that a
//! stream with many idle entries does not take the free room at every tick before the streams
//! after it.
//!
//! On a Redis Cluster each slot group of the subscription's streams has passes of its own,
//! side by side with the other groups', so a master that does not answer holds back the
//! claims of its own slots only. Each `XAUTOCLAIM` of a group asks for no more than its share
//! of the free room (the free room divided by the number of groups, rounded up), so that the
//! groups whose passes start at the same moment all claim something.
//!
//! A claimed entry's delivery count decides what happens: up to `max_deliveries` it is handled
//! again; beyond, it has already been delivered `max_deliveries` times without success and goes
//! to the dead-letter stream without another try. `XAUTOCLAIM` does not return the count, so a
//! claim takes two steps:
//!
//! 1. `XAUTOCLAIM ... JUSTID` takes the idle entries: they become this consumer's and their
//!    idle time starts again, but their delivery counts do not change.
//! 2. One pipeline reads each one's count (`XPENDING <stream> <group> <id> <id> 1`) and then
//!    delivers them (`XCLAIM <stream> <group> <self> 0 <id>...`, which counts one delivery and
//!    returns their fields): each count read plus one is the count after ([`Snapshot`]).
//!
//! If the second step fails (a timeout, a dropped connection, a paused server), the entries
//! stay this consumer's with their counts unchanged, and the next claim after
//! `claim_idle_time` takes them again. Claiming with the fields in one step and reading the
//! counts after, as this did before, left the counts raised by a delivery no handler saw when
//! the second round trip failed. (Reading the counts first with `XPENDING ... IDLE` would
//! scan the whole pending list at every page when few entries are idle: `XAUTOCLAIM` looks at
//! no more than ten times its `COUNT` per call.)
//!
//! Entries trimmed from the stream (`MAXLEN`) or deleted while still pending come back in
//! `XAUTOCLAIM`'s list of deleted ids: they are reported (a warning and the
//! `redstream_transport_claim_deleted_total` counter) and acknowledged, so they do not linger.
//! No consumer is ever deleted from a group: `XGROUP DELCONSUMER` would drop its pending entries.
//!
//! # The keep-alive
//!
//! An entry this consumer holds (read and waiting for room in its buffer, in its buffer, or in
//! a running handler) must not be claimed by another consumer just because its handler is
//! slow. Every eighth of `claim_idle_time`, the keep-alive resets the idle time of the
//! entries held for more than a quarter of it, with `XCLAIM <stream> <group> <self> 0 <id>...
//! JUSTID` (`JUSTID` leaves the delivery count alone): an entry's idle time in Redis stays
//! below three eighths of `claim_idle_time`. An entry counts as refreshed only once that
//! `XCLAIM` succeeded: after a failed round the next round, an eighth of `claim_idle_time`
//! later, tries the same entries again. So an entry is claimable only once its consumer has
//! stopped refreshing it: it crashed, hangs without its runtime, or could not reach Redis for
//! five eighths of `claim_idle_time` or more (five refused rounds in a row). With resets at
//! half of it every quarter, one refused round was enough to let the idle time reach three
//! quarters of it or all of it.
//!
//! # Releasing
//!
//! An entry the consumer read but will not handle (dropped by a full buffer, or still waiting in
//! the buffer when the subscription stops) is released: `XCLAIM ... IDLE <claim_idle_time>
//! RETRYCOUNT <deliveries - 1> JUSTID` sets its delivery count back to what it was before this
//! read and makes it claimable at once, by this consumer or another.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::Value;
use redstream_core::{Error, ErrorKind, Result};
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::sub::{Delivery, Sub};
use crate::commands::is_nogroup;
use crate::reply;
use crate::telemetry;

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Claims idle entries every `claim_interval` until stopped, with one loop of passes per slot
/// group side by side; a group's passes start once its `ready` fires (after its reader re-read
/// its own pending entries, so that no pass claims what the re-read is about to deliver).
/// Returns deliveries it could not queue because the subscription stopped.
pub(crate) async fn claim_loop(sub: Arc<Sub>, ready: Vec<oneshot::Receiver<()>>) -> Vec<Delivery> {
    let groups = sub
        .slot_groups
        .iter()
        .zip(ready)
        .map(|(streams, ready)| claim_group(&sub, streams, ready));
    futures_util::future::join_all(groups)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The claim passes over the streams of one slot group, every `claim_interval` from `ready`
/// until stopped.
async fn claim_group(sub: &Sub, streams: &[usize], ready: oneshot::Receiver<()>) -> Vec<Delivery> {
    let mut leftover = Vec::new();
    tokio::select! {
        biased;
        () = sub.stop.cancelled() => return leftover,
        ready = ready => if ready.is_err() { return leftover },
    }
    let mut interval = tokio::time::interval(sub.options.claim_interval);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Which stream goes first, turn by turn: a stream's pass may take all the free room, and in
    // a fixed order a stream with a backlog of idle entries would take it at every tick, before
    // the streams after it claimed anything.
    let mut first = 0;
    loop {
        tokio::select! {
            biased;
            () = sub.stop.cancelled() => break,
            _ = interval.tick() => {}
        }
        let (after, before) = streams.split_at(first % streams.len().max(1));
        first = first.wrapping_add(1);
        for &stream in before.iter().chain(after) {
            if sub.stop.is_cancelled() {
                break;
            }
            if let Err(err) = claim_stream(sub, stream, &mut leftover).await {
                let key = &sub.streams[stream].key;
                if is_nogroup(&err) {
                    sub.recover_nogroup(&[stream], &err).await;
                } else {
                    tracing::warn!(stream = %key, group = %sub.group, error = %err, "claiming failed; trying again at the next pass");
                }
            }
        }
        sub.prune_failures();
    }
    leftover
}

/// One claim pass over one stream, following the `XAUTOCLAIM` cursor.
async fn claim_stream(sub: &Sub, stream: usize, leftover: &mut Vec<Delivery>) -> Result<()> {
    let key = &sub.streams[stream].key;
    let min_idle = millis(sub.options.claim_idle_time);
    let mut cursor = "0-0".to_owned();
    let groups = sub.slot_groups.len().max(1);
    loop {
        let free = sub.buffer.free();
        let room = free.saturating_sub(sub.claiming.load(Ordering::Acquire));
        if room == 0 || sub.stop.is_cancelled() {
            return Ok(());
        }
        // At most this group's share of the free room. The groups' ticks often fall in the
        // same millisecond, and their passes then start in the same order every time: asking
        // for all the room left, the first ones took it at every tick and the last ones never
        // claimed anything.
        let count = room.min(free.div_ceil(groups)).min(sub.options.read_count);
        // Held until this page's entries are in the buffer (or were not claimed).
        let _reserved = Reserved::new(&sub.claiming, count);
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(key)
            .arg(&*sub.group)
            .arg(&sub.consumer)
            .arg(min_idle)
            .arg(&cursor)
            .arg("COUNT")
            .arg(count)
            .arg("JUSTID");
        let span = tracing::debug_span!("claim", stream = %key, group = %sub.group, claimed = tracing::field::Empty);
        let reply: Value = sub
            .redis
            .query("XAUTOCLAIM", key, &cmd)
            .instrument(span.clone())
            .await?;
        let (next, ids, deleted) = reply::autoclaim_ids(reply).map_err(|reason| {
            Error::backend(ErrorKind::Unexpected, "XAUTOCLAIM", key.clone(), reason)
        })?;
        if !deleted.is_empty() {
            sub.ack_deleted(stream, &deleted)
                .instrument(span.clone())
                .await;
        }
        // Entries this consumer holds already (claimed back from it while it could not refresh
        // them) are not delivered twice.
        let ids: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| !sub.flights.contains(key, id))
            .collect();
        if !ids.is_empty() {
            let (before, claimed) = deliver_claimed(sub, stream, &ids)
                .instrument(span.clone())
                .await?;
            let taken = claimed.iter().filter(|e| e.fields.is_some()).count();
            if taken > 0 {
                span.record("claimed", taken);
                tracing::debug!(parent: &span, count = taken, "claimed idle entries");
                metrics::counter!(telemetry::CLAIMED, "group" => Arc::clone(&sub.group))
                    .increment(taken as u64);
            }
            sub.dispatch_claimed(stream, claimed, &before, leftover)
                .instrument(span)
                .await?;
        }
        if next == "0-0" || next == "0" {
            return Ok(());
        }
        cursor = next;
    }
}

/// Buffer room a claim pass has asked `XAUTOCLAIM` for, counted in [`Sub::claiming`] until
/// dropped.
struct Reserved<'a> {
    claiming: &'a AtomicUsize,
    count: usize,
}

impl<'a> Reserved<'a> {
    fn new(claiming: &'a AtomicUsize, count: usize) -> Self {
        claiming.fetch_add(count, Ordering::AcqRel);
        Self { claiming, count }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.claiming.fetch_sub(self.count, Ordering::AcqRel);
    }
}

/// The second step of a claim: `ids`, just claimed by `XAUTOCLAIM ... JUSTID` (which gave them
/// to this consumer and reset their idle time, but left their delivery counts alone), are
/// delivered with `XCLAIM <stream> <group> <self> 0 <id>...`, which counts a delivery and
/// returns their fields, after an `XPENDING <stream> <group> <id> <id> 1` of each in the same
/// pipeline: their counts just before (see the module docs).
async fn deliver_claimed(
    sub: &Sub,
    stream: usize,
    ids: &[&str],
) -> Result<(Snapshot, Vec<reply::RawEntry>)> {
    let key = &sub.streams[stream].key;
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("XPENDING")
            .arg(key)
            .arg(&*sub.group)
            .arg(*id)
            .arg(*id)
            .arg(1);
    }
    pipe.cmd("XCLAIM")
        .arg(key)
        .arg(&*sub.group)
        .arg(&sub.consumer)
        .arg(0)
        .arg(ids);
    let mut replies: Vec<Value> = sub.redis.pipe("XCLAIM", key, &pipe).await?;
    let claimed = reply::claimed(replies.pop().unwrap_or(Value::Nil))
        .map_err(|reason| Error::backend(ErrorKind::Unexpected, "XCLAIM", key.clone(), reason))?;
    let mut before = Snapshot::default();
    for reply in replies {
        before.0.extend(Snapshot::of(reply).0);
    }
    Ok((before, claimed))
}

/// `XPENDING <stream> <group> <start> + <count> <self>`: the pending entries a re-read of this
/// consumer's own entries (`XREADGROUP` from an id, `COUNT <count>`) is about to take, with
/// their delivery counts. Sent just before that read, in the same pipeline, it lists the same
/// entries: both walk this consumer's pending list from `start` for at most `count` entries,
/// those deleted from the stream included (the read returns them without fields).
pub(crate) fn own_pending_before(
    sub: &Sub,
    stream: usize,
    start: &str,
    count: usize,
) -> redis::Cmd {
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(&sub.streams[stream].key)
        .arg(&*sub.group)
        .arg(start)
        .arg("+")
        .arg(count)
        .arg(&sub.consumer);
    cmd
}

/// The delivery counts of pending entries, by id, as they were just before a command that
/// delivers them again (and adds one to each): an `XCLAIM` of claimed entries
/// ([`deliver_claimed`]) or a re-read ([`own_pending_before`]).
///
/// Read in the same round trip as that command rather than after it: an `XPENDING` sent after
/// could fail (a timeout, a dropped connection) once the command had already counted a
/// delivery, and the entries then waited `claim_idle_time` for the next claim, one delivery
/// closer to the dead-letter stream without having been handled.
#[derive(Debug, Default)]
pub(crate) struct Snapshot(HashMap<String, u32>);

impl Snapshot {
    /// Reads an extended `XPENDING` reply: rows of `[id, consumer, idle ms, delivery count]`.
    /// Rows of another shape are left out (their entries are left pending).
    pub(crate) fn of(reply: Value) -> Self {
        let mut counts = HashMap::new();
        let Value::Array(rows) = reply else {
            return Self(counts);
        };
        for row in rows {
            let Value::Array(columns) = row else { continue };
            let mut columns = columns.into_iter();
            let (Some(id), _, _, Some(count)) = (
                columns.next(),
                columns.next(),
                columns.next(),
                columns.next(),
            ) else {
                continue;
            };
            if let (Some(id), Some(count)) = (reply::string(id), reply::int(&count)) {
                counts.insert(id, u32::try_from(count.max(0)).unwrap_or(u32::MAX));
            }
        }
        Self(counts)
    }

    /// The delivery count of `id` once delivered again, if the snapshot has it.
    pub(crate) fn after(&self, id: &str) -> Option<u32> {
        self.0.get(id).map(|count| count.saturating_add(1))
    }
}

/// Resets the idle time of the entries the subscription holds, until `stop`: one loop per slot
/// group side by side, so a cluster master that does not answer delays only its own slots'
/// resets (one pipeline over every slot waited for the slowest part before the next round).
pub(crate) async fn keepalive_loop(sub: Arc<Sub>, stop: CancellationToken) {
    let groups = (0..sub.slot_groups.len()).map(|group| keepalive_group(&sub, group, &stop));
    futures_util::future::join_all(groups).await;
}

/// The keep-alive of the entries held in the streams of slot group `group`.
async fn keepalive_group(sub: &Sub, group: usize, stop: &CancellationToken) {
    let idle = sub.options.claim_idle_time;
    // Resets at a quarter of `idle`, looked for every eighth: a reset comes at most three
    // eighths after the last one, and each refused round adds an eighth, so it takes five
    // refused rounds in a row (about five eighths of `idle` without Redis) before another
    // consumer may claim an entry in hand.
    let period = (idle / 8).max(Duration::from_millis(10));
    let older_than = idle / 4;
    let in_group = |key: &str| {
        sub.by_key
            .get(key)
            .is_some_and(|&stream| sub.slot_group_of.get(stream) == Some(&group))
    };
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        let sent_at = Instant::now();
        let stale = sub.flights.stale(sub.id, older_than, sent_at, in_group);
        if stale.is_empty() {
            continue;
        }
        let mut by_stream: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, id) in stale {
            by_stream.entry(key).or_default().push(id);
        }
        let mut pipe = redis::pipe();
        let mut count = 0;
        for (key, ids) in &by_stream {
            count += ids.len();
            pipe.cmd("XCLAIM")
                .arg(key)
                .arg(&*sub.group)
                .arg(&sub.consumer)
                .arg(0)
                .arg(ids)
                .arg("JUSTID")
                .ignore();
        }
        let span = tracing::debug_span!("keepalive", group = %sub.group, entries = count);
        let result: Result<()> = sub
            .redis
            .pipe("XCLAIM", &sub.describe, &pipe)
            .instrument(span)
            .await;
        match result {
            // Recorded only now: entries whose reset failed are tried again next round.
            Ok(()) => {
                for (key, ids) in &by_stream {
                    sub.flights.touch(key, ids, sent_at);
                }
            }
            Err(err) => {
                let streams: Vec<&str> = by_stream.keys().map(String::as_str).collect();
                tracing::warn!(
                    group = %sub.group,
                    streams = %streams.join(", "),
                    entries = count,
                    error = %err,
                    "could not reset the idle time of entries being handled; trying again in \
                     {period:?}; another consumer may claim them after claim_idle_time"
                );
            }
        }
    }
}

/// Gives entries back: their delivery count is set back by one and they are made claimable at
/// once (see the module docs). They stay pending, so nothing is lost if this fails.
pub(crate) async fn release(sub: &Sub, deliveries: Vec<Delivery>) {
    if deliveries.is_empty() {
        return;
    }
    // Out of the held entries before they become claimable: a claim pass that found one
    // still held would raise its delivery count and reset its idle time, and skip it.
    for delivery in &deliveries {
        sub.flights
            .remove(&sub.streams[delivery.stream].key, &delivery.id);
    }
    let idle = millis(sub.options.claim_idle_time);
    let mut pipe = redis::pipe();
    for delivery in &deliveries {
        pipe.cmd("XCLAIM")
            .arg(&sub.streams[delivery.stream].key)
            .arg(&*sub.group)
            .arg(&sub.consumer)
            .arg(0)
            .arg(&delivery.id)
            .arg("IDLE")
            .arg(idle)
            .arg("RETRYCOUNT")
            .arg(delivery.deliveries.saturating_sub(1))
            .arg("JUSTID")
            .ignore();
    }
    let span = tracing::debug_span!("release", group = %sub.group, entries = deliveries.len());
    let result: Result<()> = sub
        .redis
        .pipe("XCLAIM", &sub.describe, &pipe)
        .instrument(span)
        .await;
    match result {
        Ok(()) => tracing::debug!(
            group = %sub.group,
            entries = deliveries.len(),
            "released entries for redelivery"
        ),
        Err(err) => tracing::warn!(
            group = %sub.group,
            entries = deliveries.len(),
            error = %err,
            "could not release entries; they stay pending and are claimed after claim_idle_time"
        ),
    }
}
