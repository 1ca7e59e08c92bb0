//! `redstream sink` says that it is stalled at its default log level: a server out of memory
//! refuses its writes, the warning appears on stderr, memory is lifted and the run completes.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use redstream_testkit::RedisServer;

use crate::{SINK_ID, STREAM, sink_command, stream_numbers, write_lines};

/// A hang guard only: each line awaited below comes within a second when the code works.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Waits for a line of `lines` that contains `needle`; returns it and the lines before it.
fn await_line(lines: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) -> String {
    loop {
        match lines.recv_timeout(HANG_GUARD) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(err) => panic!("no line with {needle:?} on stderr ({err}); saw: {seen:#?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oom_stall_is_reported_at_the_default_log_level_and_the_run_completes() {
    const LINES: u64 = 40;
    let server = RedisServer::start().await.unwrap();
    server
        .config_set("maxmemory-policy", "noeviction")
        .await
        .unwrap();
    server.config_set("maxmemory", "1").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_lines(&dir.path().join("in.jsonl"), LINES);
    let config = dir.path().join("sink.yaml");
    std::fs::write(
        &config,
        format!(
            "source:\n  input: in.jsonl\n  checkpoint: in.checkpoint\n  event_type: line.read\n  \
             batch_events: 10\n\
             sink:\n  id: {SINK_ID}\n  uri: {}\n  stream: \"{STREAM}\"\n  \
             retry:\n    initial_delay: 10ms\n    max_delay: 100ms\n    max_attempts: unlimited\n",
            server.url()
        ),
    )
    .unwrap();

    // The default log level: no --log, no RUST_LOG.
    let started = std::time::Instant::now();
    let mut child = sink_command(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });

    let mut seen = Vec::new();
    let stalled = await_line(&lines, "sink stalled", &mut seen);
    eprintln!("{stalled}");
    for part in [
        "WARN",
        "waiting for memory on the server",
        SINK_ID,
        "failures=1",
        "stalled_for=",
        "out_of_memory",
    ] {
        assert!(stalled.contains(part), "{part} not in: {stalled}");
    }
    let mut conn = server.connection().await.unwrap();
    assert!(stream_numbers(&mut conn).await.is_empty());

    server.config_set("maxmemory", "0").await.unwrap();
    let recovered = await_line(&lines, "sink writing again after a stall", &mut seen);
    eprintln!("{recovered}");
    assert!(recovered.contains("stalled_for="), "{recovered}");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    reader.join().unwrap();
    seen.extend(lines.try_iter());
    assert!(output.status.success(), "{seen:#?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["events"], LINES);
    assert!(stream_numbers(&mut conn).await.into_iter().eq(0..LINES));
    // Rate-limited: at most one warning per 10 s of the stall (plus the first), however many
    // attempts it took.
    let warnings = 1 + seen.iter().filter(|l| l.contains("sink stalled")).count();
    let allowed = 1 + started.elapsed().as_secs() / 10;
    assert!(warnings as u64 <= allowed, "{warnings} warnings: {seen:#?}");
}
