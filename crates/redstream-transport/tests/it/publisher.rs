//! Publishing against a real redis-server: the seed's XADD shape, batches, trimming,
//! validation, and the circuit breaker when the server stops answering.

use std::time::Duration;

use redis::AsyncCommands;
use redstream_core::wire::{self, EVENT_FIELD};
use redstream_core::{
    CircuitBreakerConfig, CircuitState, ErrorKind, Event, EventLimits, EventMetadata, Priority,
};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport, TransportOptions};
use serde_json::json;

type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;

async fn transport(server: &RedisServer, prefix: &str) -> RedisTransport {
    RedisTransport::with_options(
        RedisConfig::default()
            .with_url(server.url())
            .with_stream_prefix(prefix),
        TransportOptions::default(),
    )
    .await
    .unwrap()
}

fn order(n: u32) -> Event {
    Event::new(
        "order.created",
        json!({ "order_id": n.to_string(), "total": 99.99, "items": 3 }),
        EventMetadata::default(),
    )
}

async fn entries(server: &RedisServer, stream: &str) -> Entries {
    let mut conn = server.connection().await.unwrap();
    redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn publish_writes_one_event_field_to_the_prefixed_stream() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, "events").await;
    let event = order(1);
    let id = transport.publish(event.clone()).await.unwrap();

    let entries = entries(&server, "events:order.created").await;
    assert_eq!(entries.len(), 1);
    let (entry_id, fields) = &entries[0];
    assert_eq!(entry_id, &id);
    assert_eq!(fields.len(), 1, "exactly one field, `event`");
    assert_eq!(fields[0].0, EVENT_FIELD);
    // What seed 003's consumers do: JSON-decode the field and read `id` and the payload.
    let json: serde_json::Value = serde_json::from_slice(&fields[0].1).unwrap();
    assert_eq!(json["id"], event.id().as_str());
    assert_eq!(json["payload"]["order_id"], "1");
    let decoded = wire::decode_entry(fields.clone(), &EventLimits::default()).unwrap();
    assert_eq!(decoded, event);
}

#[tokio::test]
async fn every_priority_goes_to_the_one_stream_of_its_type() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, "p").await;
    for priority in Priority::ALL {
        transport
            .publish(order(1).with_priority(priority))
            .await
            .unwrap();
    }
    let stored = entries(&server, "p:order.created").await;
    let priorities: Vec<Priority> = stored
        .into_iter()
        .map(|(_, fields)| {
            wire::decode_entry(fields, &EventLimits::default())
                .unwrap()
                .priority()
        })
        .collect();
    assert_eq!(
        priorities,
        Priority::ALL,
        "in the envelope, in publish order"
    );
    let mut conn = server.connection().await.unwrap();
    let keys = redstream_core::keys::scan(&mut conn, "*", None, "test")
        .await
        .unwrap();
    assert_eq!(keys, ["p:order.created"], "no lane streams");
}

#[tokio::test]
async fn concurrent_publishes_share_one_connection() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, "c").await;
    let tasks: Vec<_> = (0..64)
        .map(|n| {
            let transport = transport.clone();
            tokio::spawn(async move { transport.publish(order(n)).await })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 64);
    assert_eq!(entries(&server, "c:order.created").await.len(), 64);
}

#[tokio::test]
async fn publish_batch_returns_ids_in_order_and_validates_first() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, "b").await;
    let events: Vec<_> = (0..10).map(order).collect();
    let ids = transport.publish_batch(events.clone()).await.unwrap();
    assert_eq!(ids.len(), 10);
    let stored = entries(&server, "b:order.created").await;
    for ((id, fields), (expected_id, event)) in stored.iter().zip(ids.iter().zip(&events)) {
        assert_eq!(id, expected_id);
        let decoded = wire::decode_entry(fields.clone(), &EventLimits::default()).unwrap();
        assert_eq!(&decoded, event);
    }

    // One invalid event fails the whole batch before anything is written.
    let mut bad = (10..15).map(order).collect::<Vec<_>>();
    bad.push(Event::new("bad type", json!(1), EventMetadata::default()));
    let err = transport.publish_batch(bad).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(entries(&server, "b:order.created").await.len(), 10);
    assert!(
        transport
            .publish_batch(Vec::new())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_batch_after_the_scripts_were_flushed_loads_its_script_again() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, "f").await;
    let first = transport
        .publish_batch((0..3).map(order).collect())
        .await
        .unwrap();
    // As after a restart or a failover: the server no longer knows the script.
    server.flush_scripts().await.unwrap();
    let events: Vec<_> = (3..6).map(order).collect();
    let second = transport.publish_batch(events.clone()).await.unwrap();
    let stored = entries(&server, "f:order.created").await;
    let stored_ids: Vec<_> = stored.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(stored_ids, [first, second.clone()].concat());
    for ((_, fields), event) in stored[3..].iter().zip(&events) {
        let decoded = wire::decode_entry(fields.clone(), &EventLimits::default()).unwrap();
        assert_eq!(&decoded, event);
    }

    // An event that cannot be encoded within the limit, after others that could, fails the
    // batch before anything of it is sent.
    let mut batch: Vec<_> = (6..9).map(order).collect();
    batch.push(Event::new(
        "order.created",
        json!("x".repeat(2 * 1024 * 1024)),
        EventMetadata::default(),
    ));
    let err = transport.publish_batch(batch).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(entries(&server, "f:order.created").await.len(), 6);
}

#[tokio::test]
async fn invalid_events_are_rejected_with_the_reason() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, "v").await;
    for (event_type, needle) in [
        ("", "must not be empty"),
        ("has space", "whitespace"),
        ("dlq", "reserved"),
        ("a{b}", "'{'"),
    ] {
        let err = transport
            .publish(Event::new(event_type, json!(1), EventMetadata::default()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{event_type:?}");
        assert!(err.to_string().contains(needle), "{event_type:?}: {err}");
    }
    let huge = Event::new(
        "big",
        json!("x".repeat(2 * 1024 * 1024)),
        EventMetadata::default(),
    );
    let err = transport.publish(huge).await.unwrap_err();
    assert!(err.to_string().contains("over the limit"), "{err}");
    let mut conn = server.connection().await.unwrap();
    let keys: Vec<String> = conn.keys("*").await.unwrap();
    assert!(keys.is_empty(), "nothing written: {keys:?}");
}

#[tokio::test]
async fn maxlen_keeps_the_stream_near_the_limit() {
    let server = RedisServer::start().await.unwrap();
    let transport = RedisTransport::new(
        RedisConfig::default()
            .with_url(server.url())
            .with_stream_prefix("t")
            .with_max_stream_length(100),
    )
    .await
    .unwrap();
    for chunk in 0..20 {
        let events = (0..100).map(|n| order(chunk * 100 + n)).collect();
        transport.publish_batch(events).await.unwrap();
    }
    let mut conn = server.connection().await.unwrap();
    let len: usize = conn.xlen("t:order.created").await.unwrap();
    // `MAXLEN ~` trims whole macro nodes (100 entries each by default), so the length stays
    // within one node of the limit instead of growing to 2,000.
    assert!((100..=200).contains(&len), "length {len}");
}

/// A batch whose events interleave three types: each goes to its type's stream in the batch's
/// order, the ids come back in the batch's order, and each stream is trimmed with its own
/// `MAXLEN` (or not at all).
#[tokio::test]
async fn a_batch_of_interleaved_types_keeps_order_and_each_streams_maxlen() {
    const BATCHES: u32 = 12;
    const PER_BATCH: u32 = 60;
    let server = RedisServer::start().await.unwrap();
    let transport = RedisTransport::with_options(
        RedisConfig::default()
            .with_url(server.url())
            .with_stream_prefix("mix")
            .with_max_stream_length(50),
        TransportOptions::default()
            .with_max_stream_length_of("mix:b", 0)
            .with_max_stream_length_of("mix:c", 10),
    )
    .await
    .unwrap();
    let typed = |n: u32| {
        let event_type = ["a", "b", "a", "c", "b", "a"][n as usize % 6];
        Event::new(event_type, json!({ "n": n }), EventMetadata::default())
    };
    let mut ids_of: std::collections::HashMap<String, Vec<String>> = Default::default();
    for batch in 0..BATCHES {
        let events: Vec<Event> = (0..PER_BATCH)
            .map(|n| typed(batch * PER_BATCH + n))
            .collect();
        let ids = transport.publish_batch(events.clone()).await.unwrap();
        assert_eq!(ids.len(), events.len());
        for (id, event) in ids.into_iter().zip(&events) {
            ids_of
                .entry(event.event_type().to_owned())
                .or_default()
                .push(id);
        }
        if batch == 0 {
            // Nothing trimmed yet: every stream holds its events in the batch's order.
            for event_type in ["a", "b", "c"] {
                let stored = entries(&server, &format!("mix:{event_type}")).await;
                let expected: Vec<&Event> = events
                    .iter()
                    .filter(|e| e.event_type() == event_type)
                    .collect();
                assert_eq!(stored.len(), expected.len(), "{event_type}");
                for ((id, fields), (event, returned)) in
                    stored.iter().zip(expected.iter().zip(&ids_of[event_type]))
                {
                    assert_eq!(id, returned, "{event_type}");
                    let decoded =
                        wire::decode_entry(fields.clone(), &EventLimits::default()).unwrap();
                    assert_eq!(&decoded, *event, "{event_type}");
                }
            }
        }
    }
    let mut conn = server.connection().await.unwrap();
    // b: no limit, all 240 of its events. a (the transport's 50) and c (its own 10): `MAXLEN ~`
    // trims whole macro nodes of 100 entries, so each stays within one node of its limit.
    let total = |share: u32| BATCHES * PER_BATCH * share / 6;
    let len = |key: &'static str| {
        let mut conn = conn.clone();
        async move { conn.xlen::<_, u32>(key).await.unwrap() }
    };
    assert_eq!(len("mix:b").await, total(2));
    let (a, c) = (len("mix:a").await, len("mix:c").await);
    assert!(
        (50..=150).contains(&a) && a < total(3),
        "a: {a} of {}",
        total(3)
    );
    assert!(
        (10..=110).contains(&c) && c < total(1),
        "c: {c} of {}",
        total(1)
    );
    // The last ids returned are the streams' last entries.
    for event_type in ["a", "b", "c"] {
        let key = format!("mix:{event_type}");
        let last: redis::streams::StreamRangeReply =
            conn.xrevrange_count(&key, "+", "-", 1).await.unwrap();
        assert_eq!(
            Some(&last.ids[0].id),
            ids_of[event_type].last(),
            "{event_type}"
        );
    }
}

/// A batch of more than 255 types, whose events' stream positions the script reads two bytes
/// at a time: each event lands in its own type's stream, in the batch's order, under the id
/// returned for it.
#[tokio::test]
async fn a_batch_of_300_types_writes_each_event_to_its_own_stream() {
    const TYPES: u32 = 300;
    let server = RedisServer::start().await.unwrap();
    let transport = RedisTransport::new(
        RedisConfig::default()
            .with_url(server.url())
            .with_stream_prefix("wide"),
    )
    .await
    .unwrap();
    // Two events of each type, the types in an order where positions past 255 come early too.
    let events: Vec<Event> = (0..2 * TYPES)
        .map(|n| {
            let event_type = format!("t{}", (n * 7) % TYPES);
            Event::new(&*event_type, json!({ "n": n }), EventMetadata::default())
        })
        .collect();
    let ids = transport.publish_batch(events.clone()).await.unwrap();
    assert_eq!(ids.len(), events.len());
    let mut expected: std::collections::BTreeMap<String, Vec<(&String, &Event)>> =
        Default::default();
    for (id, event) in ids.iter().zip(&events) {
        expected
            .entry(event.event_type().to_owned())
            .or_default()
            .push((id, event));
    }
    assert_eq!(expected.len(), TYPES as usize);
    for (event_type, written) in &expected {
        let stored = entries(&server, &format!("wide:{event_type}")).await;
        assert_eq!(stored.len(), 2, "{event_type}");
        for ((id, fields), (returned, event)) in stored.iter().zip(written) {
            assert_eq!(id, *returned, "{event_type}");
            let decoded = wire::decode_entry(fields.clone(), &EventLimits::default()).unwrap();
            assert_eq!(&decoded, *event, "{event_type}");
        }
    }
}

/// The script refuses a call whose stream positions do not cover its events (not a call the
/// transport makes, but one a hand-written caller could): an error that says so, nothing written.
#[tokio::test]
async fn the_batch_script_refuses_positions_that_do_not_match_its_events() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = server.connection().await.unwrap();
    let script = redis::Script::new(include_str!("../../src/publish_batch.lua"));
    let err = script
        .key("s1")
        .key("s2")
        .arg("{}")
        .arg("{}")
        .arg(0)
        .arg(0)
        .arg(&[1u8][..])
        .invoke_async::<String>(&mut conn)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("1 bytes of stream positions for 2 events"),
        "{err}"
    );
    let exists: u32 = conn.exists(&["s1", "s2"]).await.unwrap();
    assert_eq!(exists, 0);
}

/// A batch of more event types than the script can tell apart is refused before anything is
/// sent, with a typed error that says how to split it.
#[tokio::test]
async fn a_batch_of_more_than_65535_types_is_refused_before_anything_is_written() {
    let server = RedisServer::start().await.unwrap();
    let transport = RedisTransport::new(
        RedisConfig::default()
            .with_url(server.url())
            .with_stream_prefix("many"),
    )
    .await
    .unwrap();
    let events: Vec<Event> = (0..65_536u32)
        .map(|n| Event::new(&*format!("t{n}"), json!({}), EventMetadata::default()))
        .collect();
    let err = transport.publish_batch(events).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("more than 65535 types"), "{err}");
    let mut conn = server.connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("many:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn paused_server_opens_the_breaker_which_closes_after_resume() {
    let server = RedisServer::start().await.unwrap();
    let transport = RedisTransport::with_options(
        RedisConfig::default()
            .with_url(server.url())
            .with_stream_prefix("cb"),
        TransportOptions::default()
            .with_response_timeout(Duration::from_millis(200))
            .with_circuit_breaker(
                CircuitBreakerConfig::default()
                    .with_failure_threshold(3)
                    .with_open_duration(Duration::from_millis(300)),
            ),
    )
    .await
    .unwrap();
    let accepted = transport.publish(order(0)).await.unwrap();

    server.pause().unwrap();
    for _ in 0..3 {
        let err = transport.publish(order(1)).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
    }
    let stats = transport.circuit_breaker_stats().await;
    assert_eq!(stats.state, CircuitState::Open);
    let err = transport.publish(order(2)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    assert!(err.to_string().contains("Circuit breaker is open"), "{err}");
    server.resume().unwrap();

    // After the open period a trial call goes through and closes the breaker. The rejection
    // says how long the breaker stays open; wait exactly that.
    let id = loop {
        match transport.publish(order(3)).await {
            Ok(id) => break id,
            Err(redstream_core::Error::CircuitOpen { retry_after }) => {
                tokio::time::sleep(retry_after).await;
            }
            Err(err) => panic!("unexpected error after resume: {err}"),
        }
    };
    assert_eq!(
        transport.circuit_breaker_stats().await.state,
        CircuitState::Closed
    );
    // What was accepted before the pause is still there, and so is the trial write.
    let stored: Vec<String> = entries(&server, "cb:order.created")
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(
        stored.contains(&accepted) && stored.contains(&id),
        "{stored:?}"
    );
}

#[tokio::test]
async fn auth_failures_fail_fast_and_never_print_the_password() {
    let server = RedisServer::builder()
        .password("s3cret-pw")
        .start()
        .await
        .unwrap();
    let wrong = format!("redis://:wrong-pw@127.0.0.1:{}/", server.port());
    let err = RedisTransport::new(RedisConfig::default().with_url(wrong))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!err.is_retryable());
    let message = format!("{err} {err:?}");
    assert!(!message.contains("wrong-pw"), "{message}");

    let ok = RedisTransport::new(RedisConfig::default().with_url(server.url()))
        .await
        .unwrap();
    assert!(!format!("{ok:?}").contains("s3cret-pw"));
}

#[tokio::test]
async fn unreachable_server_is_a_retryable_connection_error() {
    let server = RedisServer::start().await.unwrap();
    let url = server.url();
    server.kill().unwrap();
    let err = RedisTransport::with_options(
        RedisConfig::default().with_url(url),
        TransportOptions::default().with_connect_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout),
        "{err}"
    );
    assert!(err.is_retryable());
}

/// Seed 003's OOM case for batches: the transaction is refused whole (`EXECABORT` after an
/// `OOM`), the error is the retryable `OutOfMemory`, and nothing of the batch is in the stream.
#[tokio::test]
async fn a_batch_refused_for_memory_writes_nothing_and_is_retryable() {
    let server = RedisServer::builder()
        .maxmemory(2 * 1024 * 1024)
        .maxmemory_policy("noeviction")
        .start()
        .await
        .unwrap();
    let transport = transport(&server, "oom").await;
    let big = |n: u32| {
        Event::new(
            "order.created",
            json!({ "n": n, "pad": "x".repeat(64 * 1024) }),
            EventMetadata::default(),
        )
    };
    let mut written = 0;
    let err = loop {
        match transport.publish_batch((0..4).map(big).collect()).await {
            Ok(ids) => written += ids.len(),
            Err(err) => break err,
        }
        assert!(
            written < 1000,
            "a 2 MiB server must refuse 64 MiB of batches"
        );
    };
    assert_eq!(err.kind(), ErrorKind::OutOfMemory, "{err}");
    assert!(err.is_retryable());
    let mut conn = server.connection().await.unwrap();
    let len: usize = conn.xlen("oom:order.created").await.unwrap();
    assert_eq!(len, written, "only whole batches are in the stream");
    assert_eq!(len % 4, 0);
}
