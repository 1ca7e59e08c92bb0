//! The sink's configuration: what to write where, batch limits, retries, timeouts and TLS.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use redstream_core::connection::{ConnectionOptions, Topology};
use redstream_core::{Error, RedactedUrl, Result, RetryPolicy, TlsOptions};
use serde::{Deserialize, Serialize};

/// Configuration of a [`RedisSink`](crate::RedisSink).
///
/// Build it with a struct literal and `..Default::default()`, with the `with_*` methods, or read
/// it from a TOML file with [`SinkConfig::from_toml_str`]. `Debug` redacts the password in the
/// URL and never shows `sentinel_password`.
///
/// The connection fields are named as in core's
/// [`ConnectionOptions`](redstream_core::connection::ConnectionOptions): `url`,
/// `connect_timeout`, `response_timeout` (the sink's `send_timeout`), `tls`, and for Sentinel
/// `master_name`, `sentinel_username`, `sentinel_password`. `uri`, the URL's name in earlier
/// versions, is still read as an alias of `url` (giving both is refused).
///
/// ```toml
/// id = "orders-redis"
/// url = "${REDIS_URL}"
/// stream = "{orders}.events"
/// required = true
/// max_batch_events = 1000
/// max_stream_length = 1000000   # MAXLEN ~; 0 or absent: no trimming
/// send_timeout = "5s"
///
/// [retry]
/// initial_delay = "100ms"
/// max_attempts = "unlimited"
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// The sink's identifier: a metric label and part of its progress key. Required; letters,
    /// digits, `-`, `_` and `.` only.
    pub id: String,
    /// The Redis URL, with credentials if needed: every form core's
    /// [`ConnectionOptions::url`](redstream_core::connection::ConnectionOptions::url) accepts,
    /// `redis://host:6379/0`, `rediss://...`, `redis-cluster://h1:6379,h2:6379` and
    /// `redis-sentinel://s1:26379,s2:26379/mymaster` among them. Default
    /// `redis://127.0.0.1:6379`. In a file it may hold `${NAME}` references to environment
    /// variables, and may be spelt `uri` (the name earlier versions used; not both).
    #[serde(default = "String::new")]
    pub url: String,
    /// The URL's name in earlier versions, kept so that files and code written for them work:
    /// when not empty (the default is empty), it is the URL, in place of [`url`](Self::url).
    /// A file giving both is refused; in code, setting both to different URLs is refused by
    /// [`validate`](Self::validate) ([`with_url`](Self::with_url) clears `uri`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uri: String,
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
    /// Trims the stream with `XADD ... MAXLEN ~ n` when set; `None` or `Some(0)` (the default)
    /// never trims.
    pub max_stream_length: Option<u64>,
    /// How failed batches are retried. Only transient failures are retried.
    pub retry: RetryPolicy,
    /// How long one attempt (the batch script's round trip, and a read) may take (default 5 s):
    /// the connection's response timeout. Files may call it `response_timeout`, core's name
    /// (not both).
    #[serde(with = "redstream_core::serde_duration", alias = "response_timeout")]
    pub send_timeout: Duration,
    /// How long connecting may take (default 5 s).
    #[serde(with = "redstream_core::serde_duration")]
    pub connect_timeout: Duration,
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
    /// TLS options, for the TLS URLs (`rediss://`, `rediss-cluster://`, `rediss-sentinel://`).
    pub tls: TlsOptions,
    /// Sentinel: the name the sentinels know the master by, when the `redis-sentinel://` URL
    /// does not end with it.
    pub master_name: Option<String>,
    /// Sentinel: the user to authenticate to the sentinels with.
    pub sentinel_username: Option<String>,
    /// Sentinel: the sentinels' own password (the URL's is the data nodes'). Never shown by
    /// `Debug` nor in errors. In a file it may hold `${NAME}` references.
    pub sentinel_password: Option<String>,
}

/// The default Redis URL.
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

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
            url: DEFAULT_URL.to_owned(),
            uri: String::new(),
            stream: String::new(),
            required: true,
            max_batch_events: 1_000,
            max_batch_bytes: 16 * 1024 * 1024,
            max_stream_length: None,
            retry: RetryPolicy::default(),
            send_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            batch_timeout: None,
            exactly_once: true,
            durability: None,
            tls: TlsOptions::default(),
            master_name: None,
            sentinel_username: None,
            sentinel_password: None,
        }
    }
}

impl fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let Self {
            id,
            url,
            uri,
            stream,
            required,
            max_batch_events,
            max_batch_bytes,
            max_stream_length,
            retry,
            send_timeout,
            connect_timeout,
            batch_timeout,
            exactly_once,
            durability,
            tls,
            master_name,
            sentinel_username,
            sentinel_password,
        } = self;
        f.debug_struct("SinkConfig")
            .field("id", id)
            .field("url", &RedactedUrl(url))
            .field("uri", &RedactedUrl(uri))
            .field("stream", stream)
            .field("required", required)
            .field("max_batch_events", max_batch_events)
            .field("max_batch_bytes", max_batch_bytes)
            .field("max_stream_length", max_stream_length)
            .field("retry", retry)
            .field("send_timeout", send_timeout)
            .field("connect_timeout", connect_timeout)
            .field("batch_timeout", batch_timeout)
            .field("exactly_once", exactly_once)
            .field("durability", durability)
            .field("tls", tls)
            .field("master_name", master_name)
            .field("sentinel_username", sentinel_username)
            .field(
                "sentinel_password",
                &sentinel_password.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

impl SinkConfig {
    /// A configuration for sink `id` writing to `stream` at `url` (any form of
    /// [`url`](Self::url)), with defaults elsewhere.
    #[must_use]
    pub fn new(id: impl Into<String>, url: impl Into<String>, stream: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            url: url.into(),
            stream: stream.into(),
            ..Self::default()
        }
    }

    /// Sets [`url`](Self::url) (and clears the old [`uri`](Self::uri), which would replace it).
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self.uri.clear();
        self
    }

    /// Sets [`master_name`](Self::master_name) (Sentinel).
    #[must_use]
    pub fn with_master_name(mut self, name: impl Into<String>) -> Self {
        self.master_name = Some(name.into());
        self
    }

    /// Sets [`sentinel_username`](Self::sentinel_username) (Sentinel).
    #[must_use]
    pub fn with_sentinel_username(mut self, username: impl Into<String>) -> Self {
        self.sentinel_username = Some(username.into());
        self
    }

    /// Sets [`sentinel_password`](Self::sentinel_password) (Sentinel).
    #[must_use]
    pub fn with_sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.sentinel_password = Some(password.into());
        self
    }

    /// Sets [`send_timeout`](Self::send_timeout), under core's name for it.
    #[must_use]
    pub fn with_response_timeout(self, timeout: Duration) -> Self {
        self.with_send_timeout(timeout)
    }

    /// The URL the sink connects to: [`uri`](Self::uri) when it is set (code written for
    /// earlier versions), else [`url`](Self::url).
    #[must_use]
    pub fn redis_url(&self) -> &str {
        if !self.uri.is_empty() {
            &self.uri
        } else if !self.url.is_empty() {
            &self.url
        } else {
            DEFAULT_URL
        }
    }

    /// The name of the field the URL was taken from, for errors.
    fn url_field(&self) -> &'static str {
        if self.uri.is_empty() { "url" } else { "uri" }
    }

    /// Where Redis is and how to reach it, as core's connection module takes it: the URL,
    /// `connect_timeout`, `send_timeout` as the response timeout, `tls` and the Sentinel
    /// fields.
    #[must_use]
    pub fn connection_options(&self) -> ConnectionOptions {
        ConnectionOptions {
            url: self.redis_url().to_owned(),
            connect_timeout: self.connect_timeout,
            response_timeout: self.send_timeout,
            tls: self.tls.clone(),
            master_name: self.master_name.clone(),
            sentinel_username: self.sentinel_username.clone(),
            sentinel_password: self.sentinel_password.clone(),
        }
    }

    /// Which topology the URL names (a single server, a cluster, Sentinel), without
    /// connecting.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a URL that is none of the accepted forms.
    pub fn topology(&self) -> Result<Topology> {
        self.connection_options().topology()
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

    /// Sets [`max_stream_length`](Self::max_stream_length).
    #[must_use]
    pub fn with_max_stream_length(mut self, max: Option<u64>) -> Self {
        self.max_stream_length = max;
        self
    }

    /// Sets [`retry`](Self::retry).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets [`send_timeout`](Self::send_timeout).
    #[must_use]
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
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

    /// Sets [`tls`](Self::tls).
    #[must_use]
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Reads a configuration from TOML text, expands `${NAME}` environment references in `url`
    /// (or `uri`) and `sentinel_password`,
    /// and [validates](Self::validate) it.
    ///
    /// Unknown fields are rejected, so a typo does not silently fall back to a default. An
    /// unset variable is an error naming it.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let config: Self = parse_toml(text)?;
        config.expanded()
    }

    /// Reads a configuration from YAML text, as [`from_toml_str`](Self::from_toml_str) does
    /// from TOML. The fields are seed 003's `id`, `uri` (or `url`), `stream`, `required` and
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
        // A file leaves `url` empty when it does not give it.
        if !self.url.is_empty() && !self.uri.is_empty() {
            return Err(Error::invalid_input(
                "config field uri",
                format!(
                    "is the old name of url, and both are given ({} and {}): give the URL once, \
                     as url",
                    RedactedUrl(&self.url),
                    RedactedUrl(&self.uri)
                ),
            ));
        }
        if self.url.is_empty() {
            DEFAULT_URL.clone_into(&mut self.url);
        }
        let lookup = |name: &str| std::env::var(name).ok();
        self.url = expand_env("url", &self.url, lookup)?;
        self.uri = expand_env("uri", &self.uri, lookup)?;
        if let Some(password) = &self.sentinel_password {
            self.sentinel_password = Some(expand_env("sentinel_password", password, lookup)?);
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
        if !self.uri.is_empty()
            && !self.url.is_empty()
            && self.url != DEFAULT_URL
            && self.url != self.uri
        {
            return Err(Error::invalid_input(
                "config field uri",
                format!(
                    "is the old name of url, and both are set, to different URLs ({} and {}): \
                     set url only",
                    RedactedUrl(&self.url),
                    RedactedUrl(&self.uri)
                ),
            ));
        }
        self.validate_connection()?;
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
        if self.send_timeout.is_zero() {
            return Err(Error::invalid_input(
                "config field send_timeout",
                "must be positive (e.g. \"5s\")",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::invalid_input(
                "config field connect_timeout",
                "must be positive (e.g. \"5s\")",
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
            if durability.timeout >= self.send_timeout {
                return Err(Error::invalid_input(
                    "config field durability.timeout",
                    format!(
                        "must be shorter than send_timeout ({:?}), which bounds the WAIT reply",
                        self.send_timeout
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

    /// The connection fields, checked by core ([`ConnectionOptions::validate`]); an error about
    /// the URL names the field it was given in (`url` or `uri`), and `response_timeout` is the
    /// sink's `send_timeout`.
    fn validate_connection(&self) -> Result<()> {
        let field = self.url_field();
        self.connection_options()
            .validate()
            .map_err(|err| match err {
                Error::InvalidInput { what, reason } => {
                    let what = match what.as_ref() {
                        "config field url" => format!("config field {field}"),
                        "config field response_timeout" => "config field send_timeout".to_owned(),
                        _ => what.into_owned(),
                    };
                    Error::invalid_input(what, reason)
                }
                other => other,
            })
    }

    /// The `MAXLEN ~` bound, if trimming is on.
    pub(crate) fn trim_length(&self) -> Option<u64> {
        self.max_stream_length.filter(|&n| n > 0)
    }
}

/// Deserializes TOML, naming the field at fault: `config field retry.max_delay: ...`.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    let de = toml::Deserializer::parse(text)
        .map_err(|err| Error::invalid_input("configuration (TOML)", err.message().to_owned()))?;
    serde_path_to_error::deserialize(de).map_err(|err| field_error("TOML", &err))
}

/// Deserializes YAML, naming the field at fault.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| field_error("YAML", &err))
}

fn field_error<E: fmt::Display>(format: &str, err: &serde_path_to_error::Error<E>) -> Error {
    let path = err.path().to_string();
    let what = if path == "." {
        format!("configuration ({format})")
    } else {
        format!("config field {path}")
    };
    let mut reason = err.inner().to_string();
    if reason.contains("duplicate field `send_timeout`") {
        reason.push_str(": `response_timeout` is another name of `send_timeout`; give it once");
    }
    Error::invalid_input(what, reason)
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
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "REDIS_URI").then(|| "redis://:secret@127.0.0.1:6379".to_owned())
    }

    #[test]
    fn expands_variables() {
        let got = expand_env("uri", "${REDIS_URI}/0", env).unwrap();
        assert_eq!(got, "redis://:secret@127.0.0.1:6379/0");
        assert_eq!(expand_env("uri", "a$$b$c", env).unwrap(), "a$b$c");
    }

    #[test]
    fn unset_or_malformed_variables_name_the_field() {
        let err = expand_env("uri", "${NOPE}", env).unwrap_err();
        assert!(err.to_string().contains("config field uri"), "{err}");
        assert!(err.to_string().contains("NOPE"), "{err}");
        assert!(expand_env("uri", "${REDIS_URI", env).is_err());
        assert!(expand_env("uri", "${}", env).is_err());
    }

    #[test]
    fn parses_toml_with_defaults() {
        let config = SinkConfig::from_toml_str(
            r#"
            id = "orders-redis"
            uri = "redis://127.0.0.1:6379"
            stream = "{orders}.events"
            max_stream_length = 100
            send_timeout = "250ms"
            [retry]
            max_attempts = "unlimited"
            "#,
        )
        .unwrap();
        assert!(config.required);
        assert_eq!(config.max_batch_events, 1_000);
        assert_eq!(config.trim_length(), Some(100));
        assert_eq!(config.send_timeout, Duration::from_millis(250));
        assert_eq!(config.retry.max_attempts, None);
    }

    #[test]
    fn rejects_invalid_fields_by_name() {
        let base = SinkConfig::new("s", "redis://127.0.0.1:1", "x");
        base.validate().unwrap();
        let cases = [
            (
                SinkConfig {
                    id: String::new(),
                    ..base.clone()
                },
                "id",
            ),
            (
                SinkConfig {
                    id: "a b".into(),
                    ..base.clone()
                },
                "id",
            ),
            (
                SinkConfig {
                    uri: "http://x".into(),
                    ..base.clone()
                },
                "uri",
            ),
            (
                SinkConfig {
                    stream: String::new(),
                    ..base.clone()
                },
                "stream",
            ),
            (
                SinkConfig {
                    stream: "orders events".into(),
                    ..base.clone()
                },
                "stream",
            ),
            (base.clone().with_max_batch_events(0), "max_batch_events"),
            (base.clone().with_max_batch_bytes(0), "max_batch_bytes"),
            (
                base.clone().with_send_timeout(Duration::ZERO),
                "send_timeout",
            ),
            (
                base.clone().with_connect_timeout(Duration::ZERO),
                "connect_timeout",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert!(
                err.to_string().contains(&format!("config field {field}")),
                "{field}: {err}"
            );
        }
        let err = SinkConfig::from_toml_str("id = \"s\"\nstrem = \"x\"").unwrap_err();
        assert!(err.to_string().contains("strem"), "{err}");
    }

    #[test]
    fn parses_yaml_with_durability_and_timeouts() {
        let config = SinkConfig::from_yaml_str(
            "id: orders-redis\nuri: redis://127.0.0.1:6379\nstream: orders.events\nrequired: false\n\
             batch_timeout: 30s\ndurability:\n  replicas: 1\n  timeout: 100ms\n",
        )
        .unwrap();
        assert!(!config.required);
        assert!(config.exactly_once);
        assert_eq!(config.batch_timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            config.durability,
            Some(Durability::new(1, Duration::from_millis(100)))
        );
        let err = SinkConfig::from_yaml_str("id: s\nstrem: x\n").unwrap_err();
        assert!(err.to_string().contains("strem"), "{err}");
        let err = SinkConfig::from_yaml_str("id: s\nstream: x\nbatch_timeout: 10\n").unwrap_err();
        assert!(err.to_string().contains("batch_timeout"), "{err}");
    }

    #[test]
    fn rejects_bad_durability_and_batch_timeout() {
        let base = SinkConfig::new("s", "redis://127.0.0.1:1", "x");
        let cases = [
            (
                base.clone()
                    .with_durability(Some(Durability::new(0, Duration::from_secs(1)))),
                "durability.replicas",
            ),
            (
                base.clone()
                    .with_durability(Some(Durability::new(1, Duration::ZERO))),
                "durability.timeout",
            ),
            (
                base.clone().with_batch_timeout(Some(Duration::ZERO)),
                "batch_timeout",
            ),
            // A sink that is not required and retries for ever would hold the checkpoint.
            (
                base.clone()
                    .with_required(false)
                    .with_retry(RetryPolicy::unlimited()),
                "retry.max_attempts",
            ),
            // A NotDurable retry without the progress key would write the batch again.
            (
                base.clone()
                    .with_exactly_once(false)
                    .with_durability(Some(Durability::new(1, Duration::from_millis(100)))),
                "exactly_once",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert!(
                err.to_string().contains(&format!("config field {field}")),
                "{field}: {err}"
            );
        }
    }

    #[test]
    fn an_optional_sink_may_retry_for_ever_only_within_a_batch_timeout() {
        let optional = SinkConfig::new("s", "redis://127.0.0.1:1", "x")
            .with_required(false)
            .with_retry(RetryPolicy::unlimited());
        optional.validate().unwrap_err();
        optional
            .clone()
            .with_batch_timeout(Some(Duration::from_secs(30)))
            .validate()
            .unwrap();
        optional.with_required(true).validate().unwrap();
    }

    #[test]
    fn config_files_are_read_by_extension() {
        let dir =
            std::env::temp_dir().join(format!("redstream-sink-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = dir.join("sink.yaml");
        std::fs::write(&yaml, "id: a\nstream: s\n").unwrap();
        assert_eq!(SinkConfig::from_file(&yaml).unwrap().id, "a");
        let toml = dir.join("sink.toml");
        std::fs::write(&toml, "id = \"b\"\nstream = \"s\"\n").unwrap();
        assert_eq!(SinkConfig::from_file(&toml).unwrap().id, "b");
        let json = dir.join("sink.json");
        std::fs::write(&json, "{}").unwrap();
        let err = SinkConfig::from_file(&json).unwrap_err();
        assert!(err.to_string().contains(".yaml"), "{err}");
        let err = SinkConfig::from_file(dir.join("missing.yaml")).unwrap_err();
        assert!(err.to_string().contains("cannot be read"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every section refuses a field it does not know, naming it, in YAML and TOML alike: a
    /// misspelled `ca_file` under `tls:` must not fall back to the system's roots, nor a
    /// misspelled retry bound to the default one.
    #[test]
    fn every_section_refuses_unknown_fields() {
        let base = "id: s\nuri: rediss://127.0.0.1:6379\nstream: x\n";
        let yaml_cases = [
            ("tls:\n  ca_file: /etc/redis/ca.pem\n", "ca_file"),
            ("retry:\n  max_atempts: 3\n", "max_atempts"),
            (
                "retry:\n  initial_delay: 10ms\n  maxdelay: 1s\n",
                "maxdelay",
            ),
            (
                "durability:\n  replicas: 1\n  timeout: 1s\n  replica: 2\n",
                "replica",
            ),
            ("max_stream_lenght: 10\n", "max_stream_lenght"),
        ];
        for (section, field) in yaml_cases {
            let err = SinkConfig::from_yaml_str(&format!("{base}{section}")).unwrap_err();
            assert_eq!(err.kind(), redstream_core::ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains(field), "{field}: {err}");
            assert!(err.to_string().contains("unknown field"), "{field}: {err}");
        }
        let base = "id = \"s\"\nuri = \"rediss://127.0.0.1:6379\"\nstream = \"x\"\n";
        let toml_cases = [
            ("[tls]\nca_file = \"/etc/redis/ca.pem\"\n", "ca_file"),
            ("[retry]\nmax_atempts = 3\n", "max_atempts"),
            (
                "[durability]\nreplicas = 1\ntimeout = \"1s\"\nreplica = 2\n",
                "replica",
            ),
        ];
        for (section, field) in toml_cases {
            let err = SinkConfig::from_toml_str(&format!("{base}{section}")).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
            assert!(err.to_string().contains("unknown field"), "{field}: {err}");
        }
        // The fields spelled right are taken.
        let config = SinkConfig::from_yaml_str(
            "id: s\nuri: rediss://127.0.0.1:6379\nstream: x\ntls:\n  ca_cert_path: /etc/ca.pem\n\
             retry:\n  max_attempts: 3\n",
        )
        .unwrap();
        assert_eq!(
            config.tls.ca_cert_path.as_deref(),
            Some(Path::new("/etc/ca.pem"))
        );
        assert_eq!(config.retry.max_attempts, Some(3));
    }

    #[test]
    fn debug_redacts_the_password() {
        let config = SinkConfig::new("s", "redis://:hunter2@127.0.0.1:1", "x");
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2"), "{text}");
        // The old field, and the sentinels' password.
        let config = SinkConfig {
            uri: "redis-sentinel://u:hunter3@s1:26379/mymaster".into(),
            sentinel_password: Some("hunter4".into()),
            ..SinkConfig::new("s", DEFAULT_URL, "x")
        };
        config.validate().unwrap();
        let text = format!("{config:?}");
        for secret in ["hunter3", "hunter4"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    /// `url` is the URL's name, `uri` its old one: both read, in files and in code; both at
    /// once refused, in files and (with different URLs) in code.
    #[test]
    fn url_and_its_old_name_uri() {
        let yaml = SinkConfig::from_yaml_str(
            "id: s
url: redis://h:1
stream: x
",
        )
        .unwrap();
        assert_eq!(yaml.redis_url(), "redis://h:1");
        let old = SinkConfig::from_yaml_str(
            "id: s
uri: redis://h:2
stream: x
",
        )
        .unwrap();
        assert_eq!(old.redis_url(), "redis://h:2");
        assert_eq!(old.connection_options().url, "redis://h:2");
        let toml =
            SinkConfig::from_toml_str("id = \"s\"\nuri = \"redis://h:3\"\nstream = \"x\"").unwrap();
        assert_eq!(toml.redis_url(), "redis://h:3");
        let err = SinkConfig::from_yaml_str(
            "id: s\nurl: redis://h:1\nuri: redis://:secret@h:2\nstream: x\n",
        )
        .unwrap_err();
        assert_eq!(err.kind(), redstream_core::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("old name of url"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        let err = SinkConfig::from_toml_str(
            "id = \"s\"\nurl = \"redis://h:1\"\nuri = \"redis://h:2\"\nstream = \"x\"",
        )
        .unwrap_err();
        assert!(err.to_string().contains("old name of url"), "{err}");

        // A file's `uri` replaced in code, as `redstream sink --url` does: the new one is used.
        let mut replaced = old.clone();
        replaced.uri = "redis://h:7".into();
        replaced.validate().unwrap();
        assert_eq!(replaced.redis_url(), "redis://h:7");
        // In code: the old field alone is the URL (code written for earlier versions).
        let code = SinkConfig {
            uri: "redis://h:4".into(),
            ..SinkConfig::new("s", DEFAULT_URL, "x")
        };
        code.validate().unwrap();
        assert_eq!(code.redis_url(), "redis://h:4");
        let same = SinkConfig {
            uri: "redis://h:4".into(),
            ..SinkConfig::new("s", "redis://h:4", "x")
        };
        same.validate().unwrap();
        let both = SinkConfig {
            uri: "redis://:secret@h:4".into(),
            ..SinkConfig::new("s", "redis://h:5", "x")
        };
        let err = both.validate().unwrap_err();
        assert!(err.to_string().contains("config field uri"), "{err}");
        assert!(err.to_string().contains("set url only"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        assert_eq!(both.with_url("redis://h:6").redis_url(), "redis://h:6");
        // `response_timeout` is core's name of `send_timeout`.
        let config =
            SinkConfig::from_yaml_str("id: s\nstream: x\nresponse_timeout: 250ms\n").unwrap();
        assert_eq!(config.send_timeout, Duration::from_millis(250));
        let err = SinkConfig::from_yaml_str(
            "id: s\nstream: x\nresponse_timeout: 250ms\nsend_timeout: 1s\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("send_timeout"), "{err}");
    }

    /// Every URL form core accepts, and the Sentinel settings, in files and in code.
    #[test]
    fn cluster_and_sentinel_urls_and_settings() {
        for (url, topology) in [
            ("redis://127.0.0.1:6379/0", Topology::Single),
            ("rediss://127.0.0.1:6379", Topology::Single),
            (
                "redis-cluster://10.0.0.1:6379,10.0.0.2:6379",
                Topology::Cluster,
            ),
            (
                "redis-sentinel://s1:26379,s2:26379/mymaster",
                Topology::Sentinel,
            ),
        ] {
            let config = SinkConfig::new("s", url, "x");
            config.validate().unwrap();
            assert_eq!(config.topology().unwrap(), topology, "{url}");
        }
        // `${NAME}` is expanded in sentinel_password: PATH is set wherever tests run.
        let path = std::env::var("PATH").unwrap();
        let config = SinkConfig::from_yaml_str(
            "id: s\nurl: redis-sentinel://s1:26379,s2:26379\nstream: x\nmaster_name: mymaster\n\
             sentinel_username: watcher\nsentinel_password: ${PATH}\n",
        )
        .unwrap();
        let options = config.connection_options();
        assert_eq!(options.master_name.as_deref(), Some("mymaster"));
        assert_eq!(options.sentinel_username.as_deref(), Some("watcher"));
        assert_eq!(options.sentinel_password.as_deref(), Some(path.as_str()));
        assert!(!format!("{config:?}").contains(&path));
        let config = SinkConfig::from_toml_str(
            "id = \"s\"\nurl = \"redis-sentinel://s1:26379\"\nstream = \"x\"\n\
             master_name = \"mymaster\"\nsentinel_password = \"pw\"\n",
        )
        .unwrap();
        assert_eq!(config.topology().unwrap(), Topology::Sentinel);
        let code = SinkConfig::new("s", "redis-sentinel://s1:26379", "x")
            .with_master_name("mymaster")
            .with_sentinel_username("watcher")
            .with_sentinel_password("pw");
        code.validate().unwrap();
        // Sentinel settings without a Sentinel URL, and unknown forms, are refused by name.
        let err = SinkConfig::new("s", "redis://h:1", "x")
            .with_master_name("mymaster")
            .validate()
            .unwrap_err();
        assert!(
            err.to_string().contains("config field master_name"),
            "{err}"
        );
        let err = SinkConfig::from_yaml_str("id: s\nurl: http://h\nstream: x\n").unwrap_err();
        assert!(err.to_string().contains("config field url"), "{err}");
        let err =
            SinkConfig::from_yaml_str("id: s\nstream: x\nsentinel_pasword: pw\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        assert!(err.to_string().contains("sentinel_pasword"), "{err}");
        assert!(!err.to_string().contains(": pw"), "{err}");
    }
}
