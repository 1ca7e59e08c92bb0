//! Seed 004's event pipeline ("Redis Streams Setup - Event Pipeline Architecture") on redstream.
//!
//! - Four named topics, each with its own `MAXLEN` (`TransportOptions::max_stream_lengths`):
//!   `events.raw` 10,000, `events.normalized` 10,000, `profiles.merge_requests` 1,000,
//!   `predictions.requests` 5,000. Their names are used as they are: `redis-cli XLEN events.raw`
//!   finds them.
//! - Messages in the seed's own flat format (`event_id`, `brand_id`, `event_type`, `payload`,
//!   `timestamp`, ...), written with `publish_fields` and read through raw subscriptions
//!   (`.handle_raw(..)`): no redstream envelope anywhere.
//! - The consumer groups `event-processors` (on `events.normalized`, two workers),
//!   `merge-processors` (on `profiles.merge_requests`) and `prediction-processors` (on
//!   `predictions.requests`), created when the workers start.
//! - A handler's failure leaves its entry pending; once it has been idle for `claim_idle_time`,
//!   the transport's claim loop (`XAUTOCLAIM`) hands it to a worker again, as the seed's
//!   "Pending messages can be claimed by other consumers after idle time".
//! - At the end a worker "crashes" holding a few entries (`--leave-pending`), so that
//!   `XPENDING events.normalized event-processors` and the dashboard's
//!   `/api/streams/events.normalized/pending?group=event-processors` have something to show; the
//!   next run's workers claim them.
//!
//! Run it with `cargo run --example commerce_pipeline -- --events 200`, then look with
//! `redis-cli XLEN events.raw` or `redstream serve --streams 'events.*,profiles.*,predictions.*'`.
//! It uses `--url` (default: `REDIS_URL`, else `redis://127.0.0.1:6379`), or starts a private
//! `redis-server` through the test kit when nothing answers there.
//!
//! `tests/commerce_pipeline.rs` includes this file and calls [`run`] against a private server,
//! then asks the dashboard seed 004's three questions.

// An example talks to its user on stdout.
#![allow(clippy::print_stdout)]

use std::collections::HashSet;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use redstream_core::{ErrorKind, HandlerResult, RedactedUrl, SubscriptionHandle};
use redstream_testkit::RedisServer;
use redstream_transport::{
    PendingQuery, RawEntry, RedisConfig, RedisTransport, StartFrom, TransportOptions,
};
use serde_json::json;
use tokio::sync::Notify;

/// An error of the example, for `main` to print.
pub(crate) type BoxResult<T> = Result<T, Box<dyn StdError + Send + Sync>>;

/// Seed 004's topics.
pub(crate) const EVENTS_RAW: &str = "events.raw";
/// Events after normalization and profile matching.
pub(crate) const EVENTS_NORMALIZED: &str = "events.normalized";
/// Profile merge requests.
pub(crate) const MERGE_REQUESTS: &str = "profiles.merge_requests";
/// ML prediction requests.
pub(crate) const PREDICTION_REQUESTS: &str = "predictions.requests";

/// Seed 004's consumer groups.
pub(crate) const EVENT_PROCESSORS: &str = "event-processors";
/// Handles merge requests.
pub(crate) const MERGE_PROCESSORS: &str = "merge-processors";
/// Triggers predictions.
pub(crate) const PREDICTION_PROCESSORS: &str = "prediction-processors";

/// The consumer name of the worker that stops without acknowledging (`--leave-pending`).
pub(crate) const CRASHED_WORKER: &str = "worker-crashed";

/// How long an entry stays pending before a worker claims it. Short, so that the example shows
/// a claim within a second; services use tens of seconds.
const CLAIM_IDLE_TIME: Duration = Duration::from_millis(300);

/// The longest the example waits for its workers to handle everything.
const PATIENCE: Duration = Duration::from_secs(60);

/// Seed 004's event pipeline on redstream: publishes events in the seed's flat format, handles
/// them in the seed's consumer groups, claims what a failed handler left pending, and exits.
#[derive(Debug, Clone, Parser)]
#[command(name = "commerce_pipeline")]
pub(crate) struct Options {
    /// Redis URL; when nothing answers there, a private redis-server is started.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub(crate) url: String,
    /// Events to ingest.
    #[arg(long, default_value_t = 60)]
    pub(crate) events: usize,
    /// Events a worker reads from events.normalized and never acknowledges, at the end: they
    /// stay pending in event-processors for the next run to claim.
    #[arg(long, default_value_t = 3)]
    pub(crate) leave_pending: usize,
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub(crate) struct Report {
    /// Events written to `events.raw` and `events.normalized` by the ingestion (the crashed
    /// worker's included).
    pub(crate) ingested: usize,
    /// Normalized events handled by `event-processors`.
    pub(crate) processed: usize,
    /// Events whose first delivery failed on purpose (every sixth).
    pub(crate) failed_first: usize,
    /// Events handled after a claim (delivered more than once).
    pub(crate) claimed: usize,
    /// Merge requests written and handled by `merge-processors`.
    pub(crate) merges: usize,
    /// Prediction requests written and handled by `prediction-processors`.
    pub(crate) predictions: usize,
    /// Entries an earlier run left pending in `event-processors` that this run's workers
    /// claimed and handled.
    pub(crate) recovered: usize,
    /// Entry ids the crashed worker left pending in `event-processors`.
    pub(crate) left_pending: Vec<String>,
}

#[cfg_attr(test, allow(dead_code))]
#[tokio::main]
async fn main() -> BoxResult<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let mut options = Options::parse();
    // A private server lives until the end of `main`.
    let _private = match ping(&options.url).await {
        Ok(()) => {
            println!("using Redis at {}", RedactedUrl(&options.url));
            None
        }
        Err(err) => {
            println!("nothing usable at {}: {err}", RedactedUrl(&options.url));
            let server = RedisServer::start().await.map_err(|err| {
                format!(
                    "no Redis available: {err}. Start one (`redis-server`, `docker compose up -d \
                     redis`) or pass --url"
                )
            })?;
            println!(
                "started a private redis-server on port {} (stopped when the example ends)",
                server.port()
            );
            options.url = server.url();
            Some(server)
        }
    };
    run(&options).await?;
    Ok(())
}

/// Connects and pings, with a short timeout.
#[cfg_attr(test, allow(dead_code))]
async fn ping(url: &str) -> BoxResult<()> {
    let client = redis::Client::open(url)?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| "connect timed out after 2s")??;
    redis::cmd("PING").query_async::<()>(&mut conn).await?;
    Ok(())
}

/// The transport options of every service: seed 004's `MAXLEN`s, groups that start at the
/// beginning of their stream (nothing written before a worker starts is missed), a short claim
/// idle time, and short blocking reads so that stopping is quick.
fn options() -> TransportOptions {
    TransportOptions::default()
        .with_max_stream_length_of(EVENTS_RAW, 10_000)
        .with_max_stream_length_of(EVENTS_NORMALIZED, 10_000)
        .with_max_stream_length_of(MERGE_REQUESTS, 1_000)
        .with_max_stream_length_of(PREDICTION_REQUESTS, 5_000)
        .with_start_from(StartFrom::Beginning)
        .with_claim_idle_time(CLAIM_IDLE_TIME)
        .with_claim_interval(Duration::from_millis(100))
        .with_block_time(Duration::from_millis(200))
}

/// A transport for one worker (or the ingestion service), named `consumer`.
async fn service(url: &str, consumer: &str) -> BoxResult<RedisTransport> {
    let config = RedisConfig::default()
        .with_url(url)
        .with_consumer_name(consumer);
    Ok(RedisTransport::with_options(config, options()).await?)
}

/// What the workers have handled so far, and a wake-up for whoever waits on it.
#[derive(Default)]
struct Progress {
    seen: Mutex<Seen>,
    changed: Notify,
}

#[derive(Default)]
struct Seen {
    processed: HashSet<String>,
    /// Entry ids of `events.normalized` handled.
    entries: HashSet<String>,
    claimed: HashSet<String>,
    merges: HashSet<String>,
    predictions: HashSet<String>,
    /// Event ids whose first delivery failed on purpose.
    failed_once: HashSet<String>,
}

impl Progress {
    fn update(&self, change: impl FnOnce(&mut Seen)) {
        change(&mut self.seen.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_waiters();
    }

    /// Waits until `done` holds, or fails after [`PATIENCE`].
    async fn wait(&self, what: &str, done: impl Fn(&Seen) -> bool) -> BoxResult<()> {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if done(&self.seen.lock().unwrap_or_else(PoisonError::into_inner)) {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .map_err(|_| format!("the workers did not finish {what} within {PATIENCE:?}").into())
    }
}

/// A text field of a raw entry, or an error naming it (the entry stays pending, and after
/// `max_deliveries` it is dead-lettered with its fields).
fn field<'a>(entry: &'a RawEntry, name: &str) -> Result<&'a str, String> {
    entry
        .text(name)
        .ok_or_else(|| format!("entry {} of {} has no {name} field", entry.id, entry.stream))
}

fn now_iso() -> String {
    // Seed 004's timestamps are ISO 8601; seconds since the epoch keep the example free of a
    // date crate, and the field is text either way.
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("@{secs}")
}

/// Runs the pipeline once: starts the workers, ingests `options.events` events, waits until
/// everything is handled (claims included), stops the workers, leaves `options.leave_pending`
/// entries pending, and prints what it did.
///
/// # Errors
///
/// A Redis error, or the workers not finishing within a minute.
pub(crate) async fn run(options: &Options) -> BoxResult<Report> {
    let url = options.url.as_str();
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let progress = Arc::new(Progress::default());
    let ingestion = service(url, "ingestion").await?;
    let leftovers = left_by_earlier_runs(&ingestion).await?;
    if !leftovers.is_empty() {
        println!(
            "{} entr{} of {EVENTS_NORMALIZED} left pending in {EVENT_PROCESSORS} by an earlier \
             run: the workers claim them once idle for {CLAIM_IDLE_TIME:?}",
            leftovers.len(),
            if leftovers.len() == 1 { "y" } else { "ies" },
        );
    }

    println!("== workers start (consumer groups are created now if missing)");
    let mut workers: Vec<(RedisTransport, SubscriptionHandle)> = Vec::new();
    for name in ["worker-1", "worker-2"] {
        let transport = service(url, name).await?;
        let handle = event_processor(&transport, &progress).await?;
        workers.push((transport, handle));
    }
    let merger = service(url, "merge-worker-1").await?;
    let progress_merge = Arc::clone(&progress);
    let handle = merger
        .subscription()
        .streams([MERGE_REQUESTS])
        .group(MERGE_PROCESSORS)
        .handle_raw(move |entry: RawEntry| {
            let progress = Arc::clone(&progress_merge);
            async move {
                let brand = field(&entry, "brand_id")?;
                let profiles = field(&entry, "profile_ids")?;
                let review = field(&entry, "requires_manual_review")? == "true";
                tracing::info!(brand, profiles, review, "merge request handled");
                let key = format!("{}:{}", field(&entry, "reason")?, profiles);
                progress.update(|seen| {
                    seen.merges.insert(key);
                });
                HandlerResult::Ok(())
            }
        })
        .await?;
    workers.push((merger, handle));
    let predictor = service(url, "ml-worker-1").await?;
    let progress_predict = Arc::clone(&progress);
    let handle = predictor
        .subscription()
        .streams([PREDICTION_REQUESTS])
        .group(PREDICTION_PROCESSORS)
        .handle_raw(move |entry: RawEntry| {
            let progress = Arc::clone(&progress_predict);
            async move {
                let profile = field(&entry, "profile_id")?.to_owned();
                let request = field(&entry, "request_type")?;
                tracing::info!(profile, request, "prediction triggered");
                let key = format!("{profile}@{}", entry.id);
                progress.update(|seen| {
                    seen.predictions.insert(key);
                });
                HandlerResult::Ok(())
            }
        })
        .await?;
    workers.push((predictor, handle));
    // What `redis-cli XINFO GROUPS <stream>` shows now: each worker created its group (and the
    // stream, if missing) when it started.
    let watched = [EVENTS_NORMALIZED, MERGE_REQUESTS, PREDICTION_REQUESTS].map(str::to_owned);
    for summary in ingestion.streams_info(&watched).await? {
        let groups: Vec<&str> = summary.groups.iter().map(|g| g.name.as_str()).collect();
        println!("{}: group {}", summary.name, groups.join(", "));
    }

    println!(
        "\n== ingestion: {} event(s) to {EVENTS_RAW} and {EVENTS_NORMALIZED}",
        options.events
    );
    let mut expected = Vec::with_capacity(options.events);
    for i in 0..options.events {
        expected.push(ingest(&ingestion, run_id, i).await?);
    }
    let expected_merges = (0..options.events).filter(|i| i % 5 == 4).count();
    let expected_predictions = (0..options.events).filter(|i| i % 3 == 0).count();
    progress
        .wait("the normalized events", |seen| {
            expected.iter().all(|id| seen.processed.contains(id))
        })
        .await?;
    progress
        .wait("the entries earlier runs left pending", |seen| {
            leftovers.iter().all(|id| seen.entries.contains(id))
        })
        .await?;
    progress
        .wait("the merge and prediction requests", |seen| {
            let mine = |set: &HashSet<String>| {
                set.iter()
                    .filter(|key| key.contains(&format!("-{run_id}-")))
                    .count()
            };
            mine(&seen.merges) >= expected_merges && mine(&seen.predictions) >= expected_predictions
        })
        .await?;

    println!("\n== workers stop (each drains its running handlers)");
    for (transport, handle) in &workers {
        transport.unsubscribe(handle).await?;
    }

    let left_pending = crash_holding(&ingestion, run_id, options).await?;

    let report = {
        let seen = progress.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = |id: &&String| id.contains(&format!("-{run_id}-"));
        Report {
            ingested: options.events + options.leave_pending,
            processed: seen.processed.iter().filter(mine).count(),
            failed_first: seen.failed_once.iter().filter(mine).count(),
            claimed: seen.claimed.iter().filter(mine).count(),
            merges: seen.merges.iter().filter(mine).count(),
            recovered: leftovers.len(),
            predictions: seen.predictions.iter().filter(mine).count(),
            left_pending,
        }
    };
    println!("\n== what happened");
    println!(
        "ingested {} event(s); event-processors handled {} ({} failed once and {} were handled \
         after a claim), \
         merge-processors {} merge request(s), prediction-processors {} prediction request(s); \
         {} entr{} of earlier runs recovered, {} left pending",
        report.ingested,
        report.processed,
        report.failed_first,
        report.claimed,
        report.merges,
        report.predictions,
        report.recovered,
        if report.recovered == 1 { "y" } else { "ies" },
        report.left_pending.len(),
    );
    for summary in ingestion
        .streams_info(&[
            EVENTS_RAW.to_owned(),
            EVENTS_NORMALIZED.to_owned(),
            MERGE_REQUESTS.to_owned(),
            PREDICTION_REQUESTS.to_owned(),
        ])
        .await?
    {
        let groups: Vec<String> = summary
            .groups
            .iter()
            .map(|g| format!("{} ({} pending)", g.name, g.pending))
            .collect();
        println!(
            "{:<24} length {:>5}  groups: {}",
            summary.name,
            summary.length,
            if groups.is_empty() {
                "-".to_owned()
            } else {
                groups.join(", ")
            }
        );
    }
    println!(
        "\nTry: redis-cli XLEN {EVENTS_RAW}; redis-cli XPENDING {EVENTS_NORMALIZED} \
         {EVENT_PROCESSORS}; redis-cli XREVRANGE {EVENTS_RAW} + - COUNT 10;\n     \
         redstream serve --streams 'events.*,profiles.*,predictions.*' and \
         curl 'http://127.0.0.1:8090/api/streams/{EVENTS_NORMALIZED}/pending?group={EVENT_PROCESSORS}'"
    );
    Ok(report)
}

/// The entries pending in `event-processors` before the workers start: what the crashed worker
/// of an earlier run left. None when the stream or the group does not exist yet.
async fn left_by_earlier_runs(transport: &RedisTransport) -> BoxResult<Vec<String>> {
    let query = PendingQuery::new(RedisTransport::MAX_INSPECT_COUNT);
    match transport
        .pending(EVENTS_NORMALIZED, EVENT_PROCESSORS, query)
        .await
    {
        Ok(entries) => Ok(entries.into_iter().map(|entry| entry.id).collect()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err.into()),
    }
}

/// Starts one `event-processors` worker on `events.normalized`: a raw subscription, since the
/// entries are in the seed's flat format. Every sixth event fails on its first delivery (a
/// feature store that timed out, say): it stays pending, and once idle for
/// [`CLAIM_IDLE_TIME`] the claim loop of one of the two workers hands it over again.
async fn event_processor(
    transport: &RedisTransport,
    progress: &Arc<Progress>,
) -> BoxResult<SubscriptionHandle> {
    let progress = Arc::clone(progress);
    let publisher = transport.clone();
    let handle = transport
        .subscription()
        .streams([EVENTS_NORMALIZED])
        .group(EVENT_PROCESSORS)
        .handle_raw(move |entry: RawEntry| {
            let progress = Arc::clone(&progress);
            let publisher = publisher.clone();
            async move {
                let event_id = field(&entry, "event_id")?.to_owned();
                let brand = field(&entry, "brand_id")?.to_owned();
                let event_type = field(&entry, "event_type")?.to_owned();
                let profile = field(&entry, "profile_id")?.to_owned();
                let identifiers: serde_json::Value =
                    serde_json::from_str(field(&entry, "identifiers")?)?;
                let flaky = entry
                    .text("simulate_failure")
                    .is_some_and(|flag| flag == "first_delivery");
                if flaky && entry.deliveries == 1 {
                    progress.update(|seen| {
                        seen.failed_once.insert(event_id.clone());
                    });
                    return Err(format!("feature store timed out on {event_id}").into());
                }
                if let Some(other) = identifiers.get("matched_profile").and_then(|v| v.as_str()) {
                    let review = if other.ends_with('0') {
                        "true"
                    } else {
                        "false"
                    };
                    let reason = if review == "true" {
                        "manual_review"
                    } else {
                        "identifier_match"
                    };
                    publisher
                        .publish_fields(
                            MERGE_REQUESTS,
                            &[
                                ("brand_id", brand.as_str()),
                                ("profile_ids", &json!([profile, other]).to_string()),
                                ("reason", reason),
                                ("requires_manual_review", review),
                                ("timestamp", &now_iso()),
                            ],
                        )
                        .await?;
                }
                if event_type == "purchase" {
                    publisher
                        .publish_fields(
                            PREDICTION_REQUESTS,
                            &[
                                ("profile_id", profile.as_str()),
                                ("brand_id", &brand),
                                ("request_type", "ltv"),
                                ("timestamp", &now_iso()),
                            ],
                        )
                        .await?;
                }
                progress.update(|seen| {
                    if entry.deliveries > 1 {
                        seen.claimed.insert(event_id.clone());
                    }
                    seen.processed.insert(event_id);
                    seen.entries.insert(entry.id.clone());
                });
                HandlerResult::Ok(())
            }
        })
        .await?;
    Ok(handle)
}

/// Ingests event `i`: the raw event to `events.raw`, then the normalized one (with its profile
/// and identifiers) to `events.normalized`, as seed 004's `publishRawEvent` and
/// `publishNormalizedEvent` do. Returns the event id.
async fn ingest(ingestion: &RedisTransport, run_id: u128, i: usize) -> BoxResult<String> {
    const TYPES: [&str; 3] = ["purchase", "page_view", "whatsapp_message"];
    let event_id = format!("evt-{run_id}-{i}");
    let brand = format!("brand-{}", i % 2);
    let event_type = TYPES[i % 3];
    let phone = format!("+1555000{:04}", i % 7);
    let payload = json!({ "phone": phone, "total": 10.0 + i as f64 }).to_string();
    let timestamp = now_iso();
    ingestion
        .publish_fields(
            EVENTS_RAW,
            &[
                ("event_id", event_id.as_str()),
                ("brand_id", &brand),
                ("event_type", event_type),
                ("payload", &payload),
                ("timestamp", &timestamp),
            ],
        )
        .await?;
    // Every fifth event matches another profile's identifiers: a merge request follows.
    let profile = format!("profile-{run_id}-{}", i % 7);
    let mut identifiers = json!({ "phone": phone });
    if i % 5 == 4 {
        identifiers["matched_profile"] = json!(format!("profile-{run_id}-m{i}"));
    }
    let mut fields = vec![
        ("event_id", event_id.clone()),
        ("brand_id", brand),
        ("event_type", event_type.to_owned()),
        ("profile_id", profile),
        ("identifiers", identifiers.to_string()),
        ("normalized_payload", payload),
        ("timestamp", timestamp),
    ];
    if i % 6 == 5 {
        fields.push(("simulate_failure", "first_delivery".to_owned()));
    }
    ingestion.publish_fields(EVENTS_NORMALIZED, &fields).await?;
    Ok(event_id)
}

/// A worker of `event-processors` that reads `options.leave_pending` new entries and stops
/// without acknowledging them, as a crashed process would: they stay in the group's pending list
/// (`XPENDING events.normalized event-processors`) until a worker claims them. Returns their ids.
async fn crash_holding(
    ingestion: &RedisTransport,
    run_id: u128,
    options: &Options,
) -> BoxResult<Vec<String>> {
    if options.leave_pending == 0 {
        return Ok(Vec::new());
    }
    println!(
        "\n== {CRASHED_WORKER} reads {} new event(s) and crashes before acknowledging",
        options.leave_pending
    );
    for i in options.events..options.events + options.leave_pending {
        ingest(ingestion, run_id, i).await?;
    }
    let mut follower = ingestion
        .follow_group(&[EVENTS_NORMALIZED], EVENT_PROCESSORS, CRASHED_WORKER)
        .await?;
    let mut held = Vec::new();
    while held.len() < options.leave_pending {
        let entries = follower.next(options.leave_pending - held.len()).await?;
        held.extend(entries.into_iter().map(|entry| entry.id));
    }
    drop(follower);
    for id in &held {
        println!("pending for {CRASHED_WORKER}: {EVENTS_NORMALIZED} {id}");
    }
    Ok(held)
}
