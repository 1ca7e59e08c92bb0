//! Replicas: start_replica, WAIT, READONLY.

use redis::AsyncCommands as _;
use redstream_testkit::RedisServer;

#[tokio::test]
async fn a_started_replica_is_in_sync_and_counted_by_wait() {
    let primary = RedisServer::builder()
        .password("primary-pw")
        .start()
        .await
        .unwrap();
    let replica = primary.start_replica().await.unwrap();
    assert_eq!(replica.password(), Some("primary-pw"));

    let mut con = primary.connection().await.unwrap();
    let () = con.set("k", "v").await.unwrap();
    let acked: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(10_000)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(acked, 1);

    let mut replica_con = replica.connection().await.unwrap();
    let value: String = replica_con.get("k").await.unwrap();
    assert_eq!(value, "v");
    let err = replica_con.set::<_, _, ()>("k", "w").await.unwrap_err();
    assert_eq!(err.code(), Some("READONLY"), "{err}");
}
