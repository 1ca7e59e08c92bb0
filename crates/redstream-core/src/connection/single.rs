//! The connection to a single server: one RESP3 multiplexed connection, replaced when it
//! closes.
//!
//! This does what redis-rs's `ConnectionManager` does for us, with less shared work per
//! command. The manager keeps its connection behind a shared future and, for every command,
//! clones that future and then the connection it resolves to: from many tasks at once, writes
//! to the same reference counts from every thread. In the benches, raw redis-rs through the
//! manager runs at 0.91x to 1.00x of a plain `MultiplexedConnection` from 64 tasks. Here a
//! command reads the current connection through an [`ArcSwapOption`] (no shared write) and
//! clones only the connection, as a caller of a plain `MultiplexedConnection` does. Measured
//! against the manager in eleven alternating pairs of runs, the gain is small (publish from 64
//! tasks 1.04x against 1.02x of raw redis-rs on average; see `docs/performance.md`); a
//! reconnection that failed in the background also no longer fails the next command with its
//! stale error, as the manager's does.
//!
//! The connection is replaced:
//!
//! - when it closes: RESP3 lets redis-rs report it at once (a disconnection push), so it is
//!   replaced before the next command is sent, and that command is not lost in a dead socket;
//! - when a command fails in a way that leaves the connection unusable (redis-rs's
//!   [`is_unrecoverable_error`](RedisError::is_unrecoverable_error): the connection dropped,
//!   a reply could not be parsed): the error is returned, as the command may have run, and
//!   the next command reconnects. A timeout keeps the connection, as the manager does: a
//!   server that is slow or paused answers on it later.
//!
//! A replacement is made by the first command that needs it, one at a time; the commands
//! that come meanwhile wait for it. A failed attempt is tried once more about 100 ms later,
//! as the manager's configuration (`number_of_retries(1)`) did: an attempt started as the
//! server died can reach its closing listener and be reset, and the second one reaches the
//! server once it is back. While the server stays down each command fails within a connect
//! timeout or two, with the refusal that says nothing was sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike as _, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, PushInfo, PushKind, RedisError, Value};

/// The pause before the second attempt of a replacement.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A self-healing connection to one server. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub(crate) struct SingleConnection {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    /// Timeouts of each connection.
    config: AsyncConnectionConfig,
    db: i64,
    /// The open connection; `None` once it was found broken, until a command replaces it.
    current: ArcSwapOption<Current>,
    /// Held while a replacement is made, so that concurrent commands make one.
    replacing: tokio::sync::Mutex<()>,
    generations: AtomicU64,
}

struct Current {
    generation: u64,
    conn: MultiplexedConnection,
    /// Set by redis-rs's disconnection push.
    closed: Arc<AtomicBool>,
}

impl SingleConnection {
    /// Connects to the server `client` names (trying twice, as a replacement does).
    pub(crate) async fn connect(
        client: Client,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout));
        let db = client.get_connection_info().redis_settings().db();
        let this = Self {
            shared: Arc::new(Shared {
                client,
                config,
                db,
                current: ArcSwapOption::empty(),
                replacing: tokio::sync::Mutex::new(()),
                generations: AtomicU64::new(0),
            }),
        };
        this.replace().await?;
        Ok(this)
    }

    pub(crate) fn db(&self) -> i64 {
        self.shared.db
    }

    /// The current connection, with its generation, if it is open.
    fn live(&self) -> Option<(u64, MultiplexedConnection)> {
        let current = self.shared.current.load();
        current
            .as_deref()
            .filter(|current| !current.closed.load(Ordering::Acquire))
            .map(|current| (current.generation, current.conn.clone()))
    }

    async fn current(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        match self.live() {
            Some(live) => Ok(live),
            // Boxed: the future of a connection attempt is large, and inline it would make
            // every command's future as large, to be moved on the fast path too.
            None => Box::pin(self.replace()).await,
        }
    }

    /// Opens a new connection, unless another command did while this one waited its turn.
    async fn replace(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        let _one_at_a_time = self.shared.replacing.lock().await;
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let (conn, closed) = match self.open().await {
            Ok(opened) => opened,
            Err(first) => {
                tracing::debug!(error = %first, "connecting failed; trying once more");
                tokio::time::sleep(RETRY_PAUSE).await;
                self.open().await?
            }
        };
        let generation = self.shared.generations.fetch_add(1, Ordering::Relaxed) + 1;
        if generation > 1 {
            tracing::info!(generation, "reconnected to the server");
        }
        self.shared.current.store(Some(Arc::new(Current {
            generation,
            conn: conn.clone(),
            closed,
        })));
        Ok((generation, conn))
    }

    /// One connection, with the flag its disconnection push sets.
    async fn open(&self) -> Result<(MultiplexedConnection, Arc<AtomicBool>), RedisError> {
        let closed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&closed);
        let config = self
            .shared
            .config
            .clone()
            .set_push_sender(move |info: PushInfo| {
                if info.kind == PushKind::Disconnection {
                    flag.store(true, Ordering::Release);
                }
                Ok::<(), std::convert::Infallible>(())
            });
        let conn = self
            .shared
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok((conn, closed))
    }

    /// After a failed command on the connection of `generation`: an unusable connection is
    /// forgotten, so that the next command opens a new one.
    fn after_error(&self, generation: u64, err: &RedisError) {
        if !err.is_unrecoverable_error() {
            return;
        }
        let current = self.shared.current.load();
        if current.as_ref().is_some_and(|c| c.generation == generation) {
            // Only if nothing replaced it meanwhile: a newer connection stays.
            self.shared.current.compare_and_swap(&current, None);
        }
    }

    pub(crate) async fn send_command(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        let (generation, mut conn) = self.current().await?;
        let result = conn.send_packed_command(cmd).await;
        if let Err(err) = &result {
            self.after_error(generation, err);
        }
        result
    }

    pub(crate) async fn send_pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> Result<Vec<Value>, RedisError> {
        let (generation, mut conn) = self.current().await?;
        let result = conn.req_packed_commands(pipeline, offset, count).await;
        if let Err(err) = &result {
            self.after_error(generation, err);
        }
        result
    }
}
