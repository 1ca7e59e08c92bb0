//! The behaviour suite every [`Publisher`] + [`Subscriber`] must pass.
//!
//! The same cases run against [`MemoryBus`](crate::MemoryBus) in this crate's tests and against
//! the Redis transport with a real `redis-server` in its crate, so the in-memory bus stays a
//! faithful stand-in for Redis. An implementation plugs in through a [`BusFactory`]; each case
//! is a `pub async fn` taking the factory, and [`run_all`] runs them all. Prefer one test per
//! case, so a failure is reported under the case's name:
//!
//! ```
//! use redstream_core::MemoryBus;
//! use redstream_core::conformance::{self, BusFactory};
//!
//! struct Memory(MemoryBus);
//!
//! impl BusFactory for Memory {
//!     type Bus = MemoryBus;
//!
//!     async fn member(&self, group: &str) -> MemoryBus {
//!         self.0.with_group(group)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! conformance::publish_subscribe(&Memory(MemoryBus::new())).await;
//! # }
//! ```
//!
//! # The contract the cases check
//!
//! - `publish` and `publish_batch` return one id per event, distinct among events of the same
//!   type and priority (a backend may keep each priority in its own stream, as the Redis
//!   transport does, and stream entry ids are unique within one stream); ids shaped like Redis
//!   entry ids (`<ms>-<seq>`) increase within a batch of one type and priority.
//! - An event published after `subscribe` returned is delivered to that subscription's group,
//!   unchanged (id, type, payload and metadata; timestamps to the millisecond).
//! - Within a group each event is handled by one member; every group handles every event.
//! - A handler's `Err` leads to redelivery; the bus must allow at least two deliveries.
//! - One subscription handles its events one at a time, in publish order.
//! - `unsubscribe` returns only after the running handler finished, and the subscription then
//!   handles nothing more.
//! - Invalid event types are rejected with [`ErrorKind::InvalidInput`] by `publish`,
//!   `publish_batch` (which then publishes none of the batch) and `subscribe` (which then
//!   subscribes to nothing), as is an empty list of types.
//!
//! # Writing a factory
//!
//! Every bus returned by [`BusFactory::member`] must talk to the same backend, and two members
//! of one group must be distinct consumers of it (for Redis, distinct consumer names). The
//! cases use fresh event types and group names (with a UUID) every time, so they can share one
//! server with each other and with other tests. Redelivery must happen within
//! [`HANG_TIMEOUT`]: configure a short claim idle time for a backend that redelivers by claiming.
//!
//! Waits are bounded by [`HANG_TIMEOUT`] only to turn a hang into a failure naming the case and
//! what it waited for; no case sleeps. Failures panic with a message starting
//! `conformance case <name>:`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::sync::{Notify, mpsc};

use crate::error::{ErrorKind, Result};
use crate::event::{Event, EventId, EventMetadata, Priority};
use crate::handler::HandlerResult;
use crate::traits::{Publisher, Subscriber, SubscriptionHandle};

/// How long a case waits for anything before it fails as hung.
pub const HANG_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes clients of the bus under test.
pub trait BusFactory: Send + Sync {
    /// The client type.
    type Bus: Publisher + Subscriber + Send + Sync + 'static;

    /// A client of the bus under test acting as a member of consumer group `group`. All clients
    /// made by one factory talk to the same bus/server; the suite uses fresh event types per case.
    fn member(&self, group: &str) -> impl Future<Output = Self::Bus> + Send;
}

/// Runs every case in turn; panics at the first failure, naming the case.
pub async fn run_all<F: BusFactory>(factory: &F) {
    publish_subscribe(factory).await;
    publish_batch_delivers_in_order(factory).await;
    groups_share_work(factory).await;
    broadcast_across_groups(factory).await;
    several_types_in_one_subscription(factory).await;
    redelivery_on_error(factory).await;
    unsubscribe_drains(factory).await;
    ordering_with_one_worker(factory).await;
    invalid_event_type_rejected(factory).await;
    subscribe_rejects_invalid_types(factory).await;
}

/// Published events arrive intact (id, type, payload, metadata), and `publish` returns non-empty
/// ids, distinct per priority.
pub async fn publish_subscribe<F: BusFactory>(factory: &F) {
    let case = Case::new("publish_subscribe");
    let event_type = case.event_type("orders");
    let bus = factory.member(&case.group("consumers")).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = case
        .subscribe(&bus, vec![event_type.clone()], forward(tx))
        .await;

    let events = vec![
        sample(&event_type, 1)
            .with_priority(Priority::High)
            .with_source("checkout")
            .with_correlation_id("req-42")
            .with_causation_id("evt-41")
            .with_user_id("user-7")
            .with_header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .with_header("tenant", "acme"),
        sample(&event_type, 2).with_priority(Priority::Low),
        sample(&event_type, 3),
        Event::new(
            event_type.clone(),
            json!(null),
            EventMetadata {
                timestamp: fixed_time(),
                ..EventMetadata::default()
            },
        ),
    ];
    let mut ids = HashSet::new();
    for event in &events {
        let id = case.ok(
            "publish",
            case.wait("publish", bus.publish(event.clone())).await,
        );
        case.check(!id.is_empty(), "publish returned an empty id");
        case.check(
            ids.insert((event.priority(), id.clone())),
            format!("publish returned id {id:?} twice for one priority"),
        );
    }

    let mut received: HashMap<EventId, Event> = HashMap::new();
    while received.len() < events.len() {
        let event = case.recv("the published events", &mut rx).await;
        let id = event.id().clone();
        case.check(
            received.insert(id.clone(), event).is_none(),
            format!("event {id} was delivered twice"),
        );
    }
    for event in &events {
        match received.get(event.id()) {
            Some(got) => case.check(
                got == event,
                format!("event arrived changed:\n published {event:?}\n received  {got:?}"),
            ),
            None => case.fail(format!("event {} was never delivered", event.id())),
        }
    }
    case.unsubscribe(&bus, &handle).await;
}

/// `publish_batch` returns one id per event (increasing, for Redis-shaped ids) and a single
/// subscriber receives the batch in order.
pub async fn publish_batch_delivers_in_order<F: BusFactory>(factory: &F) {
    let case = Case::new("publish_batch_delivers_in_order");
    let event_type = case.event_type("batch");
    let bus = factory.member(&case.group("consumers")).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = case
        .subscribe(&bus, vec![event_type.clone()], forward(tx))
        .await;

    let events: Vec<Event> = (0..10).map(|n| sample(&event_type, n)).collect();
    let ids = case.ok(
        "publish_batch",
        case.wait("publish_batch", bus.publish_batch(events.clone()))
            .await,
    );
    case.check(
        ids.len() == events.len(),
        format!(
            "publish_batch of {} events returned {} ids",
            events.len(),
            ids.len()
        ),
    );
    let distinct: HashSet<&String> = ids.iter().collect();
    case.check(
        distinct.len() == ids.len(),
        format!("publish_batch returned duplicate ids: {ids:?}"),
    );
    let parsed: Option<Vec<(u64, u64)>> = ids.iter().map(|id| stream_id(id)).collect();
    if let Some(parsed) = parsed {
        case.check(
            parsed.windows(2).all(|pair| pair[0] < pair[1]),
            format!("publish_batch returned entry ids out of order: {ids:?}"),
        );
    }

    let received = case.recv_n("the batch", &mut rx, events.len()).await;
    case.check_same_order("the batch", &events, &received);
    case.unsubscribe(&bus, &handle).await;
}

/// Two members of one group: every event is handled exactly once in total.
pub async fn groups_share_work<F: BusFactory>(factory: &F) {
    const EVENTS: usize = 20;
    let case = Case::new("groups_share_work");
    let event_type = case.event_type("work");
    let group = case.group("workers");
    let first = factory.member(&group).await;
    let second = factory.member(&group).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let first_handle = case
        .subscribe(&first, vec![event_type.clone()], forward(tx.clone()))
        .await;
    let second_handle = case
        .subscribe(&second, vec![event_type.clone()], forward(tx))
        .await;

    let events = case.publish_each(&first, &event_type, EVENTS).await;
    let received = case.recv_n("the events", &mut rx, EVENTS).await;
    case.check_same_set("the group", &events, &received);

    // Stopping both members settles everything they received; a duplicate would be in the
    // channel by now.
    case.unsubscribe(&first, &first_handle).await;
    case.unsubscribe(&second, &second_handle).await;
    if let Ok(extra) = rx.try_recv() {
        case.fail(format!(
            "event {} was handled more than once in one group",
            extra.id()
        ));
    }
}

/// Two groups each handle every event.
pub async fn broadcast_across_groups<F: BusFactory>(factory: &F) {
    const EVENTS: usize = 10;
    let case = Case::new("broadcast_across_groups");
    let event_type = case.event_type("news");
    let blue = factory.member(&case.group("blue")).await;
    let green = factory.member(&case.group("green")).await;
    let (blue_tx, mut blue_rx) = mpsc::unbounded_channel();
    let (green_tx, mut green_rx) = mpsc::unbounded_channel();
    let blue_handle = case
        .subscribe(&blue, vec![event_type.clone()], forward(blue_tx))
        .await;
    let green_handle = case
        .subscribe(&green, vec![event_type.clone()], forward(green_tx))
        .await;

    let events = case.publish_each(&blue, &event_type, EVENTS).await;
    let blue_got = case
        .recv_n("the events in group blue", &mut blue_rx, EVENTS)
        .await;
    let green_got = case
        .recv_n("the events in group green", &mut green_rx, EVENTS)
        .await;
    case.check_same_set("group blue", &events, &blue_got);
    case.check_same_set("group green", &events, &green_got);

    case.unsubscribe(&blue, &blue_handle).await;
    case.unsubscribe(&green, &green_handle).await;
    for (name, rx) in [("blue", &mut blue_rx), ("green", &mut green_rx)] {
        if let Ok(extra) = rx.try_recv() {
            case.fail(format!(
                "group {name} handled event {} more than once",
                extra.id()
            ));
        }
    }
}

/// One subscription to several event types receives the events of each of them.
pub async fn several_types_in_one_subscription<F: BusFactory>(factory: &F) {
    let case = Case::new("several_types_in_one_subscription");
    let created = case.event_type("created");
    let shipped = case.event_type("shipped");
    let bus = factory.member(&case.group("consumers")).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = case
        .subscribe(&bus, vec![created.clone(), shipped.clone()], forward(tx))
        .await;

    let mut events = Vec::new();
    for n in 0..6 {
        let event_type = if n % 2 == 0 { &created } else { &shipped };
        let event = sample(event_type, n);
        case.ok(
            "publish",
            case.wait("publish", bus.publish(event.clone())).await,
        );
        events.push(event);
    }
    let received = case
        .recv_n("the events of both types", &mut rx, events.len())
        .await;
    case.check_same_set("the subscription", &events, &received);
    case.unsubscribe(&bus, &handle).await;
}

/// A handler that fails the first delivery of an event gets it again, and the event is handled.
pub async fn redelivery_on_error<F: BusFactory>(factory: &F) {
    let case = Case::new("redelivery_on_error");
    let event_type = case.event_type("flaky");
    let bus = factory.member(&case.group("consumers")).await;
    let attempts: Arc<Mutex<HashMap<EventId, u32>>> = Arc::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = move |event: Event| {
        let attempt = {
            let mut attempts = attempts.lock().unwrap_or_else(PoisonError::into_inner);
            let count = attempts.entry(event.id().clone()).or_insert(0);
            *count += 1;
            *count
        };
        let result: HandlerResult = if attempt == 1 {
            Err("conformance: deliberate failure of the first delivery".into())
        } else {
            let _ = tx.send((event.id().clone(), attempt));
            Ok(())
        };
        std::future::ready(result)
    };
    let handle = case
        .subscribe(&bus, vec![event_type.clone()], handler)
        .await;

    let event = sample(&event_type, 1);
    case.ok(
        "publish",
        case.wait("publish", bus.publish(event.clone())).await,
    );
    let (id, attempt) = case
        .recv(
            "the event to be redelivered after a failed delivery",
            &mut rx,
        )
        .await;
    case.check(
        &id == event.id(),
        format!("expected event {}, got {id}", event.id()),
    );
    case.check(
        attempt >= 2,
        format!("the event succeeded on delivery {attempt}"),
    );
    case.unsubscribe(&bus, &handle).await;
}

/// `unsubscribe` waits for the running handler, and the subscription handles nothing afterwards.
pub async fn unsubscribe_drains<F: BusFactory>(factory: &F) {
    let case = Case::new("unsubscribe_drains");
    let event_type = case.event_type("drain");
    let subject = Arc::new(factory.member(&case.group("subject")).await);
    // Another group sees every event: once it has an event, the subject could have had it too.
    let witness = factory.member(&case.group("witness")).await;

    let calls = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let release = Arc::new(Notify::new());
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let handler = {
        let (calls, finished, release) = (calls.clone(), finished.clone(), release.clone());
        move |event: Event| {
            let (calls, finished, release) = (calls.clone(), finished.clone(), release.clone());
            let started_tx = started_tx.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let _ = started_tx.send(event.id().clone());
                release.notified().await;
                finished.store(true, Ordering::SeqCst);
                HandlerResult::Ok(())
            }
        }
    };
    let subject_handle = case
        .subscribe(&*subject, vec![event_type.clone()], handler)
        .await;
    let (witness_tx, mut witness_rx) = mpsc::unbounded_channel();
    let witness_handle = case
        .subscribe(&witness, vec![event_type.clone()], forward(witness_tx))
        .await;

    let first = sample(&event_type, 1);
    case.ok(
        "publish",
        case.wait("publish", subject.publish(first.clone())).await,
    );
    let started = case
        .recv("the subject's handler to start", &mut started_rx)
        .await;
    case.check(
        &started == first.id(),
        format!("expected event {}, got {started}", first.id()),
    );

    let unsubscribing = tokio::spawn({
        let subject = Arc::clone(&subject);
        let handle = subject_handle.clone();
        async move { subject.unsubscribe(&handle).await }
    });
    // Give a wrong implementation the chance to return early.
    for _ in 0..32 {
        tokio::task::yield_now().await;
    }
    if unsubscribing.is_finished() {
        let result = case.wait("unsubscribe", unsubscribing).await;
        case.fail(format!(
            "unsubscribe returned ({result:?}) while the handler was still running"
        ));
    }
    release.notify_one();
    match case.wait("unsubscribe", unsubscribing).await {
        Ok(result) => case.ok("unsubscribe", result),
        Err(err) => case.fail(format!("the task calling unsubscribe failed: {err}")),
    }
    case.check(
        finished.load(Ordering::SeqCst),
        "unsubscribe returned before the running handler finished",
    );

    let second = sample(&event_type, 2);
    case.ok(
        "publish",
        case.wait("publish", subject.publish(second.clone())).await,
    );
    loop {
        let event = case
            .recv(
                "the witness to receive the event published after unsubscribe",
                &mut witness_rx,
            )
            .await;
        if event.id() == second.id() {
            break;
        }
    }
    let calls = calls.load(Ordering::SeqCst);
    case.check(
        calls == 1 && started_rx.try_recv().is_err(),
        format!("the handler ran {calls} times; after unsubscribe it must not run again"),
    );
    case.unsubscribe(&witness, &witness_handle).await;
}

/// One subscriber receives 20 events in publish order.
pub async fn ordering_with_one_worker<F: BusFactory>(factory: &F) {
    const EVENTS: usize = 20;
    let case = Case::new("ordering_with_one_worker");
    let event_type = case.event_type("ordered");
    let bus = factory.member(&case.group("consumers")).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = case
        .subscribe(&bus, vec![event_type.clone()], forward(tx))
        .await;

    let events = case.publish_each(&bus, &event_type, EVENTS).await;
    let received = case.recv_n("the events", &mut rx, EVENTS).await;
    case.check_same_order("the events", &events, &received);
    case.unsubscribe(&bus, &handle).await;
}

/// Publishing an event with an invalid type fails with `InvalidInput`, and so does a batch
/// holding one; nothing of them is delivered.
pub async fn invalid_event_type_rejected<F: BusFactory>(factory: &F) {
    let case = Case::new("invalid_event_type_rejected");
    let event_type = case.event_type("valid");
    let bus = factory.member(&case.group("consumers")).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = case
        .subscribe(&bus, vec![event_type.clone()], forward(tx))
        .await;

    for bad in ["bad type", "", "tab\there", "nul\0"] {
        let result = case.wait("publish", bus.publish(sample(bad, 0))).await;
        case.check_invalid_input(&format!("publish of event type {bad:?}"), result);
    }
    let batch = vec![sample(&event_type, 1), sample("bad type", 2)];
    let result = case.wait("publish_batch", bus.publish_batch(batch)).await;
    case.check_invalid_input("publish_batch holding event type \"bad type\"", result);

    // Events of one type reach a single subscriber in order: if the valid half of the batch
    // had been published, it would arrive before this marker.
    let marker = sample(&event_type, 3);
    case.ok(
        "publish",
        case.wait("publish", bus.publish(marker.clone())).await,
    );
    let first = case.recv("the marker event", &mut rx).await;
    case.check(
        first.id() == marker.id(),
        format!(
            "event {} was delivered although its batch was rejected",
            first.id()
        ),
    );
    case.unsubscribe(&bus, &handle).await;
}

/// `subscribe` rejects invalid event types (alone or next to valid ones) and an empty list with
/// `InvalidInput`, and a rejected subscription handles nothing.
pub async fn subscribe_rejects_invalid_types<F: BusFactory>(factory: &F) {
    let case = Case::new("subscribe_rejects_invalid_types");
    let event_type = case.event_type("valid");
    let bus = factory.member(&case.group("rejected")).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counting = || {
        let calls = Arc::clone(&calls);
        move |_event: Event| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(HandlerResult::Ok(()))
        }
    };
    let lists = [
        vec!["bad type".to_owned()],
        vec![event_type.clone(), "bad type".to_owned()],
        vec![event_type.clone(), String::new()],
        vec![event_type.clone(), "line\nbreak".to_owned()],
        Vec::new(),
    ];
    for types in lists {
        let what = format!("subscribe to {types:?}");
        let result = case
            .wait("subscribe", subscribe(&bus, types, counting()))
            .await;
        case.check_invalid_input(&what, result);
    }

    // A witness in another group receives an event of the valid type; a subscription that
    // had been started by mistake would receive it as well.
    let witness = factory.member(&case.group("witness")).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let witness_handle = case
        .subscribe(&witness, vec![event_type.clone()], forward(tx))
        .await;
    let event = sample(&event_type, 1);
    case.ok(
        "publish",
        case.wait("publish", bus.publish(event.clone())).await,
    );
    let got = case.recv("the witness to receive the event", &mut rx).await;
    case.check(
        got.id() == event.id(),
        format!(
            "the witness received {} instead of {}",
            got.id(),
            event.id()
        ),
    );
    let calls = calls.load(Ordering::SeqCst);
    case.check(
        calls == 0,
        format!("a rejected subscription handled {calls} events"),
    );
    case.unsubscribe(&witness, &witness_handle).await;
}

/// One running case: names, waits and failure messages.
struct Case {
    name: &'static str,
    run: String,
}

impl Case {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            run: uuid::Uuid::now_v7().simple().to_string(),
        }
    }

    /// A fresh event type for this run of the case.
    fn event_type(&self, role: &str) -> String {
        format!("conf.{}.{role}.{}", self.name, self.run)
    }

    /// A fresh consumer group name for this run of the case.
    fn group(&self, role: &str) -> String {
        format!("conf-{}-{role}-{}", self.name, self.run)
    }

    fn fail(&self, message: impl fmt::Display) -> ! {
        panic!("conformance case {}: {message}", self.name)
    }

    fn check(&self, condition: bool, message: impl fmt::Display) {
        if !condition {
            self.fail(message);
        }
    }

    fn ok<T, E: fmt::Display>(&self, what: &str, result: Result<T, E>) -> T {
        result.unwrap_or_else(|err| self.fail(format!("{what} failed: {err}")))
    }

    fn check_invalid_input<T: fmt::Debug>(&self, what: &str, result: Result<T>) {
        match result {
            Err(err) if err.kind() == ErrorKind::InvalidInput => {}
            Err(err) => self.fail(format!(
                "{what} failed with kind {} instead of invalid_input: {err}",
                err.kind()
            )),
            Ok(value) => self.fail(format!("{what} succeeded ({value:?}); it must be rejected")),
        }
    }

    async fn wait<T>(&self, what: &str, future: impl Future<Output = T>) -> T {
        match tokio::time::timeout(HANG_TIMEOUT, future).await {
            Ok(value) => value,
            Err(_) => self.fail(format!("{what} did not complete within {HANG_TIMEOUT:?}")),
        }
    }

    async fn recv<T>(&self, what: &str, rx: &mut mpsc::UnboundedReceiver<T>) -> T {
        match tokio::time::timeout(HANG_TIMEOUT, rx.recv()).await {
            Ok(Some(value)) => value,
            Ok(None) => self.fail(format!(
                "waiting for {what}: every handler was dropped (did the subscription stop?)"
            )),
            Err(_) => self.fail(format!("{what} did not arrive within {HANG_TIMEOUT:?}")),
        }
    }

    async fn recv_n<T>(&self, what: &str, rx: &mut mpsc::UnboundedReceiver<T>, n: usize) -> Vec<T> {
        let mut received = Vec::with_capacity(n);
        while received.len() < n {
            let progress = format!("{what} ({} of {n} received so far)", received.len());
            received.push(self.recv(&progress, rx).await);
        }
        received
    }

    async fn subscribe<B, H, Fut>(
        &self,
        bus: &B,
        types: Vec<String>,
        handler: H,
    ) -> SubscriptionHandle
    where
        B: Subscriber,
        H: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let what = format!("subscribe to {types:?}");
        let result = self.wait(&what, subscribe(bus, types, handler)).await;
        self.ok(&what, result)
    }

    async fn unsubscribe<B: Subscriber>(&self, bus: &B, handle: &SubscriptionHandle) {
        let result = self.wait("unsubscribe", bus.unsubscribe(handle)).await;
        self.ok("unsubscribe", result);
    }

    /// Publishes `n` events one at a time, each after the previous one was accepted.
    async fn publish_each<B: Publisher>(&self, bus: &B, event_type: &str, n: usize) -> Vec<Event> {
        let mut events = Vec::with_capacity(n);
        for i in 0..n {
            let event = sample(event_type, i);
            let result = self.wait("publish", bus.publish(event.clone())).await;
            self.ok("publish", result);
            events.push(event);
        }
        events
    }

    fn check_same_order(&self, what: &str, published: &[Event], received: &[Event]) {
        let published: Vec<&EventId> = published.iter().map(Event::id).collect();
        let received: Vec<&EventId> = received.iter().map(Event::id).collect();
        self.check(
            published == received,
            format!(
                "{what} arrived out of order:\n published {published:?}\n received  {received:?}"
            ),
        );
    }

    fn check_same_set(&self, who: &str, published: &[Event], received: &[Event]) {
        let mut counts: HashMap<&EventId, usize> = HashMap::new();
        for event in received {
            *counts.entry(event.id()).or_default() += 1;
        }
        for event in published {
            match counts.remove(event.id()) {
                Some(1) => {}
                Some(n) => self.fail(format!("{who} handled event {} {n} times", event.id())),
                None => self.fail(format!("{who} never handled event {}", event.id())),
            }
        }
        if let Some(id) = counts.keys().next() {
            self.fail(format!(
                "{who} handled event {id}, which was never published"
            ));
        }
    }
}

/// Calls [`Subscriber::subscribe`] and boxes its future.
///
/// Awaiting that future directly inside a function generic over the subscriber makes rustc
/// unable to prove the caller's future `Send` ("one type is more general than the other", a
/// known limitation with generic closures and `impl Future` in traits), so the cases could not
/// be `tokio::spawn`ed. The box is `Send` by its type, which hides the problem.
fn subscribe<'a, B, H, Fut>(
    bus: &'a B,
    event_types: Vec<String>,
    handler: H,
) -> Pin<Box<dyn Future<Output = Result<SubscriptionHandle>> + Send + 'a>>
where
    B: Subscriber,
    H: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    Box::pin(bus.subscribe(event_types, handler))
}

/// A handler that forwards every event into `tx` and acknowledges it.
fn forward(
    tx: mpsc::UnboundedSender<Event>,
) -> impl Fn(Event) -> std::future::Ready<HandlerResult> + Send + Sync + 'static {
    move |event| {
        // The receiver is gone only once the case is over.
        let _ = tx.send(event);
        std::future::ready(Ok(()))
    }
}

/// An event numbered `n`, with a payload exercising JSON types and a millisecond timestamp (the
/// precision of the wire format), so a round trip through any backend compares equal.
fn sample(event_type: &str, n: usize) -> Event {
    Event::new(
        event_type,
        json!({
            "n": n,
            "text": "grüße, 注文 \"quoted\"",
            "amount": 12.5,
            "negative": -3,
            "flag": true,
            "none": null,
            "items": [{"sku": "A-1", "qty": 2}, []],
        }),
        EventMetadata {
            timestamp: fixed_time(),
            ..EventMetadata::default()
        },
    )
}

fn fixed_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
}

/// Parses a Redis-shaped entry id `<ms>-<seq>`.
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}
