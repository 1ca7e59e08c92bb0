//! The middleware between the network and the handlers: who may ask, and from where.
//!
//! In the order a request meets them:
//!
//! 1. [`security_headers`]: every response, errors included, gets `no-store`, `nosniff`,
//!    `no-referrer` and `frame-ancestors`/`X-Frame-Options` headers.
//! 2. [`guard`]:
//!    - **Host**: when the dashboard listens on a loopback address, a request whose `Host` is
//!      not a loopback name is refused (403 `forbidden_host`). A web page on another site
//!      whose DNS name is re-pointed at 127.0.0.1 (DNS rebinding) cannot read the dashboard.
//!    - **Origin**: a request that carries an `Origin` (browsers send one with WebSocket
//!      handshakes and `POST`s) must come from the dashboard's own origin (403
//!      `forbidden_origin`). Another site's page can neither open `/ws` nor post a redrive.
//!    - **Token**: with a token configured, every path needs `Authorization: Bearer <token>`;
//!      `/` and `/ws` also take `?token=` because a browser cannot set headers on a page load
//!      or a WebSocket. Missing or wrong: 401 `unauthorized`. The comparison hashes both sides
//!      and compares the digests in constant time.
//! 3. [`count`], on matched routes: counts the answer by route pattern and status, and logs
//!    the method, path (never the query, which may hold the token), status and time.

use std::net::IpAddr;
use std::time::Instant;

use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
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
    if state.config().loopback_hosts_only {
        let host = host.as_deref().ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "missing_host",
                "the request has no Host header",
            )
        })?;
        if !is_loopback_host(host) {
            return Err(ApiError::forbidden(
                "forbidden_host",
                format!(
                    "the dashboard listens on a loopback address and answers only to localhost, \
                     127.0.0.1 or [::1], not to {host:?} (this blocks DNS rebinding); to serve \
                     other names, listen on a non-loopback address with --token"
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

/// Whether a `Host` value (`name[:port]`, `[v6][:port]`) names this machine's loopback.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, _)) => v6,
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    // Browsers resolve `localhost` and `*.localhost` to loopback themselves (RFC 6761), so a
    // rebinding attacker cannot use those names.
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for good in [
            "localhost",
            "localhost:8090",
            "LOCALHOST.",
            "app.localhost:1",
            "127.0.0.1",
            "127.0.0.1:8090",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:8090",
        ] {
            assert!(is_loopback_host(good), "{good}");
        }
        for bad in [
            "evil.example:8090",
            "localhost.evil.example",
            "10.0.0.1:8090",
            "[::2]:1",
            "[::1",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
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
