//! Consuming against a real redis-server: seed 000's snippets and scenarios, priorities,
//! backpressure without loss, panics and graceful unsubscribe. When held and failed entries
//! come back is in `redelivery.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redstream_core::{
    BackpressureConfig, BackpressureStrategy, ErrorKind, Event, HandlerResult, Priority,
};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, StartFrom};
use tokio::sync::{Notify, mpsc, watch};

use crate::support::{
    event, fast, number, pending_of_type, recv, recv_n, transport, unique, until, within, xrange,
};

/// Seed 000's usage snippets, with only the crate names changed (and the URL pointed at the test
/// server instead of `RedisConfig::default()`'s). They must compile as written.
#[allow(unused_mut, unused_variables, unused_imports, clippy::question_mark)]
mod seed {
    use std::time::Duration;

    use redstream_core::BoxError;
    use redstream_transport::{RedisConfig, RedisSubscriber};

    type Main = Result<(), Box<dyn std::error::Error>>;

    async fn process_payment(_event: &redstream_core::Event) -> Result<(), BoxError> {
        Ok(())
    }

    async fn dangerous_operation(_event: &redstream_core::Event) -> Result<(), BoxError> {
        Ok(())
    }

    async fn process(_event: &redstream_core::Event) -> Result<(), BoxError> {
        Ok(())
    }

    /// "Publishing Events".
    pub(super) async fn publishing(config: RedisConfig) -> Main {
        use redstream_core::{Event, EventMetadata, Subscriber};
        let subscriber = RedisSubscriber::new(config).await?;

        let event = Event::new(
            "order.created",
            serde_json::json!({
                "order_id": "12345",
                "total": 99.99,
                "items": 3
            }),
            EventMetadata::default(),
        );

        subscriber.publish(event).await?;
        Ok(())
    }

    /// "Subscribing to Events", with the wait for Ctrl-C left out.
    pub(super) async fn subscribing(config: RedisConfig) -> Main {
        use redstream_core::Subscriber;
        let mut subscriber = RedisSubscriber::new(config).await?;

        // Subscribe to event types
        let handle = subscriber
            .subscribe(
                vec!["order.created".to_string(), "order.updated".to_string()],
                |event| {
                    Box::pin(async move {
                        println!("Processing order event: {:?}", event);
                        // Event is automatically ACK'd on success
                        Ok(())
                    })
                },
            )
            .await?;

        subscriber.unsubscribe(&handle).await?;
        Ok(())
    }

    /// "Message Acknowledgment", both closures, and "Error Handling".
    pub(super) async fn acknowledgment_and_errors(config: RedisConfig) -> Main {
        use redstream_core::Subscriber;
        let subscriber = RedisSubscriber::new(config).await?;
        let first = subscriber
            .subscribe(vec!["payment.processed".to_string()], |event| {
                Box::pin(async move {
                    process_payment(&event).await?;
                    // Automatic ACK here
                    Ok(())
                })
            })
            .await?;
        let second = subscriber
            .subscribe(vec!["risky.operation".to_string()], |event| {
                Box::pin(async move {
                    if let Err(e) = dangerous_operation(&event).await {
                        // Message is NACK'd, won't be retried
                        return Err(e);
                    }
                    Ok(())
                })
            })
            .await?;
        let event_types = vec!["order.created".to_string()];
        let third = subscriber
            .subscribe(event_types, |event| {
                Box::pin(async move {
                    let mut retries = 3;
                    loop {
                        match process(&event).await {
                            Ok(_) => return Ok(()),
                            Err(e) if retries > 0 => {
                                retries -= 1;
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                })
            })
            .await?;
        for handle in [first, second, third] {
            subscriber.unsubscribe(&handle).await?;
        }
        Ok(())
    }

    /// "Backpressure Statistics".
    pub(super) async fn backpressure_statistics(config: RedisConfig) -> Main {
        let subscriber = RedisSubscriber::new(config).await?;
        let stats = subscriber.backpressure_stats().await;
        println!(
            "Queue size: {}/{}",
            stats.current_queue_size, stats.max_queue_size
        );
        println!("Dropped: {}", stats.dropped_events);
        println!("Fill ratio: {:.2}%", stats.fill_ratio() * 100.0);
        Ok(())
    }

    /// "Consumer Groups" and "Consumer Group Strategy": the configurations.
    pub(super) fn group_configs(url: &str, worker_id: u32, service_name: &str) -> [RedisConfig; 4] {
        let config1 = RedisConfig {
            url: url.to_string(),
            consumer_group: "processors".to_string(),
            consumer_name: "processor-1".to_string(),
            ..Default::default()
        };
        let config2 = RedisConfig {
            url: url.to_string(),
            consumer_group: "processors".to_string(),
            consumer_name: "processor-2".to_string(),
            ..Default::default()
        };
        // Load balancing
        let workers = RedisConfig {
            consumer_group: "workers".to_string(),
            consumer_name: format!("worker-{}", worker_id),
            ..Default::default()
        }
        .with_url(url);
        // Broadcasting
        let broadcast = RedisConfig {
            consumer_group: format!("service-{}", service_name),
            consumer_name: "consumer-1".to_string(),
            ..Default::default()
        }
        .with_url(url);
        [config1, config2, workers, broadcast]
    }
}

fn config(server: &RedisServer, prefix: &str) -> RedisConfig {
    RedisConfig::default()
        .with_url(server.url())
        .with_stream_prefix(prefix)
        .with_consumer_name(unique("seed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_snippets_run() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("seed");
    seed::publishing(config(&server, &prefix)).await.unwrap();
    seed::subscribing(config(&server, &prefix)).await.unwrap();
    seed::acknowledgment_and_errors(config(&server, &prefix))
        .await
        .unwrap();
    seed::backpressure_statistics(config(&server, &prefix))
        .await
        .unwrap();
    let configs = seed::group_configs(&server.url(), 7, "billing");
    for config in configs {
        config.validate().unwrap();
    }
}

/// Seed 000: "Multiple consumers, same group: load balancing, each message processed once."
/// Each event is published after the previous one was handled, so both consumers wait in
/// `XREADGROUP ... BLOCK`, and Redis serves blocked readers in turn: both get work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_in_one_group_split_the_work() {
    const EVENTS: usize = 20;
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("split");
    let mut members = Vec::new();
    for name in ["processor-1", "processor-2"] {
        let transport = redstream_transport::RedisTransport::with_options(
            RedisConfig {
                url: server.url(),
                stream_prefix: prefix.clone(),
                consumer_group: "processors".to_string(),
                consumer_name: name.to_string(),
                ..Default::default()
            },
            fast(),
        )
        .await
        .unwrap();
        members.push((name, transport));
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut handles = Vec::new();
    for (name, transport) in &members {
        let tx = tx.clone();
        let name = *name;
        let handle = transport
            .subscribe(vec!["order.created".to_string()], move |event: Event| {
                let _ = tx.send((name, number(&event)));
                async { HandlerResult::Ok(()) }
            })
            .await
            .unwrap();
        handles.push(handle);
    }
    let mut by_member: HashMap<&str, usize> = HashMap::new();
    for n in 0..EVENTS {
        members[0]
            .1
            .publish(event("order.created", n))
            .await
            .unwrap();
        let (who, got) = recv(&mut rx, &format!("event {n}")).await;
        assert_eq!(got, n, "event {got} arrived while waiting for {n}");
        *by_member.entry(who).or_default() += 1;
    }
    for ((_, transport), handle) in members.iter().zip(&handles) {
        within("unsubscribe", transport.unsubscribe(handle))
            .await
            .unwrap();
    }
    assert!(
        rx.try_recv().is_err(),
        "an event was handled twice in one group"
    );
    println!("work split: {by_member:?}");
    assert_eq!(
        by_member.len(),
        2,
        "one consumer did all the work: {by_member:?}"
    );
}

/// Seed 000: "Multiple consumers, different groups: broadcast, each consumer gets all messages."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_each_get_every_event() {
    const EVENTS: usize = 10;
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("broadcast");
    let mut receivers = Vec::new();
    let mut subscriptions = Vec::new();
    for service in ["billing", "shipping"] {
        let transport = transport(&server, &prefix, &format!("service-{service}"), fast()).await;
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = transport
            .subscribe(vec!["order.created".to_string()], move |event: Event| {
                let _ = tx.send(number(&event));
                async { HandlerResult::Ok(()) }
            })
            .await
            .unwrap();
        receivers.push(rx);
        subscriptions.push((transport, handle));
    }
    for n in 0..EVENTS {
        subscriptions[0]
            .0
            .publish(event("order.created", n))
            .await
            .unwrap();
    }
    for rx in &mut receivers {
        let mut got = recv_n(rx, EVENTS, "every event in each group").await;
        got.sort_unstable();
        assert_eq!(got, (0..EVENTS).collect::<Vec<_>>());
    }
    for (transport, handle) in &subscriptions {
        within("unsubscribe", transport.unsubscribe(handle))
            .await
            .unwrap();
    }
    for rx in &mut receivers {
        assert!(rx.try_recv().is_err(), "a group handled an event twice");
    }
}

/// Two groups read one stream through one transport (one consumer name): an entry held by the
/// first group's handler is still delivered to the second at once, not after a claim. The
/// claim idle time is an hour, so a second group that left such entries alone would never
/// get them here; the first group's handlers wait until the second has every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_in_one_transport_each_get_every_event_at_once() {
    const EVENTS: usize = 8;
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("groups");
    let options = fast().with_claim_idle_time(Duration::from_secs(3600));
    let transport = transport(&server, &prefix, "billing", options).await;
    let stream = transport.names().stream("order.created");
    let (second_done, done) = watch::channel(false);
    let (first_tx, mut first_rx) = mpsc::unbounded_channel();
    let first = transport
        .subscribe(vec!["order.created".to_owned()], move |event: Event| {
            let (tx, mut done) = (first_tx.clone(), done.clone());
            async move {
                // Held until the second group has every event.
                let _ = done.wait_for(|done| *done).await;
                let _ = tx.send(number(&event));
                HandlerResult::Ok(())
            }
        })
        .await
        .unwrap();
    let (second_tx, mut second_rx) = mpsc::unbounded_channel();
    let second = transport
        .subscription()
        .streams([stream.clone()])
        .group("shipping")
        .handle(move |event: Event| {
            let _ = second_tx.send(number(&event));
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    for n in 0..EVENTS {
        transport.publish(event("order.created", n)).await.unwrap();
    }
    let mut got = recv_n(&mut second_rx, EVENTS, "every event in the second group").await;
    got.sort_unstable();
    assert_eq!(got, (0..EVENTS).collect::<Vec<_>>());
    // The first group's handlers, all holding their entries, may go on.
    second_done.send_replace(true);
    let mut got = recv_n(&mut first_rx, EVENTS, "every event in the first group").await;
    got.sort_unstable();
    assert_eq!(got, (0..EVENTS).collect::<Vec<_>>());
    for handle in [&first, &second] {
        within("unsubscribe", transport.unsubscribe(handle))
            .await
            .unwrap();
    }
    for group in ["billing", "shipping"] {
        assert_eq!(
            crate::support::pending(&server, &stream, group).await,
            0,
            "{group}"
        );
    }
}

fn publish_backlog() -> Vec<Event> {
    let mut events = Vec::new();
    let mut n = 100;
    for priority in [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ] {
        for _ in 0..5 {
            events.push(event("job.queued", n).with_priority(priority));
            n += 1;
        }
    }
    events
}

/// The order a backlog must come out in: by priority, most urgent first, then publish order.
fn expected_order(backlog: &[Event]) -> Vec<usize> {
    let mut sorted: Vec<&Event> = backlog.iter().collect();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.priority()));
    sorted.into_iter().map(number).collect()
}

/// A backlog in Redis is one stream: priority does not reorder it (the reader reads it in
/// stream order), but within one priority the order of publishing is kept, and everything is
/// handled. (How urgent entries overtake the others in the consumer's hands is the next test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_in_redis_keeps_publish_order_within_each_priority() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("priority");
    let transport = transport(
        &server,
        &prefix,
        "workers",
        fast()
            .with_handler_concurrency(1)
            .with_start_from(StartFrom::Beginning),
    )
    .await;
    let backlog = publish_backlog();
    for event in &backlog {
        transport.publish(event.clone()).await.unwrap();
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = transport
        .subscribe(vec!["job.queued".to_string()], move |event: Event| {
            let _ = tx.send((event.priority(), number(&event)));
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    let handled = recv_n(&mut rx, backlog.len(), "the backlog").await;
    for priority in Priority::ALL {
        let of = |items: Vec<(Priority, usize)>| -> Vec<usize> {
            items
                .into_iter()
                .filter(|(p, _)| *p == priority)
                .map(|(_, n)| n)
                .collect()
        };
        let published = of(backlog.iter().map(|e| (e.priority(), number(e))).collect());
        assert_eq!(of(handled.clone()), published, "{priority}");
    }
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
}

/// Seed 002: when a backlog builds up in the consumer's buffer (its only worker is busy while
/// everything is read), urgent entries read last are handled first: priority orders what one
/// consumer has in hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_events_overtake_the_consumers_buffer() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("priority");
    let transport = transport(
        &server,
        &prefix,
        "workers",
        fast().with_handler_concurrency(1),
    )
    .await;
    let release = Arc::new(Notify::new());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = {
        let release = Arc::clone(&release);
        transport
            .subscribe(vec!["job.queued".to_string()], move |event: Event| {
                let (tx, release) = (tx.clone(), Arc::clone(&release));
                async move {
                    let n = number(&event);
                    let _ = tx.send(n);
                    if n == 0 {
                        release.notified().await;
                    }
                    HandlerResult::Ok(())
                }
            })
            .await
            .unwrap()
    };
    transport.publish(event("job.queued", 0)).await.unwrap();
    assert_eq!(recv(&mut rx, "the blocking event").await, 0);
    let backlog = publish_backlog();
    for event in &backlog {
        transport.publish(event.clone()).await.unwrap();
    }
    until("the backlog to be read into the buffer", || async {
        transport.backpressure_stats().await.current_queue_size == backlog.len()
    })
    .await;
    release.notify_one();
    let order = recv_n(&mut rx, backlog.len(), "the backlog").await;
    assert_eq!(order, expected_order(&backlog));
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
}

/// Dropping strategies in a consumer never lose events: what does not fit stays pending and is
/// delivered again, without counting towards the dead-letter limit.
async fn full_buffer_loses_nothing(strategy: BackpressureStrategy) {
    const EVENTS: usize = 30;
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("drops");
    let transport = redstream_transport::RedisTransport::with_options(
        RedisConfig::default()
            .with_url(server.url())
            .with_stream_prefix(&prefix)
            .with_consumer_group("workers")
            .with_backpressure(
                BackpressureConfig::default()
                    .with_max_queue_size(2)
                    .with_strategy(strategy),
            ),
        fast()
            .with_handler_concurrency(1)
            .with_read_count(10)
            .with_max_deliveries(2),
    )
    .await
    .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = transport
        .subscribe(vec!["job.queued".to_string()], move |event: Event| {
            let tx = tx.clone();
            async move {
                // Some work, so that the buffer fills up.
                tokio::time::sleep(Duration::from_millis(5)).await;
                let _ = tx.send(number(&event));
                HandlerResult::Ok(())
            }
        })
        .await
        .unwrap();
    let events: Vec<Event> = (0..EVENTS).map(|n| event("job.queued", n)).collect();
    transport.publish_batch(events).await.unwrap();

    let mut seen: HashMap<usize, usize> = HashMap::new();
    while seen.len() < EVENTS {
        let n = recv(
            &mut rx,
            &format!("every event ({} of {EVENTS} so far)", seen.len()),
        )
        .await;
        *seen.entry(n).or_default() += 1;
    }
    let stats = transport.backpressure_stats().await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    println!(
        "{strategy:?}: dropped {}, rejected {}, handled twice {duplicates}",
        stats.dropped_events, stats.rejected_events
    );
    assert!(
        stats.dropped_events + stats.rejected_events > 0,
        "the buffer never overflowed, so the test proves nothing: {stats:?}"
    );
    assert_eq!(
        seen.keys().copied().collect::<HashSet<_>>(),
        (0..EVENTS).collect()
    );
    assert_eq!(
        pending_of_type(&server, &transport, "job.queued", "workers").await,
        0
    );
    let dlq = xrange(&server, &transport.names().dlq()).await;
    assert!(
        dlq.is_empty(),
        "dropped entries were dead-lettered: {dlq:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_loses_nothing() {
    full_buffer_loses_nothing(BackpressureStrategy::DropNewest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_loses_nothing() {
    full_buffer_loses_nothing(BackpressureStrategy::DropOldest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_loses_nothing() {
    full_buffer_loses_nothing(BackpressureStrategy::Reject).await;
}

/// `unsubscribe` with slow handlers running: they finish, are acknowledged, and nothing is left
/// pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_lets_slow_handlers_finish_and_acks_them() {
    const EVENTS: usize = 4;
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("drain");
    let transport = transport(
        &server,
        &prefix,
        "workers",
        fast().with_handler_concurrency(EVENTS),
    )
    .await;
    let finished = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let handle = {
        let finished = Arc::clone(&finished);
        transport
            .subscribe(vec!["report.requested".to_string()], move |event: Event| {
                let (started_tx, finished) = (started_tx.clone(), Arc::clone(&finished));
                async move {
                    let _ = started_tx.send(number(&event));
                    // Slow work, longer than the claim idle time.
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    HandlerResult::Ok(())
                }
            })
            .await
            .unwrap()
    };
    for n in 0..EVENTS {
        transport
            .publish(event("report.requested", n))
            .await
            .unwrap();
    }
    recv_n(&mut started, EVENTS, "every handler to start").await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
    assert_eq!(finished.load(Ordering::SeqCst), EVENTS);
    assert_eq!(
        pending_of_type(&server, &transport, "report.requested", "workers").await,
        0
    );
    assert!(
        started.try_recv().is_err(),
        "a slow handler's event was delivered twice"
    );
    let again = transport.unsubscribe(&handle).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::InvalidInput);
}

/// A handler that panics has failed that delivery: the event comes again, the worker lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_failed_delivery() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("panic");
    let transport = transport(
        &server,
        &prefix,
        "workers",
        fast().with_handler_concurrency(1),
    )
    .await;
    let attempts: Arc<Mutex<BTreeMap<usize, u32>>> = Arc::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = {
        let attempts = Arc::clone(&attempts);
        transport
            .subscribe(vec!["fragile".to_string()], move |event: Event| {
                let n = number(&event);
                let attempt = {
                    let mut attempts = attempts.lock().unwrap();
                    let count = attempts.entry(n).or_default();
                    *count += 1;
                    *count
                };
                assert!(attempt > 1, "deliberate panic on the first delivery of {n}");
                let _ = tx.send((n, attempt));
                async { HandlerResult::Ok(()) }
            })
            .await
            .unwrap()
    };
    for n in 0..2 {
        transport.publish(event("fragile", n)).await.unwrap();
    }
    let mut got = recv_n(&mut rx, 2, "both events after their panics").await;
    got.sort_unstable();
    assert_eq!(got, vec![(0, 2), (1, 2)]);
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
}

/// `backpressure_stats` sums the buffers of every subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_stats_sum_the_subscriptions() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("stats");
    let transport = redstream_transport::RedisTransport::with_options(
        config(&server, &prefix)
            .with_backpressure(BackpressureConfig::default().with_max_queue_size(7)),
        fast(),
    )
    .await
    .unwrap();
    assert_eq!(transport.backpressure_stats().await.max_queue_size, 7);
    let noop = |_event: Event| async { HandlerResult::Ok(()) };
    let a = transport
        .subscribe(vec!["a".to_string()], noop)
        .await
        .unwrap();
    let b = transport
        .subscribe(vec!["b".to_string()], noop)
        .await
        .unwrap();
    let stats = transport.backpressure_stats().await;
    assert_eq!((stats.max_queue_size, stats.current_queue_size), (14, 0));
    transport.unsubscribe(&a).await.unwrap();
    transport.unsubscribe(&b).await.unwrap();
}

/// Dropping the last clone of the transport stops reading; the running handler finishes in the
/// background and its entry is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_transport_drains_in_the_background() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("dropped");
    let transport = transport(&server, &prefix, "workers", fast()).await;
    let names = transport.names().clone();
    let release = Arc::new(Notify::new());
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (done_tx, mut done) = mpsc::unbounded_channel();
    {
        let release = Arc::clone(&release);
        transport
            .subscribe(vec!["job".to_string()], move |event: Event| {
                let (started_tx, done_tx, release) =
                    (started_tx.clone(), done_tx.clone(), Arc::clone(&release));
                async move {
                    let _ = started_tx.send(number(&event));
                    release.notified().await;
                    let _ = done_tx.send(number(&event));
                    HandlerResult::Ok(())
                }
            })
            .await
            .unwrap();
    }
    transport.publish(event("job", 1)).await.unwrap();
    assert_eq!(recv(&mut started, "the handler to start").await, 1);
    drop(transport);
    release.notify_one();
    assert_eq!(
        recv(&mut done, "the handler to finish after the drop").await,
        1
    );
    let stream = names.stream("job");
    until("the handled entry to be acknowledged", || async {
        crate::support::pending(&server, &stream, "workers").await == 0
    })
    .await;
}
