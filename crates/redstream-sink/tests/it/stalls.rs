//! A stalled sink says so at the warning level, saying what it waits for and how long it has
//! been stalled: at once, then at most every 10 seconds however often it retries, and once more
//! when it writes again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redstream_core::{BatchSink, RetryPolicy, SourcePosition};
use redstream_sink::{Durability, RedisSink};
use redstream_testkit::RedisServer;

use crate::replicas::replica_of;
use crate::{config, events, ids, stream_ids, until_retrying};

/// Quick, unlimited retries: a stall's attempts come every few milliseconds.
fn retrying() -> RetryPolicy {
    RetryPolicy::unlimited()
        .with_initial_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(20))
}

/// The captured warnings about `stream` that contain `needle`.
fn warnings(stream: &str, needle: &str) -> Vec<String> {
    redstream_testkit::logged(needle)
        .into_iter()
        .filter(|line| line.contains(stream))
        .collect()
}

/// Waits, without sleeping, until `sink` has retried `n` times.
async fn until_retries(sink: &RedisSink, n: u64) {
    while sink.stats().retries < n {
        tokio::task::yield_now().await;
    }
}

/// The `failures=` count of a captured line.
fn failures(line: &str) -> u32 {
    line.split("failures=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no failure count in {line}"))
}

/// Checks the stall's warnings: at least one, at most one per 10 s begun, each saying what the
/// sink waits for; and one recovery line counting the failed attempts.
fn assert_warned(stream: &str, waiting_for: &str, started: Instant, retries: u64) {
    let stalled = warnings(stream, "sink stalled writing a batch");
    let allowed = 1 + started.elapsed().as_secs() / 10;
    assert!(
        (1..=allowed as usize).contains(&stalled.len()),
        "{} warnings in {:?} for {retries} retries: {stalled:?}",
        stalled.len(),
        started.elapsed()
    );
    for line in &stalled {
        assert!(line.contains(waiting_for), "{line}");
        assert!(line.contains("stalled_for="), "{line}");
    }
    let recovered = warnings(stream, "sink writing again after a stall");
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert!(
        u64::from(failures(&recovered[0])) >= retries,
        "{recovered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_stall_warns_once_and_when_it_ends() {
    redstream_testkit::capture_logs();
    let server = RedisServer::start().await.unwrap();
    let stream = "{stall-oom}.events";
    let sink =
        Arc::new(RedisSink::new(config(&server.url(), stream).with_retry(retrying())).unwrap());
    server
        .config_set("maxmemory-policy", "noeviction")
        .await
        .unwrap();
    server.config_set("maxmemory", "1").await.unwrap();
    let started = Instant::now();
    let batch = events(5);
    let task = tokio::spawn({
        let sink = Arc::clone(&sink);
        let batch = batch.clone();
        async move { sink.send_batch(batch, Some(SourcePosition::new("1"))).await }
    });
    until_retrying(&sink, &task).await;
    // Many attempts, each refused; one warning so far.
    until_retries(&sink, 20).await;
    let retries = sink.stats().retries;
    server.config_set("maxmemory", "0").await.unwrap();
    let ack = task.await.unwrap().unwrap();
    assert_eq!(ack.written, 5);
    let mut conn = server.connection().await.unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await, ids(&batch));
    assert_warned(stream, "waiting for memory on the server", started, retries);
}

/// `WAIT` finding too few replicas: the sink waits for them, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_durable_stall_warns_that_it_waits_for_replicas() {
    redstream_testkit::capture_logs();
    let primary = RedisServer::start().await.unwrap();
    let replica = replica_of(&primary).await;
    let stream = "{stall-wait}.events";
    let sink = Arc::new(
        RedisSink::new(
            config(&primary.url(), stream)
                .with_retry(retrying())
                .with_durability(Some(Durability::new(1, Duration::from_millis(20)))),
        )
        .unwrap(),
    );
    replica.pause().unwrap();
    let started = Instant::now();
    let batch = events(2);
    let task = tokio::spawn({
        let sink = Arc::clone(&sink);
        let batch = batch.clone();
        async move { sink.send_batch(batch, Some(SourcePosition::new("1"))).await }
    });
    until_retrying(&sink, &task).await;
    until_retries(&sink, 3).await;
    let retries = sink.stats().retries;
    replica.resume().unwrap();
    let ack = task.await.unwrap().unwrap();
    // Written by the first attempt, confirmed by a later one.
    assert_eq!(ack.written + ack.skipped_duplicates, 2);
    assert_warned(stream, "waiting for replicas", started, retries);
}
