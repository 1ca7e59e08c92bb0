//! The Nodes panel: `/api/nodes`, the snapshot's `nodes` (and each stream's `node` on a
//! cluster), and the per-node gauges of `/metrics`, on one server and on a 3-master cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use redstream_cli::serve::{AppState, ServeConfig, serve};
use redstream_core::{Event, EventMetadata};
use redstream_testkit::RedisCluster;
use redstream_transport::{RedisConfig, RedisTransport};
use serde_json::{Value, json};

use crate::support::{Dashboard, answer, stream};
use crate::websocket::{next_json, until};

fn u64_of(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} of {value}"))
}

/// The value of the Prometheus sample `name{node="<node>"}`.
#[track_caller]
fn sample(text: &str, name: &str, node: &str) -> f64 {
    let head = format!("{name}{{node=\"{node}\"}} ");
    let line = text
        .lines()
        .find(|line| line.starts_with(&head))
        .unwrap_or_else(|| panic!("no {head:?} line in\n{text}"));
    line[head.len()..].trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_server_is_one_node_in_the_api_the_snapshot_and_the_metrics() {
    let d = Dashboard::start(ServeConfig::default()).await;
    d.publish("order.created", json!({ "n": 1 })).await;
    d.publish("order.created", json!({ "n": 2 })).await;
    d.publish("user.signed_up", json!({})).await;
    let address = format!("{}:{}", d.redis.host(), d.redis.port());

    let answer = d.get("/api/nodes").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let json = answer.json();
    assert_eq!(json["topology"], "single", "{json}");
    assert_eq!(json["count"], 1);
    let node = &json["nodes"][0];
    assert_eq!(node["address"], address.as_str());
    assert_eq!(node["role"], "master");
    assert_eq!(u64_of(node, "stream_count"), 2);
    assert_eq!(u64_of(node, "stream_entries"), 3);
    assert_eq!(u64_of(node, "keys"), 2);
    assert!(u64_of(node, "used_memory") > 0);
    assert!(
        node.get("streams").is_none(),
        "no names in the view: {json}"
    );
    assert_eq!(json["totals"]["address"], "total");
    assert_eq!(json["totals"]["stream_entries"], node["stream_entries"]);

    let (mut socket, _) = tokio_tungstenite::connect_async(d.ws_url("/ws"))
        .await
        .unwrap();
    let snapshot = next_json(&mut socket).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    let nodes = &snapshot["nodes"];
    assert_eq!(nodes["topology"], "single", "{snapshot}");
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(nodes["nodes"][0]["address"], address.as_str());
    assert_eq!(u64_of(&nodes["totals"], "stream_count"), 2);
    // One server: streams carry no node, as before.
    let created = stream(&snapshot["streams"], "events:order.created");
    assert!(created.get("node").is_none(), "{created}");

    let text = d.get("/metrics").await.text;
    assert_eq!(
        sample(&text, "redstream_node_streams", &address),
        2.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "redstream_node_stream_entries", &address),
        3.0
    );
    assert_eq!(sample(&text, "redstream_node_keys", &address), 2.0);
    assert!(sample(&text, "redstream_node_used_memory_bytes", &address) > 0.0);
    assert_eq!(
        sample(&text, "redstream_node_maxmemory_bytes", &address),
        0.0
    );
    assert!(sample(&text, "redstream_node_connected_clients", &address) >= 1.0);
    sample(&text, "redstream_node_ops_per_second", &address);
}

/// A dashboard over a 3-master cluster: a node per master whose figures add up to the totals,
/// a stream on every master, each stream naming its master, a gauge per master.
#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_shows_each_master() {
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
    let url = format!("redis-cluster://{}", hosts.join(","));
    let transport = RedisTransport::new(RedisConfig {
        url: url.clone(),
        ..RedisConfig::default()
    })
    .await
    .unwrap();

    // Event types until every master holds one of their streams (`events:{type}`).
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    let mut n = 0;
    while expected.values().collect::<BTreeSet<_>>().len() < 3 {
        assert!(n < 200, "no types found for every master: {expected:?}");
        let event_type = format!("t{n}");
        let key = format!("events:{{{event_type}}}");
        let master = cluster.master_for_key(key.as_bytes()).await.unwrap();
        let address = format!("{}:{}", master.server().host(), master.port());
        if !expected.values().any(|a| *a == address) {
            for i in 0..2 {
                let event = Event::new(&event_type, json!({ "i": i }), EventMetadata::default());
                transport.publish(event).await.unwrap();
            }
            expected.insert(key, address);
        }
        n += 1;
    }

    let config = ServeConfig {
        refresh: Duration::from_millis(200),
        ..ServeConfig::default()
    };
    let state = AppState::new(transport.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = state.clone();
    let server = tokio::spawn(async move {
        serve(listener, served, std::future::pending())
            .await
            .unwrap();
    });
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let request = http.get(format!("{base}{path}"));
        async move { answer(request.send().await.unwrap()).await }
    };

    let answer = get("/api/nodes").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let json = answer.json();
    assert_eq!(json["topology"], "cluster", "{json}");
    let nodes = json["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{json}");
    let addresses: BTreeSet<&str> = nodes
        .iter()
        .map(|n| n["address"].as_str().unwrap())
        .collect();
    let masters: BTreeSet<&str> = expected.values().map(String::as_str).collect();
    assert_eq!(addresses, masters);
    for node in nodes {
        assert_eq!(u64_of(node, "stream_count"), 1, "{node}");
        assert_eq!(u64_of(node, "stream_entries"), 2, "{node}");
    }
    for key in ["used_memory", "connected_clients", "keys", "stream_count"] {
        let sum: u64 = nodes.iter().map(|n| u64_of(n, key)).sum();
        assert_eq!(u64_of(&json["totals"], key), sum, "{key}: {json}");
    }

    // The snapshot: the same nodes, and each stream on its master.
    let ws = format!("ws{}/ws", base.trim_start_matches("http"));
    let (mut socket, _) = tokio_tungstenite::connect_async(ws).await.unwrap();
    let snapshot = until(&mut socket, |m| m["type"] == "snapshot").await;
    assert_eq!(snapshot["nodes"]["topology"], "cluster", "{snapshot}");
    assert_eq!(snapshot["nodes"]["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(u64_of(&snapshot["nodes"]["totals"], "stream_entries"), 6);
    for (name, address) in &expected {
        let listed = stream(&snapshot["streams"], name);
        assert_eq!(listed["node"], address.as_str(), "{listed}");
    }
    // The Redis panel sums the masters on a cluster.
    let redis_memory = u64_of(&snapshot["redis"], "used_memory");
    assert!(redis_memory > 0, "{snapshot}");

    let text = get("/metrics").await.text;
    assert!(text.contains("redstream_redis_up 1"), "{text}");
    for address in &masters {
        assert_eq!(sample(&text, "redstream_node_streams", address), 1.0);
        assert_eq!(sample(&text, "redstream_node_stream_entries", address), 2.0);
        assert!(sample(&text, "redstream_node_used_memory_bytes", address) > 0.0);
        sample(&text, "redstream_node_ops_per_second", address);
    }
    state.shutdown_token().cancel();
    server.abort();
}

/// `INFO`'s key lookups of each node: the hit ratio in `/api/nodes` and `/api/metrics` (`null`
/// before any lookup), and Redis's own counters in `/metrics`.
#[tokio::test(flavor = "multi_thread")]
async fn the_hit_ratio_comes_from_the_nodes_key_lookups() {
    let d = Dashboard::start(ServeConfig::default()).await;
    let address = format!("{}:{}", d.redis.host(), d.redis.port());
    // A fresh server with no stream: nothing the dashboard reads looks a key up.
    let json = d.get("/api/nodes").await.json();
    let node = &json["nodes"][0];
    assert_eq!(node["keyspace_hits"], 0, "{json}");
    assert_eq!(node["keyspace_misses"], 0, "{json}");
    assert_eq!(node["hit_ratio"], Value::Null, "no lookups: {json}");
    assert_eq!(json["totals"]["hit_ratio"], Value::Null, "{json}");

    // Three lookups that find their key, one that does not (writes are not lookups).
    let mut conn = d.conn().await;
    let () = redis::cmd("SET")
        .arg("cache:a")
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    for key in ["cache:a", "cache:a", "cache:a", "cache:missing"] {
        let _: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let json = d.get("/api/nodes").await.json();
    let node = &json["nodes"][0];
    assert_eq!(node["address"], address.as_str());
    assert_eq!(node["keyspace_hits"], 3, "{json}");
    assert_eq!(node["keyspace_misses"], 1, "{json}");
    assert_eq!(node["hit_ratio"], 0.75, "{json}");
    assert_eq!(json["totals"]["keyspace_hits"], 3, "{json}");
    assert_eq!(json["totals"]["hit_ratio"], 0.75, "{json}");
    let metrics = d.get("/api/metrics").await.json();
    assert_eq!(metrics["redis"]["keyspace_hits"], 3, "{metrics}");
    assert_eq!(metrics["redis"]["hit_ratio"], 0.75, "{metrics}");

    // The scrape's own read of the dead-letter stream may miss; it never hits.
    let text = d.get("/metrics").await.text;
    assert!(
        text.contains("# TYPE redstream_node_keyspace_hits_total counter"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "redstream_node_keyspace_hits_total", &address),
        3.0
    );
    assert!(sample(&text, "redstream_node_keyspace_misses_total", &address) >= 1.0);
    let server = |name: &str| {
        let line = text
            .lines()
            .find(|line| line.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        line[name.len()..].trim().parse::<f64>().unwrap()
    };
    assert_eq!(server("redstream_redis_keyspace_hits_total"), 3.0);
    assert!(server("redstream_redis_keyspace_misses_total") >= 1.0);
}
