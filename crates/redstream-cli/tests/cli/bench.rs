//! `redstream bench`: it publishes and consumes the events, reports each phase, and leaves no
//! stream behind.

use redstream_testkit::RedisServer;

use crate::support::{Cli, connection, raw};

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
