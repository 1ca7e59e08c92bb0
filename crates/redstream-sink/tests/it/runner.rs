//! The JSON-lines runner: file checkpoints, resuming, invalid lines.

use std::path::Path;

use redstream_core::ErrorKind;
use redstream_sink::runner::{self, LineFormat, OnInvalid, RunnerConfig};
use redstream_testkit::RedisServer;

use crate::config;

/// The `n` payloads `{"n": i}` of the stream, in order.
async fn stream_numbers(server: &RedisServer, stream: &str) -> Vec<u64> {
    let mut conn = server.connection().await.unwrap();
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|(_, fields)| {
            let json: serde_json::Value = serde_json::from_str(&fields[0].1).unwrap();
            json["payload"]["n"].as_u64().unwrap()
        })
        .collect()
}

fn write_lines(path: &Path, range: std::ops::Range<u64>) {
    let text: String = range.map(|n| format!("{{\"n\":{n}}}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn runner_config(server: &RedisServer, dir: &Path, stream: &str) -> RunnerConfig {
    let mut config = RunnerConfig::new(
        dir.join("in.jsonl"),
        dir.join("in.checkpoint"),
        "line.read",
        config(&server.url(), stream),
    );
    config.source.batch_events = 7;
    config
}

fn checkpoint_offset(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("in.checkpoint")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["offset"].as_u64().unwrap()
}

#[tokio::test]
async fn writes_every_line_once_and_a_rerun_writes_nothing() {
    let server = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = "{run}.events";
    write_lines(&dir.path().join("in.jsonl"), 0..100);
    let config = runner_config(&server, dir.path(), stream);

    let report = runner::run(config.clone(), std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.events, 100);
    assert_eq!(report.batches, 15);
    let len = std::fs::metadata(dir.path().join("in.jsonl"))
        .unwrap()
        .len();
    assert_eq!(report.offset, len);
    assert_eq!(checkpoint_offset(dir.path()), len);
    assert_eq!(
        stream_numbers(&server, stream).await,
        (0..100).collect::<Vec<_>>()
    );

    let again = runner::run(config, std::future::pending()).await.unwrap();
    assert_eq!(again.resumed_from, len);
    assert_eq!(again.events, 0);
    assert_eq!(stream_numbers(&server, stream).await.len(), 100);
}

#[tokio::test]
async fn appended_lines_are_written_on_the_next_run() {
    let server = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = "{append}.events";
    let input = dir.path().join("in.jsonl");
    write_lines(&input, 0..10);
    let config = runner_config(&server, dir.path(), stream);
    runner::run(config.clone(), std::future::pending())
        .await
        .unwrap();
    // A last line without its newline is a line too.
    let mut text = std::fs::read_to_string(&input).unwrap();
    text.push_str("{\"n\":10}\n{\"n\":11}");
    std::fs::write(&input, text).unwrap();
    let report = runner::run(config, std::future::pending()).await.unwrap();
    assert_eq!(report.events, 2);
    assert_eq!(
        stream_numbers(&server, stream).await,
        (0..12).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_progress_key_wins_over_an_older_checkpoint_file() {
    let server = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = "{ahead}.events";
    write_lines(&dir.path().join("in.jsonl"), 0..20);
    let config = runner_config(&server, dir.path(), stream);
    runner::run(config.clone(), std::future::pending())
        .await
        .unwrap();
    let len = checkpoint_offset(dir.path());
    // As if the last run died after its last batch script and before renaming its checkpoint
    // file.
    std::fs::write(
        dir.path().join("in.checkpoint"),
        format!(
            "{{\"input\":{:?},\"offset\":12}}",
            dir.path().join("in.jsonl").display().to_string()
        ),
    )
    .unwrap();
    let report = runner::run(config, std::future::pending()).await.unwrap();
    assert_eq!(report.resumed_from, len);
    assert_eq!(report.events, 0);
    assert_eq!(checkpoint_offset(dir.path()), len, "the file is repaired");
    assert_eq!(
        stream_numbers(&server, stream).await,
        (0..20).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_invalid_line_stops_the_run_after_writing_the_lines_before_it() {
    let server = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = "{bad}.events";
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"n\":0}\n\n{\"n\":1}\n{\"n\": oops}\n{\"n\":2}\n").unwrap();
    let config = runner_config(&server, dir.path(), stream);
    let err = runner::run(config.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("line 4 of"), "{err}");
    assert!(err.to_string().contains("not valid JSON"), "{err}");
    assert_eq!(stream_numbers(&server, stream).await, vec![0, 1]);
    assert_eq!(checkpoint_offset(dir.path()), 17);

    // Fixed, the run resumes at the bad line's place.
    std::fs::write(&input, "{\"n\":0}\n\n{\"n\":1}\n{\"n\":3}\n{\"n\":2}\n").unwrap();
    let report = runner::run(config, std::future::pending()).await.unwrap();
    assert_eq!(report.resumed_from, 17);
    assert_eq!(report.events, 2);
    assert_eq!(stream_numbers(&server, stream).await, vec![0, 1, 3, 2]);
}

#[tokio::test]
async fn skipped_invalid_lines_are_counted() {
    let server = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = "{skip}.events";
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"n\":0}\nnot json\n{\"n\":1}\n",
    )
    .unwrap();
    let mut config = runner_config(&server, dir.path(), stream);
    config.source.on_invalid = OnInvalid::Skip;
    let report = runner::run(config, std::future::pending()).await.unwrap();
    assert_eq!(report.skipped_lines, 1);
    assert_eq!(report.lines, 3);
    assert_eq!(stream_numbers(&server, stream).await, vec![0, 1]);
}

#[tokio::test]
async fn envelope_lines_keep_their_ids() {
    let server = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = "{env}.events";
    let events = crate::events(3);
    let text: String = events
        .iter()
        .map(|e| {
            redstream_core::wire::encode(e, &redstream_core::EventLimits::default()).unwrap() + "\n"
        })
        .collect();
    std::fs::write(dir.path().join("in.jsonl"), text).unwrap();
    let mut config = runner_config(&server, dir.path(), stream);
    config.source.format = LineFormat::Envelope;
    config.source.event_type = None;
    runner::run(config, std::future::pending()).await.unwrap();
    let mut conn = server.connection().await.unwrap();
    assert_eq!(
        crate::stream_ids(&mut conn, stream).await,
        crate::ids(&events)
    );
}

#[tokio::test]
async fn config_files_resolve_paths_and_name_bad_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.yaml");
    std::fs::write(
        &path,
        "source:\n  input: in.jsonl\n  checkpoint: in.checkpoint\n  event_type: line.read\n\
         sink:\n  id: s\n  uri: redis://127.0.0.1:1\n  stream: \"{x}.events\"\n",
    )
    .unwrap();
    let config = RunnerConfig::from_file(&path).unwrap();
    assert_eq!(config.source.input, dir.path().join("in.jsonl"));
    assert_eq!(config.source.checkpoint, dir.path().join("in.checkpoint"));

    std::fs::write(
        &path,
        "source:\n  input: in.jsonl\n  checkpoint: c\n\
         sink:\n  id: s\n  stream: x\n",
    )
    .unwrap();
    let err = RunnerConfig::from_file(&path).unwrap_err();
    assert!(err.to_string().contains("source.event_type"), "{err}");

    std::fs::write(
        &path,
        "source:\n  input: in.jsonl\n  checkpoint: c\n  event_type: t\n  batch_events: many\n\
         sink:\n  id: s\n  stream: x\n",
    )
    .unwrap();
    let err = RunnerConfig::from_file(&path).unwrap_err();
    assert!(err.to_string().contains("source.batch_events"), "{err}");
}

/// The sink section takes `url` (or its old name `uri`, not both) and the Sentinel settings,
/// as `redstream sink` reads them; `--url` replaces the sink's `uri` in code, which a file
/// that gave `uri` allows.
#[test]
fn runner_files_take_url_uri_and_the_sentinel_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.yaml");
    let source = "source:\n  input: in.jsonl\n  checkpoint: c\n  event_type: t\n";
    std::fs::write(
        &path,
        format!(
            "{source}sink:\n  id: s\n  url: redis-sentinel://s1:26379,s2:26379\n  \
             master_name: mymaster\n  sentinel_password: sentinel-secret\n  stream: x\n"
        ),
    )
    .unwrap();
    let config = RunnerConfig::from_file(&path).unwrap();
    let options = config.sink.connection_options();
    assert_eq!(options.url, "redis-sentinel://s1:26379,s2:26379");
    assert_eq!(options.master_name.as_deref(), Some("mymaster"));
    assert!(!format!("{config:?}").contains("sentinel-secret"));

    std::fs::write(
        &path,
        format!("{source}sink:\n  id: s\n  uri: redis-cluster://h1:6379,h2:6379\n  stream: x\n"),
    )
    .unwrap();
    let mut config = RunnerConfig::from_file(&path).unwrap();
    assert_eq!(config.sink.redis_url(), "redis-cluster://h1:6379,h2:6379");
    config.sink.connection.url = "redis://127.0.0.1:2".to_owned();
    config.sink.validate().unwrap();
    assert_eq!(config.sink.redis_url(), "redis://127.0.0.1:2");

    std::fs::write(
        &path,
        format!(
            "{source}sink:\n  id: s\n  url: redis://h:1\n  uri: redis://:hunter2@h:2\n  \
             stream: x\n"
        ),
    )
    .unwrap();
    let err = RunnerConfig::from_file(&path).unwrap_err();
    assert!(err.to_string().contains("config field sink.uri"), "{err}");
    assert!(err.to_string().contains("old name of `url`"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// Every section of a runner's configuration file refuses a field it does not know, naming
/// where it is: the top level, `source`, `sink` and the sink's `retry`, `tls` and
/// `durability`.
#[test]
fn every_section_of_a_runner_file_refuses_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let source = "source:\n  input: in.jsonl\n  checkpoint: c\n  event_type: t\n";
    let sink = "sink:\n  id: s\n  uri: rediss://127.0.0.1:1\n  stream: x\n";
    let cases = [
        (format!("{source}{sink}sinks: 2\n"), "sinks"),
        (
            format!("{source}  linger_ms: 5\n{sink}"),
            "source.linger_ms",
        ),
        (format!("{source}{sink}  id2: t\n"), "sink.id2"),
        (
            format!("{source}{sink}  tls:\n    ca_file: ca.pem\n"),
            "sink.tls.ca_file",
        ),
        (
            format!("{source}{sink}  retry:\n    max_atempts: 2\n"),
            "sink.retry.max_atempts",
        ),
        (
            format!("{source}{sink}  durability:\n    replicas: 1\n    timeout: 1s\n    wait: 1\n"),
            "sink.durability.wait",
        ),
    ];
    let path = dir.path().join("sink.yaml");
    for (text, field) in cases {
        std::fs::write(&path, &text).unwrap();
        let err = RunnerConfig::from_file(&path).unwrap_err();
        let message = err.to_string();
        let (section, name) = field.rsplit_once('.').unwrap_or(("", field));
        assert!(message.contains("unknown field"), "{field}: {message}");
        assert!(message.contains(name), "{field}: {message}");
        assert!(message.contains(section), "{field}: {message}");
    }
}

/// Batches are cut before they would go over the sink's `max_batch_bytes`, and a line whose
/// event alone is over it is an invalid line.
#[tokio::test]
async fn batches_are_cut_at_max_batch_bytes() {
    let server = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = "{bytes}.events";
    let input = dir.path().join("in.jsonl");
    write_lines(&input, 0..10);
    let one = redstream_core::wire::encode(
        &redstream_core::Event::new(
            "line.read",
            serde_json::json!({ "n": 0 }),
            redstream_core::EventMetadata::default(),
        ),
        &redstream_core::EventLimits::default(),
    )
    .unwrap()
    .len();
    let mut config = runner_config(&server, dir.path(), stream);
    // Room for three events a batch, where batch_events (7) would put seven.
    config.sink.max_batch_bytes = 3 * one + one / 2;
    let report = runner::run(config.clone(), std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.events, 10);
    assert_eq!(report.batches, 4, "3 + 3 + 3 + 1");
    assert_eq!(
        stream_numbers(&server, stream).await,
        (0..10).collect::<Vec<_>>()
    );

    // A line too big for any batch stops the run like any invalid line, after the lines
    // before it are written.
    let mut text = std::fs::read_to_string(&input).unwrap();
    text.push_str("{\"n\":10}\n");
    text.push_str(&format!(
        "{{\"n\":11,\"pad\":\"{}\"}}\n",
        "x".repeat(4 * one)
    ));
    std::fs::write(&input, text).unwrap();
    let err = runner::run(config, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("max_batch_bytes"), "{err}");
    assert_eq!(
        stream_numbers(&server, stream).await,
        (0..11).collect::<Vec<_>>()
    );
}

/// An input shorter than the recorded progress is refused before the checkpoint file is
/// touched: it is not "repaired" to an offset the input does not reach.
#[tokio::test]
async fn a_truncated_input_is_refused_before_the_checkpoint_is_repaired() {
    let server = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = "{trunc}.events";
    let input = dir.path().join("in.jsonl");
    write_lines(&input, 0..20);
    let config = runner_config(&server, dir.path(), stream);
    runner::run(config.clone(), std::future::pending())
        .await
        .unwrap();
    let stale = format!(
        "{{\"input\":{:?},\"offset\":12}}",
        input.display().to_string()
    );
    std::fs::write(dir.path().join("in.checkpoint"), &stale).unwrap();
    write_lines(&input, 0..3);
    let err = runner::run(config, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("shorter than the checkpoint"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("in.checkpoint")).unwrap(),
        stale
    );
}

/// The sink's progress key of a runner configuration.
fn progress_key(config: &RunnerConfig) -> String {
    redstream_sink::RedisSink::new(config.sink.clone())
        .unwrap()
        .progress_key()
        .to_owned()
}

async fn recorded_position(server: &RedisServer, key: &str) -> Option<String> {
    let mut conn = server.connection().await.unwrap();
    redis::cmd("HGET")
        .arg(key)
        .arg("position")
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// An input replaced by another at least as long as the checkpoint's offset is refused before
/// anything is written: an offset alone would skip the new input's first bytes. The error names
/// the input, the offset and what to do; following its advice writes the new input whole.
#[tokio::test]
async fn a_replaced_input_of_equal_or_greater_length_is_refused() {
    let server = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = "{replaced}.events";
    let input = dir.path().join("in.jsonl");
    let checkpoint = dir.path().join("in.checkpoint");
    // Two-digit numbers: every line is 9 bytes, so 20 lines are 180 bytes either way.
    write_lines(&input, 10..30);
    let config = runner_config(&server, dir.path(), stream);
    let key = progress_key(&config);
    runner::run(config.clone(), std::future::pending())
        .await
        .unwrap();
    assert_eq!(checkpoint_offset(dir.path()), 180);
    let saved = std::fs::read(&checkpoint).unwrap();
    let old: Vec<u64> = (10..30).collect();

    for replacement in [50..70, 50..90] {
        write_lines(&input, replacement.clone());
        let err = runner::run(config.clone(), std::future::pending())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        let text = err.to_string();
        assert!(text.contains(&input.display().to_string()), "{text}");
        assert!(text.contains("before byte 180"), "{text}");
        assert!(text.contains("replaced"), "{text}");
        assert!(text.contains(&checkpoint.display().to_string()), "{text}");
        assert!(text.contains(&key), "{text}");
        assert_eq!(
            stream_numbers(&server, stream).await,
            old,
            "{replacement:?}"
        );
        assert_eq!(
            std::fs::read(&checkpoint).unwrap(),
            saved,
            "{replacement:?}"
        );
    }

    // The progress key alone (a new checkpoint file, the same sink) is checked too.
    std::fs::remove_file(&checkpoint).unwrap();
    let err = runner::run(config.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the sink's progress key"), "{err}");
    assert_eq!(stream_numbers(&server, stream).await, old);
    assert!(!checkpoint.exists(), "no checkpoint for a refused input");

    // As the error says: without the progress key the new input is written from its start.
    let mut conn = server.connection().await.unwrap();
    let () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let report = runner::run(config, std::future::pending()).await.unwrap();
    assert_eq!((report.resumed_from, report.events), (0, 40));
    let mut expected = old;
    expected.extend(50..90);
    assert_eq!(stream_numbers(&server, stream).await, expected);
}

/// A plain offset, as earlier versions wrote it in the checkpoint file and the progress key,
/// still resumes (unverified, with a warning), and the next batch records a fingerprint.
#[tokio::test]
async fn a_plain_offset_from_an_earlier_version_still_resumes() {
    redstream_testkit::capture_logs();
    let server = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = "{legacy}.events";
    let input = dir.path().join("in.jsonl");
    write_lines(&input, 0..20);
    let config = runner_config(&server, dir.path(), stream);
    let key = progress_key(&config);
    runner::run(config.clone(), std::future::pending())
        .await
        .unwrap();
    let len = checkpoint_offset(dir.path());
    std::fs::write(
        dir.path().join("in.checkpoint"),
        format!(
            "{{\"input\":{:?},\"offset\":{len}}}",
            input.display().to_string()
        ),
    )
    .unwrap();
    let mut conn = server.connection().await.unwrap();
    let () = redis::cmd("HSET")
        .arg(&key)
        .arg("position")
        .arg(len.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();

    let mut text = std::fs::read_to_string(&input).unwrap();
    text.push_str("{\"n\":20}\n{\"n\":21}\n");
    std::fs::write(&input, text).unwrap();
    let report = runner::run(config, std::future::pending()).await.unwrap();
    assert_eq!((report.resumed_from, report.events), (len, 2));
    assert_eq!(
        stream_numbers(&server, stream).await,
        (0..22).collect::<Vec<_>>()
    );
    let warnings = redstream_testkit::logged(&input.display().to_string());
    assert!(
        warnings.iter().any(|w| w.contains("plain offset")),
        "{warnings:?}"
    );

    // The new batch is fingerprinted in both records: 18 bytes before the end.
    let end = len + 18;
    let checkpoint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("in.checkpoint")).unwrap())
            .unwrap();
    assert_eq!(checkpoint["offset"], end);
    assert_eq!(checkpoint["tail"]["len"], 18);
    let position = recorded_position(&server, &key).await.unwrap();
    let hash = checkpoint["tail"]["fnv1a64"].as_str().unwrap();
    assert_eq!(position, format!("{end}:18:{hash}"));
}

/// A last line without a newline is written as a complete line when the input ends there. If
/// the input then grows, the new bytes would continue that line: the next run refuses to cut
/// it in two, writes nothing, and says where the missing newline goes; once it is there, the
/// run goes on.
#[tokio::test]
async fn a_grown_input_does_not_continue_a_last_line_written_without_its_newline() {
    let server = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = "{unterminated}.events";
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"n\":1}\n{\"n\":2}").unwrap();
    let config = runner_config(&server, dir.path(), stream);
    let report = runner::run(config.clone(), std::future::pending())
        .await
        .unwrap();
    assert_eq!((report.events, report.offset), (2, 15));

    // The appended bytes are valid JSON on their own: cut at byte 15, they would be an event.
    std::fs::write(&input, "{\"n\":1}\n{\"n\":2}{\"n\":3}\n").unwrap();
    let err = runner::run(config.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let text = err.to_string();
    assert!(text.contains("had no newline"), "{text}");
    assert!(
        text.contains("insert the missing newline at byte 15"),
        "{text}"
    );
    assert_eq!(stream_numbers(&server, stream).await, vec![1, 2]);
    assert_eq!(checkpoint_offset(dir.path()), 15);

    // Following the advice: the line written stays as it was, and the rest is a line of its own.
    std::fs::write(&input, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n").unwrap();
    let report = runner::run(config, std::future::pending()).await.unwrap();
    assert_eq!((report.resumed_from, report.events), (15, 1));
    assert_eq!(stream_numbers(&server, stream).await, vec![1, 2, 3]);
}

/// With `exactly_once: false` the sink neither writes nor reads its progress key, so the
/// runner resumes from its checkpoint file alone, whatever a key left there says.
#[tokio::test]
async fn without_exactly_once_the_progress_key_is_not_read() {
    let server = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = "{at-least-once}.events";
    write_lines(&dir.path().join("in.jsonl"), 0..10);
    let mut config = runner_config(&server, dir.path(), stream);
    config.sink.exactly_once = false;
    let key = progress_key(&config);
    // A key left by an earlier configuration, two lines ahead of the (absent) checkpoint file.
    let mut conn = server.connection().await.unwrap();
    let () = redis::cmd("HSET")
        .arg(&key)
        .arg("position")
        .arg("16")
        .arg("last_event_id")
        .arg("left-over")
        .query_async(&mut conn)
        .await
        .unwrap();

    let report = runner::run(config, std::future::pending()).await.unwrap();
    assert_eq!((report.resumed_from, report.events), (0, 10));
    assert_eq!(
        stream_numbers(&server, stream).await,
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        recorded_position(&server, &key).await.as_deref(),
        Some("16"),
        "the key is not written either"
    );
}

/// Reading the progress key at start is bounded by `batch_timeout`, as a batch is: a sink that
/// is not required, with unlimited retries, does not hold the run for ever before it starts.
#[tokio::test]
async fn reading_the_progress_key_at_start_is_bounded_by_batch_timeout() {
    let dir = tempfile::tempdir().unwrap();
    write_lines(&dir.path().join("in.jsonl"), 0..3);
    // A port nobody listens on: every connection is refused, which is retried.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = RunnerConfig::new(
        dir.path().join("in.jsonl"),
        dir.path().join("in.checkpoint"),
        "line.read",
        config(&format!("redis://127.0.0.1:{port}"), "{start}.events")
            .with_required(false)
            .with_retry(
                redstream_core::RetryPolicy::unlimited()
                    .with_initial_delay(std::time::Duration::from_millis(5))
                    .with_max_delay(std::time::Duration::from_millis(20)),
            )
            .with_batch_timeout(Some(std::time::Duration::from_millis(300))),
    );
    config.source.batch_events = 7;
    // A hang guard only: without the bound, the run would retry for ever.
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        runner::run(config, std::future::pending()),
    )
    .await
    .expect("the run did not give up reading the progress key")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("at start"), "{err}");
    assert!(!dir.path().join("in.checkpoint").exists());
}
