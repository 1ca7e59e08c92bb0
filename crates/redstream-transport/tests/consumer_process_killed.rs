//! Fault suite: a consumer *process* killed with SIGKILL while its handlers run; another consumer
//! of the group claims and handles every entry the dead one held.
//!
//! A test binary without the standard harness (`harness = false`), so that it can run itself as
//! the consumer that is killed: `consumer_process_killed --doomed <url> <prefix>` subscribes as
//! the consumer `doomed` with handlers that never finish, and prints `started <n>` for each event
//! it begins. Run without arguments, it is the test: it starts a private redis-server, publishes
//! the events, starts itself as the doomed consumer, kills it with SIGKILL once its handlers are
//! running, and checks that a survivor handles every event, leaving nothing pending. It prints
//! its figures.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use redstream_core::{Event, EventMetadata, HandlerResult};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport, StartFrom, TransportOptions};
use serde_json::json;
use tokio::sync::mpsc;

const EVENTS: usize = 40;
const EVENT_TYPE: &str = "job";
const GROUP: &str = "workers";
/// Handlers the doomed consumer runs at once: the entries it holds when killed.
const DOOMED_CONCURRENCY: usize = 8;
/// How long the test waits for anything before it fails as hung. Never a performance limit.
const HANG: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match args.first().map(String::as_str) {
        Some("--doomed") => runtime.block_on(doomed(&args[1], &args[2])),
        // `cargo test` passes harness options (`--nocapture`, a filter...); a list request
        // must list nothing rather than run the suite.
        Some("--list") => {}
        _ => runtime.block_on(killed_consumer_entries_are_claimed()),
    }
    ExitCode::SUCCESS
}

fn config(url: &str, prefix: &str, consumer: &str) -> RedisConfig {
    RedisConfig::default()
        .with_url(url)
        .with_stream_prefix(prefix)
        .with_consumer_group(GROUP)
        .with_consumer_name(consumer)
}

/// The consumer that is killed: reads from the beginning, claims nothing of others (an hour of
/// idle time), and never finishes a handler.
async fn doomed(url: &str, prefix: &str) {
    let options = TransportOptions::default()
        .with_start_from(StartFrom::Beginning)
        .with_handler_concurrency(DOOMED_CONCURRENCY)
        .with_claim_idle_time(Duration::from_secs(3600));
    let transport = RedisTransport::with_options(config(url, prefix, "doomed"), options)
        .await
        .unwrap();
    transport
        .subscribe(vec![EVENT_TYPE.to_owned()], |event: Event| async move {
            println!("started {}", event.payload()["n"]);
            std::future::pending::<HandlerResult>().await
        })
        .await
        .unwrap();
    std::future::pending::<()>().await;
}

/// The doomed consumer's process, killed on drop too, so that a failing test leaves none behind.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `(id, consumer)` of every pending entry of the group.
async fn pending(server: &RedisServer, stream: &str) -> Vec<(String, String)> {
    let mut conn = server.connection().await.unwrap();
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(1000)
        .query_async(&mut conn)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(id, consumer, _, _)| (id, consumer))
        .collect()
}

async fn killed_consumer_entries_are_claimed() {
    let server = RedisServer::start().await.unwrap();
    let prefix = format!("killed-{}", std::process::id());
    let publisher = RedisTransport::new(config(&server.url(), &prefix, "publisher"))
        .await
        .unwrap();
    for n in 0..EVENTS {
        publisher
            .publish(Event::new(
                EVENT_TYPE,
                json!({ "n": n }),
                EventMetadata::default(),
            ))
            .await
            .unwrap();
    }
    let stream = publisher.names().stream(EVENT_TYPE);

    let mut child = Killed(
        Command::new(std::env::current_exe().unwrap())
            .args(["--doomed", &server.url(), &prefix])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (started_tx, mut started) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if started_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Its handlers are running: every one of them is an entry delivered and not acknowledged.
    for _ in 0..DOOMED_CONCURRENCY {
        let line = tokio::time::timeout(HANG, started.recv())
            .await
            .expect("the doomed consumer's handlers did not start")
            .expect("the doomed consumer exited");
        assert!(line.starts_with("started "), "{line}");
    }
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let killed_at = Instant::now();
    let held: BTreeSet<String> = pending(&server, &stream)
        .await
        .into_iter()
        .filter(|(_, consumer)| consumer == "doomed")
        .map(|(id, _)| id)
        .collect();
    assert!(
        held.len() >= DOOMED_CONCURRENCY,
        "the killed consumer held {} entries, fewer than its running handlers",
        held.len()
    );

    let (handled_tx, mut handled) = mpsc::unbounded_channel::<u64>();
    let survivor_options = TransportOptions::default()
        .with_start_from(StartFrom::Beginning)
        .with_block_time(Duration::from_millis(200))
        .with_claim_idle_time(Duration::from_millis(500))
        .with_claim_interval(Duration::from_millis(100));
    let survivor =
        RedisTransport::with_options(config(&server.url(), &prefix, "survivor"), survivor_options)
            .await
            .unwrap();
    let subscription = survivor
        .subscribe(vec![EVENT_TYPE.to_owned()], move |event: Event| {
            let _ = handled_tx.send(event.payload()["n"].as_u64().unwrap());
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    let mut seen = BTreeSet::new();
    while seen.len() < EVENTS {
        let n = tokio::time::timeout(HANG, handled.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {EVENTS} events handled", seen.len()))
            .unwrap();
        seen.insert(n);
    }
    let all_handled_after = killed_at.elapsed();
    survivor.unsubscribe(&subscription).await.unwrap();
    let left = pending(&server, &stream).await;
    assert!(left.is_empty(), "still pending: {left:?}");
    assert_eq!(seen, (0..EVENTS as u64).collect::<BTreeSet<_>>());
    println!(
        "consumer process killed (SIGKILL) holding {} of {EVENTS} entries: all {EVENTS} handled \
         by another consumer {all_handled_after:?} after the kill (claim idle time 500 ms), \
         nothing left pending",
        held.len()
    );
}
