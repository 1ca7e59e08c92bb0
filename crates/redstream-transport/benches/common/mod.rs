//! What the transport benches share: the seed event, raw redis-rs's read-decode-ack step, and
//! how a figure is computed and printed. A folder of its own (`common/mod.rs`) so that cargo
//! does not take it for a bench target; each bench says `mod common;`.

// Each bench uses a part of this module, and the rest is dead code in that bench's build.
#![allow(dead_code)]

use std::time::Duration;

use redis::aio::ConnectionLike;
use redstream_core::wire;
use redstream_core::{Event, EventLimits, EventMetadata};
use redstream_testkit::RedisServer;
pub(crate) use redstream_testkit::bench::median;
use redstream_testkit::bench::{ProcessCpu, Ratios};
use serde_json::json;

/// The seed's event of type `event_type`, numbered `n`.
pub(crate) fn seed_event(event_type: &str, n: u64) -> Event {
    Event::new(
        event_type,
        json!({ "order_id": n.to_string(), "total": 99.99, "items": 3 }),
        EventMetadata::default(),
    )
}

/// One step of raw redis-rs's consume loop: `XREADGROUP COUNT <raw_count()> BLOCK block_ms`
/// of `stream`, each entry decoded like the transport does (with its entry id, which gives an
/// envelope without a timestamp its time and is checked) and given to `on_event`, then one
/// `XACK` for the batch. Returns how many entries it handled (0 when the block timed out).
pub(crate) async fn raw_read_decode_ack(
    conn: &mut impl ConnectionLike,
    stream: &str,
    group: &str,
    consumer: &str,
    block_ms: u64,
    mut on_event: impl FnMut(Event),
) -> u64 {
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(raw_count())
        .arg("BLOCK")
        .arg(block_ms)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(conn)
        .await
        .unwrap();
    let mut handled = 0;
    for key in reply.keys {
        let mut ack = redis::cmd("XACK");
        ack.arg(stream).arg(group);
        for entry in &key.ids {
            let fields = entry.map.iter().filter_map(|(k, v)| match v {
                redis::Value::BulkString(bytes) => Some((k.as_bytes(), bytes.as_slice())),
                _ => None,
            });
            on_event(wire::decode_stream_entry(&entry.id, fields, &EventLimits::DEFAULT).unwrap());
            ack.arg(&entry.id);
            handled += 1;
        }
        let _: u64 = ack.query_async(conn).await.unwrap();
    }
    handled
}

/// `name`'s value, if it is set to a number: the benches' settings
/// (`REDSTREAM_BENCH_READ_COUNT`...).
pub(crate) fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
}

/// Entries per raw `XREADGROUP`: the transport's `read_count` (its default, or
/// `REDSTREAM_BENCH_READ_COUNT`), so that both sides read as much per call; or
/// `REDSTREAM_BENCH_RAW_COUNT`.
pub(crate) fn raw_count() -> usize {
    static COUNT: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
        env_usize("REDSTREAM_BENCH_RAW_COUNT")
            .or_else(|| env_usize("REDSTREAM_BENCH_READ_COUNT"))
            .unwrap_or(redstream_transport::TransportOptions::default().read_count)
    });
    *COUNT
}

/// Events per second.
pub(crate) fn rate(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64()
}

/// The rounds' ratios of `ours` to `raw`, summed up (median, range, mean and its interval).
pub(crate) fn ratios(ours: &[f64], raw: &[f64]) -> Ratios {
    Ratios::of(ours, raw).expect("every round has a rate on each side, finite and above zero")
}

/// One line of rates: each side's and their ratio.
pub(crate) fn rates_line(name: &str, ours: f64, raw: f64, ratio: f64) {
    println!(
        "{name:<32} redstream {ours:>10.0} msg/s   raw redis-rs {raw:>10.0} msg/s   ratio {ratio:.2}x"
    );
}

/// One figure from alternating rounds: the median rate of each side and the median of the
/// rounds' ratios, then on a line below the ratios' range (how noisy the machine was), their
/// geometric mean and its 95% confidence interval.
pub(crate) fn ratio_line(name: &str, ours: &[f64], raw: &[f64]) {
    let ratios = ratios(ours, raw);
    rates_line(name, median(ours), median(raw), ratios.median);
    println!("{:<32} ratio per round {ratios}", "");
}

/// The server `server` runs, as the test kit read it from the binary (`Redis 7.0.15
/// (/usr/bin/redis-server)`), for a bench's first line.
pub(crate) fn server_version(server: &RedisServer) -> String {
    server
        .server_version()
        .map_or_else(|| "an unknown server".to_owned(), ToString::to_string)
}

/// Deletes `key` (on a clone of `conn`, as every bench holds its connection shared).
pub(crate) async fn del<C: ConnectionLike + Clone>(conn: &C, key: &str) {
    let mut conn = conn.clone();
    let _: u64 = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// What one side of a round cost: the server's work by command (`INFO commandstats` after a
/// `CONFIG RESETSTAT`: calls and microseconds), the server process's CPU time (`INFO cpu`,
/// which also counts what no command does: reading requests, writing replies), and this
/// process's CPU time and context switches (`getrusage`). Tells a gap in the client from one in
/// the work each side asks of the server, which a throughput figure alone cannot on a machine
/// where client and server share two cores.
#[derive(Debug, Default, Clone)]
pub(crate) struct ServerWork {
    commands: std::collections::BTreeMap<String, (u64, u64)>,
    server_cpu: Duration,
    client: ProcessCpu,
}

/// Where a side's measurement starts: see [`ServerWork::reset`].
pub(crate) struct WorkStart {
    server_cpu: Duration,
    client: ProcessCpu,
}

/// The server process's CPU time so far.
async fn server_cpu<C: ConnectionLike + Clone>(conn: &C) -> Duration {
    redstream_testkit::bench::server_cpu(&mut conn.clone())
        .await
        .unwrap()
}

impl ServerWork {
    /// Zeroes the server's command statistics and notes both processes' CPU time so far.
    pub(crate) async fn reset<C: ConnectionLike + Clone>(conn: &C) -> WorkStart {
        let mut c = conn.clone();
        let () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut c)
            .await
            .unwrap();
        WorkStart {
            server_cpu: server_cpu(conn).await,
            client: ProcessCpu::now(),
        }
    }

    /// The server's command statistics since `start`'s [`reset`](Self::reset) (without the
    /// `CONFIG` and `INFO` calls the bench makes itself), and both processes' CPU time since.
    pub(crate) async fn read<C: ConnectionLike + Clone>(conn: &C, start: &WorkStart) -> Self {
        let client = ProcessCpu::now().since(start.client);
        let server_cpu = server_cpu(conn).await.saturating_sub(start.server_cpu);
        let mut conn = conn.clone();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut commands = std::collections::BTreeMap::new();
        for line in info.lines() {
            // cmdstat_xack:calls=12,usec=34,usec_per_call=2.83,rejected_calls=0,failed_calls=0
            let Some((name, fields)) = line
                .strip_prefix("cmdstat_")
                .and_then(|rest| rest.split_once(':'))
            else {
                continue;
            };
            if name.starts_with("config") || name == "info" {
                continue;
            }
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            commands.insert(name.to_uppercase(), (field("calls"), field("usec")));
        }
        Self {
            commands,
            server_cpu,
            client,
        }
    }

    /// Adds `other`'s figures to these.
    pub(crate) fn add(&mut self, other: &Self) {
        for (name, (calls, usec)) in &other.commands {
            let entry = self.commands.entry(name.clone()).or_default();
            entry.0 += calls;
            entry.1 += usec;
        }
        self.server_cpu += other.server_cpu;
        self.client += other.client;
    }

    /// For `events` events: the CPU time per event of the server process and of this one (the
    /// client side, with its system time and context switches).
    pub(crate) fn cpu_per_event(&self, events: u64) -> String {
        let events = events.max(1) as f64;
        let micros = |d: Duration| d.as_secs_f64() * 1e6 / events;
        format!(
            "CPU per event: server {:.2} µs, client {:.2} µs ({:.2} µs system), {:.3} context \
             switches",
            micros(self.server_cpu),
            micros(self.client.total()),
            micros(self.client.system),
            self.client.switches as f64 / events,
        )
    }

    /// For `events` events: the server's time per event, then each command that took a
    /// measurable share of it, with its calls per 1,000 events and its time per event.
    pub(crate) fn per_event(&self, events: u64) -> String {
        let events = events.max(1) as f64;
        let usec: u64 = self.commands.values().map(|(_, usec)| usec).sum();
        let commands: Vec<String> = self
            .commands
            .iter()
            .filter(|(_, (_, usec))| *usec as f64 / events >= 0.005)
            .map(|(name, (calls, usec))| {
                format!(
                    "{name} {:.1} calls {:.2} µs",
                    *calls as f64 * 1000.0 / events,
                    *usec as f64 / events
                )
            })
            .collect();
        format!(
            "{:.2} µs per event ({} per 1,000 events)",
            usec as f64 / events,
            commands.join(", ")
        )
    }
}
