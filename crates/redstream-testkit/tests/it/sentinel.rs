//! RedisSentinel: a killed master replaced, SENTINEL FAILOVER, redis-rs's Sentinel client
//! following both.

use std::time::Instant;

use redis::AsyncCommands as _;
use redstream_testkit::RedisSentinel;

#[tokio::test]
async fn the_sentinels_promote_a_replica_when_the_master_is_killed() {
    let started = Instant::now();
    let group = RedisSentinel::start().await.unwrap();
    eprintln!(
        "sentinel group (1 master, 2 replicas, 3 sentinels) ready in {:?}",
        started.elapsed()
    );
    assert_eq!(group.data_nodes().len(), 3);
    assert_eq!(group.sentinels().len(), 3);
    let ports: Vec<String> = group
        .sentinels()
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    assert_eq!(
        group.url(),
        format!("redis-sentinel://{}/mymaster", ports.join(","))
    );

    let old = group.master().await.unwrap();
    assert_eq!(old.port(), group.data_nodes()[0].port());
    let mut con = old.connection().await.unwrap();
    let () = con.set("order:1", "paid").await.unwrap();
    let acked: u64 = redis::cmd("WAIT")
        .arg(2)
        .arg(10_000)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(acked, 2);

    let killed_at = Instant::now();
    let new = group.kill_master().await.unwrap();
    eprintln!(
        "sentinels promoted a replica {:?} after the kill",
        killed_at.elapsed()
    );
    assert_ne!(new.port(), old.port());
    assert!(!old.is_running());
    assert_eq!(group.master().await.unwrap().port(), new.port());

    // redis-rs's Sentinel client finds the new master; the other replica follows it.
    let mut client = group.sentinel_client().unwrap();
    let mut con = client.get_async_connection().await.unwrap();
    let value: String = con.get("order:1").await.unwrap();
    assert_eq!(value, "paid");
    let () = con.set("order:2", "paid").await.unwrap();
    let mut direct = new.connection().await.unwrap();
    let value: String = direct.get("order:2").await.unwrap();
    assert_eq!(value, "paid");
    let acked: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(10_000)
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(acked, 1, "the remaining replica follows the new master");
}

#[tokio::test]
async fn sentinel_failover_switches_the_master_of_a_group_with_passwords() {
    let group = RedisSentinel::builder()
        .replicas(1)
        .password("data-pw")
        .sentinel_password("sentinel-pw")
        .master_name("orders")
        .start()
        .await
        .unwrap();
    assert!(group.url().ends_with("/orders"), "{}", group.url());
    assert!(!group.url().contains("pw"), "{}", group.url());
    let old = group.master().await.unwrap();
    let mut client = group.sentinel_client().unwrap();
    let mut con = client.get_async_connection().await.unwrap();
    let () = con.set("k", "before").await.unwrap();

    let switched_at = Instant::now();
    let new = group.failover().await.unwrap();
    eprintln!(
        "SENTINEL FAILOVER settled (old master following) in {:?}",
        switched_at.elapsed()
    );
    assert_ne!(new.port(), old.port());
    // The old master runs on, as a replica of the new one.
    assert!(old.is_running());
    let mut old_con = old.connection().await.unwrap();
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut old_con).await.unwrap();
    assert_eq!(role[0], redis::Value::BulkString(b"slave".to_vec()));

    let mut con = client.get_async_connection().await.unwrap();
    let value: String = con.get("k").await.unwrap();
    assert_eq!(value, "before");
    let () = con.set("k", "after").await.unwrap();
}
