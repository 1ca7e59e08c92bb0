//! `redstream state get|put|del|keys` against the keys redstream-state writes.

use std::time::Duration;

use redstream_state::{KeyLayout, StateBackend, StateConfig, StateStore};
use redstream_testkit::RedisServer;
use serde_json::json;

use crate::support::{Cli, connection, raw, unique};

#[tokio::test]
async fn put_get_del_round_trip_with_the_state_store() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let prefix = unique("app");
    let p = ["--state-prefix", prefix.as_str()];
    let mut conn = connection(&server).await;

    let put = cli.json(&[
        "state",
        "put",
        "counter",
        r#"{"n":3}"#,
        "--ttl",
        "10m",
        p[0],
        p[1],
    ]);
    // The store's default layout: key `counter` under the prefix is `<prefix>:counter`.
    assert_eq!(put["redis_key"], format!("{prefix}:counter").as_str());
    assert_eq!(put["ttl_ms"], 600_000);
    let pttl: i64 = raw(&mut conn, &["PTTL", &format!("{prefix}:counter")]).await;
    assert!(pttl > 0 && pttl <= 600_000, "{pttl}");

    // What the CLI wrote, the store reads, and the other way round.
    let store = StateStore::new(StateBackend::redis(server.url(), prefix.clone()))
        .await
        .unwrap();
    let read: Option<serde_json::Value> = store.get("counter").await.unwrap();
    assert_eq!(read, Some(json!({ "n": 3 })));
    store.put("user:1", "ann").await.unwrap();
    store
        .put_with_ttl("user:2", 2, Duration::from_secs(3600))
        .await
        .unwrap();

    let got = cli.json(&["state", "get", "user:1", p[0], p[1]]);
    assert_eq!(got["value"], "ann");
    assert_eq!(got["ttl_ms"], serde_json::Value::Null);
    let got = cli.json(&["state", "get", "user:2", p[0], p[1]]);
    assert_eq!(got["value"], 2);
    assert!(got["ttl_ms"].as_u64().unwrap() > 0);
    let table = cli.run(&["state", "get", "counter", p[0], p[1]]).ok();
    assert!(table.contains("\"n\": 3"), "{table}");

    let deleted = cli.json(&["state", "del", "user:1", p[0], p[1]]);
    assert_eq!(deleted["existed"], true);
    assert_eq!(store.get::<String>("user:1").await.unwrap(), None);
    let again = cli.run(&["state", "del", "user:1", p[0], p[1]]).ok();
    assert!(again.contains("did not exist"), "{again}");

    cli.run(&["state", "get", "user:1", p[0], p[1]])
        .fails_with("no such key \"user:1\"");
    cli.run(&["state", "put", "k", "{nope", p[0], p[1]])
        .fails_with("not valid JSON");
    cli.run(&["state", "get", "k"]).fails_with("--state-prefix");
    cli.run(&["state", "get", "k", "--state-prefix", "a b"])
        .fails_with("key_prefix");
}

#[tokio::test]
async fn keys_lists_by_pattern_within_a_limit() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let prefix = unique("app");
    let p = ["--state-prefix", prefix.as_str()];
    let store = StateStore::new(StateBackend::redis(server.url(), prefix.clone()))
        .await
        .unwrap();
    for n in 0..30 {
        store.put(&format!("user:{n:02}"), n).await.unwrap();
    }
    store.put("order:1", 1).await.unwrap();
    // Another store's keys and the checkpoint of this one are not listed.
    StateStore::new(StateBackend::redis(server.url(), unique("other")))
        .await
        .unwrap()
        .put("user:99", 1)
        .await
        .unwrap();
    store
        .save_checkpoint("cp", "0-0", [("user:00", 0)])
        .await
        .unwrap();

    // A key under the prefix that is not UTF-8 (no store writes such keys) is skipped, not
    // an error.
    let mut conn = connection(&server).await;
    let _: () = redis::cmd("SET")
        .arg([format!("{prefix}:").as_bytes(), b"\xff\xfe"].concat())
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();

    let all = cli.json(&["state", "keys", p[0], p[1]]);
    assert_eq!(all["keys"].as_array().unwrap().len(), 31);
    assert_eq!(all["truncated"], false);
    let users = cli.json(&["state", "keys", "--pattern", "user:*", p[0], p[1]]);
    let expected: Vec<String> = (0..30).map(|n| format!("user:{n:02}")).collect();
    assert_eq!(users["keys"], json!(expected));
    let limited = cli.json(&["state", "keys", "--limit", "5", p[0], p[1]]);
    assert_eq!(limited["keys"].as_array().unwrap().len(), 5);
    assert_eq!(limited["truncated"], true);

    let table = cli
        .run(&["state", "keys", "--pattern", "order:*", p[0], p[1]])
        .ok();
    assert!(table.contains("order:1"), "{table}");
    assert!(!table.contains("user:"), "{table}");
}

/// `--state-layout cluster` reads and writes the keys of a store configured with
/// `key_layout: cluster` (`{prefix}:k`, the layout earlier versions wrote by default); the two
/// layouts never show each other's keys.
#[tokio::test]
async fn the_cluster_layout_is_chosen_with_state_layout() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let prefix = unique("app");
    let p = ["--state-prefix", prefix.as_str()];
    let cluster = StateStore::with_config(
        StateConfig::new(StateBackend::redis(server.url(), prefix.clone()))
            .with_key_layout(KeyLayout::Cluster),
    )
    .await
    .unwrap();
    cluster.put("counter", 42).await.unwrap();
    let plain = StateStore::new(StateBackend::redis(server.url(), prefix.clone()))
        .await
        .unwrap();
    plain.put("counter", 7).await.unwrap();
    plain.put("plain-only", 1).await.unwrap();

    let c = ["--state-layout", "cluster"];
    let got = cli.json(&["state", "get", "counter", p[0], p[1], c[0], c[1]]);
    assert_eq!(got["value"], 42);
    assert_eq!(got["redis_key"], format!("{{{prefix}}}:counter").as_str());
    let got = cli.json(&["state", "get", "counter", p[0], p[1]]);
    assert_eq!(got["value"], 7);
    let got = cli.json(&[
        "state",
        "get",
        "counter",
        p[0],
        p[1],
        "--state-layout",
        "plain",
    ]);
    assert_eq!(got["redis_key"], format!("{prefix}:counter").as_str());

    let put = cli.json(&["state", "put", "n", "1", p[0], p[1], c[0], c[1]]);
    assert_eq!(put["redis_key"], format!("{{{prefix}}}:n").as_str());
    assert_eq!(cluster.get::<i64>("n").await.unwrap(), Some(1));
    let listed = cli.json(&["state", "keys", p[0], p[1], c[0], c[1]]);
    assert_eq!(listed["keys"], json!(["counter", "n"]));
    let listed = cli.json(&["state", "keys", p[0], p[1]]);
    assert_eq!(listed["keys"], json!(["counter", "plain-only"]));

    let bad = cli.run(&[
        "state",
        "get",
        "counter",
        p[0],
        p[1],
        "--state-layout",
        "hash",
    ]);
    assert_eq!(
        bad.code,
        Some(2),
        "clap refuses an unknown layout: {bad:#?}"
    );
    assert!(
        bad.stderr.contains("plain") && bad.stderr.contains("cluster"),
        "{bad:#?}"
    );
    // The help speaks of what the user sees, not of the project's internal documents.
    let help = cli.run(&["state", "--help"]).ok();
    assert!(help.contains("--state-layout"), "{help}");
    assert!(help.contains("{prefix}:k"), "{help}");
    assert!(!help.to_lowercase().contains("seed"), "{help}");
}

/// On a Redis Cluster (`redis-cluster://` URL), the store's own layout applies unless
/// `--state-layout` says otherwise: `{prefix}:k`, one slot per store.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_cluster_the_store_and_the_transport_choose_the_cluster_layout() {
    let cluster = redstream_testkit::RedisCluster::builder()
        .replicas_per_master(0)
        .start()
        .await
        .unwrap();
    let hosts: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|node| format!("{}:{}", node.server().host(), node.port()))
        .collect();
    let auth = cluster
        .password()
        .map(|p| format!(":{p}@"))
        .unwrap_or_default();
    let cli = Cli::with_url(format!("redis-cluster://{auth}{}", hosts.join(",")));
    let put = cli.json(&["state", "--state-prefix", "app", "put", "k", "1"]);
    assert_eq!(put["redis_key"], "{app}:k");
    let got = cli.json(&["state", "--state-prefix", "app", "get", "k"]);
    assert_eq!(got["value"], 1);
    let plain = cli.json(&[
        "state",
        "--state-prefix",
        "app",
        "--state-layout",
        "plain",
        "put",
        "k",
        "2",
    ]);
    assert_eq!(plain["redis_key"], "app:k");
    let keys = cli.json(&["state", "--state-prefix", "app", "keys"]);
    assert_eq!(keys["keys"], json!(["k"]));

    // The transport's commands too: the stream of a type is tagged, and listed from every
    // master.
    cli.run(&["publish", "order.created", r#"{"n":1}"#]).ok();
    let streams = cli.json(&["streams"]);
    let text = streams.to_string();
    let tagged = format!("{}:{{order.created}}", cli.prefix);
    assert!(text.contains(&tagged), "{text}");
    let refused = cli.run(&["--key-layout", "plain", "streams"]);
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(refused.stderr.contains("key_layout"), "{refused:#?}");
}
