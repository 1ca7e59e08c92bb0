//! RedisCluster: formation, reads and writes across slots, a slot moved under a writer, a
//! killed master replaced by its replica, a manual failover.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::AsyncCommands as _;
use redstream_testkit::{ClusterNode, RedisCluster, key_slot, wait_until};

/// Keys on every master: `key:0` .. `key:299` hash to slots all over the range.
const KEYS: usize = 300;

#[tokio::test]
async fn forms_three_masters_with_a_replica_each_and_serves_every_slot() {
    let started = Instant::now();
    let cluster = RedisCluster::start().await.unwrap();
    eprintln!(
        "cluster of 3 masters and 3 replicas formed in {:?}",
        started.elapsed()
    );

    assert_eq!(cluster.nodes().len(), 6);
    let masters = cluster.masters().await.unwrap();
    assert_eq!(masters.len(), 3);
    let mut all: HashSet<&str> = masters.iter().map(|m| m.id()).collect();
    for master in &masters {
        let replicas = cluster.replicas_of(master).await.unwrap();
        assert_eq!(replicas.len(), 1, "{master}: {replicas:?}");
        all.insert(replicas[0].id());
    }
    assert_eq!(all.len(), 6, "every node is a master or a replica of one");

    let mut con = cluster.connection().await.unwrap();
    for i in 0..KEYS {
        let () = con.set(format!("key:{i}"), i).await.unwrap();
    }
    for i in 0..KEYS {
        let value: usize = con.get(format!("key:{i}")).await.unwrap();
        assert_eq!(value, i);
    }
    // The keys are spread over the three masters, each holding those of its slots.
    let mut per_master = BTreeMap::new();
    for i in 0..KEYS {
        let key = format!("key:{i}");
        let master = cluster.master_for_key(key.as_bytes()).await.unwrap();
        *per_master.entry(master.port()).or_insert(0_u64) += 1;
    }
    assert_eq!(per_master.len(), 3, "{per_master:?}");
    for master in &masters {
        let mut plain = master.server().connection().await.unwrap();
        let size: u64 = redis::cmd("DBSIZE").query_async(&mut plain).await.unwrap();
        assert_eq!(size, per_master[&master.port()], "{master}");
        // The kit's slot function agrees with the server's.
        for key in ["key:1", "{order.created}", "events:{order.created}", "a{}b"] {
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query_async(&mut plain)
                .await
                .unwrap();
            assert_eq!(key_slot(key.as_bytes()), slot, "{key}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moves_while_a_writer_writes_and_nothing_is_lost() {
    let cluster = Arc::new(
        RedisCluster::builder()
            .password("cluster-pw")
            .start()
            .await
            .unwrap(),
    );
    let slot = key_slot(b"{moving}");
    let from = cluster.master_for_slot(slot).await.unwrap();
    let to = *cluster
        .masters()
        .await
        .unwrap()
        .iter()
        .find(|m| m.id() != from.id())
        .unwrap();

    let mut con = cluster.connection().await.unwrap();
    for i in 0..500 {
        let () = con.set(format!("{{moving}}:before:{i}"), i).await.unwrap();
    }

    // A writer that keeps writing new keys and appending to a stream in the slot.
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let mut con = con.clone();
        let (written, stop) = (written.clone(), stop.clone());
        async move {
            let mut i = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                let () = con.set(format!("{{moving}}:during:{i}"), i).await.unwrap();
                let _: String = con.xadd("{moving}:stream", "*", &[("i", i)]).await.unwrap();
                i += 1;
                written.store(i, Ordering::Relaxed);
            }
            i
        }
    });
    wait_until("the writer to start", Duration::from_secs(30), || async {
        let n = written.load(Ordering::Relaxed);
        if n >= 20 {
            Ok(())
        } else {
            Err(format!("{n} writes"))
        }
    })
    .await
    .unwrap();

    let moved = cluster.move_slot(slot, to).await.unwrap();
    assert_eq!(moved.slot, slot);
    assert_eq!(moved.from, from.id());
    assert_eq!(moved.to, to.id());
    assert!(moved.keys >= 500, "{moved:?}");
    let at_move = written.load(Ordering::Relaxed);
    // The writer goes on after the move, now told MOVED by the old master.
    wait_until("writes after the move", Duration::from_secs(30), || async {
        let n = written.load(Ordering::Relaxed);
        if n >= at_move + 20 {
            Ok(())
        } else {
            Err(format!("{n} writes"))
        }
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let during = writer.await.unwrap();
    eprintln!(
        "slot {slot}: {} keys migrated, {during} writes while it moved",
        moved.keys
    );

    assert_eq!(cluster.master_for_slot(slot).await.unwrap().id(), to.id());
    for i in 0..500 {
        let value: u64 = con.get(format!("{{moving}}:before:{i}")).await.unwrap();
        assert_eq!(value, i);
    }
    for i in 0..during {
        let value: Option<u64> = con.get(format!("{{moving}}:during:{i}")).await.unwrap();
        assert_eq!(value, Some(i), "{{moving}}:during:{i}");
    }
    let length: u64 = con.xlen("{moving}:stream").await.unwrap();
    assert_eq!(length, during);
    // Everything sits on the new master; the old one has nothing left in the slot.
    assert_eq!(count_in_slot(to, slot).await.unwrap(), 500 + during + 1);
    assert_eq!(count_in_slot(from, slot).await.unwrap(), 0);
}

/// `CLUSTER COUNTKEYSINSLOT` on one node.
async fn count_in_slot(node: &ClusterNode, slot: u16) -> redstream_testkit::Result<u64> {
    let mut plain = node.server().connection().await?;
    Ok(redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query_async(&mut plain)
        .await?)
}
