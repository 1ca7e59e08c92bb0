//! Key naming against a real server: the slots Redis Cluster computes and `SCAN`.

use std::collections::HashSet;

use redstream_core::keys::{self, KeyLayout, StreamNames};
use redstream_testkit::RedisServer;

/// `CLUSTER KEYSLOT` of a node started with `cluster-enabled yes` (it answers without slots
/// assigned) is the oracle for the slot rule.
#[tokio::test]
async fn cluster_layout_spreads_streams_and_keeps_companions_in_their_slot() {
    let server = RedisServer::builder()
        .config("cluster-enabled", "yes")
        .start()
        .await
        .unwrap();
    let mut conn = server
        .client()
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let names = StreamNames::new("events", KeyLayout::Cluster);
    let types = [
        "order.created",
        "order.paid",
        "order.shipped",
        "order.cancelled",
        "user.created",
        "user.deleted",
        "payment.failed",
        "invoice.sent",
        "cart.abandoned",
        "review.posted",
    ];
    let mut slots = HashSet::new();
    for event_type in types {
        let stream = names.stream(event_type);
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&stream)
            .query_async(&mut conn)
            .await
            .unwrap();
        slots.insert(slot);
        let companion = keys::companion(&stream, "redstream-sink:s1");
        let companion_slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&companion)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(slot, companion_slot, "{stream} / {companion}");
        assert!(keys::same_slot(&stream, &companion));
    }
    assert!(
        slots.len() >= 8,
        "ten streams in {} slots: {slots:?}",
        slots.len()
    );

    // The same rule for untagged names (seed 003's stream) and for the plain layout.
    for stream in ["orders.events", "events:order.created", "a{b"] {
        let companion = keys::companion(stream, "p");
        let [a, b]: [u16; 2] = [
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(stream)
                .query_async(&mut conn)
                .await
                .unwrap(),
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&companion)
                .query_async(&mut conn)
                .await
                .unwrap(),
        ];
        assert_eq!(a, b, "{stream} / {companion}");
    }
}

#[tokio::test]
async fn scan_finds_keys_of_a_prefix_and_type_literally() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = server
        .client()
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let names = StreamNames::new("ev*", KeyLayout::Plain);
    for key in ["ev*:a", "ev*:b", "evX:c"] {
        let _: String = redis::cmd("XADD")
            .arg(key)
            .arg("*")
            .arg("f")
            .arg("v")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("ev*:string")
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let streams = keys::scan(&mut conn, &names.scan_pattern(), Some("stream"), "test")
        .await
        .unwrap();
    assert_eq!(streams, ["ev*:a", "ev*:b"]);
    let all = keys::scan(&mut conn, &names.scan_pattern(), None, "test")
        .await
        .unwrap();
    assert_eq!(all, ["ev*:a", "ev*:b", "ev*:string"]);
}
