//! What `MemoryBus` does beyond the conformance suite: dead letters, panics, limits, group
//! names and positions, pending counts, the drain timeout, and shutting down on drop.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redstream_core::memory::DeadLetter;
use redstream_core::{
    ErrorKind, Event, EventId, EventLimits, HandlerResult, MemoryBus, Publisher, Subscriber,
    SubscriptionHandle,
};
use serde_json::json;
use tokio::sync::{Notify, mpsc};

/// Hang detection only: every wait below ends as soon as what it waits for happens.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within 10 s"))
}

async fn next<T>(what: &str, rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    within(what, rx.recv())
        .await
        .unwrap_or_else(|| panic!("{what}: channel closed"))
}

fn event(event_type: &str, n: u32) -> Event {
    Event::try_new(event_type, json!({ "n": n })).unwrap()
}

/// A handler that forwards every event and acknowledges it.
fn forward(
    tx: mpsc::UnboundedSender<Event>,
) -> impl Fn(Event) -> std::future::Ready<HandlerResult> + Send + Sync + 'static {
    move |event| {
        let _ = tx.send(event);
        std::future::ready(Ok(()))
    }
}

#[tokio::test]
async fn ids_look_like_redis_entry_ids_and_increase_across_the_bus() {
    let bus = MemoryBus::new();
    assert_eq!(bus.publish(event("a", 1)).await.unwrap(), "1-0");
    assert_eq!(bus.publish(event("b", 2)).await.unwrap(), "2-0");
    assert_eq!(
        bus.publish_batch(vec![event("a", 3), event("b", 4)])
            .await
            .unwrap(),
        ["3-0", "4-0"]
    );
    assert_eq!(
        bus.publish_batch(Vec::new()).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(bus.len("a"), 2);
    assert_eq!(bus.len("b"), 2);
    assert_eq!(bus.len("c"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_event_is_dead_lettered_after_max_deliveries() {
    let bus = MemoryBus::new().with_max_deliveries(3);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = bus
        .subscribe(vec!["pay".into()], move |event: Event| {
            let tx = tx.clone();
            async move {
                tx.send(event.id().clone())?;
                HandlerResult::Err(format!("declined {}", event.payload()["n"]).into())
            }
        })
        .await
        .unwrap();
    let published = event("pay", 7);
    bus.publish(published.clone()).await.unwrap();
    for delivery in 1..=3 {
        let id = next(&format!("delivery {delivery}"), &mut rx).await;
        assert_eq!(&id, published.id());
    }
    // Unsubscribe waits for the third delivery and settles it.
    bus.unsubscribe(&handle).await.unwrap();
    assert!(rx.try_recv().is_err(), "delivered more than 3 times");

    let dead = bus.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let DeadLetter {
        event,
        error,
        original_type,
        group,
        deliveries,
        ..
    } = &dead[0];
    assert_eq!(event, &published);
    assert_eq!(error, "declined 7");
    assert_eq!(original_type, "pay");
    assert_eq!(group, "default");
    assert_eq!(*deliveries, 3);
    assert_eq!(bus.pending("pay", "default"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handler_is_a_failed_delivery_and_the_bus_goes_on() {
    let bus = MemoryBus::new().with_max_deliveries(2);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = bus
        .subscribe(vec!["boom".into()], move |event: Event| {
            assert!(event.payload()["n"] != 0, "kaboom on event {}", event.id());
            let _ = tx.send(event);
            std::future::ready(HandlerResult::Ok(()))
        })
        .await
        .unwrap();
    let bad = event("boom", 0);
    let good = event("boom", 1);
    bus.publish_batch(vec![bad.clone(), good.clone()])
        .await
        .unwrap();

    // The subscription survived both panics and moved on to the next event, which it takes
    // only after the first one was settled.
    assert_eq!(next("the event after the panics", &mut rx).await, good);
    let dead = bus.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event, bad);
    assert_eq!(dead[0].deliveries, 2);
    assert!(
        dead[0]
            .error
            .starts_with("handler panicked: kaboom on event"),
        "{}",
        dead[0].error
    );
    bus.unsubscribe(&handle).await.unwrap();
}

#[tokio::test]
async fn unsubscribe_rejects_unknown_handles() {
    let bus = MemoryBus::new();
    let forged = SubscriptionHandle::new(u64::MAX, "default", vec!["a".to_owned()]);
    let err = bus.unsubscribe(&forged).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("not an active subscription"),
        "{err}"
    );

    let (tx, _rx) = mpsc::unbounded_channel();
    let handle = bus.subscribe(vec!["a".into()], forward(tx)).await.unwrap();
    let other_bus = MemoryBus::new();
    let err = other_bus.unsubscribe(&handle).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidInput,
        "a handle of another bus"
    );

    // Any clone of the bus may stop it, once.
    bus.clone().unsubscribe(&handle).await.unwrap();
    let err = bus.unsubscribe(&handle).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "a second unsubscribe");
}

#[tokio::test]
async fn payload_over_the_size_limit_is_rejected_at_publish() {
    let bus = MemoryBus::new().with_limits(EventLimits::default().with_max_encoded_bytes(512));
    let big = Event::try_new("big", json!("x".repeat(600))).unwrap();
    let err = bus.publish(big.clone()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("over the limit of 512 bytes"),
        "{err}"
    );
    assert_eq!(bus.len("big"), 0);

    bus.publish(event("big", 1)).await.unwrap();
    assert_eq!(bus.len("big"), 1);
    // The default limit accepts it.
    MemoryBus::new().publish(big).await.unwrap();
}

#[tokio::test]
async fn batch_with_one_invalid_event_publishes_nothing() {
    let bus = MemoryBus::new().with_limits(EventLimits::default().with_max_encoded_bytes(512));
    let bad_type = Event::new("bad type", json!(1), Default::default());
    let err = bus
        .publish_batch(vec![event("ok", 1), bad_type, event("ok", 2)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("event type"), "{err}");

    let too_big = Event::try_new("ok", json!("x".repeat(600))).unwrap();
    let err = bus
        .publish_batch(vec![event("ok", 3), too_big])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(bus.len("ok"), 0);
    // Nothing consumed an id either.
    assert_eq!(bus.publish(event("ok", 4)).await.unwrap(), "1-0");
}

#[tokio::test]
async fn group_names_are_validated_at_subscribe() {
    let bus = MemoryBus::new();
    for bad in ["", "two words", "tab\there", "line\nbreak", "nul\0"] {
        let (tx, _rx) = mpsc::unbounded_channel();
        let err = bus
            .with_group(bad)
            .subscribe(vec!["a".into()], forward(tx))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
        assert!(err.to_string().contains("consumer group"), "{err}");
    }
    let long = "g".repeat(EventLimits::DEFAULT.max_string_len + 1);
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = bus
        .with_group(long)
        .subscribe(vec!["a".into()], forward(tx))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);

    let members = bus.with_group("billing-v2");
    assert_eq!(members.group(), "billing-v2");
    assert_eq!(bus.group(), MemoryBus::DEFAULT_GROUP);
    let (tx, _rx) = mpsc::unbounded_channel();
    let handle = members
        .subscribe(vec!["a".into()], forward(tx))
        .await
        .unwrap();
    assert_eq!(handle.group(), "billing-v2");
    assert_eq!(handle.event_types(), ["a"]);
    members.unsubscribe(&handle).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_groups_start_at_the_end_and_existing_groups_keep_their_place() {
    let bus = MemoryBus::new();
    let audit = bus.with_group("audit");
    let before = event("log", 0);
    bus.publish(before.clone()).await.unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = audit
        .subscribe(vec!["log".into()], forward(tx))
        .await
        .unwrap();
    let first = event("log", 1);
    bus.publish(first.clone()).await.unwrap();
    assert_eq!(
        next("the first event after subscribe", &mut rx).await,
        first
    );
    audit.unsubscribe(&handle).await.unwrap();

    // Published while group audit has no subscription: it gets it when it comes back.
    let missed = event("log", 2);
    bus.publish(missed.clone()).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = audit
        .subscribe(vec!["log".into()], forward(tx))
        .await
        .unwrap();
    assert_eq!(
        next("the event published while away", &mut rx).await,
        missed
    );

    // A brand-new group sees none of the history.
    let fresh = bus.with_group("fresh");
    let (fresh_tx, mut fresh_rx) = mpsc::unbounded_channel();
    let fresh_handle = fresh
        .subscribe(vec!["log".into()], forward(fresh_tx))
        .await
        .unwrap();
    let last = event("log", 3);
    bus.publish(last.clone()).await.unwrap();
    assert_eq!(
        next("the new group's first event", &mut fresh_rx).await,
        last
    );
    assert_eq!(next("audit's next event", &mut rx).await, last);

    audit.unsubscribe(&handle).await.unwrap();
    fresh.unsubscribe(&fresh_handle).await.unwrap();
    assert!(rx.try_recv().is_err() && fresh_rx.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscription_takes_its_types_in_publish_order() {
    let bus = MemoryBus::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = bus
        .subscribe(vec!["a".into(), "b".into(), "a".into()], forward(tx))
        .await
        .unwrap();
    assert_eq!(
        handle.event_types(),
        ["a", "b"],
        "duplicate types are dropped"
    );
    let events = vec![event("a", 1), event("b", 2), event("b", 3), event("a", 4)];
    bus.publish_batch(events.clone()).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..events.len() {
        got.push(next("the events", &mut rx).await);
    }
    assert_eq!(got, events);
    bus.unsubscribe(&handle).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_counts_events_received_and_not_yet_settled() {
    let bus = MemoryBus::new();
    let release = Arc::new(Notify::new());
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let handle = bus
        .subscribe(vec!["slow".into()], {
            let release = Arc::clone(&release);
            move |event: Event| {
                let (release, started_tx) = (Arc::clone(&release), started_tx.clone());
                async move {
                    let _ = started_tx.send(event.id().clone());
                    release.notified().await;
                    HandlerResult::Ok(())
                }
            }
        })
        .await
        .unwrap();
    assert_eq!(bus.pending("slow", "default"), 0);
    bus.publish(event("slow", 1)).await.unwrap();
    next("the handler to start", &mut started).await;
    assert_eq!(bus.pending("slow", "default"), 1);
    assert_eq!(bus.pending("slow", "other"), 0);
    assert_eq!(bus.pending("unknown", "default"), 0);

    release.notify_one();
    bus.unsubscribe(&handle).await.unwrap();
    assert_eq!(
        bus.pending("slow", "default"),
        0,
        "acknowledged by unsubscribe's drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_event_waits_for_the_next_member_of_its_group() {
    // The failing member retries as fast as it can until it is stopped: never dead-letter.
    let bus = MemoryBus::new().with_max_deliveries(u32::MAX);
    let (tx, mut failures) = mpsc::unbounded_channel();
    let failing = bus
        .subscribe(vec!["job".into()], move |event: Event| {
            let _ = tx.send(event.id().clone());
            std::future::ready(HandlerResult::Err("not today".into()))
        })
        .await
        .unwrap();
    let job = event("job", 1);
    bus.publish(job.clone()).await.unwrap();
    assert_eq!(&next("a failed delivery", &mut failures).await, job.id());
    bus.unsubscribe(&failing).await.unwrap();
    assert_eq!(
        bus.pending("job", "default"),
        1,
        "failed, waiting for redelivery"
    );
    assert!(bus.dead_letters().is_empty());

    let (tx, mut rx) = mpsc::unbounded_channel();
    let healthy = bus
        .subscribe(vec!["job".into()], forward(tx))
        .await
        .unwrap();
    assert_eq!(next("the redelivery", &mut rx).await, job);
    bus.unsubscribe(&healthy).await.unwrap();
    assert_eq!(bus.pending("job", "default"), 0);
}

/// Sets its flag when dropped: tells whether a handler's future was dropped (aborted).
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn drain_timeout_aborts_the_handler_and_returns_its_event_to_the_group() {
    let drain = Duration::from_secs(5);
    let bus = MemoryBus::new().with_drain_timeout(drain);
    let aborted = Arc::new(AtomicBool::new(false));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let stuck = bus
        .subscribe(vec!["stuck".into()], {
            let aborted = Arc::clone(&aborted);
            move |event: Event| {
                let guard = DropFlag(Arc::clone(&aborted));
                let started_tx = started_tx.clone();
                async move {
                    let _guard = guard;
                    let _ = started_tx.send(event.id().clone());
                    std::future::pending::<()>().await;
                    HandlerResult::Ok(())
                }
            }
        })
        .await
        .unwrap();
    let job = event("stuck", 1);
    bus.publish(job.clone()).await.unwrap();
    next("the handler to start", &mut started).await;

    let started_at = tokio::time::Instant::now();
    let err = bus.unsubscribe(&stuck).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(started_at.elapsed() >= drain);
    assert!(err.to_string().contains("group \"default\""), "{err}");
    within("the stuck handler to be aborted", async {
        while !aborted.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(bus.pending("stuck", "default"), 1);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let next_member = bus
        .subscribe(vec!["stuck".into()], forward(tx))
        .await
        .unwrap();
    assert_eq!(next("the redelivery", &mut rx).await, job);
    bus.unsubscribe(&next_member).await.unwrap();
    assert_eq!(bus.pending("stuck", "default"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_stops_the_subscriptions() {
    let bus = MemoryBus::new();
    let members = bus.with_group("members");
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    // The handler owns the only sender: the channel closes when the subscription task ends.
    let _handle = members
        .subscribe(vec!["a".into()], forward(tx))
        .await
        .unwrap();

    drop(bus);
    // `members` is a handle on the same bus: it still delivers.
    let still = event("a", 1);
    members.publish(still.clone()).await.unwrap();
    assert_eq!(
        next("delivery while a handle is alive", &mut rx).await,
        still
    );

    drop(members);
    assert!(
        within("the subscription to stop", rx.recv())
            .await
            .is_none(),
        "the subscription kept running after the last handle was dropped"
    );
}

#[test]
fn debug_and_defaults() {
    let bus = MemoryBus::default().with_group("g").with_max_deliveries(0);
    let debug = format!("{bus:?}");
    assert!(
        debug.contains("\"g\"") && debug.contains("max_deliveries: 1"),
        "{debug}"
    );
    let _: EventId = EventId::new();
}
