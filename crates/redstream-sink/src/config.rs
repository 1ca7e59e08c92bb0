//! The sink's configuration: what to write where, batch limits, retries, timeouts and TLS.

use std::fmt;
use std::time::Duration;

use redstream_core::{Error, RedactedUrl, Result, RetryPolicy, TlsOptions};
use serde::{Deserialize, Serialize};

/// Configuration of a [`RedisSink`](crate::RedisSink).
///
/// Build it with a struct literal and `..Default::default()`, with the `with_*` methods, or read
/// it from a TOML file with [`SinkConfig::from_toml_str`]. `Debug` redacts the password in `uri`.
///
/// ```toml
/// id = "orders-redis"
/// uri = "${REDIS_URI}"
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
    /// The Redis URL (`redis://` or `rediss://`), with credentials if needed. In a file it may
    /// hold `${NAME}` references to environment variables.
    pub uri: String,
    /// The stream key the events are appended to. Required.
    pub stream: String,
    /// Whether the sink gates checkpoints (default `true`). A sink with `required = false`
    /// never blocks a checkpoint: its failed batches are counted, logged and dropped.
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
    /// How long one attempt (the `MULTI`/`EXEC` round trip) may take (default 5 s).
    #[serde(with = "redstream_core::serde_duration")]
    pub send_timeout: Duration,
    /// How long connecting may take (default 5 s).
    #[serde(with = "redstream_core::serde_duration")]
    pub connect_timeout: Duration,
    /// TLS options, for `rediss://` URLs.
    pub tls: TlsOptions,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            uri: "redis://127.0.0.1:6379".to_owned(),
            stream: String::new(),
            required: true,
            max_batch_events: 1_000,
            max_batch_bytes: 16 * 1024 * 1024,
            max_stream_length: None,
            retry: RetryPolicy::default(),
            send_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            tls: TlsOptions::default(),
        }
    }
}

impl fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let Self {
            id,
            uri,
            stream,
            required,
            max_batch_events,
            max_batch_bytes,
            max_stream_length,
            retry,
            send_timeout,
            connect_timeout,
            tls,
        } = self;
        f.debug_struct("SinkConfig")
            .field("id", id)
            .field("uri", &RedactedUrl(uri))
            .field("stream", stream)
            .field("required", required)
            .field("max_batch_events", max_batch_events)
            .field("max_batch_bytes", max_batch_bytes)
            .field("max_stream_length", max_stream_length)
            .field("retry", retry)
            .field("send_timeout", send_timeout)
            .field("connect_timeout", connect_timeout)
            .field("tls", tls)
            .finish()
    }
}

impl SinkConfig {
    /// A configuration for sink `id` writing to `stream` at `uri`, with defaults elsewhere.
    #[must_use]
    pub fn new(id: impl Into<String>, uri: impl Into<String>, stream: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            uri: uri.into(),
            stream: stream.into(),
            ..Self::default()
        }
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

    /// Sets [`tls`](Self::tls).
    #[must_use]
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Reads a configuration from TOML text, expands `${NAME}` environment references in `uri`,
    /// and [validates](Self::validate) it.
    ///
    /// TOML, through the `toml` crate, because it is maintained and is already the format of
    /// Rust tooling; `serde_yaml` is archived. Unknown fields are rejected, so a typo does not
    /// silently fall back to a default. An unset variable is an error naming it.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let mut config: Self = toml::from_str(text).map_err(|err| {
            Error::invalid_input("sink configuration (TOML)", err.message().to_owned())
        })?;
        config.uri = expand_env("uri", &config.uri, |name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
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
        if !(self.uri.starts_with("redis://") || self.uri.starts_with("rediss://")) {
            return Err(Error::invalid_input(
                "config field uri",
                format!(
                    "must start with redis:// or rediss://, got {}",
                    RedactedUrl(&self.uri)
                ),
            ));
        }
        if self.stream.is_empty() {
            return Err(Error::invalid_input(
                "config field stream",
                "must name the stream key, e.g. \"{orders}.events\"",
            ));
        }
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
        self.retry.validate()?;
        self.tls.validate_for_url(&self.uri)?;
        Ok(())
    }

    /// The `MAXLEN ~` bound, if trimming is on.
    pub(crate) fn trim_length(&self) -> Option<u64> {
        self.max_stream_length.filter(|&n| n > 0)
    }
}

/// Replaces each `${NAME}` in `value` by `lookup(NAME)`; `$$` is a literal `$`.
fn expand_env(
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
    fn debug_redacts_the_password() {
        let config = SinkConfig::new("s", "redis://:hunter2@127.0.0.1:1", "x");
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
