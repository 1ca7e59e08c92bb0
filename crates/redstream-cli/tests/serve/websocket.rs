//! `/ws`: a snapshot at once, then one per refresh interval that reflects what changed.

use std::time::Duration;

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
    assert_eq!(first["dlq"]["stream"], "{events}:dlq");
    assert_eq!(first["dlq"]["length"], 1);
    let dead = &first["dlq"]["entries"][0];
    assert_eq!(dead["error"], "smtp down");
    assert_eq!(dead["original_type"], "invoice.sent");
    assert_eq!(dead["payload_preview"], "{\"n\":1}");
    assert!(
        dead.get("event").is_none(),
        "snapshots carry a preview only"
    );
    assert!(!has_stream(&first, "{events}:ws.new"));

    d.publish("ws.new", json!({ "hello": "world" })).await;
    let later = until(&mut socket, |m| has_stream(m, "{events}:ws.new")).await;
    assert_eq!(stream(&later["streams"], "{events}:ws.new")["length"], 1);
    assert!(later["generated_at_ms"].as_u64() >= first["generated_at_ms"].as_u64());

    // `refresh` asks for one at once.
    d.publish("ws.newer", json!({})).await;
    socket.send(Message::text("refresh")).await.unwrap();
    let asked = tokio::time::timeout(
        Duration::from_secs(5),
        until(&mut socket, |m| has_stream(m, "{events}:ws.newer")),
    )
    .await
    .unwrap();
    assert_eq!(asked["type"], "snapshot");

    let metrics = d.get("/api/metrics").await.json();
    assert_eq!(metrics["dashboard"]["ws_clients"], 1);
    assert!(metrics["dashboard"]["snapshots_total"].as_u64().unwrap() >= 3);
    socket.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_share_one_feed_and_are_bounded() {
    let d = Dashboard::start(ServeConfig {
        max_ws_clients: 2,
        ..fast()
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
    // Both get the periodic snapshots: the second one of each is from the shared poller.
    for socket in [&mut a, &mut b] {
        next_json(socket).await;
        assert_eq!(next_json(socket).await["type"], "snapshot");
    }
    // A slot frees when a client leaves.
    a.close(None).await.unwrap();
    drop(a);
    let mut reconnected = None;
    for _ in 0..50 {
        if let Ok((socket, _)) = tokio_tungstenite::connect_async(d.ws_url("/ws")).await {
            reconnected = Some(socket);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = reconnected.expect("no slot freed after a client left");
    assert_eq!(next_json(&mut c).await["type"], "snapshot");
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
