//! `batch_timeout`, and the sink with `exactly_once` off.

use std::time::Duration;

use redstream_core::{BatchSink, ErrorKind, RetryPolicy, SourcePosition};
use redstream_sink::RedisSink;
use redstream_testkit::RedisServer;

use crate::{config, events, ids, stream_ids};

#[tokio::test]
async fn batch_timeout_bounds_a_batch_and_the_retry_writes_it_once() {
    let server = RedisServer::start().await.unwrap();
    let stream = "{bt}.events";
    let sink = RedisSink::new(
        config(&server.url(), stream)
            .with_retry(RetryPolicy::unlimited().with_initial_delay(Duration::from_millis(5)))
            .with_response_timeout(Duration::from_secs(5))
            .with_batch_timeout(Some(Duration::from_millis(200))),
    )
    .unwrap();
    let first = events(3);
    sink.send_batch(first.clone(), Some(SourcePosition::new("3")))
        .await
        .unwrap();

    // A paused server never answers: only batch_timeout ends this call.
    server.pause().unwrap();
    let batch = events(4);
    let err = sink
        .send_batch(batch.clone(), Some(SourcePosition::new("7")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("batch_timeout"), "{err}");
    assert_eq!(sink.stats().failed_batches, 1);

    // The paused server may have the script queued in its socket: once resumed it runs it, and
    // the retried batch must then be found written, not written twice.
    server.resume().unwrap();
    let ack = sink
        .send_batch(batch.clone(), Some(SourcePosition::new("7")))
        .await
        .unwrap();
    assert_eq!(ack.written + ack.skipped_duplicates, 4);
    let mut conn = server.connection().await.unwrap();
    let mut expected = ids(&first);
    expected.extend(ids(&batch));
    assert_eq!(stream_ids(&mut conn, stream).await, expected);
}

#[tokio::test]
async fn exactly_once_off_writes_no_progress_key() {
    let server = RedisServer::start().await.unwrap();
    let stream = "{eo}.events";
    let sink = RedisSink::new(config(&server.url(), stream).with_exactly_once(false)).unwrap();
    let batch = events(3);
    let ack = sink
        .send_batch(batch.clone(), Some(SourcePosition::new("3")))
        .await
        .unwrap();
    assert_eq!(ack.written, 3);
    let mut conn = server.connection().await.unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await, ids(&batch));
    let exists: bool = redis::cmd("EXISTS")
        .arg(sink.progress_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists);
    // Without the progress key a resent batch is written again: the at-least-once contract.
    sink.send_batch(batch.clone(), Some(SourcePosition::new("3")))
        .await
        .unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await.len(), 6);
}
