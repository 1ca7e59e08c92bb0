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
    let envelope = EnvelopeRef {
        v: WIRE_VERSION,
        id: &event.id,
        event_type: &event.event_type,
        payload: &event.payload,
        metadata: &event.metadata,
    };
    let json = serde_json::to_string(&envelope).map_err(|err| {
        Error::invalid_input(
            format!("payload of event {} ({})", event.id, event.event_type),
            format!("cannot be serialized to JSON: {err}"),
        )
    })?;
    if json.len() > limits.max_encoded_bytes {
        return Err(Error::invalid_input(
            format!("event {} ({})", event.id, event.event_type),
            format!(
                "encodes to {} bytes, over the limit of {} bytes (EventLimits::max_encoded_bytes)",
                json.len(),
                limits.max_encoded_bytes
            ),
        ));
    }
    Ok(json)
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
mod tests {
    use super::*;
    use crate::{ErrorKind, Priority};
    use serde_json::json;
    use std::time::{Duration, SystemTime};

    fn sample() -> Event {
        Event::new(
            "order.created",
            json!({"order_id": "12345", "total": 99.99, "items": 3}),
            EventMetadata::default(),
        )
        .with_priority(Priority::High)
        .with_source("checkout")
        .with_header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
    }

    fn limits() -> EventLimits {
        EventLimits::default()
    }

    #[test]
    fn round_trip_keeps_everything_to_the_millisecond() {
        let event = sample()
            .with_timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        let json = encode(&event, &limits()).unwrap();
        let back = decode_entry([(EVENT_FIELD, json.as_str())], &limits()).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn envelope_has_what_foreign_consumers_read() {
        let event = sample();
        let json = encode(&event, &limits()).unwrap();
        let value: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["v"], 1);
        assert_eq!(value["id"], event.id().as_str());
        assert_eq!(value["type"], "order.created");
        assert_eq!(value["payload"]["order_id"], "12345");
        assert_eq!(value["metadata"]["priority"], "high");
        assert!(
            value["metadata"]["timestamp"]
                .as_str()
                .unwrap()
                .ends_with('Z')
        );
        // A Rust consumer may deserialize the field straight into `Event`.
        let direct: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(direct, event);
    }

    #[test]
    fn missing_and_duplicate_fields() {
        let none: [(&str, &str); 0] = [];
        assert_eq!(
            decode_entry(none, &limits()).unwrap_err(),
            DecodeError::MissingField { field: "event" }
        );
        let json = encode(&sample(), &limits()).unwrap();
        assert_eq!(
            decode_entry(
                [("event", json.as_str()), ("event", json.as_str())],
                &limits()
            )
            .unwrap_err(),
            DecodeError::DuplicateField { field: "event" }
        );
        // Unknown extra fields are ignored.
        decode_entry([("event", json.as_str()), ("error", "boom")], &limits()).unwrap();
    }

    #[test]
    fn malformed_values_are_typed_errors() {
        let l = limits();
        assert!(matches!(
            decode_envelope(b"\xff\xfe", &l).unwrap_err(),
            DecodeError::InvalidJson { .. }
        ));
        assert!(matches!(
            decode_envelope(b"{\"v\":1}", &l).unwrap_err(),
            DecodeError::InvalidJson { .. }
        ));
        assert_eq!(
            decode_envelope(br#"{"v":2,"id":"x","type":"t","anything":[1]}"#, &l).unwrap_err(),
            DecodeError::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        );
        assert_eq!(
            decode_envelope(br#"{"v":7,"totally":"different"}"#, &l).unwrap_err(),
            DecodeError::UnsupportedVersion {
                found: 7,
                supported: 1
            }
        );
        assert!(matches!(
            decode_envelope(br#"{"v":1,"id":"x","type":"bad type","payload":1}"#, &l).unwrap_err(),
            DecodeError::InvalidEvent { .. }
        ));
        let deep = "[".repeat(10_000);
        assert!(matches!(
            decode_envelope(deep.as_bytes(), &l).unwrap_err(),
            DecodeError::InvalidJson { .. }
        ));
    }

    #[test]
    fn envelope_without_version_reads_as_v1() {
        let event = decode_envelope(
            br#"{"id":"evt-1","type":"order.created","payload":{"n":1}}"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(event.id().as_str(), "evt-1");
        assert_eq!(event.payload()["n"], 1);
    }

    #[test]
    fn size_limit_applies_both_ways() {
        let small = EventLimits::default().with_max_encoded_bytes(64);
        let event = Event::new("big", json!("x".repeat(100)), EventMetadata::default());
        let err = encode(&event, &small).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains("over the limit of 64 bytes"),
            "{err}"
        );
        let json = encode(&event, &limits()).unwrap();
        assert!(matches!(
            decode_envelope(json.as_bytes(), &small).unwrap_err(),
            DecodeError::TooLarge { limit: 64, .. }
        ));
    }

    #[test]
    fn long_parser_messages_are_shortened() {
        let hostile = format!(
            r#"{{"v":1,"id":"x","type":"t","metadata":{{"priority":"{}"}}}}"#,
            "p".repeat(10_000)
        );
        let err = decode_envelope(hostile.as_bytes(), &limits()).unwrap_err();
        assert!(err.to_string().len() < 400, "{}", err.to_string().len());
    }

    const NO_METADATA: &str = r#"{"v":1,"id":"e-1","type":"order.created","payload":{"n":1}}"#;

    fn at_millis(millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(millis)
    }

    #[test]
    fn an_envelope_without_a_timestamp_takes_the_entry_ids_time() {
        let l = limits();
        for json in [
            NO_METADATA,
            r#"{"id":"e-1","type":"order.created","metadata":null}"#,
            r#"{"id":"e-1","type":"order.created","metadata":{"priority":"high"}}"#,
            r#"{"id":"e-1","type":"order.created","metadata":{"timestamp":null}}"#,
        ] {
            let first = decode_stream_entry("1700000000123-7", [("event", json)], &l).unwrap();
            let again = decode_stream_entry("1700000000123-7", [("event", json)], &l).unwrap();
            assert_eq!(
                first.metadata().timestamp,
                at_millis(1_700_000_000_123),
                "{json}"
            );
            assert_eq!(first, again, "{json}");
            // What is written back is the id's time, in UTC with Z.
            let written: Value = serde_json::from_str(&encode(&first, &l).unwrap()).unwrap();
            assert_eq!(
                written["metadata"]["timestamp"], "2023-11-14T22:13:20.123Z",
                "{json}"
            );
        }
        // The rest of the metadata is kept.
        let event = decode_stream_entry(
            "5-0",
            [(
                "event",
                r#"{"id":"e","type":"t","metadata":{"priority":"high","source":"s"}}"#,
            )],
            &l,
        )
        .unwrap();
        assert_eq!(event.priority(), Priority::High);
        assert_eq!(event.metadata().source.as_deref(), Some("s"));
        assert_eq!(event.metadata().timestamp, at_millis(5));
    }

    #[test]
    fn an_envelope_with_a_timestamp_keeps_it_whatever_the_entry_id() {
        let event = sample().with_timestamp(at_millis(1_600_000_000_000));
        let json = encode(&event, &limits()).unwrap();
        let back =
            decode_stream_entry("1700000000123-0", [("event", json.as_str())], &limits()).unwrap();
        assert_eq!(back, event);
        // An id whose time the format cannot write is no obstacle when it is not used.
        let back = decode_stream_entry(
            "18446744073709551615-18446744073709551615",
            [("event", json.as_str())],
            &limits(),
        )
        .unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn entry_ids_are_checked() {
        let l = limits();
        for bad in [
            "",
            "-",
            "1700000000123",
            "1700000000123-",
            "-0",
            "*",
            "$",
            ">",
            "0-*",
            "+1-0",
            "1--0",
            "1-0-0",
            " 1-0",
            "1-0 ",
            "1.5-0",
            "0x10-0",
            "١-0",
            "18446744073709551616-0",
            "1-18446744073709551616",
        ] {
            let err = decode_stream_entry(bad, [("event", NO_METADATA)], &l).unwrap_err();
            assert!(
                matches!(err, DecodeError::InvalidEntryId { .. }),
                "{bad:?}: {err:?}"
            );
            assert!(
                err.to_string().contains("<milliseconds>-<sequence>"),
                "{err}"
            );
            assert!(entry_id_time(bad).is_err(), "{bad:?}");
        }
        // Checked even when the envelope has a timestamp, and before the fields.
        let json = encode(&sample(), &l).unwrap();
        assert!(matches!(
            decode_stream_entry("nope", [("event", json.as_str())], &l).unwrap_err(),
            DecodeError::InvalidEntryId { .. }
        ));
        let none: [(&str, &str); 0] = [];
        assert!(matches!(
            decode_stream_entry("nope", none, &l).unwrap_err(),
            DecodeError::InvalidEntryId { .. }
        ));
        assert_eq!(
            decode_stream_entry("1-0", none, &l).unwrap_err(),
            DecodeError::MissingField { field: "event" }
        );
        // A hostile id is shortened in the error.
        let long = "9".repeat(10_000);
        let err = decode_stream_entry(&long, [("event", NO_METADATA)], &l).unwrap_err();
        assert!(err.to_string().len() < 400, "{}", err.to_string().len());
    }

    #[test]
    fn entry_id_times_cover_what_rfc_3339_writes() {
        assert_eq!(entry_id_time("0-0").unwrap(), SystemTime::UNIX_EPOCH);
        assert_eq!(
            entry_id_time("0001700000000123-0").unwrap(),
            at_millis(1_700_000_000_123)
        );
        let last = (MAX_WIRE_SECS + 1) * 1000 - 1;
        let event =
            decode_stream_entry(&format!("{last}-0"), [("event", NO_METADATA)], &limits()).unwrap();
        assert_eq!(event.metadata().timestamp, at_millis(last));
        let written: Value = serde_json::from_str(&encode(&event, &limits()).unwrap()).unwrap();
        assert_eq!(written["metadata"]["timestamp"], "9999-12-31T23:59:59.999Z");
        for beyond in [last + 1, u64::MAX] {
            let id = format!("{beyond}-0");
            let err = decode_stream_entry(&id, [("event", NO_METADATA)], &limits()).unwrap_err();
            assert!(
                matches!(&err, DecodeError::InvalidEntryId { reason, .. } if reason.contains("after 9999")),
                "{err}"
            );
            assert!(entry_id_time(&id).is_err());
        }
    }

    #[test]
    fn without_an_entry_id_the_time_of_decoding_is_used() {
        let before = truncate_to_millis(SystemTime::now());
        let event = decode_entry([("event", NO_METADATA)], &limits()).unwrap();
        let after = SystemTime::now();
        let timestamp = event.metadata().timestamp;
        assert!(before <= timestamp && timestamp <= after, "{timestamp:?}");
    }

    #[test]
    fn offsets_are_read_and_utc_is_written() {
        let json =
            r#"{"id":"e-1","type":"t","metadata":{"timestamp":"2024-12-01T10:00:00+02:00"}}"#;
        let event = decode_stream_entry("1-0", [("event", json)], &limits()).unwrap();
        let same = decode_envelope(json.as_bytes(), &limits()).unwrap();
        assert_eq!(event, same);
        let written: Value = serde_json::from_str(&encode(&event, &limits()).unwrap()).unwrap();
        assert_eq!(written["metadata"]["timestamp"], "2024-12-01T08:00:00.000Z");
    }

    #[test]
    fn invalid_timestamps_are_their_own_error() {
        for (timestamp, reason) in [
            (
                "2024-12-01T10:00:00+24:00",
                "offset +24:00: the 'offset hour'",
            ),
            ("2024-12-01T10:00:00-00:60", "offset -00:60: offset minute"),
            ("2024-12-01T10:00:00+0200", "expected YYYY-MM-DD"),
            ("yesterday", "expected YYYY-MM-DD"),
            ("1969-07-20T20:17:40Z", "before 1970"),
        ] {
            let json =
                format!(r#"{{"id":"e-1","type":"t","metadata":{{"timestamp":"{timestamp}"}}}}"#);
            let err =
                decode_stream_entry("1-0", [("event", json.as_str())], &limits()).unwrap_err();
            let DecodeError::InvalidTimestamp { value, reason: why } = &err else {
                panic!("{timestamp}: {err:?}");
            };
            assert_eq!(value, timestamp);
            assert!(why.contains(reason), "{timestamp}: {why}");
            let message = err.to_string();
            assert!(message.contains("metadata.timestamp"), "{message}");
            assert!(message.contains("2024-12-01T12:00:00+02:00"), "{message}");
        }
        // A timestamp that is not a string is a shape error, as before.
        assert!(matches!(
            decode_envelope(
                br#"{"id":"e","type":"t","metadata":{"timestamp":5}}"#,
                &limits()
            )
            .unwrap_err(),
            DecodeError::InvalidJson { .. }
        ));
        // A long one is shortened.
        let json = format!(
            r#"{{"id":"e","type":"t","metadata":{{"timestamp":"{}"}}}}"#,
            "2".repeat(10_000)
        );
        let err = decode_envelope(json.as_bytes(), &limits()).unwrap_err();
        assert!(err.to_string().len() < 400, "{}", err.to_string().len());
    }

    #[test]
    fn decode_errors_convert_to_the_decode_kind() {
        let err: Error = decode_stream_entry("x", [("event", NO_METADATA)], &limits())
            .unwrap_err()
            .into();
        assert_eq!(err.kind(), ErrorKind::Decode);
        assert!(!err.is_retryable());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::Priority;
    use proptest::prelude::*;
    use std::time::{Duration, SystemTime};

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            // Floats whose decimal form parses back to the same bits on every parser path.
            any::<i32>().prop_map(|i| Value::from(f64::from(i) / 4.0)),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn text() -> impl Strategy<Value = String> {
        // Printable text (no control characters), including non-ASCII.
        "[^\\p{Cc}]{0,24}"
    }

    prop_compose! {
        fn valid_event()(
            event_type in "[^\\s\\p{Cc}]{1,64}",
            payload in json_value(),
            millis in 0u64..4_000_000_000_000,
            source in proptest::option::of(text()),
            correlation in proptest::option::of(text()),
            causation in proptest::option::of(text()),
            user in proptest::option::of(text()),
            priority in prop::sample::select(Priority::ALL.to_vec()),
            headers in prop::collection::btree_map("[^\\p{Cc}]{1,16}", text(), 0..8),
        ) -> Event {
            let metadata = EventMetadata {
                timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(millis),
                source,
                correlation_id: correlation,
                causation_id: causation,
                priority,
                user_id: user,
                headers,
            };
            Event::new(event_type, payload, metadata)
        }
    }

    proptest! {
        #[test]
        fn any_valid_event_round_trips(event in valid_event()) {
            let limits = EventLimits::default();
            let json = encode(&event, &limits).unwrap();
            let back = decode_entry([(EVENT_FIELD, json.as_bytes())], &limits).unwrap();
            prop_assert_eq!(back, event);
        }

        #[test]
        fn arbitrary_field_maps_never_panic(
            fields in prop::collection::vec(
                (
                    prop_oneof![Just(b"event".to_vec()), prop::collection::vec(any::<u8>(), 0..8)],
                    prop_oneof![
                        prop::collection::vec(any::<u8>(), 0..64),
                        ".{0,64}".prop_map(String::into_bytes),
                        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
                    ],
                ),
                0..6,
            )
        ) {
            let small = EventLimits::default().with_max_encoded_bytes(48);
            // Any outcome is fine as long as it is a value, not a panic.
            let _ = decode_entry(fields.iter().map(|(k, v)| (k, v)), &EventLimits::default());
            let _ = decode_entry(fields.iter().map(|(k, v)| (k, v)), &small);
        }

        #[test]
        fn envelope_shaped_json_never_panics(
            v in prop_oneof![Just(json!(1)), json_value()],
            id in json_value(),
            ty in json_value(),
            metadata in json_value(),
        ) {
            let doc = json!({"v": v, "id": id, "type": ty, "payload": {}, "metadata": metadata});
            let bytes = serde_json::to_vec(&doc).unwrap();
            if let Ok(event) = decode_envelope(&bytes, &EventLimits::default()) {
                // Whatever decodes must itself be valid and re-encodable.
                prop_assert!(event.validate().is_ok());
                prop_assert!(encode(&event, &EventLimits::default()).is_ok());
            }
        }
    }

    /// A whole-millisecond UTC instant the format carries, at least a day away from both ends
    /// so that its local time under any offset is a date humantime can write too.
    fn instant() -> impl Strategy<Value = SystemTime> {
        (86_400_000u64..(MAX_WIRE_SECS - 86_400) * 1000)
            .prop_map(|millis| SystemTime::UNIX_EPOCH + Duration::from_millis(millis))
    }

    /// An offset in seconds, from -23:59 to +23:59, whole minutes.
    fn offset() -> impl Strategy<Value = i64> {
        (-(23 * 60 + 59)..=(23 * 60 + 59i64)).prop_map(|minutes| minutes * 60)
    }

    /// `t` written in the local time of `offset` with that offset, e.g.
    /// `2024-12-01T12:00:00.000+02:00` for 10:00Z: humantime writes the shifted instant in
    /// UTC, and its `Z` is replaced by the offset.
    fn with_offset(t: SystemTime, offset: i64, negative_zero: bool) -> String {
        let shift = Duration::from_secs(offset.unsigned_abs());
        let local = if offset >= 0 { t + shift } else { t - shift };
        let text = humantime::format_rfc3339_millis(local).to_string();
        let sign = if offset < 0 || (offset == 0 && negative_zero) {
            '-'
        } else {
            '+'
        };
        let minutes = offset.unsigned_abs() / 60;
        format!(
            "{}{sign}{:02}:{:02}",
            text.trim_end_matches('Z'),
            minutes / 60,
            minutes % 60
        )
    }

    fn envelope_with_timestamp(timestamp: &str) -> String {
        json!({"id": "e-1", "type": "t", "payload": null, "metadata": {"timestamp": timestamp}})
            .to_string()
    }

    /// The rule `entry_id_millis` implements, written the plain way.
    fn entry_id_millis_reference(id: &str) -> Option<u64> {
        let number = |part: &str| {
            (!part.is_empty() && part.bytes().all(|c| c.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten()
        };
        let (millis, seq) = id.split_once('-')?;
        number(seq)?;
        number(millis)
    }

    proptest! {
        #[test]
        fn entry_ids_are_read_as_the_plain_rule_reads_them(
            id in prop_oneof![
                (any::<u64>(), any::<u64>()).prop_map(|(m, s)| format!("{m}-{s}")),
                "[0-9]{0,21}-[0-9]{0,21}",
                "[0-9+\\- x.]{0,12}",
                ".{0,12}",
            ],
        ) {
            prop_assert_eq!(entry_id_millis(&id).ok(), entry_id_millis_reference(&id), "{}", id);
        }
    }

    proptest! {
        #[test]
        fn any_offset_is_normalised_to_utc(
            t in instant(),
            offset in offset(),
            negative_zero in any::<bool>(),
            seq in any::<u64>(),
        ) {
            let text = with_offset(t, offset, negative_zero);
            let json = envelope_with_timestamp(&text);
            let event = decode_stream_entry(&format!("1-{seq}"), [(EVENT_FIELD, json.as_str())], &EventLimits::default())
                .unwrap();
            prop_assert_eq!(event.metadata().timestamp, t, "{}", text);
            // The same instant through `Event`'s own serde form.
            let direct: Event = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(direct.metadata().timestamp, t);
            // Written back in UTC with Z, whatever offset it was read with.
            let written: Value =
                serde_json::from_str(&encode(&event, &EventLimits::default()).unwrap()).unwrap();
            prop_assert_eq!(
                written["metadata"]["timestamp"].as_str().unwrap(),
                humantime::format_rfc3339_millis(t).to_string()
            );
        }

        /// Decoding and encoding again never changes a timestamp, whatever its precision;
        /// one with whole milliseconds is written with exactly three digits, as always.
        #[test]
        fn decode_then_encode_keeps_the_timestamp_to_the_nanosecond(
            secs in 0u64..MAX_WIRE_SECS,
            nanos in prop_oneof![
                (0u32..1000).prop_map(|ms| ms * 1_000_000),
                (0u32..1_000_000).prop_map(|us| us * 1_000),
                0u32..1_000_000_000,
            ],
        ) {
            let t = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
            let text = humantime::format_rfc3339_nanos(t).to_string();
            let json = envelope_with_timestamp(&text);
            let limits = EventLimits::default();
            let event = decode_stream_entry("1-0", [(EVENT_FIELD, json.as_str())], &limits).unwrap();
            prop_assert_eq!(event.metadata().timestamp, t);
            let encoded = encode(&event, &limits).unwrap();
            let again = decode_stream_entry("1-0", [(EVENT_FIELD, encoded.as_str())], &limits).unwrap();
            prop_assert_eq!(again.metadata().timestamp, t, "{}", encoded);
            if nanos.is_multiple_of(1_000_000) {
                let written: Value = serde_json::from_str(&encoded).unwrap();
                prop_assert_eq!(
                    written["metadata"]["timestamp"].as_str().unwrap(),
                    humantime::format_rfc3339_millis(t).to_string()
                );
            }
        }

        #[test]
        fn out_of_range_offsets_are_refused(
            t in instant(),
            hours in 0u32..100,
            minutes in 0u32..100,
            negative in any::<bool>(),
        ) {
            prop_assume!(hours > 23 || minutes > 59);
            let utc = humantime::format_rfc3339_millis(t).to_string();
            let sign = if negative { '-' } else { '+' };
            let text = format!("{}{sign}{hours:02}:{minutes:02}", utc.trim_end_matches('Z'));
            let err = decode_envelope(envelope_with_timestamp(&text).as_bytes(), &EventLimits::default())
                .unwrap_err();
            let is_offset_error = matches!(
                &err,
                DecodeError::InvalidTimestamp { reason, .. } if reason.contains("offset")
            );
            prop_assert!(is_offset_error, "{}: {:?}", text, err);
        }

        #[test]
        fn any_text_as_a_timestamp_is_a_value_or_an_error(text in ".{0,40}") {
            let json = envelope_with_timestamp(&text);
            match decode_envelope(json.as_bytes(), &EventLimits::default()) {
                Ok(event) => {
                    // Whatever is accepted is re-encodable and reads back to the same instant,
                    // to the millisecond.
                    let again = encode(&event, &EventLimits::default()).unwrap();
                    let back = decode_envelope(again.as_bytes(), &EventLimits::default()).unwrap();
                    prop_assert_eq!(
                        back.metadata().timestamp,
                        truncate_to_millis(event.metadata().timestamp)
                    );
                }
                Err(err) => {
                    let is_timestamp_error = matches!(err, DecodeError::InvalidTimestamp { .. });
                    prop_assert!(is_timestamp_error, "{:?}", err);
                }
            }
        }

        #[test]
        fn an_envelope_without_a_timestamp_takes_its_entry_ids_millis(
            millis in 0u64..=(MAX_WIRE_SECS + 1) * 1000 - 1,
            seq in any::<u64>(),
            metadata in prop_oneof![
                Just(None),
                Just(Some(json!(null))),
                Just(Some(json!({}))),
                Just(Some(json!({"timestamp": null, "priority": "low"}))),
            ],
        ) {
            let mut doc = json!({"v": 1, "id": "e-1", "type": "order.created", "payload": {}});
            if let Some(metadata) = metadata {
                doc["metadata"] = metadata;
            }
            let json = doc.to_string();
            let entry_id = format!("{millis}-{seq}");
            let limits = EventLimits::default();
            let event = decode_stream_entry(&entry_id, [(EVENT_FIELD, json.as_str())], &limits).unwrap();
            let expected = SystemTime::UNIX_EPOCH + Duration::from_millis(millis);
            prop_assert_eq!(event.metadata().timestamp, expected);
            prop_assert_eq!(entry_id_time(&entry_id).unwrap(), expected);
            // Every read of the entry agrees.
            let again = decode_stream_entry(&entry_id, [(EVENT_FIELD, json.as_str())], &limits).unwrap();
            prop_assert_eq!(&again, &event);
            // Re-encoded, the timestamp is the id's time and survives any later read.
            let encoded = encode(&event, &limits).unwrap();
            let other_entry = decode_stream_entry("1-0", [(EVENT_FIELD, encoded.as_str())], &limits).unwrap();
            prop_assert_eq!(other_entry, event);
        }

        #[test]
        fn any_text_as_an_entry_id_is_a_value_or_an_error(
            entry_id in prop_oneof![".{0,30}", "[0-9]{0,22}-?[0-9]{0,22}-?"],
        ) {
            let json = r#"{"id":"e-1","type":"t"}"#;
            let parts: Option<(u64, u64)> = entry_id.split_once('-').and_then(|(a, b)| {
                let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
                (all_digits(a) && all_digits(b)).then(|| Some((a.parse().ok()?, b.parse().ok()?))).flatten()
            });
            let decoded = decode_stream_entry(&entry_id, [(EVENT_FIELD, json)], &EventLimits::default());
            match parts {
                Some((millis, _)) if millis / 1000 <= MAX_WIRE_SECS => {
                    prop_assert_eq!(
                        decoded.unwrap().metadata().timestamp,
                        SystemTime::UNIX_EPOCH + Duration::from_millis(millis)
                    );
                }
                _ => {
                    let is_id_error = matches!(decoded, Err(DecodeError::InvalidEntryId { .. }));
                    prop_assert!(is_id_error, "{:?}", decoded);
                }
            }
        }
    }

    use crate::event::truncate_to_millis;
    use serde_json::json;
}
