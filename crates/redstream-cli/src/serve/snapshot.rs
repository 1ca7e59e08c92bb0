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
use redstream_core::{DecodeError, ErrorKind, Event, EventLimits, Result, wire};
use redstream_transport::{ConsumerSummary, NodeStats, ServerInfo, Topology};
use serde::Serialize;

use super::config::{
    FAN_OUT, PREVIEW_BYTES, REST_ERROR_BYTES, SNAPSHOT_DEAD_LETTERS, SNAPSHOT_ERROR_BYTES,
    SNAPSHOT_GROUPS_WITH_CONSUMERS,
};
use super::history::Sample;
use super::preview::{Direction, PreviewEntry, PreviewField, ReadLimits};
use super::state::AppState;
use super::summary::{GroupInfo, Summary};

/// Bytes of a dead letter's payload shown in a snapshot.
const PAYLOAD_PREVIEW_BYTES: usize = 240;

/// The fields of a dead letter (docs/wire-format.md): what the dashboard reads of one.
pub(crate) const DEAD_LETTER_FIELDS: [&str; 12] = [
    "event",
    "error",
    "original_type",
    "stream",
    "entry_id",
    "group",
    "consumer",
    "deliveries",
    "first_failure_ms",
    "last_failure_ms",
    "undecodable",
    "raw",
];

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
    /// The server, from `INFO` (on a cluster: the masters' memory, clients and ops/s summed).
    pub(crate) redis: ServerInfo,
    /// Each master of a cluster (the one server otherwise), and their totals.
    pub(crate) nodes: NodesView,
    /// Every stream shown (under the prefix, and those `--streams` names), sorted by name; the
    /// dead-letter stream included.
    pub(crate) streams: Vec<StreamView>,
    /// The oldest dead letters.
    pub(crate) dlq: DlqView,
    /// This snapshot's sample of the throughput history (`GET /api/throughput` has the rest);
    /// `null` when it was not sampled (the first snapshot, or one sooner than a second after the
    /// last sample).
    pub(crate) throughput: Option<Sample>,
}

/// The Nodes panel: per node its memory, load, keys and streams, and the totals.
#[derive(Debug, Serialize)]
pub(crate) struct NodesView {
    /// `single`, `cluster` or `sentinel`.
    pub(crate) topology: &'static str,
    /// One per master of a cluster, by address; one otherwise.
    pub(crate) nodes: Vec<NodeView>,
    /// Sums over `nodes` (`maxmemory` only when every node has a limit; else 0).
    pub(crate) totals: NodeView,
}

/// One node of [`NodesView`] (or their totals): `redstream nodes --json`'s object, without the
/// stream names, and the node's key lookups.
#[derive(Debug, Serialize)]
pub(crate) struct NodeView {
    #[serde(flatten)]
    pub(crate) summary: crate::commands::nodes::NodeSummary,
    /// `INFO stats` `keyspace_hits`: lookups that found their key since the node started.
    pub(crate) keyspace_hits: Option<u64>,
    /// `INFO stats` `keyspace_misses`: lookups that did not.
    pub(crate) keyspace_misses: Option<u64>,
    /// `keyspace_hits / (keyspace_hits + keyspace_misses)`, from 0 to 1; `null` when there was
    /// no lookup (or the node does not report them).
    pub(crate) hit_ratio: Option<f64>,
}

impl NodeView {
    pub(crate) fn of(node: &NodeStats) -> Self {
        Self {
            summary: crate::commands::nodes::NodeSummary::of(node),
            keyspace_hits: node.info.keyspace_hits,
            keyspace_misses: node.info.keyspace_misses,
            hit_ratio: node.info.hit_ratio(),
        }
    }
}

impl NodesView {
    pub(crate) fn new(topology: redstream_transport::Topology, nodes: &[NodeStats]) -> Self {
        let totals = crate::commands::nodes::totals(nodes);
        Self {
            topology: topology.as_str(),
            nodes: nodes.iter().map(NodeView::of).collect(),
            totals: NodeView::of(&totals),
        }
    }
}

/// One stream, its consumer groups and their consumers.
#[derive(Debug, Serialize)]
pub(crate) struct StreamView {
    /// The stream's name, e.g. `events:order.created` or `events.raw`: what paths accept.
    pub(crate) name: String,
    /// On a cluster, the address of the master that holds it; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) node: Option<String>,
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
    /// Every entry ever added (`XINFO STREAM`'s `entries-added`, which trimming does not
    /// lower); `None` before Redis 7 and for a user who may not run `XINFO STREAM`.
    pub(crate) entries_added: Option<u64>,
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
    /// The event's id, when it decodes (and was read whole: see `event_bytes`).
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
    /// Whether a redrive can publish it again: its event decodes, or may (an event within the
    /// size limit that this view did not read whole).
    pub(crate) redrivable: bool,
    /// Why the event does not decode.
    pub(crate) decode_error: Option<String>,
    /// The size of the stored `event` field in bytes. An event is read whole only when it is
    /// within the wire format's limit and the view's budget; otherwise `event` and `event_id`
    /// are `null`, and snapshots preview the start of its payload.
    pub(crate) event_bytes: u64,
    /// The start of the payload as JSON text (snapshots only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) payload_preview: Option<String>,
    /// The whole event (REST only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) event: Option<Event>,
    /// For an event that does not decode (or was not read whole), the stored `event` field, cut
    /// to 4 KiB (REST only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) raw_event: Option<String>,
}

/// How much of a dead letter a view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    /// Snapshots: a payload preview and the start of the error.
    Preview,
    /// The REST endpoints: the whole event and error.
    Full,
}

/// The event of a dead letter, as far as it was read.
struct Decoded {
    event: Option<Event>,
    decode_error: Option<String>,
    /// Whether a redrive may publish it.
    redrivable: bool,
    /// The start of the stored envelope, when it was not read whole.
    cut_envelope: Option<String>,
}

impl DeadLetterView {
    /// The view of a dead letter read by [`AppState::read_previews`].
    pub(crate) fn new(entry: &PreviewEntry, detail: Detail, limits: &EventLimits) -> Self {
        let full = detail == Detail::Full;
        let shown =
            |name: &str, max: usize| entry.field(name).map_or_else(String::new, |f| show(f, max));
        let number = |name: &str| {
            entry
                .field(name)
                .filter(|f| f.is_whole())
                .and_then(|f| std::str::from_utf8(&f.value).ok()?.parse::<u64>().ok())
        };
        let decoded = decode(entry, limits);
        let event_field = entry.field("event");
        let payload_preview = (!full)
            .then(|| match (&decoded.event, &decoded.cut_envelope) {
                (Some(event), _) => Some(cut(event.payload().to_string(), PAYLOAD_PREVIEW_BYTES)),
                (None, Some(start)) => payload_start(start),
                (None, None) => None,
            })
            .flatten();
        let raw_event = (full && decoded.event.is_none())
            .then(|| event_field.map(|f| show(f, PREVIEW_BYTES)))
            .flatten();
        Self {
            id: entry.id.clone(),
            dead_lettered_at_ms: id_millis(&entry.id),
            event_id: decoded.event.as_ref().map(|event| event.id().to_string()),
            original_type: shown("original_type", PREVIEW_BYTES),
            stream: shown("stream", PREVIEW_BYTES),
            entry_id: shown("entry_id", PREVIEW_BYTES),
            group: shown("group", PREVIEW_BYTES),
            consumer: shown("consumer", PREVIEW_BYTES),
            deliveries: number("deliveries")
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            error: shown(
                "error",
                if full {
                    REST_ERROR_BYTES
                } else {
                    SNAPSHOT_ERROR_BYTES
                },
            ),
            first_failure_ms: number("first_failure_ms"),
            last_failure_ms: number("last_failure_ms"),
            redrivable: decoded.redrivable,
            decode_error: decoded.decode_error,
            event_bytes: event_field.map_or(0, |f| u64::try_from(f.value_len).unwrap_or(u64::MAX)),
            payload_preview,
            event: if full { decoded.event } else { None },
            raw_event,
        }
    }
}

/// What reading `entry`'s event gives: as the transport decodes a dead letter, except that an
/// event not read whole is not decoded.
fn decode(entry: &PreviewEntry, limits: &EventLimits) -> Decoded {
    let fails = |reason: String| Decoded {
        event: None,
        decode_error: Some(reason),
        redrivable: false,
        cut_envelope: None,
    };
    if entry.field("raw").is_some() {
        return fails(
            "the original entry is in another format (a raw subscription's); raw_event holds its \
             fields"
                .to_owned(),
        );
    }
    if entry.field("undecodable").is_some() {
        return fails(
            "the original stream entry could not be decoded; raw_event holds its fields".to_owned(),
        );
    }
    if let Some(event) = entry.field("event").filter(|f| f.value.len() < f.value_len) {
        if event.value_len > limits.max_encoded_bytes {
            let reason = DecodeError::TooLarge {
                field: "event",
                len: event.value_len,
                limit: limits.max_encoded_bytes,
            };
            return Decoded {
                cut_envelope: Some(lossy(event, usize::MAX)),
                ..fails(reason.to_string())
            };
        }
        // Within the limit, but over what this view reads whole: it may decode, and a redrive
        // will say if it does not.
        return Decoded {
            event: None,
            decode_error: None,
            redrivable: true,
            cut_envelope: Some(lossy(event, usize::MAX)),
        };
    }
    // The original entry's id gives an envelope without a timestamp the time it was first
    // written; a dead letter written by hand has none, and uses its own.
    let original = entry
        .field("entry_id")
        .filter(|f| f.is_whole() && !f.value.is_empty())
        .and_then(|f| std::str::from_utf8(&f.value).ok());
    let entry_id = original.unwrap_or(&entry.id);
    let fields = entry
        .fields
        .iter()
        .map(|f| (f.name.as_slice(), f.value.as_slice()));
    match wire::decode_stream_entry(entry_id, fields, limits) {
        Ok(event) => Decoded {
            event: Some(event),
            decode_error: None,
            redrivable: true,
            cut_envelope: None,
        },
        Err(err) => fails(err.to_string()),
    }
}

/// The start of the payload in the start of an envelope (`..."payload":{...`), which redstream
/// writes after `v`, `id` and `type`; `None` when it is not there.
fn payload_start(envelope: &str) -> Option<String> {
    let key = "\"payload\":";
    let start = envelope.find(key)? + key.len();
    let mut preview = cut(
        envelope[start..].trim_start().to_owned(),
        PAYLOAD_PREVIEW_BYTES,
    );
    if !preview.ends_with("...") {
        preview.push_str("...");
    }
    Some(preview)
}

/// A field's value as text for people: lossy UTF-8, at most `max` bytes, with `...` when cut
/// here or by the read.
pub(crate) fn show(field: &PreviewField, max: usize) -> String {
    let text = lossy(field, max);
    if text.len() > max || field.value.len() < field.value_len {
        let mut text = cut(text, max);
        if !text.ends_with("...") {
            text.push_str("...");
        }
        text
    } else {
        text
    }
}

/// A field's value as lossy UTF-8, without the incomplete character a cut may end with.
fn lossy(field: &PreviewField, max: usize) -> String {
    let mut bytes = &field.value[..field.value.len().min(max.saturating_add(4))];
    if bytes.len() < field.value_len
        && let Err(err) = std::str::from_utf8(bytes)
        && err.error_len().is_none()
    {
        bytes = &bytes[..err.valid_up_to()];
    }
    String::from_utf8_lossy(bytes).into_owned()
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
    /// A snapshot of everything: `INFO`, the nodes and the streams overview with consumers,
    /// the oldest dead letters. Three calls run concurrently, then the consumers of each group.
    pub(crate) async fn snapshot(&self) -> Result<Snapshot> {
        let transport = self.transport();
        let (redis, (nodes, summaries), (dead, _)) = tokio::try_join!(
            transport.server_info(),
            self.nodes_and_summaries(),
            self.dead_letters("-", SNAPSHOT_DEAD_LETTERS, Detail::Preview),
        )?;
        let generated_at_ms = now_ms();
        let throughput = self.history().record(generated_at_ms, &summaries);
        let mut streams = self
            .stream_views(summaries, SNAPSHOT_GROUPS_WITH_CONSUMERS)
            .await?;
        let topology = transport.topology();
        if topology == Topology::Cluster {
            let node_of = crate::select::node_of(&nodes);
            for stream in &mut streams {
                stream.node = node_of.get(&stream.name).cloned();
            }
        }
        let dlq_key = transport.names().dlq();
        let dlq_length = streams
            .iter()
            .find(|s| s.name == dlq_key)
            .map_or(0, |s| s.length);
        super::state::Counters::add(&self.counters().snapshots, 1);
        Ok(Snapshot {
            message_type: "snapshot",
            generated_at_ms,
            prefix: self.prefix().to_owned(),
            patterns: self.config().streams.clone(),
            refresh_ms: u64::try_from(self.config().refresh.as_millis()).unwrap_or(u64::MAX),
            writes_allowed: self.config().allow_writes,
            redis,
            nodes: NodesView::new(topology, &nodes),
            streams,
            dlq: DlqView {
                stream: dlq_key,
                length: dlq_length,
                entries: dead,
            },
            throughput,
        })
    }

    /// At most `count` dead letters from `start` (`-` for the oldest, or a `startId`), read
    /// within the limits of `detail` (see [`ReadLimits`]), and whether those limits ended the
    /// read early; none when the dead-letter stream does not exist.
    pub(crate) async fn dead_letters(
        &self,
        start: &str,
        count: usize,
        detail: Detail,
    ) -> Result<(Vec<DeadLetterView>, bool)> {
        let limits = &self.transport().options().limits;
        let read = match detail {
            Detail::Preview => ReadLimits::snapshot_dead_letters(limits.max_encoded_bytes),
            Detail::Full => ReadLimits::dead_letters(limits.max_encoded_bytes),
        };
        let dlq = self.transport().names().dlq();
        let previews = match self
            .read_previews(&dlq, (start, "+"), count, Direction::Forward, &read)
            .await
        {
            Ok(previews) => previews,
            // No dead letter was ever written.
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok((Vec::new(), false)),
            Err(err) => return Err(err),
        };
        let views = previews
            .entries
            .iter()
            .map(|entry| DeadLetterView::new(entry, detail, limits))
            .collect();
        Ok((views, previews.stopped))
    }

    /// Views of `summaries`, with the consumers of the first `max_groups` groups.
    pub(crate) async fn stream_views(
        &self,
        summaries: Vec<Summary>,
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

fn group_view(group: GroupInfo, consumers: Vec<ConsumerSummary>) -> GroupView {
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

fn stream_view(summary: Summary, groups: Vec<GroupView>) -> StreamView {
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
        node: None,
        event_type: summary.event_type,
        dead_letter: summary.dead_letter,
        length: summary.length,
        entries_added: summary.entries_added,
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
