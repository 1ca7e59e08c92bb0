//! Batched acknowledgements: one `XACK` per stream per batch, in one round trip. Each slot group
//! of a subscription (one in all outside a cluster) has its own queue and acker, so a cluster
//! master that is down holds back the acknowledgements of its own slots only.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use redstream_core::Result;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::lock;
use super::sub::{Sub, transient_backoff};
use crate::telemetry;

/// An acknowledgement waiting to be sent.
pub(super) struct Ack {
    pub(super) stream: usize,
    pub(super) id: String,
}

/// Handled entries waiting for the acker, which sends them in batches.
///
/// The workers add to a list under a lock, and wake the acker twice per batch: at the first
/// entry (it starts the `ack_interval` clock) and when the list reaches `ack_batch_size`. A
/// channel would wake it for every entry it finds waiting on an empty queue, which with fast
/// handlers is most of them: a wake-up of another task, often on another thread, per event.
///
/// The handled entries not acknowledged yet are bounded: while `XACK` fails (an ACL without
/// it, a cluster node down) the readers stop reading at `limit` of them
/// ([`room`](Self::room)), rather than handle more and keep them all in memory.
pub(super) struct AckQueue {
    waiting: Mutex<Vec<Ack>>,
    wake: Notify,
    batch_size: usize,
    /// Taken by the acker and not acknowledged yet (a batch being sent, or one that failed).
    sending: AtomicUsize,
    /// Notified after each acknowledged batch, for a reader waiting in [`Self::room`].
    flushed: Notify,
    limit: usize,
}

impl AckQueue {
    /// A queue sent in batches of `batch_size`, whose readers stop at `limit` handled entries
    /// not acknowledged yet (at least one batch).
    pub(super) fn new(batch_size: usize, limit: usize) -> Self {
        let batch_size = batch_size.max(1);
        Self {
            waiting: Mutex::default(),
            wake: Notify::new(),
            batch_size,
            sending: AtomicUsize::new(0),
            flushed: Notify::new(),
            limit: limit.max(batch_size),
        }
    }

    /// Handled entries not acknowledged yet: waiting, or taken by the acker.
    pub(super) fn unacknowledged(&self) -> usize {
        self.len() + self.sending.load(Ordering::Acquire)
    }

    /// Waits until fewer than the limit of handled entries wait for their acknowledgement;
    /// `false` if `stop` came first. Called by the readers once per read, not per entry.
    pub(super) async fn room(&self, stop: &CancellationToken, group: &str) -> bool {
        if self.unacknowledged() < self.limit {
            return true;
        }
        let mut warned = false;
        loop {
            let mut flushed = pin!(self.flushed.notified());
            // Enabled before the count is looked at: a flush after the look wakes this wait.
            flushed.as_mut().enable();
            let unacknowledged = self.unacknowledged();
            if unacknowledged < self.limit {
                return true;
            }
            if !warned {
                warned = true;
                tracing::warn!(
                    group,
                    unacknowledged,
                    "reading paused: handled entries wait for their acknowledgement (XACK \
                     fails); reading goes on once they are acknowledged"
                );
            }
            tokio::select! {
                biased;
                () = stop.cancelled() => return false,
                () = flushed => {}
            }
        }
    }

    /// Queues an acknowledgement; wakes the acker when it has something new to decide.
    pub(super) fn push(&self, ack: Ack) {
        let len = {
            let mut waiting = lock(&self.waiting);
            waiting.push(ack);
            waiting.len()
        };
        if len == 1 || len == self.batch_size {
            // A permit is kept if the acker is not waiting yet: no wake-up is lost.
            self.wake.notify_one();
        }
    }

    fn len(&self) -> usize {
        lock(&self.waiting).len()
    }

    /// Moves everything waiting to the end of `batch`.
    fn take_into(&self, batch: &mut Vec<Ack>) {
        batch.append(&mut lock(&self.waiting));
    }
}

impl Sub {
    /// Sends one batch of acknowledgements: one `XACK` per stream, in one round trip.
    async fn flush_acks(&self, batch: &[Ack]) -> Result<()> {
        let mut by_stream: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        for ack in batch {
            by_stream.entry(ack.stream).or_default().push(&ack.id);
        }
        let mut pipe = redis::pipe();
        for (&stream, ids) in &by_stream {
            pipe.cmd("XACK")
                .arg(&self.spec(stream).key)
                .arg(&*self.group)
                .arg(ids);
        }
        let span = tracing::debug_span!("ack", group = %self.group, entries = batch.len());
        let _: Vec<i64> = self
            .redis
            .pipe("XACK", &self.describe, &pipe)
            .instrument(span)
            .await?;
        for (&stream, ids) in &by_stream {
            self.flights
                .remove_all(&self.spec(stream).key, ids.iter().copied());
        }
        let mut failures = lock(&self.failures);
        // Usually empty: a failure is recorded only for an entry whose handler failed.
        if !failures.is_empty() {
            for ack in batch {
                failures.remove(&(ack.stream, ack.id.clone()));
            }
        }
        drop(failures);
        metrics::counter!(telemetry::ACKED, "group" => Arc::clone(&self.group))
            .increment(batch.len() as u64);
        Ok(())
    }
}

/// Collects the acknowledgements of slot group `group` (every stream outside a cluster) and
/// sends them in batches until stopped, then sends the rest.
pub(super) async fn ack_loop(sub: Arc<Sub>, group: usize, stop: CancellationToken) {
    let options = &sub.options;
    let queue = &sub.acks[group];
    // Taken from the queue and not acknowledged yet: what a failed flush keeps for the next.
    let mut batch: Vec<Ack> = Vec::new();
    let mut due: Option<tokio::time::Instant> = None;
    let mut failures = 0u32;
    loop {
        let waiting = queue.len() + batch.len();
        if waiting == 0 {
            due = None;
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                () = queue.wake.notified() => continue,
            }
        }
        let now = tokio::time::Instant::now();
        let due_at = *due.get_or_insert(now + options.ack_interval);
        let flush_now = (failures == 0 && waiting >= options.ack_batch_size) || due_at <= now;
        if !flush_now {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                () = queue.wake.notified() => {}
                () = tokio::time::sleep_until(due_at) => {}
            }
            continue;
        }
        queue.take_into(&mut batch);
        queue.sending.store(batch.len(), Ordering::Release);
        match sub.flush_acks(&batch).await {
            Ok(()) => {
                batch.clear();
                queue.sending.store(0, Ordering::Release);
                queue.flushed.notify_waiters();
                due = None;
                failures = 0;
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                let delay = transient_backoff().delay_for(failures);
                tracing::warn!(
                    error = %err,
                    entries = batch.len(),
                    failures,
                    "acknowledging failed; the entries stay pending until it succeeds"
                );
                due = Some(tokio::time::Instant::now() + delay);
            }
        }
    }
    // Stopping: everything handled is in the queue by now (the workers are done).
    queue.take_into(&mut batch);
    for attempt in 1..=3 {
        if batch.is_empty() {
            break;
        }
        match sub.flush_acks(&batch).await {
            Ok(()) => batch.clear(),
            Err(err) => {
                tracing::warn!(error = %err, attempt, entries = batch.len(), "final acknowledgement failed");
                tokio::time::sleep(transient_backoff().delay_for(attempt)).await;
            }
        }
    }
    if !batch.is_empty() {
        tracing::warn!(
            entries = batch.len(),
            "handled entries could not be acknowledged; they will be delivered again"
        );
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn ack(n: usize) -> Ack {
        Ack {
            stream: 0,
            id: format!("{n}-0"),
        }
    }

    /// Whether the queue has a wake-up for the acker now.
    fn woken(queue: &AckQueue) -> bool {
        queue.wake.notified().now_or_never().is_some()
    }

    #[test]
    fn the_acker_is_woken_at_the_first_entry_and_at_a_full_batch_only() {
        let queue = AckQueue::new(4, 100);
        assert!(!woken(&queue));
        queue.push(ack(1));
        assert!(woken(&queue), "the first entry starts the interval");
        for n in 2..4 {
            queue.push(ack(n));
            assert!(!woken(&queue), "entry {n} of a batch of 4");
        }
        queue.push(ack(4));
        assert!(woken(&queue), "a full batch");
        queue.push(ack(5));
        assert!(!woken(&queue), "past a full batch, the acker knows already");

        let mut batch = vec![ack(0)];
        queue.take_into(&mut batch);
        let ids: Vec<&str> = batch.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["0-0", "1-0", "2-0", "3-0", "4-0", "5-0"]);
        assert_eq!(queue.len(), 0);
        queue.push(ack(6));
        assert!(woken(&queue), "the next batch's first entry");
    }
}
