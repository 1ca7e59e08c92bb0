//! The quickstart: the README's main job.
//!
//! It finds a Redis (`REDIS_URL`, else `redis://127.0.0.1:6379`, else a private `redis-server`
//! started through the test kit), publishes events through the Redis Streams transport and
//! handles them in two consumer groups, then shows the core at work: events through the
//! in-memory bus (for unit tests), a circuit breaker tripping and recovering, and backpressure
//! dropping by strategy.
//!
//! Run it with `cargo run --example quickstart`.

// An example talks to its user on stdout.
#![allow(clippy::print_stdout)]

use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use redstream_core::{
    BackpressureConfig, BackpressureQueue, BackpressureStrategy, CircuitBreaker,
    CircuitBreakerConfig, Error, ErrorKind, Event, EventMetadata, MemoryBus, Priority, Publisher,
    PushOutcome, RedactedUrl, Subscriber,
};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport, TransportOptions};
use serde_json::json;
use tokio::sync::mpsc;

type BoxResult<T> = Result<T, Box<dyn StdError + Send + Sync>>;

/// Where the quickstart's Redis comes from. A private server lives as long as this value.
enum Redis {
    Existing(String),
    Private(Box<RedisServer>),
}

impl Redis {
    fn url(&self) -> String {
        match self {
            Self::Existing(url) => url.clone(),
            Self::Private(server) => server.url(),
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // Display, not Debug: a message over several lines prints as lines.
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> BoxResult<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,redstream_core=warn".into()),
        )
        // Colour only on a terminal: piped or logged output stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    let redis = find_redis().await?;
    transport_on_redis(&redis.url()).await?;
    memory_bus().await?;
    circuit_breaker().await?;
    backpressure().await?;
    match &redis {
        Redis::Existing(url) => println!(
            "\nDone. See what it wrote: `cargo run -p redstream-cli -- --url {} --prefix quickstart \
             streams` (or `... serve` for the dashboard on http://127.0.0.1:8090). Next: `cargo \
             test --workspace` runs every test against private Redis servers.",
            RedactedUrl(url)
        ),
        Redis::Private(_) => println!(
            "\nDone. The private redis-server stops now, with what it held; start Redis (or set \
             REDIS_URL) and run again to keep the streams, then see them with `cargo run -p \
             redstream-cli -- --prefix quickstart streams` or `... serve`. Next: `cargo test \
             --workspace` runs every test against private Redis servers."
        ),
    }
    Ok(())
}

/// Uses `REDIS_URL` (or the default local port) when it answers; otherwise starts a private
/// `redis-server`; otherwise explains how to get one.
async fn find_redis() -> BoxResult<Redis> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    println!("== Redis");
    match ping(&url).await {
        Ok(version) => {
            println!("using Redis {version} at {}", RedactedUrl(&url));
            return Ok(Redis::Existing(url));
        }
        Err(err) => println!("nothing usable at {}: {err}", RedactedUrl(&url)),
    }
    match RedisServer::start().await {
        Ok(server) => {
            let version = ping(&server.url()).await?;
            println!(
                "started a private redis-server {version} on port {} (stopped when the quickstart ends)",
                server.port()
            );
            Ok(Redis::Private(Box::new(server)))
        }
        Err(err) => Err(format!(
            "no Redis available: {err}\n\
             Start one (`docker compose up -d redis`, or install redis-server: \
             `apt-get install redis-server` / `brew install redis`) or set REDIS_URL."
        )
        .into()),
    }
}

/// Connects, pings, and returns the server's version.
async fn ping(url: &str) -> BoxResult<String> {
    let client = redis::Client::open(url)?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| "connect timed out after 2s")??;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await?;
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("(unknown version)")
        .trim()
        .to_owned();
    Ok(version)
}

/// Publishes events through the Redis transport and handles them in two consumer groups, then
/// shows the stream entry as any other client sees it.
async fn transport_on_redis(url: &str) -> BoxResult<()> {
    println!("\n== Redis Streams transport");
    let options = TransportOptions::default().with_block_time(Duration::from_millis(200));
    let connect = |group: &str| {
        let config = RedisConfig::default()
            .with_url(url)
            .with_stream_prefix("quickstart")
            .with_consumer_group(group)
            .with_consumer_name(format!("{group}-1"))
            .with_max_stream_length(1000);
        RedisTransport::with_options(config, options.clone())
    };
    let billing = connect("billing").await?;
    let shipping = connect("shipping").await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut handles = Vec::new();
    for (name, transport) in [("billing", &billing), ("shipping", &shipping)] {
        let tx = tx.clone();
        let handle = transport
            .subscribe(vec!["order.created".into()], move |event: Event| {
                let tx = tx.clone();
                async move {
                    tx.send((name, event))?;
                    Ok(())
                }
            })
            .await?;
        handles.push((transport, handle));
    }
    let mut ids = Vec::new();
    for (n, priority) in [
        (1, Priority::Normal),
        (2, Priority::High),
        (3, Priority::Normal),
    ] {
        let event = Event::new(
            "order.created",
            json!({ "order_id": format!("Q-{n}"), "total": 99.99, "items": 3 }),
            EventMetadata::default(),
        )
        .with_source("quickstart")
        .with_priority(priority);
        let entry_id = billing.publish(event).await?;
        let stream = billing.names().stream("order.created");
        println!("XADD {stream} MAXLEN ~ 1000 * event <envelope> -> {entry_id}");
        ids.push((stream, entry_id));
    }
    for _ in 0..6 {
        let (group, event) = rx.recv().await.ok_or("subscriptions stopped")?;
        println!(
            "{group:>8} handled {} ({} priority) order {}",
            event.id(),
            event.priority(),
            event.payload()["order_id"]
        );
    }
    for (transport, handle) in &handles {
        transport.unsubscribe(handle).await?;
    }

    // What redis-cli, Go or Python consumers see: one field, `event`, holding the JSON envelope.
    let (stream, entry_id) = &ids[0];
    let entries = billing
        .read_range(stream, entry_id, entry_id, 1, false)
        .await?;
    if let Some(entry) = entries.first() {
        for (field, value) in &entry.fields {
            println!("XRANGE {stream} {entry_id} {entry_id} -> {field} = {value}");
        }
    }
    Ok(())
}

/// Two consumer groups see every event; handlers are plain async closures.
async fn memory_bus() -> BoxResult<()> {
    println!("\n== In-memory bus (unit-test handlers without Redis)");
    let bus = MemoryBus::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut handles = Vec::new();
    for group in ["billing", "shipping"] {
        let member = bus.with_group(group);
        let tx = tx.clone();
        let handle = member
            .subscribe(vec!["order.created".into()], move |event: Event| {
                let tx = tx.clone();
                async move {
                    tx.send((group, event.payload()["order_id"].clone()))?;
                    Ok(())
                }
            })
            .await?;
        handles.push((member, handle));
    }
    for order in ["A-1", "A-2", "A-3"] {
        bus.publish(Event::new(
            "order.created",
            json!({ "order_id": order }),
            EventMetadata::default(),
        ))
        .await?;
    }
    for _ in 0..6 {
        let (group, order) = rx.recv().await.ok_or("bus stopped")?;
        println!("{group:>8} handled order {order}");
    }
    for (member, handle) in handles {
        member.unsubscribe(&handle).await?;
    }
    Ok(())
}

/// Trips a breaker with retryable failures, shows it rejecting, then recovering.
async fn circuit_breaker() -> BoxResult<()> {
    println!("\n== Circuit breaker");
    let breaker = CircuitBreaker::new(
        CircuitBreakerConfig::default()
            .with_failure_threshold(3)
            .with_open_duration(Duration::from_millis(200)),
    )?;
    let calls = Arc::new(AtomicU32::new(0));
    // A dependency that is down for its first three calls.
    let flaky = || {
        let calls = Arc::clone(&calls);
        async move {
            if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(Error::backend(
                    ErrorKind::Connection,
                    "PING",
                    "flaky",
                    "connection refused",
                ))
            } else {
                Ok("PONG")
            }
        }
    };
    for attempt in 1..=4 {
        match breaker.call(flaky).await {
            Ok(reply) => println!("call {attempt}: {reply}"),
            Err(err) => println!("call {attempt}: {err}"),
        }
    }
    println!("state after failures: {:?}", breaker.state());
    tokio::time::sleep(Duration::from_millis(250)).await; // the demo waits out the open duration
    let reply = breaker.call(flaky).await?;
    let stats = breaker.stats();
    println!(
        "trial call: {reply}; state {:?}, {} requests, {} rejected",
        stats.state, stats.total_requests, stats.rejected_requests
    );
    Ok(())
}

/// Pushes five events into a queue of three under each dropping strategy.
async fn backpressure() -> BoxResult<()> {
    println!("\n== Backpressure (queue of 3, five pushes)");
    for strategy in [
        BackpressureStrategy::DropOldest,
        BackpressureStrategy::DropNewest,
        BackpressureStrategy::Reject,
    ] {
        let queue = BackpressureQueue::new(BackpressureConfig {
            max_queue_size: 3,
            strategy,
            warning_threshold: 0.8,
        })?;
        let mut outcomes = Vec::new();
        for n in 1..=5 {
            outcomes.push(match queue.push(n).await {
                Ok(PushOutcome::Queued) => format!("{n}: queued"),
                Ok(PushOutcome::DroppedOldest(old)) => format!("{n}: queued, dropped {old}"),
                Ok(PushOutcome::DroppedNewest(new)) => format!("{n}: dropped {new}"),
                Err(err) => format!("{n}: {err}"),
            });
        }
        let mut kept = Vec::new();
        while let Some(item) = queue.try_pop() {
            kept.push(item);
        }
        let stats = queue.stats();
        println!(
            "{strategy:?}: [{}] -> kept {kept:?}, dropped {}, rejected {}",
            outcomes.join(", "),
            stats.dropped_events,
            stats.rejected_events
        );
    }
    Ok(())
}
