//! The public API of consuming: `subscribe`, `unsubscribe`, `backpressure_stats`.

use redstream_core::connection::Topology;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use redstream_core::{
    BackpressureStats, Error, ErrorKind, Event, HandlerResult, Result, Subscriber,
    SubscriptionHandle,
};
use tracing::Instrument;

use super::ack::AckQueue;
use super::buffer::Buffer;
use super::handler::{Handling, erase};
use super::lock;
use super::registry::{Drained, Running};
use super::sub::{HandledMetrics, Mode, StreamSpec, Sub, describe_streams};
use super::supervise::supervise;
use crate::commands::Traffic;
use crate::config::StartFrom;
use crate::connection;
use crate::keys::validate_event_type;
use crate::transport::RedisTransport;

/// Subscription ids are unique in the process, so a handle of another transport is never
/// mistaken for one of this transport.
static NEXT_SUBSCRIPTION_ID: AtomicU64 = AtomicU64::new(1);

impl RedisTransport {
    /// Starts handling events of the given types with `handler`, as a member of the configured
    /// consumer group, and returns a handle for [`unsubscribe`](Self::unsubscribe).
    ///
    /// Each type is read from its one stream (`events:order.created` with the default prefix
    /// and layout), whatever the events' priorities. The group is created on each stream if it
    /// does not exist (at [`start_from`](crate::TransportOptions::start_from)); when this
    /// returns, every event published afterwards is delivered to the group. The handler's `Ok`
    /// acknowledges the event; an `Err` or a panic leaves it for redelivery and, after
    /// [`max_deliveries`](crate::TransportOptions::max_deliveries), the dead-letter stream. An
    /// entry whose envelope has another type than its stream's is dead-lettered. Delivery is
    /// at least once: deduplicate on [`Event::id`] where that matters.
    ///
    /// Plain `async` closures work, and so does the `|event| Box::pin(async move { .. })` style.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an empty list or an invalid event type (nothing is
    /// subscribed then); a Redis error if the groups cannot be created or the reading connection
    /// cannot be opened.
    pub async fn subscribe<F, Fut>(
        &self,
        event_types: Vec<String>,
        handler: F,
    ) -> Result<SubscriptionHandle>
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let types = redstream_core::subscription_types(event_types, |event_type| {
            validate_event_type(event_type, &self.inner.options.limits)
        })?;
        let streams = types
            .iter()
            .map(|event_type| StreamSpec::of_type(self.inner.names.stream(event_type), event_type))
            .collect();
        self.start_subscription(
            Mode::Events,
            self.inner.config.consumer_group.clone(),
            types,
            streams,
            self.inner.options.start_from,
            Handling::Events(erase(handler)),
        )
        .await
    }

    /// Stops a subscription: reading stops, running handlers finish (at most
    /// [`drain_timeout`](crate::TransportOptions::drain_timeout)), what finished is acknowledged,
    /// and entries read but not started are released for other consumers. Returns when all that
    /// is done.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a handle that is not an active subscription of this
    /// transport; [`ErrorKind::Timeout`] when handlers were still running at the drain timeout
    /// (they were aborted, and their entries stay pending for redelivery).
    pub async fn unsubscribe(&self, handle: &SubscriptionHandle) -> Result<()> {
        let running = lock(&self.inner.subscriptions.running).remove(&handle.id());
        let Some(running) = running else {
            return Err(Error::invalid_input(
                format!("subscription handle {handle:?}"),
                "is not an active subscription of this transport (already unsubscribed, or made \
                 by another transport)",
            ));
        };
        running.stop.cancel();
        match running.task.await {
            Ok(Drained { abandoned: 0 }) => Ok(()),
            Ok(Drained { abandoned }) => Err(Error::Timeout {
                operation: format!(
                    "unsubscribe of subscription {} of group {:?} ({abandoned} handlers were \
                     still running and were aborted; their entries stay pending for redelivery)",
                    handle.id(),
                    handle.group()
                )
                .into(),
                after: self.inner.options.drain_timeout,
            }),
            Err(err) => Err(Error::backend(
                ErrorKind::Unexpected,
                "unsubscribe",
                format!("subscription {}", handle.id()),
                format!("the subscription task failed: {err}"),
            )),
        }
    }

    /// The buffers between reading and handling, summed over this transport's subscriptions.
    ///
    /// Each subscription has a buffer of `backpressure.max_queue_size` entries, so
    /// `max_queue_size` is that times the number of subscriptions (or the configured size when
    /// there is none). `dropped_events` and `rejected_events` count entries that did not fit:
    /// they were left pending in Redis and delivered again later, not lost.
    pub async fn backpressure_stats(&self) -> BackpressureStats {
        self.inner
            .subscriptions
            .stats(self.inner.config.backpressure)
    }

    /// Starts a subscription on `streams`; shared by every way of subscribing.
    pub(crate) async fn start_subscription(
        &self,
        mode: Mode,
        group: String,
        names: Vec<String>,
        streams: Vec<StreamSpec>,
        start_from: StartFrom,
        handling: Handling,
    ) -> Result<SubscriptionHandle> {
        let inner = &self.inner;
        let options = &inner.options;
        let buffer = Buffer::new(inner.config.backpressure)?;
        let id = NEXT_SUBSCRIPTION_ID.fetch_add(1, Ordering::Relaxed);
        let describe = describe_streams(&streams);
        let by_key = streams
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key.clone(), i))
            .collect();
        let slot_groups = slot_groups(inner.conn.topology(), &streams);
        let mut slot_group_of = vec![0; streams.len()];
        for (group, members) in slot_groups.iter().enumerate() {
            for &stream in members {
                slot_group_of[stream] = group;
            }
        }
        // As many handled entries may wait for their acknowledgement as the buffer holds,
        // shared out among the slot groups' ackers (at least a batch each).
        let ack_limit = inner
            .config
            .backpressure
            .max_queue_size
            .div_ceil(slot_groups.len().max(1));
        let acks = slot_groups
            .iter()
            .map(|_| AckQueue::new(options.ack_batch_size, ack_limit))
            .collect();
        let group_label: Arc<str> = Arc::from(group.as_str());
        let handled = streams
            .iter()
            .map(|spec| HandledMetrics::register(spec, &group_label))
            .collect();
        let sub = Arc::new(Sub {
            id,
            mode,
            group: group_label,
            handled,
            consumer: inner.config.consumer_name.clone(),
            streams,
            by_key,
            describe,
            redis: inner.commands(Traffic::Consumer),
            conn: inner.conn.clone(),
            slot_groups,
            names: inner.names.clone(),
            options: options.clone(),
            buffer: buffer.clone(),
            flights: inner.subscriptions.flights(&group),
            envelopes: handling.reads_envelopes(),
            failures: Mutex::default(),
            acks,
            slot_group_of,
            claiming: AtomicUsize::new(0),
            stop: inner.shutdown.child_token(),
        });
        let all: Vec<usize> = (0..sub.streams.len()).collect();
        sub.create_groups(&all, start_from.id()).await?;
        let mut conns = Vec::with_capacity(sub.slot_groups.len());
        for _ in &sub.slot_groups {
            conns.push(connection::blocking_connection(&sub.conn, options).await?);
        }

        let stop = sub.stop.clone();
        let span = tracing::info_span!(
            "subscription",
            subscription = id,
            group = %group,
            consumer = %sub.consumer,
        );
        let task = tokio::spawn(supervise(Arc::clone(&sub), handling, conns).instrument(span));
        lock(&inner.subscriptions.running).insert(id, Running { stop, buffer, task });
        tracing::debug!(
            subscription = id,
            group = %group,
            consumer = %sub.consumer,
            streams = %sub.describe,
            "subscription started"
        );
        Ok(SubscriptionHandle::new(id, group, names))
    }
}

impl Subscriber for RedisTransport {
    fn subscribe<F, Fut>(
        &self,
        event_types: Vec<String>,
        handler: F,
    ) -> impl Future<Output = Result<SubscriptionHandle>> + Send
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        RedisTransport::subscribe(self, event_types, handler)
    }

    fn unsubscribe(&self, handle: &SubscriptionHandle) -> impl Future<Output = Result<()>> + Send {
        RedisTransport::unsubscribe(self, handle)
    }
}

/// The indices of `streams` grouped by cluster slot, in their order of first appearance: one
/// group of every stream outside a cluster.
fn slot_groups(topology: Topology, streams: &[StreamSpec]) -> Vec<Vec<usize>> {
    if topology != Topology::Cluster {
        return vec![(0..streams.len()).collect()];
    }
    let mut groups: Vec<(redis::cluster_routing::Slot, Vec<usize>)> = Vec::new();
    for (i, spec) in streams.iter().enumerate() {
        let slot = redstream_core::keys::slot(spec.key.as_bytes());
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(i),
            None => groups.push((slot, vec![i])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}
