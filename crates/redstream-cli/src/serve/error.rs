//! [`ApiError`]: every failure the dashboard answers, as `{ "error": { "kind", "message" } }`.
//!
//! Bad input is a 4xx with a message that names the parameter and what is valid. Redis
//! failures are 503 (or 502 for a reply the dashboard cannot use) with a message that says what
//! kind of failure it was, never the server's text: the full error goes to the log, where the
//! transport has already redacted the URL.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use redstream_core::ErrorKind;
use serde_json::json;

/// One failed request: an HTTP status, a stable snake_case `kind` and a message for people.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    /// 400 about a query parameter.
    pub(crate) fn parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", message)
    }

    /// 400 about a request body.
    pub(crate) fn body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_body", message)
    }

    /// 400 about a stream name in the path.
    pub(crate) fn stream_name(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_stream_name", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub(crate) fn forbidden(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, kind, message)
    }

    /// The answer for a redstream error. `message` is the error's text with secrets removed;
    /// it is shown only for the kinds that are about the request (input, missing things).
    ///
    /// Redis's refusal of a stream id (`ERR Invalid stream ID ...`, `ERR invalid start ID for
    /// the interval`) is about the request too: a 400, whatever kind the error was classified
    /// as. The dashboard checks ids before Redis sees them; this covers any it lets by.
    pub(crate) fn from_redstream(kind: ErrorKind, message: String) -> Self {
        if refuses_an_id(&message) {
            return Self::parameter(
                "Redis refused a stream id of the request: give - for the oldest entry, an id \
                 like 1700000000000-0, or ( and an id to start after it",
            );
        }
        let unavailable = |text: &str| {
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "redis_unavailable",
                format!("{text}; the dashboard tries again on the next request"),
            )
        };
        match kind {
            ErrorKind::InvalidInput => Self::new(StatusCode::BAD_REQUEST, "invalid_input", message),
            ErrorKind::NotFound => Self::not_found(message),
            ErrorKind::WrongType => Self::new(StatusCode::CONFLICT, "wrong_type", message),
            ErrorKind::Connection => {
                unavailable("Redis is unreachable (connection refused or lost)")
            }
            ErrorKind::Timeout => unavailable("Redis did not answer in time"),
            ErrorKind::Unavailable => unavailable(
                "Redis cannot serve right now (loading, busy, read-only or failing over)",
            ),
            ErrorKind::OutOfMemory => unavailable("Redis is out of memory"),
            ErrorKind::Auth => unavailable("Redis refused the dashboard's credentials"),
            ErrorKind::PermissionDenied => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "redis_unavailable",
                match denied_command(&message) {
                    Some(command) => format!(
                        "Redis denied the dashboard's user the command '{command}' (NOPERM): see \
                         docs/dashboard.md for the ACL it needs"
                    ),
                    None => "Redis denied the dashboard's user a command or key it needs \
                             (NOPERM): see docs/dashboard.md for the ACL it needs"
                        .to_owned(),
                },
            ),
            ErrorKind::CircuitOpen => {
                unavailable("calls to Redis are paused by the circuit breaker after failures")
            }
            ErrorKind::Closed => unavailable("the connection to Redis is closed"),
            ErrorKind::QueueFull | ErrorKind::NotDurable => unavailable("Redis is overloaded"),
            _ => Self::new(
                StatusCode::BAD_GATEWAY,
                "redis_error",
                "Redis answered in a way the dashboard cannot use; the details are in the \
                 dashboard's log",
            ),
        }
    }
}

/// The command a `NOPERM` error names (`... no permissions to run the 'time' command`): a
/// command name, nothing else of the server's text.
fn denied_command(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("to run the '")?;
    let (command, _) = rest.split_once("' command")?;
    let valid = !command.is_empty()
        && command.len() <= 64
        && command
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'|' | b'_' | b'-'));
    valid.then(|| command.to_owned())
}

/// Whether a Redis error's text is its refusal of a stream id.
fn refuses_an_id(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ["invalid stream id", "invalid start id", "invalid end id"]
        .iter()
        .any(|refusal| message.contains(refusal))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "kind": self.kind, "message": self.message } }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"redstream\""),
            );
        }
        response
    }
}

// axum's own rejections carry a status and a plain-text message; the dashboard answers them in
// its JSON shape instead. Their messages describe the request, never the server.

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::parameter(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(rejection.status(), "invalid_path", rejection.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        // Every body that does not parse into the request is a 400, whether it is not JSON
        // or JSON of the wrong shape (axum says 422 for the latter).
        let (status, kind) = match rejection.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            _ => (StatusCode::BAD_REQUEST, "invalid_body"),
        };
        Self::new(status, kind, rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        let kind = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            _ => "invalid_body",
        };
        Self::new(rejection.status(), kind, rejection.body_text())
    }
}

impl From<WebSocketUpgradeRejection> for ApiError {
    fn from(rejection: WebSocketUpgradeRejection) -> Self {
        Self::new(
            rejection.status(),
            "websocket_required",
            format!(
                "{}; /ws is a WebSocket endpoint",
                rejection.body_text().trim_end_matches('.')
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts are redis-server 7.0's (`XRANGE s (18446744073709551615-18446744073709551615
    /// +`, `XRANGE s 18446744073709551616 +`), as they come through a script or not.
    #[test]
    fn refused_ids_are_the_requests_fault() {
        for text in [
            "XRANGE events:x: ERR invalid start ID for the interval",
            "An error was signalled by the server - ResponseError: Invalid stream ID specified as \
             stream command argument script: efb76acd, on @user_script:1.",
            "ERR invalid end ID for the interval",
        ] {
            let error = ApiError::from_redstream(ErrorKind::Server, text.to_owned());
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{text}");
            assert_eq!(error.kind, "invalid_parameter");
            assert!(!error.message.contains("script"), "{}", error.message);
        }
        let other = ApiError::from_redstream(ErrorKind::Server, "ERR something else".to_owned());
        assert_eq!(other.status, StatusCode::BAD_GATEWAY);
    }

    /// The same with the errors a real server sends, directly and from a script.
    #[tokio::test]
    async fn refusals_of_a_real_server() {
        let server = redstream_testkit::RedisServer::start().await.unwrap();
        let mut conn = server.connection().await.unwrap();
        let script = redis::Script::new("return redis.call('XRANGE', KEYS[1], ARGV[1], '+')");
        for start in [
            "(18446744073709551615-18446744073709551615",
            "18446744073709551616",
            "(-",
        ] {
            let direct = redis::cmd("XRANGE")
                .arg("s")
                .arg(start)
                .arg("+")
                .query_async::<redis::Value>(&mut conn)
                .await
                .unwrap_err();
            let scripted = script
                .key("s")
                .arg(start)
                .invoke_async::<redis::Value>(&mut conn)
                .await
                .unwrap_err();
            for err in [direct, scripted] {
                let err = redstream_core::Error::from_redis("XRANGE", "s", err);
                let answer = ApiError::from_redstream(err.kind(), err.to_string());
                assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{start}: {err}");
            }
        }
    }
}
