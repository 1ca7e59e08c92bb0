//! `/metrics` while events flow: the entries-added counter grows by what was published, lag in
//! entries and in seconds follow what a group has read, and dead letters are counted by the
//! stream they came from (docs/observability.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redstream_cli::serve::ServeConfig;
use redstream_core::{Event, EventMetadata};
use redstream_testkit::wait_until;
use serde_json::json;

use crate::support::Dashboard;

const STREAM: &str = "events:order.created";
const GROUP: &str = "billing";

/// The value of `series` (a name with its labels, as rendered) in a scrape, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        Some(value.parse().unwrap())
    })
}

#[track_caller]
fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn group_series(name: &str) -> String {
    format!("{name}{{stream=\"{STREAM}\",group=\"{GROUP}\"}}")
}

fn stream_series(name: &str) -> String {
    format!("{name}{{stream=\"{STREAM}\"}}")
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn id_ms(id: &str) -> f64 {
    id.split_once('-').unwrap().0.parse().unwrap()
}

async fn publish(d: &Dashboard, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(d.publish("order.created", json!({ "n": i })).await);
    }
    ids
}

/// Reads `count` new entries as `consumer` of the group and acknowledges the first `ack` of
/// them; returns the ids read.
async fn consume(conn: &mut MultiplexedConnection, count: usize, ack: usize) -> Vec<String> {
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("worker-1")
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(STREAM)
        .arg(">")
        .query_async(conn)
        .await
        .unwrap();
    let ids: Vec<String> = reply.keys[0].ids.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), count);
    if ack > 0 {
        let acked: u64 = redis::cmd("XACK")
            .arg(STREAM)
            .arg(GROUP)
            .arg(&ids[..ack])
            .query_async(conn)
            .await
            .unwrap();
        assert_eq!(acked, ack as u64);
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_and_lag_follow_the_flow_of_events() {
    let d = Dashboard::start(ServeConfig::default()).await;
    let mut conn = d.conn().await;

    // Three events, and a group created before any of them was delivered.
    publish(&d, 3).await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM)
        .arg(GROUP)
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let first = d.get("/metrics").await;
    assert_eq!(first.status, 200, "{}", first.text);
    let first = first.text;
    let added_before = value(
        &first,
        &stream_series("redstream_stream_entries_added_total"),
    );
    assert_eq!(added_before, 3.0, "{first}");
    assert!(first.contains("# TYPE redstream_stream_entries_added_total counter"));
    assert_eq!(
        value(&first, &group_series("redstream_stream_group_lag")),
        3.0
    );
    assert_eq!(
        value(&first, &group_series("redstream_stream_group_consumers")),
        0.0
    );

    // Four more; the group reads five and acknowledges three: two wait, two are pending.
    let published = publish(&d, 4).await;
    let read = consume(&mut conn, 5, 3).await;
    let waiting = &published[2]; // the 6th entry: the first not delivered to the group
    let before_ms = now_ms();
    // Lag in seconds is the age of the oldest waiting entry; it is above 0 once a microsecond
    // has passed on the server since that entry's millisecond, which the scrape awaits.
    let second = wait_until(
        "lag in seconds above 0",
        Duration::from_secs(60),
        || async {
            let text = d.get("/metrics").await.text;
            match sample(&text, &group_series("redstream_stream_group_lag_seconds")) {
                Some(lag) if lag > 0.0 => Ok(text),
                other => Err(format!("lag_seconds {other:?}")),
            }
        },
    )
    .await
    .unwrap();
    let after_ms = now_ms();
    let added = value(
        &second,
        &stream_series("redstream_stream_entries_added_total"),
    );
    assert_eq!(added - added_before, 4.0, "grew by what was published");
    assert_eq!(
        value(&second, &group_series("redstream_stream_group_lag")),
        2.0,
        "lag is the undelivered count"
    );
    assert_eq!(
        value(
            &second,
            &group_series("redstream_stream_group_messages_pending")
        ),
        2.0
    );
    assert_eq!(
        value(&second, &group_series("redstream_stream_group_consumers")),
        1.0
    );
    // The lag in seconds is the age of the 6th entry (the server and the test share a clock),
    // not of the first, and no older than the oldest pending entry (the 4th).
    let lag_seconds = value(&second, &group_series("redstream_stream_group_lag_seconds"));
    let low = (before_ms - id_ms(waiting)) / 1000.0 - 0.002;
    let high = (after_ms - id_ms(waiting)) / 1000.0 + 0.002;
    assert!(
        (low..=high).contains(&lag_seconds),
        "lag_seconds {lag_seconds} not in {low}..={high}"
    );
    let oldest_pending = value(
        &second,
        &group_series("redstream_stream_group_oldest_pending_age_seconds"),
    );
    assert!(
        oldest_pending >= lag_seconds,
        "{oldest_pending} < {lag_seconds}"
    );
    let pending_low = (before_ms - id_ms(&read[3])) / 1000.0 - 0.002;
    assert!(
        oldest_pending >= pending_low,
        "{oldest_pending} < {pending_low}"
    );

    // Trimming removes entries but not what the counter counted.
    let _: u64 = redis::cmd("XTRIM")
        .arg(STREAM)
        .arg("MAXLEN")
        .arg(4)
        .query_async(&mut conn)
        .await
        .unwrap();
    // The group reads the last two: nothing waits, so lag and lag in seconds are 0.
    consume(&mut conn, 2, 0).await;
    let third = d.get("/metrics").await.text;
    assert_eq!(
        value(&third, &group_series("redstream_stream_group_lag")),
        0.0
    );
    assert_eq!(
        value(&third, &group_series("redstream_stream_group_lag_seconds")),
        0.0
    );
    assert_eq!(
        value(&third, &stream_series("redstream_stream_length")),
        4.0
    );
    assert_eq!(
        value(
            &third,
            &stream_series("redstream_stream_entries_added_total")
        ),
        7.0,
        "trimming does not lower the counter"
    );
    assert_eq!(
        value(
            &third,
            &group_series("redstream_stream_group_messages_pending")
        ),
        4.0
    );
    assert_eq!(
        value(&third, &stream_series("redstream_stream_dead_letters")),
        0.0
    );
    assert_eq!(sample(&third, "redstream_dlq_length"), Some(0.0));
    assert_eq!(sample(&third, "redstream_dlq_entries_added_total"), None);

    // One event of the stream is dead-lettered.
    let event = Event::new(
        "order.created",
        json!({ "n": 99 }),
        EventMetadata::default(),
    );
    d.transport
        .publish_to_dlq(event, "card declined")
        .await
        .unwrap();
    let fourth = d.get("/metrics").await.text;
    assert_eq!(
        value(&fourth, &stream_series("redstream_stream_dead_letters")),
        1.0
    );
    assert_eq!(value(&fourth, "redstream_dlq_entries_added_total"), 1.0);
    assert_eq!(value(&fourth, "redstream_dlq_length"), 1.0);
    assert_eq!(value(&fourth, "redstream_dlq_dead_letters_counted"), 1.0);
    assert_eq!(
        value(
            &fourth,
            &stream_series("redstream_stream_entries_added_total")
        ),
        7.0,
        "dead-lettering adds nothing to the original stream"
    );
}

/// Every metric name docs/observability.md lists is described by `/metrics` (`# TYPE`), and the
/// other way round: the page and the endpoint cannot drift apart.
#[tokio::test(flavor = "multi_thread")]
async fn the_documented_metrics_are_the_exposed_ones() {
    let d = Dashboard::start(ServeConfig::default()).await;
    d.publish("order.created", json!({})).await;
    let mut conn = d.conn().await;
    crate::support::read_as(&mut conn, STREAM, GROUP, "c1", 1).await;
    d.dead_letter("order.created", json!({}), "failed").await;
    d.get("/api/streams").await;
    let text = d.get("/metrics").await.text;
    let exposed: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let doc = include_str!("../../../../docs/observability.md");
    // The metrics tables: rows "| `redstream_...` | gauge |" (or counter).
    let documented: std::collections::BTreeSet<&str> = doc
        .lines()
        .filter_map(|l| {
            let mut cells = l.strip_prefix('|')?.split('|').map(str::trim);
            let name = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            matches!(cells.next()?, "gauge" | "counter").then_some(name)
        })
        .collect();
    assert!(documented.len() > 30, "{documented:?}");
    let undocumented: Vec<_> = exposed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/observability.md: {undocumented:?}"
    );
    // Every documented one is exposed on Redis 7 with a stream, a group and a dead letter, but
    // the count of failed Redis calls, which has a series per kind of failure seen.
    let absent: Vec<_> = documented
        .difference(&exposed)
        .filter(|name| **name != "redstream_dashboard_redis_errors_total")
        .collect();
    assert!(
        absent.is_empty(),
        "documented, not exposed: {absent:?}\n{text}"
    );
}
