//! The transport on a Sentinel-managed master (`redis-sentinel://` URL): a killed master is
//! followed to the promoted replica by the publishers and consumers of the same process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redstream_core::ErrorKind;
use redstream_testkit::RedisSentinel;
use redstream_transport::{KeyLayout, RedisConfig, RedisTransport, StartFrom, Topology};

use crate::support::{Flow, Seen, capture_logs, fast, subscribe_seen, unique, until, within};

const SENTINEL_PASSWORD: &str = "sentinel-Canary-pw";
const TYPES: [&str; 3] = ["order.created", "payment.failed", "user.signed_up"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_followed_by_publishers_and_consumers() {
    capture_logs();
    let group = RedisSentinel::builder()
        .replicas(1)
        .sentinel_password(SENTINEL_PASSWORD)
        .start()
        .await
        .unwrap();
    let prefix = unique("events");
    // The master name in its own field, the sentinels' password in its own.
    let url = group
        .url()
        .trim_end_matches(&format!("/{}", group.master_name()))
        .to_owned();
    let config = RedisConfig::default()
        .with_url(url)
        .with_stream_prefix(&prefix)
        .with_consumer_group("g")
        .with_consumer_name(unique("consumer"));
    let options = fast()
        .with_start_from(StartFrom::Beginning)
        .with_response_timeout(Duration::from_secs(2))
        .with_connect_timeout(Duration::from_secs(1))
        .with_master_name(group.master_name())
        .with_sentinel_password(SENTINEL_PASSWORD);
    assert!(!format!("{options:?}").contains("Canary"));
    // Without the sentinels' password: Auth at connect, naming where it goes, not showing it.
    let mut refused = options.clone();
    refused.connection.sentinel_password = Some("wrong-Canary".to_owned());
    let err = RedisTransport::with_options(config.clone(), refused)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(err.to_string().contains("sentinel_password"), "{err}");
    assert!(!err.to_string().contains("Canary"), "{err}");

    let transport = RedisTransport::with_options(config, options).await.unwrap();
    assert_eq!(transport.topology(), Topology::Sentinel);
    assert_eq!(transport.names().layout(), KeyLayout::Plain);

    let seen = Arc::new(Seen::default());
    subscribe_seen(&transport, &TYPES, &seen).await;
    // One publisher, one event at a time, round robin over the three streams.
    let flow = Flow::start(&transport, &TYPES, 1);
    until("300 events handled before the kill", || async {
        seen.distinct() >= 300
    })
    .await;

    let old_port = group.master().await.unwrap().port();
    let killed_at = Instant::now();
    let before_kill = flow.acked();
    let promoted = within("the failover", group.kill_master()).await.unwrap();
    let failover_took = killed_at.elapsed();
    assert_ne!(promoted.port(), old_port);
    let at_promotion = flow.acked();
    flow.acked_after(
        at_promotion,
        300,
        "300 events published after the promotion",
    )
    .await;
    let flowed = flow.stop().await;
    let acked = &flowed.acked;
    until(
        "the events published after the promotion handled",
        || async { acked[at_promotion..].iter().all(|(n, _)| seen.has(*n)) },
    )
    .await;

    // Losses: acknowledged publishes not handled. A write the old master acknowledged before
    // its replica had it is lost by any Sentinel client; counted, not hidden.
    let lost: Vec<(usize, Instant)> = acked
        .iter()
        .filter(|(n, _)| !seen.has(*n))
        .copied()
        .collect();
    for (n, at) in &lost {
        assert!(
            *at <= killed_at && killed_at.duration_since(*at) < Duration::from_secs(1),
            "event {n} was acknowledged {:?} before the kill and lost",
            killed_at.checked_duration_since(*at)
        );
    }
    // Events handled whose publish failed (a timeout or dropped connection after the write).
    let unacknowledged = seen.handled_besides(&flowed.acked_numbers());
    println!(
        "sentinel failover: master :{old_port} killed, replica :{} promoted after \
         {failover_took:?}; {} events acknowledged ({before_kill} before the kill, {} after the \
         promotion), {} publishes failed during the failover, {} handled, {} \
         duplicates, {unacknowledged} handled although their publish failed, {} acknowledged \
         but lost (acknowledged by the old master before replication)",
        promoted.port(),
        acked.len(),
        acked.len() - at_promotion,
        flowed.errors.len(),
        seen.distinct(),
        seen.duplicates(),
        lost.len(),
    );
}
