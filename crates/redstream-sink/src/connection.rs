//! The sink's connection: one self-reconnecting `ConnectionManager` over RESP3, and the one
//! place its calls are sent, with the resend that makes recovery after a restart immediate.

use std::future::Future;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisResult};
use redstream_core::connection::{resp3_client, was_not_sent};
use redstream_core::{Error, ErrorKind, RedactedUrl, Result};

use crate::config::SinkConfig;

/// The sink's connection, created at its first call. Used by one batch at a time (the sink
/// holds it under its state lock), so nothing else is ever in flight on it.
pub(crate) struct Connection {
    /// The client, speaking RESP3: redis-rs then learns that the server went away as soon as
    /// the socket closes, and reconnects at once, instead of failing the first call after a
    /// restart with `broken pipe` however long the server has been back.
    client: Client,
    /// The server, as errors name it: the URL, redacted.
    server: String,
    config: ConnectionManagerConfig,
    manager: Option<ConnectionManager>,
}

impl Connection {
    /// The client for `config`'s URL and TLS options; does not connect.
    pub(crate) fn new(config: &SinkConfig) -> Result<Self> {
        let client = redstream_core::open_client(&config.uri, &config.tls)?;
        Ok(Self {
            client: resp3_client(&client, &config.uri)?,
            server: RedactedUrl(&config.uri).to_string(),
            config: ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.send_timeout))
                // One try per connection: the resend below and the sink's retry policy decide
                // when to try again.
                .set_number_of_retries(0),
            manager: None,
        })
    }

    /// Runs `call` on the sink's connection; errors name `op` and `target`.
    ///
    /// A call that failed because no connection could be made (refused: the server is down or
    /// restarting) was not sent, so it is sent once more at once: the failure made the
    /// connection manager start a new connection, and a server that is back by now answers
    /// the second try. A call that is `idempotent` is also sent once more after its connection
    /// dropped (reset, broken pipe): it may have run, but running it twice changes nothing.
    /// That is every call of the sink but a batch script without the progress key
    /// (`exactly_once` off), which is sent again only when it was not sent; the retry policy
    /// decides about the rest. (A connection that the server's death reset while it was being
    /// made leaves the manager holding that error; the first call after a restart then fails
    /// with it, however long the server has been back, and its resend connects afresh.)
    pub(crate) async fn call<T, F, Fut>(
        &mut self,
        op: &'static str,
        target: &str,
        idempotent: bool,
        call: F,
    ) -> Result<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let conn = self.manager()?;
        let mut not_sent = true;
        let result = match call(conn.clone()).await {
            Err(err) if was_not_sent(&err) || (idempotent && err.is_connection_dropped()) => {
                not_sent = was_not_sent(&err);
                call(conn).await
            }
            result => result,
        };
        result.map_err(|err| {
            let not_sent = not_sent && was_not_sent(&err);
            let err = Error::from_redis(op, target.to_owned(), err);
            if err.kind() == ErrorKind::Auth {
                // A connection refused its credentials is not retried by the manager: start
                // a fresh one next time, so a password or ACL fixed on the server is used.
                self.manager = None;
            }
            if not_sent {
                Error::backend(
                    err.kind(),
                    op,
                    target.to_owned(),
                    format!("{err} (cannot connect: nothing was sent)"),
                )
            } else {
                err
            }
        })
    }

    /// The `ConnectionManager`, created at the first call (it connects then, and reconnects by
    /// itself after).
    fn manager(&mut self) -> Result<ConnectionManager> {
        if let Some(manager) = &self.manager {
            return Ok(manager.clone());
        }
        let manager =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
                .map_err(|err| Error::from_redis("connect", self.server.clone(), err))?;
        self.manager = Some(manager.clone());
        Ok(manager)
    }
}
