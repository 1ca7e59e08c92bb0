//! Listing streams and their summaries: [`StreamSummary`], [`GroupSummary`].

use redstream_core::connection::Topology;
use redstream_core::{Error, Result};
use serde::Serialize;

use super::checks::unexpected;
use crate::keys::validate_stream_name;
use crate::transport::RedisTransport;

/// Streams described per pipeline by `streams_overview`.
pub(super) const OVERVIEW_CHUNK: usize = 64;

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

impl RedisTransport {
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
    /// [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput) for an empty pattern; a
    /// Redis error if `SCAN` fails.
    pub async fn list_streams_matching(&self, pattern: &str) -> Result<Vec<String>> {
        if pattern.is_empty() {
            return Err(Error::invalid_input(
                "stream pattern \"\"",
                "must not be empty (`*` matches every stream)",
            ));
        }
        // A read: it bypasses the circuit breaker (`Traffic::Read`), on the shared connection.
        if self.inner.conn.topology() == Topology::Cluster {
            return self.scan_masters(pattern).await;
        }
        let mut conn = self.inner.conn.clone();
        redstream_core::keys::scan(&mut conn, pattern, Some("stream"), pattern).await
    }

    /// `SCAN ... TYPE stream` on each master of the cluster in turn, until each cursor is 0:
    /// the matching streams, sorted, without duplicates.
    async fn scan_masters(&self, pattern: &str) -> Result<Vec<String>> {
        let conn = &self.inner.conn;
        let mut keys = Vec::new();
        for master in conn.cluster_masters().await? {
            let mut cursor: u64 = 0;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .arg("TYPE")
                    .arg("stream");
                let (next, batch): (u64, Vec<Vec<u8>>) = conn.query_node(&master, &cmd).await?;
                keys.extend(batch.into_iter().filter_map(|k| String::from_utf8(k).ok()));
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// [`stream_info`](Self::stream_info) of each of `streams` that exists, in the given order;
    /// names that are missing or not streams are left out.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput) for an invalid name; a
    /// Redis error if a command fails.
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
    /// Fails with [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput) for an
    /// invalid name, with [`ErrorKind::NotFound`](redstream_core::ErrorKind::NotFound) when the
    /// stream does not exist, and with
    /// [`ErrorKind::WrongType`](redstream_core::ErrorKind::WrongType) when the key is not a stream.
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
}
