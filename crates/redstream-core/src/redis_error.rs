//! Classification of redis-rs errors, shared by every Redis crate (feature `redis`).

use std::borrow::Cow;

use redis::{ErrorKind as RedisKind, RedisError, RetryMethod, ServerErrorKind};

use crate::error::{Error, ErrorKind};

/// Classifies a redis-rs error into an [`ErrorKind`].
///
/// Server error codes are read first, because they are the most precise: `NOAUTH`/`WRONGPASS`
/// are [`Auth`](ErrorKind::Auth), `NOPERM` is [`PermissionDenied`](ErrorKind::PermissionDenied),
/// `WRONGTYPE` is [`WrongType`](ErrorKind::WrongType), `OOM` is
/// [`OutOfMemory`](ErrorKind::OutOfMemory), and `LOADING`, `BUSY`, `TRYAGAIN`, `MASTERDOWN`,
/// `READONLY`, `CLUSTERDOWN`, `MOVED` and `ASK` are [`Unavailable`](ErrorKind::Unavailable).
/// Then I/O failures: timeouts are [`Timeout`](ErrorKind::Timeout), refused, reset and dropped
/// connections are [`Connection`](ErrorKind::Connection). redis-rs's own
/// [`RetryMethod`] decides the rest, except that authentication failures are never retryable
/// (redis-rs would reconnect and try again; a wrong password does not get better).
#[must_use]
pub fn classify_redis_error(err: &RedisError) -> ErrorKind {
    if let Some(code) = err.code() {
        match code {
            "NOAUTH" | "WRONGPASS" => return ErrorKind::Auth,
            "NOPERM" => return ErrorKind::PermissionDenied,
            "WRONGTYPE" => return ErrorKind::WrongType,
            "OOM" => return ErrorKind::OutOfMemory,
            "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "READONLY" | "CLUSTERDOWN"
            | "MOVED" | "ASK" => return ErrorKind::Unavailable,
            _ => {}
        }
    }
    match err.kind() {
        RedisKind::AuthenticationFailed => return ErrorKind::Auth,
        RedisKind::InvalidClientConfig => return ErrorKind::InvalidInput,
        RedisKind::UnexpectedReturnType | RedisKind::Client => return ErrorKind::Unexpected,
        RedisKind::Server(ServerErrorKind::NoPerm) => return ErrorKind::PermissionDenied,
        RedisKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
        ) => return ErrorKind::Unavailable,
        _ => {}
    }
    if err.is_timeout() {
        return ErrorKind::Timeout;
    }
    if err.is_connection_refusal() || err.is_connection_dropped() || err.is_io_error() {
        return match err.retry_method() {
            RetryMethod::NoRetry => ErrorKind::Server,
            _ => ErrorKind::Connection,
        };
    }
    match err.retry_method() {
        RetryMethod::Reconnect | RetryMethod::ReconnectFromInitialConnections => {
            ErrorKind::Connection
        }
        RetryMethod::RetryImmediately | RetryMethod::WaitAndRetry => ErrorKind::Unavailable,
        RetryMethod::AskRedirect
        | RetryMethod::MovedRedirect
        | RetryMethod::RefreshSlotsAndRetry => ErrorKind::Unavailable,
        _ => ErrorKind::Server,
    }
}

impl Error {
    /// Wraps a redis-rs error, classified by [`classify_redis_error`], with the operation and
    /// its target (a stream, a key, or a redacted URL: never a password).
    pub fn from_redis(
        operation: impl Into<Cow<'static, str>>,
        target: impl Into<String>,
        err: RedisError,
    ) -> Self {
        let kind = classify_redis_error(&err);
        let message = match kind {
            ErrorKind::Auth => format!("{err} (check the password or ACL user in the URL)"),
            ErrorKind::PermissionDenied => {
                format!("{err} (the ACL user lacks a command or key permission)")
            }
            _ => err.to_string(),
        };
        Self::Backend {
            kind,
            operation: operation.into(),
            target: target.into(),
            message,
            source: Some(Box::new(err)),
        }
    }
}

impl From<RedisError> for Error {
    fn from(err: RedisError) -> Self {
        Self::from_redis("redis command", "redis", err)
    }
}
