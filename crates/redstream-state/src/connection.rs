//! Connections, all from core's [`connection`](redstream_core::connection) module: one shared
//! [`Connection`] for commands (a self-healing RESP3 connection on a single server, a
//! `ClusterConnection` on a cluster, a connection that follows the sentinels' master), and a
//! small pool of [pinned](Connection::pinned) connections for transactions that `WATCH`
//! keys: connections that are never replaced, so that a transaction's two round trips reach
//! the same server connection or the second one fails (never runs outside the `MULTI`).
//!
//! `WATCH` is a property of a connection: on the shared, multiplexed connection another
//! task's command could clear or trip it. So a transaction that watches takes a connection
//! of its own from the pool, at most
//! [`max_watch_connections`](crate::StateConfig::max_watch_connections) at once, and gives it
//! back once `EXEC` (or `DISCARD`) has left it clean. A connection that saw an error is
//! dropped rather than reused.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};

use redstream_core::connection::{self, Connection, Topology};
use redstream_core::{Error, Result};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::StateConfig;

/// Opens the shared connection through core (which checks the server, and the credentials,
/// with a `PING`). `config` has a Redis backend.
pub(crate) async fn connect(config: &StateConfig) -> Result<Connection> {
    let options = config
        .connection_options()
        .ok_or_else(|| Error::invalid_input("config field backend", "is not a Redis backend"))?;
    // On a single server, core's connection retries a failed reconnection once, about
    // 100 ms later: a reconnection started as the server died can reach its closing listener
    // and be reset; the retry reaches the server once it is back. While Redis stays down, a
    // call still fails within a few hundred milliseconds, and the circuit breaker, not a
    // reconnection loop inside a call, decides when to try again.
    // Boxed: the future of core's `connect` is deep (the Sentinel lookup inside it), and
    // every future that awaited it unboxed would carry that depth into the `Send` checks of
    // the caller's futures (rustc's recursion limit in user code).
    let connecting: Pin<Box<dyn Future<Output = Result<Connection>> + Send + '_>> =
        Box::pin(connection::connect(&options));
    connecting.await
}

/// Dedicated connections for `WATCH`.
pub(crate) struct WatchPool {
    shared: Connection,
    response_timeout: std::time::Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

/// A dedicated connection, lent by the pool while its permit is held.
pub(crate) struct Lease<'a> {
    pub(crate) conn: Connection,
    /// Whether it came from the idle connections (it may have gone stale there: its server
    /// died, a replica took over) rather than being opened for this lease.
    pub(crate) reused: bool,
    _permit: SemaphorePermit<'a>,
}

impl WatchPool {
    pub(crate) fn new(shared: Connection, config: &StateConfig) -> Self {
        Self {
            shared,
            response_timeout: config.connection.response_timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(config.max_watch_connections),
        }
    }

    /// Whether the connections go to a cluster (where a command without a key, such as
    /// `DISCARD`, would be routed to any node).
    pub(crate) fn is_cluster(&self) -> bool {
        self.shared.topology() == Topology::Cluster
    }

    /// A connection of its own, waiting while `max_watch_connections` are lent out.
    pub(crate) async fn lease(&self) -> Result<Lease<'_>> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Closed { what: "watch pool" })?;
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let (conn, reused) = match idle {
            Some(conn) => (conn, true),
            None => (self.open().await?, false),
        };
        Ok(Lease {
            conn,
            reused,
            _permit: permit,
        })
    }

    /// `lease` with its connection replaced by a new one, for a reused connection that failed
    /// before anything was written with it.
    pub(crate) async fn reopen<'a>(&'a self, lease: Lease<'a>) -> Result<Lease<'a>> {
        let Lease { _permit, .. } = lease;
        Ok(Lease {
            conn: self.open().await?,
            reused: false,
            _permit,
        })
    }

    async fn open(&self) -> Result<Connection> {
        // Boxed, as in `connect`.
        let opening: Pin<Box<dyn Future<Output = Result<Connection>> + Send + '_>> =
            Box::pin(self.shared.pinned(self.response_timeout));
        opening.await
    }

    /// Takes back a connection that holds no `WATCH` and saw no error. On a cluster the
    /// connection is closed instead: a cluster connection kept idle through a failover or a
    /// slot move would refresh its view of the cluster, and may open new connections to the
    /// nodes, while it serves the next transaction; a new connection for each transaction
    /// keeps its two round trips (the reads and `MULTI`, then the writes and `EXEC`) on one
    /// node connection, which is where `WATCH` and `MULTI` live.
    pub(crate) fn give_back(&self, lease: Lease<'_>) {
        if self.is_cluster() {
            return;
        }
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(lease.conn);
    }

    /// Closes the open transaction of `lease` (`DISCARD`, which also clears the `WATCH`) and
    /// takes it back; on a cluster, or when `DISCARD` fails, drops it instead: closing the
    /// connection ends the transaction too.
    pub(crate) async fn discard(&self, mut lease: Lease<'_>) {
        if self.is_cluster() {
            return;
        }
        let discarded: redis::RedisResult<()> =
            redis::cmd("DISCARD").query_async(&mut lease.conn).await;
        if discarded.is_ok() {
            self.give_back(lease);
        }
    }
}
