//! Integration tests of `redstream-sink` against private `redis-server`s.

// Tests unwrap (STYLE.md); clippy's allow-unwrap-in-tests covers `#[test]` functions only, not
// the helpers next to them.
#![allow(clippy::unwrap_used)]

mod checkpoint;
mod delivery;
mod failures;
mod late_exec;
mod lost_reply;
mod metrics;
mod permissions;
mod progress_key;
mod python_consumer;
mod recovery;
mod replicas;
mod runner;
mod stalls;
mod timeouts;
mod topologies;

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redstream_core::{Event, EventMetadata, RetryPolicy};
use redstream_sink::SinkConfig;

/// `n` events of type `test.event` with payload `{"n": i}`.
pub(crate) fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            Event::new(
                "test.event",
                serde_json::json!({ "n": i }),
                EventMetadata::default(),
            )
        })
        .collect()
}

/// A configuration with quick retries.
pub(crate) fn config(url: &str, stream: &str) -> SinkConfig {
    SinkConfig::new("test-sink", url, stream).with_retry(
        RetryPolicy::default()
            .with_initial_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_millis(50)),
    )
}

/// The event ids found in `stream`, read as seed 003's consumers read them: the `event` field
/// JSON-decoded, then its `id`.
pub(crate) async fn stream_ids(conn: &mut MultiplexedConnection, stream: &str) -> Vec<String> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|(_, fields)| {
            let (name, value) = fields.into_iter().next().unwrap();
            assert_eq!(name, "event");
            let json: serde_json::Value = serde_json::from_str(&value).unwrap();
            json["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// The ids of `events`, as strings.
pub(crate) fn ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.id().to_string()).collect()
}

/// Waits, without sleeping, until `sink` has retried at least once: the proof that a failure
/// is in progress and being retried. `task` is the one sending through `sink`: if it ends
/// without a retry (the sink failed fast, or the failure never happened), this panics instead
/// of spinning for ever.
pub(crate) async fn until_retrying<T>(
    sink: &redstream_sink::RedisSink,
    task: &tokio::task::JoinHandle<T>,
) {
    loop {
        // Finished first, then retries: a task that retried and then finished is not a failure.
        let finished = task.is_finished();
        if sink.stats().retries > 0 {
            return;
        }
        assert!(
            !finished,
            "the batch ended without a single retry: {:?}",
            sink.stats()
        );
        tokio::task::yield_now().await;
    }
}

/// How many times the server ran `command` (lower case) since its stats were last reset, from
/// `INFO commandstats`.
pub(crate) async fn command_calls(conn: &mut MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// The server's `used_memory`, from `INFO memory`.
pub(crate) async fn used_memory(conn: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// One command's counts in `INFO commandstats` since they were last reset.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CommandStats {
    /// Times it ran (failed runs included).
    pub(crate) calls: u64,
    /// Times it was refused before running (`OOM`, `NOPERM`...).
    pub(crate) rejected_calls: u64,
    /// Times it ran and failed.
    pub(crate) failed_calls: u64,
}

/// `command`'s (lower case) counts in `INFO commandstats`; zeros if it never ran.
pub(crate) async fn command_stats(conn: &mut MultiplexedConnection, command: &str) -> CommandStats {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:");
    let Some(line) = info.lines().find_map(|line| line.strip_prefix(&prefix)) else {
        return CommandStats::default();
    };
    let mut stats = CommandStats::default();
    for field in line.trim().split(',') {
        let (name, value) = field.split_once('=').unwrap();
        match name {
            "calls" => stats.calls = value.parse().unwrap(),
            "rejected_calls" => stats.rejected_calls = value.parse().unwrap(),
            "failed_calls" => stats.failed_calls = value.parse().unwrap(),
            _ => {}
        }
    }
    stats
}
