//! Replicas: `READONLY` from a replica, and the `durability` option's `WAIT`.

use std::time::Duration;

use redstream_core::{BatchSink, ErrorKind, RetryPolicy, SourcePosition};
use redstream_sink::{Delivery, Durability, RedisSink};
use redstream_testkit::RedisServer;

use crate::{command_calls, config, events, ids, stream_ids, until_retrying};

/// A replica of `primary`, returned once its link to the primary is up.
pub(crate) async fn replica_of(primary: &RedisServer) -> RedisServer {
    let replica = RedisServer::builder()
        .config(
            "replicaof",
            format!("{} {}", primary.host(), primary.port()),
        )
        .start()
        .await
        .unwrap();
    // A hang guard only: the loops below end as soon as the servers report what they wait for.
    tokio::time::timeout(
        Duration::from_secs(120),
        until_acknowledging(primary, &replica),
    )
    .await
    .expect("the replica neither linked to the primary nor acknowledged an offset");
    replica
}

/// Returns once `replica`'s link is up and `primary` counts it in `WAIT`.
async fn until_acknowledging(primary: &RedisServer, replica: &RedisServer) {
    let mut conn = replica.connection().await.unwrap();
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .unwrap();
        if info.contains("master_link_status:up") {
            break;
        }
        // The link comes up after a full sync; nothing to await but the server's report.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The primary counts the replica in WAIT only once it has acknowledged an offset: wait for
    // that too, with a write of its own so that WAIT has something to count.
    let mut conn = primary.connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg("replica-of-ready")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    loop {
        let acked: u64 = redis::cmd("WAIT")
            .arg(1)
            .arg(100)
            .query_async(&mut conn)
            .await
            .unwrap();
        if acked == 1 {
            return;
        }
    }
}

#[tokio::test]
async fn readonly_replica_is_retried_then_delivered_once_promoted() {
    let primary = RedisServer::start().await.unwrap();
    let replica = replica_of(&primary).await;
    let stream = "{ro}.events";
    let sink = RedisSink::new(
        config(&replica.url(), stream).with_retry(
            RetryPolicy::unlimited()
                .with_initial_delay(Duration::from_millis(5))
                .with_max_delay(Duration::from_millis(20)),
        ),
    )
    .unwrap();
    let batch = events(20);
    let sink = std::sync::Arc::new(sink);
    let task = {
        let sink = std::sync::Arc::clone(&sink);
        let batch = batch.clone();
        tokio::spawn(async move {
            sink.send_batch(batch, Some(SourcePosition::new("20")))
                .await
        })
    };
    until_retrying(&sink, &task).await;
    // While the sink retries READONLY, nothing reached the replica's stream.
    let mut conn = replica.connection().await.unwrap();
    assert!(stream_ids(&mut conn, stream).await.is_empty());
    // The failover: the replica becomes a primary, as Sentinel would make it.
    let () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut conn)
        .await
        .unwrap();
    let ack = task.await.unwrap();
    let ack = ack.unwrap();
    assert_eq!(ack.written, 20);
    assert!(sink.stats().retries >= 1);
    let mut conn = replica.connection().await.unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await, ids(&batch));
}

#[tokio::test]
async fn wait_without_replicas_reports_not_durable_and_blocks_the_checkpoint() {
    let server = RedisServer::start().await.unwrap();
    let stream = "{wait}.events";
    let sink = RedisSink::new(
        config(&server.url(), stream)
            .with_durability(Some(Durability::new(1, Duration::from_millis(20))))
            .with_retry(
                RetryPolicy::default()
                    .with_initial_delay(Duration::from_millis(5))
                    .with_max_attempts(Some(3)),
            ),
    )
    .unwrap();
    let batch = events(5);
    let checkpoints = std::sync::Mutex::new(Vec::new());
    let hook = |position: SourcePosition| {
        checkpoints.lock().unwrap().push(position);
        std::future::ready(Ok(()))
    };
    let err = sink
        .send_and_checkpoint(batch.clone(), Some(SourcePosition::new("5")), &hook)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotDurable, "{err}");
    assert!(err.to_string().contains("0 of 1 replicas"), "{err}");
    assert!(checkpoints.lock().unwrap().is_empty());
    // The retries found the batch already written and only waited again: one copy.
    assert_eq!(sink.stats().retries, 2);
    assert_eq!(sink.stats().skipped_batches, 2);
    let mut conn = server.connection().await.unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await, ids(&batch));
}

#[tokio::test]
async fn wait_with_a_replica_acknowledges_and_checkpoints() {
    let primary = RedisServer::start().await.unwrap();
    let replica = replica_of(&primary).await;
    let stream = "{wait-ok}.events";
    let sink = RedisSink::new(
        config(&primary.url(), stream)
            .with_durability(Some(Durability::new(1, Duration::from_secs(2)))),
    )
    .unwrap();
    let batch = events(5);
    let checkpoints = std::sync::Mutex::new(Vec::new());
    let hook = |position: SourcePosition| {
        checkpoints.lock().unwrap().push(position);
        std::future::ready(Ok(()))
    };
    let delivery = sink
        .send_and_checkpoint(batch.clone(), Some(SourcePosition::new("5")), &hook)
        .await
        .unwrap();
    assert!(matches!(delivery, Delivery::Acknowledged(ref ack) if ack.written == 5));
    assert_eq!(*checkpoints.lock().unwrap(), vec![SourcePosition::new("5")]);
    // WAIT returned once the replica had the batch: it is there now, no polling needed.
    let mut conn = replica.connection().await.unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await, ids(&batch));
}

/// A batch found already written (after a reconnect or a restart) is acknowledged as durable
/// only once a replica has it. Since Redis 7.2 `WAIT` covers only the writes of its own
/// connection, so on a connection that wrote nothing it returns at once; the sink rewrites its
/// progress fields before waiting so that `WAIT` covers the batch. The Redis 7.0 this suite
/// runs moves a connection's `WAIT` offset on every command (the sink's `HMGET` included), so
/// here the test also counts the `HSET`s the restarted sink sent: exactly its one rewrite.
#[tokio::test]
async fn a_batch_found_written_is_durable_only_once_a_replica_has_it() {
    let primary = RedisServer::start().await.unwrap();
    let replica = replica_of(&primary).await;
    let stream = "{wait-skip}.events";
    let batch = events(5);
    let position = Some(SourcePosition::new("5"));
    // The replica is linked but stopped: it receives nothing and acknowledges nothing.
    replica.pause().unwrap();
    let writer =
        RedisSink::new(config(&primary.url(), stream).with_retry(RetryPolicy::none())).unwrap();
    writer
        .send_batch(batch.clone(), position.clone())
        .await
        .unwrap();

    // The same sink restarted with durability: it finds the batch written and must not call
    // it durable while the only replica has not received it.
    let durable = || {
        RedisSink::new(
            config(&primary.url(), stream)
                .with_retry(RetryPolicy::none())
                .with_durability(Some(Durability::new(1, Duration::from_secs(2)))),
        )
        .unwrap()
    };
    let restarted = durable();
    let mut conn = primary.connection().await.unwrap();
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = restarted
        .send_batch(batch.clone(), position.clone())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotDurable, "{err}");
    assert_eq!(restarted.stats().skipped_batches, 1);
    // The skip path rewrote the progress fields once before its WAIT: on Redis 7.0, whose
    // WAIT would cover the batch without it, this is what tells the rewrite is there.
    assert_eq!(command_calls(&mut conn, "hset").await, 1);

    // Once the replica runs again it catches up, and the same check acknowledges the batch.
    replica.resume().unwrap();
    let ack = durable().send_batch(batch.clone(), position).await.unwrap();
    assert_eq!((ack.written, ack.skipped_duplicates), (0, 5));
    let mut conn = replica.connection().await.unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await, ids(&batch));
    let mut conn = primary.connection().await.unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await, ids(&batch));
}

/// A durable runner restarted after a run that stopped between a batch's script and the end of
/// its `WAIT` (killed, or ended on a final `NotDurable`) finds the progress key ahead of its
/// checkpoint file. It must not move the checkpoint file there before a replica has the batch:
/// it rewrites the progress fields and waits, as a batch found already written is confirmed.
#[tokio::test]
async fn a_durable_runner_moves_its_checkpoint_to_a_recorded_batch_only_once_a_replica_has_it() {
    use redstream_sink::runner::{self, RunnerConfig};

    let primary = RedisServer::start().await.unwrap();
    let replica = replica_of(&primary).await;
    let stream = "{wait-run}.events";
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let checkpoint = dir.path().join("in.checkpoint");
    let text: String = (0..5).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    std::fs::write(&input, &text).unwrap();
    let mut config = RunnerConfig::new(
        &input,
        &checkpoint,
        "line.read",
        config(&primary.url(), stream),
    );

    // The crash, simulated: the batch is in the stream and in the progress key, its WAIT never
    // returned (the replica is stopped, so it has not received the batch) and the checkpoint
    // file was never written.
    replica.pause().unwrap();
    runner::run(config.clone(), std::future::pending())
        .await
        .unwrap();
    std::fs::remove_file(&checkpoint).unwrap();

    config.sink = config
        .sink
        .with_durability(Some(Durability::new(1, Duration::from_millis(100))))
        .with_retry(
            RetryPolicy::default()
                .with_initial_delay(Duration::from_millis(5))
                .with_max_attempts(Some(2)),
        );
    let err = runner::run(config.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotDurable, "{err}");
    assert!(!checkpoint.exists(), "checkpointed a batch no replica has");

    // Once the replica runs again it catches up: the batch is confirmed, then checkpointed,
    // and not written again.
    replica.resume().unwrap();
    let report = runner::run(config, std::future::pending()).await.unwrap();
    let len = text.len() as u64;
    assert_eq!((report.resumed_from, report.events), (len, 0));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&checkpoint).unwrap()).unwrap();
    assert_eq!(saved["offset"], len);
    let mut conn = replica.connection().await.unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await.len(), 5);
    let mut conn = primary.connection().await.unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await.len(), 5);
}
