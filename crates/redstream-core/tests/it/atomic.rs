//! `Atomic` against a real server: every command runs, or none does, whatever refuses it.

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redstream_core::atomic::{Atomic, KeyType};
use redstream_testkit::RedisServer;

fn xadd(stream: &str, value: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*").arg("v").arg(value);
    cmd
}

/// Two `XADD`s and a `SET`: the first stream is `a`, the second `key`'s stream, then `c`.
fn transaction(second: &str) -> Atomic {
    let mut tx = Atomic::new();
    tx.push(&xadd("a", "1"), KeyType::Stream)
        .push(&xadd(second, "2"), KeyType::Stream)
        .push(redis::cmd("SET").arg("c").arg("3"), KeyType::String);
    tx
}

async fn nothing_written(conn: &mut MultiplexedConnection) {
    let exists: i64 = conn.exists(&["a", "c"]).await.unwrap();
    assert_eq!(exists, 0, "a refused transaction wrote nothing");
}

#[tokio::test]
async fn runs_every_command_and_returns_their_replies() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = server.connection().await.unwrap();
    let tx = transaction("b");
    assert_eq!(tx.len(), 3);
    let (first, second, set): (String, String, String) =
        tx.invocation().invoke_async(&mut conn).await.unwrap();
    assert_eq!(set, "OK");
    for (stream, id) in [("a", first), ("b", second)] {
        let ids: redis::streams::StreamRangeReply = conn.xrange_all(stream).await.unwrap();
        assert_eq!(ids.ids.len(), 1);
        assert_eq!(ids.ids[0].id, id);
    }
    assert!(format!("{tx:?}").contains("commands: 3"));
}

/// `MULTI`/`EXEC` would run the `XADD` to `a` and the `SET` around a `WRONGTYPE`.
#[tokio::test]
async fn a_key_of_the_wrong_type_refuses_the_whole_transaction() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = server.connection().await.unwrap();
    let () = conn.set("b", "a string").await.unwrap();
    let err = transaction("b")
        .invocation()
        .invoke_async::<redis::Value>(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("WRONGTYPE"), "{err}");
    assert!(
        err.to_string().contains("nothing of the transaction"),
        "{err}"
    );
    nothing_written(&mut conn).await;
}

/// A user whose keys exclude one of the commands' keys: refused before any write.
#[tokio::test]
async fn a_key_the_user_may_not_write_refuses_the_whole_transaction() {
    let server = RedisServer::builder()
        .acl_user_rules("limited", "pw-1", &["~a", "~c", "+@all"])
        .start()
        .await
        .unwrap();
    let client = redis::Client::open(server.url_with_user("limited", "pw-1")).unwrap();
    let mut limited = client.get_multiplexed_async_connection().await.unwrap();
    let err = transaction("b")
        .invocation()
        .invoke_async::<redis::Value>(&mut limited)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");
    nothing_written(&mut server.connection().await.unwrap()).await;
}

/// A user that may write but not run scripts: one error, no command runs on its own (the
/// case where a pipelined `MULTI` is refused and the commands behind it run one by one).
#[tokio::test]
async fn a_user_without_scripts_gets_an_error_and_nothing_runs() {
    let server = RedisServer::builder()
        .acl_user_rules("writer", "pw-2", &["~*", "+@all", "-@scripting"])
        .start()
        .await
        .unwrap();
    let client = redis::Client::open(server.url_with_user("writer", "pw-2")).unwrap();
    let mut writer = client.get_multiplexed_async_connection().await.unwrap();
    let err = transaction("b")
        .invocation()
        .invoke_async::<redis::Value>(&mut writer)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");
    nothing_written(&mut server.connection().await.unwrap()).await;
    // The connection is still usable.
    let pong: String = redis::cmd("PING").query_async(&mut writer).await.unwrap();
    assert_eq!(pong, "PONG");
}

/// Over `maxmemory` the server refuses the script as a whole (`#!lua` without `allow-oom`).
#[tokio::test]
async fn out_of_memory_refuses_the_whole_transaction() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = server.connection().await.unwrap();
    server.config_set("maxmemory", "1").await.unwrap();
    let err = transaction("b")
        .invocation()
        .invoke_async::<redis::Value>(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("OOM"), "{err}");
    server.config_set("maxmemory", "0").await.unwrap();
    nothing_written(&mut conn).await;
}
