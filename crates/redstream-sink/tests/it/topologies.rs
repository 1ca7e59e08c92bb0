//! The sink on a Redis Cluster and under Sentinel, through core's connection module: the
//! progress key in its stream's slot (one `EVALSHA` per batch on one node), and a killed master
//! followed in the same process, with and without `durability`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::cluster_routing::Slot;
use redstream_core::connection::Topology;
use redstream_core::{BatchSink, RetryPolicy, SourcePosition};
use redstream_sink::{Durability, RedisSink, SinkConfig};
use redstream_testkit::{RedisCluster, RedisSentinel, key_slot};

use crate::{events, ids, stream_ids};

/// `redis-cluster://` with every node of `cluster` as a seed.
fn cluster_url(cluster: &RedisCluster) -> String {
    let seeds: Vec<String> = cluster
        .seed_urls()
        .iter()
        .map(|url| url.trim_start_matches("redis://").to_owned())
        .collect();
    format!("redis-cluster://{}", seeds.join(","))
}

/// The entries' event ids of `stream`, through a cluster connection.
async fn cluster_stream_ids(
    conn: &mut redis::cluster_async::ClusterConnection,
    stream: &str,
) -> Vec<String> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|(_, fields)| {
            let json: serde_json::Value = serde_json::from_str(&fields[0].1).unwrap();
            json["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Two sinks on a 3-master cluster, writing to two streams whose slots are on different
/// masters: each progress key hashes (CRC16, as redis-rs and the test kit compute it) to its stream's slot, each
/// batch is one script on that slot's master, and a fresh sink with the same id reads the
/// progress there and skips a batch already written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_on_different_masters_of_a_cluster() {
    let cluster = RedisCluster::start().await.unwrap();
    let url = cluster_url(&cluster);
    // An untagged stream, and a tagged one whose master differs.
    let first = "orders.events".to_owned();
    let first_master = cluster
        .master_for_key(first.as_bytes())
        .await
        .unwrap()
        .id()
        .to_owned();
    let mut second = None;
    for n in 0..1000 {
        let candidate = format!("{{payments-{n}}}.events");
        let master = cluster.master_for_key(candidate.as_bytes()).await.unwrap();
        if master.id() != first_master {
            second = Some(candidate);
            break;
        }
    }
    let second = second.unwrap();

    let mut conn = cluster.connection().await.unwrap();
    for (id, stream) in [("cluster-a", &first), ("cluster-b", &second)] {
        let config = SinkConfig::new(id, &url, stream.as_str()).with_retry(
            RetryPolicy::default()
                .with_initial_delay(Duration::from_millis(10))
                .with_max_delay(Duration::from_millis(100)),
        );
        assert_eq!(config.topology().unwrap(), Topology::Cluster);
        let sink = RedisSink::new(config.clone()).unwrap();
        let progress_key = sink.progress_key().to_owned();
        // The CRC16 rule twice: redis-rs's (what its cluster client routes by) and the test
        // kit's own.
        assert_eq!(
            Slot::for_key(progress_key.as_bytes()),
            Slot::for_key(stream.as_bytes()),
            "{progress_key} and {stream}"
        );
        assert_eq!(
            key_slot(progress_key.as_bytes()),
            key_slot(stream.as_bytes()),
            "{progress_key} and {stream}"
        );
        let stream_master = cluster.master_for_key(stream.as_bytes()).await.unwrap();
        let key_master = cluster
            .master_for_key(progress_key.as_bytes())
            .await
            .unwrap();
        assert_eq!(stream_master.id(), key_master.id());

        let mut written = Vec::new();
        let mut last = Vec::new();
        for batch in 0..3 {
            let batch_events = events(40);
            let ack = sink
                .send_batch(
                    batch_events.clone(),
                    Some(SourcePosition::new(batch.to_string())),
                )
                .await
                .unwrap();
            assert_eq!(ack.written, 40);
            written.extend(ids(&batch_events));
            last = batch_events;
        }
        let recorded = sink.recorded_progress().await.unwrap().unwrap();
        assert_eq!(recorded.position, Some(SourcePosition::new("2")));

        // A restarted sink finds the last batch recorded and does not write it again.
        let again = RedisSink::new(config).unwrap();
        let ack = again
            .send_batch(last, Some(SourcePosition::new("2")))
            .await
            .unwrap();
        assert_eq!((ack.written, ack.skipped_duplicates), (0, 40));

        assert_eq!(cluster_stream_ids(&mut conn, stream).await, written);
        // The stream and its progress key are on the same node, which holds both.
        let mut node = stream_master.server().connection().await.unwrap();
        let exists: u64 = redis::cmd("EXISTS")
            .arg(stream.as_str())
            .arg(&progress_key)
            .query_async(&mut node)
            .await
            .unwrap();
        assert_eq!(exists, 2, "{stream} and {progress_key} on {stream_master}");
        println!(
            "cluster: sink {id} wrote {} events to {stream} (slot {}) with its progress key \
             {progress_key} on {stream_master}",
            written.len(),
            key_slot(stream.as_bytes())
        );
    }
}

/// Waits until `server`'s process is gone (killed by a task of the test).
async fn until_dead(server: &redstream_testkit::RedisServer) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.is_running() {
        assert!(Instant::now() < deadline, "the master was not killed");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// What a run through a killed master left.
struct FailoverRun {
    acknowledged: usize,
    lost: usize,
    duplicates: usize,
    retries: u64,
    slowest_batch: Duration,
}

/// A sink under Sentinel (a master and 2 replicas) writes `batches` batches of `size` lines;
/// after `kill_after` batches are acknowledged, the master is killed (`SIGKILL`) while the sink
/// goes on. The sink follows the promoted replica in the same process, retrying meanwhile.
/// Then every line the sink acknowledged is looked for in the stream on the new master.
async fn run_through_a_killed_master(
    stream: &str,
    durability: Option<Durability>,
    batches: usize,
    size: usize,
    kill_after: usize,
) -> FailoverRun {
    let group = Arc::new(RedisSentinel::builder().replicas(2).start().await.unwrap());
    let config = SinkConfig::new("sentinel-sink", group.url(), stream)
        .with_durability(durability)
        .with_retry(
            RetryPolicy::unlimited()
                .with_initial_delay(Duration::from_millis(20))
                .with_max_delay(Duration::from_millis(200)),
        )
        .with_response_timeout(Duration::from_secs(2))
        .with_connect_timeout(Duration::from_secs(1));
    assert_eq!(config.topology().unwrap(), Topology::Sentinel);
    let sink = RedisSink::new(config).unwrap();

    let old_master = group.master().await.unwrap();
    let mut acknowledged: Vec<String> = Vec::new();
    let mut killer = None;
    let mut slowest = Duration::ZERO;
    for batch in 0..batches {
        if batch == kill_after + 1 {
            // The kill lands while batch `kill_after` is sent at the latest: the batches from
            // here on are sent to a dead master, or while the sentinels promote a replica.
            until_dead(old_master).await;
        }
        if batch == kill_after {
            let group = Arc::clone(&group);
            killer = Some(tokio::spawn(async move {
                group.kill_master().await.unwrap().port()
            }));
        }
        let batch_events = events(size);
        let started = Instant::now();
        let ack = sink
            .send_batch(
                batch_events.clone(),
                Some(SourcePosition::new(batch.to_string())),
            )
            .await
            .unwrap();
        slowest = slowest.max(started.elapsed());
        assert_eq!(ack.written + ack.skipped_duplicates, size);
        acknowledged.extend(ids(&batch_events));
    }
    let new_port = killer.unwrap().await.unwrap();
    // The kill landed mid-run: the sink's batches failed and were retried meanwhile.
    assert!(
        sink.stats().retries > 0,
        "no batch was retried: the master died after the run"
    );
    let master = group.master().await.unwrap();
    assert_eq!(master.port(), new_port);
    let mut conn = master.connection().await.unwrap();
    let found = stream_ids(&mut conn, stream).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &found {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let in_stream: HashSet<&str> = counts.keys().copied().collect();
    let lost = acknowledged
        .iter()
        .filter(|id| !in_stream.contains(id.as_str()))
        .count();
    let duplicates = counts.values().map(|n| n - 1).sum();
    FailoverRun {
        acknowledged: acknowledged.len(),
        lost,
        duplicates,
        retries: sink.stats().retries,
        slowest_batch: slowest,
    }
}

/// With `durability` (`WAIT` for 1 replica), a master killed mid-run loses nothing the sink
/// acknowledged: the sink follows the promoted replica in the same process, and every
/// acknowledged line is in the stream on the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_durability_a_killed_master_loses_no_acknowledged_line() {
    let run = tokio::time::timeout(
        Duration::from_secs(180),
        run_through_a_killed_master(
            "{durable}.events",
            Some(Durability::new(1, Duration::from_millis(500))),
            60,
            50,
            20,
        ),
    )
    .await
    .unwrap();
    println!(
        "sentinel with durability: {} lines acknowledged, {} lost, {} duplicates in the stream, \
         {} retries, slowest batch {:?} (the failover)",
        run.acknowledged, run.lost, run.duplicates, run.retries, run.slowest_batch
    );
    assert_eq!(run.acknowledged, 3000);
    assert_eq!(run.lost, 0);
}

/// The same without `durability`: a line acknowledged by the old master and not yet on the
/// promoted replica is lost. How many is printed (it may be none on a quiet machine, where
/// replication keeps up); nothing is asserted about it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_durability_a_killed_master_may_lose_acknowledged_lines() {
    let run = tokio::time::timeout(
        Duration::from_secs(180),
        run_through_a_killed_master("{not-durable}.events", None, 60, 50, 20),
    )
    .await
    .unwrap();
    println!(
        "sentinel without durability: {} lines acknowledged, {} lost, {} duplicates in the \
         stream, {} retries, slowest batch {:?} (the failover)",
        run.acknowledged, run.lost, run.duplicates, run.retries, run.slowest_batch
    );
    assert_eq!(run.acknowledged, 3000);
}

/// Sentinels with a password of their own: the sink given `sentinel_password` (and the data
/// nodes' password in the URL) writes; without it, the batch fails at once with `Auth`, a hint
/// naming `sentinel_password`, and neither password in the error or the configuration's
/// `Debug`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_with_a_password_of_their_own() {
    let group = RedisSentinel::builder()
        .replicas(1)
        .password("data-secret")
        .sentinel_password("sentinel-secret")
        .start()
        .await
        .unwrap();
    let url = group
        .url()
        .replacen("redis-sentinel://", "redis-sentinel://:data-secret@", 1);
    let stream = "{guarded}.events";
    let base = SinkConfig::new("sentinel-auth", url, stream).with_retry(RetryPolicy::none());

    let config = base.clone().with_sentinel_password("sentinel-secret");
    let text = format!("{config:?}");
    assert!(
        !text.contains("data-secret") && !text.contains("sentinel-secret"),
        "{text}"
    );
    let sink = RedisSink::new(config).unwrap();
    let batch = events(5);
    let ack = sink
        .send_batch(batch.clone(), Some(SourcePosition::new("1")))
        .await
        .unwrap();
    assert_eq!(ack.written, 5);
    let mut conn = group.master().await.unwrap().connection().await.unwrap();
    assert_eq!(stream_ids(&mut conn, stream).await, ids(&batch));

    let err = RedisSink::new(base)
        .unwrap()
        .send_batch(events(1), None)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert_eq!(err.kind(), redstream_core::ErrorKind::Auth, "{message}");
    assert!(message.contains("sentinel_password"), "{message}");
    assert!(
        !message.contains("data-secret") && !message.contains("sentinel-secret"),
        "{message}"
    );
    println!("without sentinel_password: {message}");
}

/// On a cluster with 2 replicas per master, the master of the sink's stream is killed mid-run:
/// the cluster client follows the promoted replica in the same process, and with `durability`
/// (`WAIT` for 1 replica) every line the sink acknowledged is in the stream afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cluster_master_is_followed_with_nothing_acknowledged_lost() {
    let cluster = Arc::new(
        RedisCluster::builder()
            .replicas_per_master(2)
            .start()
            .await
            .unwrap(),
    );
    let stream = "{cluster-failover}.events";
    let config = SinkConfig::new("cluster-failover", cluster_url(&cluster), stream)
        .with_durability(Some(Durability::new(1, Duration::from_millis(500))))
        .with_retry(
            RetryPolicy::unlimited()
                .with_initial_delay(Duration::from_millis(20))
                .with_max_delay(Duration::from_millis(200)),
        )
        .with_response_timeout(Duration::from_secs(2))
        .with_connect_timeout(Duration::from_secs(1));
    let sink = RedisSink::new(config).unwrap();
    let old_node = cluster.master_for_key(stream.as_bytes()).await.unwrap();
    let old = old_node.port();

    let run = async {
        let mut acknowledged = Vec::new();
        let mut killer = None;
        for batch in 0..40 {
            if batch == 11 {
                until_dead(old_node.server()).await;
            }
            if batch == 10 {
                let cluster = Arc::clone(&cluster);
                killer = Some(tokio::spawn(async move {
                    let master = cluster.master_for_key(stream.as_bytes()).await.unwrap();
                    cluster.kill_master(master).await.unwrap().port()
                }));
            }
            let batch_events = events(50);
            let ack = sink
                .send_batch(
                    batch_events.clone(),
                    Some(SourcePosition::new(batch.to_string())),
                )
                .await
                .unwrap();
            assert_eq!(ack.written + ack.skipped_duplicates, 50);
            acknowledged.extend(ids(&batch_events));
        }
        (acknowledged, killer.unwrap().await.unwrap())
    };
    let (acknowledged, new) = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .unwrap();
    assert_ne!(new, old);
    // The master died before batch 11 was sent (`until_dead`). The cluster client retries
    // a request while the slot's master changes, within its own timeouts, so the sink may
    // see no failure at all: its retries are printed, not asserted.
    let mut conn = cluster.connection().await.unwrap();
    let found = cluster_stream_ids(&mut conn, stream).await;
    let in_stream: HashSet<&str> = found.iter().map(String::as_str).collect();
    let lost = acknowledged
        .iter()
        .filter(|id| !in_stream.contains(id.as_str()))
        .count();
    let duplicates = found.len() - in_stream.len();
    println!(
        "cluster failover with durability: {} lines acknowledged, {lost} lost, {duplicates} \
         duplicates, {} retries; master port {old} killed, port {new} promoted",
        acknowledged.len(),
        sink.stats().retries
    );
    assert_eq!(lost, 0);
}

/// A failover without a failure (`SENTINEL FAILOVER`): the old master is demoted (its clients
/// closed, or its writes refused with `READONLY`) and the sink, in the same process, writes
/// its next batches to the new master; with `durability` nothing it acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_without_failure_is_followed() {
    let group = RedisSentinel::builder().replicas(2).start().await.unwrap();
    let stream = "{switched}.events";
    let config = SinkConfig::new("sentinel-switch", group.url(), stream)
        .with_durability(Some(Durability::new(1, Duration::from_millis(500))))
        .with_retry(
            RetryPolicy::unlimited()
                .with_initial_delay(Duration::from_millis(20))
                .with_max_delay(Duration::from_millis(200)),
        );
    let sink = RedisSink::new(config).unwrap();
    let old = group.master().await.unwrap().port();
    let mut acknowledged = Vec::new();
    for batch in 0..20 {
        if batch == 10 {
            let new = tokio::time::timeout(Duration::from_secs(120), group.failover())
                .await
                .unwrap()
                .unwrap()
                .port();
            assert_ne!(new, old);
        }
        let batch_events = events(50);
        let ack = tokio::time::timeout(
            Duration::from_secs(60),
            sink.send_batch(
                batch_events.clone(),
                Some(SourcePosition::new(batch.to_string())),
            ),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(ack.written, 50);
        acknowledged.extend(ids(&batch_events));
    }
    let master = group.master().await.unwrap();
    assert_ne!(master.port(), old);
    let mut conn = master.connection().await.unwrap();
    let found = stream_ids(&mut conn, stream).await;
    assert_eq!(found, acknowledged);
    println!(
        "sentinel failover without failure: {} lines acknowledged, all on the new master in \
         order, {} retries",
        acknowledged.len(),
        sink.stats().retries
    );
}
