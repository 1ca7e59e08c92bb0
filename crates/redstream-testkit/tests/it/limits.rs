//! maxmemory.

use redis::AsyncCommands as _;
use redstream_testkit::RedisServer;

#[tokio::test]
async fn noeviction_turns_into_oom_errors() {
    let server = RedisServer::builder()
        .maxmemory(4 * 1024 * 1024)
        .maxmemory_policy("noeviction")
        .start()
        .await
        .unwrap();
    let mut con = server.connection().await.unwrap();
    let value = vec![b'x'; 64 * 1024];

    // 4 MiB fill up after about 64 writes; 1000 (64 MiB) bound the loop if the limit is ignored.
    let mut oom = None;
    for i in 0..1000 {
        if let Err(err) = con.set::<_, _, ()>(format!("blob:{i}"), &value).await {
            oom = Some(err);
            break;
        }
    }
    let err = oom.expect("64 MiB were written into a 4 MiB server without an error");
    assert_eq!(err.code(), Some("OOM"), "{err}");
}
