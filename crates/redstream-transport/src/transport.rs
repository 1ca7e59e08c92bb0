//! [`RedisTransport`]: one connection to Redis that publishes and consumes.

use std::fmt;
use std::sync::Arc;

use redstream_core::connection::{Connection, Topology};
use redstream_core::{CircuitBreaker, CircuitBreakerStats, Result};
use tokio_util::sync::CancellationToken;

use crate::config::{RedisConfig, TransportOptions};
use crate::connection;
use crate::consumer::Registry;
use crate::keys::StreamNames;

/// Publishes events to Redis Streams and consumes them in consumer groups.
///
/// The URL names a single server, a Redis Cluster or a Sentinel group (see [`RedisConfig`]).
///
/// Cheap to clone: clones share one multiplexed, self-reconnecting connection, one circuit
/// breaker and one set of subscriptions. When the last clone is dropped, subscriptions stop
/// reading and let their running handlers finish in the background.
#[derive(Clone)]
pub struct RedisTransport {
    pub(crate) inner: Arc<Inner>,
}

/// The seed's name for the consuming side; the same type as [`RedisTransport`].
pub type RedisSubscriber = RedisTransport;

pub(crate) struct Inner {
    pub(crate) config: RedisConfig,
    pub(crate) options: TransportOptions,
    pub(crate) names: StreamNames,
    /// The URL with its password redacted, for errors and logs.
    pub(crate) target: String,
    /// The shared connection (single server, cluster or Sentinel); dedicated connections for
    /// blocking reads are opened from it.
    pub(crate) conn: Connection,
    pub(crate) breaker: CircuitBreaker,
    /// `conn` and `breaker` as [`Traffic::Write`](crate::commands::Traffic::Write) commands,
    /// made once: publishing borrows them instead of cloning both per call.
    pub(crate) writes: crate::commands::Commands,
    pub(crate) subscriptions: Registry,
    /// The event types published so far, checked, with their stream names.
    pub(crate) published_types: crate::publisher::TypeCache,
    /// Cancelled when the last clone of the transport is dropped.
    pub(crate) shutdown: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl RedisTransport {
    /// Connects with default [`TransportOptions`].
    pub async fn new(config: RedisConfig) -> Result<Self> {
        Self::with_options(config, TransportOptions::default()).await
    }

    /// Validates both configurations, connects, and checks the server.
    pub async fn with_options(config: RedisConfig, options: TransportOptions) -> Result<Self> {
        config.validate()?;
        options.validate()?;
        let breaker = CircuitBreaker::new(options.circuit_breaker)?;
        let (conn, layout) = connection::connect(&config, &options).await?;
        let names = StreamNames::new(&config.stream_prefix, layout);
        let target = conn.target().to_owned();
        crate::telemetry::export_breaker_state(&breaker, &target)?;
        tracing::debug!(
            server = %target,
            topology = %conn.topology(),
            prefix = %config.stream_prefix,
            layout = layout.as_str(),
            "redis transport connected"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                options,
                names,
                target,
                writes: crate::commands::Commands::new(
                    conn.clone(),
                    crate::commands::Traffic::Write,
                    &breaker,
                ),
                conn,
                breaker,
                subscriptions: Registry::default(),
                published_types: crate::publisher::TypeCache::default(),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    /// The configuration it was built with.
    #[must_use]
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The options it was built with.
    #[must_use]
    pub fn options(&self) -> &TransportOptions {
        &self.inner.options
    }

    /// The names of its streams: the stream of an event type under its prefix and layout
    /// (`names().stream("order.created")` is `events:order.created` by default), and the
    /// dead-letter stream (`names().dlq()`).
    #[must_use]
    pub fn names(&self) -> &StreamNames {
        &self.inner.names
    }

    /// The circuit breaker's state and counters.
    pub async fn circuit_breaker_stats(&self) -> CircuitBreakerStats {
        self.inner.breaker.stats()
    }

    /// A clone of the shared connection, for commands the transport does not wrap: core's
    /// [`Connection`], usable wherever redis-rs takes a `ConnectionLike` (`query_async(&mut
    /// conn)`, pipelines, scripts). On a cluster it routes each command by its key, so a
    /// command naming keys of several slots is refused (`CROSSSLOT`).
    #[must_use]
    pub fn connection(&self) -> Connection {
        self.inner.conn.clone()
    }

    /// Whether the transport is connected to a single server, a Redis Cluster or a
    /// Sentinel-managed master.
    #[must_use]
    pub fn topology(&self) -> Topology {
        self.inner.conn.topology()
    }
}

impl fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTransport")
            .field("config", &self.inner.config)
            .field("breaker", &self.inner.breaker.state())
            .finish_non_exhaustive()
    }
}
