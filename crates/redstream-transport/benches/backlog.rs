//! Memory under a backlog: a subscription started on a stream that already holds 100,000 and
//! then 1,000,000 seed-sized entries, each in a fresh process, reports how much its resident
//! memory grew (peak, `VmHWM`, over the figure once connected) while it consumed the whole
//! backlog. The reader stops reading while the buffer (`backpressure.max_queue_size`) is full,
//! so the growth depends on the buffer and `read_count`, not on the backlog: both figures
//! should be about the same.
//!
//! `cargo bench -p redstream-transport --bench backlog` (`REDSTREAM_BENCH_BACKLOG=<n>` for
//! another largest backlog). Linux only (`/proc/self/status`).

// A benchmark reports on stdout and stops loudly on failure.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

mod common;

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use redstream_core::wire::{self, EVENT_FIELD};
use redstream_core::{BackpressureConfig, Event, EventLimits};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport, StartFrom, TransportOptions};
use tokio::sync::Notify;

use common::{del, seed_event};

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// The child: consumes `backlog` entries of `<prefix>:order.created` and prints
/// `<rss once connected> <peak rss> <seconds>` in KiB.
async fn child(url: &str, prefix: &str, backlog: u64) {
    let transport = RedisTransport::with_options(
        RedisConfig::default()
            .with_url(url)
            .with_stream_prefix(prefix)
            .with_consumer_group("g")
            .with_consumer_name("c"),
        TransportOptions::default().with_start_from(StartFrom::Beginning),
    )
    .await
    .unwrap();
    transport.ping().await.unwrap();
    let connected = status_kib("VmRSS");
    let handled = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let started = Instant::now();
    let handle = {
        let handled = Arc::clone(&handled);
        let done = Arc::clone(&done);
        transport
            .subscribe(vec!["order.created".into()], move |_event: Event| {
                let handled = Arc::clone(&handled);
                let done = Arc::clone(&done);
                async move {
                    if handled.fetch_add(1, Ordering::Relaxed) + 1 == backlog {
                        done.notify_one();
                    }
                    Ok(())
                }
            })
            .await
            .unwrap()
    };
    done.notified().await;
    let elapsed = started.elapsed();
    let peak = status_kib("VmHWM");
    transport.unsubscribe(&handle).await.unwrap();
    println!("{connected} {peak} {:.1}", elapsed.as_secs_f64());
}

/// Writes `backlog` encoded seed events to `stream`, 10,000 per pipeline.
async fn fill(server: &RedisServer, stream: &str, backlog: u64) {
    let mut conn = server.connection().await.unwrap();
    let limits = EventLimits::default();
    let mut n = 0;
    while n < backlog {
        let mut pipe = redis::pipe();
        for i in n..(n + 10_000).min(backlog) {
            let envelope = wire::encode(&seed_event("order.created", i), &limits).unwrap();
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg(EVENT_FIELD)
                .arg(envelope)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
        n += 10_000;
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        let backlog = args[at + 3].parse().unwrap();
        runtime.block_on(child(&args[at + 1], &args[at + 2], backlog));
        return ExitCode::SUCCESS;
    }
    let largest: u64 = std::env::var("REDSTREAM_BENCH_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    runtime.block_on(async move {
        let server = RedisServer::start().await.unwrap();
        let queue = BackpressureConfig::default().max_queue_size;
        let read_count = TransportOptions::default().read_count;
        println!(
            "redstream-transport, resident memory while one subscription consumes a backlog \
             (seed-sized entries, buffer of {queue}, read_count {read_count}, no-op handler)"
        );
        for (run, backlog) in [largest / 10, largest].into_iter().enumerate() {
            let prefix = format!("backlog{run}");
            let stream = format!("{prefix}:order.created");
            fill(&server, &stream, backlog).await;
            let output = Command::new(std::env::current_exe().unwrap())
                .args(["--child", &server.url(), &prefix, &backlog.to_string()])
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "the consuming process failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let text = String::from_utf8_lossy(&output.stdout);
            let figures: Vec<&str> = text.split_whitespace().collect();
            let connected: f64 = figures[0].parse().unwrap();
            let peak: f64 = figures[1].parse().unwrap();
            println!(
                "backlog {backlog:>9}   RSS once connected {:>6.1} MiB   peak while consuming {:>6.1} MiB   \
                 growth {:>5.1} MiB   ({}s)",
                connected / 1024.0,
                peak / 1024.0,
                (peak - connected) / 1024.0,
                figures[2]
            );
            del(&server.connection().await.unwrap(), &stream).await;
        }
    });
    ExitCode::SUCCESS
}
