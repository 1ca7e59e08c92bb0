//! Demo consumer: handles the demo producer's events in a consumer group, and fails a few of
//! them on purpose so that the dashboard shows redeliveries and dead letters.
//!
//! It subscribes to `order.created`, `payment.captured` and `shipment.dispatched` as a member
//! of the group `--group` (default `demo`), created at the beginning of the streams so that
//! nothing published before it started is skipped. Each event takes up to `--work-ms` of
//! simulated work. A share `--failure-rate` of the events (default 5%, chosen by a hash of the
//! event id, so the same event fails on every delivery) are "poison": their handler always
//! fails, they are delivered again every `--retry-after` seconds, and after `--max-deliveries`
//! deliveries the transport moves them to the dead-letter stream `{prefix}:dlq`. The transport
//! logs each failure and each move as a warning.
//!
//! It runs until Ctrl-C or SIGTERM (or until `--max-events` events were handled), then stops
//! its subscription cleanly: running handlers finish and are acknowledged, entries read but not
//! started are released to other consumers of the group.
//!
//! Run it with `cargo run --example demo_consumer` next to `cargo run --example demo_producer`;
//! `--help` lists the options. In `docker compose up` it runs as the `consumer` service
//! (docs/docker.md); `docker compose up --scale consumer=3` shares the work among three.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use redstream_core::{Event, RedactedUrl};
use redstream_transport::{RedisConfig, RedisTransport, StartFrom, TransportOptions};
use tokio::sync::Notify;
use tracing::{error, info};

#[path = "support/mod.rs"]
mod support;
use support::{init_tracing, shutdown_signal};

/// The event types the demo producer publishes.
const EVENT_TYPES: [&str; 3] = ["order.created", "payment.captured", "shipment.dispatched"];

/// Handles the demo producer's events in a consumer group, failing a few on purpose.
#[derive(Debug, Parser)]
#[command(name = "demo_consumer")]
struct Args {
    /// Redis URL.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    url: String,
    /// Stream prefix.
    #[arg(long, env = "REDSTREAM_PREFIX", default_value = "events")]
    prefix: String,
    /// Consumer group.
    #[arg(long, env = "DEMO_GROUP", default_value = "demo")]
    group: String,
    /// Consumer name (default: {host}-{pid}).
    #[arg(long, env = "DEMO_CONSUMER")]
    consumer: Option<String>,
    /// Share of poison events, which always fail, in [0, 1].
    #[arg(long, env = "DEMO_FAILURE_RATE", default_value_t = 0.05)]
    failure_rate: f64,
    /// Deliveries of a failing event before it moves to the dead-letter stream.
    #[arg(long, env = "DEMO_MAX_DELIVERIES", default_value_t = 3)]
    max_deliveries: u32,
    /// Seconds between two deliveries of a failing event (at least 0.1).
    #[arg(long, env = "DEMO_RETRY_AFTER", default_value_t = 2.0)]
    retry_after: f64,
    /// Most milliseconds of simulated work per event.
    #[arg(long, env = "DEMO_WORK_MS", default_value_t = 20)]
    work_ms: u64,
    /// Stop after this many events handled (0: never).
    #[arg(long, env = "DEMO_MAX_EVENTS", default_value_t = 0)]
    max_events: u64,
    /// Log progress every this many events handled.
    #[arg(long, env = "DEMO_LOG_EVERY", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    log_every: u64,
}

/// What the handlers did.
#[derive(Default)]
struct Counters {
    handled: AtomicU64,
    failed: AtomicU64,
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("demo consumer failed: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let Args {
        url,
        prefix,
        group,
        consumer,
        failure_rate,
        max_deliveries,
        retry_after,
        work_ms,
        max_events,
        log_every,
    } = Args::parse();
    if !(0.0..=1.0).contains(&failure_rate) {
        return Err(format!(
            "--failure-rate {failure_rate}: expected a share in [0, 1]"
        ));
    }
    let retry_after = Duration::try_from_secs_f64(retry_after)
        .ok()
        .filter(|d| *d >= Duration::from_millis(100))
        .ok_or_else(|| format!("--retry-after {retry_after}: expected at least 0.1 seconds"))?;

    let mut config = RedisConfig::default()
        .with_url(url.as_str())
        .with_stream_prefix(prefix.as_str())
        .with_consumer_group(group.as_str());
    if let Some(consumer) = consumer.filter(|c| !c.is_empty()) {
        config = config.with_consumer_name(consumer);
    }
    let options = TransportOptions::default()
        .with_max_deliveries(max_deliveries)
        // A failed entry stays pending and is claimed again once idle this long.
        .with_claim_idle_time(retry_after)
        .with_claim_interval((retry_after / 2).max(Duration::from_millis(100)))
        .with_start_from(StartFrom::Beginning)
        // Well inside `docker stop`'s 10 s grace period.
        .with_drain_timeout(Duration::from_secs(5));
    let transport = RedisTransport::with_options(config, options)
        .await
        .map_err(|err| {
            format!(
                "cannot connect to {}: {err} (set REDIS_URL or --url)",
                RedactedUrl(&url)
            )
        })?;

    let counters = Arc::new(Counters::default());
    let done = Arc::new(Notify::new());
    let handler = {
        let counters = Arc::clone(&counters);
        let done = Arc::clone(&done);
        move |event: Event| {
            let counters = Arc::clone(&counters);
            let done = Arc::clone(&done);
            async move {
                let hash = hash_id(event.id().as_str());
                tokio::time::sleep(Duration::from_millis(hash % work_ms.saturating_add(1))).await;
                if is_poison(hash, failure_rate) {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    return Err(format!(
                        "simulated failure: {} {} is a poison event",
                        event.event_type(),
                        event.id()
                    )
                    .into());
                }
                let handled = counters.handled.fetch_add(1, Ordering::Relaxed) + 1;
                if handled.is_multiple_of(log_every) {
                    info!(
                        handled,
                        failed_deliveries = counters.failed.load(Ordering::Relaxed),
                        "progress"
                    );
                }
                if handled == max_events {
                    done.notify_one();
                }
                Ok(())
            }
        }
    };
    let types = EVENT_TYPES.map(String::from).to_vec();
    let subscription = transport
        .subscribe(types, handler)
        .await
        .map_err(|err| format!("cannot subscribe: {err}"))?;
    info!(
        redis = %RedactedUrl(&url),
        %prefix,
        group = %transport.config().consumer_group,
        consumer = %transport.config().consumer_name,
        failure_rate,
        max_deliveries,
        dead_letters = %transport.names().dlq(),
        "handling {}",
        EVENT_TYPES.join(", ")
    );

    tokio::select! {
        signal = shutdown_signal() => {
            signal.map_err(|err| format!("cannot listen for shutdown signals: {err}"))?;
            info!("shutdown requested");
        }
        () = done.notified() => info!(max_events, "handled --max-events events"),
    }
    // Running handlers finish and are acknowledged; entries not started are released.
    let stopped = transport.unsubscribe(&subscription).await;
    info!(
        handled = counters.handled.load(Ordering::Relaxed),
        failed_deliveries = counters.failed.load(Ordering::Relaxed),
        "stopped"
    );
    stopped.map_err(|err| format!("stopping the subscription: {err}"))
}

/// Whether the event with this id hash always fails: true for a share `rate` of hashes.
fn is_poison(hash: u64, rate: f64) -> bool {
    // The top 53 bits as a fraction in [0, 1).
    ((hash >> 11) as f64 / (1_u64 << 53) as f64) < rate
}

/// FNV-1a then a SplitMix64 finaliser: a stable, well-spread hash of an event id, the same in
/// every process (so each consumer of the group agrees on which events are poison).
fn hash_id(id: &str) -> u64 {
    let mut z = id.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    });
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
