//! The inspection API against a real redis-server: listing streams under a prefix, stream and
//! group summaries (pending, lag, ages), consumers, pending entries, reading ranges, health,
//! and typed errors. Groups and pending entries are set up with raw commands, the way another
//! process would leave them.

// Tests unwrap (STYLE.md); clippy's allow-unwrap-in-tests covers `#[test]` functions only, not
// the helpers next to them.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redstream_core::{ErrorKind, Event, EventMetadata, Priority};
use redstream_testkit::RedisServer;
use redstream_transport::{PendingQuery, RedisConfig, RedisTransport, TransportOptions};
use serde_json::json;

const STREAM: &str = "insp:order.created";

async fn transport_with(server: &RedisServer, options: TransportOptions) -> RedisTransport {
    RedisTransport::with_options(
        RedisConfig::default()
            .with_url(server.url())
            .with_stream_prefix("insp")
            .with_consumer_group("g"),
        options,
    )
    .await
    .unwrap()
}

async fn transport(server: &RedisServer) -> RedisTransport {
    transport_with(server, TransportOptions::default()).await
}

fn order(n: u32) -> Event {
    Event::new(
        "order.created",
        json!({ "order_id": n.to_string(), "total": 99.99 }),
        EventMetadata::default(),
    )
}

async fn publish_orders(transport: &RedisTransport, n: u32) -> (Vec<String>, Vec<Event>) {
    let mut ids = Vec::new();
    let mut events = Vec::new();
    for i in 0..n {
        let event = order(i);
        ids.push(transport.publish(event.clone()).await.unwrap());
        events.push(event);
    }
    (ids, events)
}

/// Runs one raw command and returns its reply.
async fn raw<T: redis::FromRedisValue>(conn: &mut MultiplexedConnection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(conn).await.unwrap()
}

/// Reads `count` new entries as `consumer` of `group` and does not acknowledge them.
async fn read_without_ack(conn: &mut MultiplexedConnection, group: &str, consumer: &str, n: u32) {
    let _: redis::Value = raw(
        conn,
        &[
            "XREADGROUP",
            "GROUP",
            group,
            consumer,
            "COUNT",
            &n.to_string(),
            "STREAMS",
            STREAM,
            ">",
        ],
    )
    .await;
}

fn assert_invalid(err: &redstream_transport::Error, needle: &str) {
    assert_kind(err, ErrorKind::InvalidInput, needle);
}

fn assert_not_found(err: &redstream_transport::Error, needle: &str) {
    assert_kind(err, ErrorKind::NotFound, needle);
}

fn assert_kind(err: &redstream_transport::Error, kind: ErrorKind, needle: &str) {
    assert_eq!(err.kind(), kind, "{err}");
    assert!(
        err.to_string().contains(needle),
        "{err:?} should mention {needle:?}"
    );
}

#[tokio::test]
async fn list_streams_finds_exactly_the_streams_of_the_prefix() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server).await;
    let mut conn = server.connection().await.unwrap();

    transport.publish(order(1)).await.unwrap();
    // Every priority goes to the type's one stream: no lane streams.
    transport
        .publish(order(2).with_priority(Priority::High))
        .await
        .unwrap();
    // Glob characters are valid in event types; such a stream is under the prefix.
    let odd = Event::new("odd*type?", json!({}), EventMetadata::default());
    transport.publish(odd).await.unwrap();
    let _: String = raw(&mut conn, &["XADD", "insp:dlq", "*", "event", "x"]).await;
    // A stream someone else writes under the prefix is listed too.
    let _: String = raw(&mut conn, &["XADD", "insp:foreign", "*", "f", "v"]).await;

    // Streams of other prefixes, including ones a glob-unsafe pattern would match.
    for other in [
        "other:order.created",
        "insp?:x",
        "ins*:x",
        "inspx:y",
        "INSP:x",
        "{insp}:x",
        "insp",
        "x:insp:y",
        "events.raw",
    ] {
        let _: String = raw(&mut conn, &["XADD", other, "*", "f", "v"]).await;
    }
    // Keys of other types under the prefix.
    let () = raw(&mut conn, &["SET", "insp:plain", "v"]).await;
    let _: i64 = raw(&mut conn, &["HSET", "insp:hash", "f", "v"]).await;

    let streams = transport.list_streams().await.unwrap();
    assert_eq!(
        streams,
        [
            "insp:dlq",
            "insp:foreign",
            "insp:odd*type?",
            "insp:order.created",
        ]
    );
    // Any pattern, for streams named otherwise (seed 004's `events.raw`).
    assert_eq!(
        transport.list_streams_matching("events.*").await.unwrap(),
        ["events.raw"]
    );
    let everything = transport.list_streams_matching("*").await.unwrap();
    assert_eq!(everything.len(), 13, "{everything:?}");
    assert_eq!(
        transport
            .list_streams_matching("")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
}

#[tokio::test]
async fn list_streams_follows_the_scan_cursor_over_a_large_keyspace() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server).await;
    let mut conn = server.connection().await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..700 {
        pipe.cmd("XADD")
            .arg(format!("insp:bulk.{i:04}"))
            .arg("*")
            .arg("f")
            .arg("v")
            .ignore();
        pipe.cmd("SET").arg(format!("noise:{i}")).arg("v").ignore();
        pipe.cmd("SET")
            .arg(format!("insp:noise.{i}"))
            .arg("v")
            .ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();

    let streams = transport.list_streams().await.unwrap();
    let expected: Vec<_> = (0..700).map(|i| format!("insp:bulk.{i:04}")).collect();
    assert_eq!(streams, expected);
}

#[tokio::test]
async fn stream_info_reports_length_ids_groups_lag_and_ages() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server).await;
    let mut conn = server.connection().await.unwrap();
    let (ids, _) = publish_orders(&transport, 5).await;

    let () = raw(&mut conn, &["XGROUP", "CREATE", STREAM, "g", "0"]).await;
    read_without_ack(&mut conn, "g", "c1", 2).await;
    let () = raw(&mut conn, &["XGROUP", "CREATE", STREAM, "caught-up", "$"]).await;
    let () = raw(&mut conn, &["XGROUP", "CREATE", STREAM, "fresh", "0"]).await;

    let info = transport.stream_info(STREAM).await.unwrap();
    assert_eq!(info.name, STREAM);
    assert_eq!(info.event_type.as_deref(), Some("order.created"));
    assert!(!info.dead_letter);
    assert_eq!(info.length, 5);
    assert_eq!(info.first_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(info.last_id.as_deref(), Some(ids[4].as_str()));
    let mut names: Vec<_> = info.groups.iter().map(|g| g.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["caught-up", "fresh", "g"]);
    let group = |name: &str| info.groups.iter().find(|g| g.name == name).unwrap();

    let g = group("g");
    assert_eq!(g.consumers, 1);
    assert_eq!(g.pending, 2);
    assert_eq!(g.last_delivered_id, ids[1]);
    assert_eq!(g.lag, Some(3));
    let pending_age = g.oldest_pending_age_secs.unwrap();
    assert!(pending_age > 0.0, "{pending_age}");
    assert!(g.oldest_pending_idle_ms.is_some());
    let undelivered_age = g.oldest_undelivered_age_secs.unwrap();
    // Both ages are measured against the same server time, and entry 0 is older than entry 2.
    assert!(
        pending_age >= undelivered_age,
        "{pending_age} < {undelivered_age}"
    );

    let caught_up = group("caught-up");
    assert_eq!(caught_up.consumers, 0);
    assert_eq!(caught_up.pending, 0);
    assert_eq!(caught_up.last_delivered_id, ids[4]);
    assert_eq!(caught_up.lag, Some(0));
    assert_eq!(caught_up.oldest_pending_age_secs, None);
    assert_eq!(caught_up.oldest_pending_idle_ms, None);
    assert_eq!(caught_up.oldest_undelivered_age_secs, None);

    let fresh = group("fresh");
    assert_eq!(fresh.pending, 0);
    assert_eq!(fresh.last_delivered_id, "0-0");
    assert_eq!(fresh.lag, Some(5));
    assert_eq!(fresh.oldest_pending_age_secs, None);
    // Its oldest undelivered entry is entry 0, the oldest of all.
    assert!(fresh.oldest_undelivered_age_secs.unwrap() >= pending_age);

    // The dashboard gets it as JSON.
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["length"], 5);
    assert_eq!(json["event_type"], "order.created");
    assert!(json["groups"][0]["lag"].is_u64(), "{json}");
}

#[tokio::test]
async fn empty_and_foreign_streams_and_the_dlq_are_described() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server).await;
    let mut conn = server.connection().await.unwrap();
    let empty = "insp:empty";
    let () = raw(
        &mut conn,
        &["XGROUP", "CREATE", empty, "g", "$", "MKSTREAM"],
    )
    .await;
    let urgent_id = transport
        .publish(order(1).with_priority(Priority::Critical))
        .await
        .unwrap();
    let _: String = raw(&mut conn, &["XADD", "insp:dlq", "*", "event", "x"]).await;
    let raw_id: String = raw(&mut conn, &["XADD", "events.raw", "*", "event_id", "e1"]).await;

    let info = transport.stream_info(empty).await.unwrap();
    assert_eq!(info.length, 0);
    assert_eq!((info.first_id, info.last_id), (None, None));
    assert_eq!(info.groups.len(), 1);
    assert_eq!(info.groups[0].lag, Some(0));
    assert_eq!(info.groups[0].oldest_undelivered_age_secs, None);

    let urgent = transport.stream_info(STREAM).await.unwrap();
    assert_eq!(urgent.event_type.as_deref(), Some("order.created"));
    assert_eq!(urgent.last_id, Some(urgent_id));
    assert!(urgent.groups.is_empty());

    let dlq = transport.stream_info("insp:dlq").await.unwrap();
    assert!(dlq.dead_letter);
    assert_eq!(dlq.event_type, None);
    assert_eq!(dlq.length, 1);

    // A stream outside the prefix, by its full name.
    let foreign = transport.stream_info("events.raw").await.unwrap();
    assert_eq!((foreign.event_type, foreign.dead_letter), (None, false));
    assert_eq!(foreign.last_id, Some(raw_id));
    let described = transport
        .streams_info(&["events.raw".to_owned(), "missing".to_owned()])
        .await
        .unwrap();
    assert_eq!(described.len(), 1);
    assert_eq!(described[0].name, "events.raw");

    // The overview describes every listed stream, in the same order; run it on another task
    // to show the futures are Send.
    let spawned = transport.clone();
    let overview = tokio::spawn(async move { spawned.streams_overview().await })
        .await
        .unwrap()
        .unwrap();
    let names: Vec<_> = overview.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, transport.list_streams().await.unwrap());
    assert_eq!(names, ["insp:dlq", empty, STREAM]);
    assert_eq!(overview[1].groups[0].name, "g");
    assert_eq!(overview[2].length, 1);
}

#[tokio::test]
async fn consumers_report_their_pending_entries_and_idle_time() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server).await;
    let mut conn = server.connection().await.unwrap();
    publish_orders(&transport, 3).await;
    let () = raw(&mut conn, &["XGROUP", "CREATE", STREAM, "g", "0"]).await;
    read_without_ack(&mut conn, "g", "c1", 2).await;
    read_without_ack(&mut conn, "g", "c2", 1).await;
    let _: i64 = raw(&mut conn, &["XGROUP", "CREATECONSUMER", STREAM, "g", "c3"]).await;

    let consumers = transport.consumers(STREAM, "g").await.unwrap();
    let summary: Vec<_> = consumers
        .iter()
        .map(|c| (c.name.as_str(), c.pending))
        .collect();
    assert_eq!(summary, [("c1", 2), ("c2", 1), ("c3", 0)]);

    // `inactive` exists from Redis 7.2 on, and is unknown for a consumer that never read.
    let version = transport.server_info().await.unwrap().version.unwrap();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap());
    let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
    assert_eq!(
        consumers[0].inactive_ms.is_some(),
        (major, minor) >= (7, 2),
        "{version}"
    );
    assert_eq!(consumers[2].inactive_ms, None);
}

#[tokio::test]
async fn pending_filters_by_consumer_idle_time_and_start() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server).await;
    let mut conn = server.connection().await.unwrap();
    let (ids, _) = publish_orders(&transport, 3).await;
    let () = raw(&mut conn, &["XGROUP", "CREATE", STREAM, "g", "0"]).await;
    read_without_ack(&mut conn, "g", "c1", 2).await;
    read_without_ack(&mut conn, "g", "c2", 1).await;
    // Entry 0 moves to c2 and counts a second delivery.
    let _: redis::Value = raw(&mut conn, &["XCLAIM", STREAM, "g", "c2", "0", &ids[0]]).await;

    let all = transport
        .pending(STREAM, "g", PendingQuery::default())
        .await
        .unwrap();
    let summary: Vec<_> = all
        .iter()
        .map(|p| (p.id.as_str(), p.consumer.as_str(), p.deliveries))
        .collect();
    assert_eq!(
        summary,
        [
            (ids[0].as_str(), "c2", 2),
            (ids[1].as_str(), "c1", 1),
            (ids[2].as_str(), "c2", 1),
        ]
    );

    let of_c2 = transport
        .pending(STREAM, "g", PendingQuery::new(10).with_consumer("c2"))
        .await
        .unwrap();
    let of_c2: Vec<_> = of_c2.iter().map(|p| p.id.clone()).collect();
    assert_eq!(of_c2, [ids[0].clone(), ids[2].clone()]);

    let long_idle = PendingQuery::new(10).with_min_idle(Duration::from_secs(3600));
    assert!(
        transport
            .pending(STREAM, "g", long_idle)
            .await
            .unwrap()
            .is_empty()
    );
    let any_idle = PendingQuery::new(10).with_min_idle(Duration::ZERO);
    assert_eq!(
        transport
            .pending(STREAM, "g", any_idle)
            .await
            .unwrap()
            .len(),
        3
    );

    // Paging: the first entry, then everything after it.
    let first = transport
        .pending(STREAM, "g", PendingQuery::new(1))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let rest = transport
        .pending(
            STREAM,
            "g",
            PendingQuery {
                start: Some(format!("({}", first[0].id)),
                ..PendingQuery::default()
            },
        )
        .await
        .unwrap();
    let rest: Vec<_> = rest.iter().map(|p| p.id.clone()).collect();
    assert_eq!(rest, ids[1..]);
}

#[tokio::test]
async fn read_range_decodes_events_and_shows_foreign_entries_raw() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server).await;
    let mut conn = server.connection().await.unwrap();
    let (ids, events) = publish_orders(&transport, 3).await;
    let no_event_field: String = redis::cmd("XADD")
        .arg(STREAM)
        .arg("*")
        .arg("foo")
        .arg("bar")
        .arg("bytes")
        .arg(&b"ok\xff"[..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let bad_json: String = raw(&mut conn, &["XADD", STREAM, "*", "event", "{not json"]).await;
    let big = "x".repeat(10_000);
    let big_id: String = raw(&mut conn, &["XADD", STREAM, "*", "blob", &big]).await;

    let entries = transport
        .read_range(STREAM, "-", "+", 100, false)
        .await
        .unwrap();
    let read_ids: Vec<_> = entries.iter().map(|e| e.id.clone()).collect();
    let mut expected_ids = ids.clone();
    expected_ids.extend([no_event_field, bad_json, big_id]);
    assert_eq!(read_ids, expected_ids);
    for (entry, event) in entries.iter().zip(&events) {
        assert_eq!(entry.event.as_ref(), Some(event));
        assert_eq!(entry.decode_error, None);
        assert_eq!(entry.fields.len(), 1);
        assert_eq!(entry.fields[0].0, "event");
        assert!(!entry.truncated);
    }

    let foreign = &entries[3];
    assert_eq!(foreign.event, None);
    assert!(
        foreign
            .decode_error
            .as_deref()
            .unwrap()
            .contains("no `event` field"),
        "{foreign:?}"
    );
    let fields: Vec<_> = foreign
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(fields, [("foo", "bar"), ("bytes", "ok\u{fffd}")]);

    let bad = &entries[4];
    assert_eq!(bad.event, None);
    assert!(bad.decode_error.is_some());
    assert_eq!(bad.fields, [("event".to_owned(), "{not json".to_owned())]);

    let huge = &entries[5];
    assert!(huge.truncated);
    assert_eq!(huge.fields[0].0, "blob");
    assert!(huge.fields[0].1.len() <= 4096, "{}", huge.fields[0].1.len());
    assert!(huge.fields[0].1.starts_with("xxxx"));

    // Newest first.
    let newest = transport
        .read_range(STREAM, "-", "+", 2, true)
        .await
        .unwrap();
    let newest: Vec<_> = newest.iter().map(|e| e.id.clone()).collect();
    assert_eq!(newest, [expected_ids[5].clone(), expected_ids[4].clone()]);

    // Bounds are inclusive unless prefixed with `(`, in both directions.
    let one = transport
        .read_range(STREAM, &ids[1], &ids[1], 10, false)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].event.as_ref(), Some(&events[1]));
    let after_first = format!("({}", ids[0]);
    let window = transport
        .read_range(STREAM, &after_first, &ids[2], 10, true)
        .await
        .unwrap();
    let window: Vec<_> = window.iter().map(|e| e.id.clone()).collect();
    assert_eq!(window, [ids[2].clone(), ids[1].clone()]);
}

#[tokio::test]
async fn read_range_caps_the_count() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server).await;
    let mut conn = server.connection().await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..1005 {
        pipe.cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("n")
            .arg(i)
            .ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
    let entries = transport
        .read_range(STREAM, "-", "+", 5000, false)
        .await
        .unwrap();
    assert_eq!(entries.len(), RedisTransport::MAX_INSPECT_COUNT);
    assert_eq!(entries.len(), 1000);
}

#[tokio::test]
async fn ping_and_server_info_describe_the_server() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server).await;
    transport.ping().await.unwrap();

    let info = transport.server_info().await.unwrap();
    // The server's own name and version, whichever server the test kit runs (Redis or Valkey).
    let detected = server.server_version().unwrap();
    let (major, minor, patch) = detected.version;
    assert_eq!(
        info.version.as_deref(),
        Some(format!("{major}.{minor}.{patch}").as_str()),
        "{info:?}"
    );
    assert_eq!(info.major_version(), Some(major));
    let name = match detected.name {
        redstream_testkit::ServerName::Valkey => "valkey",
        _ => "redis",
    };
    assert_eq!(info.server.as_deref(), Some(name), "{info:?}");
    assert_eq!(info.mode.as_deref(), Some("standalone"));
    assert!(info.uptime_seconds.is_some());
    assert!(info.used_memory.unwrap() > 0);
    assert!(info.maxmemory.is_some());
    assert!(info.maxmemory_policy.is_some());
    assert!(info.connected_clients.unwrap() >= 1);
    assert!(info.ops_per_sec.is_some());

    server
        .config_set("maxmemory-policy", "allkeys-lru")
        .await
        .unwrap();
    let info = transport.server_info().await.unwrap();
    assert_eq!(info.maxmemory_policy.as_deref(), Some("allkeys-lru"));
    assert!(info.may_evict_streams());
}

#[tokio::test]
async fn errors_name_what_is_wrong() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server).await;
    let mut conn = server.connection().await.unwrap();
    publish_orders(&transport, 1).await;
    let () = raw(&mut conn, &["XGROUP", "CREATE", STREAM, "g", "0"]).await;
    let () = raw(&mut conn, &["SET", "insp:plain", "v"]).await;

    // Names that cannot name a stream. (Any other name is used as it is.)
    for name in ["a b", "x\ny"] {
        let err = transport.stream_info(name).await.unwrap_err();
        assert_invalid(&err, "must not contain");
        let err = transport
            .read_range(name, "-", "+", 1, false)
            .await
            .unwrap_err();
        assert_invalid(&err, "must not contain");
        let err = transport.consumers(name, "g").await.unwrap_err();
        assert_invalid(&err, "must not contain");
    }
    assert_invalid(
        &transport.stream_info("").await.unwrap_err(),
        "must not be empty",
    );

    // A stream that does not exist.
    let missing = "insp:nothing.here";
    assert_not_found(
        &transport.stream_info(missing).await.unwrap_err(),
        "no such stream",
    );
    let err = transport
        .read_range(missing, "-", "+", 1, false)
        .await
        .unwrap_err();
    assert_not_found(&err, "no such stream");
    assert_not_found(
        &transport.consumers(missing, "g").await.unwrap_err(),
        "no such stream",
    );
    let err = transport
        .pending(missing, "g", PendingQuery::default())
        .await
        .unwrap_err();
    assert_not_found(&err, "no such stream");

    // A group that does not exist.
    let err = transport.consumers(STREAM, "nope").await.unwrap_err();
    assert_not_found(&err, "no such consumer group");
    assert!(err.to_string().contains("\"nope\""), "{err}");
    let err = transport
        .pending(STREAM, "nope", PendingQuery::default())
        .await
        .unwrap_err();
    assert_not_found(&err, "no such consumer group");

    // A key of another type.
    let err = transport.stream_info("insp:plain").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongType, "{err}");
    let err = transport
        .read_range("insp:plain", "-", "+", 1, false)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongType, "{err}");

    // Bad counts, ids and names.
    let err = transport
        .pending(STREAM, "g", PendingQuery::new(0))
        .await
        .unwrap_err();
    assert_invalid(&err, "count 0");
    let err = transport
        .read_range(STREAM, "-", "+", 0, false)
        .await
        .unwrap_err();
    assert_invalid(&err, "count 0");
    let err = transport
        .read_range(STREAM, "abc", "+", 1, false)
        .await
        .unwrap_err();
    assert_invalid(&err, "start id \"abc\"");
    let err = transport
        .read_range(STREAM, "-", "1-x", 1, false)
        .await
        .unwrap_err();
    assert_invalid(&err, "end id \"1-x\"");
    let err = transport
        .pending(STREAM, "g", PendingQuery::new(1).with_start("later"))
        .await
        .unwrap_err();
    assert_invalid(&err, "\"later\"");
    let err = transport
        .pending(STREAM, "g", PendingQuery::new(1).with_consumer(""))
        .await
        .unwrap_err();
    assert_invalid(&err, "consumer name");
    assert_invalid(
        &transport.consumers(STREAM, "").await.unwrap_err(),
        "group name",
    );
}

#[tokio::test]
async fn a_paused_server_makes_ping_time_out() {
    let server = RedisServer::start().await.unwrap();
    let options = TransportOptions::default().with_response_timeout(Duration::from_millis(300));
    let transport = transport_with(&server, options).await;
    transport.ping().await.unwrap();

    server.pause().unwrap();
    let err = transport.ping().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_retryable());
    let err = transport.stream_info(STREAM).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");

    server.resume().unwrap();
    transport.ping().await.unwrap();
}

/// Every inspection future can move between threads (a dashboard serves them from a
/// multi-threaded runtime). Checked by the compiler; never run.
#[allow(dead_code)]
fn inspection_futures_are_send(transport: &RedisTransport) {
    fn send<T: Send>(_: T) {}
    send(transport.ping());
    send(transport.server_info());
    send(transport.list_streams());
    send(transport.stream_info(STREAM));
    send(transport.streams_overview());
    send(transport.consumers(STREAM, "g"));
    send(transport.pending(STREAM, "g", PendingQuery::default()));
    send(transport.read_range(STREAM, "-", "+", 1, false));
}

#[tokio::test]
async fn an_eviction_policy_that_can_drop_streams_is_warned_about_at_connect() {
    crate::support::capture_logs();
    let evicting = RedisServer::builder()
        .maxmemory_policy("allkeys-lru")
        .start()
        .await
        .unwrap();
    let safe = RedisServer::builder()
        .maxmemory_policy("noeviction")
        .start()
        .await
        .unwrap();
    for server in [&evicting, &safe] {
        RedisTransport::new(RedisConfig::default().with_url(server.url()))
            .await
            .unwrap();
    }
    let about = |server: &RedisServer| -> Vec<String> {
        let address = format!("127.0.0.1:{}", server.port());
        crate::support::logged("maxmemory-policy")
            .into_iter()
            .filter(|line| line.contains(&address))
            .collect()
    };
    let warnings = about(&evicting);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("allkeys-lru"), "{warnings:?}");
    assert!(about(&safe).is_empty());
}
