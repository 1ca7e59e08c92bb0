//! `connect` to a Redis Cluster: every slot routed, a killed master, a moved slot.

use std::collections::HashSet;
use std::time::Duration;

use redstream_core::connection::{self, Connection, ConnectionOptions, NodeAddress, Topology};
use redstream_testkit::{RedisCluster, key_slot};

use super::{CANARY, HANG_GUARD, get, set};

fn cluster_url(cluster: &RedisCluster, seeds: usize) -> String {
    let hosts: Vec<String> = cluster
        .nodes()
        .iter()
        .take(seeds)
        .map(|node| format!("{}:{}", node.server().host(), node.port()))
        .collect();
    format!("redis-cluster://:{CANARY}@{}", hosts.join(","))
}

/// Makes every master's writes reach its replica, so a killed master loses none of them.
async fn replicate_everything(conn: &Connection) {
    for master in conn.cluster_masters().await.unwrap() {
        let acked: i64 = conn
            .query_node(&master, redis::cmd("WAIT").arg(1).arg(10_000))
            .await
            .unwrap();
        assert_eq!(acked, 1, "{master}");
    }
}

#[tokio::test]
async fn cluster_routes_keys_of_every_slot_and_survives_a_killed_master() {
    tokio::time::timeout(HANG_GUARD, async {
        let cluster = RedisCluster::builder()
            .password(CANARY)
            .start()
            .await
            .unwrap();
        // One seed is enough to discover the cluster.
        let options = ConnectionOptions::new(cluster_url(&cluster, 1));
        let mut conn = connection::connect(&options).await.unwrap();
        assert_eq!(conn.topology(), Topology::Cluster);
        assert!(!conn.target().contains(CANARY));

        let keys: Vec<String> = (0..300).map(|i| format!("myapp:key:{i}")).collect();
        let slots: HashSet<u16> = keys.iter().map(|k| key_slot(k.as_bytes())).collect();
        assert!(slots.len() > 250, "{} slots", slots.len());
        for key in &keys {
            set(&mut conn, key, key).await;
        }
        for key in &keys {
            assert_eq!(get(&mut conn, key).await.as_deref(), Some(key.as_str()));
        }

        // Every master, and a keyspace-wide count summed over them.
        let masters = conn.cluster_masters().await.unwrap();
        assert_eq!(masters.len(), 3, "{masters:?}");
        let ports: HashSet<u16> = cluster
            .masters()
            .await
            .unwrap()
            .iter()
            .map(|n| n.port())
            .collect();
        assert_eq!(
            masters.iter().map(|m| m.port).collect::<HashSet<_>>(),
            ports
        );
        let mut total = 0;
        for master in &masters {
            let size: i64 = conn
                .query_node(master, &redis::cmd("DBSIZE"))
                .await
                .unwrap();
            total += size;
        }
        assert_eq!(total, 300);

        // A script on one key goes to that key's master (EVALSHA, loaded on NOSCRIPT).
        let script = redis::Script::new(
            "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])",
        );
        let reply: String = script
            .key("{order.created}:script")
            .arg("ran")
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(reply, "ran");

        // A dedicated connection works too (its own ClusterConnection).
        let mut dedicated = conn.dedicated(Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            get(&mut dedicated, "myapp:key:7").await.as_deref(),
            Some("myapp:key:7")
        );

        // Kill the master of one key; once a replica took over, the same connection serves
        // every key again, old and new, without being reopened.
        replicate_everything(&conn).await;
        let victim = cluster.master_for_key(b"myapp:key:0").await.unwrap();
        let victim_port = victim.port();
        let promoted = cluster.kill_master(victim).await.unwrap();
        assert_ne!(promoted.port(), victim_port);
        for key in &keys {
            assert_eq!(
                get(&mut conn, key).await.as_deref(),
                Some(key.as_str()),
                "{key}"
            );
        }
        for key in &keys {
            set(&mut conn, key, "after").await;
        }
        assert_eq!(
            get(&mut conn, "myapp:key:0").await.as_deref(),
            Some("after")
        );
        assert_eq!(
            get(&mut dedicated, "myapp:key:0").await.as_deref(),
            Some("after")
        );
        let reply: String = script
            .key("{order.created}:script")
            .arg("again")
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(reply, "again");
        let masters = conn.cluster_masters().await.unwrap();
        assert_eq!(masters.len(), 3, "{masters:?}");
        assert!(masters.contains(&NodeAddress::new(promoted.server().host(), promoted.port())));
        assert!(
            !masters.iter().any(|m| m.port == victim_port),
            "{masters:?}"
        );
    })
    .await
    .expect("the cluster scenario hung");
}

#[tokio::test]
async fn cluster_follows_a_moved_slot() {
    tokio::time::timeout(HANG_GUARD, async {
        let cluster = RedisCluster::builder()
            .password(CANARY)
            .replicas_per_master(0)
            .start()
            .await
            .unwrap();
        let mut conn = connection::connect(&ConnectionOptions::new(cluster_url(&cluster, 3)))
            .await
            .unwrap();
        let key = "events:{order.created}";
        set(&mut conn, key, "before").await;
        let slot = key_slot(key.as_bytes());
        let owner = cluster.master_for_slot(slot).await.unwrap().port();
        let masters = cluster.masters().await.unwrap();
        let to = masters.iter().find(|m| m.port() != owner).unwrap();
        cluster.move_slot(slot, to).await.unwrap();
        assert_eq!(get(&mut conn, key).await.as_deref(), Some("before"));
        set(&mut conn, key, "after").await;
        let mut direct = to.server().connection().await.unwrap();
        assert_eq!(get(&mut direct, key).await.as_deref(), Some("after"));
    })
    .await
    .expect("the slot move hung");
}
