//! The cluster layout (`events:{order.created}`, `events:{dlq}`) on one private server: streams
//! spread over slots, and the dead-letter protocol across slots (`XADD` to the dead-letter
//! stream, then `XACK`), whose repeats a redrive removes instead of republishing.

use std::collections::HashSet;

use redstream_core::keys::{companion, slot};
use redstream_core::{Event, HandlerResult, wire};
use redstream_testkit::RedisServer;
use redstream_transport::{KeyLayout, RedisTransport, StartFrom};

use crate::support::{event, fast, field, pending, transport, until, within, xrange};

async fn cluster_transport(server: &RedisServer, group: &str) -> RedisTransport {
    transport(
        server,
        "events",
        group,
        fast()
            .with_key_layout(KeyLayout::Cluster)
            .with_max_deliveries(1)
            .with_dead_letter_on_first_failure(true)
            .with_start_from(StartFrom::Beginning),
    )
    .await
}

#[tokio::test]
async fn ten_types_spread_over_slots_and_the_dlq_record_shares_its_slot() {
    let server = RedisServer::start().await.unwrap();
    let transport = cluster_transport(&server, "g").await;
    let names = transport.names();
    assert_eq!(names.stream("order.created"), "events:{order.created}");
    assert_eq!(names.dlq(), "events:{dlq}");
    let types = [
        "order.created",
        "order.updated",
        "order.cancelled",
        "payment.failed",
        "payment.captured",
        "user.signed_up",
        "page.viewed",
        "cart.updated",
        "invoice.sent",
        "refund.issued",
    ];
    let slots: HashSet<_> = types
        .iter()
        .map(|t| slot(names.stream(t).as_bytes()))
        .collect();
    assert!(slots.len() >= 8, "{} distinct slots", slots.len());
    let record = companion(&names.dlq(), "redriven");
    assert_eq!(slot(record.as_bytes()), slot(names.dlq().as_bytes()));
    transport.publish(event("order.created", 1)).await.unwrap();
    assert_eq!(
        transport.list_streams().await.unwrap(),
        ["events:{order.created}"]
    );
}

/// A failed event moves to `events:{dlq}` and is acknowledged, in two steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_cross_slots_in_two_steps() {
    let server = RedisServer::start().await.unwrap();
    let transport = cluster_transport(&server, "billing").await;
    let handle = transport
        .subscribe(vec!["payment.failed".to_owned()], |_: Event| async {
            HandlerResult::Err("gateway down".into())
        })
        .await
        .unwrap();
    transport.publish(event("payment.failed", 1)).await.unwrap();
    let stream = "events:{payment.failed}";
    until("the dead letter and its acknowledgement", || async {
        xrange(&server, "events:{dlq}").await.len() == 1
            && pending(&server, stream, "billing").await == 0
    })
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
    let dead = transport.dlq_entries(10).await.unwrap();
    assert_eq!(dead[0].stream, stream);
    assert_eq!(dead[0].error, "gateway down");
    let report = transport.redrive_all().await.unwrap();
    assert_eq!((report.redriven, report.repeats), (1, 0));
    assert_eq!(xrange(&server, stream).await.len(), 2);
}

/// A consumer dies between the `XADD` of a dead letter and the `XACK`: the entry is still
/// pending, another consumer claims it and dead-letters it again. The redrive republishes it
/// once and removes the repeat, also one that arrives after the redrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_dead_letter_is_republished_once() {
    let server = RedisServer::start().await.unwrap();
    let transport = cluster_transport(&server, "billing").await;
    let stream = transport.names().stream("payment.failed");
    let original = event("payment.failed", 7);
    let entry_id = transport.publish(original.clone()).await.unwrap();
    let envelope = wire::encode(&original, &Default::default()).unwrap();
    let mut conn = server.connection().await.unwrap();
    // The consumer that died: it read the entry, wrote its dead letter, and never acknowledged.
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("billing")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("billing")
        .arg("dead-consumer")
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let dead_letter = |error: &str| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg("events:{dlq}")
            .arg("*")
            .arg("event")
            .arg(&envelope)
            .arg("error")
            .arg(error)
            .arg("original_type")
            .arg("payment.failed")
            .arg("stream")
            .arg(&stream)
            .arg("entry_id")
            .arg(&entry_id)
            .arg("group")
            .arg("billing");
        cmd
    };
    let _: String = dead_letter("first try")
        .query_async(&mut conn)
        .await
        .unwrap();

    // A live consumer claims the abandoned entry (delivered once already, max_deliveries 1)
    // and dead-letters it again.
    let handle = transport
        .subscribe(vec!["payment.failed".to_owned()], |_: Event| async {
            HandlerResult::Ok(())
        })
        .await
        .unwrap();
    until("the repeat dead letter", || async {
        xrange(&server, "events:{dlq}").await.len() == 2
            && pending(&server, &stream, "billing").await == 0
    })
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
    let dead = transport.dlq_entries(10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert!(
        dead.iter()
            .all(|d| d.stream == stream && d.entry_id == entry_id)
    );

    let report = transport.redrive_all().await.unwrap();
    assert_eq!((report.redriven, report.repeats), (1, 1), "{report:?}");
    assert!(report.skipped.is_empty());
    let entries = xrange(&server, &stream).await;
    assert_eq!(entries.len(), 2, "the original and one republished copy");
    assert_eq!(field(&entries[1].1, "event"), envelope);
    assert!(xrange(&server, "events:{dlq}").await.is_empty());

    // A repeat that comes after the redrive is recognised too.
    let _: String = dead_letter("late repeat")
        .query_async(&mut conn)
        .await
        .unwrap();
    let report = transport.redrive_all().await.unwrap();
    assert_eq!((report.redriven, report.repeats), (0, 1), "{report:?}");
    assert_eq!(xrange(&server, &stream).await.len(), 2);
    assert!(xrange(&server, "events:{dlq}").await.is_empty());
}
