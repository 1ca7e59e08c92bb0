//! Configuration: [`StateBackend`] (where state lives, seed 001's shape) and [`StateConfig`]
//! (TTLs, key layout, connection settings, circuit breaker, fallback).
//!
//! Every field is public and has a default, so configs are written as struct literals with
//! `..Default::default()` (as seed 001 does) or read from files (`#[serde(default)]`, durations
//! as text such as `"24h"`). A field a section does not have (a misspelled `default_tll`, or
//! `ca_file` under `tls`) is refused with its name rather than ignored.
//!
//! The connection settings are core's [`ConnectionSettings`] (core's `ConnectionOptions`
//! without the URL), embedded as [`StateConfig::connection`] and flattened, so a file names
//! them at the top level as every redstream config does: `connect_timeout`,
//! `response_timeout`, `tls`, `master_name`, `sentinel_username`, `sentinel_password`. The URL
//! stays in the backend (`backend: { type: redis, url, key_prefix }`), where seed 001 puts it;
//! [`StateConfig::connection_options`] joins the two.
//! [`StateConfig::validate`] runs when a store is opened and names
//! the first invalid field. `Debug` never shows a password.

use std::fmt;
use std::time::Duration;

use redstream_core::connection::embed::{self, Embedding};
use redstream_core::connection::{ConnectionOptions, ConnectionSettings, Topology};
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
    /// Redis (a server, a cluster or a Sentinel-managed master) shared by every process that
    /// opens a store with the same URL and prefix.
    Redis {
        /// Every form core's [`ConnectionOptions`] accepts:
        /// `redis://[[user]:password@]host[:port][/db]`, `rediss://` for TLS,
        /// `redis+unix:///path/to/socket[?db=N]`; a cluster,
        /// `redis-cluster://[user:password@]h1:6379,h2:6379` (`rediss-cluster://`); a master
        /// found through Sentinel, `redis-sentinel://[user:password@]s1:26379,s2:26379/mymaster[/db]`
        /// (`rediss-sentinel://`; the sentinels' own credentials and the master name may go in
        /// the config's [`sentinel_password`](ConnectionSettings::sentinel_password),
        /// [`sentinel_username`](ConnectionSettings::sentinel_username) and
        /// [`master_name`](ConnectionSettings::master_name), fields of
        /// [`StateConfig::connection`]). The password in the URL is the data nodes'.
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

    /// Checks the URL and the prefix; the error names the field. A `redis-sentinel://` URL
    /// must name its master here; [`StateConfig::validate`] also accepts one that leaves it to
    /// the config's [`master_name`](ConnectionSettings::master_name).
    pub fn validate(&self) -> Result<()> {
        self.validate_with(None)
    }

    /// [`validate`](Self::validate) with the master name the config gives, if any.
    fn validate_with(&self, master_name: Option<&str>) -> Result<()> {
        match self {
            Self::Memory => Ok(()),
            Self::Redis { url, key_prefix } => {
                validate_url(url, master_name)?;
                validate_prefix(key_prefix)
            }
        }
    }
}

/// How a store behaves: TTLs, key layout, connection settings (timeouts, TLS, Sentinel),
/// retries, circuit breaker, fallback.
///
/// In a file the connection settings are top-level fields, next to the store's own:
///
/// ```yaml
/// backend: { type: redis, url: "redis-sentinel://s1:26379,s2:26379", key_prefix: myapp }
/// enable_ttl: true
/// default_ttl: 24h
/// response_timeout: 2s
/// master_name: mymaster
/// sentinel_password: sentinel-secret
/// ```
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
// No `deny_unknown_fields`: it does not work with `flatten`; `connection` refuses unknown
// fields instead (core's `embed`).
#[serde(default)]
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
    /// How the prefix and a key form a Redis key: `plain` (`myapp:counter`, the name
    /// operators look for) or `cluster` (`{myapp}:counter`: every key of the store in one Redis
    /// Cluster slot, so transactions, batches and checkpoints work on a cluster). Files may
    /// also say `hash_tag`, the earlier name of `cluster`.
    ///
    /// `None` (the default: not chosen) is `cluster` on a Redis Cluster (`redis-cluster://`
    /// URLs) and `plain` everywhere else; see [`key_layout_for`](Self::key_layout_for). An
    /// explicit `plain` on a cluster is kept: single-key operations and `get_many` work, and
    /// the operations that must write several keys at once (`put_many`, transactions,
    /// checkpoints) fail with [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput)
    /// naming the keys' slots, before anything is written, when their keys are in different
    /// slots.
    #[serde(
        deserialize_with = "deserialize_key_layout",
        skip_serializing_if = "Option::is_none"
    )]
    pub key_layout: Option<KeyLayout>,
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
    /// How to reach Redis, except the URL (which is the backend's): `connect_timeout` and
    /// `response_timeout` (5 s each), `tls` (certificates for `rediss://` URLs and their cluster
    /// and Sentinel forms), and for Sentinel `master_name`, `sentinel_username`,
    /// `sentinel_password` (never shown by `Debug` or in errors). Core's
    /// [`ConnectionSettings`], flattened: a file gives these fields at the top level. Ignored by
    /// the memory backend, except that [`validate`](Self::validate) checks them.
    #[serde(flatten, deserialize_with = "connection_settings")]
    pub connection: ConnectionSettings,
}

impl Default for StateConfig {
    /// Memory backend, no TTL (24 h when enabled), key layout not chosen (plain, cluster on a
    /// Redis Cluster), 5 s timeouts, 64 update attempts, fallback off, no Sentinel settings.
    fn default() -> Self {
        Self {
            backend: StateBackend::Memory,
            enable_ttl: false,
            default_ttl: Duration::from_secs(24 * 3600),
            key_layout: None,
            update_max_attempts: 64,
            max_watch_connections: 8,
            circuit_breaker: CircuitBreakerConfig::default(),
            fallback: FallbackConfig::default(),
            connection: ConnectionSettings::default(),
        }
    }
}

impl fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here; the backend's and the
        // connection settings' own Debug redact what must be.
        let Self {
            backend,
            enable_ttl,
            default_ttl,
            key_layout,
            update_max_attempts,
            max_watch_connections,
            circuit_breaker,
            fallback,
            connection,
        } = self;
        f.debug_struct("StateConfig")
            .field("backend", backend)
            .field("enable_ttl", enable_ttl)
            .field("default_ttl", default_ttl)
            .field("key_layout", key_layout)
            .field("update_max_attempts", update_max_attempts)
            .field("max_watch_connections", max_watch_connections)
            .field("circuit_breaker", circuit_breaker)
            .field("fallback", fallback)
            .field("connection", connection)
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

    /// Sets [`key_layout`](Self::key_layout): the layout is then chosen, whatever the
    /// topology.
    #[must_use]
    pub fn with_key_layout(mut self, layout: KeyLayout) -> Self {
        self.key_layout = Some(layout);
        self
    }

    /// The key layout a store uses on `topology`: [`key_layout`](Self::key_layout) when it is
    /// set, otherwise [`KeyLayout::Cluster`] on a cluster and [`KeyLayout::Plain`] elsewhere.
    ///
    /// ```
    /// use redstream_core::connection::Topology;
    /// use redstream_state::{KeyLayout, StateConfig};
    ///
    /// let config = StateConfig::default();
    /// assert_eq!(config.key_layout_for(Topology::Cluster), KeyLayout::Cluster);
    /// assert_eq!(config.key_layout_for(Topology::Sentinel), KeyLayout::Plain);
    /// let plain = config.with_key_layout(KeyLayout::Plain);
    /// assert_eq!(plain.key_layout_for(Topology::Cluster), KeyLayout::Plain);
    /// ```
    #[must_use]
    pub fn key_layout_for(&self, topology: Topology) -> KeyLayout {
        match (self.key_layout, topology) {
            (Some(layout), _) => layout,
            (None, Topology::Cluster) => KeyLayout::Cluster,
            (None, _) => KeyLayout::Plain,
        }
    }

    /// The connection settings ([`connection`](Self::connection)).
    #[must_use]
    pub fn connection(&self) -> &ConnectionSettings {
        &self.connection
    }

    /// Sets [`connection`](Self::connection), every connection setting at once.
    #[must_use]
    pub fn with_connection(mut self, connection: ConnectionSettings) -> Self {
        self.connection = connection;
        self
    }

    /// Sets the connection's [`master_name`](ConnectionSettings::master_name) (Sentinel).
    #[must_use]
    pub fn with_master_name(mut self, name: impl Into<String>) -> Self {
        self.connection.master_name = Some(name.into());
        self
    }

    /// Sets the connection's [`sentinel_username`](ConnectionSettings::sentinel_username)
    /// (sentinels with ACL users).
    #[must_use]
    pub fn with_sentinel_username(mut self, username: impl Into<String>) -> Self {
        self.connection.sentinel_username = Some(username.into());
        self
    }

    /// Sets the connection's [`sentinel_password`](ConnectionSettings::sentinel_password)
    /// (sentinels with `requirepass`).
    #[must_use]
    pub fn with_sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.connection.sentinel_password = Some(password.into());
        self
    }

    /// Core's [`ConnectionOptions`] for the Redis backend: the backend's URL with
    /// [`connection`](Self::connection). `None` for the memory backend.
    #[must_use]
    pub fn connection_options(&self) -> Option<ConnectionOptions> {
        let StateBackend::Redis { url, .. } = &self.backend else {
            return None;
        };
        Some(self.connection.clone().with_url(url.clone()))
    }

    /// Sets the connection's [`connect_timeout`](ConnectionSettings::connect_timeout).
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connection.connect_timeout = timeout;
        self
    }

    /// Sets the connection's [`response_timeout`](ConnectionSettings::response_timeout).
    #[must_use]
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.connection.response_timeout = timeout;
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

    /// Sets the connection's [`tls`](ConnectionSettings::tls) options.
    #[must_use]
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.connection.tls = tls;
        self
    }

    /// The TTL that writes without one get: `default_ttl` when `enable_ttl` is on.
    #[must_use]
    pub fn implicit_ttl(&self) -> Option<Duration> {
        self.enable_ttl.then_some(self.default_ttl)
    }

    /// Checks every field; the error names the first invalid one and says what is wrong.
    pub fn validate(&self) -> Result<()> {
        self.backend
            .validate_with(self.connection.master_name.as_deref())?;
        if self.enable_ttl {
            validate_ttl("config field default_ttl", self.default_ttl)?;
        }
        for (name, value) in [
            ("connect_timeout", self.connection.connect_timeout),
            ("response_timeout", self.connection.response_timeout),
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
        match self.connection_options() {
            // The URL, the TLS options against it, and the Sentinel fields against it (they
            // only apply to redis-sentinel:// URLs); messages never show a password.
            Some(options) => options.validate(),
            None => self.connection.tls.validate(),
        }
    }
}

/// `plain`, `cluster`, or `hash_tag` (what files written for earlier versions call `cluster`);
/// `null` leaves the layout to the topology.
fn deserialize_key_layout<'de, D>(deserializer: D) -> Result<Option<KeyLayout>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let Some(name) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    match name.as_str() {
        "hash_tag" => Ok(Some(KeyLayout::Cluster)),
        other => other.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "unknown key_layout {other:?}: expected plain (myapp:counter) or cluster \
                 ({{myapp}}:counter)"
            ))
        }),
    }
}

/// The embedded connection settings, flat among the config's own fields; a field neither
/// knows is refused with both lists (core's [`embed`]).
fn connection_settings<'de, D>(deserializer: D) -> Result<ConnectionSettings, D::Error>
where
    D: serde::Deserializer<'de>,
{
    embed::deserialize(deserializer, &Embedding::new(StateConfig::OWN_FIELDS))
}

impl StateConfig {
    /// The config's own fields in files, besides the connection's.
    const OWN_FIELDS: &'static [&'static str] = &[
        "backend",
        "enable_ttl",
        "default_ttl",
        "key_layout",
        "update_max_attempts",
        "max_watch_connections",
        "circuit_breaker",
        "fallback",
    ];
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

/// A URL core's connection accepts (single server, cluster or Sentinel), with `master_name`
/// completing a Sentinel URL that does not name its master. Core's reason, under this
/// config's field name; core never shows a password.
fn validate_url(url: &str, master_name: Option<&str>) -> Result<()> {
    let mut options = ConnectionOptions::new(url);
    options.master_name = master_name.map(str::to_owned);
    if let Err(err) = options.topology() {
        return Err(match err {
            Error::InvalidInput { what, reason } if what == "config field url" => {
                Error::invalid_input(
                    format!("config field backend.url ({})", RedactedUrl(url)),
                    reason,
                )
            }
            // master_name set for a URL that is not Sentinel's: StateConfig::validate says it.
            Error::InvalidInput { what, .. } if what.contains("master_name") => return Ok(()),
            other => other,
        });
    }
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
        assert_eq!(config.key_layout, Some(KeyLayout::Plain));
        assert_eq!(config.fallback.mode, FallbackMode::StaleReads);
        assert_eq!(config.fallback.cache_capacity, 10_000);
        assert_eq!(config.connection.response_timeout, Duration::from_secs(5));
        let memory: StateConfig = serde_json::from_str(r#"{"backend":{"type":"memory"}}"#).unwrap();
        assert_eq!(memory.backend, StateBackend::Memory);
        let text = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<StateConfig>(&text).unwrap(), config);
    }

    #[test]
    fn key_layouts_read_from_files_plain_by_default_and_hash_tag_as_cluster() {
        let layout = |json: &str| serde_json::from_str::<StateConfig>(json).map(|c| c.key_layout);
        assert_eq!(StateConfig::default().key_layout, None);
        assert_eq!(layout("{}").unwrap(), None);
        assert_eq!(layout(r#"{"key_layout":null}"#).unwrap(), None);
        assert_eq!(
            layout(r#"{"key_layout":"plain"}"#).unwrap(),
            Some(KeyLayout::Plain)
        );
        assert_eq!(
            layout(r#"{"key_layout":"cluster"}"#).unwrap(),
            Some(KeyLayout::Cluster)
        );
        // The name files written for earlier versions use.
        assert_eq!(
            layout(r#"{"key_layout":"hash_tag"}"#).unwrap(),
            Some(KeyLayout::Cluster)
        );
        // Not chosen: plain, except on a cluster.
        let default = StateConfig::default();
        assert_eq!(default.key_layout_for(Topology::Single), KeyLayout::Plain);
        assert_eq!(default.key_layout_for(Topology::Sentinel), KeyLayout::Plain);
        assert_eq!(
            default.key_layout_for(Topology::Cluster),
            KeyLayout::Cluster
        );
        let chosen = default.with_key_layout(KeyLayout::Plain);
        assert_eq!(chosen.key_layout_for(Topology::Cluster), KeyLayout::Plain);
        assert!(
            !serde_json::to_string(&StateConfig::default())
                .unwrap()
                .contains("key_layout")
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
    fn cluster_and_sentinel_urls_and_the_sentinel_fields() {
        for url in [
            "redis-cluster://h1:7000,h2:7001",
            "rediss-cluster://app:pw@h1:7000",
            "redis-sentinel://s1:26379,s2:26379/mymaster",
            "redis-sentinel://:pw@s1/mymaster/2",
            "rediss-sentinel://s1:26379/mymaster",
        ] {
            redis(url, "app").validate().unwrap();
        }
        // The master name in its own field instead of the URL.
        let config = redis("redis-sentinel://s1:26379,s2:26379", "app")
            .with_master_name("mymaster")
            .with_sentinel_username("watcher")
            .with_sentinel_password("sentinel-hunter2");
        config.validate().unwrap();
        let options = config.connection_options().unwrap();
        assert_eq!(options.master_name.as_deref(), Some("mymaster"));
        assert_eq!(options.sentinel_username.as_deref(), Some("watcher"));
        assert_eq!(
            options.sentinel_password.as_deref(),
            Some("sentinel-hunter2")
        );
        assert_eq!(options.topology().unwrap(), Topology::Sentinel);
        assert_eq!(options.response_timeout, config.connection.response_timeout);
        assert!(StateConfig::default().connection_options().is_none());
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("watcher"), "{shown}");

        let cases: Vec<(StateConfig, &str)> = vec![
            (redis("redis-sentinel://s1:26379", "app"), "backend.url"),
            (redis("redis-cluster://h1:7000/2", "app"), "backend.url"),
            (redis("redis-cluster://", "app"), "backend.url"),
            (
                redis("redis://h", "app").with_master_name("m"),
                "master_name",
            ),
            (
                redis("redis-cluster://h1", "app").with_sentinel_password("sentinel-hunter2"),
                "sentinel_password",
            ),
            (
                redis("redis-sentinel://s1/mymaster", "app").with_master_name("other"),
                "master_name",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{field}: {err}");
            let text = err.to_string();
            assert!(text.contains(field), "{text} should name {field}");
            assert!(!text.contains("hunter2"), "{text}");
        }

        let config: StateConfig = serde_json::from_str(
            r#"{
                "backend": { "type": "redis", "url": "redis-sentinel://s1,s2", "key_prefix": "app" },
                "master_name": "mymaster",
                "sentinel_password": "sentinel-hunter2"
            }"#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.connection.sentinel_password.as_deref(),
            Some("sentinel-hunter2")
        );
        let err = serde_json::from_str::<StateConfig>(r#"{"master":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("master"), "{err}");
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
            (r#"{"sentinel_pasword":"x"}"#, "sentinel_pasword"),
        ] {
            let err = serde_json::from_str::<StateConfig>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{json}: {err}");
        }
        // Top level: the store's fields and the connection's are all listed.
        let err = serde_json::from_str::<StateConfig>(r#"{"default_tll":"1h"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "unknown field `default_tll`, expected one of `backend`, `enable_ttl`, \
                 `default_ttl`"
            ),
            "{err}"
        );
        assert!(
            err.contains("`response_timeout`, `tls`, `master_name`"),
            "{err}"
        );
        // In a connection field: the field's path, then its error.
        let err = serde_json::from_str::<StateConfig>(r#"{"tls":{"ca_file":"/ca.pem"}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("in `tls`: unknown field `ca_file`"),
            "{err}"
        );
        // The URL is the backend's: a top-level `url` is not a field of the state config.
        let err = serde_json::from_str::<StateConfig>(r#"{"url":"redis://h"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `url`"), "{err}");
        // The transport's old nested section is not a field either.
        let err = serde_json::from_str::<StateConfig>(r#"{"sentinel":{}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `sentinel`"), "{err}");
    }

    /// A file with every connection setting at the top level fills the embedded
    /// [`ConnectionSettings`]; a YAML file reads the same; written back, it stays flat.
    #[test]
    fn a_flat_file_fills_the_embedded_connection_settings() {
        let yaml = "backend:\n  type: redis\n  url: rediss-sentinel://s1:26379,s2:26379\n  \
                    key_prefix: app\nenable_ttl: true\nconnect_timeout: 1s\n\
                    response_timeout: 250ms\ntls:\n  ca_cert_path: /etc/redis/ca.pem\n\
                    master_name: mymaster\nsentinel_username: watcher\n\
                    sentinel_password: sentinel-hunter2\n";
        let config: StateConfig = serde_norway::from_str(yaml).unwrap();
        let expected = ConnectionSettings::default()
            .with_connect_timeout(Duration::from_secs(1))
            .with_response_timeout(Duration::from_millis(250))
            .with_tls(TlsOptions {
                ca_cert_path: Some("/etc/redis/ca.pem".into()),
                ..TlsOptions::default()
            })
            .with_master_name("mymaster")
            .with_sentinel_username("watcher")
            .with_sentinel_password("sentinel-hunter2");
        assert_eq!(config.connection(), &expected);
        assert!(config.enable_ttl);
        let options = config.connection_options().unwrap();
        assert_eq!(options.url, "rediss-sentinel://s1:26379,s2:26379");
        assert_eq!(options.clone().into_parts().1, expected);
        assert_eq!(options.topology().unwrap(), Topology::Sentinel);
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("watcher"), "{shown}");

        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["response_timeout"], "250ms");
        assert_eq!(json["master_name"], "mymaster");
        assert!(json.get("connection").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<StateConfig>(json).unwrap(), config);

        // The builder methods set the embedded settings.
        let built = StateConfig::new(StateBackend::redis("redis://h", "app"))
            .with_connect_timeout(Duration::from_secs(1))
            .with_response_timeout(Duration::from_millis(250));
        assert_eq!(built.connection.connect_timeout, Duration::from_secs(1));
        assert_eq!(
            built.connection().response_timeout,
            Duration::from_millis(250)
        );
    }

    /// [`StateConfig::OWN_FIELDS`] lists every field of the struct but the embedded ones.
    #[test]
    fn own_fields_are_listed() {
        let config = StateConfig::default().with_key_layout(KeyLayout::Plain);
        let json = serde_json::to_value(&config).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.retain(|key| !ConnectionSettings::FIELDS.contains(key));
        keys.sort_unstable();
        let mut own = StateConfig::OWN_FIELDS.to_vec();
        own.sort_unstable();
        assert_eq!(keys, own);
    }
}
