//! What the dashboard pulls from Redis does not grow with the entries' sizes: eleven dead letters
//! of 40 MiB each cost a snapshot, and every read endpoint, a bounded number of bytes (measured
//! with `INFO stats` `total_net_output_bytes`), and WebSocket connects do not cost a snapshot
//! each (measured with `INFO commandstats`). The figures are printed: run with `--nocapture`.

use redis::aio::MultiplexedConnection;
use redstream_cli::serve::ServeConfig;
use serde_json::{Value, json};
use std::time::Duration;

use crate::support::{Dashboard, read_as};
use crate::websocket::next_json;

const MIB: u64 = 1024 * 1024;

/// Eleven dead letters of this size, as in the report that found the problem.
const BIG: usize = 40 * 1024 * 1024;

/// What one snapshot or one answer may pull from Redis, whatever the entries' sizes. The
/// dashboard's own limits are lower (see docs/dashboard.md); this leaves room for `INFO`, the
/// stream summaries and the measuring itself.
const BOUND: u64 = 4 * MIB;

/// A connection that waits as long as writing 40 MiB takes on a loaded machine (the default
/// response timeout is half a second).
async fn patient(redis: &redstream_testkit::RedisServer) -> MultiplexedConnection {
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(120)));
    redis
        .client()
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

/// A `redis-server` figure from `INFO <section>`.
async fn info_field(conn: &mut MultiplexedConnection, section: &str, name: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in INFO {section}"))
        .trim()
        .parse()
        .unwrap()
}

/// Bytes the server has sent to all its clients so far.
async fn bytes_out(conn: &mut MultiplexedConnection) -> u64 {
    info_field(conn, "stats", "total_net_output_bytes").await
}

/// Commands the server has run so far, inside scripts included (`INFO commandstats`).
pub(crate) async fn commands_run(conn: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            line.split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Microseconds the server has spent in `EVALSHA` (the dashboard's scripts) so far.
async fn script_micros(conn: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:"))
        .and_then(|stats| stats.split(',').find_map(|part| part.strip_prefix("usec=")))
        .map_or(0, |usec| usec.parse().unwrap())
}

/// An envelope of about `size` bytes: a valid event whose payload is one long string.
fn big_envelope(size: usize) -> String {
    format!(
        r#"{{"v":1,"id":"019a4c6e-6000-7000-8000-000000000001","type":"upload.received","payload":{{"blob":"{}"}},"metadata":{{"priority":"normal"}}}}"#,
        "x".repeat(size)
    )
}

/// Writes eleven dead letters of 40 MiB by hand, with the fields of docs/wire-format.md, and a
/// group on the dead-letter stream that has read none of them (so that summaries look for its
/// oldest undelivered entry).
async fn big_dead_letters(conn: &mut MultiplexedConnection) -> Vec<String> {
    let envelope = big_envelope(BIG);
    let mut ids = Vec::new();
    for n in 0..11 {
        let id: String = redis::cmd("XADD")
            .arg("events:dlq")
            .arg("*")
            .arg("event")
            .arg(&envelope)
            .arg("error")
            .arg(format!("the event is too large ({n})"))
            .arg("original_type")
            .arg("upload.received")
            .arg("stream")
            .arg("events:upload.received")
            .arg("entry_id")
            .arg(format!("1700000000000-{n}"))
            .arg("group")
            .arg("ingest")
            .arg("consumer")
            .arg("ingest-1")
            .arg("deliveries")
            .arg(3)
            .arg("first_failure_ms")
            .arg(1_700_000_000_010_u64)
            .arg("last_failure_ms")
            .arg(1_700_000_000_020_u64)
            .query_async(conn)
            .await
            .unwrap();
        ids.push(id);
    }
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("events:dlq")
        .arg("dlq-readers")
        .arg("0")
        .query_async(conn)
        .await
        .unwrap();
    ids
}

fn mib(bytes: u64) -> String {
    format!("{:.3} MiB", bytes as f64 / MIB as f64)
}

#[tokio::test(flavor = "multi_thread")]
async fn forty_mib_dead_letters_cost_a_bounded_number_of_bytes() {
    let d = Dashboard::start(ServeConfig {
        refresh: Duration::from_secs(3600),
        ..ServeConfig::default()
    })
    .await;
    d.publish("order.created", json!({ "order_id": "1" })).await;
    let mut conn = patient(&d.redis).await;
    read_as(&mut conn, "events:order.created", "billing", "c1", 1).await;
    let ids = big_dead_letters(&mut conn).await;

    let micros = script_micros(&mut conn).await;
    let before = bytes_out(&mut conn).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(d.ws_url("/ws"))
        .await
        .unwrap();
    let snapshot = next_json(&mut socket).await;
    let snapshot_bytes = bytes_out(&mut conn).await - before;
    let micros = script_micros(&mut conn).await - micros;
    println!(
        "one snapshot with 11 dead letters of 40 MiB: {} pulled from Redis ({snapshot_bytes} \
         bytes); the server spent {:.1} ms in the dashboard's scripts",
        mib(snapshot_bytes),
        micros as f64 / 1000.0
    );
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["dlq"]["length"], 11);
    // Redis copies each entry it reads into the script: a snapshot stops reading past 64 MiB,
    // and the page says how many it shows of how many.
    let entries = snapshot["dlq"]["entries"].as_array().unwrap();
    println!(
        "the snapshot shows {} of the 11 dead letters",
        entries.len()
    );
    assert!((1..11).contains(&entries.len()), "{}", entries.len());
    for entry in entries {
        assert_eq!(entry["original_type"], "upload.received");
        assert_eq!(entry["deliveries"], 3);
        assert_eq!(entry["redrivable"], false, "{entry}");
        let preview = entry["payload_preview"]
            .as_str()
            .unwrap_or_else(|| panic!("{entry}"));
        assert!(preview.starts_with("{\"blob\":\"xxx"), "{preview}");
        assert!(preview.len() < 300, "{}", preview.len());
        let reason = entry["decode_error"].as_str().unwrap();
        assert!(
            reason.contains(&BIG.to_string()) || reason.contains("41943"),
            "{reason}"
        );
    }
    let groups = &snapshot["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "events:dlq")
        .unwrap()["consumer_groups"];
    assert!(
        groups[0]["oldest_undelivered_age_secs"].is_f64(),
        "{groups}"
    );
    socket.close(None).await.unwrap();
    assert!(
        snapshot_bytes < BOUND,
        "a snapshot pulled {}",
        mib(snapshot_bytes)
    );

    let mut worst = 0;
    for path in [
        "/api/dlq".to_owned(),
        "/api/dlq?count=1000".to_owned(),
        format!("/api/dlq/{}", ids[0]),
        "/api/streams/dlq?count=1000".to_owned(),
        "/api/streams/dlq?count=1".to_owned(),
        "/api/streams/info".to_owned(),
        "/api/streams".to_owned(),
        "/api/stream/dlq".to_owned(),
        "/api/metrics".to_owned(),
        "/metrics".to_owned(),
    ] {
        let before = bytes_out(&mut conn).await;
        let answer = d.get(&path).await;
        let pulled = bytes_out(&mut conn).await - before;
        println!(
            "GET {path}: {} pulled from Redis, {} answered",
            mib(pulled),
            mib(answer.text.len() as u64)
        );
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        worst = worst.max(pulled);
        if path.starts_with("/api/") {
            check_answer(&path, &answer.json());
        }
    }
    assert!(worst < BOUND, "an answer pulled {}", mib(worst));

    // Every dead letter can be listed, page by page.
    let mut listed = Vec::new();
    let mut path = "/api/dlq?count=1000".to_owned();
    loop {
        let before = bytes_out(&mut conn).await;
        let page = d.get(&path).await.json();
        let pulled = bytes_out(&mut conn).await - before;
        assert!(pulled < BOUND, "{path}: {}", mib(pulled));
        for entry in page["entries"].as_array().unwrap() {
            listed.push(entry["id"].as_str().unwrap().to_owned());
        }
        match page["next_start_id"].as_str() {
            Some(next) => path = format!("/api/dlq?count=1000&startId={next}"),
            None => break,
        }
        assert!(listed.len() <= ids.len(), "the pages do not end");
    }
    assert_eq!(listed, ids);
}

/// What each read endpoint says about a dead letter it could not read whole.
fn check_answer(path: &str, answer: &Value) {
    let too_large = |entry: &Value| {
        let reason = entry["decode_error"].as_str().unwrap_or_default();
        assert!(entry["event"].is_null(), "{path}: {entry}");
        assert!(reason.contains("bytes"), "{path}: {reason}");
    };
    if path.starts_with("/api/dlq/") {
        too_large(answer);
        let raw = answer["raw_event"].as_str().unwrap();
        assert!(raw.len() <= 4096 + 3, "{path}: {}", raw.len());
    } else if path.starts_with("/api/dlq") {
        let entries = answer["entries"].as_array().unwrap();
        assert!(!entries.is_empty(), "{path}");
        entries.iter().for_each(too_large);
    } else if path.starts_with("/api/streams/dlq") {
        let messages = answer["messages"].as_array().unwrap();
        assert!(!messages.is_empty(), "{path}");
        for message in messages {
            too_large(message);
            assert_eq!(message["truncated"], true, "{path}");
            let fields = message["fields"].as_array().unwrap();
            assert!(fields[0][1].as_str().unwrap().len() <= 4096, "{path}");
        }
    }
}

/// Connects to `/ws` and returns its first message.
async fn first_message(d: &Dashboard) -> Value {
    let (mut socket, _) = tokio_tungstenite::connect_async(d.ws_url("/ws"))
        .await
        .unwrap();
    let first = next_json(&mut socket).await;
    socket.close(None).await.unwrap();
    first
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_connects_do_not_each_cost_a_snapshot() {
    let d = Dashboard::start(ServeConfig {
        refresh: Duration::from_secs(3600),
        ..ServeConfig::default()
    })
    .await;
    let mut conn = d.conn().await;
    for n in 0..5 {
        d.publish(&format!("type.{n}"), json!({ "n": n })).await;
        read_as(&mut conn, &format!("events:type.{n}"), "g", "c", 1).await;
    }
    d.dead_letter("type.0", json!({}), "failed").await;

    // The first connect builds a snapshot: what one costs.
    let start = commands_run(&mut conn).await;
    assert_eq!(first_message(&d).await["type"], "snapshot");
    // The INFO that measures counts too: leave it out.
    let one = commands_run(&mut conn).await - start - 1;

    const CONNECTS: u64 = 60;
    let start = commands_run(&mut conn).await;
    for _ in 0..CONNECTS / 2 {
        assert_eq!(first_message(&d).await["type"], "snapshot");
    }
    let together: Vec<_> = (0..CONNECTS / 2)
        .map(|_| {
            let url = d.ws_url("/ws");
            tokio::spawn(async move {
                let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                let first = next_json(&mut socket).await;
                socket.close(None).await.unwrap();
                first
            })
        })
        .collect();
    for task in together {
        assert_eq!(task.await.unwrap()["type"], "snapshot");
    }
    let many = commands_run(&mut conn).await - start - 1;
    println!(
        "Redis commands: {one} for the first WebSocket connect (one snapshot), {many} for \
         {CONNECTS} more connects"
    );
    assert!(
        many <= one,
        "{CONNECTS} connects ran {many} commands, one snapshot runs {one}"
    );
}

/// Events within the size limit but large: a page of them ends within its budget and says where
/// to go on, and a snapshot reads the first ones whole and previews the others.
#[tokio::test(flavor = "multi_thread")]
async fn pages_of_large_events_end_within_their_budget() {
    let d = Dashboard::start(ServeConfig {
        refresh: Duration::from_secs(3600),
        ..ServeConfig::default()
    })
    .await;
    const EVENTS: usize = 12;
    let payload = json!({ "blob": "y".repeat(300 * 1024) });
    for _ in 0..EVENTS {
        d.publish("media.stored", payload.clone()).await;
        d.dead_letter("media.stored", payload.clone(), "disk full")
            .await;
    }
    let mut conn = d.conn().await;

    let mut start = "-".to_owned();
    let mut read = 0;
    let mut pages = 0;
    loop {
        let before = bytes_out(&mut conn).await;
        let page = d
            .get(&format!(
                "/api/streams/media.stored?count={EVENTS}&startId={start}"
            ))
            .await
            .json();
        let pulled = bytes_out(&mut conn).await - before;
        println!(
            "a page of {} events of 300 KiB: {} pulled",
            page["count"],
            mib(pulled)
        );
        assert!(pulled < BOUND, "{}", mib(pulled));
        for message in page["messages"].as_array().unwrap() {
            assert_eq!(
                message["event"]["type"], "media.stored",
                "{}",
                message["decode_error"]
            );
        }
        read += page["count"].as_u64().unwrap();
        pages += 1;
        match page["next_start_id"].as_str() {
            Some(next) => start = next.to_owned(),
            None => break,
        }
        assert!(pages <= EVENTS, "the pages do not end");
    }
    assert_eq!(read, EVENTS as u64);
    assert!(pages > 1, "one page of {EVENTS} events of 300 KiB");

    let listed = d.get(&format!("/api/dlq?count={EVENTS}")).await.json();
    let count = listed["count"].as_u64().unwrap();
    assert!(count > 0 && count < EVENTS as u64, "{count}");
    assert_eq!(listed["truncated"], true);
    for entry in listed["entries"].as_array().unwrap() {
        assert_eq!(entry["event"]["type"], "media.stored");
        assert_eq!(entry["redrivable"], true);
    }

    let before = bytes_out(&mut conn).await;
    let snapshot = first_message(&d).await;
    let pulled = bytes_out(&mut conn).await - before;
    println!(
        "a snapshot of {EVENTS} dead letters of 300 KiB: {} pulled",
        mib(pulled)
    );
    assert!(pulled < BOUND, "{}", mib(pulled));
    let entries = snapshot["dlq"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), EVENTS);
    let whole = entries.iter().filter(|e| e["event_id"].is_string()).count();
    assert!(whole > 0 && whole < EVENTS, "{whole} read whole");
    for entry in entries {
        assert_eq!(entry["redrivable"], true, "{entry}");
        assert!(entry["decode_error"].is_null(), "{entry}");
        let preview = entry["payload_preview"].as_str().unwrap();
        assert!(preview.starts_with("{\"blob\":\"yyy"), "{preview}");
    }
}

/// A figure of `/proc/<pid>/status`, in KiB.
#[cfg(target_os = "linux")]
fn status_kib(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .map(|kib| kib.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

/// The `redstream serve` process stays small with 40 MiB dead letters: what it never receives
/// it never holds.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn the_serve_process_stays_small() {
    let redis = redstream_testkit::RedisServer::start().await.unwrap();
    big_dead_letters(&mut patient(&redis).await).await;
    let served = crate::binary::Served::start(&redis.url(), &[], &["--refresh", "1h"]);
    let pid = served.child.id();
    let (mut socket, _) = tokio_tungstenite::connect_async(format!(
        "ws{}/ws",
        served.base.trim_start_matches("http")
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "snapshot");
    let http = reqwest::Client::new();
    for path in [
        "/api/dlq?count=1000",
        "/api/streams/dlq?count=1000",
        "/api/streams/info",
        "/metrics",
    ] {
        let answer = http
            .get(format!("{}{path}", served.base))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        answer.bytes().await.unwrap();
    }
    let peak = status_kib(pid, "VmHWM");
    let now = status_kib(pid, "VmRSS");
    println!(
        "redstream serve with 11 dead letters of 40 MiB, after a snapshot and the dead-letter \
         reads: {:.1} MiB resident, {:.1} MiB at most",
        now as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    // Less than one of the dead letters.
    assert!(peak < 40 * 1024, "{peak} KiB");
    socket.close(None).await.unwrap();
}
