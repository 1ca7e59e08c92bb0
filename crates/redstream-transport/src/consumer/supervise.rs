//! A subscription's tasks, started together and stopped in order.

use std::sync::Arc;

use redstream_core::connection::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ack::ack_loop;
use super::claim;
use super::handle::{WorkerStop, worker};
use super::handler::Handling;
use super::read::read_loop;
use super::registry::Drained;
use super::sub::Sub;

/// Runs a subscription until it is stopped, then drains it.
pub(super) async fn supervise(
    sub: Arc<Sub>,
    handling: Handling,
    conns: Vec<Connection>,
) -> Drained {
    // One reader per slot group (one in all outside a cluster); each group's claim passes start
    // once its reader has re-read its own pending entries.
    let mut readers = Vec::with_capacity(conns.len());
    let mut readies = Vec::with_capacity(conns.len());
    for (group, conn) in conns.into_iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        readies.push(rx);
        readers.push(tokio::spawn(
            read_loop(Arc::clone(&sub), group, conn, tx).in_current_span(),
        ));
    }
    let claimer = tokio::spawn(claim::claim_loop(Arc::clone(&sub), readies).in_current_span());
    let keepalive_stop = CancellationToken::new();
    let keepalive = tokio::spawn(
        claim::keepalive_loop(Arc::clone(&sub), keepalive_stop.clone()).in_current_span(),
    );
    let acker_stop = CancellationToken::new();
    let ackers: Vec<_> = (0..sub.acks.len())
        .map(|group| {
            tokio::spawn(ack_loop(Arc::clone(&sub), group, acker_stop.clone()).in_current_span())
        })
        .collect();
    let workers_stop = WorkerStop::default();
    let mut workers = JoinSet::new();
    for _ in 0..sub.options.handler_concurrency {
        workers.spawn(
            worker(Arc::clone(&sub), handling.clone(), workers_stop.clone()).in_current_span(),
        );
    }

    sub.stop.cancelled().await;
    tracing::debug!("subscription stopping");
    let mut leftover = Vec::new();
    for reader in readers {
        leftover.extend(reader.await.unwrap_or_default());
    }
    leftover.extend(claimer.await.unwrap_or_default());

    workers_stop.stop();
    let drain_timeout = sub.options.drain_timeout;
    let all_done = async { while workers.join_next().await.is_some() {} };
    let abandoned = match tokio::time::timeout(drain_timeout, all_done).await {
        Ok(()) => 0,
        Err(_) => {
            let running = workers.len();
            tracing::warn!(
                running,
                ?drain_timeout,
                "handlers still running at the drain timeout were aborted; their entries stay \
                 pending and are delivered again"
            );
            workers.abort_all();
            while workers.join_next().await.is_some() {}
            running
        }
    };

    sub.buffer.close();
    leftover.extend(sub.buffer.drain());
    if !leftover.is_empty() {
        claim::release(&sub, leftover).await;
    }
    keepalive_stop.cancel();
    let _ = keepalive.await;
    acker_stop.cancel();
    for acker in ackers {
        let _ = acker.await;
    }
    sub.flights.remove_subscription(sub.id);
    tracing::debug!("subscription stopped");
    Drained { abandoned }
}
