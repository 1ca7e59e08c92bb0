//! The progress key's name: in its stream's Redis Cluster slot whatever the stream is called,
//! what an operator sees with redis-cli, and the progress that earlier versions left under the
//! old name (`<stream>:redstream-sink:<id>`), which the sink refuses to ignore.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redstream_core::{BatchSink, ErrorKind, EventLimits, SourcePosition, wire};
use redstream_sink::RedisSink;
use redstream_sink::keys::{previous_progress_key, progress_key};
use redstream_sink::runner::{self, RunnerConfig};
use redstream_testkit::RedisServer;

use crate::{command_calls, command_stats, config, events, ids, stream_ids};

/// The sink id of [`config`].
const ID: &str = "test-sink";

async fn keyslot(conn: &mut MultiplexedConnection, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

async fn exists(conn: &mut MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

async fn xlen(conn: &mut MultiplexedConnection, stream: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(conn)
        .await
        .unwrap()
}

/// `CLUSTER KEYSLOT` on a node started with `cluster-enabled yes` is the oracle: the progress
/// key of seed 003's untagged `orders.events`, of a tagged stream and of a stream of the
/// cluster layout hashes like its stream. The name earlier versions used for `orders.events`
/// did not.
#[tokio::test]
async fn the_progress_key_shares_its_stream_slot() {
    let server = RedisServer::builder()
        .config("cluster-enabled", "yes")
        .start()
        .await
        .unwrap();
    let mut conn = server.connection().await.unwrap();
    for stream in ["orders.events", "{orders}.events", "events:{order.created}"] {
        let sink = RedisSink::new(config(&server.url(), stream)).unwrap();
        assert_eq!(sink.progress_key(), progress_key(stream, ID));
        assert_eq!(
            keyslot(&mut conn, stream).await,
            keyslot(&mut conn, sink.progress_key()).await,
            "{stream} / {}",
            sink.progress_key()
        );
    }
    assert_eq!(
        progress_key("orders.events", ID),
        "{orders.events}:redstream-sink:test-sink"
    );
    assert_eq!(
        progress_key("{orders}.events", ID),
        "{orders}.events:redstream-sink:test-sink",
        "a tagged stream keeps the name earlier versions gave its progress key"
    );
    let old = previous_progress_key("orders.events", ID).unwrap();
    assert_eq!(old, "orders.events:redstream-sink:test-sink");
    assert_ne!(
        keyslot(&mut conn, "orders.events").await,
        keyslot(&mut conn, &old).await
    );
}

/// On a one-node Redis Cluster that serves every slot, the sink's batch script (which declares
/// the stream and the progress key as its keys) runs for the untagged `orders.events`; a script
/// declaring the stream and the old progress key name is refused with `CROSSSLOT`.
#[tokio::test]
async fn a_batch_and_its_progress_are_one_transaction_on_a_cluster() {
    let server = RedisServer::builder()
        .config("cluster-enabled", "yes")
        .start()
        .await
        .unwrap();
    let mut conn = server.connection().await.unwrap();
    let () = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query_async(&mut conn)
        .await
        .unwrap();
    // The node marks the cluster up on its next cron tick: wait for that state.
    loop {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut conn)
            .await
            .unwrap();
        if info.lines().any(|line| line.trim() == "cluster_state:ok") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let stream = "orders.events";
    let sink = RedisSink::new(config(&server.url(), stream)).unwrap();
    let first = events(3);
    let second = events(2);
    let mut expected = ids(&first);
    expected.extend(ids(&second));
    sink.send_batch(first, Some(SourcePosition::new("1")))
        .await
        .unwrap();
    sink.send_batch(second, Some(SourcePosition::new("2")))
        .await
        .unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await, expected);
    let progress = sink.recorded_progress().await.unwrap().unwrap();
    assert_eq!(&progress.last_event_id, expected.last().unwrap());

    let old = previous_progress_key(stream, ID).unwrap();
    let err = redis::cmd("EVAL")
        .arg("return redis.call('XADD', KEYS[1], '*', 'event', '{}')")
        .arg(2)
        .arg(stream)
        .arg(&old)
        .query_async::<redis::Value>(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("CROSSSLOT"), "{err}");
    assert_eq!(xlen(&mut conn, stream).await, 5);
}

/// Seed 003's redis-cli consumer (`XREAD COUNT 10 STREAMS orders.events 0-0`, reading the
/// `event` field) reads what the sink writes to `orders.events`, and the operator finds the
/// progress key next to the stream.
#[tokio::test]
async fn seed_003_redis_cli_reads_what_the_sink_writes() {
    let server = RedisServer::start().await.unwrap();
    let stream = "orders.events";
    let sink = RedisSink::new(config(&server.url(), stream)).unwrap();
    let batch = events(4);
    let expected = ids(&batch);
    sink.send_batch(batch, Some(SourcePosition::new("7")))
        .await
        .unwrap();

    let redis_cli = |args: &[&str]| {
        let output = std::process::Command::new("redis-cli")
            .arg("-h")
            .arg(server.host())
            .arg("-p")
            .arg(server.port().to_string())
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    // Not a terminal, redis-cli prints one reply element per line: the stream, then each
    // entry's id, field name and value.
    let read = redis_cli(&["XREAD", "COUNT", "10", "STREAMS", stream, "0-0"]);
    let lines: Vec<&str> = read.lines().collect();
    assert_eq!(lines.first(), Some(&stream), "{read}");
    let seen: Vec<String> = lines
        .windows(2)
        .filter(|pair| pair[0] == "event")
        .map(|pair| {
            let json: serde_json::Value = serde_json::from_str(pair[1]).unwrap();
            json["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(seen, expected, "{read}");

    let keys = redis_cli(&["--scan", "--pattern", "*orders.events*"]);
    let mut keys: Vec<&str> = keys.lines().collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["orders.events", "{orders.events}:redstream-sink:test-sink"]
    );
}

/// Writes `events` to `stream` and records them under the old progress key name, as the
/// sink of earlier versions did.
async fn write_as_the_previous_version(
    conn: &mut MultiplexedConnection,
    stream: &str,
    events: &[redstream_core::Event],
    position: &str,
) {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for event in events {
        let json = wire::encode(event, &EventLimits::default()).unwrap();
        pipe.cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("event")
            .arg(json)
            .ignore();
    }
    pipe.cmd("HSET")
        .arg(format!("{stream}:redstream-sink:{ID}"))
        .arg("last_event_id")
        .arg(events.last().unwrap().id().to_string())
        .arg("position")
        .arg(position)
        .ignore();
    let () = pipe.query_async(conn).await.unwrap();
}

/// A sink that finds its progress only under the old name fails, before any `XADD`, with an
/// error naming both keys and `redstream migrate`, rather than write again every batch
/// recorded there. Once the key is renamed (what `redstream migrate` does), the same batch is
/// recognised and skipped, and the next one is written.
#[tokio::test]
async fn progress_under_the_old_name_is_refused_until_it_is_renamed() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = server.connection().await.unwrap();
    let stream = "orders.events";
    let batch = events(3);
    write_as_the_previous_version(&mut conn, stream, &batch, "p1").await;
    let old = previous_progress_key(stream, ID).unwrap();
    let new = progress_key(stream, ID);

    let sink = RedisSink::new(config(&server.url(), stream)).unwrap();
    let err = sink
        .send_batch(batch.clone(), Some(SourcePosition::new("p1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(!err.is_retryable());
    let message = err.to_string();
    for part in [old.as_str(), new.as_str(), "redstream migrate"] {
        assert!(message.contains(part), "{part} not in: {message}");
    }
    assert_eq!(sink.stats().retries, 0);
    assert_eq!(xlen(&mut conn, stream).await, 3);
    assert!(!exists(&mut conn, &new).await);
    // Every read of the progress says the same, also a later batch.
    let err = sink.recorded_progress().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = sink.send_batch(events(1), None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(xlen(&mut conn, stream).await, 3);

    let () = redis::cmd("RENAME")
        .arg(&old)
        .arg(&new)
        .query_async(&mut conn)
        .await
        .unwrap();
    let ack = sink
        .send_batch(batch.clone(), Some(SourcePosition::new("p1")))
        .await
        .unwrap();
    assert_eq!(ack.skipped_duplicates, 3);
    assert_eq!(ack.written, 0);
    let next = events(2);
    let ack = sink
        .send_batch(next.clone(), Some(SourcePosition::new("p2")))
        .await
        .unwrap();
    assert_eq!(ack.written, 2);
    let mut expected = ids(&batch);
    expected.extend(ids(&next));
    assert_eq!(stream_ids(&mut conn, stream).await, expected);
    assert!(!exists(&mut conn, &old).await);
}

/// The runner reads the progress at start: it stops there with the same error, before
/// writing anything or creating its checkpoint file.
#[tokio::test]
async fn the_runner_stops_on_progress_under_the_old_name() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = server.connection().await.unwrap();
    let stream = "lines.events";
    write_as_the_previous_version(&mut conn, stream, &events(2), "12").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), "{\"n\":0}\n{\"n\":1}\n").unwrap();
    let config = RunnerConfig::new(
        dir.path().join("in.jsonl"),
        dir.path().join("in.checkpoint"),
        "line.read",
        config(&server.url(), stream),
    );

    let err = runner::run(config, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("redstream migrate"), "{err}");
    assert_eq!(xlen(&mut conn, stream).await, 2);
    assert!(!dir.path().join("in.checkpoint").exists());
}

/// The old name is looked at only where the progress is read and found missing: once at a
/// fresh sink's first batch, never on the path of consecutive batches. A tagged stream has no
/// old name to look at.
#[tokio::test]
async fn the_old_name_is_read_once_at_start_and_never_per_batch() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = server.connection().await.unwrap();
    let sink = RedisSink::new(config(&server.url(), "fresh.events")).unwrap();
    sink.send_batch(events(2), Some(SourcePosition::new("0")))
        .await
        .unwrap();
    // The new key's, then the old name's, then the batch script's own.
    assert_eq!(command_calls(&mut conn, "hmget").await, 3);

    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    for n in 1..=4 {
        let ack = sink
            .send_batch(events(2), Some(SourcePosition::new(n.to_string())))
            .await
            .unwrap();
        assert_eq!(ack.written, 2);
    }
    // Only the batch scripts' own reads of the new key.
    assert_eq!(command_calls(&mut conn, "evalsha").await, 4);
    assert_eq!(command_calls(&mut conn, "hmget").await, 4);

    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    let tagged = RedisSink::new(config(&server.url(), "{fresh}.events")).unwrap();
    tagged.send_batch(events(2), None).await.unwrap();
    // The progress key's, then the script's: no old name to look at.
    assert_eq!(command_calls(&mut conn, "hmget").await, 2);
}

/// A sink user whose ACL covers the stream and the new progress key name but not the old one
/// (a deployment set up after the rename) writes as usual: the old name cannot hold progress
/// that user wrote.
#[tokio::test]
async fn an_acl_without_the_old_name_does_not_stop_the_sink() {
    let server = RedisServer::builder()
        .acl_user_rules(
            "sink",
            "pw",
            &["~orders.events", "~{orders.events}:*", "&*", "+@all"],
        )
        .start()
        .await
        .unwrap();
    let url = server.url_with_user("sink", "pw");
    let stream = "orders.events";
    let sink = RedisSink::new(config(&url, stream)).unwrap();
    let batch = events(2);
    let expected = ids(&batch);
    let ack = sink
        .send_batch(batch, Some(SourcePosition::new("1")))
        .await
        .unwrap();
    assert_eq!(ack.written, 2);
    let mut conn = server.connection().await.unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await, expected);
    // The new key's read ran (and the script's); the old name's was refused (NOPERM), and the
    // sink went on.
    let hmget = command_stats(&mut conn, "hmget").await;
    assert_eq!((hmget.calls, hmget.rejected_calls), (2, 1), "{hmget:?}");
    let mut limited = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let err = redis::cmd("HMGET")
        .arg(previous_progress_key(stream, ID).unwrap())
        .arg("last_event_id")
        .query_async::<redis::Value>(&mut limited)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");
}
