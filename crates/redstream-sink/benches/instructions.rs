//! Instructions per event, counted by callgrind: the sink next to raw redis-rs doing the same
//! work, for batches of 100 and of 1,000 seed-sized events with exactly-once on. Instruction
//! counts do not move with the load of the machine, so they are the figure to compare across
//! commits on a noisy 2-core machine (the throughput bench, `sink`, moves by 10-30% from run to
//! run).
//!
//! `cargo bench -p redstream-sink --bench instructions`. With `REDSTREAM_CALLGRIND_DIR=<dir>`
//! each run's profile is kept there (`sink-100-120.out`...) for `callgrind_annotate
//! --inclusive=yes`. `... -- --check` also compares the sink's figures with those recorded in
//! `benches/instructions.baseline` and fails when one grew by more than 10%, as the
//! transport's bench does; `... -- --record` rewrites that file.
//!
//! How (as the transport's and the state store's `instructions` benches): this binary runs
//! itself under `valgrind --tool=callgrind` as a child doing one case (`--case <name> <batch>
//! <batches> <url> <stream>`) on a current-thread runtime, once with a short and once with a
//! long run of batches (12 times as many); the difference of the two totals over the events in
//! between is one event's cost, with the start, the runtime, the connection and the first
//! batch's read of the progress key cancelled out. The redis-server and the kernel are not
//! counted.
//!
//! | case | redstream | raw redis-rs |
//! |---|---|---|
//! | `batch N, exactly-once on` | `RedisSink::send_batch` of N events with a position: one `EVALSHA` of `batch.lua` | `wire::encode` of the N events + `EVALSHA` of the sink's own `batch.lua` with its arguments built by hand (redis-rs's `Script`), the progress it expects and records tracked as the sink does |
//!
//! Both sides build the same events (`Event::new`) in the counted loop and own them, so the
//! ratio is the sink's own cost: validation, bookkeeping, its connection and its retry wrapper.

// A benchmark reports on stdout and stops loudly on failure.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

mod common;

use std::process::ExitCode;
use std::time::Duration;

use common::{Progress, SINK_ID, raw_script_batch, seed_event};
use redis::aio::MultiplexedConnection;
use redstream_core::{BatchSink, Event, SourcePosition};
use redstream_sink::{RedisSink, SinkConfig};
use redstream_testkit::RedisServer;
use redstream_testkit::callgrind::{Baseline, Callgrind, Run, per_unit};

/// Events per short and per long run, whatever the batch size: runs of 12,000 minus 1,000.
const SHORT_EVENTS: u64 = 1_000;
const LONG_EVENTS: u64 = 12_000;

/// (name, batch size, redstream's child case, raw redis-rs's child case).
const CASES: [(&str, u64, &str, &str); 2] = [
    ("batch 100, exactly-once on", 100, "sink", "raw-script"),
    ("batch 1000, exactly-once on", 1_000, "sink", "raw-script"),
];

fn batch_of(size: u64, number: u64) -> Vec<Event> {
    (0..size).map(|k| seed_event(number * size + k)).collect()
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let flags = match Run::from_args() {
        Run::Child { case, args } => {
            let size: u64 = args[0].parse().unwrap();
            let batches: u64 = args[1].parse().unwrap();
            runtime.block_on(child(&case, size, batches, &args[2], &args[3]));
            return ExitCode::SUCCESS;
        }
        Run::Driver(flags) => flags,
    };
    let ours = runtime.block_on(driver());
    Baseline::new(
        env!("CARGO_MANIFEST_DIR"),
        "# Instructions per event of the sink's batches, recorded by\n\
         # `cargo bench -p redstream-sink --bench instructions -- --record`.\n\
         # `-- --check` fails when a figure grows by more than 10%.\n",
    )
    .with_name_width(28)
    .apply(&ours, flags)
}

async fn child(case: &str, size: u64, batches: u64, url: &str, stream: &str) {
    match case {
        "sink" => {
            let config = SinkConfig::new(SINK_ID, url, stream)
                .with_max_batch_events(size as usize)
                .with_exactly_once(true);
            let sink = RedisSink::new(config).unwrap();
            for number in 0..batches {
                let ack = sink
                    .send_batch(
                        batch_of(size, number),
                        Some(SourcePosition::new(number.to_string())),
                    )
                    .await
                    .unwrap();
                assert_eq!(ack.written, size as usize);
            }
        }
        "raw-script" => {
            // The sink's default response timeout (5 s): the same promise, the same timer.
            let mut conn = redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection_with_config(
                    &redis::AsyncConnectionConfig::new()
                        .set_response_timeout(Some(Duration::from_secs(5))),
                )
                .await
                .unwrap();
            let progress = redstream_sink::keys::progress_key(stream, SINK_ID);
            let mut previous: Option<(String, String)> = None;
            for number in 0..batches {
                let events = batch_of(size, number);
                previous =
                    Some(raw_batch(&mut conn, stream, &progress, &events, number, previous).await);
            }
        }
        other => panic!("unknown case {other}"),
    }
}

/// One batch through `batch.lua`, expecting the progress `previous` left; returns the
/// progress it recorded.
async fn raw_batch(
    conn: &mut MultiplexedConnection,
    stream: &str,
    progress: &str,
    events: &[Event],
    number: u64,
    previous: Option<(String, String)>,
) -> (String, String) {
    let position = number.to_string();
    let last = events.last().unwrap().id().to_string();
    let recorded = Progress {
        key: progress,
        previous: previous.as_ref(),
        last: &last,
        position: &position,
    };
    let written = raw_script_batch(conn, stream, Some(recorded), events).await;
    assert_eq!(written, events.len());
    (last, position)
}

/// Instructions per event of `case` at batches of `size`: the difference of a long and a
/// short run, each on a stream of its own.
async fn per_event(
    case: &str,
    size: u64,
    server: &RedisServer,
    conn: &mut MultiplexedConnection,
    callgrind: &Callgrind,
) -> f64 {
    let mut totals = Vec::new();
    for events in [SHORT_EVENTS, LONG_EVENTS] {
        let stream = format!("{{bench}}.{case}.{size}.{events}");
        let batches = events / size;
        let args = [
            size.to_string(),
            batches.to_string(),
            server.url(),
            stream.clone(),
        ];
        totals.push(callgrind.count(&format!("{case}-{size}-{batches}"), case, &args));
        let progress = redstream_sink::keys::progress_key(&stream, SINK_ID);
        let () = redis::cmd("DEL")
            .arg(&stream)
            .arg(&progress)
            .query_async(conn)
            .await
            .unwrap();
    }
    per_unit(totals[0], totals[1], LONG_EVENTS - SHORT_EVENTS)
}

/// Prints the table; returns the sink's figure per case.
async fn driver() -> Vec<(&'static str, f64)> {
    let server = RedisServer::start().await.unwrap();
    let mut conn = server.connection().await.unwrap();
    let callgrind = Callgrind::new();
    println!(
        "redstream-sink, instructions per event (callgrind; runs of {LONG_EVENTS} minus \
         {SHORT_EVENTS} seed-sized events), redis-server on 127.0.0.1:{}",
        server.port()
    );
    let mut counted = Vec::new();
    for (name, size, case, raw_case) in CASES {
        let ours = per_event(case, size, &server, &mut conn, &callgrind).await;
        let raw = per_event(raw_case, size, &server, &mut conn, &callgrind).await;
        println!(
            "{name:<28} redstream {ours:>8.0} instr/event   raw EVALSHA batch.lua {raw:>8.0} instr/event   ratio {:.2}x",
            ours / raw
        );
        counted.push((name, ours));
    }
    counted
}
