//! Status codes and JSON shapes of every read route.

use redstream_cli::serve::ServeConfig;
use serde_json::json;

use crate::support::{Dashboard, read_as, stream};

/// Three events of `order.created` (the third one high priority, in the same stream), a group
/// `billing` whose consumer `c1` holds one pending entry, and a dead letter.
async fn populated() -> (Dashboard, String) {
    let d = Dashboard::start(ServeConfig::default()).await;
    d.publish("order.created", json!({ "order_id": "1" })).await;
    d.publish("order.created", json!({ "order_id": "2" })).await;
    let event = redstream_core::Event::new(
        "order.created",
        json!({ "order_id": "3" }),
        redstream_core::EventMetadata::default(),
    )
    .with_priority(redstream_core::Priority::High);
    d.transport.publish(event).await.unwrap();
    let mut conn = d.conn().await;
    read_as(&mut conn, "events:order.created", "billing", "c1", 1).await;
    let dead = d
        .dead_letter("payment.failed", json!({ "card": "x" }), "card declined")
        .await;
    (d, dead)
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_page() {
    let d = Dashboard::start(ServeConfig::default()).await;
    let health = d.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.text);
    let json = health.json();
    assert_eq!(json["status"], "ok");
    assert_eq!(json["redis"]["ok"], true);
    assert!(json["redis"]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(json["prefix"], "events");
    assert_eq!(json["writes_allowed"], false);

    let page = d.get("/").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").starts_with("text/html"));
    let csp = page.header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'sha256-"),
        "{csp}"
    );
    for id in [
        "streams-table",
        "dlq-table",
        "groups-table",
        "throughput-chart",
        "connection",
    ] {
        assert!(page.text.contains(&format!("id=\"{id}\"")), "{id}");
    }
    assert!(
        !page.text.contains("/* dashboard.js */"),
        "the script is inlined"
    );
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert_eq!(page.header("x-frame-options"), "DENY");
    assert_eq!(page.header("cache-control"), "no-store");
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_and_stream_details() {
    let (d, _) = populated().await;
    let answer = d.get("/api/streams").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let json = answer.json();
    assert_eq!(json["prefix"], "events");
    assert_eq!(json["count"], 2, "{json}");
    let streams = &json["streams"];
    let orders = stream(streams, "events:order.created");
    assert_eq!(orders["short_name"], "order.created");
    assert_eq!(orders["event_type"], "order.created");
    assert_eq!(orders["dead_letter"], false);
    // One row per stream: every priority of a type is in its stream.
    assert_eq!(orders["length"], 3);
    assert_eq!(orders["pending"], 1);
    assert_eq!(orders["lag"], 2);
    assert!(orders["oldest_pending_age_secs"].as_f64().unwrap() >= 0.0);
    assert!(orders["first_id"].is_string() && orders["last_id"].is_string());
    let group = &orders["consumer_groups"][0];
    assert_eq!(group["name"], "billing");
    assert_eq!(group["consumer_count"], 1);
    assert_eq!(group["pending"], 1);
    assert_eq!(group["lag"], 2);
    assert_eq!(group["consumers"][0]["name"], "c1");
    assert_eq!(group["consumers"][0]["pending"], 1);
    assert!(group["consumers"][0]["idle_ms"].is_u64());
    let dlq = stream(streams, "events:dlq");
    assert_eq!(dlq["short_name"], "dlq");
    assert_eq!(dlq["dead_letter"], true);
    assert_eq!(dlq["event_type"], json!(null));
    assert_eq!(dlq["length"], 1);

    // One stream, by event type and by full name (as is, or percent-encoded).
    for path in [
        "/api/stream/order.created",
        "/api/stream/events:order.created",
        "/api/stream/events%3Aorder.created",
    ] {
        let answer = d.get(path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        let one = answer.json();
        assert_eq!(one["name"], "events:order.created");
        assert_eq!(one["length"], 3);
        assert_eq!(one["consumer_groups"][0]["consumers"][0]["name"], "c1");
    }
    let dlq = d.get("/api/stream/dlq").await.json();
    assert_eq!(dlq["dead_letter"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_in_both_forms() {
    let (d, _) = populated().await;
    for path in [
        "/api/pending/order.created/billing",
        "/api/streams/order.created/pending?group=billing&count=10",
    ] {
        let answer = d.get(path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        let json = answer.json();
        assert_eq!(json["stream"], "events:order.created");
        assert_eq!(json["group"], "billing");
        assert_eq!(json["count"], 1);
        let entry = &json["pending"][0];
        assert_eq!(entry["consumer"], "c1");
        assert_eq!(entry["deliveries"], 1);
        assert!(entry["id"].is_string() && entry["idle_ms"].is_u64());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_004_stream_reads() {
    let (d, _) = populated().await;
    let info = d.get("/api/streams/info").await;
    assert_eq!(info.status, 200, "{}", info.text);
    let info = info.json();
    assert_eq!(info["count"], 2);
    let orders = stream(&info["streams"], "events:order.created");
    assert_eq!(orders["length"], 3);
    assert_eq!(orders["groups"], 1);
    assert_eq!(orders["first_entry"]["event"]["payload"]["order_id"], "1");
    assert_eq!(orders["last_entry"]["event"]["payload"]["order_id"], "3");
    assert_eq!(orders["first_entry"]["fields"][0][0], "event");

    // Paging: one entry at a time from startId=0.
    let first = d.get("/api/streams/order.created?startId=0&count=1").await;
    assert_eq!(first.status, 200, "{}", first.text);
    let first = first.json();
    assert_eq!(first["stream"], "events:order.created");
    assert_eq!(first["start_id"], "0");
    assert_eq!(first["count"], 1);
    assert_eq!(first["messages"][0]["event"]["type"], "order.created");
    assert_eq!(first["messages"][0]["event"]["payload"]["order_id"], "1");
    assert_eq!(first["messages"][0]["decode_error"], json!(null));
    let next = first["next_start_id"].as_str().unwrap();
    assert!(next.starts_with('('), "{next}");
    let second = d
        .get(&format!(
            "/api/streams/order.created?startId={}&count=5",
            urlencode(next)
        ))
        .await
        .json();
    assert_eq!(second["count"], 2, "{second}");
    assert_eq!(second["messages"][0]["event"]["payload"]["order_id"], "2");
    assert_eq!(
        second["messages"][1]["event"]["metadata"]["priority"],
        "high"
    );
    assert_eq!(second["next_start_id"], json!(null));
    // Defaults: from the start, 10 entries.
    let all = d.get("/api/streams/order.created").await.json();
    assert_eq!(all["start_id"], "-");
    assert_eq!(all["count"], 3);
}

/// Seed 004's streams, written by another service in its own flat format, under no prefix:
/// shown with `--streams`, and its three requests answered for the literal names.
#[tokio::test(flavor = "multi_thread")]
async fn seed_004_streams_by_their_names() {
    let d = Dashboard::start(ServeConfig {
        streams: vec!["events.*".to_owned(), "profiles.*".to_owned()],
        ..ServeConfig::default()
    })
    .await;
    d.publish("order.created", json!({ "order_id": "1" })).await;
    for n in 0..7 {
        d.transport
            .publish_fields(
                "events.raw",
                &[
                    ("event_id", format!("e{n}")),
                    ("brand_id", "b1".to_owned()),
                    ("event_type", "purchase".to_owned()),
                    ("payload", r#"{"total":1}"#.to_owned()),
                    ("timestamp", "2024-12-01T10:00:00Z".to_owned()),
                ],
            )
            .await
            .unwrap();
        d.transport
            .publish_fields("events.normalized", &[("event_id", format!("e{n}"))])
            .await
            .unwrap();
    }
    d.transport
        .publish_fields("profiles.merge_requests", &[("brand_id", "b1")])
        .await
        .unwrap();
    d.transport
        .publish_fields("predictions.requests", &[("profile_id", "p1")])
        .await
        .unwrap();
    let mut conn = d.conn().await;
    read_as(&mut conn, "events.normalized", "event-processors", "w1", 2).await;

    // GET /api/streams/info: the prefix's streams and those --streams matches.
    let info = d.get("/api/streams/info").await;
    assert_eq!(info.status, 200, "{}", info.text);
    let info = info.json();
    assert_eq!(info["patterns"], json!(["events.*", "profiles.*"]));
    let names: Vec<&str> = info["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "events.normalized",
            "events.raw",
            "events:order.created",
            "profiles.merge_requests"
        ]
    );
    let raw = stream(&info["streams"], "events.raw");
    assert_eq!(raw["length"], 7);
    assert_eq!(raw["first_entry"]["fields"][0], json!(["event_id", "e0"]));
    assert_eq!(raw["last_entry"]["fields"][0], json!(["event_id", "e6"]));

    // GET /api/streams/events.raw?count=5: the oldest five, fields as written.
    let read = d.get("/api/streams/events.raw?count=5").await;
    assert_eq!(read.status, 200, "{}", read.text);
    let read = read.json();
    assert_eq!(read["stream"], "events.raw");
    assert_eq!(read["count"], 5);
    let messages = read["messages"].as_array().unwrap();
    for (n, message) in messages.iter().enumerate() {
        assert_eq!(message["fields"][0], json!(["event_id", format!("e{n}")]));
        assert_eq!(message["fields"][1], json!(["brand_id", "b1"]));
        assert_eq!(message["event"], json!(null));
        assert!(message["decode_error"].is_string());
    }
    assert!(read["next_start_id"].is_string());

    // GET /api/streams/events.normalized/pending?group=event-processors, and the seed 002 form.
    for path in [
        "/api/streams/events.normalized/pending?group=event-processors",
        "/api/pending/events.normalized/event-processors",
    ] {
        let pending = d.get(path).await;
        assert_eq!(pending.status, 200, "{path}: {}", pending.text);
        let pending = pending.json();
        assert_eq!(pending["stream"], "events.normalized");
        assert_eq!(pending["group"], "event-processors");
        assert_eq!(pending["count"], 2);
        assert_eq!(pending["pending"][0]["consumer"], "w1");
    }

    // /api/stream/{stream} takes the full name, listed or not.
    let one = d.get("/api/stream/events.normalized").await;
    assert_eq!(one.status, 200, "{}", one.text);
    let one = one.json();
    assert_eq!(one["short_name"], "events.normalized");
    assert_eq!(one["event_type"], json!(null));
    assert_eq!(one["consumer_groups"][0]["name"], "event-processors");
    let unlisted = d.get("/api/stream/predictions.requests").await;
    assert_eq!(unlisted.status, 200, "{}", unlisted.text);
    assert_eq!(unlisted.json()["length"], 1);

    // A name that is neither a stream nor an event type's stream is a 404 naming the stream.
    d.get("/api/streams/events.missing?count=5")
        .await
        .assert_error(404, "not_found");
    d.get("/api/streams/events.raw/pending?group=event-processors")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_json() {
    let (d, _) = populated().await;
    d.get("/health").await;
    let answer = d.get("/api/metrics").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let json = answer.json();
    let redis = &json["redis"];
    for field in [
        "used_memory",
        "connected_clients",
        "ops_per_sec",
        "uptime_seconds",
    ] {
        assert!(redis[field].is_u64(), "{field}: {json}");
    }
    assert!(redis["version"].is_string());
    assert!(redis["latency_ms"].is_f64());
    assert_eq!(json["streams"]["count"], 2);
    assert_eq!(json["streams"]["entries"], 3);
    assert_eq!(json["streams"]["pending"], 1);
    assert_eq!(json["streams"]["consumer_groups"], 1);
    assert_eq!(json["streams"]["dead_letters"], 1);
    let own = &json["dashboard"];
    assert!(own["requests_total"].as_u64().unwrap() >= 1, "{own}");
    for field in [
        "uptime_seconds",
        "auth_failures_total",
        "redis_errors_total",
        "ws_clients",
        "ws_connections_total",
        "snapshots_total",
        "dlq_redriven_total",
        "dlq_purged_total",
    ] {
        assert!(own[field].is_u64(), "{field}: {own}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters() {
    let (d, dead) = populated().await;
    let answer = d.get("/api/dlq").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let json = answer.json();
    assert_eq!(json["stream"], "events:dlq");
    assert_eq!(json["length"], 1);
    assert_eq!(json["count"], 1);
    let entry = &json["entries"][0];
    assert_eq!(entry["id"], dead);
    assert_eq!(entry["error"], "card declined");
    assert_eq!(entry["original_type"], "payment.failed");
    assert_eq!(entry["stream"], "events:payment.failed");
    assert_eq!(entry["redrivable"], true);
    assert_eq!(entry["event"]["payload"]["card"], "x");
    assert!(entry["event_id"].is_string());
    assert!(entry["dead_lettered_at_ms"].is_u64());
    assert!(entry["last_failure_ms"].is_u64());

    let one = d.get(&format!("/api/dlq/{dead}")).await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.json()["error"], "card declined");
    d.get("/api/dlq/1-0").await.assert_error(404, "not_found");

    // An empty dead-letter stream (never created) lists nothing.
    let empty = Dashboard::start(ServeConfig::default()).await;
    let json = empty.get("/api/dlq?count=5").await.json();
    assert_eq!(json["length"], 0);
    assert_eq!(json["entries"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_text() {
    let (d, _) = populated().await;
    d.get("/api/streams").await;
    let answer = d.get("/metrics").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer.header("content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = &answer.text;
    // Every sample line is `name{labels} value` with a numeric value, every metric is typed.
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = series.split('{').next().unwrap();
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }
    for expected in [
        "redstream_redis_up 1",
        "redstream_stream_length{stream=\"events:order.created\"} 3",
        "redstream_stream_pending{stream=\"events:order.created\"} 1",
        "redstream_stream_lag{stream=\"events:order.created\"} 2",
        "redstream_stream_group_messages_pending{stream=\"events:order.created\",group=\"billing\"} 1",
        "redstream_stream_group_consumers{stream=\"events:order.created\",group=\"billing\"} 1",
        "redstream_stream_group_lag{stream=\"events:order.created\",group=\"billing\"} 2",
        "redstream_stream_entries_added_total{stream=\"events:order.created\"} 3",
        "# TYPE redstream_stream_entries_added_total counter",
        "redstream_stream_dead_letters{stream=\"events:payment.failed\"} 1",
        "redstream_stream_dead_letters{stream=\"events:order.created\"} 0",
        "redstream_dlq_entries_added_total 1",
        "redstream_dlq_length 1",
        "redstream_streams 2",
        "# TYPE redstream_stream_length gauge",
        "# TYPE redstream_dashboard_http_requests_total counter",
        "redstream_dashboard_http_requests_total{route=\"/api/streams\",status=\"200\"} 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(text.contains("redstream_redis_used_memory_bytes "));
    assert!(text.contains("redstream_redis_uptime_seconds "));

    // A stream deleted since the last scrape is gone from the next one.
    let mut conn = d.conn().await;
    let _: () = redis::cmd("DEL")
        .arg("events:order.created")
        .query_async(&mut conn)
        .await
        .unwrap();
    let text = d.get("/metrics").await.text;
    assert!(!text.contains("order.created"), "{text}");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
