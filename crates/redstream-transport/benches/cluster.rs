//! Throughput of the transport on a private Redis Cluster (3 masters, no replicas), each figure
//! next to raw redis-rs's cluster client (`ClusterClient`, async `ClusterConnection`) doing the
//! same work in the same run.
//!
//! `cargo bench -p redstream-transport --bench cluster` (set `REDSTREAM_BENCH_EVENTS` to change
//! the 100,000).
//!
//! Both sides write the same entries (the encoded envelope in the transport's `event` field) to
//! streams named alike (`<prefix>:{<type>}`, one hash tag per stream: ten streams over the
//! three masters), each side under its own prefix.
//!
//! | line | redstream | raw redis-rs |
//! |---|---|---|
//! | publish, 64 tasks, 10 streams | `publish` from 64 tasks | `XADD` from 64 tasks on one `ClusterConnection` |
//! | consume + ack, no-op handler | `subscribe` to the 10 types (one blocking `XREADGROUP` per slot, each on its own connection) | per stream, `XREADGROUP COUNT 100 BLOCK 100` + `XACK` on a `ClusterConnection` of its own |
//!
//! The consumers read what the round's publishers wrote, from the beginning of the streams;
//! each side's time includes creating its groups and opening its reading connections.
//! Rounds alternate which side goes first; each line gives the median rate of each side, the
//! median of the rounds' ratios, and the range of those ratios (how noisy the machine was).

// A benchmark reports on stdout and stops loudly on failure.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redstream_core::wire::{self, EVENT_FIELD};
use redstream_core::{Event, EventLimits};
use redstream_testkit::RedisCluster;
use redstream_transport::{
    KeyLayout, RedisConfig, RedisTransport, StartFrom, StreamNames, TransportOptions,
};
use tokio::sync::Notify;

use common::{rate, ratio_line, raw_read_decode_ack, server_version};

const TASKS: usize = 64;
/// Rounds per figure; each runs redstream and raw redis-rs back to back.
const ROUNDS: usize = 3;
const TYPES: [&str; 10] = [
    "order.created",
    "order.updated",
    "order.cancelled",
    "payment.failed",
    "payment.captured",
    "user.signed_up",
    "page.viewed",
    "cart.updated",
    "invoice.sent",
    "refund.issued",
];

/// The seed's event, of the `n % 10`th type.
fn seed_event(n: u64) -> Event {
    common::seed_event(TYPES[(n % TYPES.len() as u64) as usize], n)
}

/// `redis-cluster://host:port,...` with every node as a seed.
fn cluster_url(cluster: &RedisCluster) -> String {
    let hosts: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|node| format!("{}:{}", node.server().host(), node.port()))
        .collect();
    format!("redis-cluster://{}", hosts.join(","))
}

async fn transport(url: &str, prefix: &str) -> RedisTransport {
    RedisTransport::with_options(
        RedisConfig::default()
            .with_url(url)
            .with_stream_prefix(prefix)
            .with_consumer_group("g")
            .with_consumer_name("bench"),
        TransportOptions::default()
            .with_start_from(StartFrom::Beginning)
            .with_block_time(Duration::from_millis(100)),
    )
    .await
    .unwrap()
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
                    transport.publish(seed_event(n)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

async fn raw_publish_concurrently(
    conn: &ClusterConnection,
    names: &StreamNames,
    total: u64,
) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    let names = Arc::new(names.clone());
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let mut conn = conn.clone();
            let next = Arc::clone(&next);
            let names = Arc::clone(&names);
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    // The same bytes the transport writes: the encoded envelope.
                    let event = seed_event(n);
                    let envelope = wire::encode(&event, &EventLimits::default()).unwrap();
                    let _: String = redis::cmd("XADD")
                        .arg(names.stream(event.event_type()))
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

async fn consume_all(transport: &RedisTransport, total: u64) -> Duration {
    let handled = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let started = Instant::now();
    let handle = {
        let handled = Arc::clone(&handled);
        let done = Arc::clone(&done);
        transport
            .subscribe(
                TYPES.iter().map(|t| (*t).to_owned()).collect(),
                move |_event: Event| {
                    let handled = Arc::clone(&handled);
                    let done = Arc::clone(&done);
                    async move {
                        if handled.fetch_add(1, Ordering::Relaxed) + 1 == total {
                            done.notify_one();
                        }
                        Ok(())
                    }
                },
            )
            .await
            .unwrap()
    };
    done.notified().await;
    let elapsed = started.elapsed();
    transport.unsubscribe(&handle).await.unwrap();
    elapsed
}

/// One reader per stream (each stream is a slot of its own), each on a `ClusterConnection` of
/// its own as the transport's blocking readers are, reading and acknowledging until all
/// `total` entries are handled.
async fn raw_consume_all(
    client: &ClusterClient,
    shared: &ClusterConnection,
    names: &StreamNames,
    total: u64,
) -> Duration {
    // Timed from here: like `subscribe`, the readers create their groups and open their
    // connections.
    let started = Instant::now();
    let mut readers = Vec::with_capacity(TYPES.len());
    for event_type in TYPES {
        let stream = names.stream(event_type);
        let mut conn = shared.clone();
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg("raw")
            .arg("0")
            .query_async(&mut conn)
            .await
            .unwrap();
        readers.push((stream, client.get_async_connection().await.unwrap()));
    }
    let handled = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Notify::new());
    let tasks: Vec<_> = readers
        .into_iter()
        .map(|(stream, mut conn)| {
            let (handled, stop, done) =
                (Arc::clone(&handled), Arc::clone(&stop), Arc::clone(&done));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let count =
                        raw_read_decode_ack(&mut conn, &stream, "raw", "c", 100, drop).await;
                    if count > 0 && handled.fetch_add(count, Ordering::Relaxed) + count == total {
                        done.notify_one();
                    }
                }
            })
        })
        .collect();
    done.notified().await;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    elapsed
}

/// Deletes the ten streams of `names` (one slot each: a `DEL` per stream).
async fn del(conn: &ClusterConnection, names: &StreamNames) {
    for event_type in TYPES {
        common::del(conn, &names.stream(event_type)).await;
    }
}

fn main() {
    let total: u64 = std::env::var("REDSTREAM_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let cluster = RedisCluster::builder()
            .replicas_per_master(0)
            .start()
            .await
            .unwrap();
        let url = cluster_url(&cluster);
        let client = cluster.client().unwrap();
        let raw = client.get_async_connection().await.unwrap();
        let ports: Vec<String> = cluster
            .nodes()
            .iter()
            .map(|n| n.port().to_string())
            .collect();
        println!(
            "redstream-transport on a Redis Cluster, {total} seed-sized events over 10 streams per \
             run, median of {ROUNDS} rounds, {} on 127.0.0.1:{} (3 masters)",
            server_version(cluster.nodes()[0].server()),
            ports.join(",")
        );

        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let (mut ours_consume, mut theirs_consume) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let transport = transport(&url, &format!("pub{round}")).await;
            let raw_names = StreamNames::new(&format!("raw{round}"), KeyLayout::Cluster);
            let (a, b) = if round % 2 == 0 {
                let a = publish_concurrently(&transport, total).await;
                (a, raw_publish_concurrently(&raw, &raw_names, total).await)
            } else {
                let b = raw_publish_concurrently(&raw, &raw_names, total).await;
                (publish_concurrently(&transport, total).await, b)
            };
            ours.push(rate(total, a));
            theirs.push(rate(total, b));
            // Consume what this round wrote: the groups start at the beginning of the streams.
            let (a, b) = if round % 2 == 0 {
                let a = consume_all(&transport, total).await;
                (a, raw_consume_all(&client, &raw, &raw_names, total).await)
            } else {
                let b = raw_consume_all(&client, &raw, &raw_names, total).await;
                (consume_all(&transport, total).await, b)
            };
            ours_consume.push(rate(total, a));
            theirs_consume.push(rate(total, b));
            del(&raw, transport.names()).await;
            del(&raw, &raw_names).await;
        }
        ratio_line("publish, 64 tasks, 10 streams", &ours, &theirs);
        ratio_line(
            "consume + ack, no-op handler",
            &ours_consume,
            &theirs_consume,
        );
        drop(cluster);
    });
}
