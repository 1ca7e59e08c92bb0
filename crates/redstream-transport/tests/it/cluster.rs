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
    // The entry was acknowledged, so no repeat can come: the redrive recorded nothing.
    assert_eq!(exists(&server, RECORD).await, 0);
}

/// The redrive record of the cluster layout.
const RECORD: &str = "events:{dlq}:redriven";

async fn exists(server: &RedisServer, key: &str) -> i64 {
    let mut conn = server.connection().await.unwrap();
    redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

async fn record_fields(server: &RedisServer) -> Vec<String> {
    let mut conn = server.connection().await.unwrap();
    redis::cmd("HKEYS")
        .arg(RECORD)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// A consumer that died between the `XADD` of a dead letter and the `XACK`: `stream`'s first
/// entry is pending in `billing` (read by `dead-consumer`) and has a dead letter written by hand
/// with `error`. Returns the entry id, its envelope and the command that writes such a dead
/// letter.
async fn died_after_the_xadd(
    server: &RedisServer,
    transport: &RedisTransport,
) -> (String, String, impl Fn(&str) -> redis::Cmd) {
    let stream = transport.names().stream("payment.failed");
    let original = event("payment.failed", 7);
    let entry_id = transport.publish(original.clone()).await.unwrap();
    let envelope = wire::encode(&original, &Default::default()).unwrap();
    let mut conn = server.connection().await.unwrap();
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
    let dlq = transport.names().dlq();
    let (id, body) = (entry_id.clone(), envelope.clone());
    let dead_letter = move |error: &str| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&dlq)
            .arg("*")
            .arg("event")
            .arg(&body)
            .arg("error")
            .arg(error)
            .arg("original_type")
            .arg("payment.failed")
            .arg("stream")
            .arg(&stream)
            .arg("entry_id")
            .arg(&id)
            .arg("group")
            .arg("billing");
        cmd
    };
    let _: String = dead_letter("first try")
        .query_async(&mut conn)
        .await
        .unwrap();
    (entry_id, envelope, dead_letter)
}

/// A consumer dies between the `XADD` of a dead letter and the `XACK`: the entry is still
/// pending, another consumer claims it and dead-letters it again. The redrive republishes it
/// once and removes the repeat; the entry is acknowledged by then, so nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_dead_letter_is_republished_once() {
    let server = RedisServer::start().await.unwrap();
    let transport = cluster_transport(&server, "billing").await;
    let stream = transport.names().stream("payment.failed");
    let (entry_id, envelope, _) = died_after_the_xadd(&server, &transport).await;

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
    assert_eq!(exists(&server, RECORD).await, 0);
}

/// The redrive comes before the repeat: the entry is still pending when its first dead letter
/// is redriven, so the record keeps it; the repeat that comes later is removed, not
/// republished, and its record field with it (the record key is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_after_the_redrive_is_removed_and_so_is_its_record() {
    let server = RedisServer::start().await.unwrap();
    let transport = cluster_transport(&server, "billing").await;
    let stream = transport.names().stream("payment.failed");
    let (entry_id, envelope, _) = died_after_the_xadd(&server, &transport).await;

    let report = transport.redrive_all().await.unwrap();
    assert_eq!((report.redriven, report.repeats), (1, 0), "{report:?}");
    assert_eq!(
        record_fields(&server).await,
        [format!("{entry_id} {stream}")]
    );
    assert_eq!(xrange(&server, &stream).await.len(), 2);

    // A live consumer claims the abandoned entry and dead-letters it again (and handles the
    // republished copy).
    let handle = transport
        .subscribe(vec!["payment.failed".to_owned()], |_: Event| async {
            HandlerResult::Ok(())
        })
        .await
        .unwrap();
    until(
        "the repeat dead letter, and every entry acknowledged",
        || async {
            xrange(&server, "events:{dlq}").await.len() == 1
                && pending(&server, &stream, "billing").await == 0
        },
    )
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();

    let report = transport.redrive_all().await.unwrap();
    assert_eq!((report.redriven, report.repeats), (0, 1), "{report:?}");
    let entries = xrange(&server, &stream).await;
    assert_eq!(entries.len(), 2, "the original and one republished copy");
    assert_eq!(field(&entries[1].1, "event"), envelope);
    assert!(xrange(&server, "events:{dlq}").await.is_empty());
    assert_eq!(exists(&server, RECORD).await, 0);
}

/// The plain layout moves an entry in one transaction, and its redrive records nothing, even
/// for a dead letter whose entry is still pending.
#[tokio::test]
async fn the_plain_layout_records_nothing() {
    let server = RedisServer::start().await.unwrap();
    let transport = transport(
        &server,
        "events",
        "billing",
        fast().with_start_from(StartFrom::Beginning),
    )
    .await;
    let stream = transport.names().stream("payment.failed");
    let _ = died_after_the_xadd(&server, &transport).await;
    assert_eq!(pending(&server, &stream, "billing").await, 1);
    let report = transport.redrive_all().await.unwrap();
    assert_eq!((report.redriven, report.repeats), (1, 0), "{report:?}");
    let mut conn = server.connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*redriven*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

/// A redrive whose record needs a command the user may not run (`HSET` to record, `XPENDING` to
/// decide whether to) is refused before anything changes: republishing first and failing on
/// the record would leave a later repeat of the entry free to be republished again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_that_could_not_keep_its_record_changes_nothing() {
    for denied in ["hset", "xpending"] {
        let user = format!("no-{denied}");
        let rule = format!("-{denied}");
        let server = RedisServer::builder()
            .acl_user_rules(&user, "pw-record", &["~*", "&*", "+@all", &rule])
            .start()
            .await
            .unwrap();
        let admin = cluster_transport(&server, "billing").await;
        let stream = admin.names().stream("payment.failed");
        let _ = died_after_the_xadd(&server, &admin).await;

        let config = redstream_transport::RedisConfig::default()
            .with_url(server.url_with_user(&user, "pw-record"))
            .with_stream_prefix("events");
        let limited =
            RedisTransport::with_options(config, fast().with_key_layout(KeyLayout::Cluster))
                .await
                .unwrap();
        let err = limited.redrive_all().await.unwrap_err();
        assert_eq!(
            err.kind(),
            redstream_core::ErrorKind::PermissionDenied,
            "{denied}: {err}"
        );
        assert!(
            err.to_string().contains(&denied.to_uppercase()),
            "{denied}: names the command: {err}"
        );
        assert_eq!(xrange(&server, "events:{dlq}").await.len(), 1, "{denied}");
        assert_eq!(xrange(&server, &stream).await.len(), 1, "{denied}");
        assert_eq!(exists(&server, RECORD).await, 0, "{denied}");
    }
}
