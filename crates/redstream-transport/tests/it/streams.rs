//! Streams by name: publishing to, subscribing to, inspecting and redriving into streams that
//! are not `<prefix>:<type>` (seed 004's `events.raw`), per-stream `MAXLEN`, and the rule for
//! an entry whose type differs from its stream's.

use redstream_core::{ErrorKind, Event, HandlerResult, wire};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisTransport, StartFrom};
use tokio::sync::mpsc;

use crate::support::{
    event, fast, field, number, pending, recv, recv_n, transport, unique, until, within, xrange,
};

/// Seed 004: a subscription to the stream `events.raw` as the group `event-processors` receives
/// events of any type published there by name; the group shows in `stream_info`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_by_name_in_a_group_of_its_own() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, "events", "workers", fast()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = transport
        .subscription()
        .streams(["events.raw"])
        .group("event-processors")
        .handle(move |event: Event| {
            let _ = tx.send((event.event_type().to_owned(), number(&event)));
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    assert_eq!(handle.group(), "event-processors");
    assert_eq!(handle.event_types(), ["events.raw"]);
    transport
        .publish_to("events.raw", event("page.viewed", 1))
        .await
        .unwrap();
    transport
        .publish_to("events.raw", event("cart.updated", 2))
        .await
        .unwrap();
    let mut got = recv_n(&mut rx, 2, "both events").await;
    got.sort_by_key(|(_, n)| *n);
    assert_eq!(
        got,
        [
            ("page.viewed".to_owned(), 1),
            ("cart.updated".to_owned(), 2)
        ]
    );
    until("both acknowledged", || async {
        pending(&server, "events.raw", "event-processors").await == 0
    })
    .await;
    // Nothing was created under the prefix.
    assert!(transport.list_streams().await.unwrap().is_empty());
    let info = transport.stream_info("events.raw").await.unwrap();
    assert_eq!(info.length, 2);
    // Followed (`redstream tail`) and read by its name too.
    let mut follower = transport.follow(&["events.raw"], Some("-")).await.unwrap();
    let followed = within("following", async {
        let mut entries = Vec::new();
        while entries.len() < 2 {
            entries.extend(follower.next(10).await.unwrap());
        }
        entries
    })
    .await;
    assert_eq!(followed[0].event.as_ref().map(number), Some(1));
    let read = transport
        .read_range("events.raw", "-", "+", 10, true)
        .await
        .unwrap();
    assert_eq!(read[0].event.as_ref().map(number), Some(2));
    assert_eq!(info.groups[0].name, "event-processors");
    assert_eq!(info.event_type, None);
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
}

/// An entry whose envelope has another type than its stream: a subscription by type
/// dead-letters it (the error names both types), a subscription by stream name hands it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_of_another_type_is_dead_lettered_by_a_typed_subscription_only() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("mixed");
    let transport = transport(&server, &prefix, "typed", fast()).await;
    let stream = transport.names().stream("order.created");
    let (typed_tx, mut typed_rx) = mpsc::unbounded_channel();
    let typed = transport
        .subscribe(vec!["order.created".to_owned()], move |event: Event| {
            let _ = typed_tx.send(number(&event));
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    let (named_tx, mut named_rx) = mpsc::unbounded_channel();
    let named = transport
        .subscription()
        .streams([stream.clone()])
        .group("by-name")
        .handle(move |event: Event| {
            let _ = named_tx.send(event.event_type().to_owned());
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    transport
        .publish_to(&stream, event("order.cancelled", 1))
        .await
        .unwrap();
    transport.publish(event("order.created", 2)).await.unwrap();

    assert_eq!(recv(&mut typed_rx, "the event of the right type").await, 2);
    let mut by_name = recv_n(&mut named_rx, 2, "both, by name").await;
    by_name.sort();
    assert_eq!(by_name, ["order.cancelled", "order.created"]);
    until("the dead letter", || async {
        !xrange(&server, &transport.names().dlq()).await.is_empty()
    })
    .await;
    let dead = transport.dlq_entries(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].error.contains("\"order.cancelled\""),
        "{}",
        dead[0].error
    );
    assert!(
        dead[0].error.contains("\"order.created\""),
        "{}",
        dead[0].error
    );
    assert_eq!(dead[0].stream, stream);
    assert_eq!(dead[0].original_type, "order.cancelled");
    assert!(typed_rx.try_recv().is_err());
    for handle in [&typed, &named] {
        within("unsubscribe", transport.unsubscribe(handle))
            .await
            .unwrap();
    }
    // Written back to `order.created`'s stream it would be dead-lettered again: the redrive
    // writes it to its own type's stream.
    let report = transport.redrive_all().await.unwrap();
    assert_eq!(report.redriven, 1, "{report:?}");
    let cancelled = xrange(&server, &transport.names().stream("order.cancelled")).await;
    assert_eq!(cancelled.len(), 1);
    assert_eq!(
        xrange(&server, &stream).await.len(),
        2,
        "nothing added to the typed stream"
    );
}

/// Per-stream `MAXLEN` (seed 004's topics have their own), and foreign entries written with
/// `publish_fields`.
#[tokio::test]
async fn named_streams_have_their_own_length_limits() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(
        &server,
        "events",
        "g",
        fast()
            .with_max_stream_length_of("profiles.merge_requests", 10)
            .with_max_stream_length_of("events.raw", 0),
    )
    .await;
    for n in 0..500 {
        let id = n.to_string();
        transport
            .publish_fields(
                "profiles.merge_requests",
                &[("event_id", id.as_str()), ("brand_id", "b1")],
            )
            .await
            .unwrap();
        transport
            .publish_fields("events.raw", &[("event_id", id.as_str())])
            .await
            .unwrap();
    }
    let limited = transport
        .stream_info("profiles.merge_requests")
        .await
        .unwrap();
    assert!(
        (10..500).contains(&limited.length),
        "trimmed near 10: {}",
        limited.length
    );
    assert_eq!(
        transport.stream_info("events.raw").await.unwrap().length,
        500
    );
    let entries = xrange(&server, "events.raw").await;
    assert_eq!(field(&entries[0].1, "event_id"), "0");

    let err = transport
        .publish_fields::<&str, &str>("events.raw", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = transport
        .publish_to("bad name", event("x", 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

/// Subscriptions that name nothing, the dead-letter stream, or a stream twice are refused.
#[tokio::test]
async fn invalid_subscriptions_are_refused() {
    let server = RedisServer::start().await.unwrap();
    let transport: RedisTransport = transport(&server, "events", "g", fast()).await;
    let noop = |_: Event| async { HandlerResult::Ok(()) };
    for (builder, needle) in [
        (transport.subscription(), "names no stream"),
        (
            transport.subscription().streams(["events:dlq"]),
            "consume_dlq",
        ),
        (
            transport
                .subscription()
                .types(["order.created"])
                .streams(["events:order.created"]),
            "named twice",
        ),
        (transport.subscription().types(["dlq"]), "reserved"),
        (
            transport.subscription().streams(["a b"]),
            "must not contain",
        ),
        (
            transport.subscription().streams(["x"]).group("a b"),
            "group",
        ),
    ] {
        let err = builder.handle(noop).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(needle), "{err} / {needle}");
    }
}

/// A dead letter of a stream by name goes back to that stream; one written by the layout
/// before this version (`{prefix}:type#lane`) goes to its type's stream under the new names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrives_go_to_the_recorded_stream_or_the_types_new_stream() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(
        &server,
        "events",
        "g",
        fast().with_dead_letter_on_first_failure(true),
    )
    .await;
    let handle = transport
        .subscription()
        .streams(["events.normalized"])
        .group("event-processors")
        .start_from(StartFrom::Beginning)
        .handle(|_: Event| async { HandlerResult::Err("normaliser down".into()) })
        .await
        .unwrap();
    transport
        .publish_to("events.normalized", event("profile.updated", 7))
        .await
        .unwrap();
    until("the dead letter", || async {
        !xrange(&server, "events:dlq").await.is_empty()
    })
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
    // A dead letter as version 0.1 wrote it.
    let legacy = event("order.created", 8);
    let envelope = wire::encode(&legacy, &Default::default()).unwrap();
    let mut conn = server.connection().await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg("events:dlq")
        .arg("*")
        .arg("event")
        .arg(&envelope)
        .arg("error")
        .arg("old")
        .arg("original_type")
        .arg("order.created")
        .arg("stream")
        .arg("{events}:order.created#high")
        .query_async(&mut conn)
        .await
        .unwrap();

    let report = transport.redrive_all().await.unwrap();
    assert_eq!(report.redriven, 2, "{report:?}");
    let normalized = xrange(&server, "events.normalized").await;
    assert_eq!(normalized.len(), 2, "the original and the redriven entry");
    assert_eq!(
        field(&normalized[0].1, "event"),
        field(&normalized[1].1, "event")
    );
    let created = xrange(&server, "events:order.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(field(&created[0].1, "event"), envelope);
    let mut conn = server.connection().await.unwrap();
    let legacy_exists: bool = redis::cmd("EXISTS")
        .arg("{events}:order.created#high")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!legacy_exists);
}

/// An envelope without `metadata.timestamp` (another writer's) gets its entry id's time, the
/// same on every read: in a handler and in `read_range`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_without_a_timestamp_takes_its_entry_ids_time() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, "events", "g", fast()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = transport
        .subscription()
        .streams(["orders.events"])
        .handle(move |event: Event| {
            let _ = tx.send(event.metadata().timestamp);
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    let id = transport
        .publish_fields(
            "orders.events",
            &[(
                "event",
                r#"{"v":1,"id":"o-1","type":"order.created","payload":{}}"#,
            )],
        )
        .await
        .unwrap();
    let millis: u64 = id.split('-').next().unwrap().parse().unwrap();
    let expected = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis);
    assert_eq!(recv(&mut rx, "the event").await, expected);
    let read = transport
        .read_range("orders.events", "-", "+", 10, false)
        .await
        .unwrap();
    assert_eq!(
        read[0].event.as_ref().unwrap().metadata().timestamp,
        expected
    );
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
}
