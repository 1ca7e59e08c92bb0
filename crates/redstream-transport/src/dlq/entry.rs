//! [`DeadLetterEntry`]: one entry of the dead-letter stream, read back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redstream_core::{Event, wire};

use super::encoding;
use super::field;
use crate::reply;

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
    /// could not be decoded (their order is then lost). Names and values as text, lossy for
    /// bytes that are not UTF-8 (replaced by `U+FFFD`): [`field_bytes`](Self::field_bytes) has
    /// them exactly.
    pub fields: Option<Vec<(String, String)>>,
    /// The same fields as [`fields`](Self::fields), byte for byte: what a redrive writes back.
    pub field_bytes: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Whether it is the dead letter of a raw entry: a redrive writes
    /// [`fields`](Self::fields) back to [`stream`](Self::stream).
    pub raw: bool,
    /// The size in bytes of an entry that was over the event size limit, of which the dead
    /// letter keeps only a preview ([`fields`](Self::fields) holds the start of each field);
    /// the entry itself is [`entry_id`](Self::entry_id) in [`stream`](Self::stream). Such a
    /// dead letter is not redriven. `None` for a complete dead letter.
    pub truncated_size: Option<u64>,
    /// Why the event was dead-lettered: the handler's last error, the decoding error, or the
    /// message given to [`publish_to_dlq`](crate::RedisTransport::publish_to_dlq).
    pub error: String,
    /// The event type of the stream it came from.
    pub original_type: String,
    /// The stream it came from, e.g. `events:order.created` (dead letters of earlier versions:
    /// `{events}:order.created#high`).
    pub stream: String,
    /// Its id in that stream; empty for [`publish_to_dlq`](crate::RedisTransport::publish_to_dlq).
    pub entry_id: String,
    /// The consumer group that gave up on it.
    pub group: String,
    /// The consumer that moved it here.
    pub consumer: String,
    /// How many times it was delivered; 0 for [`publish_to_dlq`](crate::RedisTransport::publish_to_dlq).
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
        let truncated_size = reply::text_field(&fields, field::TRUNCATED).map(|_| {
            reply::text_field(&fields, field::SIZE)
                .and_then(|size| size.parse().ok())
                .unwrap_or(0)
        });
        let undecodable = reply::text_field(&fields, field::UNDECODABLE).is_some();
        let raw = reply::text_field(&fields, field::RAW).is_some() && truncated_size.is_none();
        let field_bytes = (undecodable || raw || truncated_size.is_some())
            .then(|| encoding::fields(&text(field::EVENT), raw))
            .flatten();
        let stored = field_bytes.as_ref().map(|pairs| {
            pairs
                .iter()
                .map(|(name, value)| {
                    (
                        String::from_utf8_lossy(name).into_owned(),
                        String::from_utf8_lossy(value).into_owned(),
                    )
                })
                .collect()
        });
        let (event, decode_error) = if let Some(size) = truncated_size {
            (
                None,
                Some(format!(
                    "the original entry was {size} bytes, over the event size limit: `fields` \
                     holds a preview of it, and the entry is {} in {}",
                    text(field::ENTRY_ID),
                    text(field::STREAM)
                )),
            )
        } else if raw {
            (
                None,
                Some(
                    "the original entry is in another format (a raw subscription's); `fields` \
                     holds it"
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
            field_bytes,
            raw,
            truncated_size,
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
