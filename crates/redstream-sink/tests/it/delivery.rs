use redstream_core::{BatchSink, SourcePosition};
use redstream_sink::RedisSink;
use redstream_testkit::RedisServer;

use crate::{config, events, ids, stream_ids};

#[tokio::test]
async fn entries_are_readable_by_seed_consumers() {
    let server = RedisServer::start().await.unwrap();
    let sink = RedisSink::new(config(&server.url(), "{orders}.events")).unwrap();
    let batch = events(5);
    let expected = ids(&batch);
    let ack = sink
        .send_batch(batch, Some(SourcePosition::new("p1")))
        .await
        .unwrap();
    assert_eq!(ack.written, 5);
    assert_eq!(ack.skipped_duplicates, 0);
    assert_eq!(ack.entry_ids.len(), 5);
    assert_eq!(ack.position, Some(SourcePosition::new("p1")));

    let mut conn = server.connection().await.unwrap();
    assert_eq!(stream_ids(&mut conn, "{orders}.events").await, expected);
    // The ack names the new entries, in order (the script answers them in one string).
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("{orders}.events")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let entry_ids: Vec<String> = entries.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ack.entry_ids, entry_ids);
    assert_eq!(
        sink.progress_key(),
        "{orders}.events:redstream-sink:test-sink"
    );
    let progress = sink.recorded_progress().await.unwrap().unwrap();
    assert_eq!(progress.last_event_id, expected[4]);
    assert_eq!(progress.position, Some(SourcePosition::new("p1")));
}

#[tokio::test]
async fn a_repeated_batch_is_skipped_even_by_a_new_sink() {
    let server = RedisServer::start().await.unwrap();
    let stream = "{dup}.events";
    let batch = events(3);
    let position = Some(SourcePosition::new("42"));

    let sink = RedisSink::new(config(&server.url(), stream)).unwrap();
    let first = sink
        .send_batch(batch.clone(), position.clone())
        .await
        .unwrap();
    assert_eq!(first.written, 3);
    // The same batch again, as after an ambiguous failure: skipped.
    let second = sink
        .send_batch(batch.clone(), position.clone())
        .await
        .unwrap();
    assert_eq!(second.written, 0);
    assert_eq!(second.skipped_duplicates, 3);

    // A restarted sink learns the progress from Redis, not from memory.
    let restarted = RedisSink::new(config(&server.url(), stream)).unwrap();
    let third = restarted
        .send_batch(batch.clone(), position.clone())
        .await
        .unwrap();
    assert_eq!(third.skipped_duplicates, 3);
    assert_eq!(restarted.stats().skipped_batches, 1);

    // A new batch is written.
    let next = events(2);
    let fourth = restarted
        .send_batch(next.clone(), Some(SourcePosition::new("43")))
        .await
        .unwrap();
    assert_eq!(fourth.written, 2);

    let mut conn = server.connection().await.unwrap();
    let mut expected = ids(&batch);
    expected.extend(ids(&next));
    assert_eq!(stream_ids(&mut conn, stream).await, expected);
}

#[tokio::test]
async fn max_stream_length_trims() {
    let server = RedisServer::start().await.unwrap();
    let stream = "{trim}.events";
    let sink = RedisSink::new(config(&server.url(), stream).with_max_stream_length(10)).unwrap();
    for i in 0..20 {
        sink.send_batch(events(50), Some(SourcePosition::new(i.to_string())))
            .await
            .unwrap();
    }
    let mut conn = server.connection().await.unwrap();
    let len: usize = redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Approximate trimming keeps at least 10 and far fewer than the 1,000 written.
    assert!((10..1_000).contains(&len), "XLEN {len}");
}

#[tokio::test]
async fn oversized_batches_are_rejected_before_writing() {
    let server = RedisServer::start().await.unwrap();
    let sink =
        RedisSink::new(config(&server.url(), "{big}.events").with_max_batch_events(2)).unwrap();
    let err = sink.send_batch(events(3), None).await.unwrap_err();
    assert!(err.to_string().contains("max_batch_events"), "{err}");
    let sink =
        RedisSink::new(config(&server.url(), "{big}.events").with_max_batch_bytes(10)).unwrap();
    let err = sink.send_batch(events(1), None).await.unwrap_err();
    assert!(err.to_string().contains("max_batch_bytes"), "{err}");
    assert_eq!(
        sink.stats().failed_batches,
        1,
        "a refused batch is a failed batch"
    );
    let mut conn = server.connection().await.unwrap();
    assert!(stream_ids(&mut conn, "{big}.events").await.is_empty());
}
