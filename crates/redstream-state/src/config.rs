//! Configuration: [`StateBackend`] (where state lives, seed 001's shape) and [`StateConfig`]
//! (TTLs, key layout, timeouts, circuit breaker, fallback, TLS).
//!
//! Every field is public and has a default, so configs are written as struct literals with
//! `..Default::default()` (as seed 001 does) or read from files (`#[serde(default)]`, durations
//! as text such as `"24h"`). A field a section does not have (a misspelled `default_tll`, or
//! `ca_file` under `tls`) is refused with its name rather than ignored.
//! [`StateConfig::validate`] runs when a store is opened and names
//! the first invalid field. `Debug` never shows a password.

use std::fmt;
use std::time::Duration;

use redstream_core::{
    BackpressureConfig, CircuitBreakerConfig, Error, RedactedUrl, Result, TlsOptions,
    serde_duration,
};
use serde::{Deserialize, Serialize};

use crate::keys::KeyLayout;

/// Where a store keeps its state.
///
/// ```
/// use redstream_state::StateBackend;
///
/// let backend = StateBackend::Redis {
///     url: "redis://127.0.0.1:6379".to_string(),
///     key_prefix: "myapp".to_string(), // Namespace your keys
/// };
/// assert!(format!("{backend:?}").contains("myapp"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StateBackend {
    /// In this process only, lost when it exits. Same semantics as Redis (TTLs, atomic
    /// updates, transactions, checkpoints), for tests and single-instance use. Every store
    /// opened with it has its own state; clones of one store share it.
    Memory,
    /// A Redis server shared by every process that opens a store with the same URL and prefix.
    Redis {
        /// `redis://[[user]:password@]host[:port][/db]`, `rediss://` for TLS, or
        /// `redis+unix:///path/to/socket[?db=N]`.
        url: String,
        /// The namespace of this store's keys: key `counter` under `myapp` is `myapp:counter`
        /// in Redis (`{myapp}:counter` in the cluster layout, see [`KeyLayout`]). Non-empty, at
        /// most 200 bytes, without whitespace, control characters, `{`, `}` or `#`.
        key_prefix: String,
    },
}

impl Default for StateBackend {
    /// [`StateBackend::Memory`]: a default config needs no server.
    fn default() -> Self {
        Self::Memory
    }
}

impl fmt::Debug for StateBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("Memory"),
            Self::Redis { url, key_prefix } => f
                .debug_struct("Redis")
                .field("url", &RedactedUrl(url))
                .field("key_prefix", key_prefix)
                .finish(),
        }
    }
}

impl StateBackend {
    /// A Redis backend.
    #[must_use]
    pub fn redis(url: impl Into<String>, key_prefix: impl Into<String>) -> Self {
        Self::Redis {
            url: url.into(),
            key_prefix: key_prefix.into(),
        }
    }

    /// Checks the URL and the prefix; the error names the field.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Memory => Ok(()),
            Self::Redis { url, key_prefix } => {
                validate_url(url)?;
                validate_prefix(key_prefix)
            }
        }
    }
}

/// How a store behaves: TTLs, key layout, timeouts, retries, circuit breaker, fallback, TLS.
///
/// ```
/// use std::time::Duration;
/// use redstream_state::{StateBackend, StateConfig};
///
/// let config = StateConfig {
///     backend: StateBackend::redis("redis://127.0.0.1:6379", "orderproc:prod:v2"),
///     enable_ttl: true,
///     default_ttl: Duration::from_secs(24 * 3600),
///     ..Default::default()
/// };
/// config.validate().unwrap();
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Where the state lives.
    pub backend: StateBackend,
    /// Whether writes that do not give a TTL expire after [`default_ttl`](Self::default_ttl).
    ///
    /// When on: `put`, `put_many`, transaction puts and checkpoint snapshots set
    /// `default_ttl`; keys created by `incr`, `hset`, `hincr_by`, `update` and
    /// `compare_and_set` get it too; existing keys changed in place by those keep the TTL they
    /// have. When off, only `*_with_ttl` and `expire` set TTLs.
    pub enable_ttl: bool,
    /// The TTL of [`enable_ttl`](Self::enable_ttl). At least 1 ms.
    #[serde(with = "serde_duration")]
    pub default_ttl: Duration,
    /// How the prefix and a key form a Redis key: `plain` (default, `myapp:counter`, the name
    /// operators look for) or `cluster` (`{myapp}:counter`: every key of the store in one Redis
    /// Cluster slot, so transactions, batches and checkpoints work on a cluster). Files may
    /// also say `hash_tag`, the earlier name of `cluster`.
    #[serde(deserialize_with = "deserialize_key_layout")]
    pub key_layout: KeyLayout,
    /// Time allowed to establish a connection.
    #[serde(with = "serde_duration")]
    pub connect_timeout: Duration,
    /// Time allowed for a reply to a command.
    #[serde(with = "serde_duration")]
    pub response_timeout: Duration,
    /// How many times `update`, and a transaction with increments, run before giving up
    /// when other writers keep changing the key between the read and the write.
    pub update_max_attempts: u32,
    /// Transactions with increments `WATCH` their keys, which needs a connection of their
    /// own: at most this many are open at once (more transactions wait for one).
    pub max_watch_connections: usize,
    /// The breaker in front of Redis: after repeated connection failures or timeouts, calls
    /// fail at once with [`ErrorKind::CircuitOpen`](redstream_core::ErrorKind::CircuitOpen).
    pub circuit_breaker: CircuitBreakerConfig,
    /// What happens while Redis is unavailable. Off by default: calls fail fast.
    pub fallback: FallbackConfig,
    /// Certificates for `rediss://` URLs: a private CA to trust, and a client certificate for
    /// servers that require one.
    pub tls: TlsOptions,
}

impl Default for StateConfig {
    /// Memory backend, no TTL (24 h when enabled), plain keys, 5 s timeouts, 64 update
    /// attempts, fallback off.
    fn default() -> Self {
        Self {
            backend: StateBackend::Memory,
            enable_ttl: false,
            default_ttl: Duration::from_secs(24 * 3600),
            key_layout: KeyLayout::Plain,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            update_max_attempts: 64,
            max_watch_connections: 8,
            circuit_breaker: CircuitBreakerConfig::default(),
            fallback: FallbackConfig::default(),
            tls: TlsOptions::default(),
        }
    }
}

impl fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here; the backend's and the
        // TLS options' own Debug redact what must be.
        let Self {
            backend,
            enable_ttl,
            default_ttl,
            key_layout,
            connect_timeout,
            response_timeout,
            update_max_attempts,
            max_watch_connections,
            circuit_breaker,
            fallback,
            tls,
        } = self;
        f.debug_struct("StateConfig")
            .field("backend", backend)
            .field("enable_ttl", enable_ttl)
            .field("default_ttl", default_ttl)
            .field("key_layout", key_layout)
            .field("connect_timeout", connect_timeout)
            .field("response_timeout", response_timeout)
            .field("update_max_attempts", update_max_attempts)
            .field("max_watch_connections", max_watch_connections)
            .field("circuit_breaker", circuit_breaker)
            .field("fallback", fallback)
            .field("tls", tls)
            .finish()
    }
}

impl StateConfig {
    /// A default config for `backend`.
    #[must_use]
    pub fn new(backend: StateBackend) -> Self {
        Self {
            backend,
            ..Self::default()
        }
    }

    /// Sets [`backend`](Self::backend).
    #[must_use]
    pub fn with_backend(mut self, backend: StateBackend) -> Self {
        self.backend = backend;
        self
    }

    /// Turns the default TTL on with this duration.
    #[must_use]
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.enable_ttl = true;
        self.default_ttl = ttl;
        self
    }

    /// Sets [`key_layout`](Self::key_layout).
    #[must_use]
    pub fn with_key_layout(mut self, layout: KeyLayout) -> Self {
        self.key_layout = layout;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`response_timeout`](Self::response_timeout).
    #[must_use]
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets [`update_max_attempts`](Self::update_max_attempts).
    #[must_use]
    pub fn with_update_max_attempts(mut self, attempts: u32) -> Self {
        self.update_max_attempts = attempts;
        self
    }

    /// Sets [`circuit_breaker`](Self::circuit_breaker).
    #[must_use]
    pub fn with_circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.circuit_breaker = config;
        self
    }

    /// Sets [`fallback`](Self::fallback).
    #[must_use]
    pub fn with_fallback(mut self, fallback: FallbackConfig) -> Self {
        self.fallback = fallback;
        self
    }

    /// Sets [`tls`](Self::tls).
    #[must_use]
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// The TTL that writes without one get: `default_ttl` when `enable_ttl` is on.
    #[must_use]
    pub fn implicit_ttl(&self) -> Option<Duration> {
        self.enable_ttl.then_some(self.default_ttl)
    }

    /// Checks every field; the error names the first invalid one and says what is wrong.
    pub fn validate(&self) -> Result<()> {
        self.backend.validate()?;
        if self.enable_ttl {
            validate_ttl("config field default_ttl", self.default_ttl)?;
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::invalid_input(
                    format!("config field {name}"),
                    "must be greater than zero (e.g. \"5s\")",
                ));
            }
        }
        for (name, value) in [
            ("update_max_attempts", self.update_max_attempts as usize),
            ("max_watch_connections", self.max_watch_connections),
        ] {
            if value == 0 {
                return Err(Error::invalid_input(
                    format!("config field {name}"),
                    "must be at least 1",
                ));
            }
        }
        self.circuit_breaker.validate()?;
        self.fallback.validate()?;
        let url = match &self.backend {
            StateBackend::Redis { url, .. } => Some(url.as_str()),
            StateBackend::Memory => None,
        };
        match url {
            Some(url) => self.tls.validate_for_url(url),
            None => self.tls.validate(),
        }
    }
}

/// `plain`, `cluster`, or `hash_tag` (what files written for earlier versions call `cluster`).
fn deserialize_key_layout<'de, D>(deserializer: D) -> Result<KeyLayout, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let name = String::deserialize(deserializer)?;
    match name.as_str() {
        "hash_tag" => Ok(KeyLayout::Cluster),
        other => other.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "unknown key_layout {other:?}: expected plain (myapp:counter) or cluster \
                 ({{myapp}}:counter)"
            ))
        }),
    }
}

/// A TTL Redis can store: at least 1 ms (`PX` counts milliseconds) and at most `i64::MAX` ms.
pub(crate) fn validate_ttl(what: &str, ttl: Duration) -> Result<()> {
    if ttl < Duration::from_millis(1) {
        return Err(Error::invalid_input(
            what.to_owned(),
            format!("is {ttl:?}; a TTL must be at least 1ms"),
        ));
    }
    if ttl.as_millis() > i64::MAX as u128 / 2 {
        return Err(Error::invalid_input(what.to_owned(), "is too large"));
    }
    Ok(())
}

fn validate_url(url: &str) -> Result<()> {
    let field = || format!("config field backend.url ({})", RedactedUrl(url));
    let scheme = url.split("://").next().unwrap_or_default();
    if !url.contains("://") || !matches!(scheme, "redis" | "rediss" | "redis+unix" | "unix") {
        return Err(Error::invalid_input(
            field(),
            "expected redis://, rediss:// or redis+unix:// followed by the server address",
        ));
    }
    redis::IntoConnectionInfo::into_connection_info(url).map_err(|err| {
        // redis-rs's detail does not echo the URL; keep it that way.
        let detail = err
            .detail()
            .map_or_else(|| err.category().to_owned(), str::to_owned);
        Error::invalid_input(field(), format!("not a valid Redis URL: {detail}"))
    })?;
    Ok(())
}

/// A key prefix: core's rules for prefixes (at most 200 bytes, no whitespace, control
/// characters, `{` or `}`: the cluster layout puts the braces around it), and for a store also
/// non-empty and without `#` (it separates checkpoints from keys). Glob characters are allowed:
/// listing escapes them.
fn validate_prefix(prefix: &str) -> Result<()> {
    const FIELD: &str = "config field backend.key_prefix";
    if prefix.is_empty() {
        return Err(Error::invalid_input(FIELD, "must not be empty"));
    }
    redstream_core::keys::validate_prefix(FIELD, prefix)?;
    if prefix.contains('#') {
        return Err(Error::invalid_input(
            format!("{FIELD} ({prefix:?})"),
            "must not contain '#' (it separates a store's checkpoints from its keys)",
        ));
    }
    Ok(())
}

/// What a store does while Redis is unavailable.
///
/// "Unavailable" means a call failed with a [retryable](redstream_core::Error::is_retryable)
/// error: the connection was refused or dropped, a reply timed out, the server is loading or
/// failing over, or the circuit breaker is open. Permanent errors (authentication,
/// permissions, wrong types) are always returned as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackMode {
    /// Every call fails fast with the retryable error (behind the circuit breaker).
    #[default]
    Off,
    /// `get` and `get_with_meta` answer from a bounded local cache of recently read and
    /// written values, marked stale; a key not in the cache is an error, never `None`.
    /// Writes and other reads fail fast.
    StaleReads,
    /// As `StaleReads`, and `put`, `put_with_ttl`, `put_many` and `delete` are buffered in a
    /// bounded queue and replayed in order when Redis is back. Other writes fail fast.
    StaleReadsBufferedWrites,
}

/// The fallback of a store while Redis is unavailable; see [`FallbackMode`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {
    /// Off, stale reads, or stale reads and buffered writes.
    pub mode: FallbackMode,
    /// The most values the local cache holds (the oldest are forgotten first). At least 1
    /// unless the mode is `Off`.
    pub cache_capacity: usize,
    /// The write buffer of [`FallbackMode::StaleReadsBufferedWrites`]: its size (writes
    /// waiting; the replay task holds one more, the write it is retrying), and what a
    /// write does when it is full (`Block` waits for room, `Reject` fails with
    /// [`ErrorKind::QueueFull`](redstream_core::ErrorKind::QueueFull), `DropNewest` refuses
    /// the new write with that error, `DropOldest` drops the oldest buffered write). Every
    /// dropped write is counted and logged.
    pub write_buffer: BackpressureConfig,
    /// How long the replay of buffered writes waits after a failed attempt before trying again.
    #[serde(with = "serde_duration")]
    pub replay_interval: Duration,
}

impl Default for FallbackConfig {
    /// Off; when turned on, 10,000 cached values, a write buffer of 1,000 that blocks when
    /// full, replay retried every 250 ms.
    fn default() -> Self {
        Self {
            mode: FallbackMode::Off,
            cache_capacity: 10_000,
            write_buffer: BackpressureConfig::default(),
            replay_interval: Duration::from_millis(250),
        }
    }
}

impl FallbackConfig {
    /// The default settings with `mode`.
    #[must_use]
    pub fn new(mode: FallbackMode) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }

    /// Sets [`cache_capacity`](Self::cache_capacity).
    #[must_use]
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Sets [`write_buffer`](Self::write_buffer).
    #[must_use]
    pub fn with_write_buffer(mut self, buffer: BackpressureConfig) -> Self {
        self.write_buffer = buffer;
        self
    }

    /// Sets [`replay_interval`](Self::replay_interval).
    #[must_use]
    pub fn with_replay_interval(mut self, interval: Duration) -> Self {
        self.replay_interval = interval;
        self
    }

    /// Checks every field; the error names the first invalid one.
    pub fn validate(&self) -> Result<()> {
        if self.mode == FallbackMode::Off {
            return Ok(());
        }
        if self.cache_capacity == 0 {
            return Err(Error::invalid_input(
                "config field fallback.cache_capacity",
                "must be at least 1 when the fallback is on",
            ));
        }
        if self.replay_interval.is_zero() {
            return Err(Error::invalid_input(
                "config field fallback.replay_interval",
                "must be greater than zero (e.g. \"250ms\")",
            ));
        }
        self.write_buffer.validate().map_err(|err| match err {
            Error::InvalidInput { what, reason } => Error::invalid_input(
                what.replace("backpressure.", "fallback.write_buffer."),
                reason,
            ),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use redstream_core::{BackpressureStrategy, ErrorKind};

    use super::*;

    fn redis(url: &str, prefix: &str) -> StateConfig {
        StateConfig::new(StateBackend::redis(url, prefix))
    }

    #[test]
    fn the_seed_shapes_compile_and_validate() {
        let backend = StateBackend::Redis {
            url: "redis://127.0.0.1:6379".to_string(),
            key_prefix: "myapp".to_string(),
        };
        let config = StateConfig {
            backend: backend.clone(),
            enable_ttl: true,
            default_ttl: Duration::from_secs(24 * 3600),
            ..Default::default()
        };
        config.validate().unwrap();
        assert_eq!(config.implicit_ttl(), Some(Duration::from_secs(86_400)));
        assert_eq!(StateConfig::default().implicit_ttl(), None);
        for url in [
            "redis://:password@127.0.0.1:6379",
            "redis://127.0.0.1:6379/2",
            "rediss://127.0.0.1:6380",
            "redis+unix:///tmp/redis.sock",
        ] {
            redis(url, "prod_stream_v2").validate().unwrap();
        }
        redis("redis://h", "orderproc:prod:v2").validate().unwrap();
        redis("redis://h", "globs*?[]\\ok").validate().unwrap();
    }

    #[test]
    fn validation_names_the_field() {
        let cases: Vec<(StateConfig, &str)> = vec![
            (redis("http://h", "p"), "backend.url"),
            (redis("redis://h:notaport", "p"), "backend.url"),
            (redis("redis://h", ""), "backend.key_prefix"),
            (redis("redis://h", "a{b"), "backend.key_prefix"),
            (redis("redis://h", "a}b"), "backend.key_prefix"),
            (redis("redis://h", "a#b"), "backend.key_prefix"),
            (redis("redis://h", "a b"), "backend.key_prefix"),
            (redis("redis://h", &"x".repeat(201)), "backend.key_prefix"),
            (
                StateConfig::default().with_default_ttl(Duration::ZERO),
                "default_ttl",
            ),
            (
                StateConfig::default().with_default_ttl(Duration::from_micros(10)),
                "default_ttl",
            ),
            (
                StateConfig::default().with_connect_timeout(Duration::ZERO),
                "connect_timeout",
            ),
            (
                StateConfig::default().with_response_timeout(Duration::ZERO),
                "response_timeout",
            ),
            (
                StateConfig::default().with_update_max_attempts(0),
                "update_max_attempts",
            ),
            (
                StateConfig {
                    max_watch_connections: 0,
                    ..Default::default()
                },
                "max_watch_connections",
            ),
            (
                StateConfig::default().with_circuit_breaker(
                    CircuitBreakerConfig::default().with_failure_threshold(0),
                ),
                "circuit_breaker.failure_threshold",
            ),
            (
                StateConfig::default().with_fallback(
                    FallbackConfig::new(FallbackMode::StaleReads).with_cache_capacity(0),
                ),
                "fallback.cache_capacity",
            ),
            (
                StateConfig::default().with_fallback(
                    FallbackConfig::new(FallbackMode::StaleReadsBufferedWrites)
                        .with_write_buffer(BackpressureConfig::default().with_max_queue_size(0)),
                ),
                "fallback.write_buffer.max_queue_size",
            ),
            (
                redis("redis://h", "p").with_tls(TlsOptions {
                    ca_cert_pem: Some("not pem".into()),
                    ..TlsOptions::default()
                }),
                "tls.ca_cert_pem",
            ),
            (
                redis("redis://h", "p").with_tls(TlsOptions {
                    ca_cert_path: Some("/ca.pem".into()),
                    ..TlsOptions::default()
                }),
                "tls.ca_cert_path",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{field}");
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
        // The write buffer is only checked when it is used.
        StateConfig::default()
            .with_fallback(FallbackConfig {
                cache_capacity: 0,
                write_buffer: BackpressureConfig::default()
                    .with_strategy(BackpressureStrategy::Reject)
                    .with_max_queue_size(0),
                ..FallbackConfig::default()
            })
            .validate()
            .unwrap();
    }

    #[test]
    fn debug_and_errors_never_show_the_password() {
        let config = redis("redis://app:hunter2@cache:6379/1", "p");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis://app:***@cache:6379/1"), "{shown}");
        let bad = redis("redis://app:hunter2@cache:notaport/1", "p");
        let err = bad.validate().unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let tls = redis("redis://app:hunter2@cache/1", "p").with_tls(TlsOptions {
            ca_cert_path: Some("/ca.pem".into()),
            ..TlsOptions::default()
        });
        let err = tls.validate().unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn configs_read_from_files_with_defaults_and_humane_durations() {
        let config: StateConfig = serde_json::from_str(
            r#"{
                "backend": { "type": "redis", "url": "redis://h", "key_prefix": "app" },
                "enable_ttl": true,
                "default_ttl": "1h 30m",
                "key_layout": "plain",
                "fallback": { "mode": "stale_reads" }
            }"#,
        )
        .unwrap();
        assert_eq!(config.backend, StateBackend::redis("redis://h", "app"));
        assert_eq!(config.default_ttl, Duration::from_secs(5400));
        assert_eq!(config.key_layout, KeyLayout::Plain);
        assert_eq!(config.fallback.mode, FallbackMode::StaleReads);
        assert_eq!(config.fallback.cache_capacity, 10_000);
        assert_eq!(config.response_timeout, Duration::from_secs(5));
        let memory: StateConfig = serde_json::from_str(r#"{"backend":{"type":"memory"}}"#).unwrap();
        assert_eq!(memory.backend, StateBackend::Memory);
        let text = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<StateConfig>(&text).unwrap(), config);
    }

    #[test]
    fn key_layouts_read_from_files_plain_by_default_and_hash_tag_as_cluster() {
        let layout = |json: &str| serde_json::from_str::<StateConfig>(json).map(|c| c.key_layout);
        assert_eq!(StateConfig::default().key_layout, KeyLayout::Plain);
        assert_eq!(layout("{}").unwrap(), KeyLayout::Plain);
        assert_eq!(
            layout(r#"{"key_layout":"plain"}"#).unwrap(),
            KeyLayout::Plain
        );
        assert_eq!(
            layout(r#"{"key_layout":"cluster"}"#).unwrap(),
            KeyLayout::Cluster
        );
        // The name files written for earlier versions use.
        assert_eq!(
            layout(r#"{"key_layout":"hash_tag"}"#).unwrap(),
            KeyLayout::Cluster
        );
        let err = layout(r#"{"key_layout":"HashTag"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("plain") && err.contains("cluster"), "{err}");
        let cluster = StateConfig::default().with_key_layout(KeyLayout::Cluster);
        let text = serde_json::to_string(&cluster).unwrap();
        assert!(text.contains(r#""key_layout":"cluster""#), "{text}");
    }

    #[test]
    fn unknown_fields_are_refused_in_every_section() {
        for (json, field) in [
            (r#"{"default_tll":"1h"}"#, "default_tll"),
            (
                r#"{"backend":{"type":"redis","url":"redis://h","key_prefix":"a","prefix":"b"}}"#,
                "prefix",
            ),
            (r#"{"fallback":{"mode":"off","capacity":3}}"#, "capacity"),
            (r#"{"tls":{"ca_file":"/ca.pem"}}"#, "ca_file"),
            (
                r#"{"circuit_breaker":{"failure_treshold":3}}"#,
                "failure_treshold",
            ),
        ] {
            let err = serde_json::from_str::<StateConfig>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{json}: {err}");
        }
    }
}
