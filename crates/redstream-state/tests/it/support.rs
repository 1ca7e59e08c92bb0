//! Shared helpers: stores on either backend, waits that turn hangs into failures, and a
//! capture of warnings and errors logged by the store.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use redstream_state::{StateBackend, StateConfig, StateStore};
use redstream_testkit::RedisServer;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Metadata, Subscriber};

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

/// Warnings and errors logged so far (by every test of this binary) that contain `needle`.
pub(crate) fn logged(needle: &str) -> Vec<String> {
    LOGS.lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains(needle))
        .cloned()
        .collect()
}

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Installs, once per test binary, a global `tracing` subscriber that keeps every warning and
/// error. With `REDSTREAM_TEST_LOG=debug` (or `info`, `trace`) it also prints events of that
/// level and above to stderr.
pub(crate) fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let print = std::env::var("REDSTREAM_TEST_LOG")
            .ok()
            .and_then(|level| level.parse::<Level>().ok());
        let _ = tracing::subscriber::set_global_default(Capture { print });
    });
}

struct Capture {
    print: Option<Level>,
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let threshold = self.print.map_or(Level::WARN, |p| p.max(Level::WARN));
        *metadata.level() <= threshold
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let level = *event.metadata().level();
        let mut line = Line(format!("{level} {}:", event.metadata().target()));
        event.record(&mut line);
        if self.print.is_some_and(|p| level <= p) {
            eprintln!("{}", line.0);
        }
        if level <= Level::WARN {
            LOGS.lock().unwrap().push(line.0);
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
