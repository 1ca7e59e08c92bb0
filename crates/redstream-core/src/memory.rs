//! [`MemoryBus`]: an in-process [`Publisher`] + [`Subscriber`] with Redis Streams semantics.
//!
//! It exists so that handlers can be unit-tested without a Redis server, and so that the
//! [`conformance`](crate::conformance) suite has a reference implementation. It models what a
//! handler can observe of the Redis transport:
//!
//! - **Streams.** Each event type has an append-only log. [`publish`](Publisher::publish)
//!   returns ids shaped like Redis entry ids, `"{seq}-0"`, with `seq` increasing across the bus.
//!   Events are validated and size-checked by [`wire::encode`](crate::wire::encode) against the
//!   handle's [`EventLimits`]: the checks an event must pass to be written to a Redis stream.
//! - **Consumer groups.** Every handle belongs to one group ([`MemoryBus::with_group`]). A group
//!   is created for an event type by the first subscription that needs it and starts at the end
//!   of the log, like `XGROUP CREATE <stream> <group> $`: it sees events published after that.
//!   A group that already exists keeps its position, so a group that resubscribes picks up what
//!   was published while it had no subscription. Within a group each event goes to one
//!   subscription; every group sees every event.
//! - **Acknowledgement and redelivery.** A handler's `Ok` acknowledges the event. An `Err`, or
//!   a panic, makes it pending again: the next free subscription of the group (possibly the same
//!   one) receives it again, before any new event. After
//!   [`max_deliveries`](MemoryBus::with_max_deliveries) failed deliveries it moves to the bus's
//!   [dead letters](MemoryBus::dead_letters) with the last error. Unlike Redis, redelivery is
//!   immediate: there is no idle time before a pending entry is claimed.
//! - **Order.** A subscription runs one handler at a time and takes its events in publish order
//!   (redeliveries first), so a single subscriber sees its types in order.
//!
//! Not modelled: persistence, stream trimming, consumer names and priorities. Logs are never
//! trimmed, so a bus holds every event published to it until the last handle is dropped.
//!
//! Dropping the last handle of a bus stops its subscriptions once their running handlers return.
//! A handler that holds a handle of its own bus keeps the bus alive; unsubscribe it explicitly.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, EventLimits, validate_event_type};
use crate::handler::{HandlerResult, run_isolated};
use crate::traits::{Publisher, Subscriber, SubscriptionHandle, subscription_types};

/// Subscription ids are unique in the process, so a handle from another bus is never mistaken
/// for one of this bus.
static NEXT_SUBSCRIPTION_ID: AtomicU64 = AtomicU64::new(1);

/// An in-process event bus with consumer groups, acknowledgements, redelivery and dead letters.
///
/// Clones share the same bus; [`with_group`](Self::with_group) gives a handle on the same bus
/// that subscribes as a member of another consumer group. Settings (`with_*`) belong to the
/// handle they are set on and are inherited by handles made from it.
///
/// ```
/// use redstream_core::{Event, HandlerResult, MemoryBus, Publisher, Subscriber};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> redstream_core::Result<()> {
/// let bus = MemoryBus::new().with_max_deliveries(2);
/// let (started, mut deliveries) = tokio::sync::mpsc::unbounded_channel();
/// let handle = bus
///     .subscribe(vec!["payment.failed".into()], move |event: Event| {
///         let started = started.clone();
///         async move {
///             started.send(event.id().clone())?;
///             HandlerResult::Err("card declined".into())
///         }
///     })
///     .await?;
/// let event = Event::try_new("payment.failed", json!({ "payment_id": 7 }))?;
/// bus.publish(event.clone()).await?;
///
/// // Both deliveries started; unsubscribe waits for the running one and settles it.
/// assert_eq!(deliveries.recv().await.as_ref(), Some(event.id()));
/// assert_eq!(deliveries.recv().await.as_ref(), Some(event.id()));
/// bus.unsubscribe(&handle).await?;
///
/// let dead = bus.dead_letters();
/// assert_eq!(dead.len(), 1);
/// assert_eq!(dead[0].event, event);
/// assert_eq!(dead[0].error, "card declined");
/// assert_eq!(dead[0].deliveries, 2);
/// assert_eq!(bus.pending("payment.failed", "default"), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryBus {
    owner: Arc<Owner>,
    group: Arc<str>,
    max_deliveries: u32,
    drain_timeout: Duration,
    limits: EventLimits,
}

/// One event that failed [`max_deliveries`](MemoryBus::with_max_deliveries) times, as the Redis
/// transport writes it to its dead-letter stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The event, as published.
    pub event: Event,
    /// The error of the last delivery (a handler's error message, or why it was given up).
    pub error: String,
    /// The stream (event type) the event came from.
    pub original_type: String,
    /// The consumer group that gave up on it.
    pub group: String,
    /// How many times it was delivered.
    pub deliveries: u32,
}

impl MemoryBus {
    /// The consumer group of [`MemoryBus::new`].
    pub const DEFAULT_GROUP: &'static str = "default";
    /// Deliveries of an event before it is dead-lettered, unless set otherwise.
    pub const DEFAULT_MAX_DELIVERIES: u32 = 3;
    /// How long [`unsubscribe`](Subscriber::unsubscribe) waits for a running handler by default.
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

    /// A new, empty bus; this handle subscribes as a member of the group `"default"`.
    #[must_use]
    pub fn new() -> Self {
        Self {
            owner: Arc::new(Owner {
                shared: Arc::new(Shared {
                    state: Mutex::new(State::default()),
                    wake: Notify::new(),
                }),
            }),
            group: Arc::from(Self::DEFAULT_GROUP),
            max_deliveries: Self::DEFAULT_MAX_DELIVERIES,
            drain_timeout: Self::DEFAULT_DRAIN_TIMEOUT,
            limits: EventLimits::DEFAULT,
        }
    }

    /// A handle on the same bus that subscribes as a member of consumer group `group`, like a
    /// Redis client configured with another `consumer_group`. Other settings are copied.
    ///
    /// The name must be non-empty and free of whitespace and control characters; it is checked
    /// when the handle subscribes, which fails with [`ErrorKind::InvalidInput`] otherwise.
    #[must_use]
    pub fn with_group(&self, group: impl Into<String>) -> Self {
        Self {
            group: Arc::from(group.into()),
            ..self.clone()
        }
    }

    /// Sets how many times an event is delivered to this handle's group before it is moved to
    /// the dead letters (default 3). `0` is taken as `1`: every event is delivered at least once.
    #[must_use]
    pub fn with_max_deliveries(mut self, max_deliveries: u32) -> Self {
        self.max_deliveries = max_deliveries.max(1);
        self
    }

    /// Sets the limits events are validated against when published (default
    /// [`EventLimits::DEFAULT`]), and the longest accepted event type when subscribing.
    #[must_use]
    pub fn with_limits(mut self, limits: EventLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets how long [`unsubscribe`](Subscriber::unsubscribe) waits for a running handler
    /// (default 30 s).
    #[must_use]
    pub fn with_drain_timeout(mut self, drain_timeout: Duration) -> Self {
        self.drain_timeout = drain_timeout;
        self
    }

    /// The consumer group this handle subscribes as.
    #[must_use]
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Every event moved to the dead letters so far, oldest first, across all groups.
    #[must_use]
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.shared().lock().dead_letters.clone()
    }

    /// How many events were ever published with type `event_type` (logs are never trimmed).
    #[must_use]
    pub fn len(&self, event_type: &str) -> usize {
        self.shared()
            .lock()
            .streams
            .get(event_type)
            .map_or(0, |stream| stream.entries.len())
    }

    /// How many events of type `event_type` consumer group `group` has received and not yet
    /// acknowledged or dead-lettered: running in a handler, or waiting for redelivery (what
    /// `XPENDING` counts). `0` for an unknown type or group.
    #[must_use]
    pub fn pending(&self, event_type: &str, group: &str) -> usize {
        self.shared()
            .lock()
            .streams
            .get(event_type)
            .and_then(|stream| stream.groups.get(group))
            .map_or(0, |g| g.in_flight.len() + g.retry.len())
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// Checks the group name and event types and returns the deduplicated types.
    fn check_subscription(&self, event_types: Vec<String>) -> Result<Vec<String>> {
        self.limits.validate()?;
        validate_group(&self.group, self.limits.max_string_len)?;
        subscription_types(event_types, |event_type| {
            validate_event_type(event_type, self.limits.max_event_type_len)
        })
    }

    fn start_subscription<F, Fut>(
        &self,
        event_types: Vec<String>,
        handler: F,
    ) -> Result<SubscriptionHandle>
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let types = self.check_subscription(event_types)?;
        let sub = Arc::new(SubContext {
            id: NEXT_SUBSCRIPTION_ID.fetch_add(1, Ordering::Relaxed),
            group: Arc::clone(&self.group),
            types: Arc::from(types),
            max_deliveries: self.max_deliveries,
        });
        let shared = Arc::clone(self.shared());
        let mut state = shared.lock();
        for event_type in sub.types.iter() {
            let stream = state.streams.entry(event_type.clone()).or_default();
            let end = stream.entries.len();
            stream
                .groups
                .entry(sub.group.to_string())
                .or_insert_with(|| Group::starting_at(end));
        }
        // Spawned while the state is locked, so the task cannot look for its registration
        // before it exists; it waits for the lock for at most this short section.
        let task = tokio::spawn(run_subscription(
            Arc::clone(&shared),
            Arc::clone(&sub),
            Arc::new(handler),
        ));
        state.subscriptions.insert(
            sub.id,
            Registration {
                sub: Arc::clone(&sub),
                task,
            },
        );
        drop(state);
        tracing::debug!(
            subscription = sub.id,
            group = %sub.group,
            event_types = ?sub.types,
            "memory bus subscription started"
        );
        Ok(SubscriptionHandle::new(
            sub.id,
            Arc::clone(&sub.group),
            Arc::clone(&sub.types),
        ))
    }

    async fn stop_subscription(&self, handle: &SubscriptionHandle) -> Result<()> {
        let shared = self.shared();
        let registration = shared.lock().subscriptions.remove(&handle.id());
        let Some(Registration { sub, mut task }) = registration else {
            return Err(Error::invalid_input(
                format!("subscription handle {handle:?}"),
                "is not an active subscription of this bus (already unsubscribed, or made by \
                 another bus)",
            ));
        };
        // The task sees that its registration is gone when it wakes or finishes its handler.
        shared.wake.notify_waiters();
        match tokio::time::timeout(self.drain_timeout, &mut task).await {
            Ok(Ok(())) => {
                tracing::debug!(subscription = sub.id, group = %sub.group, "memory bus subscription stopped");
                Ok(())
            }
            Ok(Err(err)) => Err(Error::backend(
                ErrorKind::Unexpected,
                "unsubscribe",
                format!("memory bus subscription {}", sub.id),
                format!("the subscription task failed: {err}"),
            )),
            Err(_elapsed) => {
                // Aborting the task drops the handler's task guard, which aborts the handler.
                task.abort();
                let reason = format!(
                    "the handler was still running when unsubscribe gave up after the drain \
                     timeout of {:?}",
                    self.drain_timeout
                );
                let redeliver = shared.lock().reclaim(&sub, &reason);
                if redeliver {
                    shared.wake.notify_waiters();
                }
                tracing::warn!(
                    subscription = sub.id,
                    group = %sub.group,
                    drain_timeout = ?self.drain_timeout,
                    "memory bus unsubscribe: handler still running after the drain timeout; \
                     its event is pending again"
                );
                Err(Error::Timeout {
                    operation: format!(
                        "unsubscribe of memory bus subscription {} (waiting for its running \
                         handler; the event was returned to group {:?})",
                        sub.id, sub.group
                    )
                    .into(),
                    after: self.drain_timeout,
                })
            }
        }
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBus")
            .field("group", &&*self.group)
            .field("max_deliveries", &self.max_deliveries)
            .field("drain_timeout", &self.drain_timeout)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Publisher for MemoryBus {
    async fn publish(&self, event: Event) -> Result<String> {
        self.limits.validate()?;
        crate::wire::encode(&event, &self.limits)?;
        let id = self.shared().lock().append(event);
        self.shared().wake.notify_waiters();
        Ok(id)
    }

    async fn publish_batch(&self, events: Vec<Event>) -> Result<Vec<String>> {
        self.limits.validate()?;
        for event in &events {
            crate::wire::encode(event, &self.limits)?;
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let ids = {
            let mut state = self.shared().lock();
            events
                .into_iter()
                .map(|event| state.append(event))
                .collect()
        };
        self.shared().wake.notify_waiters();
        Ok(ids)
    }
}

impl Subscriber for MemoryBus {
    async fn subscribe<F, Fut>(
        &self,
        event_types: Vec<String>,
        handler: F,
    ) -> Result<SubscriptionHandle>
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.start_subscription(event_types, handler)
    }

    /// Stops taking events, waits up to the [drain timeout](MemoryBus::with_drain_timeout) for
    /// the running handler and settles its event (acknowledged on `Ok`, pending again on `Err`).
    ///
    /// If the handler is still running after the drain timeout, it is aborted, its event is
    /// pending again for the group, and this returns [`Error::Timeout`]; the subscription is
    /// stopped either way. An unknown handle is [`ErrorKind::InvalidInput`].
    async fn unsubscribe(&self, handle: &SubscriptionHandle) -> Result<()> {
        self.stop_subscription(handle).await
    }
}

fn validate_group(name: &str, max_len: usize) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_input(
            "consumer group \"\"",
            "must not be empty",
        ));
    }
    if name.len() > max_len {
        return Err(Error::invalid_input(
            format!("consumer group of {} bytes", name.len()),
            format!("must be at most {max_len} bytes"),
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid_input(
            format!("consumer group {name:?}"),
            format!("must not contain whitespace or control characters (found {c:?})"),
        ));
    }
    Ok(())
}

/// Held by every [`MemoryBus`] clone; when the last one goes, the subscriptions are told to stop.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_waiters();
    }
}

/// What the handles and the subscription tasks share.
struct Shared {
    state: Mutex<State>,
    /// Woken (`notify_waiters`) whenever a subscription may have something to do: an event was
    /// published, an event became pending again, a subscription was stopped, the bus closed.
    wake: Notify,
}

impl Shared {
    /// Locks the state. Nothing panics while holding the lock, so a poisoned lock still guards
    /// consistent state; recover it rather than spreading the panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State {
    /// Set when the last handle is dropped.
    closed: bool,
    /// The sequence number of the last published event.
    last_seq: u64,
    streams: HashMap<String, Stream>,
    dead_letters: Vec<DeadLetter>,
    /// Active subscriptions by id.
    subscriptions: HashMap<u64, Registration>,
}

/// The log of one event type and its consumer groups.
#[derive(Default)]
struct Stream {
    entries: Vec<Entry>,
    groups: HashMap<String, Group>,
}

struct Entry {
    seq: u64,
    event: Event,
}

/// One consumer group's view of one stream. Entries are referred to by their index in the log.
struct Group {
    /// The index of the first entry the group has not received yet.
    next: usize,
    /// Entries whose last delivery failed, waiting for redelivery: index → deliveries so far.
    retry: BTreeMap<usize, u32>,
    /// Entries being handled right now: index → delivery.
    in_flight: HashMap<usize, InFlight>,
}

impl Group {
    fn starting_at(next: usize) -> Self {
        Self {
            next,
            retry: BTreeMap::new(),
            in_flight: HashMap::new(),
        }
    }
}

struct InFlight {
    deliveries: u32,
    subscription: u64,
}

struct Registration {
    sub: Arc<SubContext>,
    task: JoinHandle<()>,
}

/// What a subscription task knows about itself.
struct SubContext {
    id: u64,
    group: Arc<str>,
    types: Arc<[String]>,
    max_deliveries: u32,
}

/// An event handed to a subscription.
struct Delivery {
    event_type: String,
    index: usize,
    deliveries: u32,
    event: Event,
}

impl State {
    fn append(&mut self, event: Event) -> String {
        self.last_seq += 1;
        let seq = self.last_seq;
        self.streams
            .entry(event.event_type.clone())
            .or_default()
            .entries
            .push(Entry { seq, event });
        format!("{seq}-0")
    }

    /// Takes the next event for `sub`: the oldest entry waiting for redelivery in its group
    /// across its types, else the oldest entry its group has not received.
    fn take_next(&mut self, sub: &SubContext) -> Option<Delivery> {
        // (seq, event type, index, is a redelivery)
        let mut best: Option<(u64, &str, usize, bool)> = None;
        for event_type in sub.types.iter() {
            let Some(stream) = self.streams.get(event_type) else {
                continue;
            };
            let Some(group) = stream.groups.get(&*sub.group) else {
                continue;
            };
            let candidate = match group.retry.first_key_value() {
                Some((&index, _)) => Some((index, true)),
                None => (group.next < stream.entries.len()).then_some((group.next, false)),
            };
            let Some((index, retry)) = candidate else {
                continue;
            };
            let seq = stream.entries[index].seq;
            // Redeliveries before new entries; then publish order.
            let better = best.is_none_or(|(best_seq, _, _, best_retry)| {
                (retry, Reverse(seq)) > (best_retry, Reverse(best_seq))
            });
            if better {
                best = Some((seq, event_type.as_str(), index, retry));
            }
        }
        let (_, event_type, index, retry) = best?;
        let event_type = event_type.to_owned();
        let stream = self.streams.get_mut(&event_type)?;
        let group = stream.groups.get_mut(&*sub.group)?;
        let deliveries = if retry {
            group.retry.remove(&index).unwrap_or(0) + 1
        } else {
            group.next += 1;
            1
        };
        group.in_flight.insert(
            index,
            InFlight {
                deliveries,
                subscription: sub.id,
            },
        );
        Some(Delivery {
            event_type,
            index,
            deliveries,
            event: stream.entries[index].event.clone(),
        })
    }

    /// Records the outcome of a delivery. Returns whether the event is pending for redelivery.
    fn settle(
        &mut self,
        sub: &SubContext,
        delivery: &Delivery,
        outcome: Result<(), String>,
    ) -> bool {
        let Some(stream) = self.streams.get_mut(&delivery.event_type) else {
            return false;
        };
        let Some(group) = stream.groups.get_mut(&*sub.group) else {
            return false;
        };
        // The entry may have been reclaimed by an unsubscribe that gave up waiting.
        match group.in_flight.get(&delivery.index) {
            Some(in_flight) if in_flight.subscription == sub.id => {}
            _ => return false,
        }
        group.in_flight.remove(&delivery.index);
        match outcome {
            Ok(()) => false,
            Err(error) => fail(
                stream,
                &mut self.dead_letters,
                sub,
                &delivery.event_type,
                delivery.index,
                delivery.deliveries,
                error,
            ),
        }
    }

    /// Takes back every event `sub` is still handling, as failed deliveries with `reason`.
    /// Returns whether any of them is pending for redelivery.
    fn reclaim(&mut self, sub: &SubContext, reason: &str) -> bool {
        let mut redeliver = false;
        for event_type in sub.types.iter() {
            let Some(stream) = self.streams.get_mut(event_type) else {
                continue;
            };
            let Some(group) = stream.groups.get_mut(&*sub.group) else {
                continue;
            };
            let mine: Vec<(usize, u32)> = group
                .in_flight
                .iter()
                .filter(|(_, f)| f.subscription == sub.id)
                .map(|(&index, f)| (index, f.deliveries))
                .collect();
            for (index, deliveries) in mine {
                if let Some(group) = stream.groups.get_mut(&*sub.group) {
                    group.in_flight.remove(&index);
                }
                redeliver |= fail(
                    stream,
                    &mut self.dead_letters,
                    sub,
                    event_type,
                    index,
                    deliveries,
                    reason.to_owned(),
                );
            }
        }
        redeliver
    }
}

/// A failed delivery: pending again, or dead-lettered after `max_deliveries`. Returns whether
/// the event is pending for redelivery.
fn fail(
    stream: &mut Stream,
    dead_letters: &mut Vec<DeadLetter>,
    sub: &SubContext,
    event_type: &str,
    index: usize,
    deliveries: u32,
    error: String,
) -> bool {
    if deliveries < sub.max_deliveries {
        tracing::debug!(
            event_type,
            group = %sub.group,
            deliveries,
            %error,
            "memory bus: handler failed; the event will be redelivered"
        );
        if let Some(group) = stream.groups.get_mut(&*sub.group) {
            group.retry.insert(index, deliveries);
        }
        return true;
    }
    let event = stream.entries[index].event.clone();
    tracing::warn!(
        event_type,
        event_id = %event.id(),
        group = %sub.group,
        deliveries,
        %error,
        "memory bus: event dead-lettered after its last delivery failed"
    );
    dead_letters.push(DeadLetter {
        event,
        error,
        original_type: event_type.to_owned(),
        group: sub.group.to_string(),
        deliveries,
    });
    false
}

/// The loop of one subscription: take an event, run the handler, settle, until the subscription
/// is stopped or the bus is dropped.
async fn run_subscription<F, Fut>(shared: Arc<Shared>, sub: Arc<SubContext>, handler: Arc<F>)
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    loop {
        // Register for a wakeup before looking at the state, so that a publish between the
        // look and the wait is not missed.
        let wake = shared.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let delivery = {
            let mut state = shared.lock();
            if state.closed || !state.subscriptions.contains_key(&sub.id) {
                return;
            }
            state.take_next(&sub)
        };
        let Some(delivery) = delivery else {
            wake.await;
            continue;
        };
        let outcome = run_handler(&handler, delivery.event.clone()).await;
        let redeliver = shared.lock().settle(&sub, &delivery, outcome);
        if redeliver {
            shared.wake.notify_waiters();
        }
    }
}

/// Runs the handler in its own task, so that a panic becomes an error instead of ending the
/// subscription.
async fn run_handler<F, Fut>(handler: &Arc<F>, event: Event) -> Result<(), String>
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    let handler = Arc::clone(handler);
    run_isolated(async move { handler(event).await }).await
}
