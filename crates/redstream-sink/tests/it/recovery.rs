//! Recovery after a restart: the sink's connection speaks RESP3, so it notices the server went
//! away and reconnects by itself; a command refused a connection (never sent), or one that the
//! sink can run twice without writing twice (its progress read, its batch script with the
//! progress check), is sent once more at once. The first batch after a `kill -9` and a restart
//! goes through without a retry.

use std::time::Instant;

use redstream_core::{BatchSink, ErrorKind, RetryPolicy, SourcePosition};
use redstream_sink::RedisSink;
use redstream_testkit::RedisServer;

use crate::{config, events, ids, stream_ids};

/// A batch sent right after the server was SIGKILLed and restarted (with AOF, so the progress
/// survives) is written at the first attempt: no retry policy at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_batch_after_a_restart_succeeds() {
    let server = RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .unwrap();
    let stream = "{restart}.events";
    let sink =
        RedisSink::new(config(&server.url(), stream).with_retry(RetryPolicy::none())).unwrap();
    let first = events(3);
    sink.send_batch(first.clone(), Some(SourcePosition::new("1")))
        .await
        .unwrap();

    server.kill().unwrap();
    server.restart().await.unwrap();
    let back = Instant::now();
    let second = events(3);
    let ack = sink
        .send_batch(second.clone(), Some(SourcePosition::new("2")))
        .await
        .unwrap();
    println!(
        "first batch after the restart written {:?} after it",
        back.elapsed()
    );
    assert_eq!(ack.written, 3);
    assert_eq!(sink.stats().retries, 0);
    let mut conn = server.connection().await.unwrap();
    let mut expected = ids(&first);
    expected.extend(ids(&second));
    assert_eq!(stream_ids(&mut conn, stream).await, expected);
    let progress = sink.recorded_progress().await.unwrap().unwrap();
    assert_eq!(progress.position, Some(SourcePosition::new("2")));
}

/// A restart that lost the data (no persistence): the progress key the sink wrote is gone. The
/// batch script finds it missing where the sink expected its last batch, writes nothing, and
/// the sink decides again: the batch is written once, at the first attempt, and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_lost_the_progress_key_writes_the_next_batch_once() {
    redstream_testkit::capture_logs();
    let server = RedisServer::start().await.unwrap();
    let stream = "{amnesia}.events";
    let sink =
        RedisSink::new(config(&server.url(), stream).with_retry(RetryPolicy::none())).unwrap();
    sink.send_batch(events(2), Some(SourcePosition::new("1")))
        .await
        .unwrap();
    server.kill().unwrap();
    server.restart().await.unwrap();

    let batch = events(3);
    let ack = sink
        .send_batch(batch.clone(), Some(SourcePosition::new("2")))
        .await
        .unwrap();
    assert_eq!(ack.written, 3);
    let mut conn = server.connection().await.unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await, ids(&batch));
    let progress = sink.recorded_progress().await.unwrap().unwrap();
    assert_eq!(progress.position, Some(SourcePosition::new("2")));
    let gone = redstream_testkit::logged("progress key is gone");
    assert!(
        gone.iter().any(|line| line.contains(sink.progress_key())),
        "{gone:?}"
    );
}

/// While the server is down a batch fails with a retryable `Connection` error that says
/// nothing was sent; once it is back, the next batch is written at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_while_the_server_is_down_says_nothing_was_sent() {
    let server = RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .unwrap();
    let stream = "{down-now}.events";
    let sink =
        RedisSink::new(config(&server.url(), stream).with_retry(RetryPolicy::none())).unwrap();
    sink.send_batch(events(1), Some(SourcePosition::new("1")))
        .await
        .unwrap();
    server.kill().unwrap();
    // The first batch may be sent before the sink's connection learns that the server died
    // (a broken pipe: it cannot know that nothing was run); by then the connection manager
    // knows, and the next one is refused a connection.
    let err = sink
        .send_batch(events(2), Some(SourcePosition::new("2")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    let err = sink
        .send_batch(events(2), Some(SourcePosition::new("2")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("nothing was sent"), "{err}");

    server.restart().await.unwrap();
    let batch = events(2);
    let ack = sink
        .send_batch(batch.clone(), Some(SourcePosition::new("2")))
        .await
        .unwrap();
    assert_eq!(ack.written, 2);
    let mut conn = server.connection().await.unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await.len(), 3);
}
