//! What an operator sees: seed 000's `redis-cli` commands run against what the transport wrote
//! with default names, and the commands one poll of a consumer sends (`INFO commandstats`).

use std::process::Command;
use std::sync::Arc;

use redstream_core::{Event, HandlerResult};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport, StartFrom};
use tokio::sync::{Notify, mpsc};

use crate::support::{capture_logs, event, fast, number, pending, recv_n, unique, until, within};

/// Runs `redis-cli -p <port> <args>` against the private server and returns its output lines.
fn redis_cli(server: &RedisServer, args: &[&str]) -> Vec<String> {
    let output = Command::new("redis-cli")
        .arg("-h")
        .arg(server.host())
        .arg("-p")
        .arg(server.port().to_string())
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Seed 000's operator commands find what the transport wrote with the prefix `events` and
/// default settings: the stream, its group, a pending entry, a dead letter, and the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_operator_commands_find_what_the_transport_wrote() {
    capture_logs();
    let server = RedisServer::start().await.unwrap();
    let transport = RedisTransport::with_options(
        RedisConfig::default()
            .with_url(server.url())
            .with_stream_prefix("events")
            .with_consumer_group("order-processors")
            .with_consumer_name(unique("consumer")),
        fast().with_dead_letter_on_first_failure(true),
    )
    .await
    .unwrap();
    let release = Arc::new(Notify::new());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = {
        let release = Arc::clone(&release);
        transport
            .subscribe(vec!["order.created".to_owned()], move |event: Event| {
                let (tx, release) = (tx.clone(), Arc::clone(&release));
                async move {
                    let n = number(&event);
                    let _ = tx.send(n);
                    match n {
                        // Fails: a dead letter.
                        2 => HandlerResult::Err("card declined".into()),
                        // Held until the end: pending while redis-cli looks.
                        3 => {
                            release.notified().await;
                            HandlerResult::Ok(())
                        }
                        _ => HandlerResult::Ok(()),
                    }
                }
            })
            .await
            .unwrap()
    };
    for n in 1..=3 {
        transport.publish(event("order.created", n)).await.unwrap();
    }
    recv_n(&mut rx, 3, "the three events").await;
    until("the dead letter and one pending entry", || async {
        pending(&server, "events:order.created", "order-processors").await == 1
            && redis_cli(&server, &["XLEN", "events:dlq"]) == ["1"]
    })
    .await;

    assert_eq!(redis_cli(&server, &["XLEN", "events:order.created"]), ["3"]);
    let groups = redis_cli(&server, &["XINFO", "GROUPS", "events:order.created"]);
    assert!(
        groups.iter().any(|line| line == "order-processors"),
        "{groups:?}"
    );
    let pending_summary = redis_cli(
        &server,
        &["XPENDING", "events:order.created", "order-processors"],
    );
    assert_eq!(
        pending_summary.first().map(String::as_str),
        Some("1"),
        "{pending_summary:?}"
    );
    assert_eq!(redis_cli(&server, &["XLEN", "events:dlq"]), ["1"]);
    let mut keys = redis_cli(&server, &["--scan", "--pattern", "events:*"]);
    keys.sort();
    assert_eq!(keys, ["events:dlq", "events:order.created"]);

    release.notify_one();
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
    assert_eq!(
        redis_cli(
            &server,
            &["XPENDING", "events:order.created", "order-processors"]
        )[0],
        "0"
    );
}

/// The `calls` of one command in `INFO commandstats`.
async fn calls(server: &RedisServer, command: &str) -> u64 {
    let mut conn = server.connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Consuming and acknowledging a backlog of 300 events sends one `XREADGROUP` per poll: one
/// re-read of the consumer's own pending entries, three reads of 100, and at most one more
/// that waits for new entries. (Before priority moved into the envelope, each poll was a
/// non-blocking read of the urgent lanes and then a blocking read: at least 8.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_and_ack_send_one_read_per_poll() {
    const EVENTS: usize = 300;
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("polls");
    let transport = crate::support::transport(
        &server,
        &prefix,
        "workers",
        fast()
            .with_read_count(100)
            .with_block_time(std::time::Duration::from_secs(20))
            .with_start_from(StartFrom::Beginning),
    )
    .await;
    let events: Vec<Event> = (0..EVENTS).map(|n| event("job", n)).collect();
    transport.publish_batch(events).await.unwrap();
    let mut conn = server.connection().await.unwrap();
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = transport
        .subscribe(vec!["job".to_owned()], move |event: Event| {
            let _ = tx.send(number(&event));
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    recv_n(&mut rx, EVENTS, "the backlog").await;
    let stream = transport.names().stream("job");
    until("every entry acknowledged", || async {
        pending(&server, &stream, "workers").await == 0
    })
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
    let reads = calls(&server, "xreadgroup").await;
    let acks = calls(&server, "xack").await;
    println!("XREADGROUP calls: {reads}, XACK calls: {acks}, for {EVENTS} events");
    assert!(
        (4..=5).contains(&reads),
        "XREADGROUP was sent {reads} times"
    );
    assert!(acks >= 1, "no XACK at all");
}

/// One subscription to three streams still sends one `XREADGROUP` per poll, naming all three
/// (`COUNT` applies per stream): after the start's re-read of the consumer's own pending
/// entries (one read per stream, once), a backlog of 100 events in each is read by one read of
/// all three, and at most one more that waits. Reads per stream would take at least 9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_streams_share_one_read_per_poll() {
    const TYPES: [&str; 3] = ["job.a", "job.b", "job.c"];
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("polls-many");
    let transport = crate::support::transport(
        &server,
        &prefix,
        "workers",
        fast()
            .with_read_count(100)
            .with_block_time(std::time::Duration::from_secs(20))
            .with_start_from(StartFrom::Beginning),
    )
    .await;
    for event_type in TYPES {
        let events: Vec<Event> = (0..100).map(|n| event(event_type, n)).collect();
        transport.publish_batch(events).await.unwrap();
    }
    let mut conn = server.connection().await.unwrap();
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = transport
        .subscribe(
            TYPES.iter().map(|t| (*t).to_owned()).collect(),
            move |event: Event| {
                let _ = tx.send(number(&event));
                async { HandlerResult::Ok(()) }
            },
        )
        .await
        .unwrap();
    recv_n(&mut rx, 300, "the backlog of three streams").await;
    for event_type in TYPES {
        let stream = transport.names().stream(event_type);
        until("every entry acknowledged", || async {
            pending(&server, &stream, "workers").await == 0
        })
        .await;
    }
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
    let reads = calls(&server, "xreadgroup").await;
    println!("XREADGROUP calls: {reads}, for 3 streams of 100 events");
    assert!(
        (4..=5).contains(&reads),
        "XREADGROUP was sent {reads} times"
    );
}
