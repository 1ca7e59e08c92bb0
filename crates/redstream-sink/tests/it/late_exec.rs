//! An older attempt of a batch that the server runs after the sink read its progress and
//! before the sink's own batch script (one sent on a connection that died, or by an earlier
//! process). The script checks the progress key again where nothing can run in between, so it
//! writes nothing and the batch is found written instead of being written twice.
//!
//! The "older attempt" is played by another sink with the same id, connected directly, while a
//! proxy holds the first sink's `EVALSHA` between it and the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redstream_core::{BatchSink, ErrorKind, RetryPolicy, SourcePosition};
use redstream_sink::RedisSink;
use redstream_testkit::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use crate::{command_calls, config, events, ids, stream_ids};

/// A hang guard only: every wait below ends in well under a second when the code works.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// A go-ahead for one held `EVALSHA`.
type Release = oneshot::Sender<()>;

/// A TCP proxy that forwards everything both ways, except that the first `holds` chunks a
/// client sends with an `EVALSHA` in them are held: for each, the proxy sends a [`Release`] on the
/// returned channel and forwards the chunk once the test answers on it.
async fn start_holding_proxy(target: String, holds: usize) -> (u16, mpsc::Receiver<Release>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let remaining = Arc::new(AtomicUsize::new(holds));
    let (held_tx, held_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            let (client, _) = listener.accept().await.unwrap();
            let server = TcpStream::connect(&target).await.unwrap();
            tokio::spawn(relay(
                client,
                server,
                Arc::clone(&remaining),
                held_tx.clone(),
            ));
        }
    });
    (port, held_rx)
}

async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    remaining: Arc<AtomicUsize>,
    held: mpsc::Sender<Release>,
) {
    let mut from_client = vec![0u8; 64 * 1024];
    let mut from_server = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            n = client.read(&mut from_client) => {
                let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                let chunk = &from_client[..n];
                // `EVALSHA` as a RESP bulk string: a command, not a payload that mentions it.
                if contains(chunk, b"$7\r\nEVALSHA\r\n") && take_one(&remaining) {
                    let (release, released) = oneshot::channel();
                    held.send(release).await.unwrap();
                    released.await.unwrap();
                }
                if server.write_all(chunk).await.is_err() {
                    return;
                }
            }
            n = server.read(&mut from_server) => {
                let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                if client.write_all(&from_server[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Takes one from `remaining` unless it is zero; whether it did.
fn take_one(remaining: &AtomicUsize) -> bool {
    remaining
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Waits for the proxy to hold an `EVALSHA`.
async fn held_script(held: &mut mpsc::Receiver<Release>) -> Release {
    timeout(HANG_GUARD, held.recv())
        .await
        .expect("the sink never sent its batch script")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_attempt_run_between_read_and_script_is_not_written_twice() {
    older_attempt_between_read_and_script("{late}.events", false).await;
}

/// The same after `recorded_progress`, as a restarted runner reads it before its first batch:
/// that read does not stand in for the watched one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_attempt_after_recorded_progress_is_not_written_twice() {
    older_attempt_between_read_and_script("{late2}.events", true).await;
}

async fn older_attempt_between_read_and_script(stream: &str, read_recorded_first: bool) {
    let server = RedisServer::start().await.unwrap();
    let (port, mut held) =
        start_holding_proxy(format!("{}:{}", server.host(), server.port()), 1).await;

    // Sink A, connected directly, writes batch 1: the progress key records it.
    let a = RedisSink::new(config(&server.url(), stream)).unwrap();
    let first = events(3);
    a.send_batch(first.clone(), Some(SourcePosition::new("1")))
        .await
        .unwrap();

    // Sink B, the same id and stream through the proxy, starts with its progress unknown: it
    // reads the key (batch 2 is not recorded) and sends its batch script, which the proxy
    // holds.
    let b = Arc::new(RedisSink::new(config(&format!("redis://127.0.0.1:{port}"), stream)).unwrap());
    if read_recorded_first {
        let recorded = b.recorded_progress().await.unwrap().unwrap();
        assert_eq!(
            recorded.last_event_id,
            first.last().unwrap().id().to_string()
        );
    }
    let second = events(3);
    let sending = tokio::spawn({
        let b = Arc::clone(&b);
        let second = second.clone();
        async move { b.send_batch(second, Some(SourcePosition::new("2"))).await }
    });
    let release = held_script(&mut held).await;

    // The older attempt of batch 2 runs now, after B's read and before B's script: sink A
    // (the same id) writes it.
    let ack = a
        .send_batch(second.clone(), Some(SourcePosition::new("2")))
        .await
        .unwrap();
    assert_eq!(ack.written, 3);
    release.send(()).unwrap();

    let ack = timeout(HANG_GUARD, sending)
        .await
        .expect("send_batch hung")
        .unwrap()
        .unwrap();
    assert_eq!(ack.written, 0, "{ack:?}");
    assert_eq!(ack.skipped_duplicates, 3, "{ack:?}");
    let stats = b.stats();
    assert_eq!(stats.skipped_batches, 1, "{stats:?}");
    assert_eq!(stats.batches, 0, "{stats:?}");
    // The script found the batch recorded: not a failure.
    assert_eq!(stats.retries, 0, "{stats:?}");

    let mut conn = server.connection().await.unwrap();
    let mut expected = ids(&first);
    expected.extend(ids(&second));
    assert_eq!(stream_ids(&mut conn, stream).await, expected);
}

/// A progress key that keeps changing between the sink's read and its batch script (another
/// writer records other batches there): each script writes nothing and answers what it found,
/// the sink decides again, and after three in a row it gives up with a retryable error,
/// nothing of the batch written; the retry writes it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_key_that_keeps_changing_is_a_retryable_error() {
    let server = RedisServer::start().await.unwrap();
    let stream = "{churn}.events";
    // Three scripts in a row find the key changed; the attempt gives up after the third.
    let (port, mut held) =
        start_holding_proxy(format!("{}:{}", server.host(), server.port()), 3).await;
    let sink = Arc::new(
        RedisSink::new(
            config(&format!("redis://127.0.0.1:{port}"), stream)
                .with_retry(RetryPolicy::default().with_max_attempts(Some(1))),
        )
        .unwrap(),
    );
    // The script loaded on the server (any sink's first batch loads it), so that each held
    // EVALSHA runs it rather than answer NOSCRIPT.
    RedisSink::new(config(&server.url(), "{churn}.warm-up"))
        .unwrap()
        .send_batch(events(1), None)
        .await
        .unwrap();
    let batch = events(2);
    let sending = tokio::spawn({
        let sink = Arc::clone(&sink);
        let batch = batch.clone();
        async move { sink.send_batch(batch, Some(SourcePosition::new("7"))).await }
    });
    let mut conn = server.connection().await.unwrap();
    for n in 0..3 {
        let release = held_script(&mut held).await;
        // Some other writer records another batch there.
        let () = redis::cmd("HSET")
            .arg(sink.progress_key())
            .arg("last_event_id")
            .arg(format!("other-{n}"))
            .arg("position")
            .arg(n.to_string())
            .query_async(&mut conn)
            .await
            .unwrap();
        release.send(()).unwrap();
    }
    let err = timeout(HANG_GUARD, sending)
        .await
        .expect("send_batch hung")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("3 times in a row"), "{err}");
    assert!(err.to_string().contains(sink.progress_key()), "{err}");
    assert!(stream_ids(&mut conn, stream).await.is_empty());

    // The proxy holds no more scripts: the batch goes in, once.
    let ack = timeout(
        HANG_GUARD,
        sink.send_batch(batch.clone(), Some(SourcePosition::new("7"))),
    )
    .await
    .expect("send_batch hung")
    .unwrap();
    assert_eq!(ack.written, 2);
    assert_eq!(stream_ids(&mut conn, stream).await, ids(&batch));
}

/// A sink that knows its progress reads nothing before its batches: consecutive batches cost
/// one `EVALSHA` each (whose script reads the progress key itself), and no `MULTI`, `EXEC` or
/// `WATCH` is ever sent.
#[tokio::test]
async fn the_hot_path_is_one_script_per_batch() {
    let server = RedisServer::start().await.unwrap();
    let stream = "{hot}.events";
    let mut conn = server.connection().await.unwrap();
    let sink = RedisSink::new(config(&server.url(), stream)).unwrap();

    // The first batch reads the unknown progress first.
    sink.send_batch(events(2), Some(SourcePosition::new("0")))
        .await
        .unwrap();
    assert_eq!(command_calls(&mut conn, "hmget").await, 2);

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
    assert_eq!(command_calls(&mut conn, "evalsha").await, 4);
    // The scripts' own reads of the progress key, no other.
    assert_eq!(command_calls(&mut conn, "hmget").await, 4);
    assert_eq!(command_calls(&mut conn, "xadd").await, 8);
    for absent in ["multi", "exec", "watch", "unwatch"] {
        assert_eq!(command_calls(&mut conn, absent).await, 0, "{absent}");
    }
}
