//! The error type of the test kit.

use std::fmt;
use std::path::PathBuf;

/// Shorthand for results whose error is the test kit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The advice shown whenever no Redis server can be found.
pub(crate) const INSTALL_HINT: &str = "install redis-server (Debian/Ubuntu: apt-get install \
     redis-server; macOS: brew install redis) or enable the `docker` feature of redstream-testkit";

/// Everything that can go wrong while starting, controlling or talking to a test server.
///
/// `Debug` prints the same readable message as `Display` (including the server log for
/// [`Error::NotReady`]), so that `RedisServer::start().await.unwrap()` in a test panics with
/// advice rather than a struct dump.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No `redis-server` binary was found and no other backend is available.
    #[error("no usable redis-server: {detail}; {INSTALL_HINT}")]
    NotInstalled {
        /// Where the binary was looked for, or why the configured one is unusable.
        detail: String,
    },

    /// The `redis-server` process could not be spawned.
    #[error("failed to spawn {}: {source}", binary.display())]
    Spawn {
        /// The binary that was executed.
        binary: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },

    /// The server exited, or did not answer, before it became ready.
    #[error(
        "redis-server did not become ready: {reason}\n--- end of the server log ---\n{log_tail}"
    )]
    NotReady {
        /// What happened (exit status, timeout, ...).
        reason: String,
        /// The last lines the server wrote to its log.
        log_tail: String,
    },

    /// The operation needs a running server, but it was killed (see `RedisServer::restart`).
    #[error("cannot {operation}: the redis-server is not running")]
    NotRunning {
        /// The operation that was attempted.
        operation: &'static str,
    },

    /// A builder setting cannot be turned into a valid `redis.conf`.
    #[error("invalid redis-server configuration: {0}")]
    InvalidConfig(String),

    /// The operation is not available for this server (backend, platform or TLS mode).
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// The TLS certificates could not be generated.
    #[error("failed to generate TLS certificates: {0}")]
    Tls(String),

    /// The container backend failed.
    #[error("docker backend: {0}")]
    Docker(String),

    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },

    /// A command sent to the server failed.
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),

    /// A condition polled with [`wait_until`](crate::wait_until) (a cluster becoming healthy,
    /// a replica being promoted) did not hold in time.
    #[error("timed out after {waited:?} waiting for {what}; last seen: {last}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long it was waited for.
        waited: std::time::Duration,
        /// Why the last check said "not yet".
        last: String,
    },
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Error {
    /// Builds an [`Error::Io`] with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
