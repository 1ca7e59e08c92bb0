//! `GET /api/throughput` and the snapshots' `throughput`: rates from Redis's own counters,
//! kept by the server across page loads.

use std::time::Duration;

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

#[tokio::test(flavor = "multi_thread")]
async fn rates_come_from_entries_added_and_outlive_the_page() {
    let d = Dashboard::start(ServeConfig {
        refresh: Duration::from_secs(1),
        ..ServeConfig::default()
    })
    .await;
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
    let (mut socket, _) = tokio_tungstenite::connect_async(d.ws_url("/ws"))
        .await
        .unwrap();
    // The first snapshot has no rate yet. Then 40 entries arrive on a stream whose length stays
    // at 5, and on another the group reads 25 of 30 new entries and acknowledges 20.
    let first = until(&mut socket, |m| m["type"] == "snapshot").await;
    let first_t = first["generated_at_ms"].as_u64().unwrap();
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
    let sampled = until(&mut socket, |m| {
        m["generated_at_ms"].as_u64() > Some(first_t) && point(m, "events:trimmed").is_some()
    })
    .await;
    let secs = (sampled["throughput"]["t"].as_u64().unwrap() - first_t) as f64 / 1000.0;
    let per_sample = |p: &Value, what: &str| p[what].as_f64().unwrap() * secs;
    // 40 entries over the time between the samples: the length (5 both times) would say 0.
    let p = point(&sampled, "events:trimmed").unwrap();
    assert_eq!(p["exact"], true, "{p}");
    assert!(
        (per_sample(p, "rate") - 40.0).abs() < 1e-6,
        "{p} over {secs} s"
    );
    assert_eq!(p["ack_rate"], Value::Null, "no groups: {p}");
    let trimmed = crate::support::stream(&sampled["streams"], "events:trimmed");
    assert_eq!(trimmed["entries_added"], 50, "{trimmed}");
    assert_eq!(trimmed["length"], 5, "{trimmed}");
    // 30 added, 25 delivered of which 5 are still pending: 20 acknowledged; 5 behind.
    let a = point(&sampled, "events:acked").unwrap();
    assert!(
        (per_sample(a, "rate") - 30.0).abs() < 1e-6,
        "{a} over {secs} s"
    );
    assert!(
        (per_sample(a, "ack_rate") - 20.0).abs() < 1e-6,
        "{a} over {secs} s"
    );
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
        .unwrap_or_else(|| panic!("the sample is not in {history}"));
    let series = &history["streams"]["events:acked"];
    assert_eq!(series["rate"][at], a["rate"]);
    assert_eq!(series["ack_rate"][at], a["ack_rate"]);
    assert_eq!(series["lag"][at], 5);
    assert_eq!(series["exact"], true);
    assert_eq!(series["rate"].as_array().unwrap().len(), times.len());
}
