//! The store on a Redis Cluster of three masters (each with a replica): the layout it picks,
//! what multi-key operations do in each layout, listing over every master, and a killed
//! master. The behaviour suite also runs on a cluster (`behaviour::cluster`).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use redstream_core::connection::{self, ConnectionOptions};
use redstream_state::{ErrorKind, KeyLayout, StateBackend, StateConfig, StateStore, Transaction};
use redstream_testkit::{RedisCluster, key_slot};

use crate::support::{capture_logs, cluster_url, unique};

async fn open(cluster: &RedisCluster, prefix: &str, config: StateConfig) -> StateStore {
    capture_logs();
    StateStore::with_config(config.with_backend(StateBackend::redis(cluster_url(cluster), prefix)))
        .await
        .unwrap()
}

/// How long the cluster scenario may take before it fails as hung: it starts a cluster and
/// waits for a failover. Never a performance limit.
const SCENARIO: Duration = Duration::from_secs(180);

/// Makes every write so far to the master holding `redis_key` reach its replica: a marker
/// written in that key's slot through a connection of its own, then `WAIT` on that master
/// (replication is in order, so the store's earlier writes there are replicated too).
async fn replicate(cluster: &RedisCluster, redis_key: &str) {
    let conn = connection::connect(&ConnectionOptions::new(cluster_url(cluster)))
        .await
        .unwrap();
    let mut raw = conn.clone();
    let () = redis::cmd("SET")
        .arg(redis_key)
        .arg("marker")
        .query_async(&mut raw)
        .await
        .unwrap();
    let port = cluster
        .master_for_key(redis_key.as_bytes())
        .await
        .unwrap()
        .port();
    let master = conn
        .cluster_masters()
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.port == port)
        .unwrap();
    let acked: i64 = conn
        .query_node(&master, redis::cmd("WAIT").arg(1).arg(10_000))
        .await
        .unwrap();
    assert_eq!(acked, 1, "{master}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_multi_key_operations_share_a_slot_or_are_refused_naming_the_slots() {
    let scenario = async {
        let cluster = RedisCluster::start().await.unwrap();

        // Not chosen: the cluster layout, one slot per store, so every operation works.
        let tagged_prefix = unique("tagged");
        let tagged = open(&cluster, &tagged_prefix, StateConfig::default()).await;
        assert_eq!(
            tagged.redis_key("k").as_deref(),
            Some(format!("{{{tagged_prefix}}}:k").as_str())
        );
        tagged
            .put_many([("a", 1), ("b", 2), ("c", 3)])
            .await
            .unwrap();
        let mut tx = Transaction::new();
        tx.incr_by("a", 10)
            .incr("hits")
            .put("last", "a")
            .delete("c");
        assert_eq!(tagged.transaction(tx).await.unwrap(), vec![11, 1]);
        assert_eq!(
            tagged
                .get_many::<i64, _>(&["a", "b", "c", "hits"])
                .await
                .unwrap(),
            vec![Some(11), Some(2), None, Some(1)]
        );
        tagged
            .save_checkpoint("cp", "1-0", [("a", 100), ("b", 200)])
            .await
            .unwrap();
        tagged.put("a", 0).await.unwrap();
        let restored = tagged
            .restore_checkpoint::<i64>("cp")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(restored.position, "1-0");
        assert_eq!(tagged.get::<i64>("a").await.unwrap(), Some(100));

        // Chosen plain: the keys spread over the masters.
        let plain_prefix = unique("plain");
        let plain = open(
            &cluster,
            &plain_prefix,
            StateConfig::default().with_key_layout(KeyLayout::Plain),
        )
        .await;
        assert_eq!(
            plain.redis_key("k").as_deref(),
            Some(format!("{plain_prefix}:k").as_str())
        );
        let keys: Vec<String> = (0..60).map(|i| format!("key:{i}")).collect();
        for key in &keys {
            plain.put(key, key).await.unwrap();
        }
        let mut masters = HashSet::new();
        for key in &keys {
            let redis_key = plain.redis_key(key).unwrap();
            masters.insert(
                cluster
                    .master_for_key(redis_key.as_bytes())
                    .await
                    .unwrap()
                    .port(),
            );
        }
        assert_eq!(masters.len(), 3, "the keys should be on every master");
        // list_keys scans every master.
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(plain.list_keys("").await.unwrap(), expected);
        assert_eq!(plain.list_keys("key:1").await.unwrap().len(), 11);
        assert_eq!(plain.list_keys_matching("key:?").await.unwrap().len(), 10);
        // The tagged store's keys are not the plain store's, and are found on their master.
        assert_eq!(
            tagged.list_keys("").await.unwrap(),
            vec!["a", "b", "hits", "last"]
        );

        // get_many across slots is split by slot, answered in order.
        let read: Vec<Option<String>> = plain.get_many(&keys).await.unwrap();
        assert_eq!(read, keys.iter().cloned().map(Some).collect::<Vec<_>>());

        // Writes of several keys across slots: refused, naming the slots, nothing written.
        let (x, y) = ("new:x", "new:y");
        let (slot_x, slot_y) = (
            key_slot(format!("{plain_prefix}:{x}").as_bytes()),
            key_slot(format!("{plain_prefix}:{y}").as_bytes()),
        );
        assert_ne!(slot_x, slot_y);
        let refused = |err: redstream_state::Error, operation: &str| {
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
            let text = err.to_string();
            assert!(text.contains(operation), "{text}");
            assert!(text.contains(&format!("slot {slot_x}")), "{text}");
            assert!(text.contains(&format!("slot {slot_y}")), "{text}");
            assert!(text.contains("key_layout cluster"), "{text}");
            assert!(text.contains("nothing was written"), "{text}");
        };
        refused(
            plain.put_many([(x, 1), (y, 2)]).await.unwrap_err(),
            "put_many",
        );
        refused(
            plain
                .put_many_with_ttl([(x, 1), (y, 2)], Duration::from_secs(60))
                .await
                .unwrap_err(),
            "put_many",
        );
        let mut tx = Transaction::new();
        tx.put(x, 1).incr(y);
        refused(plain.transaction(tx).await.unwrap_err(), "transaction");
        let mut tx = Transaction::new();
        tx.put(x, 1).delete(y);
        refused(plain.transaction(tx).await.unwrap_err(), "transaction");
        assert_eq!(plain.get::<i64>(x).await.unwrap(), None);
        assert_eq!(plain.get::<i64>(y).await.unwrap(), None);
        // A checkpoint's record and its snapshot keys: refused when they spread.
        let err = plain
            .save_checkpoint("cp", "1-0", [(x, 1), (y, 2)])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("save_checkpoint"), "{err}");
        assert!(plain.load_checkpoint::<i64>("cp").await.unwrap().is_none());
        assert_eq!(plain.get::<i64>(x).await.unwrap(), None);
        // The refusals are the caller's, not the server's: the breaker stays closed.
        assert_eq!(
            plain.circuit_breaker_stats().unwrap().state,
            redstream_state::CircuitState::Closed
        );

        // Keys that share a hash tag share a slot in the plain layout too: a transaction
        // with increments (WATCH on a dedicated connection) works on them.
        let mut tx = Transaction::new();
        tx.incr_by("{user:1}:visits", 2)
            .incr("{user:1}:orders")
            .put("{user:1}:name", "ada");
        assert_eq!(plain.transaction(tx).await.unwrap(), vec![2, 1]);
        plain
            .put_many([("{user:1}:a", 1), ("{user:1}:b", 2)])
            .await
            .unwrap();

        // Kill the master of the tagged store's slot: the same store carries on once a
        // replica took over, with what was written before.
        let slot_key = tagged.redis_key("a").unwrap();
        replicate(&cluster, &tagged.redis_key("marker").unwrap()).await;
        let victim = cluster.master_for_key(slot_key.as_bytes()).await.unwrap();
        let victim_port = victim.port();
        let promoted = cluster.kill_master(victim).await.unwrap();
        assert_ne!(promoted.port(), victim_port);
        assert_eq!(tagged.get::<i64>("a").await.unwrap(), Some(100));
        tagged.put("after", "kill").await.unwrap();
        assert_eq!(
            tagged.get::<String>("after").await.unwrap().as_deref(),
            Some("kill")
        );
        let mut tx = Transaction::new();
        tx.incr_by("a", 1).put("b", 0);
        assert_eq!(tagged.transaction(tx).await.unwrap(), vec![101]);
        tagged
            .save_checkpoint("cp", "2-0", [("a", 7)])
            .await
            .unwrap();
        let checkpoint = tagged.load_checkpoint::<i64>("cp").await.unwrap().unwrap();
        assert_eq!(checkpoint.state, BTreeMap::from([("a".to_owned(), 7)]));
        assert_eq!(
            tagged.list_keys("").await.unwrap(),
            vec!["a", "after", "b", "hits", "last", "marker"]
        );
        // The plain store, whose keys were on every master, lists them all again.
        assert_eq!(plain.list_keys("key:").await.unwrap(), expected);
    };
    tokio::time::timeout(SCENARIO, scenario)
        .await
        .expect("the cluster scenario hung");
}
