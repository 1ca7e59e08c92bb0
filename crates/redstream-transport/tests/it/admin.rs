//! The administration API against a real redis-server: resolving stream names, one dead letter,
//! purging and redriving dead letters by type, claiming idle pending entries, and following
//! streams with and without a consumer group.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redstream_core::{ErrorKind, Event, EventMetadata, Priority};
use redstream_testkit::RedisServer;
use redstream_transport::{PendingQuery, RedisTransport};
use serde_json::json;

use crate::support::{event, fast, number, transport, unique, within, xrange};

/// Runs one raw command and returns its reply.
async fn raw<T: redis::FromRedisValue>(conn: &mut MultiplexedConnection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(conn).await.unwrap()
}

fn assert_kind<T: std::fmt::Debug>(
    result: redstream_transport::Result<T>,
    kind: ErrorKind,
    needle: &str,
) {
    let err = result.unwrap_err();
    assert_eq!(err.kind(), kind, "{err}");
    assert!(
        err.to_string().contains(needle),
        "{err} should mention {needle:?}"
    );
}

async fn setup(server: &RedisServer) -> (RedisTransport, String) {
    let prefix = unique("admin");
    let transport = transport(server, &prefix, "g", fast()).await;
    (transport, prefix)
}

#[tokio::test]
async fn names_resolve_to_streams() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, "ops", "g", fast()).await;
    let key = |name: &str| transport.stream_key_for(name).unwrap();
    assert_eq!(key("order.created"), "ops:order.created");
    assert_eq!(key("ops:order.created"), "ops:order.created");
    assert_eq!(key("dlq"), "ops:dlq");
    assert_eq!(key("ops:dlq"), "ops:dlq");
    assert_eq!(key("order:created"), "ops:order:created");
    // `#` is an ordinary character now: there are no lane suffixes.
    assert_eq!(key("order.created#high"), "ops:order.created#high");
    // Not an event type (a hash tag): a full name, used as it is.
    assert_eq!(key("{orders}.events"), "{orders}.events");
    // An existing stream is used by its full name; a missing one reads as an event type.
    assert_eq!(
        transport.resolve_stream("events.raw").await.unwrap(),
        "ops:events.raw"
    );
    let mut conn = server.connection().await.unwrap();
    let _: String = raw(&mut conn, &["XADD", "events.raw", "*", "f", "v"]).await;
    assert_eq!(
        transport.resolve_stream("events.raw").await.unwrap(),
        "events.raw"
    );
    assert_eq!(
        transport.resolve_stream("order.created").await.unwrap(),
        "ops:order.created"
    );
    // A key of that name that is no stream does not count.
    let () = redis::cmd("SET")
        .arg("order.shipped")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        transport.resolve_stream("order.shipped").await.unwrap(),
        "ops:order.shipped"
    );
    // Both the name and its event type's stream are streams: refused, naming both.
    let _: String = raw(&mut conn, &["XADD", "ops:events.raw", "*", "f", "v"]).await;
    let err = transport.resolve_stream("events.raw").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("\"ops:events.raw\"") && text.contains("names two streams"),
        "{text}"
    );
    // A full name of the prefix is never ambiguous.
    assert_eq!(
        transport.resolve_stream("ops:events.raw").await.unwrap(),
        "ops:events.raw"
    );
    for (bad, needle) in [
        ("", "must not be empty"),
        ("order created", "must not contain"),
    ] {
        assert_kind(
            transport.stream_key_for(bad),
            ErrorKind::InvalidInput,
            needle,
        );
    }
}

#[tokio::test]
async fn one_dead_letter_is_read_by_id() {
    let server = RedisServer::start().await.unwrap();
    let (transport, _) = setup(&server).await;
    let event = event("order.created", 7).with_priority(Priority::High);
    let id = transport
        .publish_to_dlq(event.clone(), "card declined")
        .await
        .unwrap();

    let entry = transport.dlq_entry(&id).await.unwrap().unwrap();
    assert_eq!(entry.id, id);
    assert_eq!(entry.event.as_ref(), Some(&event));
    assert_eq!(entry.error, "card declined");
    assert_eq!(entry.original_type, "order.created");
    assert_eq!(
        entry.stream,
        transport.stream_key_for("order.created").unwrap(),
        "every priority is in the type's one stream"
    );
    assert!(entry.last_failure.is_some());
    // The same entry as the listing gives.
    assert_eq!(transport.dlq_entries(10).await.unwrap(), vec![entry]);

    assert_eq!(transport.dlq_entry("1-0").await.unwrap(), None);
    assert_kind(
        transport.dlq_entry("not-an-id").await,
        ErrorKind::InvalidInput,
        "not-an-id",
    );
}

#[tokio::test]
async fn purge_empties_the_dead_letter_stream_and_keeps_its_groups() {
    let server = RedisServer::start().await.unwrap();
    let (transport, _) = setup(&server).await;
    assert_eq!(
        transport.dlq_purge().await.unwrap(),
        0,
        "no dead-letter stream yet"
    );
    for n in 0..3 {
        transport
            .publish_to_dlq(event("a", n), "failed")
            .await
            .unwrap();
    }
    let dlq = transport.stream_key_for("dlq").unwrap();
    let mut conn = server.connection().await.unwrap();
    let _: () = raw(&mut conn, &["XGROUP", "CREATE", &dlq, "g-dlq", "0"]).await;

    assert_eq!(transport.dlq_purge().await.unwrap(), 3);
    assert!(transport.dlq_entries(10).await.unwrap().is_empty());
    let info = transport.stream_info(&dlq).await.unwrap();
    assert_eq!(info.length, 0);
    assert_eq!(info.groups.len(), 1, "the group of consume_dlq stays");
    assert_eq!(transport.dlq_purge().await.unwrap(), 0);
}

#[tokio::test]
async fn redrive_by_type_moves_only_that_type_back() {
    let server = RedisServer::start().await.unwrap();
    let (transport, _) = setup(&server).await;
    assert_eq!(
        transport.redrive_type("a").await.unwrap().redriven,
        0,
        "an empty dead-letter stream redrives nothing"
    );
    for n in 0..3 {
        transport
            .publish_to_dlq(event("a", n), "failed")
            .await
            .unwrap();
        transport
            .publish_to_dlq(event("b", n), "failed")
            .await
            .unwrap();
    }
    // A dead letter of type a that cannot be redriven, written the way another tool would.
    let dlq = transport.stream_key_for("dlq").unwrap();
    let mut conn = server.connection().await.unwrap();
    let undecodable: String = raw(
        &mut conn,
        &[
            "XADD",
            &dlq,
            "*",
            "event",
            "{\"foo\":\"bar\"}",
            "error",
            "no event field",
            "original_type",
            "a",
            "undecodable",
            "true",
        ],
    )
    .await;

    let report = transport.redrive_type("a").await.unwrap();
    assert_eq!(report.redriven, 3);
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert_eq!(report.skipped[0].id, undecodable);

    let redriven = xrange(&server, &transport.stream_key_for("a").unwrap()).await;
    let mut numbers: Vec<usize> = redriven
        .iter()
        .map(|(_, fields)| {
            let event: Event = serde_json::from_str(&fields[0].1).unwrap();
            number(&event)
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, [0, 1, 2]);
    let left = transport.dlq_entries(100).await.unwrap();
    assert_eq!(left.len(), 4, "the three b's and the undecodable a stay");
    assert!(
        left.iter()
            .all(|e| e.original_type == "b" || e.id == undecodable)
    );

    assert_kind(
        transport.redrive_type("a b").await,
        ErrorKind::InvalidInput,
        "event type",
    );
}

#[tokio::test]
async fn claim_moves_idle_entries_without_counting_a_delivery() {
    let server = RedisServer::start().await.unwrap();
    let (transport, prefix) = setup(&server).await;
    let stream = transport.stream_key_for("order.created").unwrap();
    let mut conn = server.connection().await.unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(transport.publish(event("order.created", n)).await.unwrap());
    }
    let _: () = raw(&mut conn, &["XGROUP", "CREATE", &stream, "billing", "0"]).await;
    let _: redis::Value = raw(
        &mut conn,
        &[
            "XREADGROUP",
            "GROUP",
            "billing",
            "c1",
            "STREAMS",
            &stream,
            ">",
        ],
    )
    .await;

    let hour = Duration::from_secs(3600);
    let none = transport
        .claim(&stream, "billing", "c2", hour, 10)
        .await
        .unwrap();
    assert!(none.is_empty(), "nothing has been idle for an hour");

    let claimed = transport
        .claim(&stream, "billing", "c2", Duration::ZERO, 2)
        .await
        .unwrap();
    assert_eq!(claimed, ids[..2], "the oldest two");
    let pending = transport
        .pending(&stream, "billing", PendingQuery::new(10))
        .await
        .unwrap();
    let owners: Vec<(&str, u64)> = pending
        .iter()
        .map(|p| (p.consumer.as_str(), p.deliveries))
        .collect();
    assert_eq!(owners, [("c2", 1), ("c2", 1), ("c1", 1)]);

    assert_kind(
        transport
            .claim(
                &transport.stream_key_for("missing").unwrap(),
                "billing",
                "c2",
                hour,
                1,
            )
            .await,
        ErrorKind::NotFound,
        "missing",
    );
    assert_kind(
        transport.claim(&stream, "nobody", "c2", hour, 1).await,
        ErrorKind::NotFound,
        "nobody",
    );
    assert_kind(
        transport.claim(&stream, "billing", "c2", hour, 0).await,
        ErrorKind::InvalidInput,
        "count",
    );
    assert_kind(
        transport.claim(&stream, "", "c2", hour, 1).await,
        ErrorKind::InvalidInput,
        "group",
    );
    assert_kind(
        transport.claim(&stream, "billing", "", hour, 1).await,
        ErrorKind::InvalidInput,
        "consumer",
    );
    assert_kind(
        transport
            .claim("elsewhere order.created", "billing", "c2", hour, 1)
            .await,
        ErrorKind::InvalidInput,
        "must not contain",
    );
    let _: () = raw(&mut conn, &["SET", &format!("{prefix}:string"), "x"]).await;
    assert_kind(
        transport
            .claim(&format!("{prefix}:string"), "billing", "c2", hour, 1)
            .await,
        ErrorKind::WrongType,
        "not a stream",
    );
}

/// Reads until `n` entries came, failing after the test kit's hang limit.
async fn next_n(
    follower: &mut redstream_transport::Follower,
    n: usize,
) -> Vec<redstream_transport::FollowedEntry> {
    within("following", async {
        let mut entries = Vec::new();
        while entries.len() < n {
            entries.extend(follower.next(100).await.unwrap());
        }
        entries
    })
    .await
}

#[tokio::test]
async fn following_without_a_group_reads_new_entries_and_creates_nothing() {
    let server = RedisServer::start().await.unwrap();
    let (transport, _) = setup(&server).await;
    let stream = transport.stream_key_for("order.created").unwrap();
    let other = transport.stream_key_for("order.shipped").unwrap();
    transport.publish(event("order.created", 0)).await.unwrap();

    let streams = [stream.clone(), other.clone()];
    let mut follower = transport.follow(&streams, None).await.unwrap();
    assert_eq!(follower.streams(), streams);
    assert!(
        follower.next(10).await.unwrap().is_empty(),
        "what was there before is not followed"
    );
    transport.publish(event("order.created", 1)).await.unwrap();
    transport
        .publish(event("order.created", 2).with_priority(Priority::Critical))
        .await
        .unwrap();
    let mut conn = server.connection().await.unwrap();
    let _: String = raw(&mut conn, &["XADD", &stream, "*", "foo", "bar"]).await;

    let entries = next_n(&mut follower, 3).await;
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|e| e.stream == stream));
    // Stream order, whatever the priority.
    assert_eq!(entries[0].event.as_ref().map(number), Some(1));
    assert_eq!(entries[1].event.as_ref().map(number), Some(2));
    let foreign = &entries[2];
    assert!(foreign.event.is_none());
    assert!(
        foreign
            .decode_error
            .as_deref()
            .unwrap()
            .contains("no `event` field"),
        "{foreign:?}"
    );
    assert_eq!(foreign.fields, [("foo".to_owned(), "bar".to_owned())]);
    assert_eq!(follower.ack(&entries).await.unwrap(), 0, "nothing to ack");

    // No group anywhere, and the stream nobody wrote to does not exist.
    let info = transport.stream_info(&stream).await.unwrap();
    assert!(info.groups.is_empty());
    assert_kind(
        transport.stream_info(&other).await,
        ErrorKind::NotFound,
        "does not exist",
    );

    // From the beginning, inclusive and exclusive starts.
    let mut all = transport.follow(&[&stream], Some("-")).await.unwrap();
    let from_start = next_n(&mut all, 4).await;
    assert_eq!(from_start.len(), 4);
    let second = from_start[1].id.clone();
    let mut from = transport.follow(&[&stream], Some(&second)).await.unwrap();
    assert_eq!(next_n(&mut from, 3).await[0].id, second);
    let mut after = transport
        .follow(&[&stream], Some(&format!("({second}")))
        .await
        .unwrap();
    assert_eq!(next_n(&mut after, 1).await[0].id, from_start[2].id);

    assert_kind(
        transport.follow(&[] as &[&str], None).await,
        ErrorKind::InvalidInput,
        "at least one",
    );
    assert_kind(
        transport.follow(&["x y".to_owned()], None).await,
        ErrorKind::InvalidInput,
        "must not contain",
    );
    assert_kind(
        transport.follow(&[&stream], Some("soon")).await,
        ErrorKind::InvalidInput,
        "soon",
    );
    assert_kind(
        transport.follow(&[&stream, &stream], None).await,
        ErrorKind::InvalidInput,
        "more than once",
    );
    assert_kind(follower.next(0).await, ErrorKind::InvalidInput, "count");
}

#[tokio::test]
async fn following_in_a_group_creates_it_and_acknowledges() {
    let server = RedisServer::start().await.unwrap();
    let (transport, _) = setup(&server).await;
    let stream = transport.stream_key_for("audit").unwrap();
    transport.publish(event("audit", 0)).await.unwrap();

    let mut follower = transport
        .follow_group(&[&stream], "tail", "me")
        .await
        .unwrap();
    // A second follower of the same group finds it and shares its entries.
    let mut again = transport
        .follow_group(&[&stream], "tail", "other")
        .await
        .unwrap();
    let event = Event::new("audit", json!({ "n": 1 }), EventMetadata::default());
    transport.publish(event.clone()).await.unwrap();
    let entries = next_n(&mut follower, 1).await;
    assert_eq!(
        entries.len(),
        1,
        "only what came after the group was created"
    );
    assert_eq!(entries[0].event.as_ref(), Some(&event));
    assert!(
        again.next(10).await.unwrap().is_empty(),
        "delivered once per group"
    );

    let pending = || async { transport.stream_info(&stream).await.unwrap().groups[0].pending };
    assert_eq!(pending().await, 1);
    assert_eq!(follower.ack(&entries).await.unwrap(), 1);
    assert_eq!(pending().await, 0);

    let mut conn = server.connection().await.unwrap();
    let _: i64 = raw(&mut conn, &["XGROUP", "DESTROY", &stream, "tail"]).await;
    assert_kind(follower.next(1).await, ErrorKind::NotFound, "tail");
    assert_kind(
        transport.follow_group(&[&stream], "", "me").await,
        ErrorKind::InvalidInput,
        "group",
    );
}

#[tokio::test]
async fn redrive_by_type_pages_through_a_long_dead_letter_stream() {
    let server = RedisServer::start().await.unwrap();
    let (transport, _) = setup(&server).await;
    // 250 dead letters, every third of type a (the last one too): the scan reads three pages of
    // 100 and must neither skip nor repeat an entry at their edges.
    let mut expected = Vec::new();
    for n in 0..250 {
        let event_type = if n % 3 == 0 { "a" } else { "b" };
        if event_type == "a" {
            expected.push(n);
        }
        transport
            .publish_to_dlq(event(event_type, n), "failed")
            .await
            .unwrap();
    }

    let report = transport.redrive_type("a").await.unwrap();
    assert_eq!(report.redriven, expected.len(), "{report:?}");
    assert!(report.skipped.is_empty(), "{report:?}");
    let redriven: Vec<usize> = xrange(&server, &transport.stream_key_for("a").unwrap())
        .await
        .iter()
        .map(|(_, fields)| number(&serde_json::from_str::<Event>(&fields[0].1).unwrap()))
        .collect();
    assert_eq!(redriven, expected, "each once, in dead-letter order");
    let left = transport.dlq_entries(1000).await.unwrap();
    assert_eq!(left.len(), 250 - expected.len());
    assert!(left.iter().all(|e| e.original_type == "b"));
}

#[tokio::test]
async fn claim_follows_the_cursor_past_entries_not_idle_enough() {
    let server = RedisServer::start().await.unwrap();
    let (transport, _) = setup(&server).await;
    let stream = transport.stream_key_for("order.created").unwrap();
    let mut conn = server.connection().await.unwrap();
    let mut ids = Vec::new();
    for n in 0..30 {
        ids.push(transport.publish(event("order.created", n)).await.unwrap());
    }
    let _: () = raw(&mut conn, &["XGROUP", "CREATE", &stream, "billing", "0"]).await;
    let _: redis::Value = raw(
        &mut conn,
        &[
            "XREADGROUP",
            "GROUP",
            "billing",
            "c1",
            "STREAMS",
            &stream,
            ">",
        ],
    )
    .await;
    // The last five have been idle for an hour (`XCLAIM ... IDLE` sets it, no waiting), the
    // first 25 not at all. One XAUTOCLAIM looks at 10 × COUNT entries at most, so with COUNT 2
    // the first call finds nothing and returns a cursor that `claim` must follow.
    let mut xclaim = vec!["XCLAIM", &stream, "billing", "c1", "0"];
    xclaim.extend(ids[25..].iter().map(String::as_str));
    xclaim.extend(["IDLE", "3600000", "JUSTID"]);
    let _: redis::Value = raw(&mut conn, &xclaim).await;

    let half_hour = Duration::from_secs(1800);
    let claimed = transport
        .claim(&stream, "billing", "c2", half_hour, 2)
        .await
        .unwrap();
    assert_eq!(claimed, ids[25..27]);
    let claimed = transport
        .claim(&stream, "billing", "c2", half_hour, 100)
        .await
        .unwrap();
    assert_eq!(claimed, ids[27..], "the rest, and only those idle enough");

    // An idle time beyond what Redis accepts is capped, not an error.
    let none = transport
        .claim(&stream, "billing", "c2", Duration::MAX, 10)
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn followers_resume_after_the_server_restarts() {
    // With the append-only file, so the group outlives the restart.
    let server = RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .unwrap();
    let (transport, prefix) = setup(&server).await;
    let stream = transport.stream_key_for("audit").unwrap();
    transport.publish(event("audit", 0)).await.unwrap();
    let mut plain = transport.follow(&[&stream], None).await.unwrap();
    let mut group = transport
        .follow_group(&[&stream], "tail", "me")
        .await
        .unwrap();

    server.restart().await.unwrap();
    // Their connections died with the server. Each is a self-reconnecting connection of core's
    // (a `ConnectionManager` on a single server): the next call either reconnects at once and
    // reads nothing new, or says the connection died, retryably...
    for follower in [&mut plain, &mut group] {
        match follower.next(10).await {
            Ok(read) => assert!(read.is_empty(), "{read:?}"),
            Err(err) => assert!(err.is_retryable(), "{err}"),
        }
    }
    // ...and the calls after that go on where it stopped.
    let after = crate::support::transport(&server, &prefix, "g", fast()).await;
    after.publish(event("audit", 1)).await.unwrap();
    let read = next_n(&mut plain, 1).await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].event.as_ref().map(number), Some(1));
    let read = next_n(&mut group, 1).await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].event.as_ref().map(number), Some(1));
    assert_eq!(group.ack(&read).await.unwrap(), 1);
}
