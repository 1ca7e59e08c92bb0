//! The error model shared by every redstream crate.
//!
//! Every failure carries a [`Copy`] [`ErrorKind`]. The circuit breaker and the retry policy look
//! only at [`ErrorKind::is_retryable`], so the classification of a failure happens once, when
//! the [`Error`] is built, and never again.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::wire::DecodeError;

/// A boxed error that can cross task boundaries: what handlers return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as its default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is: the one thing retry and circuit-breaking decisions read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller gave something invalid: a name, a size, a URL, a configuration field.
    InvalidInput,
    /// Data read from the backend could not be decoded (foreign writer, bad version, bad JSON).
    Decode,
    /// The connection was refused, reset or dropped. Transient.
    Connection,
    /// The backend did not answer in time. Transient; the operation may or may not have run.
    Timeout,
    /// The server is temporarily unable to serve: `LOADING`, `BUSY`, `TRYAGAIN`, `MASTERDOWN`,
    /// `READONLY`, `CLUSTERDOWN`, `MOVED`/`ASK`. Transient.
    Unavailable,
    /// The server is out of memory (`OOM`). Transient: memory may be freed by trimming or eviction.
    OutOfMemory,
    /// Authentication failed (`NOAUTH`, `WRONGPASS`). Permanent until the configuration changes.
    Auth,
    /// The authenticated user may not run this command or touch this key (`NOPERM`). Permanent.
    PermissionDenied,
    /// A key holds a value of another type (`WRONGTYPE`). Permanent.
    WrongType,
    /// What was asked for does not exist: a stream, a consumer group, a key. Permanent.
    NotFound,
    /// A circuit breaker is open and rejected the call without trying it. Retry later.
    CircuitOpen,
    /// A bounded queue is full and its strategy is `Reject`. Retry later.
    QueueFull,
    /// A write was applied on the primary but `WAIT` saw fewer replicas acknowledge it than
    /// asked for within its timeout: it may be lost in a failover. Transient: replicas may
    /// catch up.
    NotDurable,
    /// A user handler returned an error.
    Handler,
    /// The component was shut down.
    Closed,
    /// Any other error reported by the server (syntax errors, unknown commands...). Permanent.
    Server,
    /// A response of an unexpected shape, or a bug. Permanent.
    Unexpected,
}

impl ErrorKind {
    /// Whether trying the same operation again later may succeed.
    ///
    /// Transient conditions (connection loss, timeouts, a loading or failing-over server, `OOM`,
    /// an open breaker, a full queue) are retryable. Authentication, permissions, wrong types,
    /// invalid input and undecodable data are not: retrying them only hides the defect.
    #[must_use]
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Connection
                | Self::Timeout
                | Self::Unavailable
                | Self::OutOfMemory
                | Self::CircuitOpen
                | Self::QueueFull
                | Self::NotDurable
        )
    }

    /// A short, stable, snake_case name, suitable as a metric label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::Decode => "decode",
            Self::Connection => "connection",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::OutOfMemory => "out_of_memory",
            Self::Auth => "auth",
            Self::PermissionDenied => "permission_denied",
            Self::WrongType => "wrong_type",
            Self::NotFound => "not_found",
            Self::CircuitOpen => "circuit_open",
            Self::QueueFull => "queue_full",
            Self::NotDurable => "not_durable",
            Self::Handler => "handler",
            Self::Closed => "closed",
            Self::Server => "server",
            Self::Unexpected => "unexpected",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error type of `redstream-core`, also carried inside the errors of the Redis crates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value given by the caller is invalid.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// What was invalid, e.g. `event type "a b"` or `config field backpressure.max_queue_size`.
        what: Cow<'static, str>,
        /// Why, and what would be valid.
        reason: String,
    },

    /// What was asked for does not exist.
    #[error("no such {what}: {hint}")]
    NotFound {
        /// What is missing, e.g. `stream "{events}:x"`.
        what: String,
        /// What to do about it.
        hint: String,
    },

    /// A stream entry could not be decoded into an [`Event`](crate::Event).
    #[error(transparent)]
    Decode(#[from] DecodeError),

    /// The circuit breaker is open and rejected the call without trying it.
    ///
    /// The message starts with "Circuit breaker is open", which callers may match on.
    #[error("Circuit breaker is open: call rejected without trying; next trial in {retry_after:?}")]
    CircuitOpen {
        /// How long until the breaker lets a trial call through.
        retry_after: Duration,
    },

    /// A bounded queue is full and its backpressure strategy is `Reject`.
    #[error("queue is full ({capacity} items) and the backpressure strategy is Reject")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },

    /// An operation on the backend (Redis) failed.
    #[error("{operation} on {target} failed ({kind}): {message}")]
    Backend {
        /// The classified kind of the failure.
        kind: ErrorKind,
        /// The operation, e.g. `XADD` or `connect`.
        operation: Cow<'static, str>,
        /// What it was applied to: a stream, a key, or a redacted URL. Never a password.
        target: String,
        /// The backend's message.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// A handler returned an error.
    #[error("handler failed: {0}")]
    Handler(#[source] BoxError),

    /// An operation did not complete in time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        operation: Cow<'static, str>,
        /// The limit that was exceeded.
        after: Duration,
    },

    /// The component was closed.
    #[error("{what} is closed")]
    Closed {
        /// What was closed, e.g. `queue` or `subscription`.
        what: &'static str,
    },
}

impl Error {
    /// An [`Error::InvalidInput`] about `what`, because of `reason`.
    pub fn invalid_input(what: impl Into<Cow<'static, str>>, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::NotFound`] about `what`, with a hint on what to do.
    pub fn not_found(what: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::NotFound {
            what: what.into(),
            hint: hint.into(),
        }
    }

    /// An [`Error::Backend`] of the given kind without an underlying error.
    pub fn backend(
        kind: ErrorKind,
        operation: impl Into<Cow<'static, str>>,
        target: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Backend {
            kind,
            operation: operation.into(),
            target: target.into(),
            message: message.into(),
            source: None,
        }
    }

    /// The kind of this error.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidInput { .. } => ErrorKind::InvalidInput,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Decode(_) => ErrorKind::Decode,
            Self::CircuitOpen { .. } => ErrorKind::CircuitOpen,
            Self::QueueFull { .. } => ErrorKind::QueueFull,
            Self::Backend { kind, .. } => *kind,
            Self::Handler(_) => ErrorKind::Handler,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Closed { .. } => ErrorKind::Closed,
        }
    }

    /// Whether trying again later may succeed; see [`ErrorKind::is_retryable`].
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_kinds_are_the_transient_ones() {
        let transient = [
            ErrorKind::Connection,
            ErrorKind::Timeout,
            ErrorKind::Unavailable,
            ErrorKind::OutOfMemory,
            ErrorKind::CircuitOpen,
            ErrorKind::QueueFull,
        ];
        let permanent = [
            ErrorKind::InvalidInput,
            ErrorKind::Decode,
            ErrorKind::NotFound,
            ErrorKind::Auth,
            ErrorKind::PermissionDenied,
            ErrorKind::WrongType,
            ErrorKind::Handler,
            ErrorKind::Closed,
            ErrorKind::Server,
            ErrorKind::Unexpected,
        ];
        for kind in transient {
            assert!(kind.is_retryable(), "{kind} should be retryable");
        }
        for kind in permanent {
            assert!(!kind.is_retryable(), "{kind} should not be retryable");
        }
    }

    #[test]
    fn circuit_open_message_is_matchable() {
        let err = Error::CircuitOpen {
            retry_after: Duration::from_millis(250),
        };
        assert!(err.to_string().starts_with("Circuit breaker is open"));
        assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    }

    #[test]
    fn backend_error_keeps_its_kind() {
        let err = Error::backend(ErrorKind::Auth, "AUTH", "redis://127.0.0.1:1/", "WRONGPASS");
        assert_eq!(err.kind(), ErrorKind::Auth);
        assert!(!err.is_retryable());
        assert_eq!(
            err.to_string(),
            "AUTH on redis://127.0.0.1:1/ failed (auth): WRONGPASS"
        );
    }
}
