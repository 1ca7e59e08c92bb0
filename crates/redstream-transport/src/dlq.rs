//! Dead letters: the `{prefix}:dlq` stream (`events:dlq`; `events:{dlq}` in the cluster
//! layout), where entries go that will not be handled.
//!
//! An entry is dead-lettered when its handler failed `max_deliveries` times (or once, with
//! `dead_letter_on_first_failure`), when it was claimed after `max_deliveries` deliveries without
//! an acknowledgement (its consumers kept dying on it), when it cannot be decoded, when a
//! subscription by event type finds an event of another type in its stream, or by hand with
//! [`publish_to_dlq`](RedisTransport::publish_to_dlq). The original entry is acknowledged, never
//! deleted: other groups reading the stream still get it. The fields are listed in
//! `docs/wire-format.md` ("Dead-letter entries"); the first three, `event`, `error` and
//! `original_type`, are seed 000's; `stream` and `entry_id` name the entry it was moved from.
//! The dead-letter stream is never trimmed by the transport: remove entries with the redrive
//! methods (or `XDEL`/`XTRIM` by hand).
//!
//! # What `event` holds
//!
//! | entry | `event` | flag |
//! |---|---|---|
//! | a redstream envelope | the envelope as written | none |
//! | an entry that could not be decoded | a JSON object of its fields (a repeated field's values in an array) | `undecodable` |
//! | an entry of a raw subscription or one with a decoder | a JSON array of its `[name, value]` pairs, in order | `raw` |
//!
//! Values are text: bytes that are not UTF-8 are replaced by `U+FFFD`.
//!
//! # The move, plain layout: one transaction
//!
//! ```text
//! MULTI
//! XADD events:dlq * event <envelope> error <message> original_type order.created stream events:order.created entry_id <id> ...
//! XACK events:order.created <group> <id>
//! EXEC
//! ```
//!
//! The entry is in the dead-letter stream or pending in its own, never in neither and never in
//! both. (The transport connects to one server; this assumes both keys are on it.)
//!
//! # The move, cluster layout: two steps, repeats removed by the redrive
//!
//! `events:{dlq}` and `events:{payment.failed}` are in different slots, so one transaction
//! cannot hold both. The move is `XADD` to the dead-letter stream, then `XACK` of the entry (in
//! one round trip, not atomic):
//!
//! - never lost: the entry is acknowledged only after its dead letter was written;
//! - a failure between the two (a crash, a dropped connection, a refused `XACK`) leaves the entry
//!   pending: it is claimed again and, past `max_deliveries`, dead-lettered again. That repeat
//!   carries the same `stream` and `entry_id`, so it is recognisable;
//! - never silently doubled: in the cluster layout a redrive keeps a record (the hash
//!   `events:{dlq}:redriven`, in the dead-letter stream's slot) of the `<entry_id> <stream>` of
//!   every dead letter it republished, with the id it was republished as. A dead letter whose
//!   entry is in the record is deleted instead of republished, and counted in
//!   [`RedriveReport::repeats`], whether it came before or after the redrive. The record grows
//!   by one field per redriven dead letter; delete it by hand once no repeat can come any more.
//!
//! # Reading and redriving
//!
//! - [`dlq_entries`](RedisTransport::dlq_entries) lists the oldest dead letters, decoded into
//!   [`DeadLetterEntry`] values.
//! - [`consume_dlq`](RedisTransport::consume_dlq) subscribes a handler to the dead-letter stream,
//!   in the consumer group `{consumer_group}-dlq`, from its beginning. It receives the original
//!   events. Handling one does not remove it from the stream (the group remembers what it
//!   handled); a dead letter that holds fields rather than an event, or whose handler keeps
//!   failing, is logged and acknowledged, never dead-lettered again.
//! - [`redrive_all`](RedisTransport::redrive_all), [`redrive_ids`](RedisTransport::redrive_ids)
//!   and [`redrive_range`](RedisTransport::redrive_range) write dead letters again to the stream
//!   they came from and delete them from the dead-letter stream. The target is the recorded
//!   `stream`, whatever its name (`events:order.created`, `events.raw`); a dead letter that
//!   records none, or a name of the layout before this version (`{events}:order.created#high`),
//!   goes to the stream of its event's type under the current names. An envelope is written back
//!   as the `event` field; a raw entry's fields are written back as they were. Each dead letter
//!   moves with one script (check it is still there, write it, delete it), so it is either still
//!   a dead letter or republished once, never both; 100 go per round trip. A redriven event is a
//!   new entry: every group of that stream receives it again, with the same event id, so
//!   handlers that must not see an event twice deduplicate on [`Event::id`]. Dead letters that
//!   could not be decoded cannot be redriven: they stay where they are and the
//!   [`RedriveReport`] names them.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{Cmd, Value};
use redstream_core::wire::{self, EVENT_FIELD};
use redstream_core::{Error, ErrorKind, Event, HandlerResult, Result, SubscriptionHandle};
use tracing::Instrument;

use crate::commands::{Commands, Traffic};
use crate::config::StartFrom;
use crate::consumer::{Handling, Mode, StreamSpec, erase, now_ms};
use crate::keys::{KeyLayout, StreamNames, is_legacy_name, validate_event_type};
use crate::transport::RedisTransport;
use crate::{reply, telemetry};

/// Field names of a dead-letter entry.
pub(crate) mod field {
    pub(crate) const EVENT: &str = "event";
    pub(crate) const ERROR: &str = "error";
    pub(crate) const ORIGINAL_TYPE: &str = "original_type";
    pub(crate) const STREAM: &str = "stream";
    pub(crate) const ENTRY_ID: &str = "entry_id";
    pub(crate) const GROUP: &str = "group";
    pub(crate) const CONSUMER: &str = "consumer";
    pub(crate) const DELIVERIES: &str = "deliveries";
    pub(crate) const FIRST_FAILURE_MS: &str = "first_failure_ms";
    pub(crate) const LAST_FAILURE_MS: &str = "last_failure_ms";
    /// Present (`"true"`) when `event` holds the fields of an entry that could not be decoded,
    /// rather than an envelope.
    pub(crate) const UNDECODABLE: &str = "undecodable";
    /// Present (`"true"`) when `event` holds the fields of an entry of a raw subscription (or one
    /// with a decoder), as a JSON array of `[name, value]` pairs in their order; a redrive writes
    /// them back as they were.
    pub(crate) const RAW: &str = "raw";
}

/// The longest `error` stored; longer handler messages are cut at a character boundary.
const MAX_ERROR_LEN: usize = 8 * 1024;

/// Dead letters read per `XRANGE` page and redriven per round trip.
const PAGE: usize = 100;

/// Why an entry was dead-lettered; the `reason` label of the dead-letter counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Its handler failed, or it was delivered too many times.
    Handler,
    /// It could not be decoded.
    Decode,
    /// [`RedisTransport::publish_to_dlq`].
    Manual,
    /// Its envelope has another type than the stream it was read from, in a subscription by
    /// event type.
    WrongType,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Handler => "handler",
            Self::Decode => "decode",
            Self::Manual => "manual",
            Self::WrongType => "wrong_type",
        }
    }
}

/// What the `event` field of a dead letter holds.
pub(crate) enum Body {
    /// The envelope as it was written.
    Envelope(String),
    /// A JSON object of the fields of an entry that could not be decoded (see [`event_field`]).
    Undecodable(String),
    /// A JSON array of the `[name, value]` pairs of a raw entry (see [`raw_fields`]).
    Raw(String),
}

impl Body {
    /// The body of a dead letter of an entry with these fields: `raw` for a subscription that
    /// does not read envelopes, otherwise the envelope, or all fields when it does not decode.
    pub(crate) fn of(fields: &[(Vec<u8>, Vec<u8>)], raw: bool, undecodable: bool) -> Self {
        if raw {
            return Self::Raw(raw_fields(fields));
        }
        if !undecodable
            && let Some((_, value)) = fields
                .iter()
                .find(|(k, _)| k.as_slice() == EVENT_FIELD.as_bytes())
            && let Ok(envelope) = std::str::from_utf8(value)
        {
            return Self::Envelope(envelope.to_owned());
        }
        Self::Undecodable(event_field(fields))
    }

    fn text(&self) -> &str {
        match self {
            Self::Envelope(text) | Self::Undecodable(text) | Self::Raw(text) => text,
        }
    }
}

/// The fields of one dead-letter entry, before it is written.
pub(crate) struct DeadLetterFields<'a> {
    pub(crate) body: Body,
    pub(crate) error: &'a str,
    pub(crate) original_type: &'a str,
    pub(crate) stream: &'a str,
    pub(crate) entry_id: &'a str,
    pub(crate) group: &'a str,
    pub(crate) consumer: &'a str,
    pub(crate) deliveries: u32,
    pub(crate) first_failure_ms: u64,
    pub(crate) last_failure_ms: u64,
}

impl DeadLetterFields<'_> {
    fn xadd(&self, dlq: &str) -> Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(dlq)
            .arg("*")
            .arg(field::EVENT)
            .arg(self.body.text())
            .arg(field::ERROR)
            .arg(shorten(self.error))
            .arg(field::ORIGINAL_TYPE)
            .arg(self.original_type)
            .arg(field::STREAM)
            .arg(self.stream)
            .arg(field::ENTRY_ID)
            .arg(self.entry_id)
            .arg(field::GROUP)
            .arg(self.group)
            .arg(field::CONSUMER)
            .arg(self.consumer)
            .arg(field::DELIVERIES)
            .arg(self.deliveries)
            .arg(field::FIRST_FAILURE_MS)
            .arg(self.first_failure_ms)
            .arg(field::LAST_FAILURE_MS)
            .arg(self.last_failure_ms);
        match self.body {
            Body::Envelope(_) => {}
            Body::Undecodable(_) => {
                cmd.arg(field::UNDECODABLE).arg("true");
            }
            Body::Raw(_) => {
                cmd.arg(field::RAW).arg("true");
            }
        }
        cmd
    }
}

fn shorten(text: &str) -> &str {
    if text.len() <= MAX_ERROR_LEN {
        return text;
    }
    let mut cut = MAX_ERROR_LEN;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// The `event` field of the dead letter of an undecodable entry: a JSON object of all its
/// fields (values as text, lossy for bytes that are not UTF-8; a repeated field becomes an array
/// of its values).
fn event_field(fields: &[(Vec<u8>, Vec<u8>)]) -> String {
    let mut map = serde_json::Map::new();
    for (name, value) in fields {
        let name = String::from_utf8_lossy(name).into_owned();
        let value = serde_json::Value::String(String::from_utf8_lossy(value).into_owned());
        match map.get_mut(&name) {
            Some(serde_json::Value::Array(values)) => values.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = serde_json::Value::Array(vec![first, value]);
            }
            None => {
                map.insert(name, value);
            }
        }
    }
    serde_json::Value::Object(map).to_string()
}

/// The `event` field of the dead letter of a raw entry: a JSON array of its `[name, value]`
/// pairs, in order, repeats kept (text, lossy for bytes that are not UTF-8).
fn raw_fields(fields: &[(Vec<u8>, Vec<u8>)]) -> String {
    let pairs: Vec<[std::borrow::Cow<'_, str>; 2]> = fields
        .iter()
        .map(|(name, value)| {
            [
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value),
            ]
        })
        .collect();
    serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".to_owned())
}

/// The fields held in a dead letter's `event` field: the pairs of a raw entry's array, or the
/// names and values of an undecodable entry's object (a repeated field's values in turn).
fn stored_fields(text: &str, raw: bool) -> Option<Vec<(String, String)>> {
    if raw {
        let pairs: Vec<(String, String)> = serde_json::from_str(text).ok()?;
        return Some(pairs);
    }
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    let mut pairs = Vec::new();
    for (name, value) in object {
        match value {
            serde_json::Value::String(value) => pairs.push((name, value)),
            serde_json::Value::Array(values) => {
                for value in values {
                    pairs.push((name.clone(), value.as_str()?.to_owned()));
                }
            }
            _ => return None,
        }
    }
    Some(pairs)
}

/// Moves an entry to the dead-letter stream and returns the dead letter's id.
///
/// In the plain layout: `MULTI; XADD <dlq> ...; XACK <stream> <group> <id>; EXEC`, all or
/// nothing. In the cluster layout the dead-letter stream is in another slot than the entry's
/// stream, so the two cannot share a transaction: `XADD` first, then `XACK` (one round trip,
/// not atomic). A failure between them leaves the entry pending: it is delivered again and may
/// be dead-lettered a second time, a repeat with the same `stream` and `entry_id` that the
/// redrive recognises and removes instead of republishing (see the module docs).
pub(crate) async fn move_entry(
    redis: &Commands,
    names: &StreamNames,
    fields: &DeadLetterFields<'_>,
    reason: Reason,
) -> Result<String> {
    let dlq = names.dlq();
    let span = tracing::info_span!(
        "dead_letter",
        stream = %fields.stream,
        entry_id = %fields.entry_id,
        event_type = %fields.original_type,
        group = %fields.group,
        deliveries = fields.deliveries,
        reason = reason.as_str(),
        dlq_id = tracing::field::Empty,
    );
    async {
        let mut pipe = redis::pipe();
        let op = match names.layout() {
            KeyLayout::Cluster => "XADD to the DLQ, then XACK",
            _ => {
                pipe.atomic();
                "MULTI/EXEC of XADD + XACK"
            }
        };
        pipe.add_command(fields.xadd(&dlq));
        pipe.cmd("XACK")
            .arg(fields.stream)
            .arg(fields.group)
            .arg(fields.entry_id);
        let (id, _acked): (String, i64) = redis.pipe(op, &dlq, &pipe).await?;
        tracing::Span::current().record("dlq_id", id.as_str());
        metrics::counter!(telemetry::DEAD_LETTERED, "reason" => reason.as_str()).increment(1);
        tracing::warn!(error = %shorten(fields.error), "moved to the dead-letter stream");
        Ok(id)
    }
    .instrument(span)
    .await
}

/// The redrive record: a hash next to the dead-letter stream (in its cluster slot) with a field
/// `<entry id> <stream>` for every dead letter redriven in the cluster layout, whose value is
/// the id it was republished as.
pub(crate) fn redrive_record(names: &StreamNames) -> String {
    redstream_core::keys::companion(&names.dlq(), "redriven")
}

/// One entry of the dead-letter stream, decoded.
///
/// Entries written by other tools may lack the fields after `original_type`: they read as empty
/// strings, 0 and `None`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadLetterEntry {
    /// The dead letter's id in the dead-letter stream: what the redrive methods take.
    pub id: String,
    /// The event, when the `event` field holds a decodable envelope.
    pub event: Option<Event>,
    /// The `event` field as stored: the envelope, or for an entry that could not be decoded a
    /// JSON object of its fields.
    pub raw_event: String,
    /// Why [`event`](Self::event) is `None`.
    pub decode_error: Option<String>,
    /// The fields of the original entry, in order, when the dead letter holds fields rather
    /// than an envelope: an entry of a raw subscription (or one with a decoder), or one that
    /// could not be decoded (their order is then lost). Values are text, lossy for bytes that
    /// are not UTF-8.
    pub fields: Option<Vec<(String, String)>>,
    /// Whether it is the dead letter of a raw entry: a redrive writes
    /// [`fields`](Self::fields) back to [`stream`](Self::stream).
    pub raw: bool,
    /// Why the event was dead-lettered: the handler's last error, the decoding error, or the
    /// message given to [`publish_to_dlq`](RedisTransport::publish_to_dlq).
    pub error: String,
    /// The event type of the stream it came from.
    pub original_type: String,
    /// The stream it came from, e.g. `events:order.created` (dead letters of earlier versions:
    /// `{events}:order.created#high`).
    pub stream: String,
    /// Its id in that stream; empty for [`publish_to_dlq`](RedisTransport::publish_to_dlq).
    pub entry_id: String,
    /// The consumer group that gave up on it.
    pub group: String,
    /// The consumer that moved it here.
    pub consumer: String,
    /// How many times it was delivered; 0 for [`publish_to_dlq`](RedisTransport::publish_to_dlq).
    pub deliveries: u32,
    /// When the moving consumer first saw it fail (see `docs/wire-format.md`).
    pub first_failure: Option<SystemTime>,
    /// When it was given up on.
    pub last_failure: Option<SystemTime>,
}

impl DeadLetterEntry {
    pub(crate) fn from_raw(entry: reply::RawEntry, limits: &redstream_core::EventLimits) -> Self {
        let fields = entry.fields.unwrap_or_default();
        let text = |name: &str| reply::text_field(&fields, name).unwrap_or_default();
        let millis = |name: &str| {
            reply::text_field(&fields, name)
                .and_then(|v| v.parse::<u64>().ok())
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
        };
        let undecodable = reply::text_field(&fields, field::UNDECODABLE).is_some();
        let raw = reply::text_field(&fields, field::RAW).is_some();
        let stored = (undecodable || raw)
            .then(|| stored_fields(&text(field::EVENT), raw))
            .flatten();
        let (event, decode_error) = if raw {
            (
                None,
                Some(
                    "the original entry is in another format (a raw subscription's); `fields`                      holds it"
                        .to_owned(),
                ),
            )
        } else if undecodable {
            (
                None,
                Some(
                    "the original stream entry could not be decoded; `raw_event` holds its fields"
                        .to_owned(),
                ),
            )
        } else {
            let pairs = fields.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
            // The original entry's id gives an envelope without a timestamp the time it was
            // first written; a dead letter written by hand has none, and uses its own.
            let original = reply::text_field(&fields, field::ENTRY_ID).filter(|id| !id.is_empty());
            let entry_id = original.as_deref().unwrap_or(&entry.id);
            match wire::decode_stream_entry(entry_id, pairs, limits) {
                Ok(event) => (Some(event), None),
                Err(err) => (None, Some(err.to_string())),
            }
        };
        Self {
            id: entry.id,
            event,
            raw_event: text(field::EVENT),
            decode_error,
            fields: stored,
            raw,
            error: text(field::ERROR),
            original_type: text(field::ORIGINAL_TYPE),
            stream: text(field::STREAM),
            entry_id: text(field::ENTRY_ID),
            group: text(field::GROUP),
            consumer: text(field::CONSUMER),
            deliveries: text(field::DELIVERIES).parse().unwrap_or(0),
            first_failure: millis(field::FIRST_FAILURE_MS),
            last_failure: millis(field::LAST_FAILURE_MS),
        }
    }
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedriveReport {
    /// Dead letters published again and removed from the dead-letter stream.
    pub redriven: usize,
    /// Dead letters removed without being published: repeats of a dead letter of the same
    /// entry (same `stream` and `entry_id`) that was redriven already. Only the cluster layout
    /// writes such repeats (see the module docs) and keeps the record that finds them.
    pub repeats: usize,
    /// Dead letters left in the dead-letter stream, with the reason.
    pub skipped: Vec<SkippedDeadLetter>,
}

/// A dead letter a redrive left where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedDeadLetter {
    /// Its id in the dead-letter stream (or the id asked for, when there is no such entry).
    pub id: String,
    /// Why it was not redriven.
    pub reason: String,
}

impl RedriveReport {
    fn skip(&mut self, id: impl Into<String>, reason: impl Into<String>) {
        let (id, reason) = (id.into(), reason.into());
        tracing::warn!(dlq_id = %id, reason = %reason, "dead letter not redriven");
        self.skipped.push(SkippedDeadLetter { id, reason });
    }
}

/// A dead letter ready to be republished.
struct Plan {
    dlq_id: String,
    target: String,
    /// Its field in the redrive record (cluster layout): `<entry id> <stream>` of the entry it
    /// was moved from; empty when none is kept.
    record: String,
    /// The fields of the entry to write: `event` and the envelope, or a raw entry's fields.
    fields: Vec<(String, String)>,
}

/// Moves one dead letter back to its stream, atomically. KEYS: the dead-letter stream, the
/// target stream, the redrive record (a hash next to the dead-letter stream, used in the cluster
/// layout). ARGV: the dead letter's id, `MAXLEN ~` (0: none), the dead letter's field in the
/// record (empty: none), then the fields of the entry to write, name and value in turn.
///
/// Returns the new entry id; nil when the dead letter was already gone; `repeat:<id>` when the
/// record shows that the entry it was moved from was redriven already (as `<id>`): the dead
/// letter is a repeat, and it is deleted instead of republished.
///
/// The only writes are the `XADD` and then the `XDEL` (and the record's `HSET`), in that order:
/// a refusal of the `XADD` (`NOPERM` on the target, `OOM`, `READONLY`) leaves the dead letter
/// untouched, because Redis does not roll back a script's earlier writes when a later command
/// fails. Checking that the dead letter is still there first (a read) keeps concurrent redrives
/// from republishing it twice.
const REDRIVE_SCRIPT: &str = r"
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'stream' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' holds a ' .. kind .. ', not a stream')
end
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return false
end
if ARGV[3] ~= '' then
  local earlier = redis.call('HGET', KEYS[3], ARGV[3])
  if earlier then
    redis.call('XDEL', KEYS[1], ARGV[1])
    return 'repeat:' .. earlier
  end
end
local id
if tonumber(ARGV[2]) > 0 then
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 4))
else
  id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
end
local deleted = redis.pcall('XDEL', KEYS[1], ARGV[1])
if type(deleted) == 'table' and deleted['err'] then
  return redis.error_reply(deleted['err'] .. ' (the event was republished as ' .. id ..
    ' but its dead letter could not be deleted: delete it by hand, or a later redrive repeats it)')
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[3], id)
end
return id
";

/// Checks an id given to a redrive: `<ms>-<seq>`, or for ranges also `<ms>`, `-`, `+` and an
/// exclusive `(` prefix.
fn check_id(id: &str, range: bool) -> Result<()> {
    let valid = |id: &str| {
        let (ms, seq) = id
            .split_once('-')
            .map_or((id, None), |(ms, seq)| (ms, Some(seq)));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        digits(ms) && seq.is_none_or(digits) && (range || seq.is_some())
    };
    let ok = if range {
        matches!(id, "-" | "+") || valid(id.strip_prefix('(').unwrap_or(id))
    } else {
        valid(id)
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(
            format!("dead-letter entry id {id:?}"),
            if range {
                "expected a stream id such as 1700000000000-0, a millisecond time, - or +, \
                 optionally prefixed with ( for an exclusive bound"
            } else {
                "expected a stream entry id such as 1700000000000-0"
            },
        ))
    }
}

impl RedisTransport {
    /// Writes `event` to the dead-letter stream by hand, with `error` as the reason, and returns
    /// the dead letter's id.
    ///
    /// The event is validated like a published one. Its `stream` field is the stream the event
    /// would be published to, so a redrive publishes it there; `entry_id` is empty and
    /// `deliveries` is 0.
    pub async fn publish_to_dlq(
        &self,
        event: Event,
        error: &(impl fmt::Display + ?Sized),
    ) -> Result<String> {
        let limits = &self.inner.options.limits;
        validate_event_type(event.event_type(), limits)?;
        let envelope = wire::encode(&event, limits)?;
        let stream = self.inner.names.stream(event.event_type());
        let error = error.to_string();
        let now = now_ms();
        let fields = DeadLetterFields {
            body: Body::Envelope(envelope),
            error: &error,
            original_type: event.event_type(),
            stream: &stream,
            entry_id: "",
            group: &self.inner.config.consumer_group,
            consumer: &self.inner.config.consumer_name,
            deliveries: 0,
            first_failure_ms: now,
            last_failure_ms: now,
        };
        let dlq = self.inner.names.dlq();
        let span = tracing::info_span!(
            "dead_letter",
            stream = %stream,
            event_type = %event.event_type(),
            event_id = %event.id(),
            reason = Reason::Manual.as_str(),
        );
        let id: String = self
            .commands(Traffic::Write)
            .query("XADD", &dlq, &fields.xadd(&dlq))
            .instrument(span)
            .await?;
        metrics::counter!(telemetry::DEAD_LETTERED, "reason" => Reason::Manual.as_str())
            .increment(1);
        Ok(id)
    }

    /// Subscribes `handler` to the dead-letter stream: it receives the original events, from the
    /// oldest dead letter on, as a member of the consumer group `{consumer_group}-dlq`.
    ///
    /// Returns a handle for [`unsubscribe`](Self::unsubscribe). Handled dead letters stay in the
    /// dead-letter stream; see the module docs of `dlq` for what happens to failures.
    pub async fn consume_dlq<F, Fut>(&self, handler: F) -> Result<SubscriptionHandle>
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let group = format!("{}-dlq", self.inner.config.consumer_group);
        let mut spec = StreamSpec::by_name(self.inner.names.dlq());
        spec.label = Arc::from(crate::keys::DLQ);
        self.start_subscription(
            Mode::DeadLetters,
            group,
            vec![crate::keys::DLQ.to_owned()],
            vec![spec],
            StartFrom::Beginning,
            Handling::Events(erase(handler)),
        )
        .await
    }

    /// The oldest `count` dead letters, decoded.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] when `count` is 0; a Redis error if the stream cannot be read.
    pub async fn dlq_entries(&self, count: usize) -> Result<Vec<DeadLetterEntry>> {
        if count == 0 {
            return Err(Error::invalid_input("count", "must be at least 1"));
        }
        let dlq = self.inner.names.dlq();
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&dlq).arg("-").arg("+").arg("COUNT").arg(count);
        let reply: Value = self
            .commands(Traffic::Read)
            .query("XRANGE", &dlq, &cmd)
            .await?;
        let entries = reply::entries(reply).map_err(|reason| {
            Error::backend(ErrorKind::Unexpected, "XRANGE", dlq.clone(), reason)
        })?;
        let limits = &self.inner.options.limits;
        Ok(entries
            .into_iter()
            .map(|entry| DeadLetterEntry::from_raw(entry, limits))
            .collect())
    }

    /// Redrives every dead letter present when it starts (dead letters added meanwhile are left
    /// for the next call).
    pub async fn redrive_all(&self) -> Result<RedriveReport> {
        self.redrive_range("-", "+").await
    }

    /// Redrives the dead letters with these ids. Ids that are not in the dead-letter stream are
    /// reported as skipped.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an id that is not a stream entry id (nothing is redriven
    /// then); a Redis error if reading or writing fails.
    pub async fn redrive_ids(&self, ids: &[&str]) -> Result<RedriveReport> {
        for id in ids {
            check_id(id, false)?;
        }
        let dlq = self.inner.names.dlq();
        let mut report = RedriveReport::default();
        for chunk in ids.chunks(PAGE) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("XRANGE").arg(&dlq).arg(*id).arg(*id);
            }
            let replies: Vec<Value> = self
                .commands(Traffic::Write)
                .pipe("XRANGE", &dlq, &pipe)
                .await?;
            let mut found = Vec::with_capacity(chunk.len());
            for (id, reply) in chunk.iter().zip(replies) {
                let entries = reply::entries(reply).map_err(|reason| {
                    Error::backend(ErrorKind::Unexpected, "XRANGE", dlq.clone(), reason)
                })?;
                match entries.into_iter().next() {
                    Some(entry) => found.push(entry),
                    None => report.skip(*id, "not in the dead-letter stream"),
                }
            }
            self.redrive_entries(found, &mut report).await?;
        }
        Ok(report)
    }

    /// Redrives the dead letters with ids from `start` to `end`, inclusive (`XRANGE` syntax: `-`
    /// and `+` for the ends of the stream, a `(` prefix for an exclusive bound). With `+`, the end
    /// is the last dead letter present when the call starts.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a malformed bound; a Redis error if reading or writing
    /// fails (batches done before the error stay done).
    pub async fn redrive_range(&self, start: &str, end: &str) -> Result<RedriveReport> {
        check_id(start, true)?;
        check_id(end, true)?;
        let dlq = self.inner.names.dlq();
        let mut report = RedriveReport::default();
        let end = if end == "+" {
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(&dlq).arg("+").arg("-").arg("COUNT").arg(1);
            let reply: Value = self
                .commands(Traffic::Write)
                .query("XREVRANGE", &dlq, &cmd)
                .await?;
            let last = reply::entries(reply).map_err(|reason| {
                Error::backend(ErrorKind::Unexpected, "XREVRANGE", dlq.clone(), reason)
            })?;
            match last.into_iter().next() {
                Some(entry) => entry.id,
                None => return Ok(report),
            }
        } else {
            end.to_owned()
        };
        let mut from = start.to_owned();
        loop {
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&dlq).arg(&from).arg(&end).arg("COUNT").arg(PAGE);
            let reply: Value = self
                .commands(Traffic::Write)
                .query("XRANGE", &dlq, &cmd)
                .await?;
            let entries = reply::entries(reply).map_err(|reason| {
                Error::backend(ErrorKind::Unexpected, "XRANGE", dlq.clone(), reason)
            })?;
            let Some(last) = entries.last().map(|e| e.id.clone()) else {
                break;
            };
            let full = entries.len() == PAGE;
            self.redrive_entries(entries, &mut report).await?;
            if !full || last == end {
                break;
            }
            from = format!("({last}");
        }
        Ok(report)
    }

    /// The dead letter's field in the redrive record: `<entry id> <stream>` of the entry it was
    /// moved from, in the cluster layout; empty (no record) otherwise, and for dead letters
    /// written by hand.
    fn record_field(&self, dead: &DeadLetterEntry) -> String {
        if self.inner.names.layout() != KeyLayout::Cluster || dead.entry_id.is_empty() {
            return String::new();
        }
        format!("{} {}", dead.entry_id, dead.stream)
    }

    /// Where a dead letter is redriven: the stream it records, except a name of the layout
    /// before this version (`{prefix}:type#lane`) or none at all, where the stream of its event
    /// type is used instead. `None` when neither gives a stream.
    fn redrive_target(&self, recorded: &str, event_type: &str) -> Option<String> {
        let names = &self.inner.names;
        if !recorded.is_empty() && !is_legacy_name(names.prefix(), recorded) {
            return Some(recorded.to_owned());
        }
        validate_event_type(event_type, &self.inner.options.limits)
            .ok()
            .map(|()| names.stream(event_type))
    }

    /// Republishes decodable dead letters and deletes them from the dead-letter stream, in one
    /// transaction; reports the others.
    async fn redrive_entries(
        &self,
        entries: Vec<reply::RawEntry>,
        report: &mut RedriveReport,
    ) -> Result<()> {
        let limits = &self.inner.options.limits;
        let names = &self.inner.names;
        let mut plans = Vec::with_capacity(entries.len());
        for entry in entries {
            let dead = DeadLetterEntry::from_raw(entry, limits);
            let record = self.record_field(&dead);
            if dead.raw {
                let recorded =
                    !dead.stream.is_empty() && !is_legacy_name(names.prefix(), &dead.stream);
                match dead.fields {
                    Some(fields) if !fields.is_empty() && recorded => plans.push(Plan {
                        record,
                        dlq_id: dead.id,
                        target: dead.stream,
                        fields,
                    }),
                    Some(_) if !recorded => {
                        report.skip(dead.id, "it records no stream to write its fields back to")
                    }
                    _ => report.skip(
                        dead.id,
                        "its `event` field does not hold the entry's fields as an array of \
                         [name, value] pairs; inspect it with XRANGE",
                    ),
                }
                continue;
            }
            let Some(event) = &dead.event else {
                let reason = dead.decode_error.as_deref().unwrap_or("no event");
                report.skip(
                    dead.id,
                    format!("its event cannot be decoded ({reason}); inspect it with XRANGE and fix or delete it by hand"),
                );
                continue;
            };
            let Some(target) = self.redrive_target(&dead.stream, event.event_type()) else {
                report.skip(
                    dead.id,
                    format!(
                        "it records no stream and its event type {:?} names none",
                        event.event_type()
                    ),
                );
                continue;
            };
            plans.push(Plan {
                record,
                dlq_id: dead.id,
                target,
                fields: vec![(EVENT_FIELD.to_owned(), dead.raw_event)],
            });
        }
        if plans.is_empty() {
            return Ok(());
        }
        let dlq = names.dlq();
        let record = redrive_record(names);
        // One script call per dead letter, all in one round trip. Each call checks the target's
        // type, then deletes the dead letter and republishes it only if the delete removed it:
        // two clients redriving the same dead letter at once (the CLI and the dashboard, say)
        // republish it once, and a target of the wrong type leaves the dead letter in place.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for plan in &plans {
            pipe.cmd("EVAL")
                .arg(REDRIVE_SCRIPT)
                .arg(3)
                .arg(&dlq)
                .arg(&plan.target)
                .arg(&record)
                .arg(&plan.dlq_id)
                .arg(self.max_len(&plan.target))
                .arg(&plan.record);
            for (name, value) in &plan.fields {
                pipe.arg(name).arg(value);
            }
        }
        let span = tracing::info_span!("redrive", entries = plans.len());
        let results: Vec<redis::RedisResult<Option<String>>> = self
            .commands(Traffic::Write)
            .pipe("EVAL redrive (XDEL + XADD)", &dlq, &pipe)
            .instrument(span)
            .await?;
        let mut failed = None;
        for (plan, result) in plans.into_iter().zip(results) {
            match result {
                Ok(Some(reply)) => match reply.strip_prefix("repeat:") {
                    Some(earlier) => {
                        tracing::info!(
                            dlq_id = %plan.dlq_id,
                            republished_as = %earlier,
                            "dead letter removed: a repeat of one redriven already"
                        );
                        report.repeats += 1;
                    }
                    None => report.redriven += 1,
                },
                Ok(None) => report.skip(
                    plan.dlq_id,
                    "no longer in the dead-letter stream: redriven or deleted by another client",
                ),
                Err(err) if err.code() == Some("WRONGTYPE") => report.skip(
                    plan.dlq_id,
                    format!(
                        "{} is not a stream; the dead letter is left in place",
                        plan.target
                    ),
                ),
                // Any other refusal (READONLY after a failover, NOPERM, OOM...) is the server's
                // failure, not this dead letter's: the caller hears it as an error, with its kind,
                // rather than a report that looks like success.
                Err(err) => {
                    failed.get_or_insert(err);
                }
            }
        }
        tracing::info!(redriven = report.redriven, "dead letters redriven");
        if let Some(err) = failed {
            let err = Error::from_redis("EVAL redrive (XDEL + XADD)", dlq.clone(), err);
            return Err(Error::backend(
                err.kind(),
                "redrive",
                dlq,
                format!(
                    "{err}; {} dead letters were redriven before this failure, and each one \
                     that failed is still in the dead-letter stream",
                    report.redriven
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        for ok in ["1-0", "1700000000000-12"] {
            check_id(ok, false).unwrap();
            check_id(ok, true).unwrap();
        }
        for ok in ["-", "+", "(1-0", "1700000000000"] {
            check_id(ok, true).unwrap();
        }
        for bad in ["", "-", "+", "1", "a-1", "1-", "1-0 ", "(1-0"] {
            assert_eq!(
                check_id(bad, false).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
        for bad in ["", "x", "((1-0", "1-a"] {
            assert!(check_id(bad, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn undecodable_entries_keep_every_field() {
        let fields = vec![
            (b"foo".to_vec(), b"bar".to_vec()),
            (b"foo".to_vec(), b"baz".to_vec()),
            (b"bin".to_vec(), vec![0xff, b'x']),
        ];
        let Body::Undecodable(text) = Body::of(&fields, false, true) else {
            panic!("an undecodable body");
        };
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["foo"], serde_json::json!(["bar", "baz"]));
        assert_eq!(json["bin"], "\u{fffd}x");
        let back = stored_fields(&text, false).unwrap();
        assert_eq!(back.len(), 3);
        let envelope = vec![(b"event".to_vec(), b"{\"v\":1}".to_vec())];
        assert!(matches!(Body::of(&envelope, false, false), Body::Envelope(e) if e == "{\"v\":1}"));
    }

    #[test]
    fn raw_entries_keep_their_fields_in_order() {
        let fields = vec![
            (b"event_id".to_vec(), b"e1".to_vec()),
            (b"brand_id".to_vec(), b"b1".to_vec()),
            (b"event_id".to_vec(), b"e2".to_vec()),
        ];
        let Body::Raw(text) = Body::of(&fields, true, false) else {
            panic!("a raw body");
        };
        assert_eq!(
            text,
            r#"[["event_id","e1"],["brand_id","b1"],["event_id","e2"]]"#
        );
        let back = stored_fields(&text, true).unwrap();
        let expected: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k.clone()).unwrap(),
                    String::from_utf8(v.clone()).unwrap(),
                )
            })
            .collect();
        assert_eq!(back, expected);
        assert!(stored_fields("{}", true).is_none());
    }

    #[test]
    fn long_errors_are_cut_at_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_LEN);
        let cut = shorten(&long);
        assert!(cut.len() <= MAX_ERROR_LEN);
        assert!(long.starts_with(cut));
    }
}
