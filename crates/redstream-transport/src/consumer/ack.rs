//! Batched acknowledgements: one `XACK` per stream per batch, in one round trip.

use std::collections::BTreeMap;
use std::sync::Arc;

use redstream_core::Result;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::lock;
use super::sub::{Ack, Sub, transient_backoff};
use crate::telemetry;

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

/// Collects acknowledgements and sends them in batches until stopped, then sends the rest.
pub(super) async fn ack_loop(
    sub: Arc<Sub>,
    mut rx: mpsc::UnboundedReceiver<Ack>,
    stop: CancellationToken,
) {
    let options = &sub.options;
    let mut batch: Vec<Ack> = Vec::new();
    let mut due: Option<tokio::time::Instant> = None;
    let mut failures = 0u32;
    loop {
        let flush_now = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            ack = rx.recv() => {
                let Some(ack) = ack else { break };
                if batch.is_empty() {
                    due = Some(tokio::time::Instant::now() + options.ack_interval);
                }
                batch.push(ack);
                (failures == 0 && batch.len() >= options.ack_batch_size)
                    || due.is_some_and(|due| due <= tokio::time::Instant::now())
            }
            () = sleep_until(due) => true,
        };
        if !flush_now {
            continue;
        }
        match sub.flush_acks(&batch).await {
            Ok(()) => {
                batch.clear();
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
    // Stopping: everything handled is in the channel by now (the workers are done).
    while let Ok(ack) = rx.try_recv() {
        batch.push(ack);
    }
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

async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}
