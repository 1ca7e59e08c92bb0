//! Shared helpers: stores on either backend, waits that turn hangs into failures, and a
//! capture of warnings and errors logged by the store.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redstream_state::{StateBackend, StateConfig, StateStore};
use redstream_testkit::{RedisCluster, RedisServer};

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
    /// The Redis Cluster of [`on_cluster`] (a fresh prefix per store), in the layout the
    /// store picks when none is chosen.
    Cluster,
}

/// The `redis-cluster://` URL of the cluster the running [`on_cluster`] shares.
static CLUSTER_URL: Mutex<Option<String>> = Mutex::new(None);

/// `redis-cluster://host:port,...` with every node of `cluster` as a seed.
pub(crate) fn cluster_url(cluster: &RedisCluster) -> String {
    let hosts: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|node| format!("{}:{}", node.server().host(), node.port()))
        .collect();
    format!("redis-cluster://{}", hosts.join(","))
}

/// Runs `cases` with [`Kind::Cluster`] stores on `cluster`. One test at a time may use it.
pub(crate) async fn on_cluster<F, Fut>(cluster: &RedisCluster, cases: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    *CLUSTER_URL.lock().unwrap_or_else(PoisonError::into_inner) = Some(cluster_url(cluster));
    cases().await;
    *CLUSTER_URL.lock().unwrap_or_else(PoisonError::into_inner) = None;
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
            Self::Cluster => {
                let url = CLUSTER_URL
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .expect("Kind::Cluster stores are opened inside support::on_cluster");
                let config = config.with_backend(StateBackend::redis(url, unique("app")));
                let store = StateStore::with_config(config.clone()).await.unwrap();
                if config.key_layout.is_none() {
                    // Not chosen: the cluster layout, one slot per store.
                    assert!(store.redis_key("k").unwrap().starts_with('{'));
                }
                Ctx {
                    store,
                    kind: self,
                    config,
                    _server: None,
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
            Kind::Redis | Kind::Cluster => {
                StateStore::with_config(self.config.clone()).await.unwrap()
            }
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
