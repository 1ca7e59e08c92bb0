//! Foreign entries (seed 004's flat fields `event_id`, `brand_id`, `event_type`, `payload`,
//! `timestamp`): raw subscriptions and decoders, with the same acknowledgement, dead-letter and
//! redrive machinery as events.

use redstream_core::{Event, EventMetadata, HandlerResult};
use redstream_testkit::RedisServer;
use redstream_transport::{RawEntry, RedisTransport, StartFrom};
use tokio::sync::mpsc;

use crate::support::{fast, pending, recv_n, transport, until, within, xrange};

const STREAM: &str = "events.raw";
const GROUP: &str = "event-processors";

/// Seed 004's message: flat fields, no envelope.
fn fields(n: usize) -> Vec<(String, String)> {
    vec![
        ("event_id".to_owned(), format!("e{n}")),
        ("brand_id".to_owned(), "brand-7".to_owned()),
        ("event_type".to_owned(), "page.viewed".to_owned()),
        ("payload".to_owned(), format!(r#"{{"n":{n}}}"#)),
        ("timestamp".to_owned(), "2026-11-21T10:00:00Z".to_owned()),
    ]
}

async fn write(transport: &RedisTransport, n: usize) -> String {
    transport.publish_fields(STREAM, &fields(n)).await.unwrap()
}

/// Fields of a stream entry as text pairs.
fn text_pairs(entry: &RawEntry) -> Vec<(String, String)> {
    entry
        .fields
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k.clone()).unwrap(),
                String::from_utf8(v.clone()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_field_entries_are_handled_raw_not_dead_lettered() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, "events", "g", fast()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = transport
        .subscription()
        .streams([STREAM])
        .group(GROUP)
        .handle_raw(move |entry: RawEntry| {
            let _ = tx.send(entry);
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(write(&transport, n).await);
    }
    let mut got = recv_n(&mut rx, 3, "the raw entries").await;
    got.sort_by(|a, b| a.id.cmp(&b.id));
    for (n, entry) in got.iter().enumerate() {
        assert_eq!(entry.stream, STREAM);
        assert_eq!(entry.id, ids[n]);
        assert_eq!(entry.deliveries, 1);
        assert_eq!(text_pairs(entry), fields(n));
        assert_eq!(entry.text("brand_id"), Some("brand-7"));
    }
    until("every entry acknowledged", || async {
        pending(&server, STREAM, GROUP).await == 0
    })
    .await;
    assert!(xrange(&server, "events:dlq").await.is_empty());
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decoder_turns_flat_fields_into_events() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, "events", "g", fast()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = transport
        .subscription()
        .streams([STREAM])
        .group(GROUP)
        .decode_with(|entry| {
            let event_type = entry.text("event_type").ok_or("no event_type field")?;
            let payload = serde_json::from_slice(entry.field("payload").unwrap_or(b"null"))?;
            Ok(Event::new(event_type, payload, EventMetadata::default())
                .with_source(entry.text("brand_id").unwrap_or_default()))
        })
        .handle(move |event: Event| {
            let _ = tx.send(event);
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    for n in 0..3 {
        write(&transport, n).await;
    }
    let mut got = recv_n(&mut rx, 3, "the decoded events").await;
    got.sort_by_key(|e| e.payload()["n"].as_u64());
    for (n, event) in got.iter().enumerate() {
        assert_eq!(event.event_type(), "page.viewed");
        assert_eq!(event.payload()["n"], n);
    }
    until("every entry acknowledged", || async {
        pending(&server, STREAM, GROUP).await == 0
    })
    .await;
    assert!(xrange(&server, "events:dlq").await.is_empty());
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
}

/// A raw entry whose handler fails, and one the decoder refuses, are dead-lettered with their
/// fields and stream; a redrive writes the same fields back to `events.raw`, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_raw_entries_are_dead_lettered_and_redriven_intact() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(
        &server,
        "events",
        "g",
        fast().with_dead_letter_on_first_failure(true),
    )
    .await;
    let raw = transport
        .subscription()
        .streams([STREAM])
        .group(GROUP)
        .start_from(StartFrom::Beginning)
        .handle_raw(|entry: RawEntry| async move {
            match entry.text("event_id") {
                Some("e1") => HandlerResult::Err("profile service down".into()),
                _ => HandlerResult::Ok(()),
            }
        })
        .await
        .unwrap();
    let decoded = transport
        .subscription()
        .streams(["events.normalized"])
        .group(GROUP)
        .decode_with(|entry| {
            let event_type = entry.text("event_type").ok_or("no event_type field")?;
            Ok(Event::new(
                event_type,
                serde_json::json!({}),
                EventMetadata::default(),
            ))
        })
        .handle(|_: Event| async { HandlerResult::Ok(()) })
        .await
        .unwrap();
    for n in 0..3 {
        write(&transport, n).await;
    }
    transport
        .publish_fields(
            "events.normalized",
            &[("event_id", "x1"), ("brand_id", "b")],
        )
        .await
        .unwrap();
    until("two dead letters", || async {
        xrange(&server, "events:dlq").await.len() == 2
    })
    .await;
    until("everything acknowledged", || async {
        pending(&server, STREAM, GROUP).await == 0
            && pending(&server, "events.normalized", GROUP).await == 0
    })
    .await;
    for handle in [&raw, &decoded] {
        within("unsubscribe", transport.unsubscribe(handle))
            .await
            .unwrap();
    }

    let mut dead = transport.dlq_entries(10).await.unwrap();
    dead.sort_by(|a, b| a.stream.cmp(&b.stream));
    let (normalized, failed) = (&dead[0], &dead[1]);
    assert_eq!(failed.stream, STREAM);
    assert!(failed.raw);
    assert_eq!(failed.event, None);
    assert_eq!(failed.error, "profile service down");
    assert_eq!(failed.fields.as_deref(), Some(&fields(1)[..]));
    assert_eq!(normalized.stream, "events.normalized");
    assert!(normalized.raw);
    assert!(
        normalized.error.contains("no event_type field"),
        "{}",
        normalized.error
    );

    let report = transport.redrive_all().await.unwrap();
    assert_eq!(report.redriven, 2, "{report:?}");
    assert!(xrange(&server, "events:dlq").await.is_empty());
    let entries = xrange(&server, STREAM).await;
    assert_eq!(entries.len(), 4);
    assert_eq!(
        entries[3].1,
        fields(1),
        "the same fields, in the same order"
    );
    let normalized = xrange(&server, "events.normalized").await;
    assert_eq!(normalized.len(), 2);
    assert_eq!(normalized[1].1, normalized[0].1);
}

/// An entry's fields as Redis holds them, byte for byte.
type Bytes = Vec<(Vec<u8>, Vec<u8>)>;

/// `XRANGE <stream> - +` as bytes: ids and fields.
async fn xrange_bytes(server: &RedisServer, stream: &str) -> Vec<(String, Bytes)> {
    let mut conn = server.connection().await.unwrap();
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|(id, flat)| {
            let pairs = flat
                .chunks(2)
                .map(|pair| (pair[0].clone(), pair[1].clone()))
                .collect();
            (id, pairs)
        })
        .collect()
}

/// Binary fields (a value that is not UTF-8 and holds a NUL byte, a name that is not UTF-8)
/// survive the dead letter and the redrive byte for byte: the dead letter holds them as
/// `{"base64": ...}` and text as JSON strings, and the redrive writes the same bytes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_fields_survive_the_dead_letter_and_the_redrive() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(
        &server,
        "events",
        "g",
        fast().with_dead_letter_on_first_failure(true),
    )
    .await;
    let stream = "events.bin";
    let handle = transport
        .subscription()
        .streams([stream])
        .group(GROUP)
        .start_from(StartFrom::Beginning)
        .handle_raw(|_: RawEntry| async { HandlerResult::Err("refused".into()) })
        .await
        .unwrap();
    let written: Bytes = vec![
        (b"event_id".to_vec(), b"e1".to_vec()),
        (b"blob".to_vec(), vec![0xff, 0x00, b'x', 0xfe]),
        (vec![0xc3, b'k'], b"caf\xc3\xa9".to_vec()),
    ];
    transport.publish_fields(stream, &written).await.unwrap();
    until("the dead letter", || async {
        xrange(&server, "events:dlq").await.len() == 1 && pending(&server, stream, GROUP).await == 0
    })
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();

    let stored = xrange_bytes(&server, "events:dlq").await;
    let event = &stored[0].1.iter().find(|(k, _)| k == b"event").unwrap().1;
    assert_eq!(
        String::from_utf8(event.clone()).unwrap(),
        r#"[["event_id","e1"],["blob",{"base64":"/wB4/g=="}],[{"base64":"w2s="},"café"]]"#
    );
    let dead = transport.dlq_entries(10).await.unwrap();
    assert_eq!(dead[0].field_bytes.as_ref(), Some(&written));

    let report = transport.redrive_all().await.unwrap();
    assert_eq!(report.redriven, 1, "{report:?}");
    let entries = xrange_bytes(&server, stream).await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].1, written);
    assert_eq!(entries[1].1, written, "the same bytes, in the same order");
}

/// An entry that cannot be decoded keeps its bytes in its dead letter too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_binary_fields_are_kept_exactly() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, "events", "g", fast()).await;
    let handle = transport
        .subscription()
        .types(["bin.type"])
        .start_from(StartFrom::Beginning)
        .handle(|_: Event| async { HandlerResult::Ok(()) })
        .await
        .unwrap();
    let written: Bytes = vec![
        (b"blob".to_vec(), vec![0xff, 0x00, b'x']),
        (b"note".to_vec(), b"plain".to_vec()),
    ];
    transport
        .publish_fields("events:bin.type", &written)
        .await
        .unwrap();
    until("the dead letter", || async {
        xrange(&server, "events:dlq").await.len() == 1
    })
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
    let dead = transport.dlq_entries(10).await.unwrap();
    assert!(dead[0].event.is_none());
    let json: serde_json::Value = serde_json::from_str(&dead[0].raw_event).unwrap();
    assert_eq!(json["blob"], serde_json::json!({ "base64": "/wB4" }));
    assert_eq!(json["note"], "plain");
    let mut back = dead[0].field_bytes.clone().unwrap();
    back.sort();
    assert_eq!(back, written);
}
