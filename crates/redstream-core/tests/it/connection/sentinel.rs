//! `connect` through Sentinel: kills, failovers, demoted and hung masters.

use std::time::Duration;

use redstream_core::ErrorKind;
use redstream_core::connection::{self, ConnectionOptions, Topology};
use redstream_testkit::{RedisSentinel, RedisServer};

use super::{CANARY, HANG_GUARD, get, set};

#[tokio::test]
async fn sentinel_writes_follow_kill_and_failover_in_the_same_process() {
    tokio::time::timeout(HANG_GUARD, async {
        let group = RedisSentinel::builder()
            .password(CANARY)
            .sentinel_password("sentinel-Canary")
            .start()
            .await
            .unwrap();
        // The testkit's URL without credentials; the data nodes' password goes in it.
        let url = group.url().replacen(
            "redis-sentinel://",
            &format!("redis-sentinel://:{CANARY}@"),
            1,
        );
        let options = ConnectionOptions::new(&url).with_sentinel_password("sentinel-Canary");
        let mut conn = connection::connect(&options).await.unwrap();
        assert_eq!(conn.topology(), Topology::Sentinel);
        assert!(!format!("{conn:?} {options:?}").contains("Canary"));
        let mut dedicated = conn.dedicated(Duration::from_secs(10)).await.unwrap();

        set(&mut conn, "myapp:before", "1").await;
        let replicas: i64 = redis::cmd("WAIT")
            .arg(2)
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(replicas, 2);

        // A crash: the sentinels promote a replica; the same connection writes to it.
        let first = group.master().await.unwrap().port();
        let promoted = group.kill_master().await.unwrap();
        assert_ne!(promoted.port(), first);
        set(&mut conn, "myapp:after-kill", "2").await;
        let mut direct = promoted.connection().await.unwrap();
        assert_eq!(
            get(&mut direct, "myapp:after-kill").await.as_deref(),
            Some("2")
        );
        assert_eq!(get(&mut direct, "myapp:before").await.as_deref(), Some("1"));
        // So does the dedicated connection, and a pipeline.
        set(&mut dedicated, "myapp:dedicated", "3").await;
        assert_eq!(
            get(&mut direct, "myapp:dedicated").await.as_deref(),
            Some("3")
        );
        let () = redis::pipe()
            .cmd("SET")
            .arg("myapp:pipe")
            .arg("4")
            .ignore()
            .cmd("INCR")
            .arg("myapp:n")
            .ignore()
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(get(&mut direct, "myapp:pipe").await.as_deref(), Some("4"));
        let replicas: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(replicas, 1);

        // A failover without failure: the old master becomes a replica; writes follow.
        let second = promoted.port();
        let third = group.failover().await.unwrap();
        assert_ne!(third.port(), second);
        set(&mut conn, "myapp:after-failover", "5").await;
        set(&mut dedicated, "myapp:dedicated", "6").await;
        let mut direct = third.connection().await.unwrap();
        assert_eq!(
            get(&mut direct, "myapp:after-failover").await.as_deref(),
            Some("5")
        );
        assert_eq!(
            get(&mut direct, "myapp:dedicated").await.as_deref(),
            Some("6")
        );
        assert_eq!(get(&mut direct, "myapp:before").await.as_deref(), Some("1"));
        assert_eq!(get(&mut conn, "myapp:pipe").await.as_deref(), Some("4"));
    })
    .await
    .expect("the sentinel scenario hung");
}

#[tokio::test]
async fn sentinel_without_its_password_is_refused_without_showing_passwords() {
    let group = RedisSentinel::builder()
        .password(CANARY)
        .sentinel_password("sentinel-Canary")
        .replicas(1)
        .start()
        .await
        .unwrap();
    let url = group.url().replacen(
        "redis-sentinel://",
        &format!("redis-sentinel://:{CANARY}@"),
        1,
    );
    let err = connection::connect(&ConnectionOptions::new(url))
        .await
        .unwrap_err();
    // The sentinels refuse the lookup; the message says where the sentinels' password goes.
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(err.to_string().contains("sentinel_password"), "{err}");
    assert!(!format!("{err} {err:?}").contains("Canary"), "{err:?}");
}

/// Clones of one connection in several tasks write through a master crash: while the
/// sentinels elect a replica their writes fail with retryable errors, and once it is promoted
/// every task writes to it, with no task reconnecting by hand.
#[tokio::test]
async fn clones_in_many_tasks_follow_a_sentinel_failover_together() {
    tokio::time::timeout(HANG_GUARD, async {
        let group = RedisSentinel::builder().replicas(1).start().await.unwrap();
        let conn = connection::connect(&ConnectionOptions::new(group.url()))
            .await
            .unwrap();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let tasks: Vec<_> = (0..4)
            .map(|task| {
                let mut conn = conn.clone();
                let mut stop = stop_rx.clone();
                tokio::spawn(async move {
                    let key = format!("myapp:task:{task}");
                    let mut failures = Vec::new();
                    while !*stop.borrow_and_update() {
                        let result: redis::RedisResult<()> = redis::cmd("INCR")
                            .arg(&key)
                            .query_async(&mut conn)
                            .await
                            .map(|_: i64| ());
                        if let Err(err) = result {
                            let err = redstream_core::Error::from_redis("INCR", key.clone(), err);
                            failures.push(err.kind());
                            // Pacing while the group is down, not a wait for an event.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        tokio::task::yield_now().await;
                    }
                    // After the failover, the first write succeeds.
                    set(&mut conn, &key, "done").await;
                    failures
                })
            })
            .collect();
        let promoted = group.kill_master().await.unwrap();
        stop_tx.send(true).unwrap();
        let mut direct = promoted.connection().await.unwrap();
        for (task, handle) in tasks.into_iter().enumerate() {
            let failures = handle.await.unwrap();
            assert!(
                failures.iter().all(|kind| kind.is_retryable()),
                "task {task}: {failures:?}"
            );
            let key = format!("myapp:task:{task}");
            assert_eq!(
                get(&mut direct, &key).await.as_deref(),
                Some("done"),
                "{key}"
            );
        }
    })
    .await
    .expect("the failover with many tasks hung");
}

#[tokio::test]
async fn sentinel_with_an_unknown_master_name_says_so() {
    let group = RedisSentinel::builder().replicas(1).start().await.unwrap();
    let url = group.url().replace("/mymaster", "/nosuchmaster");
    let err = connection::connect(&ConnectionOptions::new(url))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("check the master name"), "{err}");
    assert!(err.to_string().contains("nosuchmaster"), "{err}");
}

/// Makes `to` the master and `from` its replica by hand, then points the sentinels at `to`.
/// Unlike a Sentinel failover, nothing closes the clients of `from`: they stay connected to
/// what is now a replica.
async fn swap_roles(group: &RedisSentinel, from: &RedisServer, to: &RedisServer) {
    let mut to_conn = to.connection().await.unwrap();
    let () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut to_conn)
        .await
        .unwrap();
    let mut from_conn = from.connection().await.unwrap();
    let () = redis::cmd("REPLICAOF")
        .arg(to.host())
        .arg(to.port())
        .query_async(&mut from_conn)
        .await
        .unwrap();
    for sentinel in group.sentinels() {
        let mut conn = sentinel.connection().await.unwrap();
        let () = redis::cmd("SENTINEL")
            .arg("REMOVE")
            .arg(group.master_name())
            .query_async(&mut conn)
            .await
            .unwrap();
        let () = redis::cmd("SENTINEL")
            .arg("MONITOR")
            .arg(group.master_name())
            .arg(to.host())
            .arg(to.port())
            .arg(2)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// Whether `server` still has a client named `name` (the connection under test).
async fn has_client(server: &RedisServer, name: &str) -> bool {
    let mut conn = server.connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    list.contains(&format!(" name={name} "))
}

/// A command that reaches a demoted master over a connection that stayed open is refused
/// with `READONLY`; it ran no write, so the connection asks the sentinels again and sends it
/// to the new master: first a command, then a pipeline of writes.
#[tokio::test]
async fn sentinel_resends_what_a_demoted_master_refused_with_readonly() {
    tokio::time::timeout(HANG_GUARD, async {
        let group = RedisSentinel::builder().replicas(1).start().await.unwrap();
        let mut conn = connection::connect(&ConnectionOptions::new(group.url()))
            .await
            .unwrap();
        let first = group.master().await.unwrap();
        let second = group
            .data_nodes()
            .iter()
            .find(|node| node.port() != first.port())
            .unwrap();
        let () = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg("under-test-1")
            .query_async(&mut conn)
            .await
            .unwrap();

        swap_roles(&group, first, second).await;
        assert!(
            has_client(first, "under-test-1").await,
            "the connection was closed"
        );
        set(&mut conn, "myapp:readonly", "resent").await;
        let mut direct = second.connection().await.unwrap();
        assert_eq!(
            get(&mut direct, "myapp:readonly").await.as_deref(),
            Some("resent")
        );

        // The connection is now to `second`; swap back and send a pipeline of writes.
        let () = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg("under-test-2")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(has_client(second, "under-test-2").await);
        swap_roles(&group, second, first).await;
        assert!(
            has_client(second, "under-test-2").await,
            "the connection was closed"
        );
        let () = redis::pipe()
            .cmd("SET")
            .arg("myapp:pipeline:a")
            .arg("1")
            .ignore()
            .cmd("SET")
            .arg("myapp:pipeline:b")
            .arg("2")
            .ignore()
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut direct = first.connection().await.unwrap();
        assert_eq!(
            get(&mut direct, "myapp:pipeline:a").await.as_deref(),
            Some("1")
        );
        assert_eq!(
            get(&mut direct, "myapp:pipeline:b").await.as_deref(),
            Some("2")
        );
    })
    .await
    .expect("the READONLY scenario hung");
}

/// A master that hangs (`SIGSTOP`) keeps its sockets open, so no disconnection tells the
/// connection to move, and its calls would time out. The connection hears the sentinels
/// announce the new master (`+switch-master`) and moves at once: the first call after the
/// promotion reaches the promoted replica, while the old master is still hung.
#[tokio::test]
async fn sentinel_moves_off_a_hung_master_when_the_sentinels_announce_the_switch() {
    tokio::time::timeout(HANG_GUARD, async {
        let group = RedisSentinel::builder().start().await.unwrap();
        let options = ConnectionOptions::new(group.url())
            .with_connect_timeout(Duration::from_millis(500))
            .with_response_timeout(Duration::from_millis(500));
        let mut conn = connection::connect(&options).await.unwrap();
        set(&mut conn, "myapp:before", "1").await;
        let first = group.master().await.unwrap().port();

        let promoted = group.pause_master().await.unwrap();
        assert_ne!(promoted.port(), first);
        // `pause_master` returned once the group settled, well after the sentinels announced
        // the switch: no call times out against the hung master, the first goes to the
        // promoted one. (Without the announcement, the first call would time out.)
        let () = redis::cmd("SET")
            .arg("myapp:after")
            .arg("2")
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|err| panic!("the first call after the switch failed: {err}"));
        let mut direct = promoted.connection().await.unwrap();
        assert_eq!(get(&mut direct, "myapp:after").await.as_deref(), Some("2"));
        let paused = group
            .data_nodes()
            .iter()
            .find(|node| node.port() == first)
            .unwrap();
        assert!(paused.is_paused(), "the old master was resumed too early");
        paused.resume().unwrap();
    })
    .await
    .expect("the hung-master scenario hung");
}
