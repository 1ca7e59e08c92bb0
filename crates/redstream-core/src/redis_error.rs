//! Classification of redis-rs errors, shared by every Redis crate (feature `redis`).

use std::borrow::Cow;

use redis::{ErrorKind as RedisKind, RedisError, RetryMethod, ServerErrorKind};

use crate::error::{Error, ErrorKind};
use crate::redis_tls::certificate_rejection_hint;

/// The kind a server error code stands for, when it is one of the codes that decide a kind.
fn kind_of_code(code: &str) -> Option<ErrorKind> {
    match code {
        "NOAUTH" | "WRONGPASS" => Some(ErrorKind::Auth),
        "NOPERM" => Some(ErrorKind::PermissionDenied),
        "WRONGTYPE" => Some(ErrorKind::WrongType),
        "OOM" => Some(ErrorKind::OutOfMemory),
        // UNBLOCKED: a blocked read ended by the server because its key went away, which is
        // what `MIGRATE` does to a stream whose slot moves to another master (or an operator's
        // `CLIENT UNBLOCK ... ERROR`): reading again follows the slot.
        "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "READONLY" | "CLUSTERDOWN" | "MOVED"
        | "ASK" | "UNBLOCKED" => Some(ErrorKind::Unavailable),
        _ => None,
    }
}

/// The code that decides the kind of a server error: its own, except for an `EXEC` refused as
/// a whole, which names its reason after "because of:" (`EXECABORT Transaction discarded
/// because of: OOM command not allowed...` is an `OOM`, `... because of: READONLY You can't
/// write against a read only replica.` a `READONLY`). `EXECABORT ... because of previous
/// errors.` names none: the errors of the queued commands, reported apart, say what failed.
///
/// Only callers that read `EXEC`'s reply themselves see such an error: redis-rs 1.x's
/// `atomic()` pipelines turn a refused `EXEC` into an unparseable-reply error without its code,
/// classified [`ErrorKind::Unexpected`]. redstream's own all-or-nothing writes are Lua scripts
/// (`crate::atomic`, the sink's batch script) rather than `MULTI`/`EXEC`; this stays for
/// applications that classify their own transactions' errors.
fn deciding_code<'e>(code: &'e str, detail: Option<&'e str>) -> &'e str {
    if code == "EXECABORT"
        && let Some((_, reason)) = detail.and_then(|d| d.split_once("because of: "))
        && let Some(reason_code) = reason.split_whitespace().next()
    {
        return reason_code.trim_start_matches('-');
    }
    code
}

/// The deciding codes of the server errors inside a failed transaction or pipeline (none for
/// other errors). Only reached on the error path, so the clone costs nothing that matters.
fn inner_server_codes(err: &RedisError) -> impl Iterator<Item = String> {
    err.clone()
        .into_server_errors()
        .map(|items| {
            items
                .iter()
                .map(|(_, e)| deciding_code(e.code(), e.details()).to_owned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
}

/// Whether the server refused `err`'s command because it is a replica (`READONLY`, or a
/// transaction refused as a whole because of it). A node that answers so ran no write of that
/// command, so it may be sent again to the new master.
pub(crate) fn refused_by_replica(err: &RedisError) -> bool {
    err.code().map(|code| deciding_code(code, err.detail())) == Some("READONLY")
}

/// Classifies a redis-rs error into an [`ErrorKind`].
///
/// Server error codes are read first, because they are the most precise (for a failed
/// `MULTI`/`EXEC` or pipeline, the codes of the commands inside it, and for a refused `EXEC`
/// the code of the reason it gives after "because of:"): `NOAUTH`/`WRONGPASS`
/// are [`Auth`](ErrorKind::Auth), `NOPERM` is [`PermissionDenied`](ErrorKind::PermissionDenied),
/// `WRONGTYPE` is [`WrongType`](ErrorKind::WrongType), `OOM` is
/// [`OutOfMemory`](ErrorKind::OutOfMemory), and `LOADING`, `BUSY`, `TRYAGAIN`, `MASTERDOWN`,
/// `READONLY`, `CLUSTERDOWN`, `MOVED`, `ASK` and `UNBLOCKED` are
/// [`Unavailable`](ErrorKind::Unavailable).
/// Then I/O failures: timeouts are [`Timeout`](ErrorKind::Timeout), refused, reset and dropped
/// connections are [`Connection`](ErrorKind::Connection). redis-rs's own
/// [`RetryMethod`] decides the rest, except that authentication failures are never retryable
/// (redis-rs would reconnect and try again; a wrong password does not get better).
#[must_use]
pub fn classify_redis_error(err: &RedisError) -> ErrorKind {
    if let Some(kind) = err
        .code()
        .map(|code| deciding_code(code, err.detail()))
        .and_then(kind_of_code)
    {
        return kind;
    }
    // A failed transaction or pipeline carries the errors of its commands: `EXECABORT` after a
    // command refused while queued (`OOM`, `NOPERM`...), or per-command errors raised while
    // `EXEC` ran (`WRONGTYPE`). Their codes say what went wrong; the wrapper's does not. An
    // `EXEC` refused by itself (memory or the node's role changed after the commands were
    // queued) gives its reason after "because of:".
    if let Some(kind) = inner_server_codes(err).find_map(|code| kind_of_code(&code)) {
        return kind;
    }
    if certificate_rejection_hint(err).is_some() {
        return ErrorKind::Auth;
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

/// How Redis and Valkey quote the first arguments of a command they do not know:
/// `ERR unknown command 'HELLO', with args beginning with: '3' 'AUTH' 'app' 'password'`. When a
/// server has `HELLO` or `AUTH` renamed away, those arguments are the credentials.
const ARGUMENTS_ECHO: &str = "with args beginning with:";

impl Error {
    /// Wraps a redis-rs error, classified by [`classify_redis_error`], with the operation and
    /// its target (a stream, a key, or a redacted URL: never a password).
    ///
    /// The arguments a server quotes back for an unknown command are cut from the message, and
    /// such an error is not kept as the source: they may be a password (see `ARGUMENTS_ECHO`).
    pub fn from_redis(
        operation: impl Into<Cow<'static, str>>,
        target: impl Into<String>,
        err: RedisError,
    ) -> Self {
        let kind = classify_redis_error(&err);
        let text = err.to_string();
        if let Some(at) = text.find(ARGUMENTS_ECHO) {
            return Self::Backend {
                kind,
                operation: operation.into(),
                target: target.into(),
                message: format!("{}{ARGUMENTS_ECHO} (not shown)", &text[..at]),
                source: None,
            };
        }
        let message = match kind {
            ErrorKind::Auth if certificate_rejection_hint(&err).is_some() => {
                let hint = certificate_rejection_hint(&err).unwrap_or_default();
                format!("{err} ({hint})")
            }
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

/// Every classification is checked against what a real `redis-server` answers, except for the
/// cluster and loading codes, which are checked on the exact error lines a server sends.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use redis::AsyncCommands;
    use redstream_testkit::RedisServer;

    use super::*;

    fn server_error(line: &str) -> RedisError {
        let value = redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap();
        value.extract_error().unwrap_err()
    }

    #[test]
    fn cluster_and_loading_codes_are_transient() {
        for line in [
            "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "READONLY You can't write against a read only replica.",
            "CLUSTERDOWN The cluster is down",
            "MOVED 3999 127.0.0.1:6381",
            "ASK 3999 127.0.0.1:6381",
            "UNBLOCKED the stream key no longer exists",
        ] {
            let kind = classify_redis_error(&server_error(line));
            assert_eq!(kind, ErrorKind::Unavailable, "{line}");
            assert!(kind.is_retryable(), "{line}");
        }
        let oom = server_error("OOM command not allowed when used memory > 'maxmemory'.");
        assert_eq!(classify_redis_error(&oom), ErrorKind::OutOfMemory);
    }

    #[test]
    fn permanent_codes_are_not_retryable() {
        let cases = [
            ("NOAUTH Authentication required.", ErrorKind::Auth),
            (
                "WRONGPASS invalid username-password pair or user is disabled.",
                ErrorKind::Auth,
            ),
            (
                "NOPERM User app has no permissions to access the 'x' key",
                ErrorKind::PermissionDenied,
            ),
            (
                "WRONGTYPE Operation against a key holding the wrong kind of value",
                ErrorKind::WrongType,
            ),
            ("ERR syntax error", ErrorKind::Server),
            ("ERR unknown command 'FOO'", ErrorKind::Server),
            (
                "BUSYGROUP Consumer Group name already exists",
                ErrorKind::Server,
            ),
            (
                "NOGROUP No such key 's' or consumer group 'g'",
                ErrorKind::Server,
            ),
        ];
        for (line, expected) in cases {
            let kind = classify_redis_error(&server_error(line));
            assert_eq!(kind, expected, "{line}");
            assert!(!kind.is_retryable(), "{line}");
        }
    }

    /// `EXEC` refused as a whole, with the exact lines Redis 7.0 sends (checked against a
    /// real server below): classified by the reason's code, not as a server error.
    #[test]
    fn refused_exec_is_classified_by_its_reason() {
        let cases = [
            (
                "EXECABORT Transaction discarded because of: OOM command not allowed when used \
                 memory > 'maxmemory'.",
                ErrorKind::OutOfMemory,
            ),
            (
                "EXECABORT Transaction discarded because of: READONLY You can't write against a \
                 read only replica.",
                ErrorKind::Unavailable,
            ),
            (
                "EXECABORT Transaction discarded because of: MASTERDOWN Link with MASTER is down \
                 and replica-serve-stale-data is set to 'no'.",
                ErrorKind::Unavailable,
            ),
            (
                "EXECABORT Transaction discarded because of: NOPERM this user has no permissions \
                 to run the 'exec' command",
                ErrorKind::PermissionDenied,
            ),
            // No reason of its own: the queued commands' errors say what failed.
            (
                "EXECABORT Transaction discarded because of previous errors.",
                ErrorKind::Server,
            ),
        ];
        for (line, expected) in cases {
            let err = server_error(line);
            assert_eq!(classify_redis_error(&err), expected, "{line}");
            let pipelined =
                redis::RedisError::from(err.clone().into_server_errors().unwrap()[0].1.clone());
            assert_eq!(classify_redis_error(&pipelined), expected, "{line}");
        }
        assert!(classify_redis_error(&server_error(cases[0].0)).is_retryable());
        assert!(classify_redis_error(&server_error(cases[1].0)).is_retryable());
    }

    /// A real server refuses `EXEC` itself when memory runs out between queueing and `EXEC`.
    #[tokio::test]
    async fn refused_exec_from_a_real_server() {
        let server = RedisServer::start().await.unwrap();
        let mut conn = connect(&server.url()).await.unwrap();
        let mut admin = connect(&server.url()).await.unwrap();
        let () = redis::cmd("MULTI").query_async(&mut conn).await.unwrap();
        let queued: String = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(queued, "QUEUED");
        for (key, value) in [("maxmemory-policy", "noeviction"), ("maxmemory", "1")] {
            let () = redis::cmd("CONFIG")
                .arg("SET")
                .arg(key)
                .arg(value)
                .query_async(&mut admin)
                .await
                .unwrap();
        }
        let err = redis::cmd("EXEC")
            .query_async::<redis::Value>(&mut conn)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("because of: OOM"), "{err:?}");
        assert_eq!(
            classify_redis_error(&err),
            ErrorKind::OutOfMemory,
            "{err:?}"
        );
    }

    async fn connect(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_millis(300)));
        redis::Client::open(url)?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    #[tokio::test]
    async fn wrongtype_from_a_real_server() {
        let server = RedisServer::start().await.unwrap();
        let mut conn = connect(&server.url()).await.unwrap();
        let () = conn.set("plain", "value").await.unwrap();
        let err = conn.lpush::<_, _, ()>("plain", "x").await.unwrap_err();
        let err = Error::from_redis("LPUSH", "plain", err);
        assert_eq!(err.kind(), ErrorKind::WrongType);
        assert!(
            err.to_string()
                .contains("LPUSH on plain failed (wrong_type)"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn auth_failures_from_a_real_server() {
        let server = RedisServer::builder()
            .password("s3cret")
            .start()
            .await
            .unwrap();
        // No password: the server answers NOAUTH.
        let mut conn = connect(&server.url_without_auth()).await.unwrap();
        let err = redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .unwrap_err();
        assert_eq!(classify_redis_error(&err), ErrorKind::Auth, "{err:?}");
        // Wrong password: the handshake fails.
        let wrong = format!("redis://:nope@127.0.0.1:{}/", server.port());
        let err = connect(&wrong).await.unwrap_err();
        let err = Error::from_redis("connect", crate::redact_url(&wrong), err);
        assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
        assert!(!err.is_retryable());
        assert!(!err.to_string().contains("nope"), "{err}");
    }

    /// A server with `HELLO` renamed away answers redis-rs's `HELLO 3 AUTH user password` with
    /// an error quoting those arguments (Redis 7.0, Valkey 8; Valkey 9 answers `NOAUTH`): the
    /// password is not shown, in the message or the source chain.
    #[tokio::test]
    async fn an_unknown_command_does_not_echo_its_arguments() {
        const PASSWORD: &str = "echo-pw-5d1c";
        let server = RedisServer::builder()
            .password(PASSWORD)
            .config("rename-command", "HELLO \"\"")
            .start()
            .await
            .unwrap();
        let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", server.port());
        let options = crate::connection::ConnectionOptions::new(url.as_str());
        let Err(err) = crate::connection::connect(&options).await else {
            panic!("connected through a renamed HELLO");
        };
        let mut shown = format!("{err} / {err:?}");
        let mut source = std::error::Error::source(&err);
        while let Some(inner) = source {
            shown.push_str(&format!(" / {inner} / {inner:?}"));
            source = inner.source();
        }
        assert!(!shown.contains(PASSWORD), "{shown}");
        // What redis-rs itself reports on a RESP3 handshake, for comparison: the password, from
        // servers that quote the arguments (Redis 7, Valkey 8). Valkey 9 answers NOAUTH.
        let resp3 = redis::Client::open(format!("{url}?protocol=resp3").as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await;
        let Err(raw_err) = resp3 else {
            panic!("redis-rs connected through a renamed HELLO");
        };
        if raw_err.to_string().contains("unknown command") {
            assert!(raw_err.to_string().contains(PASSWORD), "{raw_err}");
            assert!(shown.contains("unknown command"), "{shown}");
        }
    }

    #[tokio::test]
    async fn noperm_from_a_real_server() {
        let server = RedisServer::builder()
            .acl_user("app", "app-pass", "app:*")
            .start()
            .await
            .unwrap();
        let url = format!("redis://app:app-pass@127.0.0.1:{}/", server.port());
        let mut conn = connect(&url).await.unwrap();
        let () = conn.set("app:ok", 1).await.unwrap();
        let err = conn.set::<_, _, ()>("other:key", 1).await.unwrap_err();
        assert_eq!(
            classify_redis_error(&err),
            ErrorKind::PermissionDenied,
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn oom_from_a_real_server() {
        let server = RedisServer::builder()
            .maxmemory(2 * 1024 * 1024)
            .maxmemory_policy("noeviction")
            .start()
            .await
            .unwrap();
        let mut conn = connect(&server.url()).await.unwrap();
        let value = "x".repeat(64 * 1024);
        let mut last = None;
        for i in 0..200 {
            if let Err(err) = conn.set::<_, _, ()>(format!("k{i}"), &value).await {
                last = Some(err);
                break;
            }
        }
        let err = last.expect("a 2 MiB server must refuse 12 MiB of writes");
        assert_eq!(
            classify_redis_error(&err),
            ErrorKind::OutOfMemory,
            "{err:?}"
        );
        assert!(classify_redis_error(&err).is_retryable());
    }

    #[tokio::test]
    async fn refused_and_timed_out_connections_are_transient() {
        let server = RedisServer::start().await.unwrap();
        let url = server.url();
        let mut conn = connect(&url).await.unwrap();

        server.pause().unwrap();
        let err = redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .unwrap_err();
        assert_eq!(classify_redis_error(&err), ErrorKind::Timeout, "{err:?}");
        server.resume().unwrap();

        server.kill().unwrap();
        let err = connect(&url).await.unwrap_err();
        assert_eq!(classify_redis_error(&err), ErrorKind::Connection, "{err:?}");
        assert!(classify_redis_error(&err).is_retryable());
    }

    /// A transaction reports its commands' errors inside `EXECABORT` (refused while queued) or
    /// as per-command errors (failed while `EXEC` ran); both are classified by those codes.
    #[tokio::test]
    async fn failed_transactions_are_classified_by_their_commands() {
        let server = RedisServer::builder()
            .maxmemory(2 * 1024 * 1024)
            .maxmemory_policy("noeviction")
            .start()
            .await
            .unwrap();
        let mut conn = connect(&server.url()).await.unwrap();
        let () = conn.set("plain", "value").await.unwrap();
        let err = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg("a")
            .arg(1)
            .cmd("LPUSH")
            .arg("plain")
            .arg("x")
            .query_async::<()>(&mut conn)
            .await
            .unwrap_err();
        assert_eq!(classify_redis_error(&err), ErrorKind::WrongType, "{err:?}");

        let value = "x".repeat(64 * 1024);
        let mut oom = None;
        for i in 0..200 {
            let result = redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(format!("k{i}"))
                .arg(&value)
                .query_async::<()>(&mut conn)
                .await;
            if let Err(err) = result {
                oom = Some(err);
                break;
            }
        }
        let err = oom.expect("a 2 MiB server must refuse 12 MiB of writes");
        assert_eq!(
            classify_redis_error(&err),
            ErrorKind::OutOfMemory,
            "{err:?}"
        );
        assert!(classify_redis_error(&err).is_retryable());
    }

    #[tokio::test]
    async fn readonly_replica_from_a_real_server() {
        let primary = RedisServer::start().await.unwrap();
        let replica = RedisServer::start().await.unwrap();
        let mut conn = connect(&replica.url()).await.unwrap();
        let () = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(primary.port())
            .query_async(&mut conn)
            .await
            .unwrap();
        let err = conn.set::<_, _, ()>("k", 1).await.unwrap_err();
        assert_eq!(
            classify_redis_error(&err),
            ErrorKind::Unavailable,
            "{err:?}"
        );
    }
}
