//! Shared helpers: transports against a private server, waits that turn hangs into failures,
//! and a capture of warnings and errors logged by the transport.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redstream_core::{Event, EventMetadata};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport, TransportOptions};
use serde_json::json;
use tokio::sync::mpsc;

/// How long a test waits for anything before it fails as hung. Never a performance limit.
pub(crate) const HANG: Duration = Duration::from_secs(30);

/// Options that make redelivery quick: claims after 300 ms of idleness, every 100 ms.
pub(crate) fn fast() -> TransportOptions {
    TransportOptions::default()
        .with_block_time(Duration::from_millis(200))
        .with_claim_idle_time(Duration::from_millis(300))
        .with_claim_interval(Duration::from_millis(100))
        .with_drain_timeout(Duration::from_secs(20))
}

/// A name unique in this test binary.
pub(crate) fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A transport on `server` with prefix `prefix`, group `group`, a fresh consumer name.
pub(crate) async fn transport(
    server: &RedisServer,
    prefix: &str,
    group: &str,
    options: TransportOptions,
) -> RedisTransport {
    capture_logs();
    RedisTransport::with_options(
        RedisConfig::default()
            .with_url(server.url())
            .with_stream_prefix(prefix)
            .with_consumer_group(group)
            .with_consumer_name(unique("consumer")),
        options,
    )
    .await
    .unwrap()
}

/// An event numbered `n`.
pub(crate) fn event(event_type: &str, n: usize) -> Event {
    Event::new(event_type, json!({ "n": n }), EventMetadata::default())
}

/// The number in an event made by [`event`].
pub(crate) fn number(event: &Event) -> usize {
    event.payload()["n"].as_u64().unwrap() as usize
}

/// Receives one item, failing the test after [`HANG`].
pub(crate) async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    match tokio::time::timeout(HANG, rx.recv()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("waiting for {what}: every sender is gone"),
        Err(_) => panic!("{what} did not arrive within {HANG:?}"),
    }
}

/// Receives `n` items.
pub(crate) async fn recv_n<T>(rx: &mut mpsc::UnboundedReceiver<T>, n: usize, what: &str) -> Vec<T> {
    let mut items = Vec::with_capacity(n);
    while items.len() < n {
        let progress = format!("{what} ({} of {n} so far)", items.len());
        items.push(recv(rx, &progress).await);
    }
    items
}

/// Awaits `future`, failing the test after [`HANG`].
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not complete within {HANG:?}"))
}

/// Polls `condition` until it holds, failing the test after [`HANG`]. For state that has no
/// event to wait on (what a server or a buffer holds).
pub(crate) async fn until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// `XPENDING <stream> <group>`'s count (0 for a missing stream or group).
pub(crate) async fn pending(server: &RedisServer, stream: &str, group: &str) -> u64 {
    let mut conn = server.connection().await.unwrap();
    let reply: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(&mut conn)
        .await;
    match reply {
        Ok(redis::Value::Array(parts)) => match parts.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            other => panic!("unexpected XPENDING reply {other:?}"),
        },
        Ok(other) => panic!("unexpected XPENDING reply {other:?}"),
        Err(err) if err.to_string().contains("NOGROUP") => 0,
        Err(err) => panic!("XPENDING failed: {err}"),
    }
}

/// The pending count of a group on an event type's stream.
pub(crate) async fn pending_of_type(
    server: &RedisServer,
    transport: &RedisTransport,
    event_type: &str,
    group: &str,
) -> u64 {
    pending(server, &transport.names().stream(event_type), group).await
}

/// Entries of a stream as (id, fields) with text values.
pub(crate) async fn xrange(
    server: &RedisServer,
    stream: &str,
) -> Vec<(String, Vec<(String, String)>)> {
    let mut conn = server.connection().await.unwrap();
    redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// The value of `name` among an entry's fields.
pub(crate) fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no field {name:?} in {fields:?}"))
}

pub(crate) use redstream_testkit::{capture_logs, logged};
