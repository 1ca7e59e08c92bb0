//! Claiming idle pending entries for a consumer (`XAUTOCLAIM ... JUSTID`).

use std::time::Duration;

use redis::Value;
use redstream_core::{Error, ErrorKind, Result};

use super::checks::require_stream;
use super::{reads, writes};
use crate::commands::is_nogroup;
use crate::inspect::{check_non_empty, no_such_group};
use crate::keys::validate_stream_name;
use crate::reply;
use crate::transport::RedisTransport;

impl RedisTransport {
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
}
