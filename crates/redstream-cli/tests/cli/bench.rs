//! `redstream bench`: it publishes and consumes the events, reports each phase, and leaves no
//! stream behind.

use std::time::{Duration, Instant};

use redstream_testkit::RedisServer;

use crate::support::{Cli, HANG, Running, connection, raw};

/// Keys on the server whose name contains `needle` (SCAN; `needle` has no glob characters).
async fn keys_containing(server: &RedisServer, needle: &str) -> Vec<String> {
    let mut conn = connection(server).await;
    let pattern = format!("*{needle}*");
    let mut cursor = "0".to_owned();
    let mut keys = Vec::new();
    loop {
        let (next, batch): (String, Vec<String>) = raw(
            &mut conn,
            &["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"],
        )
        .await;
        keys.extend(batch);
        if next == "0" {
            return keys;
        }
        cursor = next;
    }
}

#[tokio::test]
async fn bench_reports_every_phase_and_cleans_up() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);

    let out = cli.json(&[
        "bench",
        "--events",
        "300",
        "--payload-bytes",
        "64",
        "--concurrency",
        "4",
    ]);
    assert_eq!(out["events"], 300);
    assert_eq!(out["payload_bytes"], 64);
    assert_eq!(out["concurrency"], 4);
    let prefix = out["prefix"].as_str().unwrap();
    assert!(
        prefix.starts_with(&format!("{}-bench-", cli.prefix)),
        "{prefix}"
    );
    for phase in ["publish", "raw_xadd"] {
        assert_eq!(out[phase]["events"], 300, "{out}");
        assert!(
            out[phase]["events_per_sec"].as_f64().unwrap() > 0.0,
            "{out}"
        );
        let (p50, p99) = (
            out[phase]["p50_ms"].as_f64().unwrap(),
            out[phase]["p99_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99, "{out}");
    }
    assert!(out["consume"]["events"].as_u64().unwrap() >= 300, "{out}");
    assert_eq!(out["consume"]["p50_ms"], serde_json::Value::Null);
    assert_eq!(keys_containing(&server, prefix).await, Vec::<String>::new());

    let table = cli.run(&["bench", "--events", "50"]).ok();
    for phase in ["publish", "raw XADD (baseline)", "consume", "EVENTS/S"] {
        assert!(table.contains(phase), "{table}");
    }
    assert_eq!(
        keys_containing(&server, &format!("{}-bench-", cli.prefix)).await,
        Vec::<String>::new(),
        "no bench stream is left behind"
    );

    let zero = cli.run(&["bench", "--events", "0"]);
    assert_eq!(zero.code, Some(2), "{zero:#?}");
}

#[tokio::test]
async fn an_interrupted_bench_leaves_nothing_behind() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let ours = format!("{}-bench-", cli.prefix);
    let mut running = Running::start(cli.command(&["bench", "--events", "100000"]));
    running.wait_for_stderr("bench:");

    // 100,000 events keep the consume phase long enough (seconds in a debug build) for the
    // signal to land in it. Interrupt it while it consumes, the hard case: its subscription, if left running, would
    // re-create the streams the cleanup deletes. The group exists from then on.
    let mut conn = connection(&server).await;
    let deadline = Instant::now() + HANG;
    'consuming: loop {
        for key in keys_containing(&server, &ours).await {
            if key.ends_with(":bench") {
                let groups: Vec<redis::Value> = redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                if !groups.is_empty() {
                    break 'consuming;
                }
            }
        }
        assert!(Instant::now() < deadline, "the consume phase never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.signal("INT");
    let out = running.finish();
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stderr.contains("interrupted"), "{out:#?}");
    assert_eq!(
        keys_containing(&server, &ours).await,
        Vec::<String>::new(),
        "no bench stream is left behind"
    );
}
