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

/// Dead letters read per `XRANGE`/`XREVRANGE` page by [`RedisTransport::dlq_page`] and
/// [`RedisTransport::dlq_select`] while they look for matches.
const SCAN_PAGE: usize = 200;

impl RedisTransport {
    /// One page of dead letters for a listing that pages and filters: up to `count` entries
    /// that `keep` accepts, read from `from` on (exclusive; `None` for the end of the stream
    /// the reading starts at), newest first when `newest_first`, oldest first otherwise. The
    /// stream is read in pages of 200 until `count` entries are kept or it ends, so a filter
    /// that matches little reads far; the pages bypass the circuit breaker like every read.
    ///
    /// Returns the kept entries in reading order, and whether the stream holds entries past the
    /// last one read in that direction (the next page starts after the last entry returned,
    /// and may hold no match). A dead-letter stream that does not exist is an empty page.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] when `count` is 0 or `from` is not a stream entry id; a Redis
    /// error if the stream cannot be read.
    pub async fn dlq_page(
        &self,
        newest_first: bool,
        from: Option<&str>,
        count: usize,
        mut keep: impl FnMut(&DeadLetterEntry) -> bool + Send,
    ) -> Result<(Vec<DeadLetterEntry>, bool)> {
        if count == 0 {
            return Err(Error::invalid_input("count", "must be at least 1"));
        }
        if let Some(from) = from {
            check_entry_id("dead-letter entry id", from)?;
        }
        let dlq = self.inner.names.dlq();
        let limits = &self.inner.options.limits;
        let mut cursor = from.map(|id| format!("({id}"));
        let mut kept = Vec::new();
        loop {
            let (name, start, end) = if newest_first {
                ("XREVRANGE", cursor.as_deref().unwrap_or("+"), "-")
            } else {
                ("XRANGE", cursor.as_deref().unwrap_or("-"), "+")
            };
            let mut cmd = redis::cmd(name);
            cmd.arg(&dlq)
                .arg(start)
                .arg(end)
                .arg("COUNT")
                .arg(SCAN_PAGE);
            let reply: Value = reads(self).query(name, &dlq, &cmd).await?;
            let entries = reply::entries(reply)
                .map_err(|reason| Error::backend(ErrorKind::Unexpected, name, &dlq, reason))?;
            let full = entries.len() == SCAN_PAGE;
            let read = entries.len();
            for (at, entry) in entries.into_iter().enumerate() {
                let entry = DeadLetterEntry::from_raw(entry, limits);
                cursor = Some(format!("({}", entry.id));
                if keep(&entry) {
                    kept.push(entry);
                    if kept.len() == count {
                        // More past it: the rest of this page, or a full page's successor.
                        let more = at + 1 < read
                            || (full
                                && self
                                    .dlq_has_past(&dlq, newest_first, cursor.as_deref())
                                    .await?);
                        return Ok((kept, more));
                    }
                }
            }
            if !full {
                return Ok((kept, false));
            }
        }
    }

    /// Whether the dead-letter stream has an entry past `cursor` (an exclusive `(id` bound) in
    /// the reading direction.
    async fn dlq_has_past(
        &self,
        dlq: &str,
        newest_first: bool,
        cursor: Option<&str>,
    ) -> Result<bool> {
        let (name, start, end) = if newest_first {
            ("XREVRANGE", cursor.unwrap_or("+"), "-")
        } else {
            ("XRANGE", cursor.unwrap_or("-"), "+")
        };
        let mut cmd = redis::cmd(name);
        cmd.arg(dlq).arg(start).arg(end).arg("COUNT").arg(1);
        let reply: Value = reads(self).query(name, dlq, &cmd).await?;
        let entries = reply::entries(reply)
            .map_err(|reason| Error::backend(ErrorKind::Unexpected, name, dlq, reason))?;
        Ok(!entries.is_empty())
    }

    /// Every dead letter present now that `keep` accepts, oldest first: the dead-letter stream
    /// read in pages of 200 up to its last entry at the start (dead letters added meanwhile are
    /// not looked at). What a redrive by filter selects before it redrives the ids with
    /// [`redrive_ids`](Self::redrive_ids), and what its confirmation counts. A dead-letter
    /// stream that does not exist selects nothing.
    ///
    /// # Errors
    ///
    /// A Redis error if the stream cannot be read.
    pub async fn dlq_select(
        &self,
        mut keep: impl FnMut(&DeadLetterEntry) -> bool + Send,
    ) -> Result<Vec<DeadLetterEntry>> {
        self.dlq_select_map(|entry| keep(&entry).then_some(entry))
            .await
    }

    /// [`dlq_select`](Self::dlq_select) keeping only what `pick` takes from each dead letter it
    /// selects (`Some`): a selection of many dead letters held as, say, their ids and a flag,
    /// not as whole entries with their stored events.
    ///
    /// # Errors
    ///
    /// A Redis error if the stream cannot be read.
    pub async fn dlq_select_map<T: Send>(
        &self,
        mut pick: impl FnMut(DeadLetterEntry) -> Option<T> + Send,
    ) -> Result<Vec<T>> {
        let dlq = self.inner.names.dlq();
        let limits = &self.inner.options.limits;
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(&dlq).arg("+").arg("-").arg("COUNT").arg(1);
        let reply: Value = reads(self).query("XREVRANGE", &dlq, &cmd).await?;
        let last = reply::entries(reply)
            .map_err(|reason| Error::backend(ErrorKind::Unexpected, "XREVRANGE", &dlq, reason))?;
        let Some(end) = last.into_iter().next().map(|entry| entry.id) else {
            return Ok(Vec::new());
        };
        let mut selected = Vec::new();
        let mut from = "-".to_owned();
        loop {
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&dlq)
                .arg(&from)
                .arg(&end)
                .arg("COUNT")
                .arg(SCAN_PAGE);
            let reply: Value = reads(self).query("XRANGE", &dlq, &cmd).await?;
            let entries = reply::entries(reply)
                .map_err(|reason| Error::backend(ErrorKind::Unexpected, "XRANGE", &dlq, reason))?;
            let Some(last) = entries.last().map(|entry| entry.id.clone()) else {
                return Ok(selected);
            };
            let full = entries.len() == SCAN_PAGE;
            for entry in entries {
                selected.extend(pick(DeadLetterEntry::from_raw(entry, limits)));
            }
            if !full || last == end {
                return Ok(selected);
            }
            from = format!("({last}");
        }
    }
}
