//! The sink's connection, made through core's connection module
//! (`redstream_core::connection::connect`) whatever the topology, and the one place its calls
//! are sent, with the resend that makes recovery after a restart immediate.

use std::future::Future;
use std::pin::Pin;

use redis::RedisResult;
use redstream_core::connection::{
    self, ConnectionOptions, command_error, nothing_was_sent, was_not_sent,
};
use redstream_core::{Error, ErrorKind, RedactedUrl, Result};

use crate::config::SinkConfig;

/// The sink's connection, made at its first call. Used by one batch at a time (the sink
/// holds it under its state lock), so nothing else is ever in flight on it.
///
/// The connection is core's [`connection::Connection`]: on a single server a RESP3
/// connection that is replaced once it closes (redis-rs reports the close as soon as the
/// socket closes, so the next call reconnects first, instead of failing with `broken pipe`
/// after a restart however long the server has been back); on a cluster redis-rs's cluster
/// connection, which routes each command to its slot's master and follows `MOVED`, `ASK` and
/// failovers; under Sentinel a connection to the master the sentinels name, replaced when it
/// closes or answers `READONLY`.
pub(crate) struct Connection {
    options: ConnectionOptions,
    /// The server, as errors name it: the URL, redacted.
    server: String,
    conn: Option<connection::Connection>,
}

impl Connection {
    /// The connection for `config`'s URL, TLS and Sentinel options; does not connect.
    pub(crate) fn new(config: &SinkConfig) -> Self {
        let options = config.connection_options();
        Self {
            server: RedactedUrl(&options.url).to_string(),
            options,
            conn: None,
        }
    }

    /// Runs `call` on the sink's connection; errors name `op` and `target`.
    ///
    /// A call that failed because no connection could be made (refused: the server is down or
    /// restarting) was not sent, so it is sent once more at once: the failure made the
    /// connection start a new connection, and a server that is back by now answers the
    /// second try. The first connection is made the same way: tried once more at once when it
    /// fails, and its error then says that nothing was sent. A call that is `idempotent` is
    /// also sent once more after its connection dropped (reset, broken pipe): it may have run,
    /// but running it twice changes nothing. That is every call of the sink but a batch script
    /// without the progress key (`exactly_once` off), which is sent again only when it was not
    /// sent; the retry policy decides about the rest.
    pub(crate) async fn call<T, F, Fut>(
        &mut self,
        op: &'static str,
        target: &str,
        idempotent: bool,
        call: F,
    ) -> Result<T>
    where
        F: Fn(connection::Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let conn = self.connection(op, target).await?;
        let mut not_sent = true;
        let result = match call(conn.clone()).await {
            Err(err) if was_not_sent(&err) || (idempotent && err.is_connection_dropped()) => {
                not_sent = was_not_sent(&err);
                call(conn).await
            }
            result => result,
        };
        result.map_err(|err| {
            let err = if not_sent {
                command_error(op, target, err)
            } else {
                Error::from_redis(op, target.to_owned(), err)
            };
            if err.kind() == ErrorKind::Auth {
                // Credentials refused: start a fresh connection next time (its first
                // `PING` checks them again), so a password or ACL fixed on the server is used.
                self.conn = None;
            }
            err
        })
    }

    /// The connection, made at the first call (it reconnects by itself after). A first
    /// connection that fails is tried once more at once, as a refused call is sent again.
    async fn connection(
        &mut self,
        op: &'static str,
        target: &str,
    ) -> Result<connection::Connection> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let conn = match connect(&self.options).await {
            Ok(conn) => conn,
            Err(err) if !retry_connect(&err) => return Err(err),
            Err(first) => {
                tracing::debug!(
                    server = %self.server,
                    error = %first,
                    "cannot connect; trying once more"
                );
                match connect(&self.options).await {
                    Ok(conn) => conn,
                    Err(err) if !retry_connect(&err) => return Err(err),
                    Err(err) => return Err(nothing_was_sent(err, op, target)),
                }
            }
        };
        self.conn = Some(conn.clone());
        Ok(conn)
    }
}

/// Core's `connect`, boxed: its future is deep (the Sentinel and cluster paths), and the
/// sink's batch future that holds it must stay within the compiler's limits to be `Send`.
fn connect(
    options: &ConnectionOptions,
) -> Pin<Box<dyn Future<Output = Result<connection::Connection>> + Send + '_>> {
    Box::pin(connection::connect(options))
}

/// Whether a failed first connection is worth a second try at once: not for a refused
/// configuration or credentials.
fn retry_connect(err: &Error) -> bool {
    !matches!(
        err.kind(),
        ErrorKind::Auth | ErrorKind::InvalidInput | ErrorKind::PermissionDenied
    )
}
