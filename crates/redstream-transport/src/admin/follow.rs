//! Following streams: `follow` (`XREAD BLOCK`) and `follow_group` (`XREADGROUP BLOCK`), and
//! the checks and start ids they take.

use redis::Value;
use redstream_core::{Error, ErrorKind, Result};

use super::checks::require_stream_or_missing;
use super::follower::{Follower, Reading};
use super::{reads, writes};
use crate::commands::redis_code;
use crate::inspect::{check_non_empty, parse_id};
use crate::keys::validate_stream_name;
use crate::reply;
use crate::transport::RedisTransport;

/// The `XREAD` id that returns the entries from `start` on: `-` is the whole stream, `(id` the
/// entries after `id`, `id` (or a bare millisecond time) the entries from `id` on.
pub(super) fn exclusive_start(start: &str) -> Result<String> {
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

impl RedisTransport {
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
        self.follow_group_from(streams, group, consumer, None).await
    }

    /// [`follow_group`](Self::follow_group), with the position a missing group is created at:
    /// `None` for `$` (entries added from now on), or the first entry the group is to be
    /// delivered, in [`follow`](Self::follow)'s syntax (`-` for the whole stream, an id, or
    /// `(id` for the entries after it). A group that exists keeps its position, so with a
    /// `start` it is refused rather than read from somewhere else than asked
    /// ([`set_group_id`](Self::set_group_id) moves it).
    ///
    /// # Errors
    ///
    /// As for [`follow_group`](Self::follow_group); [`ErrorKind::InvalidInput`] for a
    /// malformed `start`, or a `start` for a group that exists already.
    pub async fn follow_group_from(
        &self,
        streams: &[impl AsRef<str>],
        group: &str,
        consumer: &str,
        start: Option<&str>,
    ) -> Result<Follower> {
        let streams = self.check_follow_streams(streams)?;
        check_non_empty("consumer group name", group)?;
        check_non_empty("consumer name", consumer)?;
        let position = match start {
            Some(start) => exclusive_start(start)?,
            None => "$".to_owned(),
        };
        let writes = writes(self);
        for stream in &streams {
            let mut cmd = redis::cmd("XGROUP");
            cmd.arg("CREATE")
                .arg(stream)
                .arg(group)
                .arg(&position)
                .arg("MKSTREAM");
            match writes.query::<Value>("XGROUP CREATE", stream, &cmd).await {
                Ok(_) => {
                    tracing::info!(stream = %stream, group, position, "consumer group created")
                }
                Err(err) if redis_code(&err) == Some("BUSYGROUP") => {
                    if let Some(start) = start {
                        return Err(Error::invalid_input(
                            format!("start {start:?} for consumer group {group:?} of {stream:?}"),
                            "the group exists already and goes on from its last-delivered id; \
                             move it first (XGROUP SETID) or follow it without a start",
                        ));
                    }
                }
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

    pub(super) fn check_follow_streams(&self, streams: &[impl AsRef<str>]) -> Result<Vec<String>> {
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
}
