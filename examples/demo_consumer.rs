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

use std::collections::HashMap;
use std::fmt::Display;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redstream_core::{Event, RedactedUrl};
use redstream_transport::{RedisConfig, RedisTransport, StartFrom, TransportOptions};
use tokio::sync::Notify;
use tracing::{error, info};

/// The event types the demo producer publishes.
const EVENT_TYPES: [&str; 3] = ["order.created", "payment.captured", "shipment.dispatched"];

/// The options: flag, environment variable, default, meaning.
#[rustfmt::skip]
const SETTINGS: &[Setting] = &[
    ("url",            "REDIS_URL",           "redis://127.0.0.1:6379", "Redis URL"),
    ("prefix",         "REDSTREAM_PREFIX",    "events",                 "stream prefix"),
    ("group",          "DEMO_GROUP",          "demo",                   "consumer group"),
    ("consumer",       "DEMO_CONSUMER",       "",                       "default: {host}-{pid}"),
    ("failure-rate",   "DEMO_FAILURE_RATE",   "0.05",                   "share of poison events"),
    ("max-deliveries", "DEMO_MAX_DELIVERIES", "3",                      "deliveries, then DLQ"),
    ("retry-after",    "DEMO_RETRY_AFTER",    "2",                      "seconds between tries"),
    ("work-ms",        "DEMO_WORK_MS",        "20",                     "max ms of work per event"),
    ("max-events",     "DEMO_MAX_EVENTS",     "0",                      "stop after N (0: never)"),
    ("log-every",      "DEMO_LOG_EVERY",      "100",                    "log every N handled"),
];

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
    let Some(settings) = Settings::load("demo_consumer", SETTINGS)? else {
        return Ok(());
    };
    let url: String = settings.get("url")?;
    let prefix: String = settings.get("prefix")?;
    let group: String = settings.get("group")?;
    let consumer: String = settings.get("consumer")?;
    let failure_rate: f64 = settings.get("failure-rate")?;
    let max_deliveries: u32 = settings.get("max-deliveries")?;
    let retry_after: f64 = settings.get("retry-after")?;
    let work_ms: u64 = settings.get("work-ms")?;
    let max_events: u64 = settings.get("max-events")?;
    let log_every: u64 = settings.get::<u64>("log-every")?.max(1);
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
    if !consumer.is_empty() {
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
        dead_letters = %transport.keys().dlq(),
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

// What follows is the same in demo_producer.rs: each example stays one readable file.

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
