//! `GET /api/throughput` and the snapshots' `throughput`: rates from Redis's own counters,
//! kept by the server across page loads.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redstream_cli::serve::ServeConfig;
use serde_json::Value;

use crate::support::Dashboard;
use crate::websocket::until;

/// Adds `n` entries to `stream`, trimmed to about 5 (`MAXLEN 5`, exact).
async fn add_trimmed(conn: &mut redis::aio::MultiplexedConnection, stream: &str, n: usize) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("XADD")
            .arg(stream)
            .arg("MAXLEN")
            .arg(5)
            .arg("*")
            .arg("n")
            .arg(i)
            .ignore();
    }
    let () = pipe.query_async(conn).await.unwrap();
}

fn point<'a>(snapshot: &'a Value, stream: &str) -> Option<&'a Value> {
    snapshot["throughput"]["streams"].get(stream)
}

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// `GET /api/throughput` once it has a sample taken after `after` (Unix ms).
async fn history_after(d: &Dashboard, after: u64) -> Value {
    redstream_testkit::wait_until(
        format!("a throughput sample after {after}"),
        Duration::from_secs(60),
        || async move {
            let answer = d.get("/api/throughput").await;
            if answer.status != 200 {
                return Err(format!("{}: {}", answer.status, answer.text));
            }
            let history = answer.json();
            let last = history["t"].as_array().and_then(|t| t.last()?.as_u64());
            if last.is_some_and(|t| t > after) {
                Ok(history)
            } else {
                Err(format!("the last sample is at {last:?}"))
            }
        },
    )
    .await
    .unwrap()
}

/// What a series of the history adds up to: each sample's rate times the time since the
/// sample before it. The first sample's predecessor is not in the view, so it is left out.
fn total(history: &Value, stream: &str, what: &str) -> f64 {
    let t = history["t"].as_array().unwrap();
    let series = history["streams"][stream][what].as_array().unwrap();
    assert_eq!(series.len(), t.len(), "{history}");
    assert!(
        series[0].is_null(),
        "{stream} was sampled before it existed: {history}"
    );
    (1..t.len())
        .filter_map(|i| {
            let secs = (t[i].as_u64()? - t[i - 1].as_u64()?) as f64 / 1000.0;
            Some(series[i].as_f64()? * secs)
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn rates_come_from_entries_added_and_outlive_the_page() {
    let d = Dashboard::start(ServeConfig {
        refresh: Duration::from_secs(1),
        ..ServeConfig::default()
    })
    .await;
    // The server samples from its start; the streams come after its first kept sample, so each
    // of them is counted from its first entry.
    history_after(&d, 0).await;
    let mut conn = d.conn().await;
    add_trimmed(&mut conn, "events:trimmed", 10).await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("events:acked")
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    // 50 entries arrive on a stream whose length stays at 5, and on another the group reads 25
    // of 30 new entries and acknowledges 20.
    add_trimmed(&mut conn, "events:trimmed", 40).await;
    let mut ids = Vec::new();
    for n in 0..30 {
        let id: String = redis::cmd("XADD")
            .arg("events:acked")
            .arg("*")
            .arg("n")
            .arg(n)
            .query_async(&mut conn)
            .await
            .unwrap();
        ids.push(id);
    }
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("c")
        .arg("COUNT")
        .arg(25)
        .arg("STREAMS")
        .arg("events:acked")
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let acked: u64 = redis::cmd("XACK")
        .arg("events:acked")
        .arg("g")
        .arg(&ids[..20])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(acked, 20);
    // A sample recorded after the writes may have read during them; the one after it did not.
    let written = history_after(&d, now_ms()).await;
    let settled = written["t"].as_array().unwrap().last().unwrap().as_u64();

    // A page gets the samples in its snapshots.
    let (mut socket, _) = tokio_tungstenite::connect_async(d.ws_url("/ws"))
        .await
        .unwrap();
    let sampled = until(&mut socket, |m| {
        m["throughput"]["t"].as_u64() > settled && point(m, "events:trimmed").is_some()
    })
    .await;
    let p = point(&sampled, "events:trimmed").unwrap();
    assert_eq!(p["exact"], true, "{p}");
    assert_eq!(p["ack_rate"], Value::Null, "no groups: {p}");
    let trimmed = crate::support::stream(&sampled["streams"], "events:trimmed");
    assert_eq!(trimmed["entries_added"], 50, "{trimmed}");
    assert_eq!(trimmed["length"], 5, "{trimmed}");
    let a = point(&sampled, "events:acked").unwrap();
    assert_eq!(a["lag"], 5, "{a}");

    // The page goes away; a new one reads the history from the server.
    socket.close(None).await.unwrap();
    let history = d.get("/api/throughput").await;
    assert_eq!(history.status, 200, "{}", history.text);
    let history = history.json();
    assert_eq!(history["interval_ms"], 1000);
    assert_eq!(history["capacity"], 3600);
    let times = history["t"].as_array().unwrap();
    let at = times
        .iter()
        .position(|t| *t == sampled["throughput"]["t"])
        .unwrap_or_else(|| panic!("the snapshot's sample is not in {history}"));
    let series = &history["streams"]["events:acked"];
    assert_eq!(series["rate"][at], a["rate"]);
    assert_eq!(series["ack_rate"][at], a["ack_rate"]);
    assert_eq!(series["lag"][at], 5);
    assert_eq!(series["exact"], true);
    // 50 entries in all, though the length (5 each time) would say none after the first 5.
    let added = total(&history, "events:trimmed", "rate");
    assert!((added - 50.0).abs() < 1e-6, "{added} in {history}");
    // 30 added, 25 delivered of which 5 are still pending: 20 acknowledged; 5 behind.
    let added = total(&history, "events:acked", "rate");
    assert!((added - 30.0).abs() < 1e-6, "{added} in {history}");
    let acks = total(&history, "events:acked", "ack_rate");
    assert!((acks - 20.0).abs() < 1e-6, "{acks} in {history}");
}

/// The server samples on its own: with no page open, rates still reach `/api/throughput`.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_samples_while_no_page_is_open() {
    let d = Dashboard::start(ServeConfig {
        refresh: Duration::from_secs(1),
        ..ServeConfig::default()
    })
    .await;
    // Samples are taken from the server's start; the stream comes after the first of them, so
    // its entries are growth, not the baseline.
    history_after(&d, 0).await;
    let mut conn = d.conn().await;
    add_trimmed(&mut conn, "events:unwatched", 30).await;
    let dashboard = &d;
    let rate = redstream_testkit::wait_until(
        "a non-zero rate for events:unwatched in /api/throughput",
        Duration::from_secs(60),
        move || async move {
            let answer = dashboard.get("/api/throughput").await;
            if answer.status != 200 {
                return Err(format!("{}: {}", answer.status, answer.text));
            }
            let history = answer.json();
            let rates = history["streams"]["events:unwatched"]["rate"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            rates
                .iter()
                .filter_map(Value::as_f64)
                .find(|rate| *rate > 0.0)
                .ok_or_else(|| format!("no rate above 0 yet: {history}"))
        },
    )
    .await
    .unwrap();
    assert!(rate.is_finite(), "{rate}");
    // Nobody watched: no WebSocket was opened and no snapshot built for one.
    let metrics = d.get("/api/metrics").await.json();
    assert_eq!(metrics["dashboard"]["ws_connections_total"], 0, "{metrics}");
    assert_eq!(metrics["dashboard"]["snapshots_total"], 0, "{metrics}");
    let history = d.get("/api/throughput").await.json();
    let series = &history["streams"]["events:unwatched"];
    assert_eq!(series["exact"], true, "{series}");
    assert_eq!(
        series["rate"].as_array().unwrap().len(),
        history["t"].as_array().unwrap().len(),
        "{history}"
    );
}
