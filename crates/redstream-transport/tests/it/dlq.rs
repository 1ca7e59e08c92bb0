//! Dead letters against a real redis-server: handlers that always fail, poison entries,
//! `publish_to_dlq`, `consume_dlq`, listing and redriving.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redstream_core::{ErrorKind, Event, EventId, HandlerResult, Priority, wire};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport};
use tokio::sync::mpsc;

use crate::support::{
    event, fast, field, number, pending_of_type, recv, recv_n, transport, unique, until, within,
    xrange,
};

/// Seed 000's "Dead Letter Queue" snippet, with only the crate names changed.
mod seed {
    use redstream_core::{BoxError, Event};
    use redstream_transport::{RedisConfig, RedisTransport};

    async fn retry_processing(_event: &Event) -> Result<(), BoxError> {
        Ok(())
    }

    pub(super) async fn dead_letter_queue(
        config: RedisConfig,
        event: Event,
        error: BoxError,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let transport = RedisTransport::new(config).await?;

        // Publish to DLQ (creates stream: events:dlq)
        transport.publish_to_dlq(event, &error).await?;

        // Consume from DLQ
        transport
            .consume_dlq(|event| {
                Box::pin(async move {
                    println!("Retrying failed event: {:?}", event);
                    retry_processing(&event).await?;
                    Ok(())
                })
            })
            .await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_dead_letter_snippet_runs() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("seed-dlq");
    let config = RedisConfig::default()
        .with_url(server.url())
        .with_stream_prefix(&prefix);
    let event = event("order.created", 1);
    seed::dead_letter_queue(config, event.clone(), "card declined".into())
        .await
        .unwrap();
    let entries = xrange(&server, &format!("{prefix}:dlq")).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(field(&entries[0].1, "error"), "card declined");
    assert_eq!(field(&entries[0].1, "original_type"), "order.created");
}

/// A handler that always fails: each event is delivered `max_deliveries` times, then there is
/// exactly one dead letter per event, with the seed's fields. A redrive puts the events back and
/// a fixed handler handles them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_failing_events_are_dead_lettered_once_then_redriven() {
    const EVENTS: usize = 3;
    const MAX_DELIVERIES: u32 = 3;
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("failing");
    let billing = transport(
        &server,
        &prefix,
        "billing",
        fast().with_max_deliveries(MAX_DELIVERIES),
    )
    .await;
    let deliveries: Arc<Mutex<HashMap<usize, u32>>> = Arc::default();
    let failing = {
        let deliveries = Arc::clone(&deliveries);
        billing
            .subscribe(vec!["payment.failed".to_string()], move |event: Event| {
                *deliveries
                    .lock()
                    .unwrap()
                    .entry(number(&event))
                    .or_default() += 1;
                async { HandlerResult::Err("card declined".into()) }
            })
            .await
            .unwrap()
    };
    let auditors = transport(&server, &prefix, "auditors", fast()).await;
    let (dead_tx, mut dead_rx) = mpsc::unbounded_channel();
    let watcher = auditors
        .consume_dlq(move |event: Event| {
            let _ = dead_tx.send(event);
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();

    let events: Vec<Event> = (0..EVENTS).map(|n| event("payment.failed", n)).collect();
    let mut entry_ids = HashMap::new();
    for event in &events {
        entry_ids.insert(
            event.id().clone(),
            billing.publish(event.clone()).await.unwrap(),
        );
    }
    let mut dead = recv_n(&mut dead_rx, EVENTS, "the dead letters").await;
    dead.sort_by_key(number);
    assert_eq!(dead, events, "the dead letters carry the original events");

    within("unsubscribe", billing.unsubscribe(&failing))
        .await
        .unwrap();
    let counts = deliveries.lock().unwrap().clone();
    assert_eq!(
        counts,
        (0..EVENTS)
            .map(|n| (n, MAX_DELIVERIES))
            .collect::<HashMap<_, _>>(),
        "each event is delivered max_deliveries times"
    );
    assert_eq!(
        pending_of_type(&server, &billing, "payment.failed", "billing").await,
        0
    );

    let stream = billing.names().stream("payment.failed");
    let entries = xrange(&server, &billing.names().dlq()).await;
    assert_eq!(
        entries.len(),
        EVENTS,
        "exactly one dead letter per event: {entries:?}"
    );
    for (_, fields) in &entries {
        let event =
            wire::decode_envelope(field(fields, "event").as_bytes(), &Default::default()).unwrap();
        assert_eq!(field(fields, "error"), "card declined");
        assert_eq!(field(fields, "original_type"), "payment.failed");
        assert_eq!(field(fields, "stream"), stream);
        assert_eq!(field(fields, "entry_id"), entry_ids[event.id()]);
        assert_eq!(field(fields, "group"), "billing");
        assert_eq!(field(fields, "consumer"), billing.config().consumer_name);
        assert_eq!(field(fields, "deliveries"), MAX_DELIVERIES.to_string());
        let first: u64 = field(fields, "first_failure_ms").parse().unwrap();
        let last: u64 = field(fields, "last_failure_ms").parse().unwrap();
        assert!(first > 0 && first <= last, "{first} {last}");
    }

    let listed = billing.dlq_entries(10).await.unwrap();
    assert_eq!(listed.len(), EVENTS);
    for entry in &listed {
        let event = entry.event.as_ref().unwrap();
        assert_eq!(entry.error, "card declined");
        assert_eq!(entry.original_type, "payment.failed");
        assert_eq!(entry.entry_id, entry_ids[event.id()]);
        assert_eq!(entry.deliveries, MAX_DELIVERIES);
        assert!(entry.decode_error.is_none());
        assert!(entry.first_failure.is_some() && entry.first_failure <= entry.last_failure);
    }

    let report = billing.redrive_all().await.unwrap();
    assert_eq!(report.redriven, EVENTS);
    assert!(report.skipped.is_empty(), "{report:?}");
    assert!(xrange(&server, &billing.names().dlq()).await.is_empty());

    let (tx, mut rx) = mpsc::unbounded_channel();
    let fixed = billing
        .subscribe(vec!["payment.failed".to_string()], move |event: Event| {
            let _ = tx.send(event.id().clone());
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    // Redriven entries are new entries: the group, which had stopped reading, receives them.
    let mut handled: Vec<EventId> = recv_n(&mut rx, EVENTS, "the redriven events").await;
    handled.sort();
    let mut expected: Vec<EventId> = events.iter().map(|e| e.id().clone()).collect();
    expected.sort();
    assert_eq!(handled, expected);
    within("unsubscribe", billing.unsubscribe(&fixed))
        .await
        .unwrap();
    within("unsubscribe", auditors.unsubscribe(&watcher))
        .await
        .unwrap();
    assert_eq!(
        pending_of_type(&server, &billing, "payment.failed", "billing").await,
        0
    );
}

/// Seed 000's "NACK, not requeued": with `dead_letter_on_first_failure`, one delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_on_first_failure_delivers_once() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("nack");
    let transport = transport(
        &server,
        &prefix,
        "workers",
        fast().with_dead_letter_on_first_failure(true),
    )
    .await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = transport
        .subscribe(vec!["risky.operation".to_string()], move |event: Event| {
            let _ = tx.send(number(&event));
            async { HandlerResult::Err("boom".into()) }
        })
        .await
        .unwrap();
    transport
        .publish(event("risky.operation", 7))
        .await
        .unwrap();
    assert_eq!(recv(&mut rx, "the only delivery").await, 7);
    until("the dead letter", || async {
        !xrange(&server, &transport.names().dlq()).await.is_empty()
    })
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
    assert!(
        rx.try_recv().is_err(),
        "delivered again despite dead_letter_on_first_failure"
    );
    let entries = xrange(&server, &transport.names().dlq()).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(field(&entries[0].1, "deliveries"), "1");
    assert_eq!(field(&entries[0].1, "error"), "boom");
    assert_eq!(
        pending_of_type(&server, &transport, "risky.operation", "workers").await,
        0
    );
}

/// A consumer that gives up on an entry another consumer claimed and acknowledged meanwhile
/// (as one that stalled past `claim_idle_time` would) writes no dead letter: the group is done
/// with the entry, and a dead letter of it would be redriven to every group again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_acknowledged_elsewhere_meanwhile_is_not_dead_lettered() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("stalled");
    let transport = transport(
        &server,
        &prefix,
        "workers",
        fast().with_dead_letter_on_first_failure(true),
    )
    .await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (fail_tx, fail) = tokio::sync::watch::channel(false);
    let handle = transport
        .subscribe(vec!["risky.operation".to_string()], move |event: Event| {
            let _ = started_tx.send(event.id().to_string());
            let mut fail = fail.clone();
            async move {
                let _ = fail.wait_for(|fail| *fail).await;
                HandlerResult::Err("boom".into())
            }
        })
        .await
        .unwrap();
    transport
        .publish(event("risky.operation", 7))
        .await
        .unwrap();
    recv(&mut started, "the delivery").await;
    // Another consumer of the group takes the entry over and acknowledges it.
    let stream = transport.names().stream("risky.operation");
    let mut conn = server.connection().await.unwrap();
    let (id, _) = xrange(&server, &stream).await.remove(0);
    let claimed: Vec<String> = redis::cmd("XCLAIM")
        .arg(&stream)
        .arg("workers")
        .arg("another-consumer")
        .arg(0)
        .arg(&id)
        .arg("JUSTID")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(claimed, std::slice::from_ref(&id));
    let acked: i64 = redis::cmd("XACK")
        .arg(&stream)
        .arg("workers")
        .arg(&id)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(acked, 1);
    // Now the first consumer's handler fails: its give-up finds the entry handled.
    fail_tx.send_replace(true);
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
    assert!(
        xrange(&server, &transport.names().dlq()).await.is_empty(),
        "a dead letter of an entry its group had acknowledged"
    );
    assert_eq!(
        pending_of_type(&server, &transport, "risky.operation", "workers").await,
        0
    );
}

/// Entries that are not redstream events (written by redis-cli, or in a future wire version)
/// go to the dead-letter stream at once with the reason; the loop goes on. They cannot be
/// redriven, and a dead-letter consumer skips them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entries_are_dead_lettered_and_the_loop_goes_on() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("poison");
    let transport = transport(
        &server,
        &prefix,
        "workers",
        fast().with_handler_concurrency(1),
    )
    .await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = transport
        .subscribe(vec!["orders".to_string()], move |event: Event| {
            let _ = tx.send(number(&event));
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    let stream = transport.names().stream("orders");
    let mut conn = server.connection().await.unwrap();
    let poison: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("foo")
        .arg("bar")
        .query_async(&mut conn)
        .await
        .unwrap();
    let future_version = r#"{"v":2,"id":"x","type":"orders","whatever":true}"#;
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("event")
        .arg(future_version)
        .query_async(&mut conn)
        .await
        .unwrap();
    transport.publish(event("orders", 1)).await.unwrap();
    assert_eq!(recv(&mut rx, "the good event after the poison").await, 1);

    let dlq = transport.names().dlq();
    until("both poison entries in the dead-letter stream", || async {
        xrange(&server, &dlq).await.len() == 2
    })
    .await;
    let entries = xrange(&server, &dlq).await;
    let (_, first) = &entries[0];
    assert_eq!(field(first, "entry_id"), poison);
    assert_eq!(field(first, "original_type"), "orders");
    assert_eq!(field(first, "stream"), stream);
    assert!(
        field(first, "error").contains("no `event` field"),
        "{first:?}"
    );
    assert_eq!(field(first, "event"), r#"{"foo":"bar"}"#);
    assert_eq!(field(first, "undecodable"), "true");
    let (_, second) = &entries[1];
    assert!(
        field(second, "error").contains("unsupported wire format version 2"),
        "{second:?}"
    );
    let raw: serde_json::Value = serde_json::from_str(field(second, "event")).unwrap();
    assert_eq!(raw["event"], future_version);

    let listed = transport.dlq_entries(10).await.unwrap();
    assert!(
        listed
            .iter()
            .all(|e| e.event.is_none() && e.decode_error.is_some())
    );
    let report = transport.redrive_all().await.unwrap();
    assert_eq!(report.redriven, 0);
    assert_eq!(report.skipped.len(), 2, "{report:?}");
    assert_eq!(
        xrange(&server, &dlq).await.len(),
        2,
        "undecodable dead letters are kept"
    );

    // A dead-letter consumer skips them and receives the next dead letter.
    let manual = event("orders", 2);
    transport
        .publish_to_dlq(manual.clone(), "by hand")
        .await
        .unwrap();
    let (dead_tx, mut dead_rx) = mpsc::unbounded_channel();
    let watcher = transport
        .consume_dlq(move |event: Event| {
            let _ = dead_tx.send(event);
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    assert_eq!(
        recv(&mut dead_rx, "the decodable dead letter").await,
        manual
    );
    within("unsubscribe", transport.unsubscribe(&watcher))
        .await
        .unwrap();
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
    assert!(dead_rx.try_recv().is_err());
    // Acknowledgements are batched: after unsubscribe they are all sent.
    assert_eq!(
        pending_of_type(&server, &transport, "orders", "workers").await,
        0
    );
    let dlq_group = format!("{}-dlq", transport.config().consumer_group);
    assert_eq!(crate::support::pending(&server, &dlq, &dlq_group).await, 0);
}

/// `publish_to_dlq` by hand, then redrives by id and by range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_dead_letters_are_redriven_by_id_and_range() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("redrive");
    let transport = transport(&server, &prefix, "workers", fast()).await;
    let urgent = event("invoice.sent", 0).with_priority(Priority::High);
    let error = std::io::Error::other("smtp unavailable");
    let first = transport
        .publish_to_dlq(urgent.clone(), &error)
        .await
        .unwrap();

    let listed = transport.dlq_entries(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    let entry = &listed[0];
    assert_eq!(entry.id, first);
    assert_eq!(entry.event.as_ref(), Some(&urgent));
    assert_eq!(entry.error, "smtp unavailable");
    assert_eq!(entry.original_type, "invoice.sent");
    assert_eq!(entry.stream, transport.names().stream("invoice.sent"));
    assert_eq!((entry.entry_id.as_str(), entry.deliveries), ("", 0));

    let report = transport.redrive_ids(&[&first, "1-0"]).await.unwrap();
    assert_eq!(report.redriven, 1);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].id, "1-0");
    let back_in_stream = xrange(&server, &transport.names().stream("invoice.sent")).await;
    assert_eq!(back_in_stream.len(), 1);
    let back = wire::decode_envelope(
        field(&back_in_stream[0].1, "event").as_bytes(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(back, urgent, "the same event goes back to its stream");
    assert!(transport.dlq_entries(10).await.unwrap().is_empty());

    let err = transport.redrive_ids(&["not-an-id"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        transport.dlq_entries(0).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );

    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(
            transport
                .publish_to_dlq(event("invoice.sent", n), "later")
                .await
                .unwrap(),
        );
    }
    let report = transport.redrive_range(&ids[1], "+").await.unwrap();
    assert_eq!(report.redriven, 2);
    let left = transport.dlq_entries(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, ids[0]);
    let report = transport
        .redrive_range("-", &format!("({}", ids[0]))
        .await
        .unwrap();
    assert_eq!(
        report.redriven, 0,
        "an exclusive bound leaves the entry alone"
    );
    let report = transport.redrive_all().await.unwrap();
    assert_eq!(report.redriven, 1);
    let normal = xrange(&server, &transport.names().stream("invoice.sent")).await;
    assert_eq!(normal.len(), 4, "the urgent event and the three later ones");
    let empty = transport.redrive_all().await.unwrap();
    assert_eq!(empty.redriven, 0);
    assert!(empty.skipped.is_empty());
}

/// Invalid events are refused by `publish_to_dlq` like by `publish`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_dlq_validates_the_event() {
    let server = RedisServer::start().await.unwrap();
    let transport: RedisTransport = transport(&server, &unique("invalid"), "workers", fast()).await;
    for bad in ["dlq", "bad type", "a{b}"] {
        let err = transport
            .publish_to_dlq(event(bad, 0), "whatever")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
    }
    assert!(xrange(&server, &transport.names().dlq()).await.is_empty());
}

/// Two clients redriving the same dead letters at once (the CLI and the dashboard, say)
/// republish each exactly once, and a target that is not a stream keeps its dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redrives_republish_each_dead_letter_once() {
    const LETTERS: usize = 300;
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("redrive-race");
    let one = transport(&server, &prefix, "workers", fast()).await;
    let two = transport(&server, &prefix, "workers", fast()).await;
    let error = std::io::Error::other("downstream refused");
    for n in 0..LETTERS {
        one.publish_to_dlq(event("refund.issued", n), &error)
            .await
            .unwrap();
    }
    let (a, b) = tokio::join!(one.redrive_all(), two.redrive_all());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.redriven + b.redriven, LETTERS, "{a:?} {b:?}");
    let stream = one.names().stream("refund.issued");
    assert_eq!(xrange(&server, &stream).await.len(), LETTERS);
    assert!(one.dlq_entries(10).await.unwrap().is_empty());

    // A target of the wrong type: the dead letter stays, with the reason.
    let mut conn = server.connection().await.unwrap();
    let () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg(&stream)
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    let id = one
        .publish_to_dlq(event("refund.issued", 0), &error)
        .await
        .unwrap();
    let report = one.redrive_all().await.unwrap();
    assert_eq!(report.redriven, 0);
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert!(
        report.skipped[0].reason.contains("not a stream"),
        "{report:?}"
    );
    assert_eq!(one.dlq_entries(10).await.unwrap()[0].id, id);
}

/// A redrive the server refuses (here an ACL user that may not write the target stream) is an
/// error with the server's kind, not a report that looks like success, and it loses nothing:
/// the dead letter is still there and nothing was republished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_redrive_is_an_error_and_keeps_the_dead_letter() {
    let prefix = unique("redrive-denied");
    let server = RedisServer::builder()
        .acl_user("dlqonly", "s3cret-pw", &format!("{prefix}:dlq"))
        .start()
        .await
        .unwrap();
    let admin = transport(&server, &prefix, "workers", fast()).await;
    let id = admin
        .publish_to_dlq(event("refund.issued", 1), "downstream refused")
        .await
        .unwrap();

    let config = RedisConfig::default()
        .with_url(server.url_with_user("dlqonly", "s3cret-pw"))
        .with_stream_prefix(&prefix);
    let limited = RedisTransport::with_options(config, fast()).await.unwrap();
    let err = limited.redrive_all().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("XADD"), "names the command: {err}");
    assert!(
        err.to_string().contains("0 dead letters were redriven"),
        "{err}"
    );
    assert!(!err.to_string().contains("s3cret-pw"), "{err}");

    let left = admin.dlq_entries(10).await.unwrap();
    assert_eq!(left.len(), 1, "the dead letter is kept");
    assert_eq!(left[0].id, id);
    let stream = admin.names().stream("refund.issued");
    assert!(
        xrange(&server, &stream).await.is_empty(),
        "nothing republished"
    );
}
