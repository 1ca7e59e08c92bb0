use redstream_core::{
    BatchSink, ErrorKind, Event, EventLimits, EventMetadata, RetryPolicy, SourcePosition,
};
use redstream_sink::RedisSink;
use redstream_testkit::RedisServer;

use crate::{command_calls, command_stats, config, events, ids, stream_ids, used_memory};

#[tokio::test]
async fn oom_leaves_nothing_partial_then_delivers_once() {
    let server = RedisServer::start().await.unwrap();
    let stream = "{oom}.events";
    let sink =
        RedisSink::new(config(&server.url(), stream).with_retry(RetryPolicy::none())).unwrap();
    // Some entries first, so the stream exists and memory is in use.
    let before = events(10);
    sink.send_batch(before.clone(), Some(SourcePosition::new("1")))
        .await
        .unwrap();

    server
        .config_set("maxmemory-policy", "noeviction")
        .await
        .unwrap();
    server.config_set("maxmemory", "1").await.unwrap();
    let batch = events(100);
    let err = sink
        .send_batch(batch.clone(), Some(SourcePosition::new("2")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfMemory, "{err}");
    assert!(err.is_retryable());
    let mut conn = server.connection().await.unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await, ids(&before));
    let progress = sink.recorded_progress().await.unwrap().unwrap();
    assert_eq!(
        progress.position,
        Some(SourcePosition::new("1")),
        "progress unchanged"
    );

    server.config_set("maxmemory", "0").await.unwrap();
    // After a refused batch the sink does not trust what it remembers of its progress: the
    // next attempt reads the progress key first, with one HMGET (the other is the script's).
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    let ack = sink
        .send_batch(batch.clone(), Some(SourcePosition::new("2")))
        .await
        .unwrap();
    assert_eq!(ack.written, 100);
    assert_eq!(command_calls(&mut conn, "evalsha").await, 1);
    assert_eq!(command_calls(&mut conn, "hmget").await, 2);
    let mut expected = ids(&before);
    expected.extend(ids(&batch));
    assert_eq!(stream_ids(&mut conn, stream).await, expected);
}

#[tokio::test]
async fn wrong_password_fails_fast() {
    let server = RedisServer::builder()
        .password("right-password")
        .start()
        .await
        .unwrap();
    let url = format!(
        "redis://:wrong-password@{}:{}",
        server.host(),
        server.port()
    );
    // Unlimited retries: only failing fast ends this call.
    let sink =
        RedisSink::new(config(&url, "{auth}.events").with_retry(RetryPolicy::unlimited())).unwrap();
    let err = sink.send_batch(events(1), None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!err.to_string().contains("wrong-password"), "{err}");
    assert_eq!(sink.stats().retries, 0);
    assert_eq!(sink.stats().failed_batches, 1);
}

#[tokio::test]
async fn acl_noperm_fails_fast() {
    let server = RedisServer::builder()
        .acl_user("limited", "pw", "other:*")
        .start()
        .await
        .unwrap();
    let url = server.url_with_user("limited", "pw");
    let sink =
        RedisSink::new(config(&url, "{acl}.events").with_retry(RetryPolicy::unlimited())).unwrap();
    let err = sink.send_batch(events(1), None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_eq!(sink.stats().retries, 0);
}

#[tokio::test]
async fn server_down_at_start_is_retried_then_delivered() {
    let server = RedisServer::start().await.unwrap();
    let stream = "{down}.events";
    server.kill().unwrap();
    let sink = RedisSink::new(
        config(&server.url(), stream).with_retry(
            RetryPolicy::default()
                .with_initial_delay(std::time::Duration::from_millis(5))
                .with_max_attempts(Some(3)),
        ),
    )
    .unwrap();
    let batch = events(4);
    let err = sink
        .send_batch(batch.clone(), Some(SourcePosition::new("1")))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(sink.stats().retries, 2);

    server.restart().await.unwrap();
    let ack = sink
        .send_batch(batch.clone(), Some(SourcePosition::new("1")))
        .await
        .unwrap();
    assert_eq!(ack.written, 4);
    let mut conn = server.connection().await.unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await, ids(&batch));
}

#[tokio::test]
async fn wrongtype_fails_fast() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = server.connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg("{wt}.events")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let sink =
        RedisSink::new(config(&server.url(), "{wt}.events").with_retry(RetryPolicy::unlimited()))
            .unwrap();
    let batch = events(2);
    let position = Some(SourcePosition::new("1"));
    let err = sink
        .send_batch(batch.clone(), position.clone())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongType, "{err}");
    assert!(
        err.to_string().contains("{wt}.events holds a string"),
        "{err}"
    );
    assert_eq!(sink.stats().retries, 0);
    let value: String = redis::cmd("GET")
        .arg("{wt}.events")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, "x");
    // The failed batch is not recorded as written: once the key is fixed, it is delivered.
    assert_eq!(sink.recorded_progress().await.unwrap(), None);
    let () = redis::cmd("DEL")
        .arg("{wt}.events")
        .query_async(&mut conn)
        .await
        .unwrap();
    let ack = sink.send_batch(batch.clone(), position).await.unwrap();
    assert_eq!(ack.written, 2);
    assert_eq!(stream_ids(&mut conn, "{wt}.events").await, ids(&batch));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_run_is_retried_and_delivered_once() {
    let server = RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .unwrap();
    let stream = "{midrun}.events";
    let sink = std::sync::Arc::new(
        RedisSink::new(
            config(&server.url(), stream).with_retry(
                RetryPolicy::unlimited()
                    .with_initial_delay(std::time::Duration::from_millis(5))
                    .with_max_delay(std::time::Duration::from_millis(50)),
            ),
        )
        .unwrap(),
    );
    let first = events(3);
    sink.send_batch(first.clone(), Some(SourcePosition::new("1")))
        .await
        .unwrap();

    server.kill().unwrap();
    let second = events(3);
    let task = {
        let sink = std::sync::Arc::clone(&sink);
        let second = second.clone();
        tokio::spawn(async move {
            sink.send_batch(second, Some(SourcePosition::new("2")))
                .await
        })
    };
    crate::until_retrying(&sink, &task).await;
    server.restart().await.unwrap();
    let ack = task.await.unwrap().unwrap();
    assert_eq!(ack.written, 3);

    let mut conn = server.connection().await.unwrap();
    let mut expected = ids(&first);
    expected.extend(ids(&second));
    assert_eq!(stream_ids(&mut conn, stream).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_in_flight_is_retried_until_memory_is_freed() {
    let server = RedisServer::start().await.unwrap();
    let stream = "{oom2}.events";
    let sink = std::sync::Arc::new(
        RedisSink::new(
            config(&server.url(), stream).with_retry(
                RetryPolicy::unlimited()
                    .with_initial_delay(std::time::Duration::from_millis(5))
                    .with_max_delay(std::time::Duration::from_millis(50)),
            ),
        )
        .unwrap(),
    );
    server
        .config_set("maxmemory-policy", "noeviction")
        .await
        .unwrap();
    server.config_set("maxmemory", "1").await.unwrap();
    let batch = events(50);
    let task = {
        let sink = std::sync::Arc::clone(&sink);
        let batch = batch.clone();
        tokio::spawn(async move { sink.send_batch(batch, Some(SourcePosition::new("1"))).await })
    };
    crate::until_retrying(&sink, &task).await;
    let mut conn = server.connection().await.unwrap();
    assert!(stream_ids(&mut conn, stream).await.is_empty());
    server.config_set("maxmemory", "0").await.unwrap();
    let ack = task.await.unwrap().unwrap();
    assert_eq!(ack.written, 50);
    assert_eq!(stream_ids(&mut conn, stream).await, ids(&batch));
}

/// A progress key of another type, there before the first batch: the sink reads it first, and
/// that `HMGET` fails with `WRONGTYPE` before any `XADD`.
#[tokio::test]
async fn a_wrong_type_progress_key_fails_fast_before_any_xadd() {
    let server = RedisServer::start().await.unwrap();
    let stream = "{wtp}.events";
    let sink =
        RedisSink::new(config(&server.url(), stream).with_retry(RetryPolicy::unlimited())).unwrap();
    let mut conn = server.connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg(sink.progress_key())
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = sink
        .send_batch(events(3), Some(SourcePosition::new("3")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongType, "{err}");
    assert!(err.to_string().contains(sink.progress_key()), "{err}");
    assert_eq!(sink.stats().retries, 0);
    assert!(stream_ids(&mut conn, stream).await.is_empty());
}

/// A progress key replaced by another type while the sink runs (so the sink, which wrote it
/// itself, does not read it first): the batch script checks its type before the first write,
/// so the batch is refused whole with a `WrongType` naming the key, nothing is written, the
/// checkpoint does not move, and the foreign key is left as it was. Once it is removed, the
/// batch is written, once.
#[tokio::test]
async fn a_progress_key_replaced_mid_run_is_refused_before_any_write() {
    let server = RedisServer::start().await.unwrap();
    let stream = "{wtp2}.events";
    let sink =
        RedisSink::new(config(&server.url(), stream).with_retry(RetryPolicy::unlimited())).unwrap();
    let first = events(2);
    sink.send_batch(first.clone(), Some(SourcePosition::new("2")))
        .await
        .unwrap();
    let mut conn = server.connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg(sink.progress_key())
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .unwrap();

    let second = events(3);
    let checkpoints = std::sync::Mutex::new(Vec::new());
    let hook = |position: SourcePosition| {
        checkpoints.lock().unwrap().push(position);
        std::future::ready(Ok(()))
    };
    let err = sink
        .send_and_checkpoint(second.clone(), Some(SourcePosition::new("5")), &hook)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongType, "{err}");
    assert!(err.to_string().contains(sink.progress_key()), "{err}");
    assert!(err.to_string().contains("nothing of the batch"), "{err}");
    assert!(checkpoints.lock().unwrap().is_empty());
    assert_eq!(sink.stats().retries, 0);
    assert_eq!(stream_ids(&mut conn, stream).await, ids(&first));
    let value: String = redis::cmd("GET")
        .arg(sink.progress_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, "not a hash", "the foreign key is left as it was");

    let () = redis::cmd("DEL")
        .arg(sink.progress_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    sink.send_and_checkpoint(second.clone(), Some(SourcePosition::new("5")), &hook)
        .await
        .unwrap();
    let mut expected = ids(&first);
    expected.extend(ids(&second));
    assert_eq!(stream_ids(&mut conn, stream).await, expected);
    assert_eq!(*checkpoints.lock().unwrap(), vec![SourcePosition::new("5")]);
}

/// Sets `maxmemory` to the memory in use now plus `room` bytes.
async fn leave_room(server: &RedisServer, conn: &mut redis::aio::MultiplexedConnection, room: u64) {
    let limit = used_memory(conn).await + room;
    server
        .config_set("maxmemory", &limit.to_string())
        .await
        .unwrap();
}

/// All or nothing where a bare pipeline would write part of the batch: memory is short by
/// less than one batch, so the first events of a batch would fit and the rest would not. (The
/// tests above set `maxmemory` to 1, where every `XADD` is refused and a bare pipeline would
/// pass too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_part_way_through_a_batch_writes_none_of_it_then_all_of_it_once() {
    const EVENTS: usize = 40;
    // About 48 KiB an event, ~1.9 MiB a batch, against 1 MiB of room: roughly the first half
    // of a batch fits.
    const PAD: usize = 48 * 1024;
    const ROOM: u64 = 1024 * 1024;
    let server = RedisServer::start().await.unwrap();
    let stream = "{oomhalf}.events";
    let raw_stream = "{oomhalf}.raw";
    let batch: Vec<_> = (0..EVENTS)
        .map(|i| {
            Event::new(
                "test.big",
                serde_json::json!({ "n": i, "pad": "x".repeat(PAD) }),
                EventMetadata::default(),
            )
        })
        .collect();
    let sink_config = config(&server.url(), stream);
    // One sink that gives up at once, to see the error; one that retries until it gets in.
    let probe = RedisSink::new(sink_config.clone().with_retry(RetryPolicy::none())).unwrap();
    let sink = std::sync::Arc::new(
        RedisSink::new(
            sink_config.with_retry(
                RetryPolicy::unlimited()
                    .with_initial_delay(std::time::Duration::from_millis(5))
                    .with_max_delay(std::time::Duration::from_millis(20)),
            ),
        )
        .unwrap(),
    );
    // Every connection is open before memory is measured, so it is part of the measure.
    assert_eq!(probe.recorded_progress().await.unwrap(), None);
    assert_eq!(sink.recorded_progress().await.unwrap(), None);
    let mut conn = server.connection().await.unwrap();
    server
        .config_set("maxmemory-policy", "noeviction")
        .await
        .unwrap();

    // The setup can tell a transaction from a bare pipeline: the same events sent as plain
    // XADDs (no MULTI) land in part, since each XADD is checked for memory when it runs, the
    // first ones are written and the later ones refused with OOM.
    leave_room(&server, &mut conn, ROOM).await;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for event in &batch {
        let json = redstream_core::wire::encode(event, &EventLimits::default()).unwrap();
        pipe.cmd("XADD")
            .arg(raw_stream)
            .arg("*")
            .arg("event")
            .arg(json);
    }
    let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await.unwrap();
    let refused = replies
        .iter()
        .filter(|r| matches!(r, redis::Value::ServerError(e) if e.code() == "OOM"))
        .count();
    let raw_len: usize = redis::cmd("XLEN")
        .arg(raw_stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(0 < raw_len && raw_len < EVENTS, "{raw_len} of {EVENTS}");
    assert_eq!(raw_len + refused, EVENTS, "{replies:?}");

    // Reset: the raw stream's memory freed, the same room again, fresh command counts.
    server.config_set("maxmemory", "0").await.unwrap();
    let () = redis::cmd("DEL")
        .arg(raw_stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    leave_room(&server, &mut conn, ROOM).await;
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();

    // What happens to the sink's batch script: its EVALSHA carries the whole batch in its
    // arguments, which the server holds in the client's query buffer (counted in used_memory)
    // when it decides whether to run the script. A script declared with `#!lua` and no flags
    // is refused whole (OOM) when memory is over maxmemory then, before it starts: no XADD
    // runs at all. (Had the batch fitted, the script would have written it whole: memory is
    // checked once, before the first write.)
    let err = probe
        .send_batch(batch.clone(), Some(SourcePosition::new("1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfMemory, "{err}");
    assert!(err.is_retryable());
    // A bare pipeline fails here: it leaves the first half of the batch in the stream (and
    // its progress HSET, small enough to get in after the refused XADDs, would then make the
    // sink skip the batch as written).
    assert!(stream_ids(&mut conn, stream).await.is_empty());
    assert_eq!(probe.recorded_progress().await.unwrap(), None);
    let task = {
        let sink = std::sync::Arc::clone(&sink);
        let batch = batch.clone();
        tokio::spawn(async move { sink.send_batch(batch, Some(SourcePosition::new("1"))).await })
    };
    // Several whole attempts refused, each time with nothing written. (The timeout is a hang
    // guard only.)
    tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while sink.stats().retries < 3 {
            assert!(!task.is_finished(), "the batch ended: {:?}", sink.stats());
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the sink did not retry three times");
    assert!(stream_ids(&mut conn, stream).await.is_empty());
    let xadd = command_stats(&mut conn, "xadd").await;
    let evalsha = command_stats(&mut conn, "evalsha").await;
    assert_eq!(xadd.calls, 0, "no XADD ran: {xadd:?}");
    // At least 4 attempts (the probe's and 3 of the sink's), each refused before it ran. (The
    // one call is the probe's first EVALSHA, answered NOSCRIPT: the script was then loaded.)
    assert_eq!(evalsha.calls, evalsha.failed_calls, "{evalsha:?}");
    assert!(evalsha.rejected_calls >= 4, "{evalsha:?}");
    assert_eq!(probe.recorded_progress().await.unwrap(), None);

    // Memory is lifted: the retry delivers the batch, once.
    server.config_set("maxmemory", "0").await.unwrap();
    let ack = task.await.unwrap().unwrap();
    assert_eq!(ack.written, EVENTS);
    assert_eq!(stream_ids(&mut conn, stream).await, ids(&batch));
}
