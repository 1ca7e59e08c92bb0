//! Events per second through the sink against a private redis-server, next to raw redis-rs
//! doing the same work in the same run.
//!
//! `cargo bench -p redstream-sink` (set `REDSTREAM_BENCH_EVENTS` to change the 100,000).
//!
//! | line | redstream | raw redis-rs |
//! |---|---|---|
//! | batch N, exactly-once on | `send_batch` of N: one `EVALSHA` of the batch script, which checks permissions, key types and the progress, then runs N `XADD`s and the `HSET` of the progress | a pipeline of N `XADD`s (not atomic) of the same entries: each event encoded with `wire::encode` in the timed loop, as the sink does |
//! | batch N, exactly-once off | the same script without the progress key | the same |
//! | (second line) | the same | the same `XADD`s in `MULTI`/`EXEC`, what the sink sent before its script (which could let them run alone when `MULTI` was refused) |
//!
//! Batches are sent one after another, as a source feeding one sink does. Both sides write the
//! same bytes per entry and get each batch as an owned `Vec<Event>` cut before the clock starts
//! (and dropped inside it), so the ratio is the cost of the sink itself: the script and its
//! checks, the progress key, validation and bookkeeping.

// A benchmark reports on stdout and stops loudly on failure.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redstream_core::{BatchSink, Event, EventLimits, EventMetadata, SourcePosition, wire};
use redstream_sink::{RedisSink, SinkConfig};
use redstream_testkit::RedisServer;
use serde_json::json;

/// Rounds per figure; sides alternate which goes first, and the median of each is reported.
const ROUNDS: usize = 3;

fn seed_event(n: u64) -> Event {
    Event::new(
        "order.created",
        json!({ "order_id": n.to_string(), "total": 99.99, "items": 3 }),
        EventMetadata::default(),
    )
}

fn rate(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64()
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

async fn sink_run(
    server: &RedisServer,
    stream: &str,
    events: &[Event],
    batch: usize,
    exactly_once: bool,
) -> Duration {
    let config = SinkConfig::new("bench", server.url(), stream)
        .with_max_batch_events(batch)
        .with_exactly_once(exactly_once);
    let sink = RedisSink::new(config).unwrap();
    let chunks: Vec<Vec<Event>> = events.chunks(batch).map(<[Event]>::to_vec).collect();
    let started = Instant::now();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let ack = sink
            .send_batch(chunk, Some(SourcePosition::new(i.to_string())))
            .await
            .unwrap();
        assert!(ack.written > 0);
    }
    started.elapsed()
}

async fn raw_run(
    conn: &mut MultiplexedConnection,
    stream: &str,
    events: &[Event],
    batch: usize,
    atomic: bool,
) -> Duration {
    let limits = EventLimits::default();
    // Owned batches, cut before the clock starts and dropped inside the timed loop, as the
    // sink's are (`send_batch` takes its events by value).
    let chunks: Vec<Vec<Event>> = events.chunks(batch).map(<[Event]>::to_vec).collect();
    let started = Instant::now();
    for chunk in chunks {
        let mut pipe = redis::pipe();
        if atomic {
            pipe.atomic();
        }
        for event in &chunk {
            let json = wire::encode(event, &limits).unwrap();
            pipe.cmd("XADD").arg(stream).arg("*").arg("event").arg(json);
        }
        let ids: Vec<String> = pipe.query_async(conn).await.unwrap();
        assert_eq!(ids.len(), chunk.len());
    }
    started.elapsed()
}

async fn del(conn: &mut MultiplexedConnection, keys: &[String]) {
    let () = redis::cmd("DEL").arg(keys).query_async(conn).await.unwrap();
}

fn main() {
    let total: usize = std::env::var("REDSTREAM_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = RedisServer::start().await.unwrap();
        let mut conn = server.connection().await.unwrap();
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.unwrap();
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .to_owned();
        println!(
            "redstream-sink, {total} seed-sized events per run, median of {ROUNDS} rounds, \
             private redis-server {version}"
        );
        let events: Vec<Event> = (0..total as u64).map(seed_event).collect();
        let mut run = 0;
        for batch in [100, 1_000] {
            for exactly_once in [true, false] {
                let mut ours = Vec::new();
                let mut theirs = Vec::new();
                let mut theirs_atomic = Vec::new();
                for round in 0..ROUNDS {
                    run += 1;
                    let stream = format!("{{bench}}.sink.{run}");
                    let raw_stream = format!("{{bench}}.raw.{run}");
                    let atomic_stream = format!("{{bench}}.multi.{run}");
                    let (a, b, c) = if round % 2 == 0 {
                        let a = sink_run(&server, &stream, &events, batch, exactly_once).await;
                        let b = raw_run(&mut conn, &raw_stream, &events, batch, false).await;
                        let c = raw_run(&mut conn, &atomic_stream, &events, batch, true).await;
                        (a, b, c)
                    } else {
                        let c = raw_run(&mut conn, &atomic_stream, &events, batch, true).await;
                        let b = raw_run(&mut conn, &raw_stream, &events, batch, false).await;
                        let a = sink_run(&server, &stream, &events, batch, exactly_once).await;
                        (a, b, c)
                    };
                    ours.push(rate(total, a));
                    theirs.push(rate(total, b));
                    theirs_atomic.push(rate(total, c));
                    del(
                        &mut conn,
                        &[
                            stream.clone(),
                            raw_stream,
                            atomic_stream,
                            redstream_sink::keys::progress_key(&stream, "bench"),
                        ],
                    )
                    .await;
                }
                let (ours, theirs, atomic) =
                    (median(ours), median(theirs), median(theirs_atomic));
                let name = format!(
                    "batch {batch}, exactly-once {}",
                    if exactly_once { "on" } else { "off" }
                );
                println!(
                    "{name:<28} redstream {ours:>10.0} events/s   raw pipelined XADD {theirs:>10.0} events/s   ratio {:.2}x",
                    ours / theirs
                );
                println!(
                    "{:<28} {:>20}   raw MULTI/EXEC XADDs {atomic:>10.0} events/s   ratio {:.2}x",
                    "", "", ours / atomic
                );
            }
        }
    });
}
