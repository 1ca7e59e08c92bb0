//! Redis down: 503 JSON with a clean message, an error message on the WebSocket, `/metrics`
//! still answering; and no password in any answer, up or down.

use std::time::Duration;

use redstream_cli::serve::ServeConfig;
use redstream_testkit::RedisServer;
use serde_json::json;

use crate::support::{Answer, Dashboard, TOKEN};
use crate::websocket::{next_json, until};

const PASSWORD: &str = "pw-9c1e77d0-secret";

/// Every GET route, the happy and the unhappy ones.
const READS: [&str; 14] = [
    "/",
    "/health",
    "/metrics",
    "/api/streams",
    "/api/streams/info",
    "/api/stream/orders",
    "/api/streams/orders?count=5",
    "/api/streams/orders/pending?group=g",
    "/api/pending/orders/g",
    "/api/metrics",
    "/api/dlq",
    "/api/stream/%7Bother%7D%3Ax",
    "/api/dlq?count=0",
    "/nope",
];

async fn everything(d: &Dashboard) -> Vec<(String, Answer)> {
    let mut answers = Vec::new();
    for path in READS {
        answers.push((path.to_owned(), d.get(path).await));
    }
    for (path, body) in [
        ("/api/dlq/redrive", json!({ "all": true })),
        ("/api/dlq/redrive", json!({ "type": "orders" })),
        ("/api/dlq/purge", json!({})),
    ] {
        answers.push((path.to_owned(), d.post(path, body).await));
    }
    answers
}

fn assert_no_secret(answers: &[(String, Answer)]) {
    for (path, answer) in answers {
        assert_ne!(answer.status, 500, "{path}: {}", answer.text);
        for secret in [PASSWORD, TOKEN] {
            assert!(
                !answer.text.contains(secret),
                "{path} leaks: {}",
                answer.text
            );
            for value in answer.headers.values() {
                assert!(!value.to_str().unwrap_or("").contains(secret), "{path}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_is_503_and_nothing_leaks() {
    let redis = RedisServer::builder()
        .password(PASSWORD)
        .start()
        .await
        .unwrap();
    let d = Dashboard::start_on(
        redis,
        ServeConfig {
            allow_writes: true,
            token: Some(TOKEN.to_owned()),
            refresh: Duration::from_millis(200),
            ..ServeConfig::default()
        },
    )
    .await;
    d.publish("orders", json!({ "n": 1 })).await;
    d.dead_letter("orders", json!({ "n": 2 }), "nope").await;
    let up = everything(&d).await;
    assert_no_secret(&up);
    let mut url = d.ws_url("/ws");
    url.push_str(&format!("?token={TOKEN}"));
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "snapshot");

    d.redis.kill().unwrap();

    for path in [
        "/api/streams",
        "/api/streams/info",
        "/api/stream/orders",
        "/api/streams/orders?count=5",
        "/api/pending/orders/g",
        "/api/metrics",
        "/api/dlq",
    ] {
        let answer = d.get(path).await;
        answer.assert_error(503, "redis_unavailable");
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.starts_with("Redis "), "{path}: {message}");
        assert!(!message.contains("127.0.0.1"), "no internals: {message}");
    }
    let health = d.get("/health").await;
    assert_eq!(health.status, 503, "{}", health.text);
    let health = health.json();
    assert_eq!(health["status"], "unavailable");
    assert_eq!(health["redis"]["ok"], false);
    assert_eq!(health["error"]["kind"], "redis_unavailable");
    d.post("/api/dlq/redrive", json!({ "all": true }))
        .await
        .assert_error(503, "redis_unavailable");
    d.post("/api/dlq/purge", json!({}))
        .await
        .assert_error(503, "redis_unavailable");
    // Bad input is still bad input.
    d.get("/api/dlq?count=0")
        .await
        .assert_error(400, "invalid_parameter");

    // Prometheus keeps scraping, and says Redis is down.
    let metrics = d.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text.contains("redstream_redis_up 0"),
        "{}",
        metrics.text
    );
    assert!(
        metrics
            .text
            .contains("redstream_dashboard_redis_errors_total{kind=")
    );
    assert!(!metrics.text.contains("redstream_stream_length"));

    // The page's feed reports the failure and stays open.
    let error = until(&mut socket, |m| m["type"] == "error").await;
    assert_eq!(error["error"]["kind"], "redis_unavailable");
    assert!(!error.to_string().contains(PASSWORD));

    let down = everything(&d).await;
    assert_no_secret(&down);

    // And everything comes back with Redis.
    d.redis.restart().await.unwrap();
    // Polls for up to a minute: a guard against a hang, not a measure of how fast it is back.
    let mut healthy = false;
    for _ in 0..600 {
        if d.get("/health").await.status == 200 {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "the dashboard did not reconnect");
    assert_eq!(d.get("/api/streams").await.status, 200);
    until(&mut socket, |m| m["type"] == "snapshot").await;
}
