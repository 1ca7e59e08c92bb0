//! Events per second through the sink against a private redis-server, next to raw redis-rs
//! doing the same work in the same run.
//!
//! `cargo bench -p redstream-sink` (set `REDSTREAM_BENCH_EVENTS` to change the 100,000 and
//! `REDSTREAM_BENCH_ROUNDS` the 5 rounds).
//!
//! | line | redstream | raw redis-rs |
//! |---|---|---|
//! | batch N, exactly-once on | `send_batch` of N: one `EVALSHA` of the batch script, which checks permissions, key types and the progress, then runs N `XADD`s and the `HSET` of the progress | three baselines, each encoding every event with `wire::encode` in the timed loop, as the sink does: (1) a pipeline of the N `XADD`s and the progress `HSET` (not atomic: a failure leaves part of the batch); (2) the same in `MULTI`/`EXEC` (atomic against other clients, but a refused `MULTI` lets the commands run alone and a failing command does not stop the others; nothing checks the progress); (3) `EVALSHA` of the sink's own `batch.lua` with its arguments built by hand: the same commands and guarantees as the sink |
//! | batch N, exactly-once off | the same script without the progress key | the same three, without the progress `HSET` |
//!
//! Batches are sent one after another, as a source feeding one sink does. Both sides write the
//! same bytes per entry and get each batch as an owned `Vec<Event>` cut before the clock starts
//! (and dropped inside it), so the ratio against (3) is the cost of the sink itself: validation,
//! bookkeeping, its connection and its retry wrapper. Each line gives the median rates, the
//! median of the rounds' ratios, their range, their geometric mean and its 95% confidence
//! interval (`redstream_testkit::bench::Ratios`); sides alternate which goes first.

// A benchmark reports on stdout and stops loudly on failure.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Progress, SINK_ID, raw_script_batch, seed_event};
use redis::aio::MultiplexedConnection;
use redstream_core::{BatchSink, Event, EventLimits, SourcePosition, wire};
use redstream_sink::{RedisSink, SinkConfig};
use redstream_testkit::RedisServer;
use redstream_testkit::bench::{Ratios, median};

/// Rounds per figure; sides alternate which goes first, and the median of each is reported.
/// Rounds per line unless `REDSTREAM_BENCH_ROUNDS` says otherwise.
const ROUNDS: usize = 5;

fn rate(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64()
}

async fn sink_run(
    server: &RedisServer,
    stream: &str,
    events: &[Event],
    batch: usize,
    exactly_once: bool,
) -> Duration {
    let config = SinkConfig::new(SINK_ID, server.url(), stream)
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

/// How the raw side sends a batch.
#[derive(Clone, Copy)]
enum Raw {
    /// A pipeline of `XADD`s (and the progress `HSET`): not atomic.
    Pipeline,
    /// The same in `MULTI`/`EXEC`.
    Multi,
    /// `EVALSHA` of the sink's own batch script (`src/batch.lua`), its arguments built by hand:
    /// the same commands and the same guarantees.
    Script,
}

async fn raw_run(
    conn: &mut MultiplexedConnection,
    stream: &str,
    events: &[Event],
    batch: usize,
    exactly_once: bool,
    how: Raw,
) -> Duration {
    let limits = EventLimits::default();
    let progress = redstream_sink::keys::progress_key(stream, SINK_ID);
    // Owned batches, cut before the clock starts and dropped inside the timed loop, as the
    // sink's are (`send_batch` takes its events by value).
    let chunks: Vec<Vec<Event>> = events.chunks(batch).map(<[Event]>::to_vec).collect();
    let started = Instant::now();
    let mut previous: Option<(String, String)> = None;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let position = i.to_string();
        let last = chunk.last().unwrap().id().to_string();
        let ids: usize = match how {
            Raw::Pipeline | Raw::Multi => {
                let mut pipe = redis::pipe();
                if matches!(how, Raw::Multi) {
                    pipe.atomic();
                }
                for event in &chunk {
                    let json = wire::encode(event, &limits).unwrap();
                    pipe.cmd("XADD").arg(stream).arg("*").arg("event").arg(json);
                }
                if exactly_once {
                    pipe.cmd("HSET")
                        .arg(&progress)
                        .arg("last_event_id")
                        .arg(&last)
                        .arg("position")
                        .arg(&position)
                        .ignore();
                }
                let ids: Vec<redis::Value> = pipe.query_async(conn).await.unwrap();
                ids.len()
            }
            Raw::Script => {
                let recorded = exactly_once.then(|| Progress {
                    key: &progress,
                    previous: previous.as_ref(),
                    last: &last,
                    position: &position,
                });
                raw_script_batch(conn, stream, recorded, &chunk).await
            }
        };
        assert_eq!(ids, chunk.len());
        previous = Some((last, position));
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
        // The raw side gets the sink's default response timeout (5 s), as an attempt of the
        // sink gives up after it: the same promise, and the same timer per call.
        let mut conn = server
            .client()
            .unwrap()
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(Duration::from_secs(5))),
            )
            .await
            .unwrap();
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .unwrap();
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .to_owned();
        let rounds = redstream_testkit::bench::rounds(ROUNDS);
        println!(
            "redstream-sink, {total} seed-sized events per run, median of {rounds} rounds, \
             private redis-server {version}"
        );
        let events: Vec<Event> = (0..total as u64).map(seed_event).collect();
        let mut run = 0;
        for batch in [100, 1_000] {
            for exactly_once in [true, false] {
                let sides = [Raw::Pipeline, Raw::Multi, Raw::Script];
                let mut ours = Vec::new();
                let mut theirs: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
                for round in 0..rounds {
                    run += 1;
                    let stream = format!("{{bench}}.sink.{run}");
                    let mut keys = vec![
                        stream.clone(),
                        redstream_sink::keys::progress_key(&stream, SINK_ID),
                    ];
                    // Alternate: redstream first in even rounds, last in odd ones.
                    if round % 2 == 0 {
                        ours.push(rate(
                            total,
                            sink_run(&server, &stream, &events, batch, exactly_once).await,
                        ));
                    }
                    for (side, how) in sides.iter().enumerate() {
                        let raw_stream = format!("{{bench}}.raw.{run}.{side}");
                        let took =
                            raw_run(&mut conn, &raw_stream, &events, batch, exactly_once, *how)
                                .await;
                        theirs[side].push(rate(total, took));
                        keys.push(redstream_sink::keys::progress_key(&raw_stream, SINK_ID));
                        keys.push(raw_stream);
                    }
                    if round % 2 == 1 {
                        ours.push(rate(
                            total,
                            sink_run(&server, &stream, &events, batch, exactly_once).await,
                        ));
                    }
                    del(&mut conn, &keys).await;
                }
                let name = format!(
                    "batch {batch}, exactly-once {}",
                    if exactly_once { "on" } else { "off" }
                );
                let labels = [
                    "raw pipelined XADDs",
                    "raw MULTI/EXEC XADDs",
                    "raw EVALSHA batch.lua",
                ];
                for (side, label) in labels.iter().enumerate() {
                    let ratios = Ratios::of(&ours, &theirs[side])
                        .expect("every round has a rate on each side, finite and above zero");
                    let head = if side == 0 {
                        format!("{name:<28} redstream {:>10.0} events/s", median(&ours))
                    } else {
                        String::new()
                    };
                    println!(
                        "{head:<58}   {label:<22} {:>10.0} events/s   ratio {ratios}",
                        median(&theirs[side]),
                    );
                }
            }
        }
    });
}
