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
//! A replacement is started by the first command that needs it, in a task of its own; every
//! command that comes while it runs waits for that one attempt and shares its outcome, and a
//! command cancelled meanwhile (a caller's timeout) does not cancel it. A failed connection is
//! tried once more about 100 ms later, as the manager's configuration (`number_of_retries(1)`)
//! did: an attempt started as the server died can reach its closing listener and be reset, and
//! the second one reaches the server once it is back. While the server stays down, a command
//! fails within one attempt (two connect timeouts and the pause at most), with the refusal that
//! says nothing was sent, however many commands wait; the next command starts a new attempt.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared as SharedFuture};
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
    /// The replacement under way, if any: every command that needs one awaits this one.
    attempt: Mutex<Option<Attempt>>,
    generations: AtomicU64,
}

/// A replacement running in a task of its own, with the new connection and its generation.
type Attempt = SharedFuture<BoxFuture<'static, Result<(u64, MultiplexedConnection), RedisError>>>;

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
                attempt: Mutex::new(None),
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
    pub(super) fn live(&self) -> Option<(u64, MultiplexedConnection)> {
        let current = self.shared.current.load();
        current
            .as_deref()
            .filter(|current| !current.closed.load(Ordering::Acquire))
            .map(|current| (current.generation, current.conn.clone()))
    }

    async fn current(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        match self.live() {
            Some(live) => Ok(live),
            // The attempt's own future is boxed, in its task: waiting for it is small.
            None => self.replace().await,
        }
    }

    /// The connection a replacement makes: the one under way, or a new one. Looked at under
    /// the attempt's lock, which an attempt that succeeded takes after storing its
    /// connection, so a command finds either the new connection or the attempt.
    pub(super) async fn replace(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        let attempt = {
            let mut attempt = self
                .shared
                .attempt
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(live) = self.live() {
                return Ok(live);
            }
            attempt
                .get_or_insert_with(|| Shared::start_attempt(&self.shared))
                .clone()
        };
        attempt.await
    }
}

impl Shared {
    /// Starts a replacement in a task of its own, which stores the new connection and then
    /// clears itself from `attempt`.
    fn start_attempt(shared: &Arc<Self>) -> Attempt {
        let shared = Arc::clone(shared);
        let task = tokio::spawn(async move {
            // Cleared however the task ends: done, or dropped with its runtime.
            let _clear = ClearAttempt(Arc::clone(&shared));
            let opened = match shared.open().await {
                Ok(opened) => Ok(opened),
                Err(first) => {
                    tracing::debug!(error = %first, "connecting failed; trying once more");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    shared.open().await
                }
            };
            opened.map(|(conn, closed)| {
                let generation = shared.generations.fetch_add(1, Ordering::Relaxed) + 1;
                if generation > 1 {
                    tracing::info!(generation, "reconnected to the server");
                }
                shared.current.store(Some(Arc::new(Current {
                    generation,
                    conn: conn.clone(),
                    closed,
                })));
                (generation, conn)
            })
        });
        async move {
            task.await.unwrap_or_else(|ended| {
                // The runtime shut down under the task: nothing was stored, and the next
                // command starts a new attempt.
                Err(RedisError::from(std::io::Error::other(format!(
                    "the reconnection ended before it connected: {ended}"
                ))))
            })
        }
        .boxed()
        .shared()
    }

    /// One connection, with the flag its disconnection push sets.
    async fn open(&self) -> Result<(MultiplexedConnection, Arc<AtomicBool>), RedisError> {
        let (config, closed) = with_closed_flag(&self.config);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok((conn, closed))
    }
}

/// `config` for a RESP3 connection whose disconnection push sets the returned flag: redis-rs
/// reports a closed socket at once, and a command can then replace the connection before it
/// is sent, instead of failing on the dead socket.
pub(super) fn with_closed_flag(
    config: &AsyncConnectionConfig,
) -> (AsyncConnectionConfig, Arc<AtomicBool>) {
    let closed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&closed);
    let config = config.clone().set_push_sender(move |info: PushInfo| {
        if info.kind == PushKind::Disconnection {
            flag.store(true, Ordering::Release);
        }
        Ok::<(), std::convert::Infallible>(())
    });
    (config, closed)
}

/// Clears the replacement under way when its task ends, so that the next command that finds
/// no connection starts a new one.
struct ClearAttempt(Arc<Shared>);

impl Drop for ClearAttempt {
    fn drop(&mut self) {
        *self
            .0
            .attempt
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl SingleConnection {
    /// After a failed command on the connection of `generation`: an unusable connection is
    /// forgotten, so that the next command opens a new one.
    pub(super) fn after_error(&self, generation: u64, err: &RedisError) {
        if !err.is_unrecoverable_error() {
            return;
        }
        let current = self.shared.current.load();
        if current.as_ref().is_some_and(|c| c.generation == generation) {
            // Only if nothing replaced it meanwhile: a newer connection stays.
            self.shared.current.compare_and_swap(&current, None);
        }
    }

    /// Sends `cmd` on the current connection, replacing it first if it is closed, and
    /// forgets a connection the command found unusable. [`Connection::query`] does the same
    /// inline.
    ///
    /// [`Connection::query`]: super::Connection::query
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
