//! `redstream nodes` on one server and on a 3-master cluster, and the `NODE` column `redstream
//! streams` gains on a cluster only.

use std::collections::{BTreeMap, BTreeSet};

use redstream_testkit::{RedisCluster, RedisServer};
use serde_json::Value;

use crate::support::Cli;

/// The lines of a table are at most 80 characters wide.
#[track_caller]
fn fits_80_columns(table: &str) {
    for line in table.lines() {
        assert!(
            line.chars().count() <= 80,
            "{} characters: {line:?}\n{table}",
            line.chars().count()
        );
    }
}

fn u64_of(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} of {value}"))
}

#[tokio::test]
async fn nodes_on_one_server_is_one_row_and_its_totals() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    cli.run(&["publish", "order.created", r#"{"n":1}"#]).ok();
    cli.run(&["publish", "order.created", r#"{"n":2}"#]).ok();
    cli.run(&["publish", "user.signed_up", "{}"]).ok();
    // Another prefix's stream is on the server (a key) but not among the streams counted.
    let other = Cli::with_url(server.url());
    other.run(&["publish", "other", "{}"]).ok();

    let out = cli.json(&["nodes"]);
    assert_eq!(out["topology"], "single", "{out}");
    let nodes = out["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{out}");
    let node = &nodes[0];
    assert_eq!(
        node["address"],
        format!("{}:{}", server.host(), server.port()),
        "{out}"
    );
    assert_eq!(node["role"], "master");
    assert!(
        ["redis", "valkey"].contains(&node["server"].as_str().unwrap()),
        "{out}"
    );
    assert!(node["version"].as_str().unwrap().contains('.'), "{out}");
    assert!(u64_of(node, "used_memory") > 0);
    assert!(
        node["used_memory_human"]
            .as_str()
            .unwrap()
            .ends_with(['K', 'M', 'G'])
    );
    assert_eq!(u64_of(node, "maxmemory"), 0);
    assert!(u64_of(node, "connected_clients") >= 1);
    assert!(node["ops_per_sec"].is_u64(), "{out}");
    assert_eq!(u64_of(node, "keys"), 3);
    assert_eq!(u64_of(node, "stream_count"), 2);
    assert_eq!(u64_of(node, "stream_entries"), 3);
    assert_eq!(
        node["streams"],
        serde_json::json!([cli.stream("order.created"), cli.stream("user.signed_up")])
    );
    let totals = &out["totals"];
    assert_eq!(totals["address"], "total");
    for key in ["used_memory", "keys", "stream_count", "stream_entries"] {
        assert_eq!(totals[key], node[key], "{key}: {out}");
    }

    // --streams counts other streams too, by glob or by name; a name matches only itself.
    let wider = cli.json(&["nodes", "--streams", "*:other"]);
    assert_eq!(u64_of(&wider["totals"], "stream_count"), 3, "{wider}");
    let named = cli.json(&["nodes", "--streams", &other.stream("other")]);
    assert_eq!(u64_of(&named["totals"], "stream_count"), 3, "{named}");
    assert_eq!(u64_of(&named["totals"], "stream_entries"), 4, "{named}");
    let missing = cli.json(&["nodes", "--streams", &other.stream("oth")]);
    assert_eq!(u64_of(&missing["totals"], "stream_count"), 2, "{missing}");

    let table = cli.run(&["nodes"]).ok();
    fits_80_columns(&table);
    let address = format!("{}:{}", server.host(), server.port());
    assert!(table.contains(&address), "{table}");
    assert!(table.contains("master"), "{table}");
    assert!(table.contains("no limit"), "{table}");
    assert!(table.contains("total"), "{table}");
    assert!(table.contains("ENTRIES"), "{table}");
}

/// Three masters: three rows whose sums are the totals, a stream on every master, each stream
/// named with the master that holds it by `streams`.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_on_a_cluster_is_one_row_per_master() {
    let cluster = RedisCluster::builder()
        .masters(3)
        .replicas_per_master(0)
        .start()
        .await
        .unwrap();
    let hosts: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|node| format!("{}:{}", node.server().host(), node.port()))
        .collect();
    let cli = Cli::with_url(format!("redis-cluster://{}", hosts.join(",")));

    // Event types until every master holds one of their streams (`<prefix>:{type}`).
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    let mut covered = BTreeSet::new();
    let mut n = 0;
    while covered.len() < 3 {
        assert!(n < 200, "no types found for every master: {expected:?}");
        let event_type = format!("t{n}");
        let key = format!("{}:{{{event_type}}}", cli.prefix);
        let master = cluster.master_for_key(key.as_bytes()).await.unwrap();
        let address = format!("{}:{}", master.server().host(), master.port());
        if covered.insert(address.clone()) {
            expected.insert(key, address);
            cli.run(&["publish", &event_type, r#"{"n":1}"#]).ok();
            cli.run(&["publish", &event_type, r#"{"n":2}"#]).ok();
        }
        n += 1;
    }

    let out = cli.json(&["nodes"]);
    assert_eq!(out["topology"], "cluster", "{out}");
    let nodes = out["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{out}");
    let addresses: BTreeSet<&str> = nodes
        .iter()
        .map(|n| n["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, covered.iter().map(String::as_str).collect());
    for node in nodes {
        assert_eq!(node["role"], "master", "{node}");
        assert_eq!(u64_of(node, "stream_count"), 1, "{node}");
        assert_eq!(u64_of(node, "stream_entries"), 2, "{node}");
        let stream = node["streams"][0].as_str().unwrap();
        assert_eq!(expected[stream], node["address"].as_str().unwrap());
        assert!(u64_of(node, "used_memory") > 0);
    }
    let totals = &out["totals"];
    for key in [
        "used_memory",
        "connected_clients",
        "keys",
        "stream_count",
        "stream_entries",
        "ops_per_sec",
    ] {
        let sum: u64 = nodes.iter().map(|n| u64_of(n, key)).sum();
        assert_eq!(u64_of(totals, key), sum, "{key}: {out}");
    }
    assert_eq!(u64_of(totals, "stream_count"), 3);
    assert_eq!(u64_of(totals, "stream_entries"), 6);
    assert_eq!(u64_of(totals, "keys"), 3);

    let table = cli.run(&["nodes"]).ok();
    fits_80_columns(&table);
    for address in &covered {
        assert!(table.contains(address.as_str()), "{table}");
    }

    // `streams` names each stream's master, in JSON and in a NODE column.
    let streams = cli.json(&["streams"]);
    let listed = streams["streams"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{streams}");
    for stream in listed {
        let name = stream["name"].as_str().unwrap();
        assert_eq!(stream["node"], expected[name].as_str(), "{streams}");
        assert_eq!(u64_of(stream, "length"), 2);
    }
    let table = cli.run(&["streams"]).ok();
    assert!(table.contains("NODE"), "{table}");
    for (stream, address) in &expected {
        let row = table
            .lines()
            .find(|line| line.contains(stream.as_str()))
            .unwrap_or_else(|| panic!("no row of {stream}: {table}"));
        assert!(row.contains(address.as_str()), "{row}");
    }
}

/// On one server `streams` has no node: no field, no column (its output is as before).
#[tokio::test]
async fn streams_on_one_server_has_no_node() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    cli.run(&["publish", "order.created", "{}"]).ok();
    let out = cli.json(&["streams"]);
    let stream = &out["streams"][0];
    assert_eq!(stream["name"], cli.stream("order.created"), "{out}");
    assert!(stream.get("node").is_none(), "{out}");
    let table = cli.run(&["streams"]).ok();
    assert!(!table.contains("NODE"), "{table}");
}

/// Under Sentinel: one node, the master the sentinels name, with its role and streams.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_under_sentinel_is_the_master() {
    let sentinel = redstream_testkit::RedisSentinel::builder()
        .replicas(1)
        .start()
        .await
        .unwrap();
    let cli = Cli::with_url(sentinel.url());
    cli.run(&["publish", "order.created", "{}"]).ok();
    let out = cli.json(&["nodes"]);
    assert_eq!(out["topology"], "sentinel", "{out}");
    let nodes = out["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{out}");
    assert_eq!(nodes[0]["role"], "master", "{out}");
    assert_eq!(nodes[0]["address"], sentinel.url(), "{out}");
    assert_eq!(u64_of(&nodes[0], "stream_count"), 1);
    assert_eq!(u64_of(&nodes[0], "stream_entries"), 1);
    let streams = cli.json(&["streams"]);
    assert!(streams["streams"][0].get("node").is_none(), "{streams}");
}
