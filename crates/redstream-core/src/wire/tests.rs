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
    let event =
        sample().with_timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
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
    // Appended to a buffer: refused the same way, the buffer left as it was.
    let mut out = b"earlier envelopes".to_vec();
    let err = encode_into(&event, &small, &mut out).unwrap_err();
    assert!(
        err.to_string().contains("over the limit of 64 bytes"),
        "{err}"
    );
    assert_eq!(out, b"earlier envelopes");
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
    let json = r#"{"id":"e-1","type":"t","metadata":{"timestamp":"2024-12-01T10:00:00+02:00"}}"#;
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
        let json = format!(r#"{{"id":"e-1","type":"t","metadata":{{"timestamp":"{timestamp}"}}}}"#);
        let err = decode_stream_entry("1-0", [("event", json.as_str())], &limits()).unwrap_err();
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
