//! Passwords and ACL users.

use redis::AsyncCommands as _;
use redis::ErrorKind;
use redstream_testkit::RedisServer;

use crate::set_get;

#[tokio::test]
async fn password_is_required_and_accepted() {
    let server = RedisServer::builder()
        .password("s3cret p@ss")
        .start()
        .await
        .unwrap();
    assert_eq!(server.password(), Some("s3cret p@ss"));
    assert!(server.url().contains('@'));
    assert!(!server.url_without_auth().contains('@'));

    // Without a password: connecting works, commands are refused.
    let mut anonymous = redis::Client::open(server.url_without_auth())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let err = redis::cmd("GET")
        .arg("k")
        .query_async::<Option<String>>(&mut anonymous)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOAUTH"), "{err}");

    // With the password (percent-encoded in the URL).
    let mut con = server.connection().await.unwrap();
    assert_eq!(set_get(&mut con, "k", "v").await.unwrap(), "v");
}

#[tokio::test]
async fn wrong_password_is_rejected() {
    let server = RedisServer::builder()
        .password("right")
        .start()
        .await
        .unwrap();
    let url = format!("redis://:wrong@127.0.0.1:{}", server.port());
    let err = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_err();
    // redis-rs reports a refused login as AuthenticationFailed and drops the server's code ...
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");

    // ... so check the server's own answer with an explicit AUTH.
    let mut anonymous = redis::Client::open(server.url_without_auth())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let err = redis::cmd("AUTH")
        .arg("wrong")
        .exec_async(&mut anonymous)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("WRONGPASS"), "{err}");
}

#[tokio::test]
async fn acl_user_is_limited_to_its_key_pattern() {
    let server = RedisServer::builder()
        .acl_user("alice", "alice-pw", "app:*")
        .start()
        .await
        .unwrap();
    let mut alice = redis::Client::open(server.url_with_user("alice", "alice-pw"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert_eq!(set_get(&mut alice, "app:1", "ok").await.unwrap(), "ok");

    let err = alice.set::<_, _, ()>("other:1", "no").await.unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");

    // The default user is untouched: still open, and sees alice's key.
    let mut admin = server.connection().await.unwrap();
    let value: Option<String> = admin.get("app:1").await.unwrap();
    assert_eq!(value.as_deref(), Some("ok"));
}

#[tokio::test]
async fn acl_user_with_raw_rules() {
    let server = RedisServer::builder()
        .acl_user_rules("reader", "r", &["~*", "+@read", "+ping"])
        .start()
        .await
        .unwrap();
    let mut admin = server.connection().await.unwrap();
    let () = admin.set("k", "v").await.unwrap();

    let mut reader = redis::Client::open(server.url_with_user("reader", "r"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let value: String = reader.get("k").await.unwrap();
    assert_eq!(value, "v");
    let err = reader.set::<_, _, ()>("k", "w").await.unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");
}
