//! The wire format's timestamps on a real server: an envelope without a timestamp takes the
//! time Redis gave its entry, the same on every read and redelivery; offsets are read and
//! written back in UTC, as `redis-cli` shows.

use std::process::Command;
use std::time::{Duration, SystemTime};

use redis::aio::MultiplexedConnection;
use redstream_core::wire::{self, DecodeError, EVENT_FIELD};
use redstream_core::{EventLimits, Priority};
use redstream_testkit::RedisServer;

/// An envelope as a seed-style publisher writes it: no `v`, no `metadata`.
const NO_METADATA: &str = r#"{"id":"evt-1","type":"order.created","payload":{"order_id":"12345"}}"#;

type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;
type GroupRead = Vec<(String, Entries)>;

/// Runs `redis-cli` against the private server, as an operator would, and returns its output.
fn redis_cli(server: &RedisServer, args: &[&str]) -> String {
    let port = server.port().to_string();
    let output = Command::new("redis-cli")
        .args(["-h", server.host(), "-p", &port])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

async fn connect(server: &RedisServer) -> MultiplexedConnection {
    server
        .client()
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn xrange(conn: &mut MultiplexedConnection, stream: &str) -> Entries {
    redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap()
}

/// Redis's clock in milliseconds (`TIME`).
async fn server_millis(conn: &mut MultiplexedConnection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    secs * 1000 + micros / 1000
}

fn millis(t: SystemTime) -> u64 {
    u64::try_from(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test]
async fn an_envelope_without_metadata_keeps_the_time_redis_gave_its_entry() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = connect(&server).await;
    let limits = EventLimits::default();

    // An entry with an id chosen by hand: its time is known exactly.
    let id = redis_cli(
        &server,
        &[
            "XADD",
            "events:order.created",
            "1700000000123-0",
            EVENT_FIELD,
            NO_METADATA,
        ],
    );
    assert_eq!(id.trim(), "1700000000123-0");
    let entries = xrange(&mut conn, "events:order.created").await;
    let (entry_id, fields) = &entries[0];
    let event =
        wire::decode_stream_entry(entry_id, fields.iter().map(|(k, v)| (k, v)), &limits).unwrap();
    assert_eq!(
        event.metadata().timestamp,
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
    );
    assert_eq!(event.priority(), Priority::Normal);

    // Written back (a redrive, a sink), the timestamp is that time in UTC: the next reader of
    // the new entry sees it in the envelope, whatever the new entry's id.
    let envelope = wire::encode(&event, &limits).unwrap();
    let _: String = redis::cmd("XADD")
        .arg("events:copy")
        .arg("*")
        .arg(EVENT_FIELD)
        .arg(&envelope)
        .query_async(&mut conn)
        .await
        .unwrap();
    let shown = redis_cli(&server, &["XRANGE", "events:copy", "-", "+"]);
    assert!(
        shown.contains(r#""timestamp":"2023-11-14T22:13:20.123Z""#),
        "{shown}"
    );
    let copy = xrange(&mut conn, "events:copy").await;
    let (copy_id, copy_fields) = &copy[0];
    assert_ne!(copy_id, entry_id);
    let again =
        wire::decode_stream_entry(copy_id, copy_fields.iter().map(|(k, v)| (k, v)), &limits)
            .unwrap();
    assert_eq!(again, event);
}

/// The first delivery to a group and the redelivery of the same pending entry carry one
/// timestamp: the entry's, set by Redis between the two `TIME` readings around the `XADD`.
#[tokio::test]
async fn a_delivery_and_its_redelivery_carry_the_same_timestamp() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = connect(&server).await;
    let limits = EventLimits::default();
    let stream = "events:order.created";
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("billing")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();

    let before = server_millis(&mut conn).await;
    let id = redis_cli(&server, &["XADD", stream, "*", EVENT_FIELD, NO_METADATA]);
    let after = server_millis(&mut conn).await;

    let read = |start: &'static str| {
        let mut conn = conn.clone();
        async move {
            let reply: GroupRead = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("billing")
                .arg("billing-1")
                .arg("COUNT")
                .arg(10)
                .arg("STREAMS")
                .arg(stream)
                .arg(start)
                .query_async(&mut conn)
                .await
                .unwrap();
            let (_, mut entries) = reply.into_iter().next().unwrap();
            assert_eq!(entries.len(), 1, "{start}");
            entries.remove(0)
        }
    };
    // `>`: the first delivery; `0`: the same entry again, from the consumer's pending list.
    let (first_id, first_fields) = read(">").await;
    let (second_id, second_fields) = read("0").await;
    assert_eq!(first_id, id.trim());
    assert_eq!(second_id, first_id);

    let first = wire::decode_stream_entry(&first_id, first_fields, &limits).unwrap();
    let second = wire::decode_stream_entry(&second_id, second_fields, &limits).unwrap();
    assert_eq!(first, second);
    let timestamp = millis(first.metadata().timestamp);
    assert!(
        before <= timestamp && timestamp <= after,
        "{before} <= {timestamp} <= {after}"
    );
    assert_eq!(
        first.metadata().timestamp,
        wire::entry_id_time(&first_id).unwrap()
    );
}

#[tokio::test]
async fn offsets_written_by_others_are_read_in_utc_and_bad_ones_are_decode_errors() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = connect(&server).await;
    let limits = EventLimits::default();
    let stream = "events:order.created";
    for timestamp in [
        "2024-12-01T10:00:00+02:00",
        "2024-12-01T10:00:00.000+02:00",
        "2024-12-01t08:00:00z",
        "2024-12-01T02:30:00-05:30",
        "2024-12-01T08:00:00-00:00",
        "2024-12-01T10:00:00+24:00",
        "2024-12-01T10:00:00+0200",
    ] {
        let envelope = format!(
            r#"{{"id":"evt-{timestamp}","type":"order.created","metadata":{{"timestamp":"{timestamp}"}}}}"#
        );
        redis_cli(&server, &["XADD", stream, "*", EVENT_FIELD, &envelope]);
    }
    let entries = xrange(&mut conn, stream).await;
    assert_eq!(entries.len(), 7);
    let decoded: Vec<_> = entries
        .iter()
        .map(|(id, fields)| {
            wire::decode_stream_entry(id, fields.iter().map(|(k, v)| (k, v)), &limits)
        })
        .collect();
    let eight_utc = humantime::parse_rfc3339("2024-12-01T08:00:00Z").unwrap();
    for event in &decoded[..5] {
        let event = event.as_ref().unwrap();
        assert_eq!(event.metadata().timestamp, eight_utc, "{}", event.id());
        let written: serde_json::Value =
            serde_json::from_str(&wire::encode(event, &limits).unwrap()).unwrap();
        assert_eq!(written["metadata"]["timestamp"], "2024-12-01T08:00:00.000Z");
    }
    for (result, reason) in decoded[5..].iter().zip(["offset +24:00", "expected YYYY"]) {
        let err = result.as_ref().unwrap_err();
        assert!(
            matches!(err, DecodeError::InvalidTimestamp { reason: why, .. } if why.contains(reason)),
            "{err}"
        );
    }
}
