//! Shared helpers: transports against a private server, waits that turn hangs into failures,
//! and a capture of warnings and errors logged by the transport.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redstream_core::{Event, EventMetadata, HandlerResult, SubscriptionHandle};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport, TransportOptions};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

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
    RedisTransport::with_options(config_for(server, prefix, group), options)
        .await
        .unwrap()
}

/// What [`transport`] is made with: `server`, prefix `prefix`, group `group`, a fresh
/// consumer name.
pub(crate) fn config_for(server: &RedisServer, prefix: &str, group: &str) -> RedisConfig {
    RedisConfig::default()
        .with_url(server.url())
        .with_stream_prefix(prefix)
        .with_consumer_group(group)
        .with_consumer_name(unique("consumer"))
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
    pending_on(&mut conn, stream, group).await
}

/// `XPENDING <stream> <group>`'s count on any connection (a cluster's included).
pub(crate) async fn pending_on(
    conn: &mut impl redis::aio::ConnectionLike,
    stream: &str,
    group: &str,
) -> u64 {
    let reply: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(conn)
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

/// Whether `group` has nothing pending on any of `streams` (on a clone of `conn`, which may be
/// a cluster's).
pub(crate) async fn none_pending<C, S>(conn: &C, streams: &[S], group: &str) -> bool
where
    C: redis::aio::ConnectionLike + Clone,
    S: AsRef<str>,
{
    let mut conn = conn.clone();
    for stream in streams {
        if pending_on(&mut conn, stream.as_ref(), group).await != 0 {
            return false;
        }
    }
    true
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

/// What the handlers of a test saw: deliveries per event number (see [`event`]).
#[derive(Default)]
pub(crate) struct Seen {
    counts: Mutex<HashMap<usize, usize>>,
    deliveries: AtomicUsize,
}

impl Seen {
    /// Records a delivery of event `n`; returns how many it has had, this one included.
    pub(crate) fn record(&self, n: usize) -> usize {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        let mut counts = self.counts.lock().unwrap();
        let count = counts.entry(n).or_default();
        *count += 1;
        *count
    }

    /// How many different events were handled.
    pub(crate) fn distinct(&self) -> usize {
        self.counts.lock().unwrap().len()
    }

    /// How many deliveries event `n` has had.
    pub(crate) fn count(&self, n: usize) -> usize {
        self.counts.lock().unwrap().get(&n).copied().unwrap_or(0)
    }

    pub(crate) fn has(&self, n: usize) -> bool {
        self.counts.lock().unwrap().contains_key(&n)
    }

    /// Deliveries in all, duplicates included.
    pub(crate) fn deliveries(&self) -> usize {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// Deliveries beyond the first of each event.
    pub(crate) fn duplicates(&self) -> usize {
        self.counts
            .lock()
            .unwrap()
            .values()
            .map(|c| c.saturating_sub(1))
            .sum()
    }

    /// Those of `numbers` that were not handled.
    pub(crate) fn missing(&self, numbers: impl IntoIterator<Item = usize>) -> Vec<usize> {
        let counts = self.counts.lock().unwrap();
        numbers
            .into_iter()
            .filter(|n| !counts.contains_key(n))
            .collect()
    }

    /// Waits until every one of `numbers` was handled; after [`HANG`], fails naming those that
    /// were not (lost, or stuck).
    pub(crate) async fn wait_for_all(&self, numbers: &[usize], what: &str) {
        let deadline = tokio::time::Instant::now() + HANG;
        loop {
            let missing = self.missing(numbers.iter().copied());
            if missing.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {} of {} events not handled within {HANG:?}, among them {:?}",
                missing.len(),
                numbers.len(),
                &missing[..missing.len().min(20)]
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Events handled that are not among `published` (their publish failed after the write).
    pub(crate) fn handled_besides(&self, published: &HashSet<usize>) -> usize {
        self.counts
            .lock()
            .unwrap()
            .keys()
            .filter(|n| !published.contains(n))
            .count()
    }
}

/// Subscribes `transport` to `types` with a handler that records each event's number in
/// `seen` and succeeds.
pub(crate) async fn subscribe_seen(
    transport: &RedisTransport,
    types: &[&str],
    seen: &Arc<Seen>,
) -> SubscriptionHandle {
    let seen = Arc::clone(seen);
    transport
        .subscribe(
            types.iter().map(|t| (*t).to_owned()).collect(),
            move |event| {
                seen.record(number(&event));
                async { HandlerResult::Ok(()) }
            },
        )
        .await
        .unwrap()
}

/// Publishers that keep publishing until stopped: `tasks` tasks take the next number, publish
/// [`event`]`(types[n % types.len()], n)` and record whether it was acknowledged (and when) or
/// failed (the error, then a pause of 50 ms so that a failing server is not hammered).
pub(crate) struct Flow {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(usize, Instant)>>>,
    errors: Arc<Mutex<Vec<(usize, redstream_core::Error)>>>,
    tasks: JoinSet<()>,
}

/// What a [`Flow`] published, once stopped.
pub(crate) struct Flowed {
    /// Acknowledged publishes, in the order they were acknowledged.
    pub(crate) acked: Vec<(usize, Instant)>,
    /// Failed publishes and their errors.
    pub(crate) errors: Vec<(usize, redstream_core::Error)>,
}

impl Flowed {
    /// The numbers of the acknowledged publishes.
    pub(crate) fn numbers(&self) -> Vec<usize> {
        self.acked.iter().map(|(n, _)| *n).collect()
    }

    pub(crate) fn acked_numbers(&self) -> HashSet<usize> {
        self.acked.iter().map(|(n, _)| *n).collect()
    }
}

impl Flow {
    pub(crate) fn start(transport: &RedisTransport, types: &[&str], tasks: usize) -> Self {
        Self::start_from(transport, types, tasks, 0)
    }

    /// As [`start`](Self::start), numbering events from `first`.
    pub(crate) fn start_from(
        transport: &RedisTransport,
        types: &[&str],
        tasks: usize,
        first: usize,
    ) -> Self {
        let types: Arc<[String]> = types.iter().map(|t| (*t).to_owned()).collect();
        let next = Arc::new(AtomicUsize::new(first));
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
        let errors: Arc<Mutex<Vec<(usize, redstream_core::Error)>>> = Arc::default();
        let mut set = JoinSet::new();
        for _ in 0..tasks {
            let (transport, types, next) =
                (transport.clone(), Arc::clone(&types), Arc::clone(&next));
            let (stop, acked, errors) =
                (Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&errors));
            set.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    match transport.publish(event(&types[n % types.len()], n)).await {
                        Ok(_) => acked.lock().unwrap().push((n, Instant::now())),
                        Err(err) => {
                            errors.lock().unwrap().push((n, err));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }
        Self {
            stop,
            acked,
            errors,
            tasks: set,
        }
    }

    /// How many publishes were acknowledged so far.
    pub(crate) fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `more` publishes were acknowledged after the `from`th.
    pub(crate) async fn acked_after(&self, from: usize, more: usize, what: &str) {
        until(what, || async { self.acked() >= from + more }).await;
    }

    /// Stops the publishers and returns what they published.
    pub(crate) async fn stop(mut self) -> Flowed {
        self.stop.store(true, Ordering::Relaxed);
        within("the publishers to stop", async {
            while let Some(done) = self.tasks.join_next().await {
                done.unwrap();
            }
        })
        .await;
        Flowed {
            acked: std::mem::take(&mut *self.acked.lock().unwrap()),
            errors: std::mem::take(&mut *self.errors.lock().unwrap()),
        }
    }
}

pub(crate) use redstream_testkit::{capture_logs, logged};
