//! What the dashboard shows, as JSON: streams with their groups and consumers, dead letters,
//! the server. One [`Snapshot`] feeds the page over the WebSocket; its parts answer the REST
//! endpoints.
//!
//! Field names follow the seeds where they name them (`length`, `consumer_groups`), and the
//! transport's summaries otherwise. Ages are seconds measured on the server's clock; idle times
//! are milliseconds as Redis reports them.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt, TryStreamExt, stream};
use redstream_core::{ErrorKind, Event, Result};
use redstream_transport::{
    ConsumerSummary, DeadLetterEntry, GroupSummary, ServerInfo, StreamSummary,
};
use serde::Serialize;

use super::config::{
    FAN_OUT, SNAPSHOT_DEAD_LETTERS, SNAPSHOT_ERROR_BYTES, SNAPSHOT_GROUPS_WITH_CONSUMERS,
};
use super::state::AppState;

/// Bytes of a dead letter's payload shown in a snapshot.
const PAYLOAD_PREVIEW_BYTES: usize = 240;

/// Bytes of an undecodable dead letter's raw `event` field returned by the REST endpoints.
const RAW_EVENT_BYTES: usize = 4096;

/// Everything the page shows, at one moment.
#[derive(Debug, Serialize)]
pub(crate) struct Snapshot {
    /// Always `"snapshot"`: WebSocket messages carry a `type`.
    #[serde(rename = "type")]
    pub(crate) message_type: &'static str,
    /// When it was taken, Unix milliseconds (the dashboard's clock).
    pub(crate) generated_at_ms: u64,
    /// The stream prefix, e.g. `events`.
    pub(crate) prefix: String,
    /// The `--streams` patterns: streams shown besides those under the prefix.
    pub(crate) patterns: Vec<String>,
    /// The refresh interval of the WebSocket feed.
    pub(crate) refresh_ms: u64,
    /// Whether the write actions (redrive, purge) are on.
    pub(crate) writes_allowed: bool,
    /// The server, from `INFO`.
    pub(crate) redis: ServerInfo,
    /// Every stream shown (under the prefix, and those `--streams` names), sorted by name; the
    /// dead-letter stream included.
    pub(crate) streams: Vec<StreamView>,
    /// The oldest dead letters.
    pub(crate) dlq: DlqView,
}

/// One stream, its consumer groups and their consumers.
#[derive(Debug, Serialize)]
pub(crate) struct StreamView {
    /// The stream's name, e.g. `events:order.created` or `events.raw`: what paths accept.
    pub(crate) name: String,
    /// A shorter name for people: the event type of a type's stream (`order.created`), `dlq`
    /// for the dead-letter stream, the full name of any other stream (`events.raw`).
    pub(crate) short_name: String,
    /// The event type whose stream this is under the prefix; `None` for the dead-letter stream
    /// and streams named otherwise.
    pub(crate) event_type: Option<String>,
    /// Whether this is the dead-letter stream, `<prefix>:dlq`.
    pub(crate) dead_letter: bool,
    /// Entries in the stream (`XLEN`).
    pub(crate) length: u64,
    /// Oldest and newest entry ids; `None` when empty.
    pub(crate) first_id: Option<String>,
    pub(crate) last_id: Option<String>,
    /// The largest lag of its groups: entries the slowest group has not been delivered yet.
    /// `None` without groups, or when Redis reports no lag (before 7.0, after deletions).
    pub(crate) lag: Option<u64>,
    /// Pending entries (delivered, not acknowledged) summed over its groups.
    pub(crate) pending: u64,
    /// Age in seconds of the oldest pending entry of any group; `None` when nothing is pending.
    pub(crate) oldest_pending_age_secs: Option<f64>,
    /// Its consumer groups, by name.
    pub(crate) consumer_groups: Vec<GroupView>,
}

/// One consumer group.
#[derive(Debug, Serialize)]
pub(crate) struct GroupView {
    pub(crate) name: String,
    /// Consumers the group knows.
    pub(crate) consumer_count: u64,
    pub(crate) pending: u64,
    pub(crate) last_delivered_id: String,
    pub(crate) lag: Option<u64>,
    pub(crate) oldest_pending_age_secs: Option<f64>,
    pub(crate) oldest_pending_idle_ms: Option<u64>,
    pub(crate) oldest_undelivered_age_secs: Option<f64>,
    /// The consumers, by name. Empty past the first 256 groups of a snapshot (see
    /// `consumer_count`).
    pub(crate) consumers: Vec<ConsumerSummary>,
}

/// The dead-letter stream.
#[derive(Debug, Serialize)]
pub(crate) struct DlqView {
    /// Its name, `<prefix>:dlq` (`events:dlq`).
    pub(crate) stream: String,
    /// Dead letters in it.
    pub(crate) length: u64,
    /// The oldest ones, at most `count` asked for.
    pub(crate) entries: Vec<DeadLetterView>,
}

/// One dead letter.
#[derive(Debug, Serialize)]
pub(crate) struct DeadLetterView {
    /// Its id in the dead-letter stream: what redrive takes.
    pub(crate) id: String,
    /// When it was dead-lettered (the id's time), Unix milliseconds.
    pub(crate) dead_lettered_at_ms: Option<u64>,
    /// The event's id, when it decodes.
    pub(crate) event_id: Option<String>,
    /// The event type of the stream it came from (seed 000's `original_type`).
    pub(crate) original_type: String,
    /// The stream it came from.
    pub(crate) stream: String,
    /// Its id in that stream; empty when it was dead-lettered by hand.
    pub(crate) entry_id: String,
    pub(crate) group: String,
    pub(crate) consumer: String,
    pub(crate) deliveries: u32,
    /// Why it was dead-lettered; in snapshots, its first 1 KiB.
    pub(crate) error: String,
    pub(crate) first_failure_ms: Option<u64>,
    pub(crate) last_failure_ms: Option<u64>,
    /// Whether a redrive can publish it again (its event decodes).
    pub(crate) redrivable: bool,
    /// Why the event does not decode.
    pub(crate) decode_error: Option<String>,
    /// The start of the payload as JSON text (snapshots only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) payload_preview: Option<String>,
    /// The whole event (REST only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) event: Option<Event>,
    /// For an event that does not decode, the stored `event` field, cut to 4 KiB (REST only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) raw_event: Option<String>,
}

impl DeadLetterView {
    /// `full` keeps the whole event and error (REST); otherwise a payload preview and the
    /// start of the error (snapshots).
    pub(crate) fn new(entry: DeadLetterEntry, full: bool) -> Self {
        let millis = |time: Option<SystemTime>| {
            time.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .and_then(|d| u64::try_from(d.as_millis()).ok())
        };
        let payload_preview = (!full)
            .then(|| {
                entry
                    .event
                    .as_ref()
                    .map(|event| cut(event.payload().to_string(), PAYLOAD_PREVIEW_BYTES))
            })
            .flatten();
        let raw_event =
            (full && entry.event.is_none()).then(|| cut(entry.raw_event, RAW_EVENT_BYTES));
        Self {
            dead_lettered_at_ms: id_millis(&entry.id),
            event_id: entry.event.as_ref().map(|event| event.id().to_string()),
            redrivable: entry.event.is_some(),
            id: entry.id,
            original_type: entry.original_type,
            stream: entry.stream,
            entry_id: entry.entry_id,
            group: entry.group,
            consumer: entry.consumer,
            deliveries: entry.deliveries,
            error: if full {
                entry.error
            } else {
                cut(entry.error, SNAPSHOT_ERROR_BYTES)
            },
            first_failure_ms: millis(entry.first_failure),
            last_failure_ms: millis(entry.last_failure),
            decode_error: entry.decode_error,
            payload_preview,
            event: if full { entry.event } else { None },
            raw_event,
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary, with `...` when cut.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// The milliseconds of a `<ms>-<seq>` id.
fn id_millis(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

impl AppState {
    /// A snapshot of everything: `INFO`, the streams overview with consumers, the oldest dead
    /// letters. Three calls run concurrently, then the consumers of each group.
    pub(crate) async fn snapshot(&self) -> Result<Snapshot> {
        let transport = self.transport();
        let (redis, summaries, dead) = tokio::try_join!(
            transport.server_info(),
            self.stream_summaries(),
            transport.dlq_entries(SNAPSHOT_DEAD_LETTERS),
        )?;
        let streams = self
            .stream_views(summaries, SNAPSHOT_GROUPS_WITH_CONSUMERS)
            .await?;
        let dlq_key = transport.names().dlq();
        let dlq_length = streams
            .iter()
            .find(|s| s.name == dlq_key)
            .map_or(0, |s| s.length);
        super::state::Counters::add(&self.counters().snapshots, 1);
        Ok(Snapshot {
            message_type: "snapshot",
            generated_at_ms: now_ms(),
            prefix: self.prefix().to_owned(),
            patterns: self.config().streams.clone(),
            refresh_ms: u64::try_from(self.config().refresh.as_millis()).unwrap_or(u64::MAX),
            writes_allowed: self.config().allow_writes,
            redis,
            streams,
            dlq: DlqView {
                stream: dlq_key,
                length: dlq_length,
                entries: dead
                    .into_iter()
                    .map(|entry| DeadLetterView::new(entry, false))
                    .collect(),
            },
        })
    }

    /// Views of `summaries`, with the consumers of the first `max_groups` groups.
    pub(crate) async fn stream_views(
        &self,
        summaries: Vec<StreamSummary>,
        max_groups: usize,
    ) -> Result<Vec<StreamView>> {
        let asks: Vec<(String, String)> = summaries
            .iter()
            .flat_map(|s| s.groups.iter().map(|g| (s.name.clone(), g.name.clone())))
            .take(max_groups)
            .collect();
        let transport = self.transport();
        let mut consumers: HashMap<(String, String), Vec<ConsumerSummary>> =
            stream::iter(asks.into_iter().map(|(stream, group)| async move {
                match transport.consumers(&stream, &group).await {
                    Ok(list) => Ok(((stream, group), list)),
                    // The group or stream was deleted since the overview: it has no consumers.
                    Err(err) if err.kind() == ErrorKind::NotFound => {
                        Ok(((stream, group), Vec::new()))
                    }
                    Err(err) => Err(err),
                }
            }))
            .buffered(FAN_OUT)
            .try_collect()
            .await?;
        Ok(summaries
            .into_iter()
            .map(|mut summary| {
                let groups = std::mem::take(&mut summary.groups)
                    .into_iter()
                    .map(|group| {
                        let list = consumers
                            .remove(&(summary.name.clone(), group.name.clone()))
                            .unwrap_or_default();
                        group_view(group, list)
                    })
                    .collect();
                stream_view(summary, groups)
            })
            .collect())
    }
}

fn group_view(group: GroupSummary, consumers: Vec<ConsumerSummary>) -> GroupView {
    GroupView {
        name: group.name,
        consumer_count: group.consumers,
        pending: group.pending,
        last_delivered_id: group.last_delivered_id,
        lag: group.lag,
        oldest_pending_age_secs: group.oldest_pending_age_secs,
        oldest_pending_idle_ms: group.oldest_pending_idle_ms,
        oldest_undelivered_age_secs: group.oldest_undelivered_age_secs,
        consumers,
    }
}

fn stream_view(summary: StreamSummary, groups: Vec<GroupView>) -> StreamView {
    let lag = groups.iter().filter_map(|g| g.lag).max();
    let pending = groups.iter().map(|g| g.pending).sum();
    let oldest_pending_age_secs = groups
        .iter()
        .filter_map(|g| g.oldest_pending_age_secs)
        .reduce(f64::max);
    StreamView {
        short_name: match (&summary.event_type, summary.dead_letter) {
            (Some(event_type), _) => event_type.clone(),
            (None, true) => "dlq".to_owned(),
            (None, false) => summary.name.clone(),
        },
        name: summary.name,
        event_type: summary.event_type,
        dead_letter: summary.dead_letter,
        length: summary.length,
        first_id: summary.first_id,
        last_id: summary.last_id,
        lag,
        pending,
        oldest_pending_age_secs,
        consumer_groups: groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_keep_characters_whole() {
        assert_eq!(cut("abc".to_owned(), 3), "abc");
        assert_eq!(cut("abcd".to_owned(), 3), "abc...");
        assert_eq!(cut("ééé".to_owned(), 3), "é...");
        assert_eq!(id_millis("1700000000000-3"), Some(1_700_000_000_000));
        assert_eq!(id_millis("x"), None);
    }
}
