//! Inspection: what the CLI and the dashboard show about a server and its streams.
//!
//! Every method is read-only: nothing here creates, acknowledges, claims or deletes anything.
//! The methods do not go through the circuit breaker, on purpose (`Traffic::Read` in
//! `commands.rs`): they are how an operator finds out whether Redis is back, so they must reach
//! it even while the breaker is open, and a dashboard polling a struggling server must not open
//! the breaker for the publishers.
//!
//! # Health
//!
//! - [`ping`](RedisTransport::ping): the round-trip time of one `PING`. Fails with
//!   [`ErrorKind::Timeout`] when the server does not answer within the configured
//!   `response_timeout`.
//! - [`server_info`](RedisTransport::server_info): a few fields of `INFO`, see [`ServerInfo`].
//!
//! # Streams
//!
//! - [`list_streams`](RedisTransport::list_streams): the name of every stream key under the
//!   prefix (`events:*`: the streams of event types, the dead-letter stream, and any other
//!   stream whose name starts with the prefix), sorted.
//!   [`list_streams_matching`](RedisTransport::list_streams_matching) takes any `SCAN ... MATCH`
//!   pattern instead (`events.*` finds seed 004's `events.raw` and `events.normalized`; `*`
//!   every stream). Both use `SCAN ... MATCH <pattern> COUNT 1000 TYPE stream` (core's
//!   `keys::scan`), never `KEYS`, so a large keyspace does not block the server; keys of other
//!   types are left out. Like any `SCAN`, a stream created or deleted while the listing runs
//!   may or may not appear.
//! - [`stream_info`](RedisTransport::stream_info) and
//!   [`streams_overview`](RedisTransport::streams_overview): a [`StreamSummary`] with a
//!   [`GroupSummary`] per consumer group. One stream costs two round trips (`TYPE` + `XINFO
//!   STREAM` + `XINFO GROUPS`, then `TIME` and per group one `XPENDING` and at most one
//!   `XRANGE`); the overview batches up to 64 streams into each of those two pipelines.
//! - [`consumers`](RedisTransport::consumers): a [`ConsumerSummary`] per consumer of a group.
//! - [`pending`](RedisTransport::pending): the pending entries of a group, one
//!   [`PendingEntry`] each, filtered by a [`PendingQuery`].
//! - [`read_range`](RedisTransport::read_range): entries of a stream, decoded into events when
//!   they are in the redstream wire format, shown raw either way; see [`StreamEntry`].
//!
//! # Ages and time
//!
//! A stream entry id is `<milliseconds>-<sequence>`, the milliseconds being the server's clock
//! when the entry was added. Ages are "now" minus that timestamp, in seconds, where "now" comes
//! from the server's `TIME` in the same round trip: they do not depend on the client's clock.
//! An id that is ahead of the server's clock (explicit ids, a clock stepped back) gives age 0.
//!
//! # Names and errors
//!
//! Stream names are full names, used as they are: `events:order.created`, `events.raw`,
//! `orders.events`, as [`list_streams`](RedisTransport::list_streams) returns them;
//! [`stream_key_for`](RedisTransport::stream_key_for) and
//! [`resolve_stream`](RedisTransport::resolve_stream) turn an event type into one. Errors, all
//! typed:
//!
//! | situation | kind |
//! |---|---|
//! | an empty name, or one with whitespace or control characters | `InvalidInput` |
//! | the stream does not exist | `NotFound`: `no such stream ...` |
//! | the group does not exist (`NOGROUP`) | `NotFound`: `no such consumer group ...` |
//! | the key exists but is not a stream | `WrongType` |
//! | `count` is 0, a malformed entry id, an empty group or consumer name | `InvalidInput` |
//! | connection lost, timeout... | as classified by [`Error::from_redis`] |
//!
//! A missing stream or group is an [`InvalidInput`](ErrorKind::InvalidInput) because the caller
//! named something that is not there; it is never retryable. (A missing stream is not turned
//! into an empty result: "nothing there" and "wrong name" look the same otherwise.)
//!
//! Counts are bounded: [`pending`](RedisTransport::pending) and
//! [`read_range`](RedisTransport::read_range) return at most
//! [`MAX_INSPECT_COUNT`](RedisTransport::MAX_INSPECT_COUNT) (1000) entries per call; a larger
//! count is capped, not refused. Page with an exclusive start id, `(` followed by the last id
//! seen.

use std::time::{Duration, Instant};

use redis::{Cmd, RedisResult, Value};
use redstream_core::{Error, ErrorKind, Event, Result, wire};
use serde::Serialize;

use crate::commands::Traffic;
use crate::keys::validate_stream_name;
use crate::reply::{self, RawFields, count, field, map, sequence, text};
use crate::transport::RedisTransport;

/// Streams described per pipeline by `streams_overview`.
const OVERVIEW_CHUNK: usize = 64;

/// Longest field name or value kept in [`StreamEntry::fields`], in bytes.
const MAX_FIELD_BYTES: usize = 4096;

/// A few fields of the server's `INFO` reply.
///
/// A field the server does not report (an old version, a proxy that filters `INFO`) is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServerInfo {
    /// `redis_version`, e.g. `7.2.4`.
    pub version: Option<String>,
    /// `redis_mode`: `standalone`, `cluster` or `sentinel`.
    pub mode: Option<String>,
    /// `uptime_in_seconds`: seconds since the server started.
    pub uptime_seconds: Option<u64>,
    /// `used_memory`: bytes allocated by the server.
    pub used_memory: Option<u64>,
    /// `maxmemory`: the memory limit in bytes; `Some(0)` means no limit.
    pub maxmemory: Option<u64>,
    /// `maxmemory_policy`, e.g. `noeviction`. See [`ServerInfo::may_evict_streams`].
    pub maxmemory_policy: Option<String>,
    /// `connected_clients`: client connections, this one included.
    pub connected_clients: Option<u64>,
    /// `instantaneous_ops_per_sec`: commands per second, as the server samples it.
    pub ops_per_sec: Option<u64>,
}

impl ServerInfo {
    /// Reads the fields from the text of an `INFO` reply. Unknown lines are ignored, and a
    /// field that is missing or does not parse is `None`.
    fn parse(text: &str) -> Self {
        let mut info = Self::default();
        for line in text.lines() {
            let line = line.trim();
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let text = || Some(value.to_owned());
            let number = || value.parse::<u64>().ok();
            match key {
                "redis_version" => info.version = text(),
                "redis_mode" => info.mode = text(),
                "uptime_in_seconds" => info.uptime_seconds = number(),
                "used_memory" => info.used_memory = number(),
                "maxmemory" => info.maxmemory = number(),
                "maxmemory_policy" => info.maxmemory_policy = text(),
                "connected_clients" => info.connected_clients = number(),
                "instantaneous_ops_per_sec" => info.ops_per_sec = number(),
                _ => {}
            }
        }
        info
    }

    /// The major version, e.g. `7` for `7.2.4`; `None` when the version is missing or odd.
    #[must_use]
    pub fn major_version(&self) -> Option<u32> {
        self.version.as_deref()?.split('.').next()?.parse().ok()
    }

    /// Whether the eviction policy (`allkeys-*`) lets Redis evict stream keys under memory
    /// pressure, which loses events silently. The transport also logs a warning at connect.
    #[must_use]
    pub fn may_evict_streams(&self) -> bool {
        self.maxmemory_policy
            .as_deref()
            .is_some_and(|p| p.starts_with("allkeys-"))
    }
}

/// One stream and its consumer groups.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct StreamSummary {
    /// The stream's name, e.g. `events:order.created` or `events.raw`.
    pub name: String,
    /// The event type whose stream this is under the transport's prefix and layout; `None`
    /// for the dead-letter stream and for streams named otherwise (`events.raw`).
    pub event_type: Option<String>,
    /// Whether this is the dead-letter stream, `{prefix}:dlq` (`events:dlq`).
    pub dead_letter: bool,
    /// Entries in the stream now (`XLEN`), whether delivered or not.
    pub length: u64,
    /// The id of the oldest entry still in the stream; `None` when it is empty.
    pub first_id: Option<String>,
    /// The id of the newest entry; `None` when it is empty.
    pub last_id: Option<String>,
    /// Its consumer groups, in the order Redis lists them (by name).
    pub groups: Vec<GroupSummary>,
}

/// One consumer group of a stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct GroupSummary {
    /// The group's name.
    pub name: String,
    /// Consumers the group knows (live or not: Redis keeps a consumer until it is deleted).
    pub consumers: u64,
    /// Entries delivered to a consumer of the group and not acknowledged yet (the group's
    /// pending entries list).
    pub pending: u64,
    /// The id of the last entry delivered to the group (`0-0` before the first delivery).
    pub last_delivered_id: String,
    /// Entries in the stream not delivered to the group yet (`XINFO GROUPS` `lag`, Redis 7+).
    /// `None` when the server does not report it: before Redis 7, and when Redis cannot tell
    /// (after some deletions it reports no lag).
    pub lag: Option<u64>,
    /// Age in seconds of the oldest pending entry (the smallest pending id): how long ago it
    /// was written. `None` when nothing is pending.
    pub oldest_pending_age_secs: Option<f64>,
    /// Milliseconds since that same entry was last delivered to a consumer (its idle time): a
    /// large value means a consumer holds it without working on it. `None` when nothing is
    /// pending.
    pub oldest_pending_idle_ms: Option<u64>,
    /// Age in seconds of the oldest entry not delivered to the group yet (the first entry after
    /// `last_delivered_id`): how far behind the group is, in time. `None` when the group has
    /// caught up.
    pub oldest_undelivered_age_secs: Option<f64>,
}

/// One consumer of a group (`XINFO CONSUMERS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ConsumerSummary {
    /// The consumer's name.
    pub name: String,
    /// Entries delivered to it and not acknowledged yet.
    pub pending: u64,
    /// Milliseconds since it last interacted with the group (read, claimed, acknowledged).
    pub idle_ms: u64,
    /// Milliseconds since its last successful interaction (Redis 7.2+); `None` on older servers
    /// and for a consumer that never read anything.
    pub inactive_ms: Option<u64>,
}

/// Which pending entries [`RedisTransport::pending`] returns.
///
/// Build it with a struct literal and `..Default::default()`, or with the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingQuery {
    /// Only entries pending for this consumer.
    pub consumer: Option<String>,
    /// Only entries idle (not delivered again) for at least this long (`XPENDING ... IDLE`).
    pub min_idle: Option<Duration>,
    /// At most this many entries; 0 is refused, more than
    /// [`MAX_INSPECT_COUNT`](RedisTransport::MAX_INSPECT_COUNT) is capped. Default 100.
    pub count: usize,
    /// The smallest id to return (inclusive), or `(id` for the first id after `id` (to page on);
    /// `None` starts at the oldest pending entry.
    pub start: Option<String>,
}

impl Default for PendingQuery {
    fn default() -> Self {
        Self {
            consumer: None,
            min_idle: None,
            count: 100,
            start: None,
        }
    }
}

impl PendingQuery {
    /// At most `count` entries, from the oldest, of any consumer.
    #[must_use]
    pub fn new(count: usize) -> Self {
        Self {
            count,
            ..Self::default()
        }
    }

    /// Sets `consumer`.
    #[must_use]
    pub fn with_consumer(mut self, consumer: impl Into<String>) -> Self {
        self.consumer = Some(consumer.into());
        self
    }

    /// Sets `min_idle`.
    #[must_use]
    pub fn with_min_idle(mut self, min_idle: Duration) -> Self {
        self.min_idle = Some(min_idle);
        self
    }

    /// Sets `start`.
    #[must_use]
    pub fn with_start(mut self, start: impl Into<String>) -> Self {
        self.start = Some(start.into());
        self
    }
}

/// One pending entry of a group (`XPENDING` extended form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PendingEntry {
    /// The entry's id.
    pub id: String,
    /// The consumer it was delivered to last.
    pub consumer: String,
    /// Milliseconds since it was last delivered.
    pub idle_ms: u64,
    /// How many times it was delivered (reads and claims).
    pub deliveries: u64,
}

/// One stream entry, decoded when possible and shown raw in any case.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct StreamEntry {
    /// The entry's id.
    pub id: String,
    /// The event, when the entry is in the redstream wire format; `None` otherwise.
    pub event: Option<Event>,
    /// The entry's fields as written, in order: bytes that are not UTF-8 are replaced by
    /// `U+FFFD`, and names and values longer than 4 KiB are cut (see `truncated`).
    pub fields: Vec<(String, String)>,
    /// Whether a field name or value was cut in `fields`. (`event` is decoded from the full
    /// value.)
    pub truncated: bool,
    /// Why the entry could not be decoded into an event (another writer's entry, another wire
    /// format version, bad JSON...); `None` when `event` is `Some`.
    pub decode_error: Option<String>,
}

/// # Inspection
///
/// Read-only views for the CLI and the dashboard. They bypass the circuit breaker, so they
/// report on a server the breaker has given up on. Stream names are full names, used as they
/// are. An invalid name fails with [`ErrorKind::InvalidInput`]; a stream or a consumer group
/// that does not
/// exist with [`ErrorKind::NotFound`]; a key that is not a stream with
/// [`ErrorKind::WrongType`]. Ages
/// are measured against the server's clock (`TIME`), not the client's.
impl RedisTransport {
    /// The most entries [`pending`](Self::pending) and [`read_range`](Self::read_range) return
    /// per call.
    pub const MAX_INSPECT_COUNT: usize = 1000;

    /// Sends one `PING` and returns the round-trip time.
    ///
    /// Fails with [`ErrorKind::Timeout`] when no answer comes within `response_timeout`, and
    /// with [`ErrorKind::Connection`] when the server cannot be reached.
    pub async fn ping(&self) -> Result<Duration> {
        let reads = self.commands(Traffic::Read);
        let started = Instant::now();
        let reply: Value = reads
            .query("PING", &self.inner.target, &redis::cmd("PING"))
            .await?;
        let elapsed = started.elapsed();
        match text(&reply).as_deref() {
            Some("PONG") => Ok(elapsed),
            _ => Err(unexpected(
                "PING",
                &self.inner.target,
                "a reply other than PONG",
            )),
        }
    }

    /// Version, mode, memory and load of the server, from `INFO`; see [`ServerInfo`].
    pub async fn server_info(&self) -> Result<ServerInfo> {
        let reply: Value = self
            .commands(Traffic::Read)
            .query("INFO", &self.inner.target, &redis::cmd("INFO"))
            .await?;
        let text = text(&reply)
            .ok_or_else(|| unexpected("INFO", &self.inner.target, "a reply that is not text"))?;
        Ok(ServerInfo::parse(&text))
    }

    /// Every stream under the prefix (`events:*`), sorted: the streams of event types, the
    /// dead-letter stream, and other streams whose names start with the prefix. Uses `SCAN`,
    /// never `KEYS`.
    pub async fn list_streams(&self) -> Result<Vec<String>> {
        self.list_streams_matching(&self.inner.names.scan_pattern())
            .await
    }

    /// Every stream whose name matches `pattern`, a `SCAN ... MATCH` glob (`events.*`,
    /// `orders.events`, `*`), sorted. Uses `SCAN ... TYPE stream`, never `KEYS`. To match a
    /// name literally, escape it with `redstream_core::keys::escape_glob`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an empty pattern; a Redis error if `SCAN` fails.
    pub async fn list_streams_matching(&self, pattern: &str) -> Result<Vec<String>> {
        if pattern.is_empty() {
            return Err(Error::invalid_input(
                "stream pattern \"\"",
                "must not be empty (`*` matches every stream)",
            ));
        }
        // A read: it bypasses the circuit breaker (`Traffic::Read`), on the shared connection.
        let mut conn = self.inner.conn.clone();
        redstream_core::keys::scan(&mut conn, pattern, Some("stream"), pattern).await
    }

    /// [`stream_info`](Self::stream_info) of each of `streams` that exists, in the given order;
    /// names that are missing or not streams are left out.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an invalid name; a Redis error if a command fails.
    pub async fn streams_info(&self, streams: &[String]) -> Result<Vec<StreamSummary>> {
        for stream in streams {
            validate_stream_name(stream)?;
        }
        let mut summaries = Vec::with_capacity(streams.len());
        for chunk in streams.chunks(OVERVIEW_CHUNK) {
            summaries.extend(self.describe(chunk, false).await?);
        }
        Ok(summaries)
    }

    /// Length, first and last id, and consumer groups of one stream.
    ///
    /// Fails with [`ErrorKind::InvalidInput`] for an invalid name, with [`ErrorKind::NotFound`]
    /// when the stream does not exist, and with [`ErrorKind::WrongType`] when the key is not a
    /// stream.
    pub async fn stream_info(&self, stream: &str) -> Result<StreamSummary> {
        self.check_stream_name(stream)?;
        let mut summaries = self.describe(&[stream.to_owned()], true).await?;
        summaries
            .pop()
            .ok_or_else(|| unexpected("XINFO STREAM", stream, "no summary for the stream"))
    }

    /// [`stream_info`](Self::stream_info) of every stream [`list_streams`](Self::list_streams)
    /// finds, in the same order. A stream deleted between the listing and its description is
    /// left out.
    pub async fn streams_overview(&self) -> Result<Vec<StreamSummary>> {
        let streams = self.list_streams().await?;
        let mut summaries = Vec::with_capacity(streams.len());
        for chunk in streams.chunks(OVERVIEW_CHUNK) {
            summaries.extend(self.describe(chunk, false).await?);
        }
        Ok(summaries)
    }

    /// The consumers of a group, by name (`XINFO CONSUMERS`).
    pub async fn consumers(&self, stream: &str, group: &str) -> Result<Vec<ConsumerSummary>> {
        const OP: &str = "XINFO CONSUMERS";
        self.check_stream_name(stream)?;
        check_non_empty("consumer group name", group)?;
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("CONSUMERS").arg(stream).arg(group);
        let reply = self.query_stream(OP, stream, Some(group), cmd).await?;
        let mut consumers = sequence(&reply)
            .ok_or_else(|| unexpected(OP, stream, "a reply that is not a list"))?
            .iter()
            .map(|item| {
                let fields = map(item).ok_or_else(|| unexpected(OP, stream, "a consumer"))?;
                Ok(ConsumerSummary {
                    name: field(&fields, "name")
                        .and_then(text)
                        .ok_or_else(|| unexpected(OP, stream, "a consumer without a name"))?,
                    pending: field(&fields, "pending").and_then(count).unwrap_or(0),
                    idle_ms: field(&fields, "idle").and_then(count).unwrap_or(0),
                    // Redis 7.2+; -1 for a consumer that never read.
                    inactive_ms: field(&fields, "inactive").and_then(count),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        consumers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(consumers)
    }

    /// Pending entries of a group in id order, with their consumer, idle time and delivery
    /// count (`XPENDING key group [IDLE ms] start + count [consumer]`).
    pub async fn pending(
        &self,
        stream: &str,
        group: &str,
        query: PendingQuery,
    ) -> Result<Vec<PendingEntry>> {
        const OP: &str = "XPENDING";
        self.check_stream_name(stream)?;
        check_non_empty("consumer group name", group)?;
        let count = bounded_count(query.count)?;
        let start = query.start.as_deref().unwrap_or("-");
        check_id("start id of the pending query", start)?;
        if let Some(consumer) = &query.consumer {
            check_non_empty("consumer name", consumer)?;
        }
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(stream).arg(group);
        if let Some(min_idle) = query.min_idle {
            // Redis takes the idle time as a signed 64-bit count of milliseconds.
            let ms = i64::try_from(min_idle.as_millis()).unwrap_or(i64::MAX);
            cmd.arg("IDLE").arg(ms);
        }
        cmd.arg(start).arg("+").arg(count);
        if let Some(consumer) = &query.consumer {
            cmd.arg(consumer);
        }
        let reply = self.query_stream(OP, stream, Some(group), cmd).await?;
        sequence(&reply)
            .ok_or_else(|| unexpected(OP, stream, "a reply that is not a list"))?
            .iter()
            .map(|item| {
                parse_pending_entry(item)
                    .ok_or_else(|| unexpected(OP, stream, "a malformed pending entry"))
            })
            .collect()
    }

    /// Entries of a stream between two ids, decoded into events where possible.
    ///
    /// `start` and `end` are the low and high bounds whatever the direction: `-` and `+` for
    /// the ends of the stream, an id (`1700000000000-0` or `1700000000000`), or `(id` to leave
    /// that id out. `reverse` returns the newest entries first (`XREVRANGE`): `read_range(s,
    /// "-", "+", 10, true)` is the last ten entries. `count` is capped at
    /// [`MAX_INSPECT_COUNT`](Self::MAX_INSPECT_COUNT); 0 is refused.
    pub async fn read_range(
        &self,
        stream: &str,
        start: &str,
        end: &str,
        count: usize,
        reverse: bool,
    ) -> Result<Vec<StreamEntry>> {
        self.check_stream_name(stream)?;
        check_id("start id", start)?;
        check_id("end id", end)?;
        let count = bounded_count(count)?;
        // XREVRANGE takes the high bound first.
        let (op, first, second) = if reverse {
            ("XREVRANGE", end, start)
        } else {
            ("XRANGE", start, end)
        };
        let mut cmd = redis::cmd(op);
        cmd.arg(stream)
            .arg(first)
            .arg(second)
            .arg("COUNT")
            .arg(count);
        let reply = self.query_stream(op, stream, None, cmd).await?;
        sequence(&reply)
            .ok_or_else(|| unexpected(op, stream, "a reply that is not a list"))?
            .iter()
            .map(|item| {
                let (id, fields) =
                    raw_entry(item).ok_or_else(|| unexpected(op, stream, "a malformed entry"))?;
                Ok(self.stream_entry(id, fields))
            })
            .collect()
    }

    /// Builds the [`StreamEntry`] of one raw entry; never fails, whatever the entry holds.
    fn stream_entry(&self, id: String, raw: RawFields) -> StreamEntry {
        let limits = &self.inner.options.limits;
        let (event, decode_error) =
            match wire::decode_stream_entry(&id, raw.iter().map(|(k, v)| (k, v)), limits) {
                Ok(event) => (Some(event), None),
                Err(err) => (None, Some(err.to_string())),
            };
        let mut truncated = false;
        let fields = raw
            .iter()
            .map(|(name, value)| {
                let (name, cut_name) = shown(name);
                let (value, cut_value) = shown(value);
                truncated |= cut_name || cut_value;
                (name, value)
            })
            .collect();
        StreamEntry {
            id,
            event,
            fields,
            truncated,
            decode_error,
        }
    }

    /// Refuses names that cannot name a stream.
    fn check_stream_name(&self, stream: &str) -> Result<()> {
        validate_stream_name(stream)
    }

    /// Runs `TYPE stream` and `cmd` in one round trip, and turns a missing stream, a key of
    /// another type and a missing group (`NOGROUP`) into clear errors.
    async fn query_stream(
        &self,
        op: &'static str,
        stream: &str,
        group: Option<&str>,
        cmd: Cmd,
    ) -> Result<Value> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("TYPE").arg(stream);
        pipe.add_command(cmd);
        let replies: Vec<RedisResult<Value>> =
            self.commands(Traffic::Read).pipe(op, stream, &pipe).await?;
        let [key_type, reply]: [RedisResult<Value>; 2] = replies
            .try_into()
            .map_err(|_| unexpected(op, stream, "a pipeline reply of the wrong length"))?;
        KeyType::of("TYPE", stream, key_type)?.require_stream(op, stream)?;
        reply.map_err(|err| match group {
            Some(group) if err.code() == Some("NOGROUP") => no_such_group(stream, group),
            _ => Error::from_redis(op, stream.to_owned(), err),
        })
    }

    /// Summaries of `streams`, in two round trips. With `strict`, a stream that does not exist
    /// (or is not a stream) is an error; without, it is left out.
    async fn describe(&self, streams: &[String], strict: bool) -> Result<Vec<StreamSummary>> {
        let reads = self.commands(Traffic::Read);
        let target = || match streams {
            [one] => one.clone(),
            many => format!("{} streams", many.len()),
        };

        // Round trip 1: what each stream is, and its groups.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for stream in streams {
            pipe.cmd("TYPE").arg(stream);
            pipe.cmd("XINFO").arg("STREAM").arg(stream);
            pipe.cmd("XINFO").arg("GROUPS").arg(stream);
        }
        let replies: Vec<RedisResult<Value>> = reads.pipe("XINFO STREAM", &target(), &pipe).await?;
        if replies.len() != 3 * streams.len() {
            return Err(unexpected(
                "XINFO STREAM",
                &target(),
                "a pipeline reply of the wrong length",
            ));
        }
        let mut summaries = Vec::with_capacity(streams.len());
        let mut replies = replies.into_iter();
        for stream in streams {
            let (Some(key_type), Some(info), Some(groups)) =
                (replies.next(), replies.next(), replies.next())
            else {
                break;
            };
            let key_type = KeyType::of("TYPE", stream, key_type)?;
            if !strict && key_type != KeyType::Stream {
                // Deleted (or replaced by another type) since it was listed.
                continue;
            }
            key_type.require_stream("XINFO STREAM", stream)?;
            let info =
                info.map_err(|err| Error::from_redis("XINFO STREAM", stream.clone(), err))?;
            let groups =
                groups.map_err(|err| Error::from_redis("XINFO GROUPS", stream.clone(), err))?;
            summaries.push(self.parse_summary(stream, &info, &groups)?);
        }

        // Round trip 2: server time, and per group its oldest pending and undelivered entry.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("TIME");
        let mut asks = Vec::new();
        for (s, summary) in summaries.iter().enumerate() {
            for (g, group) in summary.groups.iter().enumerate() {
                if group.pending > 0 {
                    pipe.cmd("XPENDING")
                        .arg(&summary.name)
                        .arg(&group.name)
                        .arg("-")
                        .arg("+")
                        .arg(1);
                    asks.push(Ask::OldestPending(s, g));
                }
                if has_undelivered(summary, group) {
                    pipe.cmd("XRANGE")
                        .arg(&summary.name)
                        .arg(format!("({}", group.last_delivered_id))
                        .arg("+")
                        .arg("COUNT")
                        .arg(1);
                    asks.push(Ask::OldestUndelivered(s, g));
                }
            }
        }
        if asks.is_empty() {
            return Ok(summaries);
        }
        let replies: Vec<RedisResult<Value>> = reads.pipe("XPENDING", &target(), &pipe).await?;
        if replies.len() != asks.len() + 1 {
            return Err(unexpected(
                "XPENDING",
                &target(),
                "a pipeline reply of the wrong length",
            ));
        }
        let mut replies = replies.into_iter();
        let now_us = replies
            .next()
            .ok_or_else(|| unexpected("TIME", &self.inner.target, "no reply"))?
            .map_err(|err| Error::from_redis("TIME", self.inner.target.clone(), err))
            .and_then(|time| {
                server_time_us(&time)
                    .ok_or_else(|| unexpected("TIME", &self.inner.target, "a malformed time"))
            })?;
        let mut vanished = Vec::new();
        for (ask, reply) in asks.into_iter().zip(replies) {
            let (s, g) = ask.indexes();
            let stream = summaries[s].name.clone();
            let group = &mut summaries[s].groups[g];
            let reply = match reply {
                Ok(reply) => reply,
                // The group (or the stream) was deleted since round trip 1: it is gone.
                Err(err) if err.code() == Some("NOGROUP") => {
                    vanished.push((s, group.name.clone()));
                    continue;
                }
                Err(err) => return Err(Error::from_redis(ask.op(), stream, err)),
            };
            let first = sequence(&reply).and_then(<[Value]>::first);
            match ask {
                Ask::OldestPending(..) => {
                    if let Some(entry) = first.and_then(parse_pending_entry) {
                        group.oldest_pending_age_secs = age_secs(&entry.id, now_us);
                        group.oldest_pending_idle_ms = Some(entry.idle_ms);
                    }
                }
                Ask::OldestUndelivered(..) => {
                    if let Some((id, _)) = first.and_then(raw_entry) {
                        group.oldest_undelivered_age_secs = age_secs(&id, now_us);
                    }
                }
            }
        }
        for (s, name) in vanished {
            summaries[s].groups.retain(|group| group.name != name);
        }
        Ok(summaries)
    }

    /// A summary from the replies of `XINFO STREAM` and `XINFO GROUPS`; the ages are filled
    /// in later.
    fn parse_summary(&self, stream: &str, info: &Value, groups: &Value) -> Result<StreamSummary> {
        let info = map(info)
            .ok_or_else(|| unexpected("XINFO STREAM", stream, "a reply that is not a map"))?;
        let entry_id = |name: &str| field(&info, name).and_then(raw_entry).map(|(id, _)| id);
        let groups = sequence(groups)
            .ok_or_else(|| unexpected("XINFO GROUPS", stream, "a reply that is not a list"))?
            .iter()
            .map(|group| {
                let fields =
                    map(group).ok_or_else(|| unexpected("XINFO GROUPS", stream, "a group"))?;
                Ok(GroupSummary {
                    name: field(&fields, "name").and_then(text).ok_or_else(|| {
                        unexpected("XINFO GROUPS", stream, "a group without a name")
                    })?,
                    consumers: field(&fields, "consumers").and_then(count).unwrap_or(0),
                    pending: field(&fields, "pending").and_then(count).unwrap_or(0),
                    last_delivered_id: field(&fields, "last-delivered-id")
                        .and_then(text)
                        .unwrap_or_else(|| "0-0".to_owned()),
                    lag: field(&fields, "lag").and_then(count),
                    oldest_pending_age_secs: None,
                    oldest_pending_idle_ms: None,
                    oldest_undelivered_age_secs: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let names = &self.inner.names;
        Ok(StreamSummary {
            name: stream.to_owned(),
            event_type: names.event_type(stream).map(str::to_owned),
            dead_letter: names.is_dlq(stream),
            length: field(&info, "length").and_then(count).unwrap_or(0),
            first_id: entry_id("first-entry"),
            last_id: entry_id("last-entry"),
            groups,
        })
    }
}

/// A follow-up question of `describe`'s second round trip, about group `.1` of stream `.0`.
#[derive(Clone, Copy)]
enum Ask {
    OldestPending(usize, usize),
    OldestUndelivered(usize, usize),
}

impl Ask {
    fn indexes(self) -> (usize, usize) {
        match self {
            Self::OldestPending(s, g) | Self::OldestUndelivered(s, g) => (s, g),
        }
    }

    fn op(self) -> &'static str {
        match self {
            Self::OldestPending(..) => "XPENDING",
            Self::OldestUndelivered(..) => "XRANGE",
        }
    }
}

/// Whether the group may have entries it has not been delivered yet, so that asking for the
/// oldest of them is worth a command.
fn has_undelivered(summary: &StreamSummary, group: &GroupSummary) -> bool {
    if group.lag == Some(0) {
        return false;
    }
    let Some(last) = &summary.last_id else {
        return false;
    };
    match (parse_id(&group.last_delivered_id), parse_id(last)) {
        (Some(delivered), Some(last)) => delivered < last,
        _ => true,
    }
}

/// What a key holds, from the reply of `TYPE`.
#[derive(Debug, PartialEq, Eq)]
enum KeyType {
    Stream,
    Missing,
    Other(String),
}

impl KeyType {
    fn of(op: &'static str, key: &str, reply: RedisResult<Value>) -> Result<Self> {
        let reply = reply.map_err(|err| Error::from_redis(op, key.to_owned(), err))?;
        match text(&reply).as_deref() {
            Some("stream") => Ok(Self::Stream),
            Some("none") => Ok(Self::Missing),
            Some(other) => Ok(Self::Other(other.to_owned())),
            None => Err(unexpected(op, key, "a reply that is not text")),
        }
    }

    /// Nothing for a stream; a clear error otherwise.
    fn require_stream(self, op: &'static str, stream: &str) -> Result<()> {
        match self {
            Self::Stream => Ok(()),
            Self::Missing => Err(Error::not_found(
                format!("stream {stream:?}"),
                "the key does not exist (list_streams() shows the streams)",
            )),
            Self::Other(other) => Err(Error::backend(
                ErrorKind::WrongType,
                op,
                stream,
                format!("the key holds a {other}, not a stream"),
            )),
        }
    }
}

pub(crate) fn no_such_group(stream: &str, group: &str) -> Error {
    Error::not_found(
        format!("consumer group {group:?} of stream {stream:?}"),
        "the server answered NOGROUP; stream_info() lists the stream's groups",
    )
}

fn unexpected(op: &'static str, target: &str, what: &str) -> Error {
    Error::backend(
        ErrorKind::Unexpected,
        op,
        target,
        format!("unexpected reply from the server: {what}"),
    )
}

pub(crate) fn check_non_empty(what: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid_input(what, "must not be empty"));
    }
    Ok(())
}

/// Refuses 0; caps at [`RedisTransport::MAX_INSPECT_COUNT`].
fn bounded_count(count: usize) -> Result<usize> {
    if count == 0 {
        return Err(Error::invalid_input(
            "count 0",
            format!(
                "must be between 1 and {} (larger counts are capped)",
                RedisTransport::MAX_INSPECT_COUNT
            ),
        ));
    }
    Ok(count.min(RedisTransport::MAX_INSPECT_COUNT))
}

/// Accepts `-`, `+`, `ms`, `ms-seq`, and `(ms[-seq])`.
fn check_id(what: &'static str, id: &str) -> Result<()> {
    if id == "-" || id == "+" {
        return Ok(());
    }
    let number = |s: &str| s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok();
    let bare = id.strip_prefix('(').unwrap_or(id);
    let valid = match bare.split_once('-') {
        Some((ms, seq)) => number(ms) && number(seq),
        None => number(bare),
    };
    if !valid {
        return Err(Error::invalid_input(
            format!("{what} {id:?}"),
            "expected -, +, or a stream entry id like 1700000000000-0 or 1700000000000, \
             optionally after ( to exclude it",
        ));
    }
    Ok(())
}

/// `<ms>-<seq>`, both decimal numbers that fit a u64, as a pair that sorts like the ids.
pub(crate) fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    Some((number(ms)?, number(seq)?))
}

/// Seconds between the time in an entry id and `now_us` (microseconds), at least 0.
fn age_secs(id: &str, now_us: u64) -> Option<f64> {
    let (ms, _) = parse_id(id)?;
    let written_us = ms.saturating_mul(1000);
    // Microseconds since 1970 fit an f64 exactly for a few hundred years.
    Some(now_us.saturating_sub(written_us) as f64 / 1e6)
}

/// The reply of `TIME` (`[seconds, microseconds]`) in microseconds.
fn server_time_us(reply: &Value) -> Option<u64> {
    let parts = sequence(reply)?;
    let secs = count(parts.first()?)?;
    let micros = count(parts.get(1)?)?;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

/// One item of an extended `XPENDING` reply: `[id, consumer, idle, deliveries]`.
fn parse_pending_entry(item: &Value) -> Option<PendingEntry> {
    let parts = sequence(item)?;
    Some(PendingEntry {
        id: text(parts.first()?)?,
        consumer: text(parts.get(1)?)?,
        idle_ms: count(parts.get(2)?)?,
        deliveries: count(parts.get(3)?)?,
    })
}

/// One stream entry, `[id, [field, value, ...]]`, with raw bytes. A deleted entry's fields
/// (nil) are no fields.
fn raw_entry(item: &Value) -> Option<(String, RawFields)> {
    let entry = reply::entry(item.clone()).ok()?;
    Some((entry.id, entry.fields.unwrap_or_default()))
}

/// A field as shown: lossy UTF-8, cut to [`MAX_FIELD_BYTES`] on a character boundary. The
/// flag says whether it was cut.
fn shown(raw: &[u8]) -> (String, bool) {
    let cut = raw.len() > MAX_FIELD_BYTES;
    let mut text = String::from_utf8_lossy(&raw[..raw.len().min(MAX_FIELD_BYTES)]).into_owned();
    if cut {
        // Cutting the bytes may split a character (now U+FFFD); cutting the text again keeps
        // the result within the limit.
        let mut end = text.len().min(MAX_FIELD_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    (text, cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_parsed_defensively() {
        let info = ServerInfo::parse(
            "# Server\r\nredis_version:7.2.4\r\nredis_mode:standalone\r\n\
             uptime_in_seconds:42\r\n# Memory\r\nused_memory:1024\r\nmaxmemory:0\r\n\
             maxmemory_policy:allkeys-lru\r\nconnected_clients:notanumber\r\ngarbage\r\n",
        );
        assert_eq!(info.version.as_deref(), Some("7.2.4"));
        assert_eq!(info.major_version(), Some(7));
        assert_eq!(info.mode.as_deref(), Some("standalone"));
        assert_eq!(info.uptime_seconds, Some(42));
        assert_eq!(info.used_memory, Some(1024));
        assert_eq!(info.maxmemory, Some(0));
        assert!(info.may_evict_streams());
        assert_eq!(info.connected_clients, None);
        assert_eq!(info.ops_per_sec, None);
        assert_eq!(ServerInfo::parse(""), ServerInfo::default());
        assert_eq!(ServerInfo::parse("redis_version:x").major_version(), None);
    }

    #[test]
    fn ids_are_checked() {
        for good in [
            "-",
            "+",
            "0",
            "0-0",
            "1700000000000-5",
            "(1700000000000-5",
            "(17",
        ] {
            check_id("id", good).unwrap();
        }
        for bad in [
            "", "(", "(-", "(+", "abc", "1-", "-1", "1-2-3", "+1", "1-+2", " 1",
        ] {
            assert_eq!(
                check_id("id", bad).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn counts_are_bounded() {
        assert!(bounded_count(0).is_err());
        assert_eq!(bounded_count(1).unwrap(), 1);
        assert_eq!(
            bounded_count(1_000_000).unwrap(),
            RedisTransport::MAX_INSPECT_COUNT
        );
    }

    #[test]
    fn ages_never_go_negative() {
        assert_eq!(age_secs("1000-0", 3_000_000), Some(2.0));
        assert_eq!(age_secs("5000-0", 1_000_000), Some(0.0));
        assert_eq!(age_secs("garbage", 1_000_000), None);
    }

    #[test]
    fn long_fields_are_cut_on_a_character_boundary() {
        let (short, cut) = shown(b"abc\xff");
        assert_eq!((short.as_str(), cut), ("abc\u{fffd}", false));
        let long = "é".repeat(MAX_FIELD_BYTES); // two bytes each
        let (text, cut) = shown(long.as_bytes());
        assert!(cut);
        assert!(text.len() <= MAX_FIELD_BYTES);
        assert!(text.chars().all(|c| c == 'é'));
        // A cut in the middle of a character becomes U+FFFD and stays within the limit.
        let odd = format!("a{long}");
        let (text, cut) = shown(odd.as_bytes());
        assert!(cut && text.len() <= MAX_FIELD_BYTES, "{}", text.len());
    }
}
