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
    fn encode_into_appends_what_encode_returns(event in valid_event(), before in ".{0,16}") {
        let limits = EventLimits::default();
        let mut out = before.clone().into_bytes();
        encode_into(&event, &limits, &mut out).unwrap();
        prop_assert_eq!(&out[..before.len()], before.as_bytes());
        let alone = encode(&event, &limits).unwrap();
        prop_assert_eq!(&out[before.len()..], alone.as_bytes());
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
