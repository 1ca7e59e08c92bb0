//! Redis killed mid-run: fail fast by default and recover after a restart; with the fallback,
//! stale reads and buffered writes that are replayed, in order, with nothing lost.

use std::time::Duration;

use redstream_state::{
    BackpressureConfig, BackpressureStrategy, CircuitBreakerConfig, ErrorKind, FallbackConfig,
    FallbackMode, StateConfig, StateStore,
};
use redstream_testkit::RedisServer;

use crate::support::{logged, raw_get, redis_store, unique, until, within};

/// Opens after 2 failures, for 200 ms: short enough for tests to see it close again.
fn quick_breaker() -> StateConfig {
    StateConfig::default()
        .with_connect_timeout(Duration::from_secs(1))
        .with_response_timeout(Duration::from_secs(1))
        .with_circuit_breaker(
            CircuitBreakerConfig::default()
                .with_failure_threshold(2)
                .with_open_duration(Duration::from_millis(200)),
        )
}

fn with_fallback(fallback: FallbackConfig) -> StateConfig {
    quick_breaker().with_fallback(fallback.with_replay_interval(Duration::from_millis(50)))
}

async fn aof_server() -> RedisServer {
    RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_while_down_then_recover_after_restart() {
    let server = aof_server().await;
    let store = redis_store(&server, &unique("ff"), quick_breaker()).await;
    store.put("k", 1).await.unwrap();

    server.kill().unwrap();
    let mut kinds = Vec::new();
    for _ in 0..6 {
        let err = within("a call to a dead server", store.get::<i64>("k"))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        kinds.push(err.kind());
    }
    assert!(
        kinds.iter().all(|k| matches!(
            k,
            ErrorKind::Connection | ErrorKind::Timeout | ErrorKind::CircuitOpen
        )),
        "{kinds:?}"
    );
    assert!(kinds.contains(&ErrorKind::CircuitOpen), "{kinds:?}");
    // Writes fail fast too, and nothing is buffered without the fallback.
    assert!(store.put("k", 2).await.unwrap_err().is_retryable());
    assert!(store.fallback_stats().is_none());

    server.restart().await.unwrap();
    until("the store to recover", || async {
        store.get::<i64>("k").await.is_ok()
    })
    .await;
    assert_eq!(store.get::<i64>("k").await.unwrap(), Some(1));
    store.put("k", 3).await.unwrap();
    assert_eq!(
        raw_get(&server, &store.redis_key("k").unwrap())
            .await
            .as_deref(),
        Some("3")
    );
}

/// Issue 12's reproduction for the store, with default settings: while the server is down a
/// write fails saying nothing was sent (not "may have been written"); once it is back, the very
/// first call succeeds (no `broken pipe` on a stale connection, no breaker opened by it), and
/// so do a transaction and a checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_call_after_a_restart_succeeds_with_default_settings() {
    let server = aof_server().await;
    let store = redis_store(&server, &unique("restart"), StateConfig::default()).await;
    store.put("k", 1).await.unwrap();

    // Killed and back before the store sends anything: its connection is stale, yet the first
    // call succeeds.
    server.kill().unwrap();
    server.restart().await.unwrap();
    store.put("k", 2).await.unwrap();

    server.kill().unwrap();
    // The first write may still go out on the dying connection before its close is seen (an
    // ambiguous broken pipe); every later one is refused at connect.
    let mut ambiguous = 0;
    loop {
        let err = within("a write to a dead server", store.put("k", 2))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        if err.to_string().contains("nothing was sent") {
            break;
        }
        ambiguous += 1;
        assert!(ambiguous <= 1, "a second ambiguous failure: {err}");
    }

    server.restart().await.unwrap();
    store.put("k", 3).await.unwrap();
    assert_eq!(store.get::<i64>("k").await.unwrap(), Some(3));
    let mut tx = redstream_state::Transaction::new();
    tx.put("t", 1).incr_by("n", 2);
    assert_eq!(store.transaction(tx).await.unwrap(), vec![2]);
    store
        .save_checkpoint("cp", "1-0", [("s", 1)])
        .await
        .unwrap();
    assert_eq!(
        store.circuit_breaker_stats().unwrap().state,
        redstream_state::CircuitState::Closed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_from_the_cache_while_down() {
    let server = aof_server().await;
    let config = with_fallback(FallbackConfig::new(FallbackMode::StaleReads));
    let store = redis_store(&server, &unique("stale"), config).await;
    store.put("written", "w").await.unwrap();
    store.put("read", "r").await.unwrap();
    // A fresh read is not stale, and teaches the cache.
    let read = store.get_with_meta::<String>("read").await.unwrap();
    assert_eq!((read.value.as_deref(), read.stale), (Some("r"), false));
    let absent = store.get_with_meta::<String>("absent").await.unwrap();
    assert_eq!((absent.value, absent.stale), (None, false));
    store
        .put_with_ttl("short", "s", Duration::from_millis(300))
        .await
        .unwrap();

    server.kill().unwrap();
    for (key, expected) in [
        ("written", Some("w")),
        ("read", Some("r")),
        ("absent", None),
    ] {
        let read = store.get_with_meta::<String>(key).await.unwrap();
        assert_eq!(read.value.as_deref(), expected, "{key}");
        assert!(read.stale, "{key}");
    }
    assert_eq!(
        store.get::<String>("written").await.unwrap().as_deref(),
        Some("w")
    );
    // An expired value is never returned, stale or not.
    until("the cached short-lived value to expire", || async {
        store.get::<String>("short").await.unwrap().is_none()
    })
    .await;
    // A key the cache does not know is the error, never None.
    let err = store.get::<String>("unknown").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // Writes and other reads fail fast.
    assert!(store.put("written", "x").await.unwrap_err().is_retryable());
    assert!(store.exists("written").await.unwrap_err().is_retryable());
    let stats = store.fallback_stats().unwrap();
    assert!(stats.stale_reads >= 4, "{stats:?}");
    assert_eq!(stats.buffered, 0);

    server.restart().await.unwrap();
    until("fresh reads again", || async {
        matches!(store.get_with_meta::<String>("read").await, Ok(read) if !read.stale)
    })
    .await;
    // The failed put may or may not have reached Redis before the kill; the cache forgot it.
    let written = store.get_with_meta::<String>("written").await.unwrap();
    assert!(!written.stale);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_writes_are_replayed_in_order_with_nothing_lost() {
    let server = aof_server().await;
    let prefix = unique("buf");
    let config = with_fallback(FallbackConfig::new(FallbackMode::StaleReadsBufferedWrites));
    let store = redis_store(&server, &prefix, config).await;
    store.put("a", 1).await.unwrap();
    store.put("gone", 1).await.unwrap();

    server.kill().unwrap();
    store.put("a", 2).await.unwrap();
    store.put("a", 3).await.unwrap();
    store.put("b", "bee").await.unwrap();
    store.delete("gone").await.unwrap();
    store.put_many([("m1", 10), ("m2", 20)]).await.unwrap();
    store
        .put_with_ttl("session", "t", Duration::from_secs(3600))
        .await
        .unwrap();
    let stats = store.fallback_stats().unwrap();
    assert_eq!(
        (stats.buffered, stats.pending, stats.dropped),
        (6, 6, 0),
        "{stats:?}"
    );

    // This process reads its own buffered writes, marked stale.
    let a = store.get_with_meta::<i64>("a").await.unwrap();
    assert_eq!((a.value, a.stale), (Some(3), true));
    assert_eq!(store.get::<i64>("gone").await.unwrap(), None);
    // Writes that cannot be buffered fail fast rather than overtake the buffered ones.
    let err = store.incr("a").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");

    server.restart().await.unwrap();
    within("the buffer to be replayed", store.flush()).await;
    let stats = store.fallback_stats().unwrap();
    assert_eq!(
        (stats.replayed, stats.pending, stats.dropped, stats.failed),
        (6, 0, 0, 0),
        "{stats:?}"
    );

    // Another client sees every write, the last one of each key winning.
    let fresh = redis_store(&server, &prefix, StateConfig::default()).await;
    assert_eq!(fresh.get::<i64>("a").await.unwrap(), Some(3));
    assert_eq!(
        fresh.get::<String>("b").await.unwrap().as_deref(),
        Some("bee")
    );
    assert!(!fresh.exists("gone").await.unwrap());
    assert_eq!(
        fresh.get_many::<i64, _>(&["m1", "m2"]).await.unwrap(),
        vec![Some(10), Some(20)]
    );
    let left = fresh.ttl("session").await.unwrap().remaining().unwrap();
    assert!(
        left <= Duration::from_secs(3600) && left > Duration::from_secs(3500),
        "{left:?}"
    );
    // Reads are fresh again, and other writes go through.
    assert!(!store.get_with_meta::<i64>("a").await.unwrap().stale);
    assert_eq!(store.incr("a").await.unwrap(), 4);

    // And it is durable: the append-only file has it after another crash.
    server.kill().unwrap();
    server.restart().await.unwrap();
    let after = redis_store(&server, &prefix, StateConfig::default()).await;
    assert_eq!(after.get::<i64>("a").await.unwrap(), Some(4));
    assert_eq!(
        after.get::<String>("b").await.unwrap().as_deref(),
        Some("bee")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_or_refuses_and_counts_it() {
    let server = aof_server().await;
    let prefix = unique("full");
    let drop_oldest = with_fallback(
        FallbackConfig::new(FallbackMode::StaleReadsBufferedWrites).with_write_buffer(
            BackpressureConfig::default()
                .with_max_queue_size(2)
                .with_strategy(BackpressureStrategy::DropOldest),
        ),
    );
    let store = redis_store(&server, &prefix, drop_oldest).await;
    let reject = with_fallback(
        FallbackConfig::new(FallbackMode::StaleReadsBufferedWrites).with_write_buffer(
            BackpressureConfig::default()
                .with_max_queue_size(1)
                .with_strategy(BackpressureStrategy::Reject),
        ),
    );
    let strict = redis_store(&server, &prefix, reject).await;

    server.kill().unwrap();
    // The replay task takes the first write and holds it, retrying, until Redis is back; the
    // queue behind it holds `max_queue_size` more.
    store.put("x0", 0).await.unwrap();
    strict.put("y0", 0).await.unwrap();
    until("the replay tasks to hold the first writes", || async {
        [&store, &strict].iter().all(|s| {
            let stats = s.fallback_stats().unwrap();
            stats.pending == 1 && stats.queued == 0
        })
    })
    .await;

    for (i, key) in ["x1", "x2", "x3"].into_iter().enumerate() {
        store.put(key, i + 1).await.unwrap();
    }
    let stats = store.fallback_stats().unwrap();
    assert_eq!(
        (stats.buffered, stats.dropped, stats.pending, stats.queued),
        (4, 1, 3, 2),
        "{stats:?}"
    );
    assert!(
        !logged("put of key \"x1\"").is_empty(),
        "the dropped write is logged with its key"
    );
    // The dropped write is not read back either.
    assert!(store.get::<usize>("x1").await.is_err());

    strict.put("y1", 1).await.unwrap();
    let err = strict.put("y2", 2).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QueueFull, "{err}");
    assert!(err.is_retryable());

    server.restart().await.unwrap();
    within("the buffers to be replayed", async {
        store.flush().await;
        strict.flush().await;
    })
    .await;
    let fresh = redis_store(&server, &prefix, StateConfig::default()).await;
    assert_eq!(
        fresh
            .get_many::<usize, _>(&["x0", "x1", "x2", "x3", "y0", "y1", "y2"])
            .await
            .unwrap(),
        vec![Some(0), None, Some(2), Some(3), Some(0), Some(1), None]
    );
    let stats = store.fallback_stats().unwrap();
    assert_eq!((stats.replayed, stats.dropped), (3, 1), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_still_buffered_when_the_store_is_dropped_are_counted_and_logged() {
    let server = aof_server().await;
    let config = with_fallback(FallbackConfig::new(FallbackMode::StaleReadsBufferedWrites));
    let store = redis_store(&server, &unique("dropped"), config).await;
    let watcher: StateStore = store.clone();
    server.kill().unwrap();
    store.put("lost-on-drop", 1).await.unwrap();
    drop(store);
    drop(watcher);
    until("the loss to be logged", || async {
        !logged("lost-on-drop").is_empty()
    })
    .await;
}
