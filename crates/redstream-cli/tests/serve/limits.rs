//! The HTTP server's limits, over real TCP sockets: a client that does not finish its request
//! head in time is dropped, a write action whose body does not arrive in time gets 408, and
//! connections beyond the cap wait until one closes.

use std::time::Duration;

use redstream_cli::serve::ServeConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::Dashboard;
use crate::websocket::next_json;

/// How long a test waits for something the server must do by itself; a guard against hanging,
/// not a measurement.
const GUARD: Duration = Duration::from_secs(30);

async fn connect(d: &Dashboard) -> TcpStream {
    TcpStream::connect(d.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection; the bytes read, or the error (a reset).
async fn read_until_closed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut received = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut received))
        .await
        .expect("the server did not close the connection")?;
    Ok(received)
}

/// The JSON body of an HTTP/1.1 response read whole.
fn body(response: &[u8]) -> Value {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_sends_half_a_header_is_dropped() {
    let d = Dashboard::start(ServeConfig {
        header_read_timeout: Duration::from_millis(300),
        max_connections: 1,
        ..ServeConfig::default()
    })
    .await;
    let mut slow = connect(&d).await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    // The server closes it without an answer (or resets it).
    match read_until_closed(&mut slow).await {
        Ok(received) => assert!(received.is_empty(), "{received:?}"),
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
    }
    // Its slot, the only one, is free again.
    let health = d.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let d = Dashboard::start(ServeConfig {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(60),
        ..ServeConfig::default()
    })
    .await;
    let head = b"GET /api/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    // Two clients take the two slots, each with a request head it has not finished.
    let mut a = connect(&d).await;
    a.write_all(head).await.unwrap();
    let mut b = connect(&d).await;
    b.write_all(head).await.unwrap();
    // A third connects (the system accepts it into the listening backlog) and sends a whole
    // request.
    let mut c = connect(&d).await;
    c.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // The first finishes its request: the dashboard has two connections, and has accepted
    // only those two, while the third waits.
    a.write_all(b"Connection: close\r\n\r\n").await.unwrap();
    let seen_by_a = body(&read_until_closed(&mut a).await.unwrap());
    assert_eq!(seen_by_a["dashboard"]["http_connections"], 2, "{seen_by_a}");
    assert_eq!(seen_by_a["dashboard"]["http_connections_total"], 2);
    // The first closed after its answer: the third gets the free slot and its answer.
    let seen_by_c = String::from_utf8(read_until_closed(&mut c).await.unwrap()).unwrap();
    assert!(seen_by_c.starts_with("HTTP/1.1 200"), "{seen_by_c}");
    b.write_all(b"Connection: close\r\n\r\n").await.unwrap();
    let seen_by_b = body(&read_until_closed(&mut b).await.unwrap());
    assert_eq!(seen_by_b["dashboard"]["http_connections_total"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn websockets_leave_the_http_cap_once_upgraded() {
    let d = Dashboard::start(ServeConfig {
        max_connections: 1,
        ..ServeConfig::default()
    })
    .await;
    let (mut socket, _) = tokio_tungstenite::connect_async(d.ws_url("/ws"))
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "snapshot");
    // The WebSocket is open, and the only HTTP slot is free for requests.
    let metrics = d.get("/api/metrics").await;
    assert_eq!(metrics.status, 200, "{}", metrics.text);
    assert_eq!(metrics.json()["dashboard"]["ws_clients"], 1);
    socket.close(None).await.unwrap();
}

/// Reads until the received bytes contain `needle` (or the server closes the connection).
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut received = Vec::new();
    let mut chunk = [0_u8; 4096];
    tokio::time::timeout(GUARD, async {
        while !String::from_utf8_lossy(&received).contains(needle) {
            let n = stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            received.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the server did not answer");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_action_whose_body_trickles_in_is_cut_off() {
    let d = Dashboard::start(ServeConfig {
        allow_writes: true,
        body_read_timeout: Duration::from_millis(300),
        ..ServeConfig::default()
    })
    .await;
    let mut slow = connect(&d).await;
    slow.write_all(
        b"POST /api/dlq/purge HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{",
    )
    .await
    .unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut slow).await.unwrap()).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_writes_are_refused_before_the_body_is_read() {
    let d = Dashboard::start(ServeConfig {
        body_read_timeout: Duration::from_secs(3600),
        ..ServeConfig::default()
    })
    .await;
    let mut client = connect(&d).await;
    // A head that announces a body which never comes.
    client
        .write_all(
            b"POST /api/dlq/redrive HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = read_until(&mut client, "writes_disabled").await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("writes_disabled"), "{answer}");
}
