//! Administration: what an operator does by hand, for the `redstream` CLI and the dashboard.
//!
//! | method | what | Redis |
//! |---|---|---|
//! | [`stream_key_for`](RedisTransport::stream_key_for) | the stream key an operator means by a name | none |
//! | [`dlq_entry`](RedisTransport::dlq_entry) | one dead letter by id | `XRANGE events:dlq id id` |
//! | [`dlq_purge`](RedisTransport::dlq_purge) | delete every dead letter | `XTRIM events:dlq MAXLEN 0` |
//! | [`redrive_type`](RedisTransport::redrive_type) | redrive the dead letters of one event type | `XRANGE` pages, then as [`redrive_ids`](RedisTransport::redrive_ids) |
//! | [`claim`](RedisTransport::claim) | hand idle pending entries of a group to a consumer | `XAUTOCLAIM ... JUSTID` |
//! | [`follow`](RedisTransport::follow) | read entries as they are added, no group | `XREAD BLOCK` |
//! | [`follow_group`](RedisTransport::follow_group) | the same as a member of a consumer group | `XREADGROUP BLOCK`, `XACK` |
//!
//! A [`Follower`] survives a restart of the server: after a connection error or a timeout it
//! opens a new connection on its next call, and resumes where it stopped (see
//! [`Follower::next`]).
//!
//! # Names
//!
//! Every method takes full stream names, used as they are: `events:order.created`,
//! `events.raw`, `orders.events`. [`stream_key_for`](RedisTransport::stream_key_for) and
//! [`resolve_stream`](RedisTransport::resolve_stream) turn what an operator types into one
//! (prefix `events`, plain layout, here):
//!
//! | name | stream |
//! |---|---|
//! | `dlq` | `events:dlq` |
//! | `events:order.created`, a stream name of this prefix and layout | itself |
//! | `order.created`, an event type | `events:order.created` |
//! | `events.raw`, a key that exists ([`resolve_stream`](RedisTransport::resolve_stream) only) | itself |
//! | anything else that is a valid stream name but not an event type (`{orders}.events`) | itself |
//!
//! So a name that is an event type under the prefix still resolves, and a full name that exists
//! is used as it is. [`stream_key_for`](RedisTransport::stream_key_for) asks Redis nothing, so it
//! cannot know that `events.raw` exists and reads it as an event type (`events:events.raw`);
//! [`resolve_stream`](RedisTransport::resolve_stream) checks with one `EXISTS` first.
//!
//! # Errors
//!
//! As in the inspection API: an invalid stream name, a malformed entry id,
//! a count of 0 or an empty group or consumer name is [`ErrorKind::InvalidInput`]; a stream or a
//! consumer group that does not exist is [`ErrorKind::NotFound`]; a key that is not a stream is
//! [`ErrorKind::WrongType`]. Reads ([`dlq_entry`](RedisTransport::dlq_entry), the scan of
//! [`redrive_type`](RedisTransport::redrive_type), following) bypass the circuit breaker like the
//! inspection API; writes ([`dlq_purge`](RedisTransport::dlq_purge), redrives,
//! [`claim`](RedisTransport::claim), creating a follower's group) go through it.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Client, Value};
use redstream_core::{Error, ErrorKind, Event, EventLimits, Result, wire};

use crate::commands::{Commands, Traffic, is_nogroup, redis_code};
use crate::config::TransportOptions;
use crate::connection;
use crate::dlq::{DeadLetterEntry, RedriveReport, field};
use crate::inspect::{check_non_empty, no_such_group, parse_id};
use crate::keys::{DLQ, validate_event_type, validate_stream_name};
use crate::reply;
use crate::transport::RedisTransport;

/// Dead letters read per `XRANGE` page by [`RedisTransport::redrive_type`].
const PAGE: usize = 100;

fn reads(transport: &RedisTransport) -> Commands {
    transport.commands(Traffic::Read)
}

fn writes(transport: &RedisTransport) -> Commands {
    transport.commands(Traffic::Write)
}

/// # Administration
///
/// Operations an operator runs by hand; see the module docs of `admin.rs` for the names they
/// accept and their errors.
impl RedisTransport {
    /// The stream an operator means by `name`, without asking Redis (see the module docs of
    /// `admin.rs`): `dlq` is the dead-letter stream, a stream name of this prefix and layout is
    /// itself, an event type is its stream, and any other valid stream name is itself.
    ///
    /// ```no_run
    /// # async fn demo(transport: redstream_transport::RedisTransport) -> redstream_transport::Result<()> {
    /// // With the default prefix `events` and the plain layout:
    /// assert_eq!(transport.stream_key_for("order.created")?, "events:order.created");
    /// assert_eq!(transport.stream_key_for("events:order.created")?, "events:order.created");
    /// assert_eq!(transport.stream_key_for("dlq")?, "events:dlq");
    /// assert_eq!(transport.stream_key_for("{orders}.events")?, "{orders}.events");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an empty name or one that cannot name a stream
    /// (whitespace, control characters, longer than 512 bytes).
    pub fn stream_key_for(&self, name: &str) -> Result<String> {
        let names = &self.inner.names;
        validate_stream_name(name)?;
        if name == DLQ {
            return Ok(names.dlq());
        }
        if names.is_dlq(name) || names.event_type(name).is_some() {
            return Ok(name.to_owned());
        }
        if validate_event_type(name, &self.inner.options.limits).is_ok() {
            return Ok(names.stream(name));
        }
        Ok(name.to_owned())
    }

    /// The stream an operator means by `name`: `name` itself when a key of that name exists
    /// (`events.raw`, seed 004's topics), otherwise [`stream_key_for`](Self::stream_key_for).
    /// One `EXISTS`, bypassing the circuit breaker like the other reads.
    ///
    /// # Errors
    ///
    /// As [`stream_key_for`](Self::stream_key_for); a Redis error if `EXISTS` fails.
    pub async fn resolve_stream(&self, name: &str) -> Result<String> {
        validate_stream_name(name)?;
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(name);
        let exists: i64 = reads(self).query("EXISTS", name, &cmd).await?;
        if exists > 0 {
            return Ok(name.to_owned());
        }
        self.stream_key_for(name)
    }

    /// The dead letter with this id, or `None` when the dead-letter stream has no such entry.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an id that is not a stream entry id (`<ms>-<seq>`); a
    /// Redis error if the stream cannot be read.
    pub async fn dlq_entry(&self, id: &str) -> Result<Option<DeadLetterEntry>> {
        check_entry_id("dead-letter entry id", id)?;
        let dlq = self.inner.names.dlq();
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&dlq).arg(id).arg(id);
        let reply: Value = reads(self).query("XRANGE", &dlq, &cmd).await?;
        let entries = reply::entries(reply)
            .map_err(|reason| Error::backend(ErrorKind::Unexpected, "XRANGE", &dlq, reason))?;
        let limits = &self.inner.options.limits;
        Ok(entries
            .into_iter()
            .next()
            .map(|entry| DeadLetterEntry::from_raw(entry, limits)))
    }

    /// Deletes every dead letter and returns how many there were.
    ///
    /// `XTRIM {prefix}:dlq MAXLEN 0`: one command, so a dead letter added meanwhile is either
    /// counted and deleted or kept. The stream key and its consumer groups (the group of
    /// [`consume_dlq`](Self::consume_dlq)) stay. A missing dead-letter stream purges 0.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::WrongType`] if the key holds something other than a stream; a Redis error if
    /// the write fails.
    pub async fn dlq_purge(&self) -> Result<u64> {
        let dlq = self.inner.names.dlq();
        let mut cmd = redis::cmd("XTRIM");
        cmd.arg(&dlq).arg("MAXLEN").arg(0);
        let removed: u64 = writes(self).query("XTRIM", &dlq, &cmd).await?;
        tracing::info!(removed, stream = %dlq, "dead-letter stream purged");
        Ok(removed)
    }

    /// Redrives the dead letters of one event type that are present when it starts: those whose
    /// `original_type` is `event_type`, or whose event has that type. The dead-letter stream is
    /// scanned in pages of 100 up to its last entry at the start, then the matches are redriven
    /// as by [`redrive_ids`](Self::redrive_ids), which publishes each to the stream it came from
    /// and deletes it from the dead-letter stream. Matches that cannot be redriven (undecodable,
    /// or deleted meanwhile) are in the report's `skipped`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an invalid event type; a Redis error if reading or
    /// writing fails (batches redriven before it stay redriven).
    pub async fn redrive_type(&self, event_type: &str) -> Result<RedriveReport> {
        let limits = &self.inner.options.limits;
        validate_event_type(event_type, limits)?;
        let dlq = self.inner.names.dlq();
        let reads = reads(self);
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(&dlq).arg("+").arg("-").arg("COUNT").arg(1);
        let reply: Value = reads.query("XREVRANGE", &dlq, &cmd).await?;
        let last = reply::entries(reply)
            .map_err(|reason| Error::backend(ErrorKind::Unexpected, "XREVRANGE", &dlq, reason))?;
        let Some(end) = last.into_iter().next().map(|entry| entry.id) else {
            return Ok(RedriveReport::default());
        };
        let mut matching = Vec::new();
        let mut from = "-".to_owned();
        loop {
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&dlq).arg(&from).arg(&end).arg("COUNT").arg(PAGE);
            let reply: Value = reads.query("XRANGE", &dlq, &cmd).await?;
            let entries = reply::entries(reply)
                .map_err(|reason| Error::backend(ErrorKind::Unexpected, "XRANGE", &dlq, reason))?;
            let Some(last) = entries.last().map(|entry| entry.id.clone()) else {
                break;
            };
            let full = entries.len() == PAGE;
            for entry in entries {
                if is_of_type(&entry, event_type, limits) {
                    matching.push(entry.id);
                }
            }
            if !full || last == end {
                break;
            }
            from = format!("({last}");
        }
        if matching.is_empty() {
            return Ok(RedriveReport::default());
        }
        let ids: Vec<&str> = matching.iter().map(String::as_str).collect();
        self.redrive_ids(&ids).await
    }

    /// Hands up to `count` pending entries of `group` that have been idle for at least
    /// `min_idle` to `consumer`, oldest first, and returns their ids.
    ///
    /// `XAUTOCLAIM <stream> <group> <consumer> <min_idle> <cursor> COUNT <n> JUSTID`, repeated
    /// until `count` entries are claimed or the pending list has been walked once. `JUSTID`: the
    /// entries' delivery counts do not grow (moving an entry is not delivering it), and their
    /// idle time starts again. The consumer is created in the group if it is new. `count` is
    /// capped at [`MAX_INSPECT_COUNT`](Self::MAX_INSPECT_COUNT), and `min_idle` at what Redis
    /// accepts (`i64::MAX` milliseconds: nothing is that idle). Pending entries whose stream entry
    /// was deleted are dropped from the pending list by Redis 7 and not returned; Redis 6.2
    /// claims and returns their ids like any other.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an invalid stream name, an empty group or
    /// consumer name, or a `count` of 0; [`ErrorKind::NotFound`] for a missing stream or group;
    /// [`ErrorKind::WrongType`] for a key that is not a stream.
    pub async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<String>> {
        const OP: &str = "XAUTOCLAIM";
        validate_stream_name(stream)?;
        check_non_empty("consumer group name", group)?;
        check_non_empty("consumer name", consumer)?;
        if count == 0 {
            return Err(Error::invalid_input(
                "count 0",
                format!(
                    "must be between 1 and {} (larger counts are capped)",
                    Self::MAX_INSPECT_COUNT
                ),
            ));
        }
        let count = count.min(Self::MAX_INSPECT_COUNT);
        // XAUTOCLAIM answers NOGROUP for a missing stream as for a missing group: TYPE tells
        // them apart.
        require_stream(&reads(self), stream).await?;
        // Redis reads the idle time as a signed 64-bit number and refuses anything larger.
        let min_idle_ms = i64::try_from(min_idle.as_millis()).unwrap_or(i64::MAX);
        let writes = writes(self);
        let mut claimed = Vec::new();
        let mut cursor = "0-0".to_owned();
        loop {
            let mut cmd = redis::cmd(OP);
            cmd.arg(stream)
                .arg(group)
                .arg(consumer)
                .arg(min_idle_ms)
                .arg(&cursor)
                .arg("COUNT")
                .arg(count - claimed.len())
                .arg("JUSTID");
            let reply: Value = writes.query(OP, stream, &cmd).await.map_err(|err| {
                if is_nogroup(&err) {
                    no_such_group(stream, group)
                } else {
                    err
                }
            })?;
            let (next, ids, deleted) = reply::autoclaim_ids(reply)
                .map_err(|reason| Error::backend(ErrorKind::Unexpected, OP, stream, reason))?;
            if !deleted.is_empty() {
                tracing::info!(
                    stream,
                    group,
                    deleted = deleted.len(),
                    "pending entries whose stream entry was deleted left the pending list"
                );
            }
            claimed.extend(ids);
            if next == "0-0" || claimed.len() >= count {
                break;
            }
            cursor = next;
        }
        claimed.truncate(count);
        if !claimed.is_empty() {
            tracing::info!(
                stream,
                group,
                consumer,
                claimed = claimed.len(),
                "entries claimed"
            );
        }
        Ok(claimed)
    }

    /// A [`Follower`] reading `streams` without a consumer group (`XREAD`): nothing is
    /// acknowledged and no group is created, so other readers are not affected.
    ///
    /// `start` is where to begin: `None` for entries added after this call returns (the last id
    /// of each stream is read now, so nothing added between two reads is missed), or the lowest
    /// id to return, in [`read_range`](Self::read_range)'s syntax: `-` for the whole stream, an
    /// id (`1700000000000-0` or `1700000000000`), or `(id` for the entries after `id`. Streams
    /// that do not exist yet are followed from their first entry.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for no streams, an invalid name or one given twice,
    /// or a malformed start; [`ErrorKind::WrongType`] for a key that is not a stream; a connection error if the
    /// dedicated connection cannot be opened.
    pub async fn follow(
        &self,
        streams: &[impl AsRef<str>],
        start: Option<&str>,
    ) -> Result<Follower> {
        let streams = self.check_follow_streams(streams)?;
        let after = match start {
            Some(start) => Some(exclusive_start(start)?),
            None => None,
        };
        let reads = reads(self);
        let mut cursors = Vec::with_capacity(streams.len());
        for stream in &streams {
            require_stream_or_missing(&reads, stream).await?;
            let cursor = match &after {
                Some(after) => after.clone(),
                None => {
                    let mut cmd = redis::cmd("XREVRANGE");
                    cmd.arg(stream).arg("+").arg("-").arg("COUNT").arg(1);
                    let reply: Value = reads.query("XREVRANGE", stream, &cmd).await?;
                    let last = reply::entries(reply).map_err(|reason| {
                        Error::backend(ErrorKind::Unexpected, "XREVRANGE", stream, reason)
                    })?;
                    last.into_iter()
                        .next()
                        .map_or_else(|| "0-0".to_owned(), |entry| entry.id)
                }
            };
            cursors.push(cursor);
        }
        self.follower(streams, Reading::Plain { cursors }).await
    }

    /// A [`Follower`] reading `streams` as `consumer` of `group` (`XREADGROUP ... >`): it gets
    /// the entries the group has not delivered to anyone yet, and
    /// [`Follower::ack`] acknowledges them. The group is created on each stream where it is
    /// missing, starting at the entries added from now on (`XGROUP CREATE ... $ MKSTREAM`,
    /// which also creates a missing stream); an existing group continues where it is.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for no streams, an invalid name or one given twice,
    /// or an empty group or consumer name; [`ErrorKind::WrongType`] for a key that is not a stream.
    pub async fn follow_group(
        &self,
        streams: &[impl AsRef<str>],
        group: &str,
        consumer: &str,
    ) -> Result<Follower> {
        let streams = self.check_follow_streams(streams)?;
        check_non_empty("consumer group name", group)?;
        check_non_empty("consumer name", consumer)?;
        let writes = writes(self);
        for stream in &streams {
            let mut cmd = redis::cmd("XGROUP");
            cmd.arg("CREATE")
                .arg(stream)
                .arg(group)
                .arg("$")
                .arg("MKSTREAM");
            match writes.query::<Value>("XGROUP CREATE", stream, &cmd).await {
                Ok(_) => tracing::info!(stream = %stream, group, "consumer group created"),
                Err(err) if redis_code(&err) == Some("BUSYGROUP") => {}
                Err(err) => return Err(err),
            }
        }
        self.follower(
            streams,
            Reading::Group {
                group: group.to_owned(),
                consumer: consumer.to_owned(),
            },
        )
        .await
    }

    fn check_follow_streams(&self, streams: &[impl AsRef<str>]) -> Result<Vec<String>> {
        if streams.is_empty() {
            return Err(Error::invalid_input(
                "stream list",
                "must name at least one stream",
            ));
        }
        let mut checked: Vec<String> = Vec::with_capacity(streams.len());
        for stream in streams {
            let stream = stream.as_ref();
            validate_stream_name(stream)?;
            // Redis would answer for each occurrence, and the follower would read a stream
            // twice, one of them from a cursor that never moves.
            if checked.iter().any(|seen| seen == stream) {
                return Err(Error::invalid_input(
                    "stream list",
                    format!("names {stream:?} more than once"),
                ));
            }
            checked.push(stream.to_owned());
        }
        Ok(checked)
    }

    async fn follower(&self, streams: Vec<String>, reading: Reading) -> Result<Follower> {
        let mut follower = Follower {
            conn: None,
            client: self.inner.client.clone(),
            options: self.inner.options.clone(),
            server: self.inner.target.clone(),
            streams,
            reading,
        };
        // Connect now, so that a server that cannot be reached fails here rather than at the
        // first read.
        follower.connection().await?;
        Ok(follower)
    }
}

/// Reads entries of one or more streams as they are added, on a connection of its own (a
/// blocking read must not hold up the transport's shared connection). Made by
/// [`RedisTransport::follow`] and [`RedisTransport::follow_group`].
///
/// It reconnects by itself: a connection error or a timeout drops its connection, and the next
/// call to [`next`](Self::next) or [`ack`](Self::ack) opens a new one (see [`next`](Self::next)).
pub struct Follower {
    /// `None` after a connection error or a timeout, until the next call opens a new one.
    conn: Option<MultiplexedConnection>,
    /// The transport's client and options, to open that connection.
    client: Client,
    options: TransportOptions,
    /// The server's URL, password redacted, for connection errors.
    server: String,
    streams: Vec<String>,
    reading: Reading,
}

enum Reading {
    /// `XREAD`: the id after which each stream is read next.
    Plain { cursors: Vec<String> },
    /// `XREADGROUP ... >`.
    Group { group: String, consumer: String },
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("Follower");
        s.field("server", &self.server)
            .field("streams", &self.streams)
            .field("connected", &self.conn.is_some());
        match &self.reading {
            Reading::Plain { cursors } => s.field("cursors", cursors),
            Reading::Group { group, consumer } => {
                s.field("group", group).field("consumer", consumer)
            }
        };
        s.finish_non_exhaustive()
    }
}

/// One entry read by a [`Follower`], decoded when it is in the redstream wire format.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FollowedEntry {
    /// The stream it was read from.
    pub stream: String,
    /// Its id in that stream.
    pub id: String,
    /// The event; `None` when the entry cannot be decoded.
    pub event: Option<Event>,
    /// Why it cannot be decoded; `None` when `event` is `Some`.
    pub decode_error: Option<String>,
    /// Its fields as written, in order, as text (bytes that are not UTF-8 replaced by
    /// `U+FFFD`).
    pub fields: Vec<(String, String)>,
}

impl Follower {
    /// The streams it reads, in the order it reads them.
    #[must_use]
    pub fn streams(&self) -> &[String] {
        &self.streams
    }

    /// Waits up to the transport's `block_time` for new entries and returns them (empty when
    /// none came): at most `count` per stream, streams in the order they were given, entries in
    /// id order. A group follower's entries are pending until [`ack`](Self::ack)ed.
    ///
    /// # Reconnecting
    ///
    /// A connection error or a timeout (a server restarting, failing over or stuck) is returned
    /// as such, and drops the follower's connection; the next call opens a new one. A caller
    /// that keeps calling after [retryable](ErrorKind::is_retryable) errors, with a pause in
    /// between, resumes once the server is back: a plain follower after the last entry it
    /// returned, a group follower with what the group has not delivered to anyone yet (a read
    /// whose reply was lost delivered its entries to this consumer: they stay pending for it).
    /// A server restarted without persistence has lost its streams and groups: a plain follower
    /// then reads the new entries, and a group follower fails with [`ErrorKind::NotFound`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a `count` of 0; [`ErrorKind::NotFound`] when a group
    /// follower's group or stream was deleted; a connection error or a timeout when the server
    /// goes away or does not answer (retryable, see above).
    pub async fn next(&mut self, count: usize) -> Result<Vec<FollowedEntry>> {
        const XREAD: &str = "XREAD";
        const XREADGROUP: &str = "XREADGROUP";
        if count == 0 {
            return Err(Error::invalid_input("count 0", "must be at least 1"));
        }
        let block_ms = u64::try_from(self.options.block_time.as_millis()).unwrap_or(u64::MAX);
        let (op, mut cmd) = match &self.reading {
            Reading::Plain { .. } => (XREAD, redis::cmd(XREAD)),
            Reading::Group { group, consumer } => {
                let mut cmd = redis::cmd(XREADGROUP);
                cmd.arg("GROUP").arg(group).arg(consumer);
                (XREADGROUP, cmd)
            }
        };
        cmd.arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&self.streams);
        match &self.reading {
            Reading::Plain { cursors } => cmd.arg(cursors),
            Reading::Group { .. } => cmd.arg(vec![">"; self.streams.len()]),
        };
        let mut conn = self.connection().await?;
        let reply: Value = match cmd.query_async(&mut conn).await {
            Ok(reply) => reply,
            Err(err) => {
                let err = self.failed(op, err);
                return Err(match &self.reading {
                    Reading::Group { group, .. } if is_nogroup(&err) => {
                        no_such_group(&self.target(), group)
                    }
                    _ => err,
                });
            }
        };
        let per_stream = reply::read_reply(reply)
            .map_err(|reason| Error::backend(ErrorKind::Unexpected, op, self.target(), reason))?;
        let mut out = Vec::new();
        // Redis answers in the order of the request; sort anyway so the contract holds.
        let mut per_stream: Vec<(usize, String, Vec<reply::RawEntry>)> = per_stream
            .into_iter()
            .filter_map(|(key, entries)| {
                let index = self.streams.iter().position(|s| *s == key)?;
                Some((index, key, entries))
            })
            .collect();
        per_stream.sort_by_key(|(index, ..)| *index);
        for (index, stream, entries) in per_stream {
            if let (Reading::Plain { cursors }, Some(last)) = (&mut self.reading, entries.last()) {
                cursors[index] = last.id.clone();
            }
            for entry in entries {
                out.push(followed(&stream, entry, &self.options.limits));
            }
        }
        Ok(out)
    }

    /// Acknowledges `entries` (`XACK`, one per stream, in one round trip) and returns how many
    /// were pending. Without a group there is nothing to acknowledge: returns 0.
    ///
    /// Acknowledging twice is harmless, so after a retryable error the same entries can be
    /// acknowledged again once the server is back (the follower reconnects as in
    /// [`next`](Self::next)).
    ///
    /// # Errors
    ///
    /// A Redis error if the acknowledgement fails; the entries then stay pending.
    pub async fn ack(&mut self, entries: &[FollowedEntry]) -> Result<u64> {
        let Reading::Group { group, .. } = &self.reading else {
            return Ok(0);
        };
        let mut pipe = redis::pipe();
        let mut any = false;
        for stream in &self.streams {
            let ids: Vec<&str> = entries
                .iter()
                .filter(|e| e.stream == *stream)
                .map(|e| e.id.as_str())
                .collect();
            if !ids.is_empty() {
                pipe.cmd("XACK").arg(stream).arg(group).arg(ids);
                any = true;
            }
        }
        if !any {
            return Ok(0);
        }
        let mut conn = self.connection().await?;
        match pipe.query_async::<Vec<u64>>(&mut conn).await {
            Ok(acked) => Ok(acked.into_iter().sum()),
            Err(err) => Err(self.failed("XACK", err)),
        }
    }

    /// The follower's connection, opened first if an error dropped it. (A clone: the
    /// connection is multiplexed, and a call cancelled midway leaves the follower's intact.)
    async fn connection(&mut self) -> Result<MultiplexedConnection> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let conn =
            connection::blocking_connection(&self.client, &self.options, &self.server).await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// The error of a failed command. A connection error or a timeout also drops the
    /// connection: after a timeout a reply may still be on its way, and after a connection
    /// error the connection is dead; the next call opens a new one.
    fn failed(&mut self, op: &'static str, err: redis::RedisError) -> Error {
        let err = Error::from_redis(op, self.target(), err);
        if matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout) {
            tracing::debug!(server = %self.server, error = %err, "follower connection dropped");
            self.conn = None;
        }
        err
    }

    fn target(&self) -> String {
        self.streams.join(", ")
    }
}

fn followed(stream: &str, entry: reply::RawEntry, limits: &EventLimits) -> FollowedEntry {
    let raw = entry.fields.unwrap_or_default();
    let pairs = raw.iter().map(|(k, v)| (k, v));
    let (event, decode_error) = match wire::decode_stream_entry(&entry.id, pairs, limits) {
        Ok(event) => (Some(event), None),
        Err(err) => (None, Some(err.to_string())),
    };
    FollowedEntry {
        stream: stream.to_owned(),
        id: entry.id,
        event,
        decode_error,
        fields: raw
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect(),
    }
}

/// Whether a dead letter belongs to `event_type`: its `original_type`, or its event's type.
fn is_of_type(entry: &reply::RawEntry, event_type: &str, limits: &EventLimits) -> bool {
    let Some(fields) = &entry.fields else {
        return false;
    };
    if reply::text_field(fields, field::ORIGINAL_TYPE).as_deref() == Some(event_type) {
        return true;
    }
    if reply::text_field(fields, field::UNDECODABLE).is_some() {
        return false;
    }
    wire::decode_stream_entry(&entry.id, fields.iter().map(|(k, v)| (k, v)), limits)
        .is_ok_and(|event| event.event_type() == event_type)
}

/// Fails unless `stream` exists and is a stream.
async fn require_stream(reads: &Commands, stream: &str) -> Result<()> {
    match key_type(reads, stream).await?.as_str() {
        "stream" => Ok(()),
        "none" => Err(Error::not_found(
            format!("stream {stream:?}"),
            "the key does not exist (list_streams() shows the streams)",
        )),
        other => Err(wrong_type(stream, other)),
    }
}

/// Fails if `stream` exists and is not a stream.
async fn require_stream_or_missing(reads: &Commands, stream: &str) -> Result<()> {
    match key_type(reads, stream).await?.as_str() {
        "stream" | "none" => Ok(()),
        other => Err(wrong_type(stream, other)),
    }
}

async fn key_type(reads: &Commands, key: &str) -> Result<String> {
    let mut cmd = redis::cmd("TYPE");
    cmd.arg(key);
    reads.query("TYPE", key, &cmd).await
}

fn wrong_type(stream: &str, actual: &str) -> Error {
    Error::backend(
        ErrorKind::WrongType,
        "TYPE",
        stream,
        format!("the key holds a {actual}, not a stream"),
    )
}

fn check_entry_id(what: &'static str, id: &str) -> Result<()> {
    match parse_id(id) {
        Some(_) => Ok(()),
        None => Err(Error::invalid_input(
            format!("{what} {id:?}"),
            "expected a stream entry id such as 1700000000000-0",
        )),
    }
}

/// The `XREAD` id that returns the entries from `start` on: `-` is the whole stream, `(id` the
/// entries after `id`, `id` (or a bare millisecond time) the entries from `id` on.
fn exclusive_start(start: &str) -> Result<String> {
    let invalid = || {
        Error::invalid_input(
            format!("start id {start:?}"),
            "expected -, a stream entry id like 1700000000000-0 or 1700000000000, optionally \
             after ( to exclude it",
        )
    };
    if start == "-" {
        return Ok("0-0".to_owned());
    }
    let (exclusive, id) = match start.strip_prefix('(') {
        Some(id) => (true, id),
        None => (false, start),
    };
    let (ms, seq) = match parse_id(id) {
        Some((ms, seq)) => (ms, Some(seq)),
        None if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => {
            (id.parse::<u64>().map_err(|_| invalid())?, None)
        }
        None => return Err(invalid()),
    };
    let (ms, seq) = match (exclusive, seq) {
        // After `ms-seq`, or after every entry of millisecond `ms`.
        (true, Some(seq)) => (ms, seq),
        (true, None) => (ms, u64::MAX),
        // From `ms-seq` on: after the id just before it.
        (false, seq) => match (ms, seq.unwrap_or(0)) {
            (ms, seq) if seq > 0 => (ms, seq - 1),
            (0, _) => (0, 0),
            (ms, _) => (ms - 1, u64::MAX),
        },
    };
    Ok(format!("{ms}-{seq}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_become_exclusive_xread_ids() {
        assert_eq!(exclusive_start("-").unwrap(), "0-0");
        assert_eq!(exclusive_start("0").unwrap(), "0-0");
        assert_eq!(exclusive_start("5-3").unwrap(), "5-2");
        assert_eq!(exclusive_start("5-0").unwrap(), format!("4-{}", u64::MAX));
        assert_eq!(exclusive_start("5").unwrap(), format!("4-{}", u64::MAX));
        assert_eq!(exclusive_start("(5-3").unwrap(), "5-3");
        assert_eq!(exclusive_start("(5").unwrap(), format!("5-{}", u64::MAX));
        for bad in ["", "(", "+", "x", "1-", "-1", "1-2-3", "((1"] {
            assert_eq!(
                exclusive_start(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn entry_ids_are_checked() {
        check_entry_id("id", "1700000000000-0").unwrap();
        for bad in [
            "",
            "1",
            "1-",
            "-1",
            "a-1",
            "1-0 ",
            "(1-0",
            "99999999999999999999-0",
        ] {
            assert!(check_entry_id("id", bad).is_err(), "{bad:?}");
        }
    }
}
