//! Dead letters by hand: one by id, purge, redrive by event type.

use redis::Value;
use redstream_core::{Error, ErrorKind, EventLimits, Result, wire};

use super::checks::check_entry_id;
use super::{reads, writes};
use crate::dlq::{DeadLetterEntry, RedriveReport, field};
use crate::keys::validate_event_type;
use crate::reply;
use crate::transport::RedisTransport;

/// Dead letters read per `XRANGE` page by [`RedisTransport::redrive_type`].
pub(super) const PAGE: usize = 100;

/// Whether a dead letter belongs to `event_type`: its `original_type`, or its event's type.
pub(super) fn is_of_type(entry: &reply::RawEntry, event_type: &str, limits: &EventLimits) -> bool {
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

impl RedisTransport {
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
}
