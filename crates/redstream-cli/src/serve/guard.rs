//! The middleware between the network and the handlers: who may ask, and from where.
//!
//! In the order a request meets them:
//!
//! 1. [`security_headers`]: every response, errors included, gets `no-store`, `nosniff`,
//!    `no-referrer` and `frame-ancestors`/`X-Frame-Options` headers.
//! 2. [`guard`]:
//!    - **Host**: without a token, a request whose `Host` is neither an IP address, nor
//!      `localhost` (or a name under it), nor one of
//!      [`allowed_hosts`](crate::serve::ServeConfig::allowed_hosts) is refused
//!      (403 `forbidden_host`), whatever address the dashboard listens on. A web page on another
//!      site whose DNS name is re-pointed at the dashboard's address (DNS rebinding) reaches it
//!      under that name, so it reads nothing. With a token the check is not needed: the
//!      rebinding page has no token.
//!    - **Origin**: a request that carries an `Origin` (browsers send one with WebSocket
//!      handshakes and `POST`s) must come from the dashboard's own origin (403
//!      `forbidden_origin`). Another site's page can neither open `/ws` nor post a redrive.
//!    - **Token**: with a token configured, every path needs `Authorization: Bearer <token>`;
//!      `/` and `/ws` also take `?token=` because a browser cannot set headers on a page load
//!      or a WebSocket. Missing or wrong: 401 `unauthorized`. The comparison hashes both sides
//!      and compares the digests in constant time.
//! 3. [`writes`], on the write routes only, before their handler reads the body: without
//!    `allow_writes` they answer 403 `writes_disabled` at once, body unread; with it, the body
//!    must arrive whole within the body-read timeout (408 `body_timeout`) and within the body
//!    limit (413 `payload_too_large`). A client that trickles a body would otherwise hold its
//!    connection for as long as it liked: the header-read timeout ends with the head.
//! 4. [`count`], on matched routes: counts the answer by route pattern and status, and logs
//!    the method, path (never the query, which may hold the token), status and time.

use std::net::IpAddr;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::state::{AppState, Counters};

pub(crate) async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    }
    response
}

pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match check(&state, &request) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

fn check(state: &AppState, request: &Request) -> Result<(), ApiError> {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    if !state.token_required() {
        let host = host.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_host",
                "the request has no Host header",
            )
        })?;
        if !host_allowed(host, &state.config().allowed_hosts) {
            return Err(ApiError::forbidden(
                "forbidden_host",
                format!(
                    "the dashboard answers to IP addresses and localhost, not to {host:?} \
                     (this blocks DNS rebinding); to serve other names, start it with \
                     --allowed-hosts <name> or --token"
                ),
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let same = match (origin.to_str().ok().and_then(origin_authority), &host) {
            (Some(origin), Some(host)) => origin.eq_ignore_ascii_case(host),
            _ => false,
        };
        if !same {
            return Err(ApiError::forbidden(
                "forbidden_origin",
                "requests from another origin are refused: open the dashboard's own page",
            ));
        }
    }
    if state.token_required() {
        let path = request.uri().path();
        let presented = bearer(headers).or_else(|| {
            (path == "/" || path == "/ws")
                .then(|| query_token(request))
                .flatten()
        });
        let refused = match presented {
            None => Some(
                "this dashboard requires a token: send the header `Authorization: Bearer \
                 <token>` (the page and /ws also accept ?token=<token>)",
            ),
            Some(token) if !state.token_matches(&token) => Some("the token is not valid"),
            Some(_) => None,
        };
        if let Some(message) = refused {
            Counters::add(&state.counters().auth_failures, 1);
            tracing::debug!(
                path = %state.scrub(path),
                "request refused: missing or wrong token"
            );
            return Err(ApiError::unauthorized(message));
        }
    }
    Ok(())
}

pub(crate) async fn writes(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(error) = state.require_writes() {
        return error.into_response();
    }
    let (parts, body) = request.into_parts();
    // The body alone, with the extensions that carry the router's body limit.
    let mut body_only = Request::new(body);
    *body_only.extensions_mut() = parts.extensions.clone();
    let timeout = state.config().body_read_timeout;
    let bytes = match tokio::time::timeout(timeout, Bytes::from_request(body_only, &state)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(rejection)) => return ApiError::from(rejection).into_response(),
        Err(_) => {
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive whole within {}",
                    humantime::format_duration(timeout)
                ),
            )
            .into_response();
            // The rest of the body may still be on its way: the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

pub(crate) async fn count(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state.counters().count_request(&route, status);
    tracing::debug!(
        %method,
        path = %state.scrub(&path),
        status,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn query_token(request: &Request) -> Option<String> {
    Query::<TokenQuery>::try_from_uri(request.uri())
        .ok()
        .and_then(|Query(q)| q.token)
}

/// `host[:port]` of an `Origin` such as `http://127.0.0.1:8090`; `None` for `null` and odd ones.
fn origin_authority(origin: &str) -> Option<&str> {
    let (scheme, rest) = origin.split_once("://")?;
    (matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// The name of a `Host` value (`name[:port]`, `[v6][:port]`), lowercase and without a trailing
/// dot; `None` for a malformed one.
fn host_name(host: &str) -> Option<String> {
    let name = if let Some(rest) = host.strip_prefix('[') {
        let (v6, port) = rest.split_once(']')?;
        if !(port.is_empty() || port.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        v6
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return None,
            None => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a request with this `Host` is answered without a token: an IP address (a rebinding
/// page always comes under a DNS name), `localhost` and names under it (browsers resolve those
/// to loopback themselves, RFC 6761), and the names the operator allowed.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let Some(name) = host_name(host) else {
        return false;
    };
    name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || allowed.iter().any(|entry| {
            let entry = entry.trim_end_matches('.').to_ascii_lowercase();
            if entry == "*" {
                return true;
            }
            match entry.strip_prefix('.') {
                Some(domain) => {
                    name == domain
                        || name
                            .strip_suffix(domain)
                            .is_some_and(|sub| sub.ends_with('.'))
                }
                None => name == entry,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let none: &[String] = &[];
        for good in [
            "localhost",
            "localhost:8090",
            "LOCALHOST.",
            "app.localhost:1",
            "127.0.0.1",
            "127.0.0.1:8090",
            "127.1.2.3:80",
            "10.0.0.1:8090",
            "[::1]",
            "[::1]:8090",
            "[fe80::1]:8090",
        ] {
            assert!(host_allowed(good, none), "{good}");
        }
        for bad in [
            "evil.example:8090",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "[::1",
            "[::1]x",
            "localhost:x",
            "localhost:",
            ":8090",
            "",
        ] {
            assert!(!host_allowed(bad, none), "{bad}");
        }
        let allowed = ["Dashboard.Internal".to_owned(), ".corp.example".to_owned()];
        for good in [
            "dashboard.internal:8090",
            "DASHBOARD.INTERNAL.",
            "corp.example",
            "ops.corp.example:80",
        ] {
            assert!(host_allowed(good, &allowed), "{good}");
        }
        for bad in ["evil.example", "xcorp.example", "dashboard.internal.evil"] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
        assert!(host_allowed("anything.example:1", &["*".to_owned()]));
        assert!(!host_allowed("bad:port", &["*".to_owned()]));
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin_authority("http://127.0.0.1:8090"),
            Some("127.0.0.1:8090")
        );
        assert_eq!(origin_authority("https://x"), Some("x"));
        for bad in ["null", "file://", "http://x/y", "ftp://x"] {
            assert_eq!(origin_authority(bad), None, "{bad}");
        }
    }

    #[test]
    fn bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&headers).as_deref(), Some("abc"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&headers).as_deref(), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
    }
}
