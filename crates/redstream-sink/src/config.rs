//! The sink's configuration: what to write where, batch limits, retries, and the connection
//! (core's [`ConnectionOptions`], embedded flat).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use redstream_core::connection::embed::{self, Embedding};
use redstream_core::connection::{ConnectionOptions, Topology};
use redstream_core::{Error, Result, RetryPolicy, TlsOptions};
use serde::{Deserialize, Serialize};

/// Configuration of a [`RedisSink`](crate::RedisSink).
///
/// Build it with a struct literal and `..Default::default()`, with the `with_*` methods, or read
/// it from a YAML or TOML file with [`SinkConfig::from_file`]. `Debug` redacts the password in
/// the URL and never shows `sentinel_password`.
///
/// The connection is core's [`ConnectionOptions`], embedded as
/// [`connection`](Self::connection) and flattened: a file gives its fields at the top level,
/// under core's names, as every redstream config does: `url`, `connect_timeout`,
/// `response_timeout`, `tls`, and for Sentinel `master_name`, `sentinel_username`,
/// `sentinel_password`. Two old names are still read, and deprecated (a warning is logged):
/// `uri` (seed 003's, and this crate's in earlier versions) for `url`, and `send_timeout` for
/// `response_timeout`. A file giving a field under both names is refused.
///
/// ```toml
/// id = "orders-redis"
/// url = "${REDIS_URL}"
/// stream = "{orders}.events"
/// required = true
/// max_batch_events = 1000
/// max_stream_length = 1000000   # MAXLEN ~; 0 or absent: no trimming
/// response_timeout = "5s"
///
/// [retry]
/// initial_delay = "100ms"
/// max_attempts = "unlimited"
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
// No `deny_unknown_fields`: it does not work with `flatten`; `connection` refuses unknown
// fields instead (core's `embed`).
#[serde(default)]
pub struct SinkConfig {
    /// The sink's identifier: a metric label and part of its progress key. Required; letters,
    /// digits, `-`, `_` and `.` only.
    pub id: String,
    /// The stream key the events are appended to, used exactly as given (`orders.events`,
    /// `{orders}.events`). Required; no whitespace or control characters. The sink's progress
    /// key is built from it so that both share a Redis Cluster slot
    /// ([`keys::progress_key`](crate::keys::progress_key)).
    pub stream: String,
    /// Whether the sink gates checkpoints (default `true`). A sink with `required = false`
    /// does not block a checkpoint beyond its retry schedule: a batch it gives up on is
    /// counted, logged and dropped, and the checkpoint moves on. While it retries, the
    /// checkpoint waits; so `required = false` needs a bounded `retry.max_attempts` or a
    /// `batch_timeout`, and [`validate`](Self::validate) refuses it otherwise.
    pub required: bool,
    /// The most events in one batch (default 1,000).
    pub max_batch_events: usize,
    /// The most encoded bytes in one batch, summed over its events (default 16 MiB).
    pub max_batch_bytes: usize,
    /// Trims the stream with `XADD ... MAXLEN ~ n` when not 0; 0 (the default) never trims. In
    /// a file, absent or `null` is 0. The same field, type and meaning as the transport's
    /// `RedisConfig::max_stream_length` (core's [`serde_max_len`](redstream_core::serde_max_len)).
    #[serde(deserialize_with = "redstream_core::serde_max_len::deserialize")]
    pub max_stream_length: usize,
    /// How failed batches are retried. Only transient failures are retried.
    pub retry: RetryPolicy,
    /// An upper bound on one whole batch, retries and waits included (default none: the
    /// retry policy alone bounds it). When it runs out the batch fails with a timeout and the
    /// checkpoint does not move (for a required sink). It also bounds
    /// [`RedisSink::confirm_recorded`](crate::RedisSink::confirm_recorded) and the runner's
    /// read of the progress key at start.
    #[serde(with = "redstream_core::serde_duration::option")]
    pub batch_timeout: Option<Duration>,
    /// Whether the sink records its progress in each batch's script and skips a batch it
    /// finds already written (default `true`). Off, a batch retried after a lost reply or a
    /// restart may be written twice; the stream's other guarantees are unchanged.
    pub exactly_once: bool,
    /// Wait for replicas after each batch (`WAIT numreplicas timeout`); off by default.
    /// Requires `exactly_once` (see [`Durability`]).
    pub durability: Option<Durability>,
    /// Where Redis is and how to reach it: core's [`ConnectionOptions`], flattened (a file
    /// gives its fields at the top level).
    ///
    /// - `url`: every form core accepts, `redis://host:6379/0`, `rediss://...`,
    ///   `redis-cluster://h1:6379,h2:6379` and `redis-sentinel://s1:26379,s2:26379/mymaster`
    ///   among them; default `redis://127.0.0.1:6379`. In a file it may hold `${NAME}`
    ///   references to environment variables, and may be spelt `uri` (deprecated).
    /// - `response_timeout`: how long one attempt (the batch script's round trip, and a read)
    ///   may take (default 5 s). In a file it may be spelt `send_timeout` (deprecated).
    /// - `connect_timeout` (default 5 s), `tls` (for the TLS URLs).
    /// - For Sentinel: `master_name`, `sentinel_username`, and `sentinel_password` (never shown
    ///   by `Debug` nor in errors; in a file it may hold `${NAME}` references).
    #[serde(flatten, deserialize_with = "connection_options")]
    pub connection: ConnectionOptions,
}

/// How many replicas must acknowledge a batch before the sink reports it written.
///
/// After the batch's script the sink sends `WAIT replicas timeout`, in the same round trip. If
/// fewer replicas acknowledged the write in time, the batch is **not durable**: the sink does
/// not report it acknowledged (so the checkpoint does not move) but retries as for any
/// transient failure, and in the end fails with
/// [`ErrorKind::NotDurable`](redstream_core::ErrorKind::NotDurable). The retry knows from the
/// progress key that the batch is written, rewrites the same progress fields (so that `WAIT`
/// on its connection covers the batch) and waits again: it never writes the batch twice. That needs the progress key, so `durability` requires
/// [`exactly_once`](SinkConfig::exactly_once); [`SinkConfig::validate`] refuses the pair
/// otherwise.
///
/// `WAIT` makes a lost write less likely, not impossible: Redis replication is asynchronous,
/// and a failover can still promote a replica that had not received the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Durability {
    /// Replicas that must acknowledge each batch; at least 1.
    pub replicas: u32,
    /// How long to wait for them; must be positive (`WAIT` with 0 would block forever).
    #[serde(with = "redstream_core::serde_duration")]
    pub timeout: Duration,
}

impl Durability {
    /// Waits for `replicas` replicas, at most `timeout`.
    #[must_use]
    pub fn new(replicas: u32, timeout: Duration) -> Self {
        Self { replicas, timeout }
    }
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            stream: String::new(),
            required: true,
            max_batch_events: 1_000,
            max_batch_bytes: 16 * 1024 * 1024,
            max_stream_length: 0,
            retry: RetryPolicy::default(),
            batch_timeout: None,
            exactly_once: true,
            durability: None,
            connection: ConnectionOptions::default(),
        }
    }
}

impl fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let Self {
            id,
            stream,
            required,
            max_batch_events,
            max_batch_bytes,
            max_stream_length,
            retry,
            batch_timeout,
            exactly_once,
            durability,
            connection,
        } = self;
        // The connection's own Debug redacts the URL's password and the sentinels'.
        f.debug_struct("SinkConfig")
            .field("id", id)
            .field("stream", stream)
            .field("required", required)
            .field("max_batch_events", max_batch_events)
            .field("max_batch_bytes", max_batch_bytes)
            .field("max_stream_length", max_stream_length)
            .field("retry", retry)
            .field("batch_timeout", batch_timeout)
            .field("exactly_once", exactly_once)
            .field("durability", durability)
            .field("connection", connection)
            .finish()
    }
}

impl SinkConfig {
    /// The config's own fields in files, besides the connection's.
    const OWN_FIELDS: &'static [&'static str] = &[
        "id",
        "stream",
        "required",
        "max_batch_events",
        "max_batch_bytes",
        "max_stream_length",
        "retry",
        "batch_timeout",
        "exactly_once",
        "durability",
    ];

    /// Old names of connection fields a file may still use: `(old, new)`.
    const RENAMED: &'static [(&'static str, &'static str)] =
        &[("uri", "url"), ("send_timeout", "response_timeout")];

    /// A configuration for sink `id` writing to `stream` at `url` (any form of
    /// [`ConnectionOptions::url`]), with defaults elsewhere.
    #[must_use]
    pub fn new(id: impl Into<String>, url: impl Into<String>, stream: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            stream: stream.into(),
            connection: ConnectionOptions::new(url),
            ..Self::default()
        }
    }

    /// The connection options ([`connection`](Self::connection)).
    #[must_use]
    pub fn connection(&self) -> &ConnectionOptions {
        &self.connection
    }

    /// Sets [`connection`](Self::connection), URL and every connection setting at once.
    #[must_use]
    pub fn with_connection(mut self, connection: ConnectionOptions) -> Self {
        self.connection = connection;
        self
    }

    /// Sets the connection's [`url`](ConnectionOptions::url).
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.connection.url = url.into();
        self
    }

    /// Sets the connection's [`master_name`](ConnectionOptions::master_name) (Sentinel).
    #[must_use]
    pub fn with_master_name(mut self, name: impl Into<String>) -> Self {
        self.connection.master_name = Some(name.into());
        self
    }

    /// Sets the connection's [`sentinel_username`](ConnectionOptions::sentinel_username)
    /// (Sentinel).
    #[must_use]
    pub fn with_sentinel_username(mut self, username: impl Into<String>) -> Self {
        self.connection.sentinel_username = Some(username.into());
        self
    }

    /// Sets the connection's [`sentinel_password`](ConnectionOptions::sentinel_password)
    /// (Sentinel).
    #[must_use]
    pub fn with_sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.connection.sentinel_password = Some(password.into());
        self
    }

    /// Sets the connection's [`response_timeout`](ConnectionOptions::response_timeout): how
    /// long one attempt (the batch script's round trip, and a read) may take.
    #[must_use]
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.connection.response_timeout = timeout;
        self
    }

    /// The URL the sink connects to (the connection's [`url`](ConnectionOptions::url)).
    #[must_use]
    pub fn redis_url(&self) -> &str {
        &self.connection.url
    }

    /// Where Redis is and how to reach it, as core's connection module takes it: a copy of
    /// [`connection`](Self::connection).
    #[must_use]
    pub fn connection_options(&self) -> ConnectionOptions {
        self.connection.clone()
    }

    /// Which topology the URL names (a single server, a cluster, Sentinel), without
    /// connecting.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a URL that is none of the accepted forms.
    pub fn topology(&self) -> Result<Topology> {
        self.connection.topology()
    }

    /// Sets [`required`](Self::required).
    #[must_use]
    pub fn with_required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }

    /// Sets [`max_batch_events`](Self::max_batch_events).
    #[must_use]
    pub fn with_max_batch_events(mut self, max: usize) -> Self {
        self.max_batch_events = max;
        self
    }

    /// Sets [`max_batch_bytes`](Self::max_batch_bytes).
    #[must_use]
    pub fn with_max_batch_bytes(mut self, max: usize) -> Self {
        self.max_batch_bytes = max;
        self
    }

    /// Sets [`max_stream_length`](Self::max_stream_length) (0: no trimming).
    #[must_use]
    pub fn with_max_stream_length(mut self, max: usize) -> Self {
        self.max_stream_length = max;
        self
    }

    /// Sets [`retry`](Self::retry).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the response timeout under its old name.
    #[deprecated(
        note = "the sink's send_timeout is the connection's response_timeout: use \
                         with_response_timeout"
    )]
    #[must_use]
    pub fn with_send_timeout(self, timeout: Duration) -> Self {
        self.with_response_timeout(timeout)
    }

    /// Sets the connection's [`connect_timeout`](ConnectionOptions::connect_timeout).
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connection.connect_timeout = timeout;
        self
    }

    /// Sets [`batch_timeout`](Self::batch_timeout).
    #[must_use]
    pub fn with_batch_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.batch_timeout = timeout;
        self
    }

    /// Sets [`exactly_once`](Self::exactly_once).
    #[must_use]
    pub fn with_exactly_once(mut self, exactly_once: bool) -> Self {
        self.exactly_once = exactly_once;
        self
    }

    /// Sets [`durability`](Self::durability).
    #[must_use]
    pub fn with_durability(mut self, durability: Option<Durability>) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the connection's [`tls`](ConnectionOptions::tls) options.
    #[must_use]
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.connection.tls = tls;
        self
    }

    /// Reads a configuration from TOML text, expands `${NAME}` environment references in `url`
    /// and `sentinel_password`, and [validates](Self::validate) it.
    ///
    /// Unknown fields are rejected, so a typo does not silently fall back to a default. An
    /// unset variable is an error naming it.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let config: Self = parse_toml(text)?;
        config.expanded()
    }

    /// Reads a configuration from YAML text, as [`from_toml_str`](Self::from_toml_str) does
    /// from TOML. The fields are seed 003's `id`, `url` (or `uri`), `stream`, `required` and
    /// the others of this struct.
    pub fn from_yaml_str(text: &str) -> Result<Self> {
        let config: Self = parse_yaml(text)?;
        config.expanded()
    }

    /// Reads a configuration file: YAML for `.yaml` and `.yml`, TOML for `.toml`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read_config_file(path)?;
        match config_format(path)? {
            ConfigFormat::Toml => Self::from_toml_str(&text),
            ConfigFormat::Yaml => Self::from_yaml_str(&text),
        }
    }

    pub(crate) fn expanded(mut self) -> Result<Self> {
        let lookup = |name: &str| std::env::var(name).ok();
        let connection = &mut self.connection;
        connection.url = expand_env("url", &connection.url, lookup)?;
        if let Some(password) = &connection.sentinel_password {
            connection.sentinel_password = Some(expand_env("sentinel_password", password, lookup)?);
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks every field, naming the first invalid one in the error.
    pub fn validate(&self) -> Result<()> {
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(Error::invalid_input(
                "config field id",
                format!(
                    "must be non-empty and hold only letters, digits, '-', '_' and '.', got {:?}",
                    self.id
                ),
            ));
        }
        // The URL, positive timeouts, TLS options against the URL, Sentinel fields only with a
        // Sentinel URL; core's messages name the field and never show a password.
        self.connection.validate()?;
        if self.stream.is_empty() {
            return Err(Error::invalid_input(
                "config field stream",
                "must name the stream key, e.g. \"orders.events\"",
            ));
        }
        redstream_core::keys::validate_stream_name(&self.stream).map_err(|err| match err {
            Error::InvalidInput { reason, .. } => Error::invalid_input(
                "config field stream",
                format!("{reason}, got {:?}", self.stream),
            ),
            other => other,
        })?;
        if self.max_batch_events == 0 {
            return Err(Error::invalid_input(
                "config field max_batch_events",
                "must be at least 1",
            ));
        }
        if self.max_batch_bytes == 0 {
            return Err(Error::invalid_input(
                "config field max_batch_bytes",
                "must be at least 1",
            ));
        }
        if self.batch_timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::invalid_input(
                "config field batch_timeout",
                "must be positive (e.g. \"30s\") or absent",
            ));
        }
        if let Some(durability) = &self.durability {
            if durability.replicas == 0 {
                return Err(Error::invalid_input(
                    "config field durability.replicas",
                    "must be at least 1 (leave durability out to not wait)",
                ));
            }
            if durability.timeout.is_zero() {
                return Err(Error::invalid_input(
                    "config field durability.timeout",
                    "must be positive: WAIT with 0 blocks until the replicas answer",
                ));
            }
            if !self.exactly_once {
                return Err(Error::invalid_input(
                    "config field exactly_once",
                    "must be true when durability is set: a batch that WAIT finds not durable is \
                     already on the primary, and only the progress key lets its retry see that \
                     and wait again instead of writing the whole batch a second time",
                ));
            }
            if durability.timeout >= self.connection.response_timeout {
                return Err(Error::invalid_input(
                    "config field durability.timeout",
                    format!(
                        "must be shorter than response_timeout ({:?}), which bounds the WAIT \
                         reply",
                        self.connection.response_timeout
                    ),
                ));
            }
        }
        if !self.required && self.retry.max_attempts.is_none() && self.batch_timeout.is_none() {
            return Err(Error::invalid_input(
                "config field retry.max_attempts",
                "must be a number when required is false (or set batch_timeout): a sink that \
                 is not required holds the checkpoint while it retries a batch, and with \
                 unlimited attempts and no batch_timeout it would hold it for ever",
            ));
        }
        self.retry.validate()?;
        Ok(())
    }

    /// The `MAXLEN ~` bound, if trimming is on.
    pub(crate) fn trim_length(&self) -> Option<usize> {
        redstream_core::serde_max_len::trim_bound(self.max_stream_length)
    }
}

/// The embedded connection options, flat among the config's own fields, with the old names
/// `uri` and `send_timeout`; a field neither knows is refused with both lists (core's
/// [`embed`]).
fn connection_options<'de, D>(deserializer: D) -> Result<ConnectionOptions, D::Error>
where
    D: serde::Deserializer<'de>,
{
    embed::deserialize(
        deserializer,
        &Embedding::new(SinkConfig::OWN_FIELDS).with_renamed(SinkConfig::RENAMED),
    )
}

/// Deserializes TOML, naming the field at fault: `config field retry.max_delay: ...`.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    let de = toml::Deserializer::parse(text)
        .map_err(|err| Error::invalid_input("configuration (TOML)", err.message().to_owned()))?;
    serde_path_to_error::deserialize(de)
        .map_err(|err| field_error("TOML", err.path(), err.inner().message()))
}

/// Deserializes YAML, naming the field at fault.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        // serde_norway starts its message with the path of the mapping it was reading
        // (`sink: ...`); the path is given once, in front.
        let message = err.inner().to_string();
        let mapping = format!("{}: ", err.path());
        let message = message.strip_prefix(&mapping).unwrap_or(&message);
        field_error("YAML", err.path(), message)
    })
}

/// An error naming the field at fault: the path the reader tracked, completed with the path
/// inside the embedded connection fields, which the reader cannot see (core's
/// [`embed::error_path`]).
fn field_error(format: &str, path: &serde_path_to_error::Path, message: &str) -> Error {
    let (inner, reason) = embed::error_path(message);
    let mut path = path.to_string();
    if path == "." {
        path.clear();
    }
    let already_there = path == inner || path.ends_with(&format!(".{inner}"));
    if !inner.is_empty() && !already_there {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&inner);
    }
    let what = if path.is_empty() {
        format!("configuration ({format})")
    } else {
        format!("config field {path}")
    };
    Error::invalid_input(what, reason.to_owned())
}

/// The formats a configuration file may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConfigFormat {
    Toml,
    Yaml,
}

/// The format of a configuration file, from its extension.
pub(crate) fn config_format(path: &Path) -> Result<ConfigFormat> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => Ok(ConfigFormat::Toml),
        Some("yaml" | "yml") => Ok(ConfigFormat::Yaml),
        _ => Err(Error::invalid_input(
            format!("configuration file {}", path.display()),
            "must end in .yaml, .yml or .toml",
        )),
    }
}

/// Reads a configuration file, with its path in the error.
pub(crate) fn read_config_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|err| {
        Error::invalid_input(
            format!("configuration file {}", path.display()),
            format!("cannot be read: {err}"),
        )
    })
}

/// Replaces each `${NAME}` in `value` by `lookup(NAME)`; `$$` is a literal `$`.
pub(crate) fn expand_env(
    field: &'static str,
    value: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String> {
    let what = || format!("config field {field}");
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err(Error::invalid_input(what(), "has an unterminated ${...}"));
            };
            let name = &tail[..end];
            if name.is_empty() {
                return Err(Error::invalid_input(what(), "has an empty ${}"));
            }
            let Some(found) = lookup(name) else {
                return Err(Error::invalid_input(
                    what(),
                    format!("refers to the environment variable {name}, which is not set"),
                ));
            };
            out.push_str(&found);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;
