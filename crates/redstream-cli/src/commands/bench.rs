//! `redstream bench`: publish N events through the transport, then consume them with a
//! subscription, against the server `--url` names, and report throughput and latency.
//!
//! The run uses a prefix of its own, `<prefix>-bench-<pid>-<ms>`, so it touches nothing of the
//! application's, and deletes every stream under it when it ends (also on failure and Ctrl-C).
//! Three phases, one after the other, so that none competes with another for the server:
//!
//! - `publish`: `RedisTransport::publish` calls from `--concurrency` tasks; the latency is one
//!   call's.
//! - `raw XADD`: the same number of plain redis-rs `XADD`s of an envelope of the same size, on
//!   the transport's connection, at the same concurrency: the baseline the transport's overhead
//!   is judged against.
//! - `consume`: a subscription (group `bench`, from the start of the stream) handles the events
//!   published in the first phase; the rate runs from subscribing to the last event handled.
//!   Draining a backlog has no per-event latency worth reporting, so it has none.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use redstream_core::{Event, EventMetadata, SubscriptionHandle, wire};
use redstream_transport::{RedisConfig, RedisTransport, StartFrom, TransportOptions};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::{interrupted, output};
use crate::{CliError, CliResult, GlobalArgs};

/// The event type of the benchmark's events.
const EVENT_TYPE: &str = "bench";

/// The run fails when no event is consumed for this long (the subscription is stuck).
const STALL: Duration = Duration::from_secs(30);

/// Options of `redstream bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// How many events to publish and consume.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub events: u64,
    /// Bytes of padding in each event's payload.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(0..=524_288))]
    pub payload_bytes: u32,
    /// Publishing tasks running at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
}

/// One measured phase, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
struct Phase {
    events: u64,
    seconds: f64,
    events_per_sec: f64,
    /// Null for `consume`.
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Phase {
    /// A phase whose per-event latencies were measured (none: no latency figures).
    fn new(events: u64, elapsed: Duration, mut latencies: Vec<Duration>) -> Self {
        latencies.sort_unstable();
        let seconds = elapsed.as_secs_f64();
        let measured = !latencies.is_empty();
        Self {
            events,
            seconds,
            events_per_sec: if seconds > 0.0 {
                events as f64 / seconds
            } else {
                0.0
            },
            p50_ms: measured.then(|| percentile(&latencies, 0.50)),
            p99_ms: measured.then(|| percentile(&latencies, 0.99)),
        }
    }
}

/// The nearest-rank percentile of sorted latencies, in milliseconds.
fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

/// What `bench --json` prints.
#[derive(Serialize)]
struct Report {
    prefix: String,
    events: u64,
    payload_bytes: u32,
    concurrency: u16,
    publish: Phase,
    raw_xadd: Phase,
    consume: Phase,
}

/// What the subscription's handler shares with the run.
struct Consumed {
    total: u64,
    count: AtomicU64,
    last: Mutex<Option<Instant>>,
    done: Notify,
    bar: ProgressBar,
}

/// The progress bars, on stderr; hidden with `--json` or when stderr is not a terminal.
struct Bars {
    multi: MultiProgress,
}

impl Bars {
    fn new(hidden: bool) -> Self {
        let target = if hidden || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Self {
            multi: MultiProgress::with_draw_target(target),
        }
    }

    fn bar(&self, name: &str, len: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(len));
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>10} [{bar:40}] {pos}/{len} {per_sec} ({elapsed})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(name.to_owned());
        bar
    }

    fn clear(&self) {
        let _ = self.multi.clear();
    }
}

/// Runs the benchmark and prints the summary.
pub async fn run(global: &GlobalArgs, args: BenchArgs) -> CliResult<()> {
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let prefix = format!(
        "{}-bench-{}-{started_ms}",
        global.prefix,
        std::process::id()
    );
    let config = RedisConfig::default()
        .with_url(global.url.clone())
        .with_stream_prefix(prefix.clone())
        .with_consumer_group("bench")
        .with_consumer_name(format!("bench-{}", std::process::id()));
    let options = TransportOptions {
        key_layout: global.key_layout,
        ..TransportOptions::default()
    }
    .with_block_time(Duration::from_millis(100))
    .with_read_count(500)
    .with_handler_concurrency(64)
    .with_start_from(StartFrom::Beginning);
    let transport = RedisTransport::with_options(config, options).await?;
    transport.ping().await?;
    output::note(format_args!(
        "bench: {} events of {} padding bytes, {} publishers, under the prefix {prefix}",
        args.events, args.payload_bytes, args.concurrency
    ));

    let bars = Bars::new(global.json);
    let subscription = Mutex::new(None);
    let outcome = tokio::select! {
        outcome = measure(&transport, &args, &bars, &subscription) => outcome.map(Some),
        () = interrupted() => Ok(None),
    };
    bars.clear();
    // Interrupted while consuming: the subscription is still running, and would re-create the
    // streams deleted below (after `NOGROUP` it re-creates its group with `MKSTREAM`).
    let running = subscription
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(handle) = running
        && let Err(err) = transport.unsubscribe(&handle).await
    {
        tracing::warn!(error = %err, "stopping the benchmark's subscription failed");
    }
    let cleaned = cleanup(&transport).await.map_err(|err| match err {
        CliError::Redstream(err) => CliError::Redstream(redstream_core::Error::backend(
            err.kind(),
            "bench cleanup",
            prefix.clone(),
            format!(
                "deleting the benchmark's streams failed: {err}; delete them by hand \
                 (`redstream --prefix {prefix} streams` lists them)"
            ),
        )),
        other => other,
    });
    let phases = match (outcome, cleaned) {
        (Ok(Some(phases)), Ok(())) => phases,
        (Ok(None), Ok(())) => {
            return Err(CliError::usage(
                "interrupted; the benchmark's streams were deleted",
            ));
        }
        (Ok(_), Err(cleanup)) => return Err(cleanup),
        (Err(err), cleaned) => {
            if let Err(cleanup) = cleaned {
                output::note(format!("warning: {cleanup}"));
            }
            return Err(err);
        }
    };
    let (publish, raw_xadd, consume) = phases;

    let report = Report {
        prefix,
        events: args.events,
        payload_bytes: args.payload_bytes,
        concurrency: args.concurrency,
        publish,
        raw_xadd,
        consume,
    };
    if global.json {
        return output::json(&report);
    }
    let mut table = output::table(&["PHASE", "EVENTS", "SECONDS", "EVENTS/S", "P50", "P99"]);
    for (name, phase) in [
        ("publish", &report.publish),
        ("raw XADD (baseline)", &report.raw_xadd),
        ("consume", &report.consume),
    ] {
        let ms = |ms: Option<f64>| ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.3} ms"));
        table.add_row(vec![
            name.to_owned(),
            phase.events.to_string(),
            format!("{:.3}", phase.seconds),
            format!("{:.0}", phase.events_per_sec),
            ms(phase.p50_ms),
            ms(phase.p99_ms),
        ]);
    }
    output::print_table(&table)
}

/// The three phases, one after the other. While the consume phase runs, `subscription` holds
/// its handle, so that whoever cancels this future can stop the subscription.
async fn measure(
    transport: &RedisTransport,
    args: &BenchArgs,
    bars: &Bars,
    subscription: &Mutex<Option<SubscriptionHandle>>,
) -> CliResult<(Phase, Phase, Phase)> {
    let pad: Arc<str> = Arc::from("x".repeat(usize::try_from(args.payload_bytes).unwrap_or(0)));
    let (elapsed, latencies) = publish_all(transport, args, &pad, bars).await?;
    let publish = Phase::new(args.events, elapsed, latencies);
    let (elapsed, latencies) = raw_xadd(transport, args, &pad, bars).await?;
    let raw = Phase::new(args.events, elapsed, latencies);
    let consume = consume_all(transport, args, bars, subscription).await?;
    Ok((publish, raw, consume))
}

/// Subscribes from the start of the stream and waits until every event was handled.
async fn consume_all(
    transport: &RedisTransport,
    args: &BenchArgs,
    bars: &Bars,
    subscription: &Mutex<Option<SubscriptionHandle>>,
) -> CliResult<Phase> {
    let consumed = Arc::new(Consumed {
        total: args.events,
        count: AtomicU64::new(0),
        last: Mutex::new(None),
        done: Notify::new(),
        bar: bars.bar("consumed", args.events),
    });
    let handler_state = Arc::clone(&consumed);
    let started = Instant::now();
    let handle = transport
        .subscribe(vec![EVENT_TYPE.to_owned()], move |_event: Event| {
            let consumed = Arc::clone(&handler_state);
            async move {
                consumed.record();
                Ok(())
            }
        })
        .await?;
    *subscription.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle.clone());
    let waited = wait_for_consumers(&consumed).await;
    subscription
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Err(err) = transport.unsubscribe(&handle).await {
        tracing::warn!(error = %err, "stopping the benchmark's subscription failed");
    }
    waited?;
    consumed.bar.finish();
    let last = *consumed.last.lock().unwrap_or_else(PoisonError::into_inner);
    let elapsed = last.map_or(Duration::ZERO, |last| last - started);
    Ok(Phase::new(
        consumed.count.load(Ordering::Relaxed),
        elapsed,
        Vec::new(),
    ))
}

impl Consumed {
    fn record(&self) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.bar.inc(1);
        // Redelivered events count again; the run waits for at least `total`.
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 >= self.total {
            self.done.notify_one();
        }
    }
}

/// Publishes `events` from `concurrency` tasks; returns the wall time and each call's latency.
async fn publish_all(
    transport: &RedisTransport,
    args: &BenchArgs,
    pad: &Arc<str>,
    bars: &Bars,
) -> CliResult<(Duration, Vec<Duration>)> {
    let next = Arc::new(AtomicU64::new(0));
    let bar = bars.bar("published", args.events);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..args.concurrency {
        let (transport, next, pad, bar) = (
            transport.clone(),
            Arc::clone(&next),
            Arc::clone(pad),
            bar.clone(),
        );
        let total = args.events;
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= total {
                    return Ok::<_, redstream_core::Error>(latencies);
                }
                let payload = serde_json::json!({ "seq": seq, "pad": &*pad });
                let call = Instant::now();
                transport
                    .publish(Event::new(EVENT_TYPE, payload, EventMetadata::default()))
                    .await?;
                latencies.push(call.elapsed());
                bar.inc(1);
            }
        });
    }
    let mut latencies = Vec::with_capacity(usize::try_from(args.events).unwrap_or(0));
    while let Some(joined) = tasks.join_next().await {
        let task = joined
            .map_err(|err| CliError::io("running a publishing task", std::io::Error::other(err)))?;
        latencies.extend(task?);
    }
    bar.finish();
    Ok((started.elapsed(), latencies))
}

/// Waits until every event was handled, failing if none is for [`STALL`].
async fn wait_for_consumers(consumed: &Consumed) -> CliResult<()> {
    let mut seen = consumed.count.load(Ordering::Relaxed);
    loop {
        if seen >= consumed.total {
            return Ok(());
        }
        tokio::select! {
            () = consumed.done.notified() => return Ok(()),
            () = tokio::time::sleep(STALL) => {
                let now = consumed.count.load(Ordering::Relaxed);
                if now == seen {
                    return Err(CliError::usage(format!(
                        "the subscription handled no event for {}s ({now} of {} so far)",
                        STALL.as_secs(),
                        consumed.total
                    )));
                }
                seen = now;
            }
        }
    }
}

/// `XADD`s of an envelope as large as the benchmark's, straight through redis-rs.
async fn raw_xadd(
    transport: &RedisTransport,
    args: &BenchArgs,
    pad: &Arc<str>,
    bars: &Bars,
) -> CliResult<(Duration, Vec<Duration>)> {
    let sample = Event::new(
        EVENT_TYPE,
        serde_json::json!({ "seq": args.events, "pad": &**pad }),
        EventMetadata::default(),
    );
    let envelope: Arc<str> = Arc::from(wire::encode(&sample, &transport.options().limits)?);
    let key: Arc<str> = Arc::from(transport.names().stream("raw-baseline"));
    let next = Arc::new(AtomicU64::new(0));
    let bar = bars.bar("raw XADD", args.events);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..args.concurrency {
        let (mut conn, next, envelope, key, bar) = (
            transport.connection(),
            Arc::clone(&next),
            Arc::clone(&envelope),
            Arc::clone(&key),
            bar.clone(),
        );
        let total = args.events;
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let call = Instant::now();
                redis::cmd("XADD")
                    .arg(&*key)
                    .arg("*")
                    .arg(wire::EVENT_FIELD)
                    .arg(&*envelope)
                    .query_async::<String>(&mut conn)
                    .await
                    .map_err(|err| {
                        redstream_core::Error::from_redis("XADD", key.to_string(), err)
                    })?;
                latencies.push(call.elapsed());
                bar.inc(1);
            }
            Ok::<_, redstream_core::Error>(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(usize::try_from(args.events).unwrap_or(0));
    while let Some(joined) = tasks.join_next().await {
        let task = joined
            .map_err(|err| CliError::io("running a baseline task", std::io::Error::other(err)))?;
        latencies.extend(task?);
    }
    bar.finish();
    Ok((started.elapsed(), latencies))
}

/// Deletes every stream under the benchmark's prefix.
async fn cleanup(transport: &RedisTransport) -> CliResult<()> {
    let streams = transport.list_streams().await?;
    if streams.is_empty() {
        return Ok(());
    }
    let mut conn = transport.connection();
    let _: u64 = redis::cmd("DEL")
        .arg(&streams)
        .query_async(&mut conn)
        .await
        .map_err(|err| {
            redstream_core::Error::from_redis("DEL", transport.names().prefix().to_owned(), err)
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let ms = |n: u64| Duration::from_millis(n);
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert!((percentile(&sorted, 0.50) - 50.0).abs() < 1e-9);
        assert!((percentile(&sorted, 0.99) - 99.0).abs() < 1e-9);
        assert!((percentile(&[ms(7)], 0.99) - 7.0).abs() < 1e-9);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
