//! Runs `examples/commerce_pipeline.rs` (seed 004) against a private redis-server, then asks the
//! dashboard seed 004's three questions: `GET /api/streams/info`,
//! `GET /api/streams/events.raw?count=5` and
//! `GET /api/streams/events.normalized/pending?group=event-processors`.
//!
//! The example's file is included as a module and its `run` called here, rather than its built
//! binary run: `cargo test --test commerce_pipeline` does not build examples, so a binary found
//! next to the test could be missing or stale; the module is compiled with the test, every time.
//! The dashboard is `redstream-cli`'s router, served in this process on a free port, configured as
//! `redstream serve --streams 'events.*,profiles.*,predictions.*'` would be.

#![allow(clippy::unwrap_used)]

#[path = "../commerce_pipeline.rs"]
mod pipeline;

use std::time::Duration;

use pipeline::{
    CRASHED_WORKER, EVENT_PROCESSORS, EVENTS_NORMALIZED, EVENTS_RAW, MERGE_PROCESSORS,
    MERGE_REQUESTS, Options, PREDICTION_PROCESSORS, PREDICTION_REQUESTS,
};
use redstream_cli::serve::{AppState, ServeConfig, router};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport};
use serde_json::Value;

/// `redis-cli -p <port> <args>` against the private server: what an operator types.
fn redis_cli(server: &RedisServer, args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(server.port().to_string())
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn get(http: &reqwest::Client, base: &str, path: &str) -> Value {
    let response = http.get(format!("{base}{path}")).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "GET {path}: {text}");
    serde_json::from_str(&text).unwrap()
}

fn field<'a>(entry: &'a Value, name: &str) -> &'a str {
    entry["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair[1].as_str())
        .unwrap_or_else(|| panic!("no field {name} in {entry}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_004_pipeline_runs_and_the_dashboard_answers_its_requests() {
    let server = RedisServer::start().await.unwrap();
    let options = Options {
        url: server.url(),
        events: 30,
        leave_pending: 3,
    };
    let report = pipeline::run(&options).await.unwrap();
    assert_eq!(report.ingested, 33);
    assert_eq!(report.processed, 30);
    // Events 5, 11, 17, 23, 29 fail once and are handled after a claim. (Delivery is at least
    // once: on a loaded machine a slow handler's entry may be claimed too, so "at least".)
    assert_eq!(report.failed_first, 5);
    assert!(report.claimed >= 5, "{report:?}");
    assert_eq!(report.merges, 6);
    assert!(report.predictions >= 10, "{report:?}");
    assert_eq!(report.recovered, 0);
    assert_eq!(report.left_pending.len(), 3);

    // The seed's names, as redis-cli sees them.
    assert_eq!(redis_cli(&server, &["XLEN", EVENTS_RAW]), "33");
    assert_eq!(redis_cli(&server, &["XLEN", EVENTS_NORMALIZED]), "33");
    // A merge or prediction request is written again if its event is handled twice.
    let merges: u64 = redis_cli(&server, &["XLEN", MERGE_REQUESTS])
        .parse()
        .unwrap();
    let predictions: u64 = redis_cli(&server, &["XLEN", PREDICTION_REQUESTS])
        .parse()
        .unwrap();
    assert!(merges >= 6 && predictions >= 10, "{merges} {predictions}");
    let pending = redis_cli(&server, &["XPENDING", EVENTS_NORMALIZED, EVENT_PROCESSORS]);
    assert!(pending.starts_with('3'), "{pending}");
    assert!(pending.contains(CRASHED_WORKER), "{pending}");
    // Nothing under redstream's own prefix: the pipeline wrote only the seed's streams.
    assert_eq!(redis_cli(&server, &["--scan", "--pattern", "events:*"]), "");

    // The dashboard, as `redstream serve --streams 'events.*,profiles.*,predictions.*'`.
    let transport = RedisTransport::new(RedisConfig {
        url: server.url(),
        ..RedisConfig::default()
    })
    .await
    .unwrap();
    let config = ServeConfig {
        streams: vec![
            "events.*".to_owned(),
            "profiles.*".to_owned(),
            "predictions.*".to_owned(),
        ],
        ..ServeConfig::default()
    };
    let state = AppState::new(transport, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(state.clone());
    let serving = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // GET /api/streams/info: the four topics, with their lengths and first and last entries.
    let info = get(&http, &base, "/api/streams/info").await;
    let streams = info["streams"].as_array().unwrap();
    let names: Vec<&str> = streams
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            EVENTS_NORMALIZED,
            EVENTS_RAW,
            PREDICTION_REQUESTS,
            MERGE_REQUESTS
        ]
    );
    let stream = |name: &str| streams.iter().find(|s| s["name"] == name).unwrap();
    for (name, length, groups) in [
        (EVENTS_RAW, 33, 0),
        (EVENTS_NORMALIZED, 33, 1),
        (MERGE_REQUESTS, merges, 1),
        (PREDICTION_REQUESTS, predictions, 1),
    ] {
        assert_eq!(stream(name)["length"], length, "{name}");
        assert_eq!(stream(name)["groups"], groups, "{name}");
    }
    let raw = stream(EVENTS_RAW);
    assert!(field(&raw["first_entry"], "event_id").ends_with("-0"));
    assert!(field(&raw["last_entry"], "event_id").ends_with("-32"));

    // GET /api/streams/events.raw?count=5: the oldest five, in the seed's flat fields.
    let read = get(&http, &base, "/api/streams/events.raw?count=5").await;
    assert_eq!(read["stream"], EVENTS_RAW);
    assert_eq!(read["count"], 5);
    let messages = read["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 5);
    for (i, message) in messages.iter().enumerate() {
        assert!(field(message, "event_id").ends_with(&format!("-{i}")));
        assert_eq!(field(message, "brand_id"), format!("brand-{}", i % 2));
        let payload: Value = serde_json::from_str(field(message, "payload")).unwrap();
        assert!(payload["phone"].is_string(), "{payload}");
        field(message, "event_type");
        field(message, "timestamp");
        // Not a redstream envelope: shown raw, with why it does not decode.
        assert!(message["event"].is_null());
    }

    // GET /api/streams/events.normalized/pending?group=event-processors: what the crashed
    // worker holds.
    let pending = get(
        &http,
        &base,
        "/api/streams/events.normalized/pending?group=event-processors",
    )
    .await;
    assert_eq!(pending["stream"], EVENTS_NORMALIZED);
    assert_eq!(pending["group"], EVENT_PROCESSORS);
    assert_eq!(pending["count"], 3);
    let entries = pending["pending"].as_array().unwrap();
    let ids: Vec<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, report.left_pending);
    for entry in entries {
        assert_eq!(entry["consumer"], CRASHED_WORKER);
        assert_eq!(entry["deliveries"], 1);
    }

    // The groups were created by the workers, on the seed's streams.
    let groups = get(&http, &base, "/api/streams").await;
    let group_of = |name: &str| -> Vec<String> {
        groups["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["consumer_groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(group_of(EVENTS_NORMALIZED), [EVENT_PROCESSORS]);
    assert_eq!(group_of(MERGE_REQUESTS), [MERGE_PROCESSORS]);
    assert_eq!(group_of(PREDICTION_REQUESTS), [PREDICTION_PROCESSORS]);

    // A second run's workers claim what the crashed worker left.
    let again = pipeline::run(&Options {
        leave_pending: 0,
        events: 1,
        ..options
    })
    .await
    .unwrap();
    assert_eq!(again.processed, 1);
    assert_eq!(again.recovered, 3);
    let pending = redis_cli(&server, &["XPENDING", EVENTS_NORMALIZED, EVENT_PROCESSORS]);
    assert!(pending.starts_with('0'), "{pending}");

    state.shutdown_token().cancel();
    serving.abort();
}
