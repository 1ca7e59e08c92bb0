//! A cluster master stopped (`SIGSTOP`) while a subscription reads streams on it and on healthy
//! masters: acknowledgements, claims and keep-alives run per slot group, so the stopped master
//! holds back only the entries of its own slots.

use std::sync::Arc;
use std::time::Duration;

use redstream_core::HandlerResult;
use redstream_testkit::{ClusterNode, RedisCluster};
use redstream_transport::{RedisConfig, RedisTransport, StartFrom, TransportOptions};

use crate::on_cluster::{TYPES, cluster_url};
use crate::support::{
    capture_logs, event, fast, logged, none_pending, pending_on, unique, until, within,
};

/// A cluster of three masters without replicas (its node timeout long enough that none is
/// marked failed while a test keeps it stopped, the others serving their slots meanwhile), a
/// transport on it, and two event types whose streams are on different masters.
struct TwoMasters {
    cluster: RedisCluster,
    transport: RedisTransport,
    /// The type whose master the test stops, and its stream.
    stopped_type: &'static str,
    stopped_stream: String,
    healthy_type: &'static str,
    healthy_stream: String,
}

impl TwoMasters {
    /// `config` gets the cluster's URL, a prefix of its own and the group `g`.
    async fn start(prefix: &str, config: RedisConfig, options: TransportOptions) -> Self {
        let cluster = RedisCluster::builder()
            .masters(3)
            .replicas_per_master(0)
            .node_timeout(Duration::from_secs(120))
            .config("cluster-require-full-coverage", "no")
            .start()
            .await
            .unwrap();
        capture_logs();
        let transport = RedisTransport::with_options(
            config
                .with_url(cluster_url(&cluster))
                .with_stream_prefix(unique(prefix))
                .with_consumer_group("g"),
            options,
        )
        .await
        .unwrap();
        let names = transport.names().clone();
        let mut on_master = std::collections::HashMap::new();
        for t in TYPES {
            let master = cluster
                .master_for_key(names.stream(t).as_bytes())
                .await
                .unwrap();
            on_master.entry(master.id().to_owned()).or_insert(t);
        }
        let mut types = on_master.into_values();
        let (stopped_type, healthy_type) = (types.next().unwrap(), types.next().unwrap());
        Self {
            stopped_stream: names.stream(stopped_type),
            healthy_stream: names.stream(healthy_type),
            cluster,
            transport,
            stopped_type,
            healthy_type,
        }
    }

    /// The master of the stopped type's stream.
    async fn stopped(&self) -> &ClusterNode {
        self.cluster
            .master_for_key(self.stopped_stream.as_bytes())
            .await
            .unwrap()
    }
}

/// Acknowledgements go in one pipeline per slot: with one master stopped (`SIGSTOP`), an entry
/// of its stream waits for its `XACK`, and the entries of a stream on a healthy master are
/// acknowledged meanwhile and reading them goes on. (Sent as one pipeline over both slots, the
/// batch failed as a whole on the stopped master's timeout, again and again: the healthy
/// entries' `XACK`s ran, but they stayed counted as unacknowledged, and reading paused at the
/// backpressure limit.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_master_holds_back_only_its_own_acknowledgements() {
    const HEALTHY_EVENTS: usize = 40;
    let setup = TwoMasters::start(
        "events",
        RedisConfig::default().with_backpressure(
            redstream_core::BackpressureConfig::default().with_max_queue_size(10),
        ),
        fast()
            .with_start_from(StartFrom::Beginning)
            .with_read_count(5)
            .with_ack_batch_size(2)
            .with_response_timeout(Duration::from_millis(500)),
    )
    .await;
    let TwoMasters {
        cluster,
        transport,
        stopped_type,
        stopped_stream,
        healthy_type,
        healthy_stream,
    } = &setup;
    let (stopped_type, healthy_type) = (*stopped_type, *healthy_type);
    let stopped = setup.stopped().await;

    // The handler of the stopped master's event waits for the test's word.
    let release = Arc::new(tokio::sync::Notify::new());
    let healthy_handled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let handle = {
        let (release, healthy_handled) = (Arc::clone(&release), Arc::clone(&healthy_handled));
        transport
            .subscribe(
                vec![stopped_type.to_owned(), healthy_type.to_owned()],
                move |event: redstream_core::Event| {
                    let (release, healthy_handled) =
                        (Arc::clone(&release), Arc::clone(&healthy_handled));
                    let started_tx = started_tx.clone();
                    async move {
                        if event.event_type() == stopped_type {
                            let _ = started_tx.send(());
                            release.notified().await;
                        } else {
                            healthy_handled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        HandlerResult::Ok(())
                    }
                },
            )
            .await
            .unwrap()
    };
    transport.publish(event(stopped_type, 0)).await.unwrap();
    within("the stopped master's event handled", started.recv()).await;

    // Its master stops; then the handler finishes: its XACK cannot be sent.
    let conn = cluster.connection().await.unwrap();
    stopped.server().pause().unwrap();
    release.notify_one();
    for n in 1..=HEALTHY_EVENTS {
        transport.publish(event(healthy_type, n)).await.unwrap();
    }
    until(
        "every event of the healthy master handled and acknowledged",
        || {
            let (mut conn, stream) = (conn.clone(), healthy_stream.clone());
            let handled = healthy_handled.load(std::sync::atomic::Ordering::SeqCst);
            async move {
                handled == HEALTHY_EVENTS && pending_on(&mut conn, &stream, "g").await == 0
            }
        },
    )
    .await;

    stopped.server().resume().unwrap();
    until(
        "the stopped master's entry acknowledged once it is back",
        || none_pending(&conn, std::slice::from_ref(stopped_stream), "g"),
    )
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
}

/// Claims run one loop of passes per slot group: with one master stopped (`SIGSTOP`) and its
/// stream's `XAUTOCLAIM` waiting out the response timeout, an abandoned entry of a stream on a
/// healthy master is claimed and handled meanwhile. (In one pass over every stream, its claim
/// waited behind the stopped master's timeout, logged as "claiming failed" before it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_master_holds_back_only_its_own_claims() {
    let setup = TwoMasters::start(
        "claims",
        RedisConfig::default(),
        // Nothing is idle long enough to claim until the test says so (`XCLAIM ... IDLE`).
        fast()
            .with_claim_idle_time(Duration::from_secs(600))
            .with_response_timeout(Duration::from_secs(10)),
    )
    .await;
    let TwoMasters {
        cluster,
        transport,
        stopped_type,
        stopped_stream,
        healthy_type,
        healthy_stream,
    } = &setup;
    let (stopped_type, healthy_type) = (*stopped_type, *healthy_type);
    let stopped = setup.stopped().await;

    // An entry of the healthy stream, read by a consumer that never acknowledges it.
    let mut conn = cluster.connection().await.unwrap();
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(healthy_stream)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    let abandoned = transport.publish(event(healthy_type, 1)).await.unwrap();
    let read: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("gone")
        .arg("STREAMS")
        .arg(healthy_stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_ne!(read, redis::Value::Nil);

    // Subscribed with the stopped master's stream first, as one pass would take them.
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let handle = transport
        .subscribe(
            vec![stopped_type.to_owned(), healthy_type.to_owned()],
            move |event: redstream_core::Event| {
                let _ = started_tx.send((event.event_type().to_owned(), event.id().to_string()));
                async { HandlerResult::Ok(()) }
            },
        )
        .await
        .unwrap();
    transport.publish(event(stopped_type, 2)).await.unwrap();
    let (first, _) = within("the stopped master's event handled", started.recv())
        .await
        .unwrap();
    assert_eq!(first, stopped_type);

    stopped.server().pause().unwrap();
    // The abandoned entry becomes claimable now.
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(healthy_stream)
        .arg("g")
        .arg("gone")
        .arg(0)
        .arg(&abandoned)
        .arg("IDLE")
        .arg(3_600_000)
        .arg("JUSTID")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (claimed, _) = within("the abandoned entry claimed and handled", started.recv())
        .await
        .unwrap();
    assert_eq!(claimed, healthy_type);
    let stopped_claims: Vec<String> = logged("claiming failed")
        .into_iter()
        .filter(|line| line.contains(stopped_stream.as_str()))
        .collect();
    assert!(
        stopped_claims.is_empty(),
        "claimed only after the stopped master's claim timed out: {stopped_claims:?}"
    );

    stopped.server().resume().unwrap();
    until("the claimed entry acknowledged", || {
        none_pending(&conn, std::slice::from_ref(healthy_stream), "g")
    })
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
}

/// The keep-alive runs one loop per slot group: with one master stopped while an entry of its
/// stream is being handled, an entry being handled on a healthy master keeps having its idle
/// time reset, so no other consumer can claim it. (With one pipeline over every slot, each
/// round waited for the stopped master's timeout, long enough for the healthy entry to go idle
/// past `claim_idle_time`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_master_holds_back_only_its_own_keep_alives() {
    // Entries held for over 1 s are reset every 500 ms; nothing is claimable before 2 s.
    const IDLE: Duration = Duration::from_secs(2);
    let setup = TwoMasters::start(
        "keepalive",
        RedisConfig::default(),
        fast()
            .with_claim_idle_time(IDLE)
            // The transport's own claimer stays out of it (its first pass is at the start).
            .with_claim_interval(Duration::from_secs(3600))
            .with_response_timeout(Duration::from_secs(3)),
    )
    .await;
    let TwoMasters {
        cluster,
        transport,
        stopped_type,
        stopped_stream,
        healthy_type,
        healthy_stream,
    } = &setup;
    let (stopped_type, healthy_type) = (*stopped_type, *healthy_type);
    let stopped = setup.stopped().await;

    // Both handlers hold their entry until the test releases them.
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let handle = {
        let release = Arc::clone(&release);
        transport
            .subscribe(
                vec![stopped_type.to_owned(), healthy_type.to_owned()],
                move |event: redstream_core::Event| {
                    let release = Arc::clone(&release);
                    let _ = started_tx.send(event.event_type().to_owned());
                    async move {
                        let _permit = release.acquire().await;
                        HandlerResult::Ok(())
                    }
                },
            )
            .await
            .unwrap()
    };
    for event_type in [stopped_type, healthy_type] {
        transport.publish(event(event_type, 1)).await.unwrap();
        let handled = within("an event being handled", started.recv()).await;
        assert_eq!(handled.as_deref(), Some(event_type));
    }

    stopped.server().pause().unwrap();
    // Until the stopped master's keep-alive times out, another consumer tries to take the
    // healthy entry as soon as it has been idle for `claim_idle_time`.
    let conn = cluster.connection().await.unwrap();
    let idle_ms = u64::try_from(IDLE.as_millis()).unwrap();
    until("the stopped master's keep-alive timed out", || {
        let (mut conn, stream, stopped_stream) =
            (conn.clone(), healthy_stream.clone(), stopped_stream.clone());
        async move {
            let reply: redis::Value = redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg("g")
                .arg("thief")
                .arg(idle_ms)
                .arg("0-0")
                .arg("COUNT")
                .arg(10)
                .arg("JUSTID")
                .query_async(&mut conn)
                .await
                .unwrap();
            let redis::Value::Array(parts) = reply else {
                panic!("XAUTOCLAIM answered {reply:?}")
            };
            assert_eq!(
                parts.get(1),
                Some(&redis::Value::Array(Vec::new())),
                "another consumer claimed the entry being handled on a healthy master"
            );
            logged("could not reset the idle time")
                .iter()
                .any(|line| line.contains(&stopped_stream))
        }
    })
    .await;

    stopped.server().resume().unwrap();
    release.add_permits(2);
    let streams = [stopped_stream, healthy_stream];
    until("both entries acknowledged", || {
        none_pending(&conn, &streams, "g")
    })
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
}
