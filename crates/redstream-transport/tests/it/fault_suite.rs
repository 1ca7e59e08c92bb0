//! The fault suite's publishing cases, with their figures printed: 10,000 events from 50 tasks
//! while redis-server (AOF, `appendfsync always`) is SIGKILLed and restarted at one third and at
//! one half, and publishing into a server out of memory. No acknowledged event may be lost, and
//! an event may be in the stream twice only when a publish of it failed ambiguously (its reply
//! lost: `Connection` or `Timeout`) and was retried.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::streams::StreamRangeReply;
use redstream_core::{Error, ErrorKind};
use redstream_testkit::RedisServer;
use redstream_transport::RedisTransport;

use crate::support::{event, fast, number, transport, unique, until, within};

const EVENTS: usize = 10_000;
const TASKS: usize = 50;

#[derive(Default)]
struct Counts {
    acknowledged: AtomicUsize,
    ambiguous: AtomicUsize,
    not_sent: AtomicUsize,
    refused_by_breaker: AtomicUsize,
    out_of_memory: AtomicUsize,
}

/// `total` numbered events from `tasks` tasks, each retrying until its publish is acknowledged
/// and counting every failure by what it says about the write.
fn spawn_publishers(
    publisher: &RedisTransport,
    counts: &Arc<Counts>,
    total: usize,
    tasks: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|task| {
            let (publisher, counts) = (publisher.clone(), Arc::clone(counts));
            tokio::spawn(async move {
                for n in (task..total).step_by(tasks) {
                    loop {
                        match publisher.publish(event("fault.entry", n)).await {
                            Ok(_) => break,
                            Err(Error::CircuitOpen { retry_after }) => {
                                counts.refused_by_breaker.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(retry_after).await;
                            }
                            Err(err) => {
                                assert!(err.is_retryable(), "{err}");
                                let counter = if err.to_string().contains("nothing was sent") {
                                    &counts.not_sent
                                } else if err.kind() == ErrorKind::OutOfMemory {
                                    &counts.out_of_memory
                                } else {
                                    assert!(
                                        matches!(
                                            err.kind(),
                                            ErrorKind::Connection | ErrorKind::Timeout
                                        ),
                                        "{err}"
                                    );
                                    &counts.ambiguous
                                };
                                counter.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                    counts.acknowledged.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

/// How many times each event number is in `stream`.
async fn copies(server: &RedisServer, stream: &str) -> HashMap<usize, usize> {
    let mut conn = server.connection().await.unwrap();
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut copies: HashMap<usize, usize> = HashMap::new();
    for entry in &reply.ids {
        let envelope: String = entry.get("event").unwrap();
        let event = redstream_core::wire::decode_envelope(
            envelope.as_bytes(),
            &redstream_core::EventLimits::default(),
        )
        .unwrap();
        *copies.entry(number(&event)).or_default() += 1;
    }
    copies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_publishers_across_two_kills_lose_nothing() {
    let server = RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .unwrap();
    let prefix = unique("fault-publish");
    let publisher = transport(
        &server,
        &prefix,
        "g",
        fast().with_response_timeout(Duration::from_secs(2)),
    )
    .await;
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let tasks = spawn_publishers(&publisher, &counts, EVENTS, TASKS);
    for fraction in [3, 2] {
        until("publishing to reach the kill point", || async {
            counts.acknowledged.load(Ordering::Relaxed) >= EVENTS / fraction
        })
        .await;
        server.kill().unwrap();
        server.restart().await.unwrap();
    }
    for task in tasks {
        within("the publishers", task).await.unwrap();
    }
    let elapsed = started.elapsed();

    let copies = copies(&server, &publisher.names().stream("fault.entry")).await;
    let lost = (0..EVENTS).filter(|n| !copies.contains_key(n)).count();
    let duplicates: usize = copies.values().map(|c| c - 1).sum();
    let ambiguous = counts.ambiguous.load(Ordering::Relaxed);
    println!(
        "fault suite, publishing: {EVENTS} events from {TASKS} tasks, 2 SIGKILL restarts (AOF \
         always) in {elapsed:?}: acknowledged {}, lost {lost}, duplicates {duplicates}, \
         ambiguous errors {ambiguous}, errors with nothing sent {}, breaker refusals {}",
        counts.acknowledged.load(Ordering::Relaxed),
        counts.not_sent.load(Ordering::Relaxed),
        counts.refused_by_breaker.load(Ordering::Relaxed),
    );
    assert_eq!(counts.acknowledged.load(Ordering::Relaxed), EVENTS);
    assert_eq!(lost, 0);
    assert!(
        duplicates <= ambiguous,
        "{duplicates} duplicates, {ambiguous} ambiguous errors"
    );
}

/// The server runs out of memory while 2,000 events are being published from 10 tasks: every
/// publish is refused with `OutOfMemory` (nothing written) until memory is freed, and then
/// every event is in the stream exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_into_a_full_server_loses_and_doubles_nothing() {
    const OOM_EVENTS: usize = 2_000;
    let server = RedisServer::start().await.unwrap();
    let publisher = transport(&server, &unique("fault-oom"), "g", fast()).await;
    let counts = Arc::new(Counts::default());
    let tasks = spawn_publishers(&publisher, &counts, OOM_EVENTS, 10);
    until("a third published", || async {
        counts.acknowledged.load(Ordering::Relaxed) >= OOM_EVENTS / 3
    })
    .await;
    server.config_set("maxmemory", "1").await.unwrap();
    until("publishes refused for memory", || async {
        counts.out_of_memory.load(Ordering::Relaxed) >= 20
    })
    .await;
    server.config_set("maxmemory", "0").await.unwrap();
    for task in tasks {
        within("the publishers", task).await.unwrap();
    }
    let copies = copies(&server, &publisher.names().stream("fault.entry")).await;
    let lost = (0..OOM_EVENTS).filter(|n| !copies.contains_key(n)).count();
    let duplicates: usize = copies.values().map(|c| c - 1).sum();
    println!(
        "fault suite, OOM while publishing: {OOM_EVENTS} events from 10 tasks: lost {lost}, \
         duplicates {duplicates}, refused for memory {}, breaker refusals {}",
        counts.out_of_memory.load(Ordering::Relaxed),
        counts.refused_by_breaker.load(Ordering::Relaxed),
    );
    assert_eq!(lost, 0);
    assert_eq!(
        duplicates,
        counts.ambiguous.load(Ordering::Relaxed).min(duplicates)
    );
    assert_eq!(
        duplicates, 0,
        "an OOM refusal writes nothing, so nothing is retried twice"
    );
}
