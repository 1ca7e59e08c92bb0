//! Configuration: [`RedisConfig`] (the seed's fields) and [`TransportOptions`] (everything else).
//!
//! The split exists so that `RedisConfig { url, stream_prefix, consumer_group, consumer_name,
//! max_stream_length, backpressure }` — a struct literal listing exactly those six fields, as
//! existing code writes it — keeps compiling: a seventh field would break every such literal.
//! Tuning knobs live in [`TransportOptions`], given to
//! [`RedisTransport::with_options`](crate::RedisTransport::with_options).
//!
//! # Connection settings
//!
//! The URL is `RedisConfig::url`, where the seed puts it; everything else about the connection
//! is core's [`ConnectionSettings`] (core's `ConnectionOptions` without the URL), embedded in
//! [`TransportOptions::connection`] and flattened. So a transport's options file names these
//! fields as the state store's and the sink's do, at the top level: `connect_timeout`,
//! `response_timeout`, `tls`, `master_name`, `sentinel_username`, `sentinel_password`; and
//! [`TransportOptions::connection_options`] joins them with the URL for core's `connect`.
//! Embedding core's struct, rather than keeping copies of its fields here with a conversion,
//! means a setting core adds (or a default it changes) reaches the transport without an edit
//! here, and no conversion can forget a field. The nested `sentinel: { master_name, username,
//! password }` section of earlier versions is gone: a file that still has it is refused with
//! the new names.
//!
//! # Stream lengths
//!
//! `max_stream_length` (and each value of `max_stream_lengths`) is a `usize` with the meaning
//! it has in every redstream config (core's [`serde_max_len`](redstream_core::serde_max_len)):
//! 0 is no limit, `n` trims with `XADD ... MAXLEN ~ n`; in a file, absent or `null` is 0.
//! `usize` keeps the seed's literal `max_stream_length: 10000` compiling.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use redstream_core::connection::embed::{self, Embedding};
use redstream_core::connection::{ConnectionOptions, ConnectionSettings, Topology};
use redstream_core::keys::KeyLayout;
use redstream_core::{
    BackpressureConfig, CircuitBreakerConfig, Error, EventLimits, RedactedUrl, Result, TlsOptions,
};
use serde::{Deserialize, Serialize};

/// Where to connect and how to name streams, groups and consumers.
///
/// `url` accepts every form of core's [`connection`](redstream_core::connection) module:
/// `redis://[[user]:password@]host[:port][/db]`, `rediss://` for TLS,
/// `redis+unix:///path/to/socket[?db=N]`, a Redis Cluster as
/// `redis-cluster://[user:password@]h1:6379,h2:6379` (`rediss-cluster://` for TLS), and a
/// Sentinel-managed master as `redis-sentinel://[user:password@]s1:26379,s2:26379/mymaster[/db]`
/// (`rediss-sentinel://`). The Sentinel settings the URL cannot hold (the master name when the
/// URL does not end with it, the sentinels' own user and password) are fields of
/// [`TransportOptions::connection`]. `Debug` never shows the password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// The server URL: a single server, a cluster or a Sentinel group (see above).
    pub url: String,
    /// Streams of event types are named `{stream_prefix}:{event_type}` (`events:order.created`;
    /// see [`TransportOptions::key_layout`] for Redis Cluster), the dead-letter stream
    /// `{stream_prefix}:dlq`. May be empty: event types are then stream names as they are.
    pub stream_prefix: String,
    /// The consumer group this transport reads as.
    pub consumer_group: String,
    /// This consumer's name within the group. Must be unique among live consumers of a group.
    pub consumer_name: String,
    /// Approximate cap on each stream's length (`XADD ... MAXLEN ~ N`); 0 means unlimited. In
    /// a file, absent or `null` is 0 (one meaning in every config: core's
    /// [`serde_max_len`](redstream_core::serde_max_len)).
    #[serde(deserialize_with = "redstream_core::serde_max_len::deserialize")]
    pub max_stream_length: usize,
    /// How the queue between reading and handling behaves when handlers fall behind. With the
    /// `Block` strategy the readers leave a tenth of it (of 10 places or more) to the claim
    /// passes, so that failed entries come back while a backlog is read.
    pub backpressure: BackpressureConfig,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            stream_prefix: "events".to_owned(),
            consumer_group: "redstream".to_owned(),
            consumer_name: default_consumer_name(),
            max_stream_length: 0,
            backpressure: BackpressureConfig::default(),
        }
    }
}

/// `{hostname}-{pid}`: unique among processes, stable for one process.
fn default_consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "consumer".to_owned());
    format!("{host}-{}", std::process::id())
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &RedactedUrl(&self.url))
            .field("stream_prefix", &self.stream_prefix)
            .field("consumer_group", &self.consumer_group)
            .field("consumer_name", &self.consumer_name)
            .field("max_stream_length", &self.max_stream_length)
            .field("backpressure", &self.backpressure)
            .finish()
    }
}

impl RedisConfig {
    /// Sets the URL.
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Sets the stream prefix.
    #[must_use]
    pub fn with_stream_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.stream_prefix = prefix.into();
        self
    }

    /// Sets the consumer group.
    #[must_use]
    pub fn with_consumer_group(mut self, group: impl Into<String>) -> Self {
        self.consumer_group = group.into();
        self
    }

    /// Sets the consumer name.
    #[must_use]
    pub fn with_consumer_name(mut self, name: impl Into<String>) -> Self {
        self.consumer_name = name.into();
        self
    }

    /// Sets the approximate maximum stream length (0 = unlimited).
    #[must_use]
    pub fn with_max_stream_length(mut self, len: usize) -> Self {
        self.max_stream_length = len;
        self
    }

    /// Sets the backpressure configuration.
    #[must_use]
    pub fn with_backpressure(mut self, backpressure: BackpressureConfig) -> Self {
        self.backpressure = backpressure;
        self
    }

    /// Checks every field; the error names the field and says what is wrong.
    pub fn validate(&self) -> Result<()> {
        validate_url(&self.url)?;
        crate::keys::validate_prefix("stream_prefix", &self.stream_prefix)?;
        validate_name("consumer_group", &self.consumer_group, &[])?;
        validate_name("consumer_name", &self.consumer_name, &[])?;
        self.backpressure.validate()
    }
}

fn validate_url(url: &str) -> Result<()> {
    let field = || format!("config field url ({})", RedactedUrl(url));
    let scheme = url.split("://").next().unwrap_or_default();
    if !url.contains("://")
        || !matches!(
            scheme,
            "redis"
                | "rediss"
                | "redis+unix"
                | "unix"
                | "redis-cluster"
                | "rediss-cluster"
                | "redis-sentinel"
                | "rediss-sentinel"
        )
    {
        return Err(Error::invalid_input(
            field(),
            "expected redis://, rediss:// or redis+unix:// followed by the server address \
             (or redis-cluster://h1:6379,h2:6379, redis-sentinel://s1:26379,s2:26379/mymaster)",
        ));
    }
    if scheme.contains("-cluster") || scheme.contains("-sentinel") {
        // The master name may come from `TransportOptions::connection`: the whole URL is checked
        // with the options, by core, at connect.
        return Ok(());
    }
    redis::IntoConnectionInfo::into_connection_info(url).map_err(|err| {
        // redis-rs's message does not echo the URL; keep it that way.
        Error::invalid_input(
            field(),
            format!("not a valid Redis URL: {}", err.kind_str()),
        )
    })?;
    Ok(())
}

trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for redis::RedisError {
    fn kind_str(&self) -> String {
        self.detail()
            .map_or_else(|| self.category().to_owned(), str::to_owned)
    }
}

/// Names that become part of Redis keys or of group/consumer names: non-empty, at most 200
/// bytes, no whitespace or control characters, and none of `forbidden`.
pub(crate) fn validate_name(field: &str, value: &str, forbidden: &[char]) -> Result<()> {
    let what = || format!("config field {field} ({value:?})");
    if value.is_empty() {
        return Err(Error::invalid_input(
            format!("config field {field}"),
            "must not be empty",
        ));
    }
    if value.len() > 200 {
        return Err(Error::invalid_input(
            format!("config field {field}"),
            format!("is {} bytes; at most 200 are allowed", value.len()),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || forbidden.contains(c))
    {
        return Err(Error::invalid_input(
            what(),
            format!("must not contain {c:?}"),
        ));
    }
    Ok(())
}

/// Where a consumer group starts when it is created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// Only entries added after the group is created (`XGROUP CREATE ... $`).
    #[default]
    NewOnly,
    /// Every entry still in the stream (`XGROUP CREATE ... 0`).
    Beginning,
}

impl StartFrom {
    pub(crate) fn id(self) -> &'static str {
        match self {
            Self::NewOnly => "$",
            Self::Beginning => "0",
        }
    }
}

/// Tuning of reading, handling, redelivery, claiming and connections.
///
/// In a file the connection settings are top-level fields, next to the transport's own:
///
/// ```
/// use std::time::Duration;
/// use redstream_transport::TransportOptions;
///
/// let options: TransportOptions = serde_json::from_str(
///     r#"{"read_count": 50, "response_timeout": "2s", "master_name": "mymaster"}"#,
/// )
/// .unwrap();
/// assert_eq!(options.connection().response_timeout, Duration::from_secs(2));
/// let core = options.connection_options("redis-sentinel://s1:26379,s2:26379");
/// assert_eq!(core.master_name.as_deref(), Some("mymaster"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// No `deny_unknown_fields`: it does not work with `flatten`; `connection` refuses unknown
// fields instead (core's `embed`).
#[serde(default)]
pub struct TransportOptions {
    /// Entries read per stream per `XREADGROUP` call (`COUNT`, which Redis applies to each
    /// stream named): one poll of a subscription to several streams may bring this many from each.
    pub read_count: usize,
    /// How long one `XREADGROUP` call waits for new entries (`BLOCK`).
    #[serde(with = "redstream_core::serde_duration")]
    pub block_time: Duration,
    /// Handlers running at once per subscription.
    pub handler_concurrency: usize,
    /// Deliveries of an entry whose handler keeps failing before it goes to the dead-letter
    /// stream.
    pub max_deliveries: u32,
    /// Seed 000's "NACK, not requeued": a failed entry goes to the dead-letter stream at once.
    pub dead_letter_on_first_failure: bool,
    /// An entry pending this long is considered abandoned and may be claimed (`XAUTOCLAIM`).
    /// Also the delay before a failed entry is delivered again.
    #[serde(with = "redstream_core::serde_duration")]
    pub claim_idle_time: Duration,
    /// How often the claim loop looks for abandoned entries.
    #[serde(with = "redstream_core::serde_duration")]
    pub claim_interval: Duration,
    /// Where a newly created group starts.
    pub start_from: StartFrom,
    /// Acknowledgements are sent in batches of at most this many...
    ///
    /// While `XACK` fails (a user without it, a node down), handled entries wait for their
    /// acknowledgement in memory, at most as many as the backpressure queue holds
    /// (`backpressure.max_queue_size`, or one batch if that is smaller): at that many, reading
    /// pauses until they are acknowledged.
    pub ack_batch_size: usize,
    /// ...or after this long, whichever comes first.
    #[serde(with = "redstream_core::serde_duration")]
    pub ack_interval: Duration,
    /// How long `unsubscribe` and shutdown wait for running handlers.
    #[serde(with = "redstream_core::serde_duration")]
    pub drain_timeout: Duration,
    /// The breaker around publishing and the other writes a caller waits for (redrives, purges,
    /// dead letters written by hand); reads, inspection and subscriptions bypass it.
    pub circuit_breaker: CircuitBreakerConfig,
    /// Size limits for events, applied when publishing and when reading.
    pub limits: EventLimits,
    /// How stream keys are built from the prefix and an event type: `plain`
    /// (`events:order.created`: the names the seeds show operators) or `cluster`
    /// (`events:{order.created}`: one hash tag per stream, so the streams of a deployment spread
    /// over the slots of a Redis Cluster). Unset (the default) means `cluster` on a Redis
    /// Cluster (`redis-cluster://` URLs) and `plain` everywhere else; `plain` chosen explicitly
    /// for a cluster is refused at connect (its dead-letter move is one transaction over two
    /// slots). See [`key_layout_for`](Self::key_layout_for) and `docs/transport.md`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_layout: Option<KeyLayout>,
    /// Approximate length limits of named streams (`XADD ... MAXLEN ~ N`), by full stream
    /// name, overriding [`RedisConfig::max_stream_length`] for those streams; 0 means
    /// unlimited. Seed 004's topics: `events.raw` 10,000, `events.normalized` 10,000,
    /// `profiles.merge_requests` 1,000, `predictions.requests` 5,000.
    pub max_stream_lengths: BTreeMap<String, usize>,
    /// How to reach Redis, except the URL (which is [`RedisConfig::url`]): `connect_timeout`
    /// and `response_timeout` (5 s each; blocking reads get `block_time` on top of the
    /// response timeout), `tls` (certificates for the TLS URLs; unset trusts the system's
    /// roots), and for `redis-sentinel://` URLs `master_name`, `sentinel_username` and
    /// `sentinel_password` (set with another URL, the connection is refused naming the field).
    /// Core's [`ConnectionSettings`], flattened: a file gives these fields at the top level.
    #[serde(flatten, deserialize_with = "connection_settings")]
    pub connection: ConnectionSettings,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            read_count: 200,
            block_time: Duration::from_secs(2),
            handler_concurrency: 16,
            max_deliveries: 5,
            dead_letter_on_first_failure: false,
            claim_idle_time: Duration::from_secs(30),
            claim_interval: Duration::from_secs(5),
            start_from: StartFrom::NewOnly,
            ack_batch_size: 64,
            ack_interval: Duration::from_millis(20),
            drain_timeout: Duration::from_secs(30),
            circuit_breaker: CircuitBreakerConfig::default(),
            limits: EventLimits::default(),
            key_layout: None,
            max_stream_lengths: BTreeMap::new(),
            connection: ConnectionSettings::default(),
        }
    }
}

/// The transport's options besides the connection settings, in files.
const OWN_FIELDS: &[&str] = &[
    "read_count",
    "block_time",
    "handler_concurrency",
    "max_deliveries",
    "dead_letter_on_first_failure",
    "claim_idle_time",
    "claim_interval",
    "start_from",
    "ack_batch_size",
    "ack_interval",
    "drain_timeout",
    "circuit_breaker",
    "limits",
    "key_layout",
    "max_stream_lengths",
];

/// The embedded connection settings, flat among the options' own fields; a field neither knows
/// is refused with both lists, and the old `sentinel:` section with its new names (core's
/// [`embed`]).
fn connection_settings<'de, D>(deserializer: D) -> Result<ConnectionSettings, D::Error>
where
    D: serde::Deserializer<'de>,
{
    const EMBEDDING: Embedding = Embedding::new(OWN_FIELDS).with_removed(&[(
        "sentinel",
        "the sentinel section of earlier versions is gone: its fields are top-level fields \
         now, as in every redstream config: master_name (was sentinel.master_name), \
         sentinel_username (was sentinel.username), sentinel_password (was sentinel.password)",
    )]);
    embed::deserialize(deserializer, &EMBEDDING)
}

impl TransportOptions {
    /// Checks every field; the error names the field and says what is wrong.
    pub fn validate(&self) -> Result<()> {
        let positive_counts = [
            ("read_count", self.read_count),
            ("handler_concurrency", self.handler_concurrency),
            ("ack_batch_size", self.ack_batch_size),
            ("max_deliveries", self.max_deliveries as usize),
        ];
        for (name, value) in positive_counts {
            if value == 0 {
                return Err(Error::invalid_input(
                    format!("config field {name}"),
                    "must be greater than 0",
                ));
            }
        }
        let positive_durations = [
            ("block_time", self.block_time),
            ("claim_idle_time", self.claim_idle_time),
            ("claim_interval", self.claim_interval),
            ("ack_interval", self.ack_interval),
            ("drain_timeout", self.drain_timeout),
            ("connect_timeout", self.connection.connect_timeout),
            ("response_timeout", self.connection.response_timeout),
        ];
        for (name, value) in positive_durations {
            if value.is_zero() {
                return Err(Error::invalid_input(
                    format!("config field {name}"),
                    "must be greater than zero",
                ));
            }
        }
        if self.block_time.as_millis() > u128::from(u32::MAX) {
            return Err(Error::invalid_input(
                "config field block_time",
                "is too large",
            ));
        }
        for stream in self.max_stream_lengths.keys() {
            crate::keys::validate_stream_name(stream).map_err(|err| {
                Error::invalid_input("config field max_stream_lengths", err.to_string())
            })?;
        }
        self.circuit_breaker.validate()?;
        self.limits.validate()?;
        self.connection.tls.validate()
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

    /// Core's [`ConnectionOptions`] to connect to `url` (a [`RedisConfig::url`]) with these
    /// settings.
    #[must_use]
    pub fn connection_options(&self, url: impl Into<String>) -> ConnectionOptions {
        self.connection.clone().with_url(url)
    }

    /// Sets `read_count`.
    #[must_use]
    pub fn with_read_count(mut self, count: usize) -> Self {
        self.read_count = count;
        self
    }

    /// Sets `block_time`.
    #[must_use]
    pub fn with_block_time(mut self, block_time: Duration) -> Self {
        self.block_time = block_time;
        self
    }

    /// Sets `handler_concurrency`.
    #[must_use]
    pub fn with_handler_concurrency(mut self, n: usize) -> Self {
        self.handler_concurrency = n;
        self
    }

    /// Sets `max_deliveries`.
    #[must_use]
    pub fn with_max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// Sets `dead_letter_on_first_failure`.
    #[must_use]
    pub fn with_dead_letter_on_first_failure(mut self, yes: bool) -> Self {
        self.dead_letter_on_first_failure = yes;
        self
    }

    /// Sets `claim_idle_time`.
    #[must_use]
    pub fn with_claim_idle_time(mut self, idle: Duration) -> Self {
        self.claim_idle_time = idle;
        self
    }

    /// Sets `ack_batch_size`.
    #[must_use]
    pub fn with_ack_batch_size(mut self, size: usize) -> Self {
        self.ack_batch_size = size;
        self
    }

    /// Sets `ack_interval`.
    #[must_use]
    pub fn with_ack_interval(mut self, interval: Duration) -> Self {
        self.ack_interval = interval;
        self
    }

    /// Sets `claim_interval`.
    #[must_use]
    pub fn with_claim_interval(mut self, interval: Duration) -> Self {
        self.claim_interval = interval;
        self
    }

    /// Sets `start_from`.
    #[must_use]
    pub fn with_start_from(mut self, start_from: StartFrom) -> Self {
        self.start_from = start_from;
        self
    }

    /// Sets `drain_timeout`.
    #[must_use]
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Sets the circuit breaker configuration.
    #[must_use]
    pub fn with_circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.circuit_breaker = config;
        self
    }

    /// Sets the connection's `connect_timeout`.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connection.connect_timeout = timeout;
        self
    }

    /// Sets the connection's `response_timeout`.
    #[must_use]
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.connection.response_timeout = timeout;
        self
    }

    /// Sets the event limits.
    #[must_use]
    pub fn with_limits(mut self, limits: EventLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the connection's TLS options.
    #[must_use]
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.connection.tls = tls;
        self
    }

    /// Sets the approximate length limit of the stream named `stream` (0: unlimited).
    #[must_use]
    pub fn with_max_stream_length_of(mut self, stream: impl Into<String>, len: usize) -> Self {
        self.max_stream_lengths.insert(stream.into(), len);
        self
    }

    /// Sets the key layout explicitly (see [`key_layout`](Self::key_layout)).
    #[must_use]
    pub fn with_key_layout(mut self, layout: KeyLayout) -> Self {
        self.key_layout = Some(layout);
        self
    }

    /// Sets the name the sentinels know the master by (`redis-sentinel://` URLs that do not
    /// end with it).
    #[must_use]
    pub fn with_master_name(mut self, name: impl Into<String>) -> Self {
        self.connection.master_name = Some(name.into());
        self
    }

    /// Sets the user to authenticate to the sentinels with (sentinels with ACL users).
    #[must_use]
    pub fn with_sentinel_username(mut self, username: impl Into<String>) -> Self {
        self.connection.sentinel_username = Some(username.into());
        self
    }

    /// Sets the sentinels' own password (their `requirepass`); the URL's password is the
    /// master's.
    #[must_use]
    pub fn with_sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.connection.sentinel_password = Some(password.into());
        self
    }

    /// The key layout used on a server of `topology`: the one set in
    /// [`key_layout`](Self::key_layout), or, when unset, `cluster` on a Redis Cluster and
    /// `plain` elsewhere.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput) for `plain` set
    /// explicitly on a cluster: its dead-letter move (`XADD` to `events:dlq` and `XACK` of
    /// `events:order.created` in one transaction) names two slots, which Redis Cluster refuses
    /// (`CROSSSLOT`). The message names the fix.
    pub fn key_layout_for(&self, topology: Topology) -> Result<KeyLayout> {
        match (self.key_layout, topology) {
            (Some(KeyLayout::Plain), Topology::Cluster) => Err(Error::invalid_input(
                "config field key_layout (plain)",
                "cannot be used on a Redis Cluster: a dead letter's move names two slots in one \
                 transaction; use key_layout cluster (events:{order.created}), or leave \
                 key_layout unset to get it on a cluster",
            )),
            (Some(layout), _) => Ok(layout),
            (None, Topology::Cluster) => Ok(KeyLayout::Cluster),
            (None, _) => Ok(KeyLayout::Plain),
        }
    }
}

#[cfg(test)]
mod tests;
