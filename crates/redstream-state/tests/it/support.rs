//! Shared helpers: stores on either backend, waits that turn hangs into failures, and a
//! capture of warnings and errors logged by the store.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redstream_state::{StateBackend, StateConfig, StateStore};
use redstream_testkit::RedisServer;

/// How long a test waits for anything before it fails as hung. Never a performance limit.
pub(crate) const HANG: Duration = Duration::from_secs(30);

/// A name unique in this test binary.
pub(crate) fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Which backend a behaviour test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Memory,
    Redis,
}

/// A store under test, and what is needed to open more stores on the same data.
pub(crate) struct Ctx {
    pub(crate) store: StateStore,
    pub(crate) kind: Kind,
    config: StateConfig,
    /// Keeps the Redis test server alive as long as the store.
    _server: Option<RedisServer>,
}

impl Kind {
    /// A store with `config` (whose backend is replaced): memory, or a private redis-server
    /// with a fresh prefix.
    pub(crate) async fn open(self, config: StateConfig) -> Ctx {
        capture_logs();
        match self {
            Self::Memory => {
                let config = config.with_backend(StateBackend::Memory);
                Ctx {
                    store: StateStore::with_config(config.clone()).await.unwrap(),
                    kind: self,
                    config,
                    _server: None,
                }
            }
            Self::Redis => {
                let server = RedisServer::start().await.unwrap();
                let config = config.with_backend(StateBackend::redis(server.url(), unique("app")));
                Ctx {
                    store: StateStore::with_config(config.clone()).await.unwrap(),
                    kind: self,
                    config,
                    _server: Some(server),
                }
            }
        }
    }
}

impl Ctx {
    /// Another store on the same data: for Redis, a new store with its own connection, as
    /// another process would open; for memory, a clone (the only way to share a memory map).
    pub(crate) async fn another(&self) -> StateStore {
        match self.kind {
            Kind::Memory => self.store.clone(),
            Kind::Redis => StateStore::with_config(self.config.clone()).await.unwrap(),
        }
    }
}

/// A store on `server` under `prefix` with `config`.
pub(crate) async fn redis_store(
    server: &RedisServer,
    prefix: &str,
    config: StateConfig,
) -> StateStore {
    capture_logs();
    StateStore::with_config(config.with_backend(StateBackend::redis(server.url(), prefix)))
        .await
        .unwrap()
}

/// Awaits `future`, failing the test after [`HANG`].
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not complete within {HANG:?}"))
}

/// Polls `condition` until it holds, failing the test after [`HANG`]. For state that has no
/// event to wait on (a key expiring, a server coming back).
pub(crate) async fn until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// A raw redis-rs `GET`, as another client sees the key.
pub(crate) async fn raw_get(server: &RedisServer, key: &str) -> Option<String> {
    let mut conn = server.connection().await.unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

pub(crate) use redstream_testkit::{capture_logs, logged};
