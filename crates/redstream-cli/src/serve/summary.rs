//! Stream summaries without entries: length, first and last ids, and per consumer group its
//! pending count, lag and oldest pending and undelivered entries, and on Redis 7 the count of
//! entries ever added, from one script per stream (`scripts/summary.lua`).
//!
//! The transport's `stream_info` and `streams_info` read `XINFO STREAM`, whose reply carries the
//! stream's first and last entries whole, and one whole entry per group for its oldest
//! undelivered one: 120 MiB for a stream of 40 MiB entries. The script reads the same figures
//! and returns only ids. Ages are measured against the server's `TIME`, read in the same
//! script.

use std::sync::LazyLock;

use futures_util::{StreamExt, TryStreamExt, stream};
use redis::{Script, Value};
use redstream_core::{Error, ErrorKind, Result};
use redstream_transport::NodeStats;

use super::config::FAN_OUT;
use super::preview::{number, text};
use super::state::AppState;

static SUMMARY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/summary.lua")));

/// One stream.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    /// Its full name, e.g. `events:order.created` or `events.raw`.
    pub(crate) name: String,
    /// The event type whose stream it is under the prefix.
    pub(crate) event_type: Option<String>,
    /// Whether it is the dead-letter stream.
    pub(crate) dead_letter: bool,
    pub(crate) length: u64,
    pub(crate) first_id: Option<String>,
    pub(crate) last_id: Option<String>,
    pub(crate) groups: Vec<GroupInfo>,
    /// `XINFO STREAM`'s `entries-added`: every entry ever added, whatever trimming and `XDEL`
    /// removed since. `None` before Redis 7, and for a user who may not run `XINFO STREAM`.
    pub(crate) entries_added: Option<u64>,
}

/// One consumer group of a [`Summary`].
#[derive(Debug, Clone)]
pub(crate) struct GroupInfo {
    pub(crate) name: String,
    pub(crate) consumers: u64,
    pub(crate) pending: u64,
    pub(crate) last_delivered_id: String,
    /// `None` before Redis 7, and when Redis does not know it (after some deletions).
    pub(crate) lag: Option<u64>,
    pub(crate) oldest_pending_age_secs: Option<f64>,
    pub(crate) oldest_pending_idle_ms: Option<u64>,
    pub(crate) oldest_undelivered_age_secs: Option<f64>,
}

/// What the script says about a key.
enum Described {
    Stream(Summary),
    /// Not a stream: `none` when the key does not exist, else its type.
    Other(String),
}

impl AppState {
    /// The summaries of the streams the dashboard shows (under the prefix, and those
    /// `ServeConfig::streams` names), sorted by name. Keys that are not streams, or were deleted
    /// since they were listed, are left out.
    pub(crate) async fn stream_summaries(&self) -> Result<Vec<Summary>> {
        let names = crate::select::names(self.transport(), &self.config().streams).await?;
        self.summaries_of(names).await
    }

    /// Each node's figures (the transport's `nodes`, over the streams the dashboard shows),
    /// and the summaries of the streams they hold: one `SCAN` walk per node and pattern lists
    /// the streams for both, where [`stream_summaries`](Self::stream_summaries) and a separate
    /// `nodes` would walk twice.
    pub(crate) async fn nodes_and_summaries(&self) -> Result<(Vec<NodeStats>, Vec<Summary>)> {
        let nodes = crate::select::nodes(self.transport(), &self.config().streams).await?;
        let summaries = self.summaries_of(crate::select::names_on(&nodes)).await?;
        Ok((nodes, summaries))
    }

    /// The summaries of the streams `names` (sorted), leaving out keys that are not streams.
    async fn summaries_of(&self, names: Vec<String>) -> Result<Vec<Summary>> {
        let described: Vec<Described> = stream::iter(
            names
                .into_iter()
                .map(|name| async move { self.describe(&name).await }),
        )
        .buffered(FAN_OUT)
        .try_collect()
        .await?;
        Ok(described
            .into_iter()
            .filter_map(|d| match d {
                Described::Stream(summary) => Some(summary),
                Described::Other(_) => None,
            })
            .collect())
    }

    /// The summary of one stream.
    ///
    /// # Errors
    ///
    /// `NotFound` when it does not exist, `WrongType` when the key is not a stream.
    pub(crate) async fn stream_summary(&self, name: &str) -> Result<Summary> {
        match self.describe(name).await? {
            Described::Stream(summary) => Ok(summary),
            Described::Other(kind) if kind == "none" => Err(Error::not_found(
                format!("stream {name:?}"),
                "the key does not exist",
            )),
            Described::Other(kind) => Err(Error::backend(
                ErrorKind::WrongType,
                "XINFO STREAM",
                name,
                format!("the key holds a {kind}, not a stream"),
            )),
        }
    }

    /// The length of a stream (`XLEN`); 0 when it does not exist.
    pub(crate) async fn stream_length(&self, stream: &str) -> Result<u64> {
        let mut conn = self.transport().connection();
        redis::cmd("XLEN")
            .arg(stream)
            .query_async(&mut conn)
            .await
            .map_err(|err| Error::from_redis("XLEN", stream, err))
    }

    async fn describe(&self, name: &str) -> Result<Described> {
        let mut conn = self.transport().connection();
        let reply: Value = SUMMARY
            .key(name)
            .invoke_async(&mut conn)
            .await
            .map_err(|err| Error::from_redis("XINFO STREAM", name, err))?;
        let names = self.transport().names();
        parse(name, reply)
            .map(|described| match described {
                Described::Stream(mut summary) => {
                    summary.event_type = names.event_type(name).map(str::to_owned);
                    summary.dead_letter = names.is_dlq(name);
                    Described::Stream(summary)
                }
                other => other,
            })
            .ok_or_else(|| {
                Error::backend(
                    ErrorKind::Unexpected,
                    "XINFO STREAM",
                    name,
                    "unexpected reply from the dashboard's summary script",
                )
            })
    }
}

fn parse(name: &str, reply: Value) -> Option<Described> {
    let Value::Array(parts) = reply else {
        return None;
    };
    let mut parts = parts.into_iter();
    let kind = text(&parts.next()?)?;
    if kind != "stream" {
        return Some(Described::Other(kind));
    }
    let length = number(&parts.next()?)?;
    let first_id = id(parts.next()?);
    let last_id = id(parts.next()?);
    let seconds = number(&parts.next()?)?;
    let micros = number(&parts.next()?)?;
    let now_us = seconds.checked_mul(1_000_000)?.checked_add(micros)?;
    let Value::Array(groups) = parts.next()? else {
        return None;
    };
    let groups = groups
        .into_iter()
        .map(|group| parse_group(group, now_us))
        .collect::<Option<Vec<_>>>()?;
    let entries_added = parts.next().as_ref().and_then(number);
    Some(Described::Stream(Summary {
        name: name.to_owned(),
        event_type: None,
        dead_letter: false,
        length,
        first_id,
        last_id,
        groups,
        entries_added,
    }))
}

fn parse_group(group: Value, now_us: u64) -> Option<GroupInfo> {
    let Value::Array(fields) = group else {
        return None;
    };
    let [
        name,
        consumers,
        pending,
        delivered,
        lag,
        pending_id,
        pending_idle,
        undelivered,
    ]: [Value; 8] = fields.try_into().ok()?;
    let pending_id = id(pending_id);
    Some(GroupInfo {
        name: text(&name)?,
        consumers: number(&consumers)?,
        pending: number(&pending)?,
        last_delivered_id: text(&delivered)?,
        lag: number(&lag),
        oldest_pending_age_secs: pending_id.as_deref().and_then(|id| age_secs(id, now_us)),
        oldest_pending_idle_ms: pending_id.and(number(&pending_idle)),
        oldest_undelivered_age_secs: id(undelivered).and_then(|id| age_secs(&id, now_us)),
    })
}

/// An entry id, or `None` for the script's nil.
fn id(value: Value) -> Option<String> {
    text(&value)
}

/// The `<ms>` and `<seq>` of an entry id.
pub(crate) fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    Some((number(ms)?, number(seq)?))
}

/// Seconds from the time in `id` to `now_us` (microseconds), at least 0.
fn age_secs(id: &str, now_us: u64) -> Option<f64> {
    let (ms, _) = parse_id(id)?;
    // Microseconds since 1970 fit an f64 exactly for a few hundred years.
    Some(now_us.saturating_sub(ms.saturating_mul(1000)) as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_never_go_negative() {
        assert_eq!(age_secs("1000-0", 3_000_000), Some(2.0));
        assert_eq!(age_secs("5000-0", 1_000_000), Some(0.0));
        assert_eq!(age_secs("garbage", 1_000_000), None);
        assert_eq!(parse_id("1-2"), Some((1, 2)));
        assert_eq!(parse_id("1-+2"), None);
        assert_eq!(parse_id("18446744073709551616-0"), None);
    }
}
