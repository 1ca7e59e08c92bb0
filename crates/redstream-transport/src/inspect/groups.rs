//! A group's consumers and pending entries: [`ConsumerSummary`], [`PendingQuery`],
//! [`PendingEntry`].

use std::time::Duration;

use redis::Value;
use redstream_core::Result;
use serde::Serialize;

use super::checks::{bounded_count, check_id, check_non_empty, unexpected};
use crate::reply::{count, field, map, sequence, text};
use crate::transport::RedisTransport;

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

/// One item of an extended `XPENDING` reply: `[id, consumer, idle, deliveries]`.
pub(super) fn parse_pending_entry(item: &Value) -> Option<PendingEntry> {
    let parts = sequence(item)?;
    Some(PendingEntry {
        id: text(parts.first()?)?,
        consumer: text(parts.get(1)?)?,
        idle_ms: count(parts.get(2)?)?,
        deliveries: count(parts.get(3)?)?,
    })
}

impl RedisTransport {
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
}
