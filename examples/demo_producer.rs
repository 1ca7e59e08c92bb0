//! Demo producer: a steady stream of order, payment and shipment events, so that the dashboard
//! (`redstream serve`) has live traffic to show.
//!
//! It publishes at a fixed rate (`--rate`, default 20 events per second) a mix of three event
//! types, `order.created` (half of them), `payment.captured` and `shipment.dispatched`, each
//! with a priority (mostly `normal`, some `low`, `high` and a few `critical`), a source and a
//! correlation id (the order id). The mix is deterministic: every run publishes the same
//! sequence. Streams are capped (`XADD ... MAXLEN ~ --max-len`) so that a stack left running
//! does not fill Redis.
//!
//! It runs until Ctrl-C or SIGTERM (or `--max-events` are published), then reports what it did.
//! Publishing errors worth retrying (Redis down, circuit breaker open) are logged once per
//! outage and publishing goes on; others (authentication, permissions) end it.
//!
//! Run it with `cargo run --example demo_producer` (with a Redis at `REDIS_URL`), next to
//! `cargo run --example demo_consumer`; `--help` lists the options. In `docker compose up` it
//! runs as the `producer` service (docs/docker.md).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use redstream_core::{CircuitBreakerConfig, Event, EventMetadata, Priority, RedactedUrl};
use redstream_transport::{RedisConfig, RedisTransport, TransportOptions};
use serde_json::json;
use tokio::time::MissedTickBehavior;
use tracing::{error, info, warn};

#[path = "support/mod.rs"]
mod support;
use support::{init_tracing, shutdown_signal};

/// The event types, in the order of the per-type counters.
const EVENT_TYPES: [&str; 3] = ["order.created", "payment.captured", "shipment.dispatched"];

/// Publishes a steady mix of order, payment and shipment events for the dashboard to show.
#[derive(Debug, Parser)]
#[command(name = "demo_producer")]
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
    /// Events per second, in (0, 100000].
    #[arg(long, env = "DEMO_RATE", default_value_t = 20.0)]
    rate: f64,
    /// Stop after this many events (0: never).
    #[arg(long, env = "DEMO_MAX_EVENTS", default_value_t = 0)]
    max_events: u64,
    /// `XADD ... MAXLEN ~` per stream (0: no trimming).
    #[arg(long, env = "DEMO_MAX_LEN", default_value_t = 10_000)]
    max_len: usize,
    /// Log progress every this many events.
    #[arg(long, env = "DEMO_LOG_EVERY", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    log_every: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("demo producer failed: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let Args {
        url,
        prefix,
        rate,
        max_events,
        max_len,
        log_every,
    } = Args::parse();
    if !(rate > 0.0 && rate <= 100_000.0) {
        return Err(format!(
            "--rate {rate}: expected events per second in (0, 100000]"
        ));
    }

    let config = RedisConfig::default()
        .with_url(url.as_str())
        .with_stream_prefix(prefix.as_str())
        .with_max_stream_length(max_len);
    // After an outage, try again within seconds rather than the default 30.
    let breaker = CircuitBreakerConfig::default().with_open_duration(Duration::from_secs(5));
    let options = TransportOptions::default().with_circuit_breaker(breaker);
    let transport = RedisTransport::with_options(config, options)
        .await
        .map_err(|err| {
            format!(
                "cannot connect to {}: {err} (set REDIS_URL or --url)",
                RedactedUrl(&url)
            )
        })?;
    info!(
        redis = %RedactedUrl(&url),
        %prefix,
        rate,
        max_events,
        "publishing {}",
        EVENT_TYPES.join(", ")
    );

    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown_signal());
    let started = Instant::now();
    let mut per_type = [0_u64; EVENT_TYPES.len()];
    let mut published = 0_u64;
    let mut failed = 0_u64;
    // Set while publishing fails, so that an outage is logged once, not once per event.
    let mut outage: Option<Instant> = None;
    for n in 0.. {
        if max_events > 0 && published >= max_events {
            break;
        }
        tokio::select! {
            biased;
            signal = &mut shutdown => {
                signal.map_err(|err| format!("cannot listen for shutdown signals: {err}"))?;
                info!("shutdown requested");
                break;
            }
            _ = ticker.tick() => {}
        }
        let (kind, event) = demo_event(n);
        match transport.publish(event).await {
            Ok(_) => {
                published += 1;
                per_type[kind] += 1;
                if let Some(since) = outage.take() {
                    info!(after = ?since.elapsed(), "publishing again");
                }
                if published.is_multiple_of(log_every) {
                    info!(
                        published,
                        orders = per_type[0],
                        payments = per_type[1],
                        shipments = per_type[2],
                        failed,
                        "progress"
                    );
                }
            }
            Err(err) if err.is_retryable() => {
                failed += 1;
                if outage.is_none() {
                    outage = Some(Instant::now());
                    warn!(error = %err, "publishing failed; skipping events until Redis is back");
                }
            }
            Err(err) => return Err(format!("publishing failed: {err}")),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    info!(
        published,
        failed,
        per_second = format!("{:.1}", published as f64 / elapsed.max(1e-3)),
        "stopped"
    );
    Ok(())
}

/// The `n`th event of the mix and the index of its type in [`EVENT_TYPES`].
fn demo_event(n: u64) -> (usize, Event) {
    let r = mix(n);
    let order_id = format!("ORD-{:07}", n / 2);
    let (kind, payload) = match r % 10 {
        0..=4 => (
            0,
            json!({
                "order_id": order_id,
                "customer_id": format!("CUST-{:04}", (r >> 8) % 5000),
                "items": 1 + (r >> 24) % 5,
                "total_cents": 500 + (r >> 32) % 50_000,
            }),
        ),
        5..=7 => (
            1,
            json!({
                "payment_id": format!("PAY-{n:07}"),
                "order_id": order_id,
                "amount_cents": 500 + (r >> 32) % 50_000,
                "method": (["card", "paypal", "bank_transfer"][((r >> 8) % 3) as usize]),
            }),
        ),
        _ => (
            2,
            json!({
                "shipment_id": format!("SHP-{n:07}"),
                "order_id": order_id,
                "carrier": (["dhl", "ups", "fedex", "postnl"][((r >> 8) % 4) as usize]),
            }),
        ),
    };
    let priority = match (r >> 48) % 100 {
        0..=1 => Priority::Critical,
        2..=11 => Priority::High,
        12..=26 => Priority::Low,
        _ => Priority::Normal,
    };
    let event = Event::new(EVENT_TYPES[kind], payload, EventMetadata::default())
        .with_source("demo-producer")
        .with_correlation_id(order_id)
        .with_priority(priority);
    (kind, event)
}

/// SplitMix64: a well-spread pseudo-random number for `n`, without a dependency.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
