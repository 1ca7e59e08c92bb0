//! `/ws`: a snapshot at once, then one per refresh interval that reflects what changed.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use redstream_cli::serve::ServeConfig;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{Dashboard, stream};

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The next text message, as JSON; fails after 10 s.
pub(crate) async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no WebSocket message within 10 s")
            .expect("the WebSocket closed")
            .unwrap();
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Reads snapshots until one satisfies `wanted` (at most 50 messages).
pub(crate) async fn until(socket: &mut Socket, wanted: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..50 {
        let message = next_json(socket).await;
        if wanted(&message) {
            return message;
        }
    }
    panic!("no matching message in 50");
}

fn fast() -> ServeConfig {
    ServeConfig {
        refresh: Duration::from_millis(200),
        ..ServeConfig::default()
    }
}

fn has_stream(snapshot: &Value, name: &str) -> bool {
    snapshot["type"] == "snapshot"
        && snapshot["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == name)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_on_connect_and_later_ones_with_new_streams() {
    let d = Dashboard::start(fast()).await;
    d.dead_letter("invoice.sent", json!({ "n": 1 }), "smtp down")
        .await;
    let (mut socket, _) = tokio_tungstenite::connect_async(d.ws_url("/ws"))
        .await
        .unwrap();
    let first = next_json(&mut socket).await;
    assert_eq!(first["type"], "snapshot", "{first}");
    assert_eq!(first["prefix"], "events");
    assert_eq!(first["refresh_ms"], 200);
    assert_eq!(first["writes_allowed"], false);
    assert!(first["generated_at_ms"].is_u64());
    assert!(first["redis"]["used_memory"].is_u64());
    assert!(first["redis"]["connected_clients"].is_u64());
    assert_eq!(first["dlq"]["stream"], "events:dlq");
    assert_eq!(first["dlq"]["length"], 1);
    let dead = &first["dlq"]["entries"][0];
    assert_eq!(dead["error"], "smtp down");
    assert_eq!(dead["original_type"], "invoice.sent");
    assert_eq!(dead["payload_preview"], "{\"n\":1}");
    assert!(
        dead.get("event").is_none(),
        "snapshots carry a preview only"
    );
    assert!(!has_stream(&first, "events:ws.new"));

    d.publish("ws.new", json!({ "hello": "world" })).await;
    let later = until(&mut socket, |m| has_stream(m, "events:ws.new")).await;
    assert_eq!(stream(&later["streams"], "events:ws.new")["length"], 1);
    assert!(later["generated_at_ms"].as_u64() >= first["generated_at_ms"].as_u64());

    let metrics = d.get("/api/metrics").await.json();
    assert_eq!(metrics["dashboard"]["ws_clients"], 1);
    assert!(metrics["dashboard"]["snapshots_total"].as_u64().unwrap() >= 2);
    socket.close(None).await.unwrap();
}

/// A `refresh` message asks for a snapshot at once. The refresh interval here is an hour, so
/// only the request can bring the new stream.
#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_message_brings_a_snapshot_at_once() {
    let d = Dashboard::start(ServeConfig {
        refresh: Duration::from_secs(3600),
        ..ServeConfig::default()
    })
    .await;
    let (mut socket, _) = tokio_tungstenite::connect_async(d.ws_url("/ws"))
        .await
        .unwrap();
    let first = next_json(&mut socket).await;
    assert_eq!(first["refresh_ms"], 3_600_000);
    assert!(!has_stream(&first, "events:ws.asked"));
    d.publish("ws.asked", json!({})).await;
    socket.send(Message::text("refresh")).await.unwrap();
    let asked = next_json(&mut socket).await;
    assert!(has_stream(&asked, "events:ws.asked"), "{asked}");
    socket.close(None).await.unwrap();
}

/// Seed 002's `REFRESH_INTERVAL`: 5 s unless told otherwise.
#[test]
fn the_default_refresh_is_five_seconds() {
    assert_eq!(ServeConfig::default().refresh, Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_share_one_feed_and_are_bounded() {
    // A refresh slow enough that neither client's task misses a periodic snapshot.
    let d = Dashboard::start(ServeConfig {
        max_ws_clients: 2,
        refresh: Duration::from_millis(500),
        ..ServeConfig::default()
    })
    .await;
    let (mut a, _) = tokio_tungstenite::connect_async(d.ws_url("/ws"))
        .await
        .unwrap();
    let (mut b, _) = tokio_tungstenite::connect_async(d.ws_url("/ws"))
        .await
        .unwrap();
    match tokio_tungstenite::connect_async(d.ws_url("/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // Each got a snapshot of its own on connect; both were subscribed to the feed before
    // theirs was built. So every periodic snapshot stamped later reaches both: the same one,
    // built once by the shared poller.
    let stamp = |m: &Value| m["generated_at_ms"].as_u64().unwrap();
    let subscribed = stamp(&next_json(&mut a).await).max(stamp(&next_json(&mut b).await));
    let from_b = until(&mut b, |m| stamp(m) > subscribed).await;
    let from_a = until(&mut a, |m| stamp(m) >= stamp(&from_b)).await;
    assert_eq!(from_a["type"], "snapshot");
    assert_eq!(from_a, from_b, "one snapshot for both clients");
    // A slot frees when a client leaves.
    a.close(None).await.unwrap();
    drop(a);
    let mut c = connect_when_free(&d, Duration::from_secs(5)).await;
    assert_eq!(next_json(&mut c).await["type"], "snapshot");
}

/// Connects to `/ws` until the dashboard has a free slot (it answers 503 while it has none);
/// fails after `within`.
async fn connect_when_free(d: &Dashboard, within: Duration) -> Socket {
    let deadline = Instant::now() + within;
    loop {
        match tokio_tungstenite::connect_async(d.ws_url("/ws")).await {
            Ok((socket, _)) => return socket,
            Err(tokio_tungstenite::tungstenite::Error::Http(response))
                if response.status() == 503 && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("no free WebSocket slot within {within:?}: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_dropped_and_frees_its_slot() {
    let d = Dashboard::start(ServeConfig {
        max_ws_clients: 1,
        refresh: Duration::from_millis(100),
        ws_send_timeout: Duration::from_millis(500),
        ..ServeConfig::default()
    })
    .await;
    // Snapshots of ~150 KiB (100 dead letters with long errors) fill the socket buffers fast.
    for n in 0..100 {
        d.dead_letter("big", json!({ "n": n }), &"e".repeat(4096))
            .await;
    }
    // A client that completes the handshake, with a small receive buffer, and never reads.
    let address = d.base.trim_start_matches("http://").parse().unwrap();
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let tcp = tcp.connect(address).await.unwrap();
    let (stalled, _) = tokio_tungstenite::client_async(d.ws_url("/ws"), tcp)
        .await
        .unwrap();
    // It holds the only slot until the dashboard gives up on it.
    match tokio_tungstenite::connect_async(d.ws_url("/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("expected 503, got {other:?}"),
    }
    let mut next = connect_when_free(&d, Duration::from_secs(60)).await;
    let snapshot = next_json(&mut next).await;
    assert_eq!(snapshot["type"], "snapshot");
    // Snapshots carry the start of long errors; the REST endpoint has them whole.
    let error = snapshot["dlq"]["entries"][0]["error"].as_str().unwrap();
    assert!(
        error.len() < 1100 && error.ends_with("..."),
        "{}",
        error.len()
    );
    let whole = d.get("/api/dlq?count=1").await.json();
    assert_eq!(whole["entries"][0]["error"].as_str().unwrap().len(), 4096);
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_client_limit_is_clamped_not_a_panic() {
    let d = Dashboard::start(ServeConfig {
        max_ws_clients: usize::MAX,
        ..ServeConfig::default()
    })
    .await;
    let (mut socket, _) = tokio_tungstenite::connect_async(d.ws_url("/ws"))
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "snapshot");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_get_on_ws_is_a_json_error() {
    let d = Dashboard::start(ServeConfig::default()).await;
    let answer = d.get("/ws").await;
    assert!(
        answer.status >= 400 && answer.status < 500,
        "{}",
        answer.status
    );
    answer.assert_error(answer.status, "websocket_required");
}
