//! The script of `transaction` (puts and deletes) and `save_checkpoint` against a real server:
//! thousands of keys in one call, each put with its own TTL or the store's, the checkpoint
//! record as other clients read it, and a server that lost the script. (What a refused
//! permission does to them is in `permissions`.)

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redstream_state::{StateConfig, Transaction, Ttl};
use redstream_testkit::RedisServer;

use crate::support::redis_store;

/// Keys per large transaction or checkpoint: more than the generic script's quadratic key
/// check handled well, and a record of more fields than one Lua call can take.
const MANY: usize = 5_000;

/// `PTTL` of each of `keys`, in one pipeline.
async fn pttls(conn: &mut MultiplexedConnection, keys: &[String]) -> Vec<i64> {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("PTTL").arg(key);
    }
    pipe.query_async(conn).await.unwrap()
}

/// 5,000 puts and 100 deletes in one transaction: every put lands with its own TTL, or the
/// store's default one when it has none, and every delete is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_of_thousands_of_keys_applies_each_write_with_its_ttl() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = server.connection().await.unwrap();
    let store = redis_store(
        &server,
        "big",
        StateConfig::default().with_default_ttl(Duration::from_secs(600)),
    )
    .await;
    store
        .put_many((0..100).map(|n| (format!("old:{n}"), n)))
        .await
        .unwrap();

    let mut tx = Transaction::new();
    for n in 0..MANY {
        let key = format!("k:{n}");
        if n % 3 == 0 {
            tx.put_with_ttl(&key, n, Duration::from_secs(60));
        } else {
            tx.put(&key, n);
        }
        if n % 50 == 0 {
            tx.delete(&format!("old:{}", n / 50));
        }
    }
    assert_eq!(tx.len(), MANY + 100);
    assert!(store.transaction(tx).await.unwrap().is_empty());

    let keys: Vec<String> = (0..MANY).map(|n| format!("k:{n}")).collect();
    let values: Vec<Option<usize>> = store.get_many(&keys).await.unwrap();
    assert_eq!(values, (0..MANY).map(Some).collect::<Vec<_>>());
    let redis_keys: Vec<String> = keys.iter().map(|k| format!("big:{k}")).collect();
    for (n, pttl) in pttls(&mut conn, &redis_keys).await.into_iter().enumerate() {
        // Which TTL a key got, whatever time has passed since: 60 s or 600 s.
        let (low, high) = if n % 3 == 0 {
            (1, 60_000)
        } else {
            (60_001, 600_000)
        };
        assert!((low..=high).contains(&pttl), "k:{n}: PTTL {pttl}");
    }
    for n in 0..100 {
        assert!(!store.exists(&format!("old:{n}")).await.unwrap(), "old:{n}");
    }

    // Without a default TTL, a put without one of its own does not expire.
    let plain = redis_store(&server, "plain", StateConfig::default()).await;
    let mut tx = Transaction::new();
    tx.put("forever", 1)
        .put_with_ttl("brief", 2, Duration::from_secs(60))
        .delete("absent");
    plain.transaction(tx).await.unwrap();
    assert_eq!(plain.ttl("forever").await.unwrap(), Ttl::Persistent);
    let left = plain.ttl("brief").await.unwrap().remaining().unwrap();
    assert!(left <= Duration::from_secs(60), "{left:?}");
}

/// A checkpoint of 5,000 keys: the state keys hold the values with the store's default TTL,
/// the record holds every field (more than one `HSET` of the script takes), never expires and
/// loads whole; a smaller checkpoint saved after it replaces the record, and so does one saved
/// over a key of another type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_thousands_of_keys_round_trips() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = server.connection().await.unwrap();
    let store = redis_store(
        &server,
        "cp",
        StateConfig::default().with_default_ttl(Duration::from_secs(600)),
    )
    .await;
    let snapshot: BTreeMap<String, usize> = (0..MANY).map(|n| (format!("s:{n}"), n)).collect();
    store
        .save_checkpoint("orders", "1700000000000-7", &snapshot)
        .await
        .unwrap();

    let checkpoint = store
        .load_checkpoint::<usize>("orders")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint.position, "1700000000000-7");
    assert_eq!(checkpoint.state, snapshot);
    let keys: Vec<&String> = snapshot.keys().collect();
    let values: Vec<Option<usize>> = store.get_many(&keys).await.unwrap();
    assert!(
        values
            .iter()
            .zip(snapshot.values())
            .all(|(a, b)| *a == Some(*b))
    );
    let redis_keys: Vec<String> = keys.iter().map(|k| format!("cp:{k}")).collect();
    for (key, pttl) in redis_keys.iter().zip(pttls(&mut conn, &redis_keys).await) {
        // The store's default of 600 s, not a shorter one and not none (-1).
        assert!((60_001..=600_000).contains(&pttl), "{key}: PTTL {pttl}");
    }

    // The record as another client reads it: the format's fields and one per key.
    let record = "cp#checkpoint:orders";
    let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(record)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(fields.len(), 3 + MANY);
    assert_eq!(fields["format"], "1");
    assert_eq!(fields["position"], "1700000000000-7");
    assert!(fields["saved_at_ms"].parse::<u64>().is_ok());
    assert_eq!(fields["state:s:4999"], "4999");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(record)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pttl, -1, "a checkpoint record never expires");

    store
        .save_checkpoint("orders", "1700000000000-8", [("s:1", 10)])
        .await
        .unwrap();
    let fields: usize = redis::cmd("HLEN")
        .arg(record)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(fields, 4);

    // Whatever the record key held, the save replaces it.
    let () = redis::cmd("SET")
        .arg(record)
        .arg("not a record")
        .query_async(&mut conn)
        .await
        .unwrap();
    store
        .save_checkpoint("orders", "1700000000000-9", [("s:1", 11)])
        .await
        .unwrap();
    let checkpoint = store
        .load_checkpoint::<usize>("orders")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint.position, "1700000000000-9");
    assert_eq!(checkpoint.state, BTreeMap::from([("s:1".to_owned(), 11)]));
}

/// The script of transactions and checkpoints is the store's own: a server that lost it
/// (`SCRIPT FLUSH`, as after a restart or a failover) answers `NOSCRIPT`, and the store loads
/// it and sends the call again, so it succeeds whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_checkpoints_load_their_script_again_when_the_server_lost_it() {
    let server = RedisServer::start().await.unwrap();
    let store = redis_store(&server, "flushed", StateConfig::default()).await;
    for round in 0..2_i64 {
        server.flush_scripts().await.unwrap();
        let mut tx = Transaction::new();
        tx.put("a", round).delete("b");
        store.transaction(tx).await.unwrap();
        assert_eq!(store.get::<i64>("a").await.unwrap(), Some(round));

        server.flush_scripts().await.unwrap();
        store
            .save_checkpoint("cp", &round.to_string(), [("b", round)])
            .await
            .unwrap();
        let checkpoint = store.load_checkpoint::<i64>("cp").await.unwrap().unwrap();
        assert_eq!(checkpoint.position, round.to_string());
        assert_eq!(store.get::<i64>("b").await.unwrap(), Some(round));
    }
}
