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
//! | `consume+ack` | `subscribe` with a no-op handler, until every entry is handled | `XREADGROUP COUNT 100` + `wire::decode_stream_entry` + `XACK` per batch |

// A benchmark reports on stdout and stops loudly on failure.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redstream_core::wire::{self, EVENT_FIELD};
use redstream_core::{Event, EventLimits};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport, StartFrom, TransportOptions};
use tokio::sync::Notify;

use common::{del, raw_read_decode_ack};

const SHORT: u64 = 200;
const LONG: u64 = 1_200;
/// The growth over the recorded figure that `--check` refuses.
const TOLERANCE: f64 = 0.10;
const EVENT_TYPE: &str = "order.created";
const GROUP: &str = "bench";

/// The cases, each as (name, redstream's child case, raw redis-rs's child case).
const CASES: [(&str, &str, &str); 2] = [
    ("publish", "publish", "raw-publish"),
    ("consume+ack", "consume", "raw-consume"),
];

fn seed_event(n: u64) -> Event {
    common::seed_event(EVENT_TYPE, n)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Some(at) = args.iter().position(|a| a == "--case") {
        let case = &args[at + 1];
        let events: u64 = args[at + 2].parse().unwrap();
        runtime.block_on(child(case, events, &args[at + 3], &args[at + 4]));
        return ExitCode::SUCCESS;
    }
    let check = args.iter().any(|a| a == "--check");
    let record = args.iter().any(|a| a == "--record");
    runtime.block_on(driver(check, record))
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

/// The instructions callgrind counted for one run of `case` with `events` events.
fn count(case: &str, events: u64, url: &str, stream: &str, out: &Path) -> u64 {
    // `REDSTREAM_CALLGRIND_DIR` keeps each run's profile, for `callgrind_annotate`.
    let kept = std::env::var_os("REDSTREAM_CALLGRIND_DIR")
        .map(|dir| Path::new(&dir).join(format!("{case}-{events}.out")));
    let out = kept.as_deref().unwrap_or(out);
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("--dump-instr=no")
        .arg("--compress-strings=no")
        .arg(std::env::current_exe().unwrap())
        .args(["--case", case, &events.to_string(), url, stream])
        .output()
        .expect("valgrind could not be started (apt-get install valgrind)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{case} under callgrind failed:\n{stderr}"
    );
    stderr
        .lines()
        .find_map(|line| {
            let (_, total) = line.split_once("Collected :")?;
            total.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no 'Collected' line from callgrind:\n{stderr}"))
}

/// Instructions per event of `case`: the difference of a long and a short run.
async fn per_event(case: &str, server: &RedisServer, run: &mut u32, out: &Path) -> f64 {
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
            "publish" => prefix,
            _ => stream.clone(),
        };
        totals.push(count(case, events, &server.url(), &arg, out));
        del(&conn, &stream).await;
    }
    (totals[1] as f64 - totals[0] as f64) / (LONG - SHORT) as f64
}

fn baseline_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/instructions.baseline")
}

/// The recorded figures: `<case> <instructions per event>` per line, `#` comments.
fn read_baseline() -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(baseline_path()).unwrap_or_default();
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (case, figure) = line.rsplit_once(' ')?;
            Some((case.trim().to_owned(), figure.trim().parse().ok()?))
        })
        .collect()
}

async fn driver(check: bool, record: bool) -> ExitCode {
    let server = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("callgrind.out");
    println!(
        "redstream-transport, instructions per event (callgrind; runs of {LONG} minus {SHORT} events), \
         seed-sized events, redis-server on 127.0.0.1:{}",
        server.port()
    );
    let mut run = 0;
    let mut ours = Vec::new();
    for (name, case, raw_case) in CASES {
        let a = per_event(case, &server, &mut run, &out).await;
        let b = per_event(raw_case, &server, &mut run, &out).await;
        println!(
            "{name:<14} redstream {a:>9.0} instr/event   raw redis-rs {b:>9.0} instr/event   ratio {:.2}x",
            a / b
        );
        ours.push((name, a));
    }
    if record {
        let mut text = String::from(
            "# Instructions per event of redstream's hot paths, recorded by\n\
             # `cargo bench -p redstream-transport --bench instructions -- --record`.\n\
             # `-- --check` (CI) fails when a figure grows by more than 10%.\n",
        );
        for (name, figure) in &ours {
            text.push_str(&format!("{name} {figure:.0}\n"));
        }
        std::fs::write(baseline_path(), text).unwrap();
        println!("recorded in {}", baseline_path().display());
    }
    if check {
        let recorded = read_baseline();
        let mut failed = false;
        for (name, figure) in &ours {
            let Some((_, before)) = recorded.iter().find(|(case, _)| case == name) else {
                eprintln!(
                    "{name}: no recorded figure in {}",
                    baseline_path().display()
                );
                failed = true;
                continue;
            };
            let growth = figure / before - 1.0;
            let verdict = if growth > TOLERANCE { "FAIL" } else { "ok" };
            println!(
                "check {name:<14} {figure:.0} against recorded {before:.0}: {:+.1}% {verdict}",
                growth * 100.0
            );
            failed |= growth > TOLERANCE;
        }
        if failed {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
