//! The behaviour suite: every case runs against the memory backend (on tokio's paused clock,
//! so TTLs expire as soon as the test waits for them), against a private redis-server, and
//! against one private Redis Cluster of three masters that every case shares (each with a
//! prefix of its own, in the layout a store picks on a cluster when none is chosen:
//! `cluster`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use redstream_state::{ErrorKind, StateConfig, Transaction, Ttl, Value};
use serde::{Deserialize, Serialize};

use crate::support::{Ctx, Kind, until, within};

/// Runs each named case against both backends, and all of them, one after another, on one
/// cluster.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(start_paused = true)]
                async fn $case() {
                    super::$case(super::Kind::Memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Kind::Redis).await;
                }
            )*
        }
        mod cluster {
            /// One cluster for the whole suite: starting one per case would cost more than
            /// the cases.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn every_case_on_one_three_master_cluster() {
                let cluster = redstream_testkit::RedisCluster::builder()
                    .replicas_per_master(0)
                    .start()
                    .await
                    .unwrap();
                crate::support::on_cluster(&cluster, || async {
                    $(
                        println!("case {} on the cluster", stringify!($case));
                        super::$case(super::Kind::Cluster).await;
                    )*
                })
                .await;
            }
        }
    };
}

suite!(
    crud_with_typed_values,
    seed_values_and_the_distributed_counter,
    ttl_expiry_and_expired_keys_are_never_returned,
    default_ttl_applies_to_writes_that_create_keys,
    update_keeps_the_remaining_ttl_unless_told,
    concurrent_updates_lose_no_increment,
    counters,
    hashes_and_wrong_types_name_the_key,
    compare_and_set,
    transactions_are_all_or_nothing,
    concurrent_transactions_lose_no_increment,
    batches,
    listing_by_prefix,
    checkpoints,
);

async fn open(kind: Kind) -> Ctx {
    kind.open(StateConfig::default()).await
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    items: Vec<String>,
    total_cents: i64,
}

async fn crud_with_typed_values(kind: Kind) {
    let ctx = open(kind).await;
    let store = &ctx.store;
    let order = Order {
        id: 7,
        items: vec!["book".into(), "pen".into()],
        total_cents: 1_250,
    };
    assert_eq!(store.get::<Order>("order:7").await.unwrap(), None);
    assert!(!store.exists("order:7").await.unwrap());
    store.put("order:7", &order).await.unwrap();
    assert_eq!(
        store.get::<Order>("order:7").await.unwrap(),
        Some(order.clone())
    );
    assert!(store.exists("order:7").await.unwrap());
    assert_eq!(store.ttl("order:7").await.unwrap(), Ttl::Persistent);

    // A put replaces.
    let updated = Order {
        total_cents: 1_500,
        ..order
    };
    store.put("order:7", &updated).await.unwrap();
    assert_eq!(store.get::<Order>("order:7").await.unwrap(), Some(updated));

    // Reading as the wrong type is a decode error naming the key; the value is untouched.
    let err = store.get::<i64>("order:7").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
    assert!(err.to_string().contains("\"order:7\""), "{err}");

    store.delete("order:7").await.unwrap();
    assert_eq!(store.get::<Order>("order:7").await.unwrap(), None);
    assert_eq!(store.ttl("order:7").await.unwrap(), Ttl::Missing);
    store.delete("order:7").await.unwrap();

    // Keys are any non-empty text.
    for key in ["with space", "ünïcödé", "{braces}", "a:b:c", "*?[]\\"] {
        store.put(key, key).await.unwrap();
        assert_eq!(
            store.get::<String>(key).await.unwrap().as_deref(),
            Some(key)
        );
    }
    let err = store.put("", 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = store
        .put_with_ttl("k", 1, Duration::from_micros(10))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

async fn seed_values_and_the_distributed_counter(kind: Kind) {
    let ctx = open(kind).await;
    let store1 = &ctx.store;
    let store2 = ctx.another().await;

    store1.put("total", Value::Integer(10)).await.unwrap();
    match store2.get("total").await.unwrap() {
        Some(Value::Integer(n)) => assert_eq!(n, 10),
        other => panic!("expected Integer(10), got {other:?}"),
    }
    let values = [
        Value::Null,
        Value::Boolean(false),
        Value::Number(2.5),
        Value::String("token".into()),
        Value::Array(vec![Value::Integer(1), Value::String("a".into())]),
        Value::Object(BTreeMap::from([("k".to_owned(), Value::Number(1.0))])),
    ];
    for (i, value) in values.iter().enumerate() {
        let key = format!("v{i}");
        store1.put(&key, value).await.unwrap();
        assert_eq!(
            store2.get::<Value>(&key).await.unwrap().as_ref(),
            Some(value)
        );
    }
    // The seed's counter is an integer INCR understands, and reads back as an Integer.
    assert_eq!(store2.incr("total").await.unwrap(), 11);
    assert_eq!(
        store1.get::<Value>("total").await.unwrap(),
        Some(Value::Integer(11))
    );
    let err = store1
        .put("nan", Value::Number(f64::NAN))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(!store1.exists("nan").await.unwrap());
}

async fn ttl_expiry_and_expired_keys_are_never_returned(kind: Kind) {
    let ctx = open(kind).await;
    let store = &ctx.store;
    store
        .put_with_ttl("session", "token", Duration::from_millis(300))
        .await
        .unwrap();
    store.put("keep", 1).await.unwrap();
    match store.ttl("session").await.unwrap() {
        Ttl::ExpiresIn(left) => assert!(
            left > Duration::ZERO && left <= Duration::from_millis(300),
            "{left:?}"
        ),
        other => panic!("expected a TTL, got {other:?}"),
    }
    assert_eq!(
        store.get::<String>("session").await.unwrap().as_deref(),
        Some("token")
    );
    until("the session key to expire", || async {
        !store.exists("session").await.unwrap()
    })
    .await;
    assert_eq!(store.get::<String>("session").await.unwrap(), None);
    assert_eq!(store.ttl("session").await.unwrap(), Ttl::Missing);
    assert_eq!(
        store
            .get_many::<i64, _>(&["session", "keep"])
            .await
            .unwrap(),
        vec![None, Some(1)]
    );
    assert_eq!(store.list_keys("").await.unwrap(), vec!["keep".to_owned()]);

    // expire and persist.
    assert!(
        store
            .expire("keep", Duration::from_secs(600))
            .await
            .unwrap()
    );
    assert!(store.ttl("keep").await.unwrap().remaining().is_some());
    assert!(store.persist("keep").await.unwrap());
    assert_eq!(store.ttl("keep").await.unwrap(), Ttl::Persistent);
    assert!(
        !store
            .expire("missing", Duration::from_secs(1))
            .await
            .unwrap()
    );
}

async fn default_ttl_applies_to_writes_that_create_keys(kind: Kind) {
    let ttl = Duration::from_secs(3600);
    let ctx = kind
        .open(StateConfig::default().with_default_ttl(ttl))
        .await;
    let store = &ctx.store;
    let expiring =
        |t: Ttl| matches!(t, Ttl::ExpiresIn(d) if d > Duration::from_secs(3500) && d <= ttl);

    store.put("put", 1).await.unwrap();
    store.incr("incr").await.unwrap();
    store.hset("hset", "f", 1).await.unwrap();
    store.hincr_by("hincr", "f", 1).await.unwrap();
    store
        .update("update", |n: Option<i64>| n.unwrap_or(0) + 1)
        .await
        .unwrap();
    assert!(store.compare_and_set("cas", None, 1).await.unwrap());
    store.put_many([("many1", 1), ("many2", 2)]).await.unwrap();
    let mut tx = Transaction::new();
    tx.put("tx_put", 1).incr("tx_incr");
    store.transaction(tx).await.unwrap();
    for key in [
        "put", "incr", "hset", "hincr", "update", "cas", "many1", "many2", "tx_put", "tx_incr",
    ] {
        let left = store.ttl(key).await.unwrap();
        assert!(expiring(left), "{key}: {left:?}");
    }

    // Writes to an existing key in place keep its TTL; put_with_ttl overrides the default.
    store
        .put_with_ttl("short", 5, Duration::from_secs(60))
        .await
        .unwrap();
    store.incr("short").await.unwrap();
    assert!(store.compare_and_set("short", Some(6), 7).await.unwrap());
    let left = store.ttl("short").await.unwrap().remaining().unwrap();
    assert!(left <= Duration::from_secs(60), "{left:?}");
    // A put replaces the TTL with the default one.
    store.put("short", 1).await.unwrap();
    assert!(expiring(store.ttl("short").await.unwrap()));

    // The writes that set a TTL on the keys they create (scripts, in Redis) still refuse
    // keys of the wrong type, naming them, and change nothing.
    for err in [
        store.incr("hset").await.unwrap_err(),
        store.hset("put", "f", 1).await.unwrap_err(),
        store.hincr_by("put", "f", 1).await.unwrap_err(),
        store.compare_and_set("hset", None, 1).await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::WrongType, "{err}");
        assert!(
            err.to_string().contains("\"hset\"") || err.to_string().contains("\"put\""),
            "{err}"
        );
    }
    assert_eq!(store.get::<i64>("put").await.unwrap(), Some(1));
    store.put("text", "x").await.unwrap();
    assert_eq!(
        store.incr("text").await.unwrap_err().kind(),
        ErrorKind::Server
    );
}

async fn update_keeps_the_remaining_ttl_unless_told(kind: Kind) {
    let ctx = open(kind).await;
    let store = &ctx.store;
    store
        .put_with_ttl("n", 1, Duration::from_secs(60))
        .await
        .unwrap();
    let new = store
        .update("n", |n: Option<i64>| n.unwrap_or(0) + 1)
        .await
        .unwrap();
    assert_eq!(new, 2);
    let left = store
        .ttl("n")
        .await
        .unwrap()
        .remaining()
        .expect("still expiring");
    assert!(left <= Duration::from_secs(60), "{left:?}");

    store
        .update_with_ttl("n", Duration::from_secs(7200), |n: Option<i64>| {
            n.unwrap_or(0) * 10
        })
        .await
        .unwrap();
    let left = store.ttl("n").await.unwrap().remaining().unwrap();
    assert!(left > Duration::from_secs(3600), "{left:?}");
    assert_eq!(store.get::<i64>("n").await.unwrap(), Some(20));

    // Without a default TTL, a key created by update does not expire.
    store
        .update("fresh", |s: Option<String>| s.unwrap_or_default() + "a")
        .await
        .unwrap();
    assert_eq!(store.ttl("fresh").await.unwrap(), Ttl::Persistent);
    // update's closure sees the decoded value; a wrong type is a decode error, nothing written.
    let err = store
        .update("fresh", |n: Option<i64>| n.unwrap_or(0))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode);
    assert_eq!(
        store.get::<String>("fresh").await.unwrap().as_deref(),
        Some("a")
    );
}

async fn concurrent_updates_lose_no_increment(kind: Kind) {
    const WRITERS: usize = 12;
    const EACH: usize = 25;
    let ctx = open(kind).await;
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        // Each writer has its own store: its own connection, as another process would.
        let store = ctx.another().await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                store
                    .update("shared", |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap();
                store.incr("counter").await.unwrap();
                store.hincr_by("hash", "field", 1).await.unwrap();
            }
        }));
    }
    within("the writers", async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await;
    let total = (WRITERS * EACH) as u64;
    assert_eq!(ctx.store.get::<u64>("shared").await.unwrap(), Some(total));
    assert_eq!(ctx.store.get::<u64>("counter").await.unwrap(), Some(total));
    assert_eq!(
        ctx.store.hget::<u64>("hash", "field").await.unwrap(),
        Some(total)
    );
}

async fn counters(kind: Kind) {
    let ctx = open(kind).await;
    let store = &ctx.store;
    assert_eq!(store.incr("c").await.unwrap(), 1);
    assert_eq!(store.incr_by("c", 41).await.unwrap(), 42);
    assert_eq!(store.decr("c").await.unwrap(), 41);
    assert_eq!(store.decr_by("c", 50).await.unwrap(), -9);
    assert_eq!(store.get::<i64>("c").await.unwrap(), Some(-9));

    // A value put as an integer is a counter.
    store.put("p", 41).await.unwrap();
    assert_eq!(store.incr("p").await.unwrap(), 42);

    // Text is not; the error names the key and nothing changes.
    store.put("text", "forty-two").await.unwrap();
    let err = store.incr("text").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server, "{err}");
    assert!(err.to_string().contains("\"text\""), "{err}");
    assert_eq!(
        store.get::<String>("text").await.unwrap().as_deref(),
        Some("forty-two")
    );
    store.put("max", i64::MAX).await.unwrap();
    let err = store.incr("max").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server, "{err}");
    assert!(err.to_string().contains("overflow"), "{err}");
    assert_eq!(store.get::<i64>("max").await.unwrap(), Some(i64::MAX));
    let err = store.decr_by("c", i64::MIN).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

async fn hashes_and_wrong_types_name_the_key(kind: Kind) {
    let ctx = open(kind).await;
    let store = &ctx.store;
    assert!(store.hset("user:1", "name", "Ada").await.unwrap());
    assert!(store.hset("user:1", "visits", 1).await.unwrap());
    assert!(!store.hset("user:1", "name", "Ada L.").await.unwrap());
    assert_eq!(
        store
            .hget::<String>("user:1", "name")
            .await
            .unwrap()
            .as_deref(),
        Some("Ada L.")
    );
    assert_eq!(store.hget::<String>("user:1", "nope").await.unwrap(), None);
    assert_eq!(store.hincr_by("user:1", "visits", 4).await.unwrap(), 5);
    let all: HashMap<String, Value> = store.hgetall("user:1").await.unwrap();
    assert_eq!(
        all,
        HashMap::from([
            ("name".to_owned(), Value::String("Ada L.".into())),
            ("visits".to_owned(), Value::Integer(5)),
        ])
    );
    assert!(store.hgetall::<Value>("missing").await.unwrap().is_empty());
    let err = store.hincr_by("user:1", "name", 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server, "{err}");

    // A hash is not a value, and a value is not a hash: WRONGTYPE, naming the key.
    for err in [
        store.get::<Value>("user:1").await.unwrap_err(),
        store.incr("user:1").await.unwrap_err(),
        store
            .update("user:1", |v: Option<i64>| v.unwrap_or(0))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::WrongType, "{err}");
        assert!(err.to_string().contains("\"user:1\""), "{err}");
        assert!(!err.is_retryable());
    }
    store.put("plain", 1).await.unwrap();
    let err = store.hset("plain", "f", 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongType, "{err}");
    assert!(err.to_string().contains("\"plain\""), "{err}");
    if kind == Kind::Redis {
        // The stored key is named too.
        let redis_key = ctx.store.redis_key("plain").unwrap();
        assert!(err.to_string().contains(&redis_key), "{err}");
    }

    assert!(store.hdel("user:1", "name").await.unwrap());
    assert!(!store.hdel("user:1", "name").await.unwrap());
    assert!(store.hdel("user:1", "visits").await.unwrap());
    assert!(
        !store.exists("user:1").await.unwrap(),
        "an empty hash is gone"
    );
}

async fn compare_and_set(kind: Kind) {
    let ctx = open(kind).await;
    let store = &ctx.store;
    assert!(
        store
            .compare_and_set("lock", None, "owner-a")
            .await
            .unwrap()
    );
    assert!(
        !store
            .compare_and_set("lock", None, "owner-b")
            .await
            .unwrap()
    );
    assert!(
        !store
            .compare_and_set("lock", Some("owner-b"), "owner-c")
            .await
            .unwrap()
    );
    assert_eq!(
        store.get::<String>("lock").await.unwrap().as_deref(),
        Some("owner-a")
    );
    assert!(
        store
            .compare_and_set("lock", Some("owner-a"), "owner-c")
            .await
            .unwrap()
    );
    assert_eq!(
        store.get::<String>("lock").await.unwrap().as_deref(),
        Some("owner-c")
    );
    // Structured values compare by their JSON.
    let map = BTreeMap::from([("a", 1), ("b", 2)]);
    store.put("map", &map).await.unwrap();
    let next = BTreeMap::from([("a", 1), ("b", 3)]);
    assert!(
        store
            .compare_and_set("map", Some(&map), &next)
            .await
            .unwrap()
    );
    assert!(
        !store
            .compare_and_set("map", Some(&map), &next)
            .await
            .unwrap()
    );
}

async fn transactions_are_all_or_nothing(kind: Kind) {
    let ctx = open(kind).await;
    let store = &ctx.store;
    store.put("cart:42", "items").await.unwrap();
    store.put("paid", 10).await.unwrap();

    let mut tx = Transaction::new();
    tx.put("order:42", "paid")
        .incr_by("paid", 1)
        .incr_by("revenue", 9_999)
        .delete("cart:42")
        .decr("stock");
    assert_eq!(tx.len(), 5);
    let increments = store.transaction(tx).await.unwrap();
    assert_eq!(increments, vec![11, 9_999, -1]);
    assert_eq!(
        store.get::<String>("order:42").await.unwrap().as_deref(),
        Some("paid")
    );
    assert!(!store.exists("cart:42").await.unwrap());

    // An increment of text fails the whole transaction, before anything is written.
    store.put("text", "x").await.unwrap();
    store.hset("hash", "f", 1).await.unwrap();
    let failing = [("text", ErrorKind::Server), ("hash", ErrorKind::WrongType)];
    for (bad, kind) in failing {
        let mut tx = Transaction::new();
        tx.put("order:43", "paid")
            .incr("paid")
            .incr(bad)
            .delete("order:42");
        let err = store.transaction(tx).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        assert!(
            !store.exists("order:43").await.unwrap(),
            "{bad}: put applied"
        );
        assert_eq!(store.get::<i64>("paid").await.unwrap(), Some(11), "{bad}");
        assert!(
            store.exists("order:42").await.unwrap(),
            "{bad}: delete applied"
        );
    }
    // What the transaction itself writes counts: a put of text before the increment fails it.
    let mut tx = Transaction::new();
    tx.put("fresh", "text").incr("fresh");
    assert_eq!(
        store.transaction(tx).await.unwrap_err().kind(),
        ErrorKind::Server
    );
    assert!(!store.exists("fresh").await.unwrap());
    // Overflow too.
    store.put("big", i64::MAX - 1).await.unwrap();
    let mut tx = Transaction::new();
    tx.incr("big").incr("big");
    assert_eq!(
        store.transaction(tx).await.unwrap_err().kind(),
        ErrorKind::Server
    );
    assert_eq!(store.get::<i64>("big").await.unwrap(), Some(i64::MAX - 1));
    // Builder errors are reported and nothing is applied.
    let mut tx = Transaction::new();
    tx.put("fine", 1).put("", 2);
    assert_eq!(
        store.transaction(tx).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert!(!store.exists("fine").await.unwrap());
    assert_eq!(
        store.transaction(Transaction::new()).await.unwrap(),
        Vec::<i64>::new()
    );
    // Puts and deletes only.
    let mut tx = Transaction::new();
    tx.put_with_ttl("a", 1, Duration::from_secs(60))
        .put("b", 2)
        .delete("order:42");
    assert!(store.transaction(tx).await.unwrap().is_empty());
    assert!(store.ttl("a").await.unwrap().remaining().is_some());
    assert_eq!(store.get::<i64>("b").await.unwrap(), Some(2));
    assert!(!store.exists("order:42").await.unwrap());
}

async fn concurrent_transactions_lose_no_increment(kind: Kind) {
    const WRITERS: usize = 8;
    const EACH: usize = 20;
    let ctx = open(kind).await;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = ctx.another().await;
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let mut tx = Transaction::new();
                tx.incr("events")
                    .incr_by("sum", 2)
                    .put(&format!("last:{w}"), i);
                store.transaction(tx).await.unwrap();
            }
        }));
    }
    within("the transactions", async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await;
    let total = (WRITERS * EACH) as i64;
    assert_eq!(ctx.store.get::<i64>("events").await.unwrap(), Some(total));
    assert_eq!(ctx.store.get::<i64>("sum").await.unwrap(), Some(2 * total));
    let last: Vec<Option<usize>> = ctx
        .store
        .get_many(
            &(0..WRITERS)
                .map(|w| format!("last:{w}"))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    assert!(last.iter().all(|v| *v == Some(EACH - 1)), "{last:?}");
}

async fn batches(kind: Kind) {
    let ctx = open(kind).await;
    let store = &ctx.store;
    let items: Vec<(String, u32)> = (0..200).map(|i| (format!("k{i}"), i)).collect();
    store
        .put_many(items.iter().map(|(k, v)| (k, v)))
        .await
        .unwrap();
    let keys: Vec<String> = (0..202).map(|i| format!("k{i}")).collect();
    let values: Vec<Option<u32>> = store.get_many(&keys).await.unwrap();
    assert_eq!(values.len(), 202);
    for (i, value) in values.iter().enumerate() {
        let expected = (i < 200).then_some(i as u32);
        assert_eq!(*value, expected, "k{i}");
    }
    // A hash reads as absent in a batch, as MGET does.
    store.hset("h", "f", 1).await.unwrap();
    assert_eq!(
        store.get_many::<u32, _>(&["k1", "h"]).await.unwrap(),
        vec![Some(1), None]
    );
    store
        .put_many_with_ttl([("t1", 1), ("t2", 2)], Duration::from_secs(60))
        .await
        .unwrap();
    assert!(store.ttl("t2").await.unwrap().remaining().is_some());
    store.put_many(Vec::<(String, u32)>::new()).await.unwrap();
    assert!(store.get_many::<u32, &str>(&[]).await.unwrap().is_empty());
}

async fn listing_by_prefix(kind: Kind) {
    let ctx = open(kind).await;
    let store = &ctx.store;
    for key in [
        "user:1", "user:2", "user:10", "users", "order:1", "user*x", "us?r", "[u]",
    ] {
        store.put(key, 1).await.unwrap();
    }
    store.hset("user:hash", "f", 1).await.unwrap();
    store
        .save_checkpoint("user:cp", "0", [("user:1", 1)])
        .await
        .unwrap();
    assert_eq!(
        store.list_keys("user:").await.unwrap(),
        vec!["user:1", "user:10", "user:2", "user:hash"]
    );
    // The prefix is literal text: glob characters match only themselves.
    assert_eq!(store.list_keys("user*").await.unwrap(), vec!["user*x"]);
    assert_eq!(store.list_keys("us?").await.unwrap(), vec!["us?r"]);
    assert_eq!(store.list_keys("[u").await.unwrap(), vec!["[u]"]);
    assert!(store.list_keys("nothing").await.unwrap().is_empty());
    let all = store.list_keys("").await.unwrap();
    assert_eq!(all.len(), 9, "{all:?}");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "sorted: {all:?}");
}

async fn checkpoints(kind: Kind) {
    let ctx = open(kind).await;
    let store = &ctx.store;
    assert!(
        store
            .load_checkpoint::<i64>("orders")
            .await
            .unwrap()
            .is_none()
    );
    store
        .save_checkpoint(
            "orders",
            "1700000000000-3",
            [("count", 12_i64), ("total", 1_234)],
        )
        .await
        .unwrap();
    // The snapshot is written to the state keys...
    assert_eq!(store.get::<i64>("count").await.unwrap(), Some(12));
    // ...and the checkpoint keeps it, with the position, as saved.
    store.put("count", 99).await.unwrap();
    let other = ctx.another().await;
    let checkpoint = other
        .load_checkpoint::<i64>("orders")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint.name, "orders");
    assert_eq!(checkpoint.position, "1700000000000-3");
    assert_eq!(
        checkpoint.state,
        BTreeMap::from([("count".to_owned(), 12), ("total".to_owned(), 1_234)])
    );

    // A new save replaces the whole record, including keys no longer in the snapshot.
    store
        .save_checkpoint("orders", "1700000000000-9", [("count", 13_i64)])
        .await
        .unwrap();
    let checkpoint = store
        .load_checkpoint::<i64>("orders")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint.position, "1700000000000-9");
    assert_eq!(checkpoint.state.keys().collect::<Vec<_>>(), vec!["count"]);

    // Restoring writes the snapshot back.
    store.put("count", 1_000).await.unwrap();
    let restored = store
        .restore_checkpoint::<i64>("orders")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(restored.position, "1700000000000-9");
    assert_eq!(store.get::<i64>("count").await.unwrap(), Some(13));

    // Checkpoints are not keys, and are independent of each other.
    store
        .save_checkpoint("other", "7", [("x", 1)])
        .await
        .unwrap();
    assert!(
        !store
            .list_keys("")
            .await
            .unwrap()
            .iter()
            .any(|k| k.contains("orders"))
    );
    assert!(store.delete_checkpoint("orders").await.unwrap());
    assert!(!store.delete_checkpoint("orders").await.unwrap());
    assert!(
        store
            .load_checkpoint::<i64>("orders")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .load_checkpoint::<i64>("other")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store
            .save_checkpoint("bad name", "0", [("x", 1)])
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    // An empty snapshot records the position alone.
    store
        .save_checkpoint("pos", "42", Vec::<(String, i64)>::new())
        .await
        .unwrap();
    let pos = store.load_checkpoint::<i64>("pos").await.unwrap().unwrap();
    assert_eq!(pos.position, "42");
    assert!(pos.state.is_empty());
}
