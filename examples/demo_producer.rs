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

use std::collections::HashMap;
use std::fmt::Display;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use redstream_core::{CircuitBreakerConfig, Event, EventMetadata, Priority, RedactedUrl};
use redstream_transport::{RedisConfig, RedisTransport, TransportOptions};
use serde_json::json;
use tokio::time::MissedTickBehavior;
use tracing::{error, info, warn};

/// The event types, in the order of the per-type counters.
const EVENT_TYPES: [&str; 3] = ["order.created", "payment.captured", "shipment.dispatched"];

/// The options: flag, environment variable, default, meaning.
#[rustfmt::skip]
const SETTINGS: &[Setting] = &[
    ("url",        "REDIS_URL",        "redis://127.0.0.1:6379", "Redis URL"),
    ("prefix",     "REDSTREAM_PREFIX", "events",                 "stream prefix"),
    ("rate",       "DEMO_RATE",        "20",                     "events per second"),
    ("max-events", "DEMO_MAX_EVENTS",  "0",                      "stop after N events (0: never)"),
    ("max-len",    "DEMO_MAX_LEN",     "10000",                  "MAXLEN ~ per stream (0: none)"),
    ("log-every",  "DEMO_LOG_EVERY",   "100",                    "log progress every N events"),
];

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
    let Some(settings) = Settings::load("demo_producer", SETTINGS)? else {
        return Ok(());
    };
    let url: String = settings.get("url")?;
    let prefix: String = settings.get("prefix")?;
    let rate: f64 = settings.get("rate")?;
    let max_events: u64 = settings.get("max-events")?;
    let max_len: usize = settings.get("max-len")?;
    let log_every: u64 = settings.get::<u64>("log-every")?.max(1);
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

// What follows is the same in demo_consumer.rs: each example stays one readable file.

/// `RUST_LOG` (default `info`) to stdout, with colours only on a terminal.
fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM (`docker stop`).
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}

/// An option: its flag (without `--`), environment variable, default and meaning.
type Setting = (&'static str, &'static str, &'static str, &'static str);

/// Option values: `--flag value` or `--flag=value`, else the environment variable (when not
/// empty), else the default.
struct Settings(HashMap<&'static str, (&'static str, String)>);

impl Settings {
    /// Reads the command line and the environment; `None` after printing `--help`.
    fn load(program: &str, specs: &'static [Setting]) -> Result<Option<Self>, String> {
        let mut given = HashMap::new();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                print_usage(program, specs);
                return Ok(None);
            }
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (arg, None),
            };
            let Some(&(flag, ..)) = specs
                .iter()
                .find(|(flag, ..)| name.strip_prefix("--") == Some(*flag))
            else {
                return Err(format!("unknown argument {name:?}; see --help"));
            };
            let value = match inline {
                Some(value) => value,
                None => args
                    .next()
                    .ok_or_else(|| format!("--{flag} needs a value"))?,
            };
            given.insert(flag, value);
        }
        let values = specs
            .iter()
            .map(|&(flag, env, default, _)| {
                let value = given.remove(flag).unwrap_or_else(|| {
                    std::env::var(env)
                        .ok()
                        .filter(|value| !value.is_empty())
                        .unwrap_or_else(|| default.to_owned())
                });
                (flag, (env, value))
            })
            .collect();
        Ok(Some(Self(values)))
    }

    /// The value of `--flag`, parsed.
    fn get<T: FromStr>(&self, flag: &str) -> Result<T, String>
    where
        T::Err: Display,
    {
        let (env, value) = self
            .0
            .get(flag)
            .ok_or_else(|| format!("no option --{flag}"))?;
        value
            .parse()
            .map_err(|err| format!("--{flag} / {env} {value:?}: {err}"))
    }
}

#[allow(clippy::print_stdout, reason = "--help prints the usage on stdout")]
fn print_usage(program: &str, specs: &[Setting]) {
    println!("usage: {program} [--option value]...\n\noptions:");
    for (flag, env, default, help) in specs {
        let default = match *default {
            "" => String::new(),
            value => format!(", default {value}"),
        };
        println!("  --{flag:<16} {help} [env {env}{default}]");
    }
}
