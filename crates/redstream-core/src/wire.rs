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

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::event::{Event, EventId, EventLimits, EventMetadata};

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
    #[serde(default)]
    metadata: EventMetadata,
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

fn shorten(mut reason: String) -> String {
    if reason.len() > MAX_REASON_LEN {
        let mut cut = MAX_REASON_LEN;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push_str("...");
    }
    reason
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

/// Decodes the JSON envelope held in an entry's [`EVENT_FIELD`] field.
pub fn decode_envelope(bytes: &[u8], limits: &EventLimits) -> Result<Event, DecodeError> {
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
    let event = Event::from_parts(
        envelope.id,
        envelope.event_type,
        envelope.payload,
        envelope.metadata,
    );
    event
        .validate_with(limits)
        .map_err(|err| DecodeError::InvalidEvent {
            reason: shorten(err.to_string()),
        })?;
    Ok(event)
}

/// Decodes a stream entry given as its field/value pairs.
///
/// Fields other than [`EVENT_FIELD`] are ignored (the dead-letter stream adds `error` and
/// `original_type`; other writers may add their own).
pub fn decode_entry<I, K, V>(fields: I, limits: &EventLimits) -> Result<Event, DecodeError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
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
    let value = found.ok_or(DecodeError::MissingField { field: EVENT_FIELD })?;
    decode_envelope(value.as_ref(), limits)
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

    use serde_json::json;
}
