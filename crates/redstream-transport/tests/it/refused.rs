//! Writes the server refuses lose nothing and write nothing in part: a dead-letter move whose
//! `XADD` is refused leaves the entry pending (in both layouts), and a `publish_batch` that one
//! stream refuses writes none of the batch. (`MULTI`/`EXEC` would run the `XACK` after a
//! `WRONGTYPE` `XADD`, losing the entry, and the other `XADD`s of a batch.)

use redis::AsyncCommands;
use redstream_core::{ErrorKind, Event, HandlerResult};
use redstream_testkit::RedisServer;
use redstream_transport::{KeyLayout, RedisConfig, RedisTransport};
use tokio::sync::mpsc;

use crate::support::{event, fast, pending, recv, transport, unique, until, xrange};

/// The dead-letter key holds a string: each move fails, the entry stays pending and is
/// delivered again; once the key is gone the next move succeeds, and the entry is acknowledged.
async fn a_refused_move_keeps_the_entry_pending(layout: KeyLayout) {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("refused-move");
    let transport = transport(
        &server,
        &prefix,
        "workers",
        fast()
            .with_key_layout(layout)
            .with_dead_letter_on_first_failure(true),
    )
    .await;
    let names = transport.names().clone();
    let dlq = names.dlq();
    let stream = names.stream("risky.operation");
    let mut conn = server.connection().await.unwrap();
    let () = conn.set(&dlq, "not a stream").await.unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = transport
        .subscribe(vec!["risky.operation".to_string()], move |_: Event| {
            let _ = tx.send(());
            async { HandlerResult::Err("boom".into()) }
        })
        .await
        .unwrap();
    transport
        .publish(event("risky.operation", 1))
        .await
        .unwrap();
    recv(&mut rx, "the first delivery").await;
    // A second delivery means the move failed and the entry stayed pending to be claimed.
    recv(&mut rx, "a delivery after the refused move").await;
    assert_eq!(pending(&server, &stream, "workers").await, 1, "{layout:?}");
    let kept: String = conn.get(&dlq).await.unwrap();
    assert_eq!(
        kept, "not a stream",
        "{layout:?}: the blocking key is untouched"
    );

    let () = conn.del(&dlq).await.unwrap();
    until("the dead letter once the key is free", || async {
        xrange(&server, &dlq).await.len() == 1 && pending(&server, &stream, "workers").await == 0
    })
    .await;
    transport.unsubscribe(&handle).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_layout_a_refused_move_keeps_the_entry_pending() {
    a_refused_move_keeps_the_entry_pending(KeyLayout::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_layout_a_refused_move_keeps_the_entry_pending() {
    a_refused_move_keeps_the_entry_pending(KeyLayout::Cluster).await;
}

/// A consumer whose ACL user may use its stream but not the dead-letter stream: the move is
/// refused (`NOPERM`) before anything runs, and the entry stays pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_the_user_may_not_make_keeps_the_entry_pending() {
    let prefix = unique("noperm-move");
    let server = RedisServer::builder()
        .acl_user("worker", "w0rker-pw", &format!("{prefix}:risky*"))
        .start()
        .await
        .unwrap();
    let limited = RedisTransport::with_options(
        RedisConfig::default()
            .with_url(server.url_with_user("worker", "w0rker-pw"))
            .with_stream_prefix(&prefix)
            .with_consumer_group("workers"),
        fast().with_dead_letter_on_first_failure(true),
    )
    .await
    .unwrap();
    let stream = limited.names().stream("risky.operation");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = limited
        .subscribe(vec!["risky.operation".to_string()], move |_: Event| {
            let _ = tx.send(());
            async { HandlerResult::Err("boom".into()) }
        })
        .await
        .unwrap();
    limited.publish(event("risky.operation", 1)).await.unwrap();
    recv(&mut rx, "the first delivery").await;
    recv(&mut rx, "a delivery after the refused move").await;
    limited.unsubscribe(&handle).await.unwrap();
    assert_eq!(pending(&server, &stream, "workers").await, 1);
    assert!(xrange(&server, &limited.names().dlq()).await.is_empty());
}

/// One stream of a batch holds a string: the batch is refused as a whole.
#[tokio::test]
async fn a_batch_one_stream_refuses_writes_nothing() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("refused-batch");
    let transport = transport(&server, &prefix, "g", fast()).await;
    let names = transport.names().clone();
    let mut conn = server.connection().await.unwrap();
    let () = conn.set(names.stream("b"), "not a stream").await.unwrap();
    let err = transport
        .publish_batch(vec![event("a", 1), event("b", 2), event("c", 3)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongType, "{err}");
    for t in ["a", "c"] {
        assert!(xrange(&server, &names.stream(t)).await.is_empty(), "{t}");
    }
}

/// A user that may `XADD` but not run scripts (the user whose refused `MULTI` let the `XADD`s
/// run on their own): an error, nothing written, and the transport goes on working.
#[tokio::test]
async fn a_batch_without_script_permission_writes_nothing() {
    let prefix = unique("noscript-batch");
    let server = RedisServer::builder()
        .acl_user_rules("writer", "wr1ter-pw", &["~*", "&*", "+@all", "-@scripting"])
        .start()
        .await
        .unwrap();
    let limited = RedisTransport::with_options(
        RedisConfig::default()
            .with_url(server.url_with_user("writer", "wr1ter-pw"))
            .with_stream_prefix(&prefix),
        fast(),
    )
    .await
    .unwrap();
    let err = limited
        .publish_batch(vec![event("a", 1), event("b", 2)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(!err.to_string().contains("wr1ter-pw"), "{err}");
    for t in ["a", "b"] {
        assert!(xrange(&server, &limited.names().stream(t)).await.is_empty());
    }
    limited.publish(event("a", 3)).await.unwrap();
    assert_eq!(xrange(&server, &limited.names().stream("a")).await.len(), 1);
}

/// A stream whose ids are used up (a hand-written entry at the top id) refuses the `XADD`s the
/// checks cannot foresee: the batch's entries written before the refused one are deleted again,
/// a stream the batch created is gone, and the error says where it failed.
#[tokio::test]
async fn a_batch_refused_part_way_by_a_stream_out_of_ids_keeps_nothing() {
    const TOP: &str = "18446744073709551615";
    let prefix = unique("out-of-ids");
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, &prefix, "g", fast()).await;
    let names = transport.names();
    let (fresh, full, nearly) = (names.stream("a"), names.stream("b"), names.stream("c"));
    let mut conn = server.connection().await.unwrap();
    let _: String = conn
        .xadd(&full, format!("{TOP}-{TOP}"), &[("f", "v")])
        .await
        .unwrap();
    // One id left: the first XADD of a batch takes it, the second has none.
    let _: String = conn
        .xadd(
            &nearly,
            format!("{TOP}-18446744073709551614"),
            &[("f", "v")],
        )
        .await
        .unwrap();
    transport.publish(event("b", 0)).await.unwrap_err();

    let err = transport
        .publish_batch(vec![event("a", 1), event("a", 2), event("b", 3)])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!("XADD to {full}")),
        "{err}"
    );
    assert!(
        err.to_string().contains("nothing of the batch was kept"),
        "{err}"
    );
    let exists: bool = conn.exists(&fresh).await.unwrap();
    assert!(!exists, "the stream the batch created is gone");
    assert_eq!(xrange(&server, &full).await.len(), 1);

    let err = transport
        .publish_batch(vec![event("c", 4), event("c", 5)])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!("XADD to {nearly}")),
        "{err}"
    );
    let entries = xrange(&server, &nearly).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].0, format!("{TOP}-18446744073709551614"));
    // The transport goes on working.
    transport.publish(event("a", 6)).await.unwrap();
    assert_eq!(xrange(&server, &fresh).await.len(), 1);
}

/// The reproduction 2: a user allowed `XADD` but neither `MULTI` nor scripts
/// (`-@all +xadd +exec +ping`), and one with no write permission at all: typed
/// `PermissionDenied` errors naming the command, the stream unchanged, no panic.
#[tokio::test]
async fn users_without_the_commands_get_permission_denied_and_nothing_is_written() {
    let prefix = unique("acl-repro");
    let server = RedisServer::builder()
        .acl_user_rules(
            "xaddonly",
            "x-pw",
            &["~*", "-@all", "+xadd", "+exec", "+ping"],
        )
        .acl_user_rules("reader", "r-pw", &["~*", "-@all", "+@read", "+ping"])
        .start()
        .await
        .unwrap();
    let open = |user: &str, pw: &str| {
        RedisTransport::with_options(
            RedisConfig::default()
                .with_url(server.url_with_user(user, pw))
                .with_stream_prefix(&prefix),
            fast(),
        )
    };
    let stream = format!("{prefix}:a");
    let xaddonly = open("xaddonly", "x-pw").await.unwrap();
    let err = xaddonly
        .publish_batch(vec![event("a", 1), event("a", 2)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().to_lowercase().contains("evalsha"), "{err}");
    assert!(xrange(&server, &stream).await.is_empty());
    // A single publish needs only XADD.
    xaddonly.publish(event("a", 3)).await.unwrap();
    assert_eq!(xrange(&server, &stream).await.len(), 1);

    let reader = open("reader", "r-pw").await.unwrap();
    for result in [
        reader.publish(event("a", 4)).await.map(|_| ()),
        reader.publish_batch(vec![event("a", 5)]).await.map(|_| ()),
        reader
            .publish_to_dlq(event("a", 6), "by hand")
            .await
            .map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    }
    assert_eq!(
        xrange(&server, &stream).await.len(),
        1,
        "nothing more written"
    );
}
