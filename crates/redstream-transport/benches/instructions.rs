//! Instructions per event, counted by callgrind: redstream next to raw redis-rs doing the same
//! work, for one `publish` and for consume + ack. Instruction counts do not depend on how busy
//! the machine is, so they are the stable figure on a noisy 2-core machine where throughput
//! moves by 20% from run to run.
//!
//! `cargo bench -p redstream-transport --bench instructions` prints the table;
//! `... --bench instructions -- --check` also compares redstream's figures with those recorded
//! in `benches/instructions.baseline` and fails when one grew by more than 10% (CI runs this).
//! `... -- --record` rewrites that file. With `REDSTREAM_CALLGRIND_DIR=<dir>` each run's
//! profile is kept there (`consume-1200.out`...) for `callgrind_annotate --inclusive=yes`.
//!
//! How: this binary runs itself under `valgrind --tool=callgrind` as a child that does one case
//! (`--case <name> <events> <url> <stream>`) on a current-thread runtime and exits. Each case runs
//! twice, with 200 and with 1,200 events; the difference of the two totals divided by 1,000 is
//! the cost of one event, with the process's start, the runtime, the connection and the
//! subscription's start cancelled out. The redis-server (started here, outside valgrind) and the
//! kernel are not counted. The consumer's timers (claims, keep-alive) are set to an hour so that
//! nothing runs by the clock, which would tie the count to how slowly valgrind runs.
//!
//! | case | redstream | raw redis-rs |
//! |---|---|---|
//! | `publish` | `RedisTransport::publish` of a seed-sized event, one after another | `wire::encode` + `XADD` on a `MultiplexedConnection`, one after another |
//! | `publish_batch` | `RedisTransport::publish_batch` of a vector of 100 seed-sized events | the same vector, each event `wire::encode`d (and dropped) into an `EVALSHA` of the transport's `publish_batch.lua` with the same arguments, the ids split |
//! | `consume+ack` | `subscribe` with a no-op handler, until every entry is handled | `XREADGROUP COUNT 100` + `wire::decode_stream_entry` + `XACK` per batch |

// A benchmark reports on stdout and stops loudly on failure.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)]

mod common;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redstream_core::wire::{self, EVENT_FIELD};
use redstream_core::{Event, EventLimits};
use redstream_testkit::RedisServer;
use redstream_testkit::callgrind::{Baseline, Callgrind, Run, per_unit};
use redstream_transport::{RedisConfig, RedisTransport, StartFrom, TransportOptions};
use tokio::sync::Notify;

use common::{del, raw_read_decode_ack};

const SHORT: u64 = 200;
const LONG: u64 = 1_200;
const EVENT_TYPE: &str = "order.created";
const GROUP: &str = "bench";

/// The cases, each as (name, redstream's child case, raw redis-rs's child case).
const CASES: [(&str, &str, &str); 3] = [
    ("publish", "publish", "raw-publish"),
    ("publish_batch", "batch", "raw-batch"),
    ("consume+ack", "consume", "raw-consume"),
];

/// Events per `publish_batch` in the `publish_batch` case (both runs are whole batches).
const BATCH: u64 = 100;

fn seed_event(n: u64) -> Event {
    common::seed_event(EVENT_TYPE, n)
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let flags = match Run::from_args() {
        Run::Child { case, args } => {
            let events: u64 = args[0].parse().unwrap();
            runtime.block_on(child(&case, events, &args[1], &args[2]));
            return ExitCode::SUCCESS;
        }
        Run::Driver(flags) => flags,
    };
    let ours = runtime.block_on(driver());
    let baseline = Baseline::new(
        env!("CARGO_MANIFEST_DIR"),
        "# Instructions per event of redstream's hot paths, recorded by\n\
         # `cargo bench -p redstream-transport --bench instructions -- --record`.\n\
         # `-- --check` (CI) fails when a figure grows by more than 10%.\n",
    );
    baseline.apply(&ours, flags)
}

// ----- the child: one case, under callgrind --------------------------------------------------

fn options() -> TransportOptions {
    TransportOptions::default()
        .with_start_from(StartFrom::Beginning)
        .with_claim_interval(Duration::from_secs(3600))
        .with_claim_idle_time(Duration::from_secs(3600))
        .with_block_time(Duration::from_secs(5))
}

async fn transport(url: &str, prefix: &str) -> RedisTransport {
    RedisTransport::with_options(
        RedisConfig::default()
            .with_url(url)
            .with_stream_prefix(prefix)
            .with_consumer_group(GROUP)
            .with_consumer_name("bench"),
        options(),
    )
    .await
    .unwrap()
}

async fn child(case: &str, events: u64, url: &str, stream: &str) {
    match case {
        "publish" => {
            let transport = transport(url, stream).await;
            for n in 0..events {
                transport.publish(seed_event(n)).await.unwrap();
            }
        }
        "raw-publish" => {
            let mut conn = raw_connection(url).await;
            for n in 0..events {
                // The same bytes the transport writes: the encoded envelope.
                let envelope = wire::encode(&seed_event(n), &EventLimits::default()).unwrap();
                let _: String = redis::cmd("XADD")
                    .arg(stream)
                    .arg("*")
                    .arg(EVENT_FIELD)
                    .arg(envelope)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }
        "batch" => {
            let transport = transport(url, stream).await;
            for first in (0..events).step_by(BATCH as usize) {
                let batch = (first..first + BATCH).map(seed_event).collect();
                transport.publish_batch(batch).await.unwrap();
            }
        }
        "raw-batch" => {
            let script = redis::Script::new(include_str!("../src/publish_batch.lua"));
            let mut conn = raw_connection(url).await;
            for first in (0..events).step_by(BATCH as usize) {
                // The transport's arguments: the stream; the envelopes; then the stream's
                // MAXLEN, none.
                // The batch as `publish_batch` is given it: a vector of events.
                let batch: Vec<Event> = (first..first + BATCH).map(seed_event).collect();
                let mut invocation = script.prepare_invoke();
                invocation.key(stream);
                for event in batch {
                    let envelope = wire::encode(&event, &EventLimits::default()).unwrap();
                    drop(event);
                    invocation.arg(envelope);
                }
                invocation.arg(0);
                let ids: String = invocation.invoke_async(&mut conn).await.unwrap();
                let ids: Vec<String> = ids.split(' ').map(str::to_owned).collect();
                assert_eq!(ids.len() as u64, BATCH);
            }
        }
        "consume" => {
            // `stream` is the prefix here: the stream is `<prefix>:order.created`.
            let transport = transport(url, stream).await;
            let handled = Arc::new(AtomicU64::new(0));
            let done = Arc::new(Notify::new());
            let handle = {
                let handled = Arc::clone(&handled);
                let done = Arc::clone(&done);
                transport
                    .subscribe(vec![EVENT_TYPE.into()], move |_event: Event| {
                        let handled = Arc::clone(&handled);
                        let done = Arc::clone(&done);
                        async move {
                            if handled.fetch_add(1, Ordering::Relaxed) + 1 == events {
                                done.notify_one();
                            }
                            Ok(())
                        }
                    })
                    .await
                    .unwrap()
            };
            done.notified().await;
            transport.unsubscribe(&handle).await.unwrap();
        }
        "raw-consume" => {
            let mut conn = raw_connection(url).await;
            let mut handled = 0;
            while handled < events {
                // No-op on each decoded event, as the transport's handler is.
                handled += raw_read_decode_ack(&mut conn, stream, GROUP, "bench", 5000, drop).await;
            }
        }
        other => panic!("unknown case {other}"),
    }
}

async fn raw_connection(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

// ----- the driver ----------------------------------------------------------------------------

/// Fills `stream` with `events` encoded seed events and creates the group at its start.
async fn fill(conn: &mut MultiplexedConnection, stream: &str, events: u64) {
    del(conn, stream).await;
    let mut pipe = redis::pipe();
    for n in 0..events {
        let envelope = wire::encode(&seed_event(n), &EventLimits::default()).unwrap();
        pipe.cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(EVENT_FIELD)
            .arg(envelope)
            .ignore();
    }
    pipe.cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("0")
        .ignore();
    let () = pipe.query_async(conn).await.unwrap();
}

/// Instructions per event of `case`: the difference of a long and a short run.
async fn per_event(case: &str, server: &RedisServer, run: &mut u32, callgrind: &Callgrind) -> f64 {
    let mut conn = server.connection().await.unwrap();
    let mut totals = Vec::new();
    for events in [SHORT, LONG] {
        *run += 1;
        let prefix = format!("i{run}");
        let stream = format!("{prefix}:{EVENT_TYPE}");
        let arg = match case {
            "consume" => {
                fill(&mut conn, &stream, events).await;
                prefix
            }
            "raw-consume" => {
                fill(&mut conn, &stream, events).await;
                stream.clone()
            }
            "publish" | "batch" => prefix,
            _ => stream.clone(),
        };
        let args = [events.to_string(), server.url(), arg];
        totals.push(callgrind.count(&format!("{case}-{events}"), case, &args));
        del(&conn, &stream).await;
    }
    per_unit(totals[0], totals[1], LONG - SHORT)
}

/// Prints the table; returns redstream's figure per case.
async fn driver() -> Vec<(&'static str, f64)> {
    let server = RedisServer::start().await.unwrap();
    let callgrind = Callgrind::new();
    println!(
        "redstream-transport, instructions per event (callgrind; runs of {LONG} minus {SHORT} events), \
         seed-sized events, redis-server on 127.0.0.1:{}",
        server.port()
    );
    let mut run = 0;
    let mut ours = Vec::new();
    for (name, case, raw_case) in CASES {
        let a = per_event(case, &server, &mut run, &callgrind).await;
        let b = per_event(raw_case, &server, &mut run, &callgrind).await;
        println!(
            "{name:<14} redstream {a:>9.0} instr/event   raw redis-rs {b:>9.0} instr/event   ratio {:.2}x",
            a / b
        );
        ours.push((name, a));
    }
    ours
}
