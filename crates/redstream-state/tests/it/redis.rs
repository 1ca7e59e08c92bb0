//! What only the Redis backend has: the key layouts and the stored encoding as other clients
//! see them, prefixes that never list each other's keys, TTLs across a restart, `rediss://`.

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use redstream_state::{
    CircuitBreakerConfig, KeyLayout, StateBackend, StateConfig, StateStore, TlsOptions,
    Transaction, Ttl, Value,
};
use redstream_testkit::RedisServer;

use crate::support::{capture_logs, raw_get, redis_store, unique, until, within};

/// What an operator's `redis-cli` prints for `args` against `server`.
fn redis_cli(server: &RedisServer, args: &[&str]) -> String {
    let port = server.port().to_string();
    let output = std::process::Command::new("redis-cli")
        .args(["-h", server.host(), "-p", port.as_str()])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Seed 001: with default settings, key `counter` under prefix `myapp` is the Redis key
/// `myapp:counter`, and the command an operator types finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_keys_are_what_redis_cli_finds() {
    let server = RedisServer::start().await.unwrap();
    let store = redis_store(&server, "myapp", StateConfig::default()).await;
    store.put("counter", Value::Integer(42)).await.unwrap();
    store.incr("visits").await.unwrap();
    store
        .save_checkpoint("cp", "5-0", [("counter", 42)])
        .await
        .unwrap();
    assert_eq!(store.redis_key("counter").unwrap(), "myapp:counter");

    assert_eq!(redis_cli(&server, &["GET", "myapp:counter"]), "42\n");
    assert_eq!(redis_cli(&server, &["GET", "myapp:visits"]), "1\n");
    assert_eq!(
        redis_cli(&server, &["HGET", "myapp#checkpoint:cp", "position"]),
        "5-0\n"
    );
    let mut listed: Vec<String> = redis_cli(&server, &["--scan", "--pattern", "myapp:*"])
        .lines()
        .map(str::to_owned)
        .collect();
    listed.sort();
    assert_eq!(listed, ["myapp:counter", "myapp:visits"]);
    // And what an operator sets, the store reads.
    assert_eq!(redis_cli(&server, &["SET", "myapp:limit", "7"]), "OK\n");
    assert_eq!(store.get::<i64>("limit").await.unwrap(), Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_layout_tags_the_prefix_and_reads_the_old_default_layout() {
    let server = RedisServer::start().await.unwrap();
    let plain = redis_store(&server, "myapp", StateConfig::default()).await;
    plain.put("counter", Value::Integer(7)).await.unwrap();
    let cluster = redis_store(
        &server,
        "myapp",
        StateConfig::default().with_key_layout(KeyLayout::Cluster),
    )
    .await;
    cluster.put("counter", Value::Integer(42)).await.unwrap();
    assert_eq!(
        raw_get(&server, "{myapp}:counter").await.as_deref(),
        Some("42")
    );
    assert_eq!(cluster.redis_key("counter").unwrap(), "{myapp}:counter");
    assert_eq!(
        raw_get(&server, "myapp:counter").await.as_deref(),
        Some("7")
    );
    // The two layouts never see each other's keys.
    assert_eq!(plain.get::<i64>("counter").await.unwrap(), Some(7));
    assert_eq!(cluster.list_keys("").await.unwrap(), vec!["counter"]);
    assert_eq!(plain.list_keys("").await.unwrap(), vec!["counter"]);

    // Checkpoints live beside the keys, in the store's slot.
    cluster
        .save_checkpoint("cp", "5-0", [("counter", 42)])
        .await
        .unwrap();
    let mut conn = server.connection().await.unwrap();
    let position: Option<String> = redis::cmd("HGET")
        .arg("{myapp}#checkpoint:cp")
        .arg("position")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(position.as_deref(), Some("5-0"));

    // A config file written for an earlier version, whose default wrote `{myapp}:counter`,
    // names that layout `hash_tag`; it reads the same keys.
    let old: StateConfig = serde_json::from_str(&format!(
        r#"{{"backend": {{"type": "redis", "url": "{}", "key_prefix": "myapp"}},
            "key_layout": "hash_tag"}}"#,
        server.url()
    ))
    .unwrap();
    let old = StateStore::with_config(old).await.unwrap();
    assert_eq!(old.get::<i64>("counter").await.unwrap(), Some(42));
    assert!(old.load_checkpoint::<i64>("cp").await.unwrap().is_some());
}

/// The cluster layout keeps every key of a store, checkpoints included, in one Redis Cluster
/// slot (so its transactions, batches and checkpoints work on a cluster), and different stores
/// in different slots; the plain layout spreads a store's keys. `CLUSTER KEYSLOT` of a node
/// started with `cluster-enabled yes` is the oracle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_layout_keeps_a_store_in_one_slot() {
    let server = RedisServer::start().await.unwrap();
    let oracle = RedisServer::builder()
        .config("cluster-enabled", "yes")
        .start()
        .await
        .unwrap();
    let mut oracle = oracle.connection().await.unwrap();
    let mut conn = server.connection().await.unwrap();

    let mut slots_of_stores = BTreeSet::new();
    for (prefix, layout) in [
        ("myapp", KeyLayout::Cluster),
        ("billing", KeyLayout::Cluster),
        ("myapp-plain", KeyLayout::Plain),
    ] {
        let store = redis_store(
            &server,
            prefix,
            StateConfig::default().with_key_layout(layout),
        )
        .await;
        store.put("counter", 1).await.unwrap();
        store
            .put_many([("user:1", "ann"), ("user:2", "bob"), ("order:17", "x")])
            .await
            .unwrap();
        store.hset("profile", "name", "ann").await.unwrap();
        let mut tx = Transaction::new();
        tx.incr_by("total", 3);
        store.transaction(tx).await.unwrap();
        store
            .save_checkpoint("cp", "1-0", [("counter", 1)])
            .await
            .unwrap();

        // Everything the store wrote, as the server holds it.
        let head = match layout {
            KeyLayout::Cluster => format!("{{{prefix}}}"),
            _ => prefix.to_owned(),
        };
        let written = redstream_core::keys::scan(
            &mut conn,
            &format!("{}*", redstream_core::keys::escape_glob(&head)),
            None,
            "test",
        )
        .await
        .unwrap();
        assert_eq!(written.len(), 7, "{written:?}");
        assert!(
            written.contains(&format!("{head}#checkpoint:cp")),
            "{written:?}"
        );
        let mut slots = BTreeSet::new();
        for key in &written {
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query_async(&mut oracle)
                .await
                .unwrap();
            assert_eq!(
                redis::cluster_routing::Slot::new(slot),
                Some(redstream_core::keys::slot(key.as_bytes())),
                "{key}"
            );
            slots.insert(slot);
        }
        match layout {
            KeyLayout::Cluster => {
                assert_eq!(slots.len(), 1, "{prefix}: {written:?} in slots {slots:?}");
                assert!(
                    written
                        .iter()
                        .all(|key| redstream_core::keys::same_slot(key, &written[0]))
                );
                slots_of_stores.extend(slots);
            }
            _ => assert!(slots.len() > 1, "{prefix}: {written:?} in {slots:?}"),
        }
    }
    assert_eq!(slots_of_stores.len(), 2, "{slots_of_stores:?}");
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Session {
    user: String,
    roles: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_plain_json_for_other_clients() {
    let server = RedisServer::start().await.unwrap();
    let store = redis_store(&server, "json", StateConfig::default()).await;
    let session = Session {
        user: "ada".into(),
        roles: vec!["admin".into()],
    };
    store.put("s", &session).await.unwrap();
    assert_eq!(
        raw_get(&server, "json:s").await.as_deref(),
        Some(r#"{"user":"ada","roles":["admin"]}"#)
    );
    store.hset("h", "f", "v").await.unwrap();
    let mut conn = server.connection().await.unwrap();
    let field: String = redis::cmd("HGET")
        .arg("json:h")
        .arg("f")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(field, "\"v\"");

    // What another client writes, the store reads.
    let () = redis::cmd("SET")
        .arg("json:other")
        .arg(r#"{"user":"bob","roles":[]}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        store.get::<Session>("other").await.unwrap(),
        Some(Session {
            user: "bob".into(),
            roles: vec![]
        })
    );
    let () = redis::cmd("INCRBY")
        .arg("json:n")
        .arg(5)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        store.get::<Value>("n").await.unwrap(),
        Some(Value::Integer(5))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_survive_a_restart_with_aof() {
    let server = RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .unwrap();
    let config = StateConfig::default().with_circuit_breaker(
        CircuitBreakerConfig::default().with_open_duration(Duration::from_millis(100)),
    );
    let store = redis_store(&server, "aof", config).await;
    store
        .put_with_ttl("session", "token", Duration::from_secs(3600))
        .await
        .unwrap();
    store.put("forever", 1).await.unwrap();

    server.kill().unwrap();
    server.restart().await.unwrap();
    until("the store to reach the restarted server", || async {
        store.exists("forever").await.is_ok()
    })
    .await;
    assert_eq!(
        store.get::<String>("session").await.unwrap().as_deref(),
        Some("token")
    );
    let left = store.ttl("session").await.unwrap().remaining().unwrap();
    assert!(
        left > Duration::from_secs(3500) && left <= Duration::from_secs(3600),
        "{left:?}"
    );
    assert_eq!(store.ttl("forever").await.unwrap(), Ttl::Persistent);
}

/// `put_many_with_ttl` runs a script of the store's own: a server that lost it (`SCRIPT FLUSH`,
/// as after a restart or a failover) answers `NOSCRIPT`, and the store loads it and sends the
/// batch again, so the call succeeds whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_many_with_ttl_loads_its_script_again_when_the_server_lost_it() {
    let server = RedisServer::start().await.unwrap();
    let store = redis_store(&server, "flushed", StateConfig::default()).await;
    store
        .put_many_with_ttl([("a", 1), ("b", 2)], Duration::from_secs(60))
        .await
        .unwrap();
    server.flush_scripts().await.unwrap();
    store
        .put_many_with_ttl([("a", 3), ("b", 4)], Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.get_many::<i64, _>(&["a", "b"]).await.unwrap(),
        vec![Some(3), Some(4)]
    );
    assert!(store.ttl("b").await.unwrap().remaining().is_some());
}

/// A store's listing returns exactly its own keys, whatever the other prefixes on the server:
/// prefixes that start with each other (`app`, `app2`, `app:v2`), glob characters in prefixes
/// and keys, and a key prefix to filter on. Checked against a real server's `SCAN`.
#[test]
fn a_prefix_never_lists_another_prefixs_keys() {
    capture_logs();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(RedisServer::start()).unwrap();
    let url = server.url();

    let name = "[a-b:*?\\[\\]\\\\]{1,4}";
    let prefix = prop_oneof![
        Just("app".to_owned()),
        Just("app2".to_owned()),
        Just("app:v2".to_owned()),
        Just("ap*".to_owned()),
        Just("a?p".to_owned()),
        Just("[app]".to_owned()),
        Just("app\\".to_owned()),
        name.prop_map(String::from),
    ];
    let prefixes = proptest::collection::btree_set(prefix, 2..5);
    let keys = proptest::collection::btree_set(name.prop_map(String::from), 1..6);
    let layout = prop_oneof![Just(KeyLayout::Cluster), Just(KeyLayout::Plain)];
    let filter = prop_oneof![Just(String::new()), name.prop_map(String::from)];
    let strategy = (prefixes, keys, layout, filter);

    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(prefixes, keys, layout, filter)| {
            // Plain keys of prefixes such as `a` and `a:b` are the same Redis keys by design
            // (see the state crate's keys module); the property holds for the cluster layout's
            // hash-tagged keys always, and for
            // plain keys of prefixes that do not extend each other with a `:`.
            if layout == KeyLayout::Plain
                && prefixes.iter().any(|p| {
                    prefixes
                        .iter()
                        .any(|q| p != q && q.starts_with(&format!("{p}:")))
                })
            {
                return Ok(());
            }
            runtime.block_on(async {
                let mut conn = redis::Client::open(url.as_str())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap();
                let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
                let mut stores = Vec::new();
                for prefix in &prefixes {
                    let config = StateConfig::new(StateBackend::redis(url.as_str(), prefix))
                        .with_key_layout(layout);
                    let store = StateStore::with_config(config).await.unwrap();
                    for key in &keys {
                        store.put(key, prefix).await.unwrap();
                    }
                    store.save_checkpoint("cp", "0", [("x", 1)]).await.unwrap();
                    stores.push(store);
                }
                for (prefix, store) in prefixes.iter().zip(&stores) {
                    let mut expected: BTreeSet<String> = keys
                        .iter()
                        .filter(|k| k.starts_with(filter.as_str()))
                        .cloned()
                        .collect();
                    if "x".starts_with(filter.as_str()) {
                        expected.insert("x".to_owned());
                    }
                    let listed = store.list_keys(&filter).await.unwrap();
                    let listed_set: BTreeSet<String> = listed.iter().cloned().collect();
                    assert_eq!(listed_set, expected, "prefix {prefix:?} filter {filter:?}");
                    assert_eq!(listed.len(), listed_set.len(), "no duplicates");
                    for key in &keys {
                        assert_eq!(
                            store.get::<String>(key).await.unwrap().as_ref(),
                            Some(prefix),
                            "prefix {prefix:?} key {key:?}"
                        );
                    }
                }
            });
            Ok(())
        })
        .unwrap();
}

/// `list_keys_matching` reads a glob as Redis's `MATCH` does, on both backends: the memory
/// backend's matcher against a real server's `SCAN`, over keys and globs made of the characters
/// that globs treat specially.
#[test]
fn glob_listing_agrees_with_redis() {
    capture_logs();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(RedisServer::start()).unwrap();
    let url = server.url();
    let keys = proptest::collection::btree_set("[ab:*?\\[\\]\\\\^-]{1,3}", 1..12);
    // Globs made of tokens, so that sets, negated sets, ranges and escapes all come up.
    let token = prop_oneof![
        Just("*".to_owned()),
        Just("?".to_owned()),
        "[ab:^-]".prop_map(String::from),
        "\\\\[ab*?\\[\\]\\\\]".prop_map(String::from),
        "\\[\\^?([ab:*?]|[ab]-[ab]|\\\\[\\]\\\\-]){0,3}\\]?".prop_map(String::from),
    ];
    let glob = proptest::collection::vec(token, 0..4).prop_map(|tokens| tokens.concat());
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(keys, glob), |(keys, glob)| {
            runtime.block_on(async {
                let prefix = unique("glob*[x]");
                let redis = StateStore::new(StateBackend::redis(url.as_str(), &prefix))
                    .await
                    .unwrap();
                let memory = StateStore::new(StateBackend::Memory).await.unwrap();
                for key in &keys {
                    redis.put(key, 1).await.unwrap();
                    memory.put(key, 1).await.unwrap();
                }
                let from_redis = redis.list_keys_matching(&glob).await.unwrap();
                let from_memory = memory.list_keys_matching(&glob).await.unwrap();
                assert_eq!(from_memory, from_redis, "glob {glob:?} over {keys:?}");
            });
            Ok(())
        })
        .unwrap();
    // The walk found something at all: `*` lists every key of the store, `?` the short ones.
    runtime.block_on(async {
        let store = StateStore::new(StateBackend::redis(url.as_str(), unique("all")))
            .await
            .unwrap();
        for key in ["a", "bb", "user:1"] {
            store.put(key, 1).await.unwrap();
        }
        assert_eq!(
            store.list_keys_matching("*").await.unwrap(),
            ["a", "bb", "user:1"]
        );
        assert_eq!(store.list_keys_matching("?").await.unwrap(), ["a"]);
        assert_eq!(
            store.list_keys_matching("user:*").await.unwrap(),
            ["user:1"]
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    capture_logs();
    let server = RedisServer::builder().tls(true).start().await.unwrap();
    assert!(server.url().starts_with("rediss://"));
    let prefix = unique("tls");
    let trusted = StateConfig::new(StateBackend::redis(server.url(), &prefix))
        .with_tls(TlsOptions::default().with_ca_cert_pem(server.ca_cert_pem().unwrap()));
    let store = StateStore::with_config(trusted).await.unwrap();
    store.put("secret", "over tls").await.unwrap();
    assert_eq!(
        store.get::<String>("secret").await.unwrap().as_deref(),
        Some("over tls")
    );
    let by_path = StateConfig::new(StateBackend::redis(server.url(), &prefix))
        .with_tls(TlsOptions::default().with_ca_cert_path(server.ca_cert_path().unwrap()));
    let second = StateStore::with_config(by_path).await.unwrap();
    assert_eq!(second.incr("n").await.unwrap(), 1);

    // Without the CA the server's certificate is not trusted: a clear, permanent error.
    let untrusted = StateConfig::new(StateBackend::redis(server.url(), &prefix))
        .with_connect_timeout(Duration::from_secs(5));
    let err = within(
        "a refused TLS connection",
        StateStore::with_config(untrusted),
    )
    .await
    .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

/// `update` reads, computes, then compares and sets: a write by another client in between
/// makes it run the closure again on the new value; a key that never stops changing makes it
/// give up with a retryable error, leaving the other writer's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_retries_when_another_writer_gets_in_between() {
    let server = RedisServer::start().await.unwrap();
    let store = redis_store(&server, "race", StateConfig::default()).await;
    let redis_key = store.redis_key("n").unwrap();
    store.put("n", 1).await.unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    // Another client's write, made (synchronously, from a thread without a runtime) while the
    // closure runs: between update's read and its compare-and-set.
    let interfere = |value: i64| {
        let client = client.clone();
        let redis_key = redis_key.clone();
        std::thread::spawn(move || {
            let mut conn = client.get_connection().unwrap();
            redis::cmd("SET")
                .arg(redis_key)
                .arg(value)
                .exec(&mut conn)
                .unwrap();
        })
        .join()
        .unwrap();
    };

    let mut seen = Vec::new();
    let new = store
        .update("n", |n: Option<i64>| {
            let n = n.unwrap();
            seen.push(n);
            if seen.len() == 1 {
                interfere(100);
            }
            n + 1
        })
        .await
        .unwrap();
    assert_eq!(
        seen,
        vec![1, 100],
        "the closure ran again on the other writer's value"
    );
    assert_eq!(new, 101);
    assert_eq!(store.get::<i64>("n").await.unwrap(), Some(101));

    let stubborn = redis_store(
        &server,
        "race",
        StateConfig::default().with_update_max_attempts(3),
    )
    .await;
    let mut calls = 0;
    let err = stubborn
        .update("n", |n: Option<i64>| {
            calls += 1;
            interfere(1_000 + calls);
            n.unwrap_or(0) + 1
        })
        .await
        .unwrap_err();
    assert_eq!(calls, 3);
    assert_eq!(err.kind(), redstream_state::ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    assert!(
        err.to_string().contains("gave up after 3 attempts"),
        "{err}"
    );
    assert_eq!(stubborn.get::<i64>("n").await.unwrap(), Some(1_003));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_racing_a_save_never_writes_the_older_checkpoint_last() {
    let server = RedisServer::start().await.unwrap();
    let saver = redis_store(&server, "ckpt-race", StateConfig::default()).await;
    let restorer = redis_store(&server, "ckpt-race", StateConfig::default()).await;
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let snapshot = |round: i64| keys.iter().map(move |k| (k.clone(), round));
    saver
        .save_checkpoint("race", "0", snapshot(0))
        .await
        .unwrap();
    for round in 1..=150_i64 {
        // A restore and a newer save at once. Whatever the order, the state keys end equal
        // to the record's snapshot: a restore that read the older record must not write it
        // after the newer save.
        let position = round.to_string();
        let (saved, restored) = tokio::join!(
            saver.save_checkpoint("race", &position, snapshot(round)),
            restorer.restore_checkpoint::<i64>("race"),
        );
        saved.unwrap();
        let restored = restored.unwrap().unwrap();
        assert!(
            restored
                .state
                .values()
                .all(|&v| v == round || v == round - 1)
        );
        let record = saver.load_checkpoint::<i64>("race").await.unwrap().unwrap();
        assert_eq!(record.position, round.to_string());
        for key in &keys {
            assert_eq!(
                saver.get::<i64>(key).await.unwrap(),
                Some(round),
                "round {round}: {key} holds an older checkpoint's value than the record"
            );
        }
    }
}
