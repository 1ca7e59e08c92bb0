//! What a state store's ACL user needs, and what happens without it: the exact list
//! docs/state.md gives runs every operation; a user refused `MULTI`, a key it may only read, or
//! scripting, and a server out of memory, get a typed error from the all-or-nothing operations
//! (transactions, `put_many` with a TTL, checkpoints) with nothing of them written.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redstream_state::{ErrorKind, StateBackend, StateConfig, StateStore, Transaction};
use redstream_testkit::RedisServer;

/// docs/state.md's commands for a state user.
const COMMANDS: &str = "+get +mget +exists +pttl +scan +hget +hgetall +set +mset +del +incrby +hset +hincrby +hdel +pexpire +persist +evalsha +script|load +watch +multi +exec +discard +ping";

/// docs/state.md's keys for the prefix `myapp`: the state keys and the checkpoint records.
const KEYS: [&str; 2] = ["~myapp:*", "~myapp#checkpoint:*"];

fn rules<'a>(commands: &'a str, keys: &[&'a str]) -> Vec<&'a str> {
    commands.split(' ').chain(keys.iter().copied()).collect()
}

#[test]
fn the_docs_list_these_commands_and_keys() {
    let docs = include_str!("../../../../docs/state.md");
    let marker = format!("<!-- acl:state -->`{COMMANDS}`");
    assert!(docs.contains(&marker), "docs/state.md should list {marker}");
    for key in KEYS {
        assert!(docs.contains(key), "docs/state.md should give {key}");
    }
}

async fn store_as(server: &RedisServer, user: &str, ttl: Option<Duration>) -> StateStore {
    let mut config = StateConfig::default().with_backend(StateBackend::redis(
        server.url_with_user(user, "pw"),
        "myapp",
    ));
    if let Some(ttl) = ttl {
        config = config.with_default_ttl(ttl);
    }
    StateStore::with_config(config).await.unwrap()
}

/// Every key of the prefix with its value (`TYPE`-independent: `DUMP`), sorted.
async fn snapshot(conn: &mut MultiplexedConnection) -> Vec<(String, Vec<u8>)> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("myapp*")
        .query_async(conn)
        .await
        .unwrap();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(conn)
            .await
            .unwrap();
        out.push((key, dump));
    }
    out
}

/// A user with exactly the documented list runs every operation of the store, with and without
/// a default TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_runs_every_operation() {
    let server = RedisServer::builder()
        .acl_user_rules("state", "pw", &rules(COMMANDS, &KEYS))
        .start()
        .await
        .unwrap();
    for ttl in [None, Some(Duration::from_secs(600))] {
        let store = store_as(&server, "state", ttl).await;
        store.delete("n").await.unwrap();
        store.put("a", 1).await.unwrap();
        store
            .put_with_ttl("b", "x", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(store.get::<i64>("a").await.unwrap(), Some(1));
        assert!(store.exists("b").await.unwrap());
        store.ttl("b").await.unwrap();
        store.put_many([("c", 3), ("d", 4)]).await.unwrap();
        store
            .put_many_with_ttl([("e", 5)], Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            store.get_many::<i64, _>(&["c", "d", "e"]).await.unwrap(),
            vec![Some(3), Some(4), Some(5)]
        );
        assert_eq!(store.incr_by("n", 2).await.unwrap(), 2);
        store.hset("h", "f", 1).await.unwrap();
        assert_eq!(store.hincr_by("h", "f", 1).await.unwrap(), 2);
        assert_eq!(store.hget::<i64>("h", "f").await.unwrap(), Some(2));
        assert_eq!(store.hgetall::<i64>("h").await.unwrap().len(), 1);
        assert!(store.hdel("h", "f").await.unwrap());
        assert_eq!(
            store
                .update("a", |old: Option<i64>| old.unwrap_or(0) + 1)
                .await
                .unwrap(),
            2
        );
        assert!(store.compare_and_set("a", Some(2), 3).await.unwrap());
        store.expire("a", Duration::from_secs(60)).await.unwrap();
        store.persist("a").await.unwrap();
        let mut tx = Transaction::new();
        tx.put("p", 1).delete("c");
        store.transaction(tx).await.unwrap();
        let mut tx = Transaction::new();
        tx.put("q", 1).incr_by("n", 3);
        assert_eq!(store.transaction(tx).await.unwrap(), vec![5]);
        assert!(!store.list_keys("").await.unwrap().is_empty());
        store
            .save_checkpoint("cp", "42-0", [("s", 1)])
            .await
            .unwrap();
        assert_eq!(
            store
                .load_checkpoint::<i64>("cp")
                .await
                .unwrap()
                .unwrap()
                .position,
            "42-0"
        );
        store.delete("s").await.unwrap();
        store
            .restore_checkpoint::<i64>("cp")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.get::<i64>("s").await.unwrap(), Some(1));
        assert!(store.delete_checkpoint("cp").await.unwrap());
    }
}

/// What the issue found for the transport, for the store: a user allowed every write but not
/// `MULTI` gets `PermissionDenied` from a transaction with increments, and nothing of it is
/// written; one allowed only to read a key, or refused scripting, gets the same from every
/// all-or-nothing operation that touches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_permissions_write_nothing_of_an_all_or_nothing_operation() {
    let no_multi = COMMANDS.replace(" +multi", "");
    let no_scripts = COMMANDS.replace(" +evalsha", "");
    let server = RedisServer::builder()
        .acl_user_rules("no-multi", "pw", &rules(&no_multi, &KEYS))
        .acl_user_rules("no-scripts", "pw", &rules(&no_scripts, &KEYS))
        .acl_user_rules(
            "read-only-key",
            "pw",
            &rules(
                COMMANDS,
                &["~myapp:a*", "~myapp#checkpoint:*", "%R~myapp:ro"],
            ),
        )
        .start()
        .await
        .unwrap();
    let mut conn = server.connection().await.unwrap();
    let admin = StateStore::with_config(
        StateConfig::default().with_backend(StateBackend::redis(server.url(), "myapp")),
    )
    .await
    .unwrap();
    admin.put("ro", "kept").await.unwrap();
    admin.put("a1", 1).await.unwrap();
    let before = snapshot(&mut conn).await;

    let store = store_as(&server, "no-multi", None).await;
    let mut tx = Transaction::new();
    tx.put("a2", 2).incr_by("a1", 1);
    let err = store.transaction(tx).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().to_lowercase().contains("multi"), "{err}");
    // A transaction of puts alone needs no MULTI.
    let mut tx = Transaction::new();
    tx.put("a2", 2).delete("a2");
    store.transaction(tx).await.unwrap();
    assert_eq!(snapshot(&mut conn).await, before);

    let store = store_as(&server, "read-only-key", Some(Duration::from_secs(60))).await;
    let mut refused = Vec::new();
    let mut tx = Transaction::new();
    tx.put("a2", 2).put("ro", "changed");
    refused.push((
        "transaction of puts",
        store.transaction(tx).await.unwrap_err(),
    ));
    let mut tx = Transaction::new();
    tx.put("a2", 2).incr_by("a1", 1).put("ro", "changed");
    refused.push((
        "transaction with increments",
        store.transaction(tx).await.unwrap_err(),
    ));
    refused.push((
        "put_many with a TTL",
        store
            .put_many([("a2", "x"), ("ro", "changed")])
            .await
            .unwrap_err(),
    ));
    refused.push((
        "save_checkpoint",
        store
            .save_checkpoint("cp", "1-0", [("a2", "x"), ("ro", "changed")])
            .await
            .unwrap_err(),
    ));
    for (what, err) in refused {
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{what}: {err}");
    }
    assert_eq!(snapshot(&mut conn).await, before);

    let store = store_as(&server, "no-scripts", Some(Duration::from_secs(60))).await;
    let mut tx = Transaction::new();
    tx.put("a2", 2).delete("a1");
    let err = store.transaction(tx).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let err = store.put_many([("a2", 2), ("a3", 3)]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_eq!(snapshot(&mut conn).await, before);
}

/// A server out of memory refuses every all-or-nothing operation as a whole (`OutOfMemory`),
/// and nothing of it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_writes_nothing_of_an_all_or_nothing_operation() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = server.connection().await.unwrap();
    let store = StateStore::with_config(
        StateConfig::default()
            .with_backend(StateBackend::redis(server.url(), "myapp"))
            .with_default_ttl(Duration::from_secs(600)),
    )
    .await
    .unwrap();
    store.put("n", 1).await.unwrap();
    store
        .save_checkpoint("cp", "1-0", [("s", 1)])
        .await
        .unwrap();
    let before = snapshot(&mut conn).await;
    server
        .config_set("maxmemory-policy", "noeviction")
        .await
        .unwrap();
    server.config_set("maxmemory", "1").await.unwrap();

    let mut tx = Transaction::new();
    tx.put("a", 1).delete("n");
    let puts = store.transaction(tx).await.unwrap_err();
    let mut tx = Transaction::new();
    tx.put("a", 1).incr_by("n", 1);
    let increments = store.transaction(tx).await.unwrap_err();
    let many = store.put_many([("a", 1), ("b", 2)]).await.unwrap_err();
    let checkpoint = store
        .save_checkpoint("cp", "2-0", [("a", 1)])
        .await
        .unwrap_err();
    for (what, err) in [
        ("transaction of puts", puts),
        ("transaction with increments", increments),
        ("put_many", many),
        ("save_checkpoint", checkpoint),
    ] {
        assert_eq!(err.kind(), ErrorKind::OutOfMemory, "{what}: {err}");
    }
    server.config_set("maxmemory", "0").await.unwrap();
    assert_eq!(snapshot(&mut conn).await, before);
}

/// `put_many_with_ttl` checks every `SET` before its first write. The user here may read and
/// write every key of the store, so the server's own check of the keys the script declares lets
/// it run, but an ACL selector allows `SET` on `myapp:a*` only: the key refused in the middle
/// of the batch is named in a `PermissionDenied`, and none of the keys is written, not even
/// the one before it. The same user writes the keys it may `SET`, all with their TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_many_with_ttl_refused_set_on_one_key_writes_none_of_them() {
    let no_set = COMMANDS.replace(" +set ", " ");
    assert_ne!(no_set, COMMANDS);
    let mut set_on_a = rules(&no_set, &KEYS);
    set_on_a.push("(+set ~myapp:a*)");
    let server = RedisServer::builder()
        .acl_user_rules("set-on-a", "pw", &set_on_a)
        .start()
        .await
        .unwrap();
    let mut conn = server.connection().await.unwrap();
    let admin = StateStore::with_config(
        StateConfig::default().with_backend(StateBackend::redis(server.url(), "myapp")),
    )
    .await
    .unwrap();
    admin.put("a1", "kept").await.unwrap();
    admin.put("b1", "kept").await.unwrap();
    let before = snapshot(&mut conn).await;

    let store = store_as(&server, "set-on-a", None).await;
    let err = store
        .put_many_with_ttl(
            [("a1", "changed"), ("b1", "changed"), ("a2", "new")],
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let text = err.to_string();
    assert!(text.contains("SET command on myapp:b1"), "{text}");
    assert!(
        text.contains("nothing of the transaction was written"),
        "{text}"
    );
    assert_eq!(snapshot(&mut conn).await, before);

    store
        .put_many_with_ttl([("a1", "changed"), ("a2", "new")], Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        admin
            .get_many::<String, _>(&["a1", "a2", "b1"])
            .await
            .unwrap(),
        vec![
            Some("changed".to_owned()),
            Some("new".to_owned()),
            Some("kept".to_owned())
        ]
    );
    for key in ["a1", "a2"] {
        let left = admin.ttl(key).await.unwrap().remaining().unwrap();
        assert!(left > Duration::from_secs(50), "{key}: {left:?}");
    }
}

/// A transaction of puts and deletes, and a checkpoint, check every command before their first
/// write. The users here may read and write every key of the store, so the server's own check
/// of the keys the script declares lets it run, but ACL selectors allow `SET`, or `DEL`, on
/// `myapp:a*` only, or refuse `HSET`: the command and key refused are named in a
/// `PermissionDenied` (the wording of core's generic transaction), and nothing is written, not
/// even the writes before the refused one, in a call of 3 keys as in one of 5,000. The same
/// users write what they may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_checkpoints_refused_one_command_write_nothing() {
    let no_set = COMMANDS.replace(" +set ", " ");
    let no_del = COMMANDS.replace(" +del ", " ");
    let no_hset = COMMANDS.replace(" +hset ", " ");
    for changed in [&no_set, &no_del, &no_hset] {
        assert_ne!(changed, COMMANDS);
    }
    let mut set_on_a = rules(&no_set, &KEYS);
    set_on_a.push("(+set ~myapp:a*)");
    let mut del_on_a = rules(&no_del, &KEYS);
    del_on_a.push("(+del ~myapp:a*)");
    let server = RedisServer::builder()
        .acl_user_rules("set-on-a", "pw", &set_on_a)
        .acl_user_rules("del-on-a", "pw", &del_on_a)
        .acl_user_rules("no-hset", "pw", &rules(&no_hset, &KEYS))
        .start()
        .await
        .unwrap();
    let mut conn = server.connection().await.unwrap();
    let admin = StateStore::with_config(
        StateConfig::default().with_backend(StateBackend::redis(server.url(), "myapp")),
    )
    .await
    .unwrap();
    admin.put("a1", "kept").await.unwrap();
    admin.put("b1", "kept").await.unwrap();
    admin
        .save_checkpoint("cp", "0-1", [("a1", "kept")])
        .await
        .unwrap();
    let before = snapshot(&mut conn).await;
    let many: Vec<String> = (0..5_000).map(|n| format!("a{n}")).collect();

    let refused = |err: redstream_state::Error, what: &str, command_on: &str| {
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{what}: {err}");
        let text = err.to_string();
        assert!(text.contains(command_on), "{what}: {text}");
        assert!(
            text.contains("nothing of the transaction was written"),
            "{what}: {text}"
        );
    };

    for ttl in [None, Some(Duration::from_secs(60))] {
        let store = store_as(&server, "set-on-a", ttl).await;
        let mut tx = Transaction::new();
        tx.put("a1", "changed")
            .delete("a1")
            .put_with_ttl("b1", "changed", Duration::from_secs(5))
            .put("a2", "new");
        let err = store.transaction(tx).await.unwrap_err();
        refused(err, "transaction", "SET command on myapp:b1");
        let err = store
            .save_checkpoint("cp", "0-2", [("a1", "changed"), ("b1", "changed")])
            .await
            .unwrap_err();
        refused(err, "save_checkpoint", "SET command on myapp:b1");
        let mut tx = Transaction::new();
        for key in &many {
            tx.put(key, "new");
        }
        tx.put("b1", "changed");
        let err = store.transaction(tx).await.unwrap_err();
        refused(err, "transaction of 5,001", "SET command on myapp:b1");
        let snapshot_of_many = many.iter().map(|k| (k.as_str(), "new"));
        let err = store
            .save_checkpoint("cp", "0-2", snapshot_of_many.chain([("b1", "changed")]))
            .await
            .unwrap_err();
        refused(err, "checkpoint of 5,001", "SET command on myapp:b1");
        assert_eq!(snapshot(&mut conn).await, before);
    }

    let store = store_as(&server, "del-on-a", None).await;
    let mut tx = Transaction::new();
    tx.put("a2", "new").delete("a1").delete("b1");
    let err = store.transaction(tx).await.unwrap_err();
    refused(err, "transaction", "DEL command on myapp:b1");
    // A checkpoint deletes its record before it writes it again.
    let err = store
        .save_checkpoint("cp", "0-2", [("a1", "changed")])
        .await
        .unwrap_err();
    refused(err, "save_checkpoint", "DEL command on myapp#checkpoint:cp");
    assert_eq!(snapshot(&mut conn).await, before);

    let store = store_as(&server, "no-hset", None).await;
    let snapshot_of_many = many.iter().map(|k| (k.as_str(), "new"));
    let err = store
        .save_checkpoint("cp", "0-2", snapshot_of_many)
        .await
        .unwrap_err();
    refused(
        err,
        "save_checkpoint",
        "HSET command on myapp#checkpoint:cp",
    );
    assert_eq!(snapshot(&mut conn).await, before);

    // What they may do, they do.
    let store = store_as(&server, "set-on-a", Some(Duration::from_secs(60))).await;
    let mut tx = Transaction::new();
    tx.put("a1", "changed").put("a2", "new").delete("b1");
    store.transaction(tx).await.unwrap();
    assert_eq!(
        admin
            .get_many::<String, _>(&["a1", "a2", "b1"])
            .await
            .unwrap(),
        vec![Some("changed".to_owned()), Some("new".to_owned()), None]
    );
    let left = admin.ttl("a2").await.unwrap().remaining().unwrap();
    assert!(left > Duration::from_secs(50), "{left:?}");
    store
        .save_checkpoint("cp", "0-3", [("a3", "saved")])
        .await
        .unwrap();
    let checkpoint = admin
        .load_checkpoint::<String>("cp")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint.position, "0-3");
    assert_eq!(
        admin.get::<String>("a3").await.unwrap().as_deref(),
        Some("saved")
    );
}

/// With a TTL, `incr`, `hset` and `hincr_by` write and then set the TTL in one script. A user
/// without `PEXPIRE` is refused before the write: nothing changes (a counter incremented
/// without its TTL would count twice when the caller retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_ttl_is_refused_writes_nothing() {
    let no_pexpire = COMMANDS.replace(" +pexpire ", " ");
    assert_ne!(no_pexpire, COMMANDS);
    let server = RedisServer::builder()
        .acl_user_rules("no-pexpire", "pw", &rules(&no_pexpire, &KEYS))
        .start()
        .await
        .unwrap();
    let mut conn = server.connection().await.unwrap();
    let store = store_as(&server, "no-pexpire", Some(Duration::from_secs(60))).await;
    let before = snapshot(&mut conn).await;
    let refusals = [
        store.incr("counter").await.map(drop).unwrap_err(),
        store.hset("hash", "field", 1).await.map(drop).unwrap_err(),
        store
            .hincr_by("tally", "field", 2)
            .await
            .map(drop)
            .unwrap_err(),
    ];
    for err in refusals {
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        assert!(err.to_string().contains("PEXPIRE"), "{err}");
    }
    assert_eq!(snapshot(&mut conn).await, before);
    assert!(before.is_empty());
}
