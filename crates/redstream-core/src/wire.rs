//! The stream-entry wire format, version 1.
//!
//! An [`Event`] becomes one stream entry with a single field, [`EVENT_FIELD`] (`event`), whose
//! value is the whole JSON envelope:
//!
//! ```json
//! {"v":1,"id":"0193...","type":"order.created","payload":{"order_id":"12345"},
//!  "metadata":{"timestamp":"2026-11-21T10:00:00.123Z","priority":"normal"}}
//! ```
//!
//! Readers in any language JSON-decode the `event` field and find `id`, `type` and `payload`
//! at the top level. Decoding accepts entries from anyone: every way an entry can be wrong
//! (missing or repeated field, bytes that are not UTF-8, a value over the size limit, bad JSON,
//! an unknown version, an invalid event type) is a typed [`DecodeError`], never a panic.
//! The full specification is `docs/wire-format.md`.
//!
//! Timestamps are written in UTC with a `Z` and read with any RFC 3339 offset, normalised to
//! UTC (`2024-12-01T10:00:00+02:00` reads as `2024-12-01T08:00:00Z`). An envelope without
//! `metadata.timestamp` takes the time of the stream entry that holds it: readers of a stream
//! call [`decode_stream_entry`] with the entry id, whose milliseconds part Redis set when it
//! appended the entry, so every read of that entry gives the same timestamp.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::event::{
    Event, EventId, EventLimits, EventMetadata, MAX_WIRE_SECS, WireMetadata, excerpt,
    parse_rfc3339, truncate_to_millis,
};

/// The wire format version this crate writes, and the only one it reads.
pub const WIRE_VERSION: u32 = 1;

/// The name of the stream-entry field that holds the JSON envelope.
pub const EVENT_FIELD: &str = "event";

/// Longest excerpt of a parser message kept in a [`DecodeError`], so a huge or hostile value
/// cannot blow up error messages and logs.
const MAX_REASON_LEN: usize = 256;

/// Why a stream entry could not be decoded into an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The entry has no field with this name.
    #[error("stream entry has no `{field}` field")]
    MissingField {
        /// The missing field.
        field: &'static str,
    },
    /// The entry has this field more than once.
    #[error("stream entry has the `{field}` field more than once")]
    DuplicateField {
        /// The repeated field.
        field: &'static str,
    },
    /// The field's value is not UTF-8.
    #[error("the `{field}` field of the stream entry is not UTF-8")]
    NotUtf8 {
        /// The field.
        field: &'static str,
    },
    /// The field's value is larger than the configured limit.
    #[error("the `{field}` field is {len} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit ([`EventLimits::max_encoded_bytes`]).
        limit: usize,
    },
    /// The envelope is not valid JSON of the expected shape.
    #[error("the `event` field is not a valid event envelope: {reason}")]
    InvalidJson {
        /// The parser's message, shortened.
        reason: String,
    },
    /// The envelope's `v` is a version this crate does not read.
    #[error("unsupported wire format version {found} (this reader supports version {supported})")]
    UnsupportedVersion {
        /// The version found.
        found: u64,
        /// The version this crate reads.
        supported: u32,
    },
    /// The envelope parsed but describes an invalid event (bad type name, id or metadata).
    #[error("the envelope describes an invalid event: {reason}")]
    InvalidEvent {
        /// What is wrong.
        reason: String,
    },
    /// The envelope's `metadata.timestamp` is not an RFC 3339 timestamp in the range the format
    /// carries (1970 to 9999, offsets from -23:59 to +23:59).
    #[error(
        "the envelope's metadata.timestamp {value:?} is not a valid RFC 3339 timestamp: {reason}; \
         write it like 2024-12-01T10:00:00.000Z or 2024-12-01T12:00:00+02:00"
    )]
    InvalidTimestamp {
        /// The value, shortened to 64 bytes.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The stream entry id given to [`decode_stream_entry`] or [`entry_id_time`] is not a Redis
    /// entry id (`<milliseconds>-<sequence>`), or its time cannot be an event's timestamp.
    #[error("stream entry id {entry_id:?} cannot give the event its timestamp: {reason}")]
    InvalidEntryId {
        /// The id, shortened to 64 bytes.
        entry_id: String,
        /// What is wrong with it, and what to do.
        reason: String,
    },
}

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    v: u32,
    id: &'a EventId,
    #[serde(rename = "type")]
    event_type: &'a str,
    payload: &'a Value,
    metadata: &'a EventMetadata,
}

#[derive(Deserialize)]
struct EnvelopeOwned {
    #[serde(default = "default_version")]
    v: u64,
    id: EventId,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    payload: Value,
    /// Absent and `null` mean the same: no metadata, and the reader supplies the timestamp.
    #[serde(default)]
    metadata: Option<WireMetadata>,
}

/// Only the version, read when a full decode failed, to tell an unknown version from bad JSON.
#[derive(Deserialize)]
struct VersionOnly {
    v: u64,
}

/// Envelopes without `v` are read as version 1, so entries from writers that produce the same
/// shape without a version (seed-style publishers) stay readable.
const fn default_version() -> u64 {
    WIRE_VERSION as u64
}

fn shorten(reason: String) -> String {
    if reason.len() > MAX_REASON_LEN {
        excerpt(&reason, MAX_REASON_LEN)
    } else {
        reason
    }
}

/// Encodes `event` as the value of the [`EVENT_FIELD`] field.
///
/// Validates the event against `limits` first; an envelope larger than
/// [`EventLimits::max_encoded_bytes`] is rejected with [`ErrorKind::InvalidInput`](crate::ErrorKind).
pub fn encode(event: &Event, limits: &EventLimits) -> Result<String> {
    event.validate_with(limits)?;
    let json = serde_json::to_string(&EnvelopeRef::of(event))
        .map_err(|err| unserializable(event, &err))?;
    check_encoded_len(event, json.len(), limits)?;
    Ok(json)
}

/// [`encode`] appended to `out`: the same checks and the same JSON, for a caller that gathers
/// many envelopes in one buffer (a batch) rather than in a `String` each. On an error, `out` is
/// left as it was.
pub fn encode_into(event: &Event, limits: &EventLimits, out: &mut Vec<u8>) -> Result<()> {
    event.validate_with(limits)?;
    let start = out.len();
    let written = serde_json::to_writer(&mut *out, &EnvelopeRef::of(event))
        .map_err(|err| unserializable(event, &err))
        .and_then(|()| check_encoded_len(event, out.len() - start, limits));
    if written.is_err() {
        out.truncate(start);
    }
    written
}

impl<'a> EnvelopeRef<'a> {
    fn of(event: &'a Event) -> Self {
        Self {
            v: WIRE_VERSION,
            id: &event.id,
            event_type: &event.event_type,
            payload: &event.payload,
            metadata: &event.metadata,
        }
    }
}

fn unserializable(event: &Event, err: &serde_json::Error) -> Error {
    Error::invalid_input(
        format!("payload of event {} ({})", event.id, event.event_type),
        format!("cannot be serialized to JSON: {err}"),
    )
}

/// Refuses an envelope of `len` bytes over [`EventLimits::max_encoded_bytes`].
fn check_encoded_len(event: &Event, len: usize, limits: &EventLimits) -> Result<()> {
    if len > limits.max_encoded_bytes {
        return Err(Error::invalid_input(
            format!("event {} ({})", event.id, event.event_type),
            format!(
                "encodes to {len} bytes, over the limit of {} bytes \
                 (EventLimits::max_encoded_bytes)",
                limits.max_encoded_bytes
            ),
        ));
    }
    Ok(())
}

/// Decodes the JSON envelope held in an entry's [`EVENT_FIELD`] field, without the entry id.
///
/// An envelope without `metadata.timestamp` is given the current time (to the millisecond), so
/// two decodes of the same envelope can disagree. When the envelope comes from a stream entry,
/// use [`decode_stream_entry`], which gives it the entry's time instead.
pub fn decode_envelope(bytes: &[u8], limits: &EventLimits) -> Result<Event, DecodeError> {
    decode_envelope_or(bytes, limits, || Ok(truncate_to_millis(SystemTime::now())))
}

/// Decodes an envelope; `missing_time` gives the timestamp when the envelope has none.
fn decode_envelope_or(
    bytes: &[u8],
    limits: &EventLimits,
    missing_time: impl FnOnce() -> Result<SystemTime, DecodeError>,
) -> Result<Event, DecodeError> {
    if bytes.len() > limits.max_encoded_bytes {
        return Err(DecodeError::TooLarge {
            field: EVENT_FIELD,
            len: bytes.len(),
            limit: limits.max_encoded_bytes,
        });
    }
    let envelope: EnvelopeOwned = match serde_json::from_slice(bytes) {
        Ok(envelope) => envelope,
        Err(err) => {
            return Err(match serde_json::from_slice::<VersionOnly>(bytes) {
                Ok(VersionOnly { v }) if v != u64::from(WIRE_VERSION) => {
                    DecodeError::UnsupportedVersion {
                        found: v,
                        supported: WIRE_VERSION,
                    }
                }
                _ => DecodeError::InvalidJson {
                    reason: shorten(err.to_string()),
                },
            });
        }
    };
    if envelope.v != u64::from(WIRE_VERSION) {
        return Err(DecodeError::UnsupportedVersion {
            found: envelope.v,
            supported: WIRE_VERSION,
        });
    }
    let metadata = envelope.metadata.unwrap_or_default();
    let timestamp = match metadata.timestamp.as_deref() {
        Some(text) => parse_rfc3339(text).map_err(|reason| DecodeError::InvalidTimestamp {
            value: excerpt(text, 64),
            reason,
        })?,
        None => missing_time()?,
    };
    let event = Event::from_parts(
        envelope.id,
        envelope.event_type,
        envelope.payload,
        metadata.into_metadata(timestamp),
    );
    event
        .validate_with(limits)
        .map_err(|err| DecodeError::InvalidEvent {
            reason: shorten(err.to_string()),
        })?;
    Ok(event)
}

/// The one [`EVENT_FIELD`] value among an entry's field/value pairs.
fn event_field<I, K, V>(fields: I) -> Result<V, DecodeError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<[u8]>,
{
    let mut found: Option<V> = None;
    for (name, value) in fields {
        if name.as_ref() == EVENT_FIELD.as_bytes() {
            if found.is_some() {
                return Err(DecodeError::DuplicateField { field: EVENT_FIELD });
            }
            found = Some(value);
        }
    }
    found.ok_or(DecodeError::MissingField { field: EVENT_FIELD })
}

/// Decodes a stream entry given as its field/value pairs, without its entry id.
///
/// Fields other than [`EVENT_FIELD`] are ignored (the dead-letter stream adds `error` and
/// `original_type`; other writers may add their own).
///
/// Without the entry id there is no stable time for an envelope that carries no
/// `metadata.timestamp`: such an event is given the current time (to the millisecond), which
/// changes from one read of the entry to the next. Readers of a stream should call
/// [`decode_stream_entry`] with the entry id instead; this function stays for callers that do
/// not have the id at hand.
pub fn decode_entry<I, K, V>(fields: I, limits: &EventLimits) -> Result<Event, DecodeError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let value = event_field(fields)?;
    decode_envelope(value.as_ref(), limits)
}

/// Decodes a stream entry given as its id and its field/value pairs.
///
/// `entry_id` is the id Redis gave the entry (`<milliseconds>-<sequence>`, as `XADD`,
/// `XRANGE` and `XREADGROUP` return it). An envelope without `metadata.timestamp` gets the
/// id's milliseconds as its timestamp: the time Redis appended the entry, the same on every
/// read. An envelope with a timestamp keeps its own. The id is checked either way; one that is
/// not `<milliseconds>-<sequence>` is a [`DecodeError::InvalidEntryId`].
///
/// For a dead letter, pass the `entry_id` field it carries (the entry it was moved from) to
/// keep the time of the original entry, or the dead letter's own id when that field is empty
/// (`publish_to_dlq`) or absent.
///
/// Fields other than [`EVENT_FIELD`] are ignored, as in [`decode_entry`].
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use redstream_core::{EventLimits, wire};
///
/// let fields = [("event", r#"{"id":"e-1","type":"order.created","payload":{}}"#)];
/// let event = wire::decode_stream_entry("1700000000123-0", fields, &EventLimits::default())?;
/// assert_eq!(
///     event.metadata().timestamp,
///     SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
/// );
/// # Ok::<(), redstream_core::wire::DecodeError>(())
/// ```
pub fn decode_stream_entry<I, K, V>(
    entry_id: &str,
    fields: I,
    limits: &EventLimits,
) -> Result<Event, DecodeError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let millis = entry_id_millis(entry_id)?;
    let value = event_field(fields)?;
    decode_envelope_or(value.as_ref(), limits, || millis_to_time(entry_id, millis))
}

/// The time in a stream entry id: its milliseconds part, as Redis set it when it appended the
/// entry (`1700000000123-0` is 2023-11-14T22:13:20.123Z).
///
/// Errors when the id is not `<milliseconds>-<sequence>` (two decimal numbers that fit in 64
/// bits, as Redis writes them) or when its time is after 9999-12-31T23:59:59.999Z, the latest
/// the wire format writes (only an id chosen by hand with `XADD <id>` gets there).
pub fn entry_id_time(entry_id: &str) -> Result<SystemTime, DecodeError> {
    let millis = entry_id_millis(entry_id)?;
    millis_to_time(entry_id, millis)
}

fn invalid_entry_id(entry_id: &str, reason: impl Into<String>) -> DecodeError {
    DecodeError::InvalidEntryId {
        entry_id: excerpt(entry_id, 64),
        reason: reason.into(),
    }
}

/// The milliseconds part of `<milliseconds>-<sequence>`, after checking both parts.
fn entry_id_millis(entry_id: &str) -> Result<u64, DecodeError> {
    // One pass over the bytes (this runs for every entry a consumer reads). Up to 19 digits
    // cannot overflow a u64, so only longer numbers pay for checked arithmetic.
    let number = |digits: &[u8]| {
        if digits.is_empty() {
            return None;
        }
        if digits.len() <= 19 {
            let mut n = 0u64;
            for &c in digits {
                let digit = c.wrapping_sub(b'0');
                if digit > 9 {
                    return None;
                }
                n = n * 10 + u64::from(digit);
            }
            return Some(n);
        }
        digits.iter().try_fold(0u64, |n, &c| {
            let digit = c.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            n.checked_mul(10)?.checked_add(u64::from(digit))
        })
    };
    let bytes = entry_id.as_bytes();
    let parsed = bytes
        .iter()
        .position(|&c| c == b'-')
        .and_then(|dash| Some((number(&bytes[..dash])?, number(&bytes[dash + 1..])?)));
    match parsed {
        Some((millis, _seq)) => Ok(millis),
        None => Err(invalid_entry_id(
            entry_id,
            "it is not `<milliseconds>-<sequence>` (two decimal numbers of at most 64 bits, \
             e.g. 1700000000123-0); pass the id that XADD, XRANGE or XREADGROUP returned for \
             this entry",
        )),
    }
}

fn millis_to_time(entry_id: &str, millis: u64) -> Result<SystemTime, DecodeError> {
    let past_the_end = || {
        invalid_entry_id(
            entry_id,
            "its time is after 9999-12-31T23:59:59.999Z, the latest the wire format writes; \
             give the envelope a metadata.timestamp",
        )
    };
    if millis / 1000 > MAX_WIRE_SECS {
        return Err(past_the_end());
    }
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_millis(millis))
        .ok_or_else(past_the_end)
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
