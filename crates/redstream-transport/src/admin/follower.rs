//! [`Follower`]: reads followed entries, reconnecting after a failure; [`FollowedEntry`].

use redis::Value;
use redstream_core::connection::{Connection, Topology};
use redstream_core::{Error, ErrorKind, Event, EventLimits, Result, wire};

use crate::commands::is_nogroup;
use crate::config::TransportOptions;
use crate::connection;
use crate::inspect::no_such_group;
use crate::reply;
use crate::transport::RedisTransport;

/// Reads entries of one or more streams as they are added, on a connection of its own (a
/// blocking read must not hold up the transport's shared connection). Made by
/// [`RedisTransport::follow`] and [`RedisTransport::follow_group`].
///
/// It reconnects by itself: a connection error or a timeout drops its connection, and the next
/// call to [`next`](Self::next) or [`ack`](Self::ack) opens a new one (see [`next`](Self::next)).
pub struct Follower {
    /// `None` after a connection error or a timeout, until the next call opens a new one.
    conn: Option<Connection>,
    /// The transport's client and options, to open that connection.
    client: Connection,
    options: TransportOptions,
    /// The server's URL, password redacted, for connection errors.
    server: String,
    streams: Vec<String>,
    reading: Reading,
}

pub(super) enum Reading {
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
    pub(super) async fn connection(&mut self) -> Result<Connection> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let conn = connection::blocking_connection(&self.client, &self.options).await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// The error of a failed command. A connection error or a timeout also drops the
    /// connection: after a timeout a reply may still be on its way, and after a connection
    /// error the connection is dead; the next call opens a new one.
    pub(super) fn failed(&mut self, op: &'static str, err: redis::RedisError) -> Error {
        let err = Error::from_redis(op, self.target(), err);
        if matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout) {
            tracing::debug!(server = %self.server, error = %err, "follower connection dropped");
            self.conn = None;
        }
        err
    }

    pub(super) fn target(&self) -> String {
        self.streams.join(", ")
    }
}

pub(super) fn followed(
    stream: &str,
    entry: reply::RawEntry,
    limits: &EventLimits,
) -> FollowedEntry {
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

impl RedisTransport {
    pub(super) async fn follower(
        &self,
        streams: Vec<String>,
        reading: Reading,
    ) -> Result<Follower> {
        if self.inner.conn.topology() == Topology::Cluster {
            connection::one_slot(
                "follow",
                &self.inner.target,
                streams.iter().map(String::as_str),
                "one blocking read cannot name both; follow each stream with a follower of its own",
            )?;
        }
        let mut follower = Follower {
            conn: None,
            client: self.inner.conn.clone(),
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
