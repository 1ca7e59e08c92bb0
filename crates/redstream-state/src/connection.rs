//! Connections: one shared, self-reconnecting [`ConnectionManager`] for commands, and a small
//! pool of dedicated connections for transactions that `WATCH` keys.
//!
//! `WATCH` is a property of a connection: on the shared, multiplexed connection another
//! task's command could clear or trip it. So a transaction that watches takes a connection
//! of its own from the pool, at most
//! [`max_watch_connections`](crate::StateConfig::max_watch_connections) at once, and gives it
//! back once `EXEC` (or `UNWATCH`) has left it clean. A connection that saw an error is
//! dropped rather than reused.

use std::sync::{Mutex, PoisonError};

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client};
use redstream_core::{Error, Result};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::StateConfig;

/// Opens the client and the shared connection, checking the server (and the credentials) once.
pub(crate) async fn connect(
    url: &str,
    config: &StateConfig,
    server: &str,
) -> Result<(Client, ConnectionManager)> {
    let client = redstream_core::open_client(url, &config.tls)?;
    // RESP3, so a dropped connection is noticed and replaced at once (see core's `connection`).
    let manager_client = redstream_core::connection::resp3_client(&client, url)?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout))
        // One retry, about 100 ms later: a reconnection started as the server died can reach
        // its closing listener and be reset; the retry reaches the server once it is back.
        // While Redis stays down, a call still fails within a few hundred milliseconds, and the
        // circuit breaker, not a reconnection loop inside a call, decides when to try again.
        .set_number_of_retries(1);
    let manager = ConnectionManager::new_with_config(manager_client, manager_config)
        .await
        .map_err(|err| Error::from_redis("connect", server.to_owned(), err))?;
    Ok((client, manager))
}

/// Dedicated connections for `WATCH`.
pub(crate) struct WatchPool {
    client: Client,
    config: AsyncConnectionConfig,
    idle: Mutex<Vec<MultiplexedConnection>>,
    permits: Semaphore,
}

/// A dedicated connection, lent by the pool while its permit is held.
pub(crate) struct Lease<'a> {
    pub(crate) conn: MultiplexedConnection,
    _permit: SemaphorePermit<'a>,
}

impl WatchPool {
    pub(crate) fn new(client: Client, config: &StateConfig) -> Self {
        Self {
            client,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.response_timeout)),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(config.max_watch_connections),
        }
    }

    /// A connection of its own, waiting while `max_watch_connections` are lent out.
    pub(crate) async fn lease(&self, server: &str) -> Result<Lease<'_>> {
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
        let conn = match idle {
            Some(conn) => conn,
            None => self
                .client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await
                .map_err(|err| Error::from_redis("connect", server.to_owned(), err))?,
        };
        Ok(Lease {
            conn,
            _permit: permit,
        })
    }

    /// Takes back a connection that holds no `WATCH` and saw no error.
    pub(crate) fn give_back(&self, lease: Lease<'_>) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(lease.conn);
    }
}
