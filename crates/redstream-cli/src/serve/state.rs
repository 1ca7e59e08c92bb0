//! [`AppState`]: the transport, the configuration, the counters and the snapshot feed that
//! every handler shares.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use redstream_core::redact_url;
use redstream_transport::RedisTransport;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::config::ServeConfig;
use super::error::ApiError;
use super::history::History;
use super::ws::Feed;

/// Everything the dashboard's handlers share. Cheap to clone.
///
/// Build it with [`AppState::new`] and hand it to [`router`](super::router).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    transport: RedisTransport,
    config: ServeConfig,
    /// SHA-256 of the token: candidates are hashed and compared in constant time, so neither
    /// the token's bytes nor its length leak through timing.
    token_digest: Option<[u8; 32]>,
    /// Strings no response may contain: the Redis password (as written and percent-decoded)
    /// and the token.
    secrets: Vec<String>,
    counters: Counters,
    feed: Feed,
    /// The throughput of the last hour, sampled every refresh interval by the poller.
    history: History,
    /// One permit per WebSocket client; a client holds one until its task ends.
    ws_slots: Arc<Semaphore>,
    /// How many permits `ws_slots` started with: all of them are back once every WebSocket
    /// task has ended.
    ws_capacity: u32,
    shutdown: CancellationToken,
    started: Instant,
}

/// What the dashboard counts about itself; shown by `/api/metrics` and `/metrics`.
#[derive(Default)]
pub(crate) struct Counters {
    /// Answered requests by route (the matched path pattern) and status.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Requests refused for a missing or wrong token.
    pub(crate) auth_failures: AtomicU64,
    /// Failed Redis calls by error kind.
    redis_errors: Mutex<BTreeMap<&'static str, u64>>,
    /// HTTP connections open now (upgraded WebSockets no longer count).
    pub(crate) http_connections: AtomicU64,
    /// HTTP connections accepted since start.
    pub(crate) http_connections_total: AtomicU64,
    /// WebSocket connections accepted since start.
    pub(crate) ws_connections: AtomicU64,
    /// WebSocket connections open now.
    pub(crate) ws_clients: AtomicU64,
    /// Snapshots built for WebSocket clients.
    pub(crate) snapshots: AtomicU64,
    /// Dead letters redriven through the dashboard.
    pub(crate) redriven: AtomicU64,
    /// Dead letters purged through the dashboard.
    pub(crate) purged: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave a counter half-updated.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Counters {
    pub(crate) fn count_request(&self, route: &str, status: u16) {
        *lock(&self.requests)
            .entry((route.to_owned(), status))
            .or_default() += 1;
    }

    pub(crate) fn requests(&self) -> BTreeMap<(String, u16), u64> {
        lock(&self.requests).clone()
    }

    pub(crate) fn redis_errors(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.redis_errors).clone()
    }

    fn count_redis_error(&self, kind: &'static str) {
        *lock(&self.redis_errors).entry(kind).or_default() += 1;
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl AppState {
    /// State over a connected transport. The stream prefix is the transport's.
    ///
    /// Nothing is spawned here: the poller that samples the throughput history and feeds the
    /// WebSockets starts in [`serve`](super::serve), or, for a router served otherwise, with
    /// the first WebSocket client.
    pub fn new(transport: RedisTransport, config: ServeConfig) -> Self {
        let mut secrets = url_password(&transport.config().url);
        if let Some(token) = &config.token {
            secrets.push(token.clone());
        }
        let token_digest = config.token.as_deref().map(digest);
        // `Semaphore::new` panics above `MAX_PERMITS`, and waiting for all of them back takes a
        // `u32`: clamp rather than panic on a configuration value.
        let ws_capacity =
            u32::try_from(config.max_ws_clients.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        let ws_slots = Arc::new(Semaphore::new(ws_capacity as usize));
        let history = History::new(config.refresh);
        Self {
            inner: Arc::new(Inner {
                transport,
                config,
                token_digest,
                secrets,
                counters: Counters::default(),
                feed: Feed::default(),
                history,
                ws_slots,
                ws_capacity,
                shutdown: CancellationToken::new(),
                started: Instant::now(),
            }),
        }
    }

    /// Cancelled when the server shuts down: WebSocket feeds send a close frame and stop.
    #[must_use]
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    pub(crate) fn transport(&self) -> &RedisTransport {
        &self.inner.transport
    }

    pub(crate) fn config(&self) -> &ServeConfig {
        &self.inner.config
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    pub(crate) fn feed(&self) -> &Feed {
        &self.inner.feed
    }

    pub(crate) fn history(&self) -> &History {
        &self.inner.history
    }

    pub(crate) fn ws_slots(&self) -> &Arc<Semaphore> {
        &self.inner.ws_slots
    }

    /// Resolves once every WebSocket task has ended, i.e. every client slot is free again.
    ///
    /// `axum::serve`'s graceful shutdown does not wait for them: an upgraded connection leaves
    /// the server. Waiting here lets their close frames ("going away") go out before the
    /// process exits.
    pub(crate) async fn websockets_closed(&self) {
        // `acquire_many` only fails on a closed semaphore, and this one is never closed.
        let _all = self
            .inner
            .ws_slots
            .acquire_many(self.inner.ws_capacity)
            .await;
    }

    pub(crate) fn started(&self) -> Instant {
        self.inner.started
    }

    /// The configured stream prefix, e.g. `events`.
    pub(crate) fn prefix(&self) -> &str {
        &self.transport().config().stream_prefix
    }

    /// Whether a token is required.
    pub(crate) fn token_required(&self) -> bool {
        self.inner.token_digest.is_some()
    }

    /// Whether `candidate` is the token, compared in constant time. True when none is set.
    pub(crate) fn token_matches(&self, candidate: &str) -> bool {
        match &self.inner.token_digest {
            None => true,
            Some(expected) => bool::from(digest(candidate).ct_eq(expected)),
        }
    }

    /// `text` with every secret replaced by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.inner.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }

    /// The answer for a failed redstream call: logged (redacted), counted, and turned into an
    /// [`ApiError`] without the server's internals.
    pub(crate) fn fail(&self, error: redstream_core::Error) -> ApiError {
        let kind = error.kind();
        let message = self.scrub(&error.to_string());
        let api = ApiError::from_redstream(kind, message.clone());
        if api.status.is_server_error() {
            self.counters().count_redis_error(kind.as_str());
            tracing::warn!(kind = %kind, error = %message, "a Redis call of the dashboard failed");
        } else {
            tracing::debug!(kind = %kind, error = %message, "request refused");
        }
        api
    }

    /// 403 unless write actions are on.
    pub(crate) fn require_writes(&self) -> Result<(), ApiError> {
        if self.config().allow_writes {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "writes_disabled",
                "write actions are disabled: start the dashboard with --allow-writes to redrive \
                 or purge dead letters",
            ))
        }
    }
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("redis", &redact_url(&self.transport().config().url))
            .field("prefix", &self.prefix())
            .field("config", self.config())
            .finish_non_exhaustive()
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The password of a `redis://user:password@host` URL, as written and percent-decoded; empty
/// when there is none. Every password is scrubbed, however short: a message mangled by
/// replacing a one-letter password is better than a message that prints it.
fn url_password(url: &str) -> Vec<String> {
    let Some((_, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return Vec::new();
    };
    let userinfo = &authority[..at];
    let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
    let mut found = Vec::new();
    for candidate in [password.to_owned(), percent_decode(password)] {
        if !candidate.is_empty() && !found.contains(&candidate) {
            found.push(candidate);
        }
    }
    found
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_in_urls() {
        assert_eq!(url_password("redis://127.0.0.1:6379"), Vec::<String>::new());
        assert_eq!(url_password("redis://:hunter2@h:1/0"), vec!["hunter2"]);
        assert_eq!(
            url_password("redis://u:p%40ss%21@h"),
            vec!["p%40ss%21", "p@ss!"]
        );
        assert_eq!(url_password("redis://u:abc@h"), vec!["abc"]);
        assert_eq!(url_password("redis://u:@h"), Vec::<String>::new());
        assert_eq!(url_password("rediss://secret-only@h"), vec!["secret-only"]);
    }
}
