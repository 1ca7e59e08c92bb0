//! `redstream sink`: the runnable sink, killed and restarted, against a private redis-server.

#![allow(clippy::unwrap_used)]

mod stalls;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redstream_testkit::RedisServer;

const STREAM: &str = "{lines}.events";
const SINK_ID: &str = "lines";

fn write_config(dir: &Path, url: &str, batch_events: usize) -> std::path::PathBuf {
    let path = dir.join("sink.yaml");
    std::fs::write(
        &path,
        format!(
            "source:\n  input: in.jsonl\n  checkpoint: in.checkpoint\n  event_type: line.read\n  \
             batch_events: {batch_events}\n\
             sink:\n  id: {SINK_ID}\n  uri: {url}\n  stream: \"{STREAM}\"\n  \
             retry:\n    initial_delay: 10ms\n    max_delay: 100ms\n"
        ),
    )
    .unwrap();
    path
}

fn write_lines(path: &Path, count: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for n in 0..count {
        writeln!(file, "{{\"n\":{n},\"note\":\"line {n} of the input\"}}").unwrap();
    }
    file.flush().unwrap();
}

/// The `n` of every entry of the stream, in stream order.
async fn stream_numbers(conn: &mut MultiplexedConnection) -> Vec<u64> {
    let mut numbers = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(10_000)
            .query_async(conn)
            .await
            .unwrap();
        let Some((last, _)) = entries.last() else {
            return numbers;
        };
        start = format!("({last}");
        for (_, fields) in &entries {
            let envelope: serde_json::Value = serde_json::from_str(&fields[0].1).unwrap();
            numbers.push(envelope["payload"]["n"].as_u64().unwrap());
        }
    }
}

async fn xlen(conn: &mut MultiplexedConnection) -> u64 {
    redis::cmd("XLEN")
        .arg(STREAM)
        .query_async(conn)
        .await
        .unwrap()
}

/// The offsets the checkpoint file and the progress key hold.
async fn offsets(dir: &Path, conn: &mut MultiplexedConnection) -> (u64, u64) {
    let file = match std::fs::read_to_string(dir.join("in.checkpoint")) {
        Ok(text) => serde_json::from_str::<serde_json::Value>(&text).unwrap()["offset"]
            .as_u64()
            .unwrap(),
        Err(_) => 0,
    };
    let key: Option<String> = redis::cmd("HGET")
        .arg(format!("{STREAM}:redstream-sink:{SINK_ID}"))
        .arg("position")
        .query_async(conn)
        .await
        .unwrap();
    // The key's position is `<offset>:<len>:<hash>` (the offset and a fingerprint of the bytes
    // before it); the offset is what is compared here.
    let key_offset = |k: String| k.split(':').next().unwrap().parse().unwrap();
    (file, key.map_or(0, key_offset))
}

fn sink_command(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_redstream"));
    command
        .args(["--json", "sink", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_points_loses_and_duplicates_nothing() {
    const LINES: u64 = 50_000;
    let server = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    write_lines(&input, LINES);
    let config = write_config(dir.path(), &server.url(), 250);
    let mut conn = server.connection().await.unwrap();

    let mut kills = 0;
    // Kills that landed after a batch's script ran and before its checkpoint file was renamed.
    let mut between_script_and_checkpoint = 0;
    let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
    loop {
        // Output goes to files, never to pipes nobody reads while the child runs: a full pipe
        // would block the child and hang the test.
        let mut child = sink_command(&config)
            .stdout(log("run.stdout"))
            .stderr(log("run.stderr"))
            .spawn()
            .unwrap();
        // Half the kills right after the stream grows past a random point (a batch has just
        // been written, and its checkpoint is being saved), half after a random delay.
        let len = xlen(&mut conn).await;
        let finished = if kills % 2 == 0 {
            let target = len + fastrand::u64(1..2_500);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break true;
                }
                if xlen(&mut conn).await >= target {
                    break false;
                }
            }
        } else {
            let deadline = std::time::Instant::now() + Duration::from_millis(fastrand::u64(1..150));
            loop {
                if child.try_wait().unwrap().is_some() {
                    break true;
                }
                if std::time::Instant::now() >= deadline {
                    break false;
                }
                tokio::task::yield_now().await;
            }
        };
        if finished {
            let status = child.wait().unwrap();
            let stdout = std::fs::read(dir.path().join("run.stdout")).unwrap();
            let stderr = std::fs::read(dir.path().join("run.stderr")).unwrap();
            assert!(status.success(), "{}", String::from_utf8_lossy(&stderr));
            let report: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
            assert_eq!(report["interrupted"], false);
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        let (file, key) = offsets(dir.path(), &mut conn).await;
        assert!(
            file <= key,
            "checkpoint file {file} ahead of the progress key {key}"
        );
        if file < key {
            between_script_and_checkpoint += 1;
        }
    }
    eprintln!(
        "{kills} kills, {between_script_and_checkpoint} between a batch's script and its checkpoint"
    );
    assert!(
        kills >= 10,
        "only {kills} kills: the run finished too early to test anything"
    );
    assert!(
        between_script_and_checkpoint >= 1,
        "no kill landed between a batch's script and its checkpoint in {kills} kills"
    );

    let numbers = stream_numbers(&mut conn).await;
    assert_eq!(numbers.len() as u64, LINES, "lost or duplicated lines");
    assert!(numbers.iter().copied().eq(0..LINES), "lines out of order");
    let (file, key) = offsets(dir.path(), &mut conn).await;
    let len = std::fs::metadata(&input).unwrap().len();
    assert_eq!((file, key), (len, len));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_on_stdin_checkpoints_and_the_next_run_resumes() {
    let server = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server.url(), 100);
    let mut conn = server.connection().await.unwrap();
    let first: String = (0..30).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let rest: String = (30..50).map(|n| format!("{{\"n\":{n}}}\n")).collect();

    let mut child = sink_command(&config)
        .args(["--input", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(first.as_bytes()).unwrap();
    stdin.flush().unwrap();
    // The 30 lines fill no batch of 100: the linger sends them. Wait until they are in, or
    // fail with the child's output if it exited instead.
    while xlen(&mut conn).await < 30 {
        if child.try_wait().unwrap().is_some() {
            drop(stdin);
            let output = child.wait_with_output().unwrap();
            panic!(
                "redstream sink exited ({}) before writing the 30 lines: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        tokio::task::yield_now().await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["interrupted"], true);
    assert_eq!(report["events"], 30);

    // The same input again, now complete: the first 30 lines are skipped, not rewritten.
    let mut child = sink_command(&config)
        .args(["--input", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(first.as_bytes()).unwrap();
    stdin.write_all(rest.as_bytes()).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["events"], 20);
    assert_eq!(report["resumed_from"], first.len());
    assert!(stream_numbers(&mut conn).await.into_iter().eq(0..50));
}

#[tokio::test]
async fn a_bad_config_fails_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.yaml");
    // Current names, and the old ones (`uri`, `send_timeout`): the field is named by its
    // current name, the connection's `response_timeout`.
    for (url, timeout) in [("url", "response_timeout"), ("uri", "send_timeout")] {
        std::fs::write(
            &path,
            format!(
                "source:\n  input: in.jsonl\n  checkpoint: c\n  event_type: t\n\
                 sink:\n  id: s\n  {url}: redis://:hunter2@127.0.0.1:1\n  stream: x\n  \
                 {timeout}: 0s\n"
            ),
        )
        .unwrap();
        let output = sink_command(&path).output().unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("config field response_timeout"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

/// `--url` on the command line replaces the configuration's `sink.url` (or its old name `uri`) (here a server that is
/// gone, tried at most twice); `--prefix` does not apply to a sink and is refused.
#[tokio::test(flavor = "multi_thread")]
async fn url_on_the_command_line_replaces_the_config_uri() {
    let server = RedisServer::start().await.unwrap();
    let gone = RedisServer::start().await.unwrap();
    let gone_url = gone.url();
    gone.kill().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sink.yaml");
    std::fs::write(
        &config,
        format!(
            "source:\n  input: in.jsonl\n  checkpoint: in.checkpoint\n  event_type: line.read\n\
             sink:\n  id: {SINK_ID}\n  uri: {gone_url}\n  stream: \"{STREAM}\"\n  \
             retry:\n    initial_delay: 10ms\n    max_delay: 10ms\n    max_attempts: 2\n"
        ),
    )
    .unwrap();
    write_lines(&dir.path().join("in.jsonl"), 25);

    // Without --url the configured (dead) server is used, and the run fails.
    let output = sink_command(&config)
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    // REDIS_URL in the environment does not override the file.
    let output = sink_command(&config)
        .env("REDIS_URL", server.url())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));

    let output = sink_command(&config)
        .args(["--url", &server.url()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut conn = server.connection().await.unwrap();
    assert!(stream_numbers(&mut conn).await.into_iter().eq(0..25));

    let output = sink_command(&config)
        .args(["--url", &server.url(), "--prefix", "other"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--prefix does not apply"), "{stderr}");

    // A file that names the URL `url` (today's name) is replaced the same way.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("  uri: ", "  url: ")).unwrap();
    let _: () = redis::cmd("DEL")
        .arg(STREAM)
        .query_async(&mut conn)
        .await
        .unwrap();
    std::fs::remove_file(dir.path().join("in.checkpoint")).unwrap_or(());
    let output = sink_command(&config)
        .args(["--url", &server.url()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
