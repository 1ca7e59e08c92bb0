//! The ACL each role of the transport needs, as `docs/security.md` lists it: a user with
//! exactly that list does the role's work, and one with a command taken away gets a clear error.

use redstream_core::{ErrorKind, Event, HandlerResult};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport};
use tokio::sync::mpsc;

use crate::support::{capture_logs, event, fast, number, recv, unique, until, xrange};

/// The publisher's commands (`publish`, `publish_to`, `publish_fields`, `publish_batch`).
const PUBLISHER: &str = "+ping +xadd +evalsha +script|load +type";
/// A consumer's commands (`subscribe`, the subscription builder, claiming, dead letters).
/// `PING`: core's `connection::connect` checks each new connection with it.
const CONSUMER: &str = "+ping +xreadgroup +xack +xgroup|create +xautoclaim +xclaim +xpending +xadd +evalsha +script|load +type";

fn rules(commands: &str, prefix: &str) -> Vec<String> {
    let mut rules = vec![format!("~{prefix}:*"), "-@all".to_owned()];
    rules.extend(commands.split_whitespace().map(str::to_owned));
    rules
}

async fn server_with(users: &[(&str, Vec<String>)]) -> RedisServer {
    let mut builder = RedisServer::builder();
    for (name, rules) in users {
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        builder = builder.acl_user_rules(*name, "pw-least", &rules);
    }
    builder.start().await.unwrap()
}

async fn open(server: &RedisServer, user: &str, prefix: &str) -> RedisTransport {
    RedisTransport::with_options(
        RedisConfig::default()
            .with_url(server.url_with_user(user, "pw-least"))
            .with_stream_prefix(prefix)
            .with_consumer_group("workers"),
        fast().with_max_deliveries(2),
    )
    .await
    .unwrap()
}

/// `docs/security.md` lists exactly these commands.
#[test]
fn the_docs_list_these_commands() {
    let docs = include_str!("../../../../docs/security.md");
    for (role, commands) in [("publisher", PUBLISHER), ("consumer", CONSUMER)] {
        let marker = format!("<!-- acl:{role} -->`{commands}`");
        assert!(
            docs.contains(&marker),
            "docs/security.md should list {marker}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_works_with_exactly_its_documented_acl() {
    let prefix = unique("acl");
    let server = server_with(&[
        ("publisher", rules(PUBLISHER, &prefix)),
        ("consumer", rules(CONSUMER, &prefix)),
    ])
    .await;
    let publisher = open(&server, "publisher", &prefix).await;
    publisher.publish(event("job", 1)).await.unwrap();
    publisher
        .publish_batch(vec![event("job", 2), event("job", 3)])
        .await
        .unwrap();

    let consumer = open(&server, "consumer", &prefix).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = consumer
        .subscription()
        .types(["job"])
        .start_from(redstream_transport::StartFrom::Beginning)
        .handle(move |event: Event| {
            let n = number(&event);
            let _ = tx.send(n);
            async move {
                if n == 3 {
                    HandlerResult::Err("boom".into())
                } else {
                    HandlerResult::Ok(())
                }
            }
        })
        .await
        .unwrap();
    for _ in 0..4 {
        recv(&mut rx, "deliveries, and the failing one's retry").await;
    }
    let dlq = consumer.names().dlq();
    until("the dead letter", || async {
        xrange(&server, &dlq).await.len() == 1
    })
    .await;
    consumer.unsubscribe(&handle).await.unwrap();
}

#[tokio::test]
async fn a_publisher_without_a_command_gets_a_clear_error() {
    let prefix = unique("acl-minus");
    let server =
        server_with(&[("publisher", rules(&PUBLISHER.replace("+type", ""), &prefix))]).await;
    let publisher = open(&server, "publisher", &prefix).await;
    publisher.publish(event("job", 1)).await.unwrap();
    let err = publisher
        .publish_batch(vec![event("job", 2)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().to_lowercase().contains("type"), "{err}");
    assert_eq!(xrange(&server, &format!("{prefix}:job")).await.len(), 1);
}

#[tokio::test]
async fn a_consumer_without_a_command_gets_a_clear_error() {
    let prefix = unique("acl-consumer-minus");
    let server = server_with(&[(
        "consumer",
        rules(&CONSUMER.replace("+xgroup|create", ""), &prefix),
    )])
    .await;
    let consumer = open(&server, "consumer", &prefix).await;
    let err = consumer
        .subscribe(vec!["job".to_owned()], |_: Event| async {
            HandlerResult::Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().to_lowercase().contains("xgroup"), "{err}");
}

/// A user limited to the prefix's keys: a name outside them is not taken as a stream (its
/// `TYPE` is refused), and resolves as an event type.
#[tokio::test]
async fn names_the_user_may_not_read_resolve_as_event_types() {
    let prefix = unique("acl-names");
    let server = server_with(&[(
        "reader",
        rules("+type +xinfo|stream +xrange +ping", &prefix),
    )])
    .await;
    let mut conn = server.connection().await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg("events.raw")
        .arg("*")
        .arg("f")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    let reader = open(&server, "reader", &prefix).await;
    assert_eq!(
        reader.resolve_stream("events.raw").await.unwrap(),
        format!("{prefix}:events.raw")
    );
}

/// A consumer that may claim (`XAUTOCLAIM`) but not deliver what it claimed (`XCLAIM` taken
/// away): a claim's first step takes the idle entry without counting a delivery, its second
/// step is refused at every pass, and the entry's delivery count stays what it was. (A claim
/// that took the fields in one step counted a delivery at every pass, each one closer to the
/// dead-letter stream without a handler having seen the entry.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_delivery_of_claimed_entries_counts_no_delivery() {
    let prefix = unique("acl-claim");
    let without_xclaim = CONSUMER.replace(" +xclaim", "");
    let server = server_with(&[("claimer", rules(&without_xclaim, &prefix))]).await;
    capture_logs();
    let consumer = open(&server, "claimer", &prefix).await;
    let stream = consumer.names().stream("job");
    let mut admin = server.connection().await.unwrap();
    let id: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("n")
        .arg(1)
        .query_async(&mut admin)
        .await
        .unwrap();
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("workers")
        .arg("0")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("gone")
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut admin)
        .await
        .unwrap();
    let pending = |admin: redis::aio::MultiplexedConnection| {
        let stream = stream.clone();
        async move {
            let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(&stream)
                .arg("workers")
                .arg("-")
                .arg("+")
                .arg(10)
                .query_async(&mut admin.clone())
                .await
                .unwrap();
            rows
        }
    };
    until("the entry idle for claim_idle_time", || {
        let pending = pending(admin.clone());
        async move { pending.await.iter().all(|row| row.2 >= 300) }
    })
    .await;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = consumer
        .subscription()
        .types(["job"])
        .handle(move |event: Event| {
            let _ = tx.send(number(&event));
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    let refusals = || {
        redstream_testkit::logged("claiming failed")
            .into_iter()
            .filter(|line| line.contains(&stream) && line.contains("'xclaim'"))
            .count()
    };
    until("three claim passes refused", || async { refusals() >= 3 }).await;
    let rows = pending(admin.clone()).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (pending_id, owner, _, deliveries) = &rows[0];
    assert_eq!(pending_id, &id);
    assert_ne!(owner, "gone", "the first step took the entry");
    assert_eq!(*deliveries, 1, "no delivery counted by the refused passes");
    assert!(rx.try_recv().is_err(), "the entry was never handled");
    consumer.unsubscribe(&handle).await.unwrap();
}
