//! How stream summaries are gathered: two pipelined round trips per batch of streams, ages
//! against the server's `TIME`.

use redis::{RedisResult, Value};
use redstream_core::{Error, Result};

use super::checks::{KeyType, parse_id, unexpected};
use super::groups::parse_pending_entry;
use super::range::raw_entry;
use super::{GroupSummary, StreamSummary};
use crate::commands::Traffic;
use crate::reply::{count, field, map, sequence, text};
use crate::transport::RedisTransport;

/// A follow-up question of `describe`'s second round trip, about group `.1` of stream `.0`.
#[derive(Clone, Copy)]
pub(super) enum Ask {
    OldestPending(usize, usize),
    OldestUndelivered(usize, usize),
}

impl Ask {
    pub(super) fn indexes(self) -> (usize, usize) {
        match self {
            Self::OldestPending(s, g) | Self::OldestUndelivered(s, g) => (s, g),
        }
    }

    pub(super) fn op(self) -> &'static str {
        match self {
            Self::OldestPending(..) => "XPENDING",
            Self::OldestUndelivered(..) => "XRANGE",
        }
    }
}

/// Whether the group may have entries it has not been delivered yet, so that asking for the
/// oldest of them is worth a command.
pub(super) fn has_undelivered(summary: &StreamSummary, group: &GroupSummary) -> bool {
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

/// Seconds between the time in an entry id and `now_us` (microseconds), at least 0.
pub(super) fn age_secs(id: &str, now_us: u64) -> Option<f64> {
    let (ms, _) = parse_id(id)?;
    let written_us = ms.saturating_mul(1000);
    // Microseconds since 1970 fit an f64 exactly for a few hundred years.
    Some(now_us.saturating_sub(written_us) as f64 / 1e6)
}

/// The reply of `TIME` (`[seconds, microseconds]`) in microseconds.
pub(super) fn server_time_us(reply: &Value) -> Option<u64> {
    let parts = sequence(reply)?;
    let secs = count(parts.first()?)?;
    let micros = count(parts.get(1)?)?;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

impl RedisTransport {
    /// Summaries of `streams`, in two round trips. With `strict`, a stream that does not exist
    /// (or is not a stream) is an error; without, it is left out.
    pub(super) async fn describe(
        &self,
        streams: &[String],
        strict: bool,
    ) -> Result<Vec<StreamSummary>> {
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
    pub(super) fn parse_summary(
        &self,
        stream: &str,
        info: &Value,
        groups: &Value,
    ) -> Result<StreamSummary> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_never_go_negative() {
        assert_eq!(age_secs("1000-0", 3_000_000), Some(2.0));
        assert_eq!(age_secs("5000-0", 1_000_000), Some(0.0));
        assert_eq!(age_secs("garbage", 1_000_000), None);
    }
}
