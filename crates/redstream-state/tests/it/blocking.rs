//! The blocking wrapper, from plain synchronous tests, as seed 001 writes it.

use std::sync::mpsc;
use std::time::Duration;

use redstream_state::{
    BlockingStateStore, CircuitBreakerConfig, ErrorKind, FallbackConfig, FallbackMode,
    StateBackend, StateConfig, Transaction, Value,
};
use redstream_testkit::RedisServer;

use crate::support::{HANG, capture_logs, unique};

/// A server started from synchronous code: the test kit is async, so a throwaway runtime
/// starts (and later restarts) it.
fn server(appendonly: bool) -> (tokio::runtime::Runtime, RedisServer) {
    capture_logs();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = runtime
        .block_on(RedisServer::builder().appendonly(appendonly).start())
        .unwrap();
    (runtime, server)
}

/// Runs `f` on another thread, failing the test if it does not finish within [`HANG`].
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("{what} did not finish within {HANG:?}"))
}

#[test]
fn the_seed_style_from_synchronous_code() {
    let (_runtime, server) = server(false);
    let backend = StateBackend::Redis {
        url: server.url(),
        key_prefix: unique("myapp"),
    };
    let store = BlockingStateStore::new(backend.clone()).unwrap();
    store.put("counter", Value::Integer(42)).unwrap();
    let value: Option<Value> = store.get("counter").unwrap();
    assert_eq!(value, Some(Value::Integer(42)));
    store
        .put_with_ttl(
            "session_key",
            Value::String("token".to_string()),
            Duration::from_secs(3600),
        )
        .unwrap();
    assert!(store.ttl("session_key").unwrap().remaining().is_some());
    assert_eq!(store.incr("counter").unwrap(), 43);
    assert_eq!(
        store
            .update("counter", |n: Option<i64>| n.unwrap_or(0) * 2)
            .unwrap(),
        86
    );

    // Seed 001's "distributed state": a second store shares the data.
    let store2 = BlockingStateStore::new(backend).unwrap();
    store.put("total", Value::Integer(10)).unwrap();
    if let Some(Value::Integer(n)) = store2.get("total").unwrap() {
        assert_eq!(n, 10);
    } else {
        panic!("store2 does not see the total");
    }
    let mut tx = Transaction::new();
    tx.incr("total").put("done", true);
    assert_eq!(store2.transaction(tx).unwrap(), vec![11]);
    store2
        .save_checkpoint("cp", "9-0", [("total", 11)])
        .unwrap();
    assert_eq!(
        store
            .load_checkpoint::<i64>("cp")
            .unwrap()
            .unwrap()
            .position,
        "9-0"
    );
    assert_eq!(store.list_keys("").unwrap().len(), 4);

    // Clones share the store; the runtime thread ends with the last one.
    let clone = store.clone();
    drop(store);
    assert_eq!(clone.get::<i64>("total").unwrap(), Some(11));
}

#[test]
fn the_memory_backend_blocks_too() {
    let store = BlockingStateStore::new(StateBackend::Memory).unwrap();
    store.put("k", 1).unwrap();
    assert_eq!(store.incr("k").unwrap(), 2);
    assert!(store.exists("k").unwrap());
}

#[tokio::test]
async fn calls_from_inside_an_async_runtime_are_refused() {
    let err = BlockingStateStore::new(StateBackend::Memory).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("async runtime"), "{err}");

    // A store made outside a runtime refuses to block inside one.
    let store = std::thread::spawn(|| BlockingStateStore::new(StateBackend::Memory).unwrap())
        .join()
        .unwrap();
    let err = store.put("k", 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("BlockingStateStore::put"), "{err}");
    // Dropping it from here must not deadlock: it is moved to a plain thread to be dropped.
    std::thread::spawn(move || drop(store)).join().unwrap();
}

/// The store's own runtime thread replays buffered writes between calls: `flush` returns
/// once they are in Redis, without any other call driving the runtime.
#[test]
fn buffered_writes_are_replayed_by_the_store_thread() {
    let (runtime, server) = server(true);
    let prefix = unique("blocking");
    let config = StateConfig::new(StateBackend::redis(server.url(), &prefix))
        .with_connect_timeout(Duration::from_secs(1))
        .with_response_timeout(Duration::from_secs(1))
        .with_circuit_breaker(
            CircuitBreakerConfig::default().with_open_duration(Duration::from_millis(100)),
        )
        .with_fallback(
            FallbackConfig::new(FallbackMode::StaleReadsBufferedWrites)
                .with_replay_interval(Duration::from_millis(50)),
        );
    let store = BlockingStateStore::with_config(config).unwrap();
    store.put("k", 1).unwrap();
    server.kill().unwrap();
    store.put("k", 2).unwrap();
    assert_eq!(store.fallback_stats().unwrap().pending, 1);
    runtime.block_on(server.restart()).unwrap();
    let store = bounded("flush", move || {
        store.flush().unwrap();
        store
    });
    assert_eq!(store.fallback_stats().unwrap().replayed, 1);
    let check = BlockingStateStore::new(StateBackend::redis(server.url(), &prefix)).unwrap();
    assert_eq!(check.get::<i64>("k").unwrap(), Some(2));
}
