//! Throughput and latency of the transport against a private redis-server, each figure next to
//! raw redis-rs doing the same work in the same run.
//!
//! `cargo bench -p redstream-transport --bench throughput` (set `REDSTREAM_BENCH_EVENTS` to
//! change the 200,000 events per run, `REDSTREAM_BENCH_ROUNDS` the 5 rounds, and
//! `REDSTREAM_BENCH_ONLY` to a comma-separated list of `sequential`, `concurrent`, `batch`,
//! `four` and `latency` to run only those parts; `batch` includes the one-consumer consume).
//! For trying other settings: `REDSTREAM_BENCH_READ_COUNT`, `REDSTREAM_BENCH_CONCURRENCY` and
//! `REDSTREAM_BENCH_ACK_BATCH` set the transport's, `REDSTREAM_BENCH_QUEUE` its
//! `backpressure.max_queue_size`. The raw loops read as many entries per
//! `XREADGROUP` as the transport (its `read_count`), or `REDSTREAM_BENCH_RAW_COUNT`.
//! `REDSTREAM_BENCH_SIDE=redstream` (or `raw`) runs one side only of the `four` part, to be
//! profiled on its own (`perf record`: see `docs/performance.md`).
//!
//! Each line gives the median rates and the median of the rounds' ratios; the line below it
//! their range, their geometric mean and its 95% confidence interval
//! (`redstream_testkit::bench::Ratios`): an interval that holds 1.0x means the rounds cannot
//! tell the two sides apart.
//!
//! Under the consume lines and the batch lines, the server's time per event for each side
//! (`INFO commandstats`, reset before each side runs): where a gap is the server's work, not
//! the client's.
//!
//! | line | redstream | raw redis-rs |
//! |---|---|---|
//! | publish, 1 task | `publish` one after the other | `XADD` one after the other |
//! | publish, 64 tasks | `publish` from 64 tasks | `XADD` from 64 tasks on one multiplexed connection |
//! | publish_batch 256 | `publish_batch` of 256 | a pipeline of 256 `XADD`s |
//! | publish_batch vs raw MULTI/EXEC | `publish_batch` of 256 | the same pipeline in `MULTI`/`EXEC`: a transaction done by hand (not all or nothing: an `XADD` to a key of another type fails alone inside `EXEC`) |
//! | publish_batch vs raw EVALSHA | `publish_batch` of 256 | the same work by hand: `EVALSHA` of `publish_batch.lua` with the arguments the transport sends |
//! | consume + ack | `subscribe` with a no-op handler (one `XREADGROUP` per poll) | `XREADGROUP COUNT <read_count>` + `XACK` loop |
//! | consume + ack, 4 consumers | 4 transports subscribed in one group | 4 such loops, one connection and consumer name each |
//! | latency at 10k/s | publish -> handler, p50/p99 | `XADD` -> a blocking `XREADGROUP` reader that decodes and acks, p50/p99 |

// A benchmark reports on stdout and stops loudly on failure.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redstream_core::wire::{self, EVENT_FIELD};
use redstream_core::{BackpressureConfig, Event, EventLimits, EventMetadata};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport, StartFrom, TransportOptions};
use serde_json::json;
use tokio::sync::Notify;

use common::{
    ServerWork, del, env_usize, median, rate, rates_line, ratio_line, ratios, raw_read_decode_ack,
    seed_event, server_version,
};

const TASKS: usize = 64;
const CONSUMERS: usize = 4;
const BATCH: usize = 256;
const LATENCY_RATE: u64 = 10_000;
const LATENCY_SECS: u64 = 3;
const EVENT_TYPE: &str = "order.created";

async fn transport(server: &RedisServer, prefix: &str, group: &str) -> RedisTransport {
    transport_named(server, prefix, group, "bench").await
}

async fn transport_named(
    server: &RedisServer,
    prefix: &str,
    group: &str,
    consumer: &str,
) -> RedisTransport {
    let mut config = RedisConfig::default()
        .with_url(server.url())
        .with_stream_prefix(prefix)
        .with_consumer_group(group)
        .with_consumer_name(consumer);
    if let Some(n) = env_usize("REDSTREAM_BENCH_QUEUE") {
        config = config.with_backpressure(BackpressureConfig::default().with_max_queue_size(n));
    }
    RedisTransport::with_options(
        config,
        tuned(
            TransportOptions::default()
                .with_start_from(StartFrom::Beginning)
                .with_block_time(Duration::from_millis(100)),
        ),
    )
    .await
    .unwrap()
}

/// The defaults, or what `REDSTREAM_BENCH_READ_COUNT`, `REDSTREAM_BENCH_CONCURRENCY` and
/// `REDSTREAM_BENCH_ACK_BATCH` say (`REDSTREAM_BENCH_QUEUE` is set in [`transport_named`])
/// (for trying other settings; the printed figures are with the defaults unless they are set).
fn tuned(mut options: TransportOptions) -> TransportOptions {
    if let Some(n) = env_usize("REDSTREAM_BENCH_READ_COUNT") {
        options = options.with_read_count(n);
    }
    if let Some(n) = env_usize("REDSTREAM_BENCH_CONCURRENCY") {
        options = options.with_handler_concurrency(n);
    }
    if let Some(n) = env_usize("REDSTREAM_BENCH_ACK_BATCH") {
        options = options.with_ack_batch_size(n);
    }
    options
}

async fn publish_concurrently(transport: &RedisTransport, total: u64) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let transport = transport.clone();
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    transport.publish(seed_event(EVENT_TYPE, n)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

/// `XADD`s from `TASKS` tasks, each with its clone of `conn`: a `MultiplexedConnection` (the
/// baseline), or redis-rs's `ConnectionManager` (the reconnecting layer the transport sends
/// through, for the diagnostic line under the baseline's).
async fn raw_publish_concurrently<C>(conn: &C, stream: &str, total: u64) -> Duration
where
    C: redis::aio::ConnectionLike + Clone + Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let mut conn = conn.clone();
            let next = Arc::clone(&next);
            let stream = stream.to_owned();
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    // The same bytes the transport writes: the encoded envelope.
                    let envelope =
                        wire::encode(&seed_event(EVENT_TYPE, n), &EventLimits::default()).unwrap();
                    let _: String = redis::cmd("XADD")
                        .arg(&stream)
                        .arg("*")
                        .arg(EVENT_FIELD)
                        .arg(envelope)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

async fn publish_sequentially(transport: &RedisTransport, total: u64) -> Duration {
    let started = Instant::now();
    for n in 0..total {
        transport.publish(seed_event(EVENT_TYPE, n)).await.unwrap();
    }
    started.elapsed()
}

async fn raw_publish_sequentially(
    conn: &MultiplexedConnection,
    stream: &str,
    total: u64,
) -> Duration {
    let mut conn = conn.clone();
    let started = Instant::now();
    for n in 0..total {
        let envelope = wire::encode(&seed_event(EVENT_TYPE, n), &EventLimits::default()).unwrap();
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(EVENT_FIELD)
            .arg(envelope)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    started.elapsed()
}

async fn publish_batches(transport: &RedisTransport, total: u64) -> Duration {
    let started = Instant::now();
    let mut n = 0;
    while n < total {
        let size = BATCH.min((total - n) as usize) as u64;
        let events = (n..n + size).map(|n| seed_event(EVENT_TYPE, n)).collect();
        transport.publish_batch(events).await.unwrap();
        n += size;
    }
    started.elapsed()
}

/// The envelopes of the events numbered `numbers`, from a batch made as `publish_batch` is given
/// one (a vector of events), each event encoded and dropped in turn.
fn envelopes(numbers: std::ops::Range<u64>) -> impl Iterator<Item = String> {
    let events: Vec<Event> = numbers.map(|n| seed_event(EVENT_TYPE, n)).collect();
    events
        .into_iter()
        .map(|event| wire::encode(&event, &EventLimits::default()).unwrap())
}

/// The transport's own script, invoked by hand: the same all-or-nothing batch, with redis-rs's
/// `Script` and the arguments `publish_batch` sends (the stream; each event's stream position
/// and envelope; then the stream's `MAXLEN`, none).
async fn raw_script_batches(conn: &MultiplexedConnection, stream: &str, total: u64) -> Duration {
    static SCRIPT: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new(include_str!("../src/publish_batch.lua")));
    let mut conn = conn.clone();
    let started = Instant::now();
    let mut n = 0;
    while n < total {
        let size = BATCH.min((total - n) as usize) as u64;
        let mut invocation = SCRIPT.prepare_invoke();
        invocation.key(stream);
        for envelope in envelopes(n..n + size) {
            invocation.arg(envelope);
        }
        invocation.arg(0);
        let ids: String = invocation.invoke_async(&mut conn).await.unwrap();
        let ids: Vec<String> = ids.split(' ').map(str::to_owned).collect();
        assert_eq!(ids.len() as u64, size);
        n += size;
    }
    started.elapsed()
}

async fn raw_publish_batches(
    conn: &MultiplexedConnection,
    stream: &str,
    total: u64,
    atomic: bool,
) -> Duration {
    let mut conn = conn.clone();
    let started = Instant::now();
    let mut n = 0;
    while n < total {
        let size = BATCH.min((total - n) as usize) as u64;
        let mut pipe = redis::pipe();
        if atomic {
            pipe.atomic();
        }
        for envelope in envelopes(n..n + size) {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg(EVENT_FIELD)
                .arg(envelope);
        }
        let _: Vec<String> = pipe.query_async(&mut conn).await.unwrap();
        n += size;
    }
    started.elapsed()
}

async fn consume_all(transport: &RedisTransport, total: u64) -> Duration {
    let handled = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let started = Instant::now();
    let handle = {
        let handled = Arc::clone(&handled);
        let done = Arc::clone(&done);
        transport
            .subscribe(vec!["order.created".into()], move |_event: Event| {
                // Counted in the call, not in the future: the future captures nothing, so no
                // per-event clones of the shared counters (the raw loops count once per read).
                if handled.fetch_add(1, Ordering::Relaxed) + 1 == total {
                    done.notify_one();
                }
                std::future::ready(Ok(()))
            })
            .await
            .unwrap()
    };
    done.notified().await;
    let elapsed = started.elapsed();
    transport.unsubscribe(&handle).await.unwrap();
    elapsed
}

/// Consumes `total` entries with `CONSUMERS` transports subscribed in one group (one consumer
/// each, as four processes would).
async fn consume_all_by_four(server: &RedisServer, prefix: &str, total: u64) -> Duration {
    let handled = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let mut subscribed = Vec::new();
    for n in 0..CONSUMERS {
        subscribed.push(transport_named(server, prefix, "g4", &format!("c{n}")).await);
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for transport in &subscribed {
        let handled = Arc::clone(&handled);
        let done = Arc::clone(&done);
        let handle = transport
            .subscribe(vec!["order.created".into()], move |_event: Event| {
                // Counted in the call, not in the future: the future captures nothing, so no
                // per-event clones of the shared counters (the raw loops count once per read).
                if handled.fetch_add(1, Ordering::Relaxed) + 1 == total {
                    done.notify_one();
                }
                std::future::ready(Ok(()))
            })
            .await
            .unwrap();
        handles.push(handle);
    }
    done.notified().await;
    let elapsed = started.elapsed();
    for (transport, handle) in subscribed.iter().zip(&handles) {
        transport.unsubscribe(handle).await.unwrap();
    }
    elapsed
}

/// The raw side of [`consume_all_by_four`]: `CONSUMERS` read-decode-ack loops, each on its own
/// connection with its own consumer name, until `total` entries are handled between them.
/// Timed from before the group and the connections are made, as each transport's `subscribe`
/// makes its own.
async fn raw_consume_all_by_four(server: &RedisServer, stream: &str, total: u64) -> Duration {
    let started = Instant::now();
    let mut admin = server.connection().await.unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("raw4")
        .arg("0")
        .query_async(&mut admin)
        .await
        .unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let mut conns = Vec::new();
    for _ in 0..CONSUMERS {
        conns.push(server.connection().await.unwrap());
    }
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(n, mut conn)| {
            let handled = Arc::clone(&handled);
            let done = Arc::clone(&done);
            let stream = stream.to_owned();
            tokio::spawn(async move {
                let consumer = format!("c{n}");
                while handled.load(Ordering::Relaxed) < total {
                    let count =
                        raw_read_decode_ack(&mut conn, &stream, "raw4", &consumer, 100, drop).await;
                    if count > 0 && handled.fetch_add(count, Ordering::Relaxed) + count == total {
                        done.notify_one();
                    }
                }
            })
        })
        .collect();
    done.notified().await;
    let elapsed = started.elapsed();
    for task in tasks {
        task.await.unwrap();
    }
    elapsed
}

/// The raw side of [`consume_all`]. Timed from before its connection and its group are made, as
/// the transport's `subscribe` makes its own (a dedicated connection for blocking reads, the
/// group).
async fn raw_consume_all(server: &RedisServer, stream: &str, total: u64) -> Duration {
    let started = Instant::now();
    let mut conn = server.connection().await.unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("raw")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut handled = 0;
    while handled < total {
        handled += raw_read_decode_ack(&mut conn, stream, "raw", "c", 100, drop).await;
    }
    started.elapsed()
}

/// Runs `run` between a reset and a reading of the server's command statistics.
async fn with_server_work<F>(conn: &MultiplexedConnection, run: F) -> (Duration, ServerWork)
where
    F: std::future::Future<Output = Duration>,
{
    let start = ServerWork::reset(conn).await;
    let elapsed = run.await;
    (elapsed, ServerWork::read(conn, &start).await)
}

/// The server's work per event for each side, under a ratio line.
fn server_work_lines(ours: &ServerWork, raw: &ServerWork, events: u64) {
    println!(
        "{:<32} server, redstream:    {}",
        "",
        ours.per_event(events)
    );
    println!("{:<32} server, raw redis-rs: {}", "", raw.per_event(events));
    println!("{:<32} redstream:  {}", "", ours.cpu_per_event(events));
    println!("{:<32} raw redis-rs: {}", "", raw.cpu_per_event(events));
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// Publishes at a steady rate and measures publish -> handler latency.
async fn latency(transport: &RedisTransport) -> (Duration, Duration) {
    let origin = Instant::now();
    let total = LATENCY_RATE * LATENCY_SECS;
    let samples = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let done = Arc::new(Notify::new());
    let handle = {
        let samples = Arc::clone(&samples);
        let done = Arc::clone(&done);
        transport
            .subscribe(vec!["tick".into()], move |event: Event| {
                let samples = Arc::clone(&samples);
                let done = Arc::clone(&done);
                async move {
                    let sent = Duration::from_nanos(event.payload()["t"].as_u64().unwrap_or(0));
                    let mut samples = samples.lock().unwrap();
                    samples.push(origin.elapsed().saturating_sub(sent));
                    if samples.len() as u64 == total {
                        done.notify_one();
                    }
                    Ok(())
                }
            })
            .await
            .unwrap()
    };
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / LATENCY_RATE));
    for _ in 0..total {
        ticker.tick().await;
        let t = origin.elapsed().as_nanos() as u64;
        let transport = transport.clone();
        tokio::spawn(async move {
            transport
                .publish(Event::new(
                    "tick",
                    json!({ "t": t }),
                    EventMetadata::default(),
                ))
                .await
                .unwrap();
        });
    }
    done.notified().await;
    transport.unsubscribe(&handle).await.unwrap();
    let mut samples = std::mem::take(&mut *samples.lock().unwrap());
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// The raw side of [`latency`]: `XADD`s at the same steady rate, read by a blocking
/// `XREADGROUP` loop on its own connection that decodes and acknowledges each entry.
async fn raw_latency(server: &RedisServer, stream: &str) -> (Duration, Duration) {
    let origin = Instant::now();
    let total = LATENCY_RATE * LATENCY_SECS;
    let mut reader = server.connection().await.unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("rawlat")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut reader)
        .await
        .unwrap();
    let reading = {
        let stream = stream.to_owned();
        tokio::spawn(async move {
            let mut samples = Vec::with_capacity(total as usize);
            while (samples.len() as u64) < total {
                raw_read_decode_ack(&mut reader, &stream, "rawlat", "c", 1000, |event| {
                    let sent = Duration::from_nanos(event.payload()["t"].as_u64().unwrap_or(0));
                    samples.push(origin.elapsed().saturating_sub(sent));
                })
                .await;
            }
            samples
        })
    };
    let writer = server.connection().await.unwrap();
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / LATENCY_RATE));
    for _ in 0..total {
        ticker.tick().await;
        let t = origin.elapsed().as_nanos() as u64;
        let mut conn = writer.clone();
        let stream = stream.to_owned();
        tokio::spawn(async move {
            let event = Event::new("tick", json!({ "t": t }), EventMetadata::default());
            let envelope = wire::encode(&event, &EventLimits::default()).unwrap();
            let _: String = redis::cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg(EVENT_FIELD)
                .arg(envelope)
                .query_async(&mut conn)
                .await
                .unwrap();
        });
    }
    let mut samples = reading.await.unwrap();
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// Rounds per figure (5, as the state and sink benches, or `REDSTREAM_BENCH_ROUNDS`); each round runs redstream and raw
/// redis-rs back to back, alternating which goes first, and the median rate of each side is
/// reported. One machine runs both the server and the client, so single runs are noisy: more
/// rounds narrow the median.
static ROUNDS: std::sync::LazyLock<usize> =
    std::sync::LazyLock::new(|| redstream_testkit::bench::rounds(5));

/// Whether the part `name` runs: every part, unless `REDSTREAM_BENCH_ONLY` names some.
fn part(name: &str) -> bool {
    redstream_testkit::bench::part(name)
}

fn main() {
    let total: u64 = std::env::var("REDSTREAM_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let server = RedisServer::start().await.unwrap();
        let raw = server.connection().await.unwrap();
        println!(
            "redstream-transport, {total} seed-sized events per run, median of {} rounds, \
             {} on 127.0.0.1:{}",
            *ROUNDS,
            server_version(&server),
            server.port()
        );

        // One at a time: every publish waits for its reply, so this is the per-call overhead.
        if part("sequential") {
            let sequential = (total / 10).max(1);
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for round in 0..*ROUNDS {
                let publisher = transport(&server, &format!("seq{round}"), "g").await;
                let raw_stream = format!("raw:seq{round}");
                let (a, b) = if round % 2 == 0 {
                    let a = publish_sequentially(&publisher, sequential).await;
                    (a, raw_publish_sequentially(&raw, &raw_stream, sequential).await)
                } else {
                    let b = raw_publish_sequentially(&raw, &raw_stream, sequential).await;
                    (publish_sequentially(&publisher, sequential).await, b)
                };
                ours.push(rate(sequential, a));
                theirs.push(rate(sequential, b));
                del(&raw, &publisher.names().stream("order.created")).await;
                del(&raw, &raw_stream).await;
            }
            ratio_line(&format!("publish, 1 task ({sequential})"), &ours, &theirs);
        }

        if part("concurrent") {
            // Where the gap lies: the same raw loop through redis-rs's `ConnectionManager`,
            // which the transport sends through for its reconnections (and which clones the
            // connection for every command), in the same rounds.
            let manager = redis::aio::ConnectionManager::new(
                redis::Client::open(server.url().as_str()).unwrap(),
            )
            .await
            .unwrap();
            let (mut ours, mut theirs, mut managed) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..*ROUNDS {
                let publisher = transport(&server, &format!("pub{round}"), "g").await;
                let raw_stream = format!("raw:pub{round}");
                let (a, b) = if round % 2 == 0 {
                    let a = publish_concurrently(&publisher, total).await;
                    (a, raw_publish_concurrently(&raw, &raw_stream, total).await)
                } else {
                    let b = raw_publish_concurrently(&raw, &raw_stream, total).await;
                    (publish_concurrently(&publisher, total).await, b)
                };
                ours.push(rate(total, a));
                theirs.push(rate(total, b));
                let managed_stream = format!("raw:managed{round}");
                let c = raw_publish_concurrently(&manager, &managed_stream, total).await;
                managed.push(rate(total, c));
                del(&raw, &publisher.names().stream("order.created")).await;
                del(&raw, &raw_stream).await;
                del(&raw, &managed_stream).await;
            }
            ratio_line("publish, 64 tasks", &ours, &theirs);
            let managed = median(&managed);
            println!(
                "{:<32} raw redis-rs through ConnectionManager {managed:.0} msg/s: {:.2}x of the \
                 baseline; redstream {:.2}x of it",
                "",
                managed / median(&theirs),
                median(&ours) / managed,
            );
        }
        if part("batch") {
            // Four writers of the same batches each round, in an order that rotates from round
            // to round: redstream, pipelined XADDs, MULTI/EXEC, and the transport's script by
            // hand (the same work). Each comparison is a median of the rounds' ratios.
            let mut rates: [Vec<f64>; 4] = Default::default();
            let mut works: [ServerWork; 4] = Default::default();
            let (mut ours_consume, mut theirs_consume) = (Vec::new(), Vec::new());
            let (mut ours_consume_work, mut theirs_consume_work) =
                (ServerWork::default(), ServerWork::default());
            // One batch of each first, outside the rounds: the scripts loaded, the allocator
            // warmed, whoever goes first in the first round.
            let warm = transport(&server, "warm", "g").await;
            publish_batches(&warm, BATCH as u64).await;
            raw_publish_batches(&raw, "raw:warm", BATCH as u64, true).await;
            raw_script_batches(&raw, "raw:warm", BATCH as u64).await;
            del(&raw, &warm.names().stream(EVENT_TYPE)).await;
            del(&raw, "raw:warm").await;
            for round in 0..*ROUNDS {
                let batcher = transport(&server, &format!("batch{round}"), "g").await;
                let raw_stream = format!("raw:batch{round}");
                let atomic_stream = format!("raw:atomic{round}");
                let script_stream = format!("raw:script{round}");
                for turn in 0..4 {
                    let writer = (round + turn) % 4;
                    let start = ServerWork::reset(&raw).await;
                    let elapsed = match writer {
                        0 => publish_batches(&batcher, total).await,
                        1 => raw_publish_batches(&raw, &raw_stream, total, false).await,
                        2 => raw_publish_batches(&raw, &atomic_stream, total, true).await,
                        _ => raw_script_batches(&raw, &script_stream, total).await,
                    };
                    works[writer].add(&ServerWork::read(&raw, &start).await);
                    rates[writer].push(rate(total, elapsed));
                }
                // Consume what this round wrote: the group starts at the beginning of the stream.
                let ((a, a_work), (b, b_work)) = if round % 2 == 0 {
                    let a = with_server_work(&raw, consume_all(&batcher, total)).await;
                    (a, with_server_work(&raw, raw_consume_all(&server, &raw_stream, total)).await)
                } else {
                    let b = with_server_work(&raw, raw_consume_all(&server, &raw_stream, total)).await;
                    (with_server_work(&raw, consume_all(&batcher, total)).await, b)
                };
                ours_consume.push(rate(total, a));
                theirs_consume.push(rate(total, b));
                ours_consume_work.add(&a_work);
                theirs_consume_work.add(&b_work);
                del(&raw, &atomic_stream).await;
                del(&raw, &script_stream).await;
                del(&raw, &batcher.names().stream("order.created")).await;
                del(&raw, &raw_stream).await;
            }
            let [ours, pipelined, atomic, script] = &rates;
            ratio_line("publish_batch, 256", ours, pipelined);
            ratio_line("publish_batch vs raw MULTI/EXEC", ours, atomic);
            ratio_line("publish_batch vs raw EVALSHA", ours, script);
            let events = total * *ROUNDS as u64;
            for (work, writer) in works.iter().zip(["redstream", "pipelined", "MULTI/EXEC", "EVALSHA"]) {
                let writer = format!("{writer}:");
                println!("{:<32} server, {writer:<11} {}", "", work.per_event(events));
                println!("{:<32} {writer:<19} {}", "", work.cpu_per_event(events));
            }
            // The same rounds side by side: the spread of the ratio says how noisy the machine was.
            let consume = ratios(&ours_consume, &theirs_consume);
            rates_line(
                "consume + ack, no-op handler",
                median(&ours_consume),
                median(&theirs_consume),
                consume.median,
            );
            println!("{:<32} consume + ack ratio per round {consume}", "");
            server_work_lines(
                &ours_consume_work,
                &theirs_consume_work,
                total * *ROUNDS as u64,
            );
        }

        if part("four") {
            // Four consumers in one group, on a backlog written by raw XADDs (the same bytes).
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            let (mut ours_work, mut theirs_work) = (ServerWork::default(), ServerWork::default());
            for round in 0..*ROUNDS {
                let prefix = format!("four{round}");
                let ours_stream = format!("{prefix}:order.created");
                let raw_stream = format!("raw:four{round}");
                raw_publish_batches(&raw, &ours_stream, total, false).await;
                raw_publish_batches(&raw, &raw_stream, total, false).await;
                if let Ok(side) = std::env::var("REDSTREAM_BENCH_SIDE") {
                    // One side only, for a profiler: no ratio.
                    let elapsed = match side.as_str() {
                        "redstream" => consume_all_by_four(&server, &prefix, total).await,
                        "raw" => raw_consume_all_by_four(&server, &raw_stream, total).await,
                        other => panic!("REDSTREAM_BENCH_SIDE is redstream or raw, not {other}"),
                    };
                    println!("consume + ack, 4 consumers, {side} only: {:.0} msg/s", rate(total, elapsed));
                    del(&raw, &ours_stream).await;
                    del(&raw, &raw_stream).await;
                    continue;
                }
                let ((a, a_work), (b, b_work)) = if round % 2 == 0 {
                    let a = with_server_work(&raw, consume_all_by_four(&server, &prefix, total));
                    let a = a.await;
                    let b = raw_consume_all_by_four(&server, &raw_stream, total);
                    (a, with_server_work(&raw, b).await)
                } else {
                    let b = raw_consume_all_by_four(&server, &raw_stream, total);
                    let b = with_server_work(&raw, b).await;
                    let a = consume_all_by_four(&server, &prefix, total);
                    (with_server_work(&raw, a).await, b)
                };
                ours.push(rate(total, a));
                theirs.push(rate(total, b));
                ours_work.add(&a_work);
                theirs_work.add(&b_work);
                del(&raw, &ours_stream).await;
                del(&raw, &raw_stream).await;
            }
            // With one side only (`REDSTREAM_BENCH_SIDE`) there is nothing to compare.
            if !ours.is_empty() {
                ratio_line("consume + ack, 4 consumers", &ours, &theirs);
                server_work_lines(&ours_work, &theirs_work, total * *ROUNDS as u64);
            }
        }

        if part("latency") {
            let (mut ours_p, mut theirs_p) = (Vec::new(), Vec::new());
            for round in 0..*ROUNDS {
                let ticker = transport(&server, &format!("lat{round}"), "g").await;
                let raw_stream = format!("raw:lat{round}");
                let (a, b) = if round % 2 == 0 {
                    let a = latency(&ticker).await;
                    (a, raw_latency(&server, &raw_stream).await)
                } else {
                    let b = raw_latency(&server, &raw_stream).await;
                    (latency(&ticker).await, b)
                };
                ours_p.push(a);
                theirs_p.push(b);
                del(&raw, &ticker.names().stream("tick")).await;
                del(&raw, &raw_stream).await;
            }
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let pick = |samples: &[(Duration, Duration)], p99: bool| {
                median(
                    &samples
                        .iter()
                        .map(|(p50, p99_)| ms(if p99 { *p99_ } else { *p50 }))
                        .collect::<Vec<_>>(),
                )
            };
            let (a50, a99) = (pick(&ours_p, false), pick(&ours_p, true));
            let (b50, b99) = (pick(&theirs_p, false), pick(&theirs_p, true));
            println!(
                "latency at {LATENCY_RATE}/s for {LATENCY_SECS}s, median of {} rounds: \
                 redstream p50 {a50:.2} ms p99 {a99:.2} ms   raw redis-rs p50 {b50:.2} ms p99 {b99:.2} ms   \
                 ratio p50 {:.2}x p99 {:.2}x",
                *ROUNDS,
                a50 / b50,
                a99 / b99
            );
        }
        drop(server);
    });
}
