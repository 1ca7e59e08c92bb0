//! The transport on a Sentinel-managed master (`redis-sentinel://` URL): a killed master is
//! followed to the promoted replica by the publishers and consumers of the same process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redstream_core::{ErrorKind, HandlerResult};
use redstream_testkit::RedisSentinel;
use redstream_transport::{KeyLayout, RedisConfig, RedisTransport, StartFrom, Topology};

use crate::support::{capture_logs, event, fast, number, unique, until, within};

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

    let counts: Arc<Mutex<HashMap<usize, usize>>> = Arc::default();
    {
        let counts = Arc::clone(&counts);
        transport
            .subscribe(
                TYPES.iter().map(|t| (*t).to_owned()).collect(),
                move |event| {
                    *counts.lock().unwrap().entry(number(&event)).or_default() += 1;
                    async { HandlerResult::Ok(()) }
                },
            )
            .await
            .unwrap();
    }
    let handled = || counts.lock().unwrap().len();
    let seen = |n: usize| counts.lock().unwrap().contains_key(&n);

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
    let failed = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (transport, stop, acked, failed) = (
            transport.clone(),
            Arc::clone(&stop),
            Arc::clone(&acked),
            Arc::clone(&failed),
        );
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                match transport.publish(event(TYPES[n % 3], n)).await {
                    Ok(_) => acked.lock().unwrap().push((n, Instant::now())),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                n += 1;
            }
        })
    };
    let acked_count = || acked.lock().unwrap().len();
    until("300 events handled before the kill", || async {
        handled() >= 300
    })
    .await;

    let old_port = group.master().await.unwrap().port();
    let killed_at = Instant::now();
    let before_kill = acked_count();
    let promoted = within("the failover", group.kill_master()).await.unwrap();
    let failover_took = killed_at.elapsed();
    assert_ne!(promoted.port(), old_port);
    let at_promotion = acked_count();
    until("300 events published after the promotion", || async {
        acked_count() >= at_promotion + 300
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    within("the publisher", publisher).await.unwrap();
    let acked = acked.lock().unwrap().clone();
    until(
        "the events published after the promotion handled",
        || async { acked[at_promotion..].iter().all(|(n, _)| seen(*n)) },
    )
    .await;

    // Losses: acknowledged publishes not handled. A write the old master acknowledged before
    // its replica had it is lost by any Sentinel client; counted, not hidden.
    let lost: Vec<(usize, Instant)> = acked.iter().filter(|(n, _)| !seen(*n)).copied().collect();
    for (n, at) in &lost {
        assert!(
            *at <= killed_at && killed_at.duration_since(*at) < Duration::from_secs(1),
            "event {n} was acknowledged {:?} before the kill and lost",
            killed_at.checked_duration_since(*at)
        );
    }
    let duplicates: usize = counts
        .lock()
        .unwrap()
        .values()
        .map(|c| c.saturating_sub(1))
        .sum();
    // Events handled whose publish failed (a timeout or dropped connection after the write).
    let acked_numbers: std::collections::HashSet<usize> = acked.iter().map(|(n, _)| *n).collect();
    let unacknowledged = counts
        .lock()
        .unwrap()
        .keys()
        .filter(|n| !acked_numbers.contains(n))
        .count();
    println!(
        "sentinel failover: master :{old_port} killed, replica :{} promoted after \
         {failover_took:?}; {} events acknowledged ({before_kill} before the kill, {} after the \
         promotion), {} publishes failed during the failover, {} handled, {duplicates} \
         duplicates, {unacknowledged} handled although their publish failed, {} acknowledged \
         but lost (acknowledged by the old master before replication)",
        promoted.port(),
        acked.len(),
        acked.len() - at_promotion,
        failed.load(Ordering::Relaxed),
        handled(),
        lost.len(),
    );
}
