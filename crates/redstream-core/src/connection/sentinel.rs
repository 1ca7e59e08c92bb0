//! The connection to a master found through Redis Sentinel, which follows failovers.
//!
//! redis-rs's `SentinelClient` finds the master (asks the sentinels, then checks with `ROLE`
//! that the node is a master) but gives a plain connection to that node, which knows nothing
//! of failovers. [`SentinelConnection`] keeps one RESP3 multiplexed connection to the current
//! master and replaces it by asking the sentinels again:
//!
//! - when the connection closes (RESP3 lets redis-rs report it at once: the connection is
//!   then replaced before the next command is sent, so that command is not lost in a dead
//!   socket). A killed master closes it; so does a failover without failure, where the
//!   sentinels end the clients of the demoted master (`CLIENT KILL TYPE normal`);
//! - when a command is refused with `READONLY`: the node became a replica. A node that
//!   answers `READONLY` ran no write of that command, so the command is sent once more, to
//!   the new master. For a pipeline this holds only when every reply is `READONLY` (a role
//!   change in the middle of it could have let earlier writes through); otherwise its
//!   replies are returned as they are, and the next call goes to the new master;
//! - when a command fails because the connection broke or timed out: the error is returned
//!   (the command may have run), and the next call finds the master again and reconnects;
//! - when a sentinel announces a new master for our master name (`+switch-master`, heard by a
//!   task subscribed to one sentinel at a time): the connection is dropped at once, before the
//!   old master is demoted or closes anything, so calls stop reaching a master the sentinels
//!   have given up on (one that hangs, or that only they cannot reach) as soon as they decide.
//!
//! While the sentinels still name a dead master (the failover takes `down-after-milliseconds`
//! plus an election), calls fail with connection errors, which are retryable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike as _, MultiplexedConnection};
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, Value};

use super::single::with_closed_flag;
use crate::redis_error::refused_by_replica;

/// A self-healing connection to the master a Sentinel group names. Cheap to clone; clones
/// share the connection.
#[derive(Clone)]
pub(crate) struct SentinelConnection {
    shared: Arc<Shared>,
}

struct Shared {
    /// Asks the sentinels; `&mut` in redis-rs, so one lookup at a time, shared by every
    /// connection opened from the same options.
    discovery: Arc<tokio::sync::Mutex<SentinelClient>>,
    /// Timeouts of the connection to the master.
    config: AsyncConnectionConfig,
    /// Bound on one lookup (sentinels and the `ROLE` check), which redis-rs does not bound.
    lookup_timeout: Duration,
    db: i64,
    current: Mutex<Option<Current>>,
    /// Held while a replacement is made, so that concurrent callers make one.
    replacing: tokio::sync::Mutex<()>,
    generations: AtomicU64,
    /// Dropped with the connection: the `+switch-master` watcher then ends.
    _alive: tokio::sync::watch::Sender<()>,
}

/// Where to hear the sentinels announce a failover: a client for each sentinel (with its
/// credentials and TLS), and the master name to listen for.
#[derive(Clone)]
pub(crate) struct SwitchWatch {
    pub(crate) sentinels: Vec<redis::Client>,
    pub(crate) master_name: String,
}

#[derive(Clone)]
struct Current {
    generation: u64,
    conn: MultiplexedConnection,
    /// Set by redis-rs's disconnection notice.
    closed: Arc<AtomicBool>,
}

impl SentinelConnection {
    /// Finds the master and connects to it.
    pub(crate) async fn connect(
        discovery: Arc<tokio::sync::Mutex<SentinelClient>>,
        watch: &SwitchWatch,
        connect_timeout: Duration,
        response_timeout: Duration,
        db: i64,
    ) -> Result<Self, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout));
        let (alive, dropped) = tokio::sync::watch::channel(());
        let this = Self {
            shared: Arc::new(Shared {
                discovery,
                config,
                lookup_timeout: connect_timeout + response_timeout,
                db,
                current: Mutex::new(None),
                replacing: tokio::sync::Mutex::new(()),
                generations: AtomicU64::new(0),
                _alive: alive,
            }),
        };
        this.replace(None, "connect").await?;
        tokio::spawn(watch_switches(
            Arc::downgrade(&this.shared),
            watch.clone(),
            dropped,
            connect_timeout,
        ));
        Ok(this)
    }

    pub(crate) fn db(&self) -> i64 {
        self.shared.db
    }

    /// The current connection if it is open.
    fn live(&self) -> Option<Current> {
        self.shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(|current| !current.closed.load(Ordering::Acquire))
    }

    async fn current(&self) -> Result<Current, RedisError> {
        match self.live() {
            Some(current) => Ok(current),
            None => {
                self.replace(None, "the connection to the master closed")
                    .await
            }
        }
    }

    /// Asks the sentinels for the master and connects to it, unless another caller has
    /// already replaced the connection `stale` (or, for `None`, the closed one). `why` is
    /// logged.
    async fn replace(&self, stale: Option<u64>, why: &'static str) -> Result<Current, RedisError> {
        let _one_at_a_time = self.shared.replacing.lock().await;
        if let Some(current) = self.live()
            && Some(current.generation) != stale
        {
            return Ok(current);
        }
        let (config, closed) = with_closed_flag(&self.shared.config);
        let lookup = async {
            let client = self
                .shared
                .discovery
                .lock()
                .await
                .async_get_client()
                .await?;
            let master = client.get_connection_info().addr().to_string();
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            Ok::<_, RedisError>((master, conn))
        };
        let (master, conn) = tokio::time::timeout(self.shared.lookup_timeout, lookup)
            .await
            .map_err(|_| {
                RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no master found through the sentinels in time",
                ))
            })??;
        let generation = self.shared.generations.fetch_add(1, Ordering::Relaxed) + 1;
        if generation == 1 {
            tracing::debug!(%master, "connected to the master the sentinels name");
        } else {
            tracing::info!(%master, reason = why, "reconnected to the master the sentinels name");
        }
        let current = Current {
            generation,
            conn,
            closed,
        };
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(current.clone());
        Ok(current)
    }

    /// Forgets the connection of `generation`, so the next call finds the master again.
    fn forget(&self, generation: u64) {
        let mut current = self
            .shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().map(|c| c.generation) == Some(generation) {
            *current = None;
        }
    }

    /// After a failed call on the connection of `generation`: a broken connection is
    /// forgotten.
    fn after_error(&self, generation: u64, err: &RedisError) {
        if err.is_unrecoverable_error() || err.is_connection_dropped() || err.is_io_error() {
            self.forget(generation);
        }
    }

    pub(crate) async fn send_command(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        let mut current = self.current().await?;
        let result = current.conn.req_packed_command(cmd).await;
        let refused = match &result {
            Ok(Value::ServerError(err)) => err.code() == "READONLY",
            Ok(_) => false,
            Err(err) => refused_by_replica(err),
        };
        if refused {
            // The node is a replica now: it ran no write of this command.
            let mut fresh = self
                .replace(Some(current.generation), "the master answered READONLY")
                .await?;
            let result = fresh.conn.req_packed_command(cmd).await;
            if let Err(err) = &result {
                self.after_error(fresh.generation, err);
            }
            return result;
        }
        if let Err(err) = &result {
            self.after_error(current.generation, err);
        }
        result
    }

    pub(crate) async fn send_pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> Result<Vec<Value>, RedisError> {
        let mut current = self.current().await?;
        let result = current
            .conn
            .req_packed_commands(pipeline, offset, count)
            .await;
        let readonly =
            |value: &Value| matches!(value, Value::ServerError(e) if e.code() == "READONLY");
        let (all_refused, any_refused) = match &result {
            Ok(values) => (
                !values.is_empty() && values.iter().all(readonly),
                values.iter().any(readonly),
            ),
            // A transaction refused as a whole (`EXECABORT ... because of: READONLY`).
            Err(err) => (refused_by_replica(err), refused_by_replica(err)),
        };
        if all_refused {
            let mut fresh = self
                .replace(Some(current.generation), "the master answered READONLY")
                .await?;
            let result = fresh
                .conn
                .req_packed_commands(pipeline, offset, count)
                .await;
            if let Err(err) = &result {
                self.after_error(fresh.generation, err);
            }
            return result;
        }
        if any_refused {
            self.forget(current.generation);
        }
        if let Err(err) = &result {
            self.after_error(current.generation, err);
        }
        result
    }
}

/// Listens on one sentinel after another for `+switch-master` naming our master, and drops
/// the current connection when it comes (the next call asks the sentinels again). Ends when
/// the connection is dropped. Its failures are only logged: without it, the connection still
/// follows a failover when the old master closes it or times out.
async fn watch_switches(
    shared: std::sync::Weak<Shared>,
    watch: SwitchWatch,
    mut dropped: tokio::sync::watch::Receiver<()>,
    connect_timeout: Duration,
) {
    use futures_util::StreamExt as _;

    let mut failures: u32 = 0;
    for client in watch.sentinels.iter().cycle() {
        let listen = async {
            let mut pubsub = tokio::time::timeout(connect_timeout, client.get_async_pubsub())
                .await
                .map_err(|_| "connecting timed out".to_owned())?
                .map_err(|err| err.to_string())?;
            pubsub
                .subscribe("+switch-master")
                .await
                .map_err(|err| err.to_string())?;
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Ok(text) = message.get_payload::<String>() else {
                    continue;
                };
                // `<master name> <old ip> <old port> <new ip> <new port>`
                let mut words = text.split(' ');
                if words.next() != Some(watch.master_name.as_str()) {
                    continue;
                }
                let Some(shared) = shared.upgrade() else {
                    return Ok(());
                };
                let new_master = words.skip(2).collect::<Vec<_>>().join(":");
                tracing::info!(%new_master, "the sentinels switched the master; reconnecting to it");
                *shared
                    .current
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
            }
            Err("the sentinel closed the subscription".to_owned())
        };
        let outcome = tokio::select! {
            outcome = listen => outcome,
            _ = dropped.changed() => return,
        };
        match outcome {
            Ok(()) => return,
            Err(why) => {
                failures = failures.saturating_add(1);
                tracing::debug!(error = %why, "not listening to a sentinel for failovers; trying the next");
            }
        }
        // A pause that grows to 5 s while no sentinel answers.
        let pause = Duration::from_millis(100).saturating_mul(failures.min(50));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = dropped.changed() => return,
        }
        if shared.strong_count() == 0 {
            return;
        }
    }
}
