//! The transport on a real Redis Cluster (3 masters, 3 replicas) through a
//! `redis-cluster://` URL: the cluster layout chosen by itself, streams on every master, one
//! blocking read per slot, a killed master followed in the same process, and a stream's slot
//! moved to another master while its events flow.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redstream_core::{ErrorKind, HandlerResult};
use redstream_testkit::{ClusterNode, RedisCluster, key_slot};
use redstream_transport::{
    KeyLayout, RedisConfig, RedisTransport, StartFrom, Topology, TransportOptions,
};
use tokio::task::JoinSet;

use crate::support::{
    Flow, HANG, Seen, capture_logs, event, fast, logged, none_pending, number, subscribe_seen,
    unique, until, within,
};

/// Ten event types whose streams (one hash tag each) sit on all three masters of a default
/// cluster (slots 0-5460, 5461-10922, 10923-16383); the test checks it on the cluster itself.
pub(crate) const TYPES: [&str; 10] = [
    "order.created",
    "order.updated",
    "order.cancelled",
    "payment.failed",
    "payment.captured",
    "user.signed_up",
    "page.viewed",
    "cart.updated",
    "invoice.sent",
    "refund.issued",
];

/// `redis-cluster://host:port,...` with every node of `cluster` as a seed.
pub(crate) fn cluster_url(cluster: &RedisCluster) -> String {
    let hosts: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|node| format!("{}:{}", node.server().host(), node.port()))
        .collect();
    format!("redis-cluster://{}", hosts.join(","))
}

async fn cluster_transport(url: &str, prefix: &str, options: TransportOptions) -> RedisTransport {
    capture_logs();
    RedisTransport::with_options(
        RedisConfig::default()
            .with_url(url)
            .with_stream_prefix(prefix)
            .with_consumer_group("g")
            .with_consumer_name(unique("consumer")),
        options,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_over_ten_types_through_three_masters() {
    let cluster = RedisCluster::start().await.unwrap();
    let url = cluster_url(&cluster);
    let prefix = unique("events");
    let options = fast()
        .with_start_from(StartFrom::Beginning)
        .with_read_count(200);
    let transport = cluster_transport(&url, &prefix, options.clone()).await;
    assert_eq!(transport.topology(), Topology::Cluster);
    // No layout chosen: the cluster layout, one hash tag per stream.
    assert_eq!(transport.names().layout(), KeyLayout::Cluster);
    assert_eq!(
        transport.names().stream("order.created"),
        format!("{prefix}:{{order.created}}")
    );
    // The plain layout chosen explicitly is refused, naming the fix.
    let err = RedisTransport::with_options(
        RedisConfig::default().with_url(&url),
        options.clone().with_key_layout(KeyLayout::Plain),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("key_layout cluster"), "{err}");

    // The ten streams sit on all three masters, by the servers' own CLUSTER KEYSLOT.
    let mut raw = cluster.connection().await.unwrap();
    let mut masters = BTreeSet::new();
    for event_type in TYPES {
        let key = transport.names().stream(event_type);
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(slot, key_slot(key.as_bytes()), "{key}");
        masters.insert(cluster.master_for_slot(slot).await.unwrap().id().to_owned());
    }
    assert_eq!(masters.len(), 3, "the ten streams are on {masters:?}");

    let seen = Arc::new(Seen::default());
    // Two consumers of the group, in two transports.
    let second = cluster_transport(&url, &prefix, options).await;
    subscribe_seen(&transport, &TYPES, &seen).await;
    subscribe_seen(&second, &TYPES, &seen).await;

    // A batch over two streams (two slots) is refused before anything is sent.
    let err = transport
        .publish_batch(vec![event(TYPES[0], 0), event(TYPES[1], 0)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");

    // 10,000 events from 4 tasks: half one by one, half in batches of 50 of one type.
    const TOTAL: usize = 10_000;
    const TASKS: usize = 4;
    let started = Instant::now();
    let mut publishers = JoinSet::new();
    for task in 0..TASKS {
        let transport = transport.clone();
        publishers.spawn(async move {
            let numbers: Vec<usize> = (0..TOTAL).filter(|n| n % TASKS == task).collect();
            let (single, batched) = numbers.split_at(numbers.len() / 2);
            for &n in single {
                transport.publish(event(TYPES[n % 10], n)).await.unwrap();
            }
            for (type_index, event_type) in TYPES.iter().enumerate() {
                let mine: Vec<usize> = batched
                    .iter()
                    .copied()
                    .filter(|n| n % 10 == type_index)
                    .collect();
                for chunk in mine.chunks(50) {
                    let events = chunk.iter().map(|&n| event(event_type, n)).collect();
                    transport.publish_batch(events).await.unwrap();
                }
            }
        });
    }
    within("publishing", async {
        while let Some(done) = publishers.join_next().await {
            done.unwrap();
        }
    })
    .await;
    let published = started.elapsed();
    until("every event handled", || async { seen.distinct() == TOTAL }).await;
    let handled = started.elapsed();

    // Every stream listed (SCAN on every master) and described (pipelines split by slot).
    let streams = transport.list_streams().await.unwrap();
    assert_eq!(streams.len(), 10, "{streams:?}");
    let overview = transport.streams_overview().await.unwrap();
    let length: u64 = overview.iter().map(|s| s.length).sum();
    assert_eq!(length, TOTAL as u64);
    until("every entry acknowledged", || async {
        let overview = transport.streams_overview().await.unwrap();
        overview
            .iter()
            .flat_map(|s| &s.groups)
            .all(|g| g.pending == 0)
    })
    .await;
    // A failing handler's entry moves to the dead-letter stream (another slot): XADD there,
    // then XACK; the redrive moves it back one command at a time.
    let failing = cluster_transport(
        &url,
        &prefix,
        fast()
            .with_dead_letter_on_first_failure(true)
            .with_start_from(StartFrom::Beginning),
    )
    .await;
    let handle = failing
        .subscribe(vec!["job.failed".to_owned()], |_| async {
            HandlerResult::Err("boom".into())
        })
        .await
        .unwrap();
    failing.publish(event("job.failed", 1)).await.unwrap();
    until("the dead letter", || async {
        failing.dlq_entries(10).await.unwrap().len() == 1
    })
    .await;
    let job = failing.names().stream("job.failed");
    until("the failed entry acknowledged", || async {
        let info = failing.stream_info(&job).await.unwrap();
        info.groups.iter().all(|g| g.pending == 0)
    })
    .await;
    assert_ne!(
        key_slot(job.as_bytes()),
        key_slot(failing.names().dlq().as_bytes())
    );
    // The redrive across slots: XADD to the stream, then XDEL of the dead letter. A second
    // dead letter of the same entry (a copy, as a failure between the move's XADD and XACK
    // leaves) is a repeat: removed, not republished.
    failing.unsubscribe(&handle).await.unwrap();
    let dlq = failing.names().dlq();
    let letters: Vec<(String, HashMap<String, String>)> = {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&dlq)
            .arg("-")
            .arg("+")
            .query_async(&mut raw)
            .await
            .unwrap();
        reply
            .ids
            .into_iter()
            .map(|entry| {
                let fields = entry
                    .map
                    .iter()
                    .map(|(k, v)| (k.clone(), redis::from_redis_value_ref(v).unwrap()))
                    .collect();
                (entry.id, fields)
            })
            .collect()
    };
    let mut copy = redis::cmd("XADD");
    copy.arg(&dlq).arg("*");
    for (name, value) in &letters[0].1 {
        copy.arg(name).arg(value);
    }
    let _: String = copy.query_async(&mut raw).await.unwrap();
    let report = failing.redrive_all().await.unwrap();
    assert_eq!((report.redriven, report.repeats), (1, 1), "{report:?}");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert!(failing.dlq_entries(10).await.unwrap().is_empty());
    assert_eq!(failing.stream_info(&job).await.unwrap().length, 2);

    // Following: one stream (one slot) reads; streams of two slots are refused by name.
    let order = transport.names().stream(TYPES[0]);
    let mut follower = transport.follow(&[&order], Some("-")).await.unwrap();
    assert_eq!(follower.next(5).await.unwrap().len(), 5);
    let payment = transport.names().stream(TYPES[3]);
    let err = transport
        .follow(&[&order, &payment], None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("follower of its own"), "{err}");

    let crossslot = logged("CROSSSLOT");
    assert!(crossslot.is_empty(), "{crossslot:?}");
    println!(
        "cluster: {TOTAL} events over 10 streams on {} masters from {TASKS} tasks: published in \
         {published:?}, all handled after {handled:?}; {} deliveries, {} duplicates, 0 lost, \
         0 CROSSSLOT errors",
        masters.len(),
        seen.deliveries(),
        seen.duplicates(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_followed_by_publishers_and_consumers() {
    let cluster = RedisCluster::start().await.unwrap();
    let url = cluster_url(&cluster);
    let prefix = unique("events");
    let options = fast()
        .with_start_from(StartFrom::Beginning)
        .with_response_timeout(Duration::from_secs(2))
        .with_connect_timeout(Duration::from_secs(1));
    let transport = cluster_transport(&url, &prefix, options).await;
    let seen = Arc::new(Seen::default());
    subscribe_seen(&transport, &TYPES, &seen).await;

    // One publisher, one event at a time, round robin over the ten streams; it records what
    // was acknowledged (and when) and carries on after errors.
    let flow = Flow::start(&transport, &TYPES, 1);
    until("500 events handled before the kill", || async {
        seen.distinct() >= 500
    })
    .await;

    let victim = cluster
        .master_for_key(transport.names().stream(TYPES[0]).as_bytes())
        .await
        .unwrap();
    let killed_at = Instant::now();
    let before_kill = flow.acked();
    let promoted = within("the failover", cluster.kill_master(victim))
        .await
        .unwrap();
    let failover_took = killed_at.elapsed();
    let at_promotion = flow.acked();
    // Publishing and consuming go on in this process: 500 more events published and handled
    // after the promotion, among them events of the failed-over stream.
    flow.acked_after(
        at_promotion,
        500,
        "500 events published after the promotion",
    )
    .await;
    let flowed = flow.stop().await;
    let acked = &flowed.acked;
    let last_of_victim = acked
        .iter()
        .rev()
        .find(|(n, _)| n % 10 == 0)
        .map(|(n, _)| *n)
        .unwrap();
    until(
        "the events published after the promotion handled",
        || async { acked[at_promotion..].iter().all(|(n, _)| seen.has(*n)) },
    )
    .await;
    assert!(seen.has(last_of_victim));

    // Acknowledged events are all handled, except any the killed master acknowledged without
    // having replicated them (only just before the kill).
    let lost: Vec<(usize, Instant)> = acked
        .iter()
        .filter(|(n, _)| !seen.has(*n))
        .copied()
        .collect();
    for (n, at) in &lost {
        assert!(
            *at <= killed_at && killed_at.duration_since(*at) < Duration::from_secs(1),
            "event {n} was acknowledged {:?} from the kill and lost",
            killed_at.checked_duration_since(*at)
        );
    }
    // Events handled whose publish failed (a timeout or dropped connection after the write).
    let unacknowledged = seen.handled_besides(&flowed.acked_numbers());
    println!(
        "cluster failover: master {} killed, replica {} promoted after {failover_took:?}; {} \
         events acknowledged ({before_kill} before the kill, {} after the promotion), {} \
         publishes failed during the failover, {} handled ({} duplicates, {unacknowledged} \
         although their publish failed), {} acknowledged but lost (acknowledged by the killed master before replication)",
        victim.id(),
        promoted.id(),
        acked.len(),
        acked.len() - at_promotion,
        flowed.errors.len(),
        seen.distinct(),
        seen.duplicates(),
        lost.len(),
    );
    let crossslot = logged("CROSSSLOT");
    assert!(crossslot.is_empty(), "{crossslot:?}");
}

/// Readers blocked in `XREADGROUP` on `node`, by its `CLIENT LIST`.
async fn blocked_readers(node: &ClusterNode) -> usize {
    let mut conn = node.server().connection().await.unwrap();
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    clients
        .lines()
        .filter(|line| {
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            };
            field("cmd") == Some("xreadgroup") && field("flags").is_some_and(|f| f.contains('b'))
        })
        .count()
}

/// The slot of a busy stream moves to another master twice while its events flow: first while
/// publishers write to it and consumers read, acknowledge and claim on it (the stream moves with
/// `MIGRATE`: `ASK`, then `MOVED`), then while every reader of it is blocked in `XREADGROUP` on
/// its master. Nothing is lost, nothing stays pending, nothing is refused with `CROSSSLOT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_while_events_flow_loses_nothing() {
    let cluster = RedisCluster::builder()
        .replicas_per_master(0)
        .start()
        .await
        .unwrap();
    let url = cluster_url(&cluster);
    let prefix = unique("events");
    // A read blocks for longer than the test waits for anything: a reader blocked on the slot
    // when it moves must follow it when the old master redirects it (MOVED), not when its block
    // time ends.
    let options = fast()
        .with_start_from(StartFrom::Beginning)
        .with_block_time(HANG * 2);
    let publisher = cluster_transport(&url, &prefix, options.clone()).await;
    let consumers = [
        cluster_transport(&url, &prefix, options.clone()).await,
        cluster_transport(&url, &prefix, options).await,
    ];
    // The first delivery of every 25th event fails: it stays pending and comes back through a
    // claim (XAUTOCLAIM), on whichever master holds its stream by then.
    let seen = Arc::new(Seen::default());
    for consumer in &consumers {
        let seen = Arc::clone(&seen);
        consumer
            .subscribe(
                TYPES.iter().map(|t| (*t).to_owned()).collect(),
                move |event| {
                    let n = number(&event);
                    let first = seen.record(n) == 1;
                    async move {
                        if first && n.is_multiple_of(25) {
                            HandlerResult::Err("the first delivery of every 25th event".into())
                        } else {
                            HandlerResult::Ok(())
                        }
                    }
                },
            )
            .await
            .unwrap();
    }

    let busy = publisher.names().stream(TYPES[0]);
    let slot = key_slot(busy.as_bytes());
    let mut raw = cluster.connection().await.unwrap();
    let keyslot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(&busy)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(keyslot, slot, "{busy}");
    let origin = cluster.master_for_slot(slot).await.unwrap();
    let masters = cluster.masters().await.unwrap();
    let others: Vec<&ClusterNode> = masters
        .iter()
        .copied()
        .filter(|node| node.id() != origin.id())
        .collect();
    let (second, third) = (others[0], others[1]);

    // While events flow: four publishers over the ten streams, two consumers.
    let flow = Flow::start(&publisher, &TYPES, 4);
    until("1,500 events handled before the move", || async {
        seen.distinct() >= 1_500
    })
    .await;
    let before_move = flow.acked();
    let first_move = within("the first move", cluster.move_slot(slot, second))
        .await
        .unwrap();
    let during_move = flow.acked() - before_move;
    assert!(first_move.keys >= 1, "{first_move:?}");
    let after_move = flow.acked();
    flow.acked_after(after_move, 1_500, "1,500 events published after the move")
        .await;
    let flowing = flow.stop().await;
    seen.wait_for_all(
        &flowing.numbers(),
        "the events published around the first move",
    )
    .await;

    // While blocked: nothing is published, so every reader of the two consumers blocks on the
    // master of its stream's slot (one reader per slot), those of the busy stream on `second`.
    let slots = TYPES
        .iter()
        .map(|t| key_slot(publisher.names().stream(t).as_bytes()))
        .collect::<BTreeSet<u16>>();
    let mut readers_on_second = 0;
    for s in slots {
        if cluster.master_for_slot(s).await.unwrap().id() == second.id() {
            readers_on_second += consumers.len();
        }
    }
    until(
        "the readers blocked on the busy stream's new master",
        || async { blocked_readers(second).await == readers_on_second },
    )
    .await;
    let second_move = within("the second move", cluster.move_slot(slot, third))
        .await
        .unwrap();
    assert_eq!(second_move.from, second.id());
    // Only the blocked readers can deliver these: they are new entries, not pending ones that
    // the claimer would take.
    let flow = Flow::start_from(&publisher, &TYPES, 4, 1_000_000);
    flow.acked_after(0, 500, "500 events published after the second move")
        .await;
    let blocked = flow.stop().await;
    seen.wait_for_all(
        &blocked.numbers(),
        "the events published after the second move",
    )
    .await;
    let busy_after: Vec<usize> = blocked
        .numbers()
        .into_iter()
        .filter(|n| n.is_multiple_of(TYPES.len()))
        .collect();
    assert!(!busy_after.is_empty());

    // The slot is served by `third`, which holds the whole stream.
    assert_eq!(
        cluster.master_for_slot(slot).await.unwrap().id(),
        third.id()
    );
    let published_to_busy = flowing
        .numbers()
        .into_iter()
        .chain(blocked.numbers())
        .filter(|n| n.is_multiple_of(TYPES.len()))
        .count();
    let mut direct = third.server().connection().await.unwrap();
    let length: usize = redis::cmd("XLEN")
        .arg(&busy)
        .query_async(&mut direct)
        .await
        .unwrap();
    assert!(
        length >= published_to_busy,
        "{busy} on {third}: {length} entries, {published_to_busy} published"
    );
    // Nothing stays pending in the group, on any stream.
    let streams: Vec<String> = TYPES.iter().map(|t| publisher.names().stream(t)).collect();
    until("every stream's pending list empty", || {
        none_pending(&raw, &streams, "g")
    })
    .await;

    let errors: Vec<String> = flowing
        .errors
        .iter()
        .chain(&blocked.errors)
        .map(|(n, err)| format!("event {n}: {err}"))
        .collect();
    assert!(
        !errors.iter().any(|err| err.contains("CROSSSLOT")),
        "{errors:?}"
    );
    let crossslot = logged("CROSSSLOT");
    assert!(crossslot.is_empty(), "{crossslot:?}");
    // A slot move is routine: no read, acknowledgement or claim on these streams reported a
    // failure (a blocked read that the server ends because MIGRATE took its stream away is
    // sent again at once, and follows the slot).
    let reported = logged(&format!("{prefix}:"));
    assert!(reported.is_empty(), "{reported:#?}");
    let published = flowing.acked.len() + blocked.acked.len();
    let failed_first = flowing
        .numbers()
        .into_iter()
        .chain(blocked.numbers())
        .filter(|n| n.is_multiple_of(25))
        .count();
    assert!(seen.duplicates() >= failed_first);
    eprintln!(
        "slot {slot} of {busy} moved {origin} -> {second} with {during_move} events published \
         during the move, then -> {third} with its readers blocked; {published} events \
         published ({published_to_busy} to the busy stream), {} publishes failed, {} handled, \
         {} deliveries, {} duplicates ({failed_first} of them after a failed first delivery), 0 \
         lost",
        errors.len(),
        seen.distinct(),
        seen.deliveries(),
        seen.duplicates(),
    );
    assert!(errors.is_empty(), "{errors:?}");
}

/// The claim passes of a subscription's slot groups (one per stream here, ten) run side by
/// side and share the buffer's free room: each asks for its share of it. Asking for as much as
/// fits, the passes whose ticks fell in the same millisecond as an earlier one's found the room
/// taken, at every tick, and never claimed the failed entries of their streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slot_group_claims_its_failed_entries_with_a_small_buffer() {
    let cluster = RedisCluster::builder()
        .replicas_per_master(0)
        .start()
        .await
        .unwrap();
    let url = cluster_url(&cluster);
    let prefix = unique("events");
    capture_logs();
    let transport = RedisTransport::with_options(
        RedisConfig::default()
            .with_url(&url)
            .with_stream_prefix(&prefix)
            .with_consumer_group("g")
            .with_backpressure(
                redstream_core::BackpressureConfig::default().with_max_queue_size(10),
            ),
        fast()
            .with_start_from(StartFrom::Beginning)
            .with_read_count(10),
    )
    .await
    .unwrap();
    let streams: BTreeSet<u16> = TYPES
        .iter()
        .map(|t| key_slot(transport.names().stream(t).as_bytes()))
        .collect();
    assert_eq!(streams.len(), TYPES.len(), "one slot per stream");

    // The first delivery of every event fails: each comes back only through a claim.
    let seen = Arc::new(Seen::default());
    let handle = {
        let seen = Arc::clone(&seen);
        transport
            .subscribe(
                TYPES.iter().map(|t| (*t).to_owned()).collect(),
                move |event| {
                    let first = seen.record(number(&event)) == 1;
                    async move {
                        if first {
                            HandlerResult::Err("the first delivery of every event".into())
                        } else {
                            HandlerResult::Ok(())
                        }
                    }
                },
            )
            .await
            .unwrap()
    };
    for (n, t) in TYPES.iter().enumerate() {
        transport.publish(event(t, n)).await.unwrap();
    }
    until("every event delivered twice", || async {
        (0..TYPES.len()).all(|n| seen.count(n) >= 2)
    })
    .await;
    let raw = cluster.connection().await.unwrap();
    let streams: Vec<String> = TYPES.iter().map(|t| transport.names().stream(t)).collect();
    until("every stream's pending list empty", || {
        none_pending(&raw, &streams, "g")
    })
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
}

/// Claims and a restarted consumer's re-reads deliver entries with their delivery counts on a
/// cluster too: the `XPENDING`s go in one pipeline with the `XCLAIM` or `XREADGROUP` that
/// delivers the entries, to the stream's master, before it. (Split by slot, a re-read's two
/// commands would go concurrently and usually still in order: the unit tests of `commands.rs`
/// check that such a pipeline is not split.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_rereads_keep_delivery_counts_on_a_cluster() {
    let cluster = RedisCluster::builder()
        .replicas_per_master(0)
        .start()
        .await
        .unwrap();
    let url = cluster_url(&cluster);
    let conn = cluster.connection().await.unwrap();
    crate::redelivery::claims_keep_delivery_counts(&url, conn.clone()).await;
    crate::redelivery::rereads_keep_delivery_counts(&url, conn).await;
}
