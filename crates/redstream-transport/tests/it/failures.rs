//! Consuming when things break: a consumer killed mid-batch, a stream deleted under a reader,
//! a server restarted with and without persistence, a server frozen for a while.

use std::collections::{HashMap, HashSet};
use std::future::pending;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redstream_core::{Event, HandlerResult};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport, TransportOptions};
use tokio::sync::{mpsc, oneshot};

use crate::support::{
    HANG, event, fast, logged, number, pending_of_type, recv, recv_n, transport, unique, until,
    within, xrange,
};

/// Publishes `event`, retrying while the server is away. Returns once the publish was
/// acknowledged.
async fn publish_until_ok(transport: &RedisTransport, event: Event) {
    within("a publish to be acknowledged", async {
        loop {
            match transport.publish(event.clone()).await {
                Ok(_) => return,
                Err(err) => {
                    assert!(err.is_retryable(), "{err}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    })
    .await;
}

/// A consumer in a runtime of its own, on a thread of its own, whose handlers never finish.
/// [`kill`](Doomed::kill) drops that runtime with every task of the transport: no drain, no
/// acknowledgement, no release, as when a process is killed.
struct Doomed {
    started: mpsc::UnboundedReceiver<usize>,
    kill: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Doomed {
    async fn start(config: RedisConfig, options: TransportOptions, event_type: &str) -> Self {
        let (started_tx, started) = mpsc::unbounded_channel();
        let (kill, killed) = oneshot::channel::<()>();
        let (ready_tx, ready) = oneshot::channel();
        let event_type = event_type.to_owned();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let transport = RedisTransport::with_options(config, options).await.unwrap();
                transport
                    .subscribe(vec![event_type], move |event: Event| {
                        let _ = started_tx.send(number(&event));
                        async { pending::<HandlerResult>().await }
                    })
                    .await
                    .unwrap();
                ready_tx.send(()).unwrap();
                let _ = killed.await;
            });
            // Dropping the runtime drops every task it holds, mid-flight.
            drop(runtime);
        });
        within("the doomed consumer to start", ready).await.unwrap();
        Self {
            started,
            kill,
            thread,
        }
    }

    async fn kill(self) {
        self.kill.send(()).unwrap();
        let thread = self.thread;
        within(
            "the doomed consumer to die",
            tokio::task::spawn_blocking(move || thread.join()),
        )
        .await
        .unwrap()
        .unwrap();
    }
}

fn config(server: &RedisServer, prefix: &str, consumer: &str) -> RedisConfig {
    RedisConfig::default()
        .with_url(server.url())
        .with_stream_prefix(prefix)
        .with_consumer_group("workers")
        .with_consumer_name(consumer)
}

/// A consumer is killed while handling a batch; another consumer of the group claims and
/// handles every entry it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_a_killed_consumer_are_claimed_by_another() {
    const EVENTS: usize = 6;
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("killed");
    let options = fast().with_handler_concurrency(2);
    let mut doomed =
        Doomed::start(config(&server, &prefix, "doomed"), options.clone(), "job").await;
    let survivor = transport(&server, &prefix, "workers", options.clone()).await;
    for n in 0..EVENTS {
        survivor.publish(event("job", n)).await.unwrap();
    }
    recv_n(
        &mut doomed.started,
        2,
        "the doomed consumer's handlers to start",
    )
    .await;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = survivor
        .subscribe(vec!["job".to_string()], move |event: Event| {
            let _ = tx.send(number(&event));
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    doomed.kill().await;
    let killed_at = Instant::now();
    let mut handled = recv_n(&mut rx, EVENTS, "the killed consumer's entries").await;
    println!(
        "a killed consumer's entries were handled by another {:?} after the kill (claim idle \
         time {:?}, claim interval {:?})",
        killed_at.elapsed(),
        options.claim_idle_time,
        options.claim_interval
    );
    handled.sort_unstable();
    assert_eq!(handled, (0..EVENTS).collect::<Vec<_>>());
    within("unsubscribe", survivor.unsubscribe(&handle))
        .await
        .unwrap();
    assert_eq!(
        pending_of_type(&server, &survivor, "job", "workers").await,
        0
    );

    // The dead consumer is still a member of the group (consumers are never deleted), with
    // nothing pending.
    let mut conn = server.connection().await.unwrap();
    let consumers: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(survivor.names().stream("job"))
        .arg("workers")
        .query_async(&mut conn)
        .await
        .unwrap();
    let doomed = consumers
        .iter()
        .find(|c| c.get("name") == Some(&redis::Value::BulkString(b"doomed".to_vec())))
        .expect("the killed consumer is still listed");
    assert_eq!(doomed.get("pending"), Some(&redis::Value::Int(0)));
}

/// A consumer that starts under the name of a killed one first re-reads that name's pending
/// entries: they are handled at once, without waiting for the claim idle time (an hour here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_consumer_rereads_its_own_pending_entries() {
    const EVENTS: usize = 5;
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("reread");
    let options = fast().with_claim_idle_time(Duration::from_secs(3600));
    let mut doomed =
        Doomed::start(config(&server, &prefix, "worker-1"), options.clone(), "job").await;
    let publisher = transport(&server, &prefix, "writers", options.clone()).await;
    for n in 0..EVENTS {
        publisher.publish(event("job", n)).await.unwrap();
    }
    recv(
        &mut doomed.started,
        "the doomed consumer's handler to start",
    )
    .await;
    until("the doomed consumer to read every event", || async {
        pending_of_type(&server, &publisher, "job", "workers").await == EVENTS as u64
    })
    .await;
    doomed.kill().await;

    let reborn = RedisTransport::with_options(config(&server, &prefix, "worker-1"), options)
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = reborn
        .subscribe(vec!["job".to_string()], move |event: Event| {
            let _ = tx.send(number(&event));
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    let mut handled = recv_n(&mut rx, EVENTS, "the re-read pending entries").await;
    handled.sort_unstable();
    assert_eq!(handled, (0..EVENTS).collect::<Vec<_>>());
    within("unsubscribe", reborn.unsubscribe(&handle))
        .await
        .unwrap();
    assert_eq!(pending_of_type(&server, &reborn, "job", "workers").await, 0);
}

/// The stream is deleted under a subscribed reader: the group is re-created (with a warning)
/// and later events are handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_is_recreated_with_its_group() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("deleted");
    let transport = transport(&server, &prefix, "workers", fast()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = transport
        .subscribe(vec!["order.created".to_string()], move |event: Event| {
            let _ = tx.send(number(&event));
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    transport.publish(event("order.created", 1)).await.unwrap();
    assert_eq!(recv(&mut rx, "the first event").await, 1);

    let stream = transport.names().stream("order.created");
    let mut conn = server.connection().await.unwrap();
    let deleted: i64 = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    transport.publish(event("order.created", 2)).await.unwrap();
    assert_eq!(
        recv(&mut rx, "the event published after the deletion").await,
        2
    );
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();

    let warnings = logged("NOGROUP");
    assert!(
        warnings.iter().any(|w| w.contains(&prefix)),
        "no NOGROUP warning for {prefix}: {warnings:?}"
    );
}

/// A restart without persistence loses the streams and the groups: the consumer notices
/// (`NOGROUP`), re-creates its group and handles what is published afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_persistence_recreates_the_group() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("amnesia");
    let transport = transport(&server, &prefix, "workers", fast()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = transport
        .subscribe(vec!["order.created".to_string()], move |event: Event| {
            let _ = tx.send(number(&event));
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    transport.publish(event("order.created", 1)).await.unwrap();
    assert_eq!(recv(&mut rx, "the first event").await, 1);
    server.restart().await.unwrap();
    publish_until_ok(&transport, event("order.created", 2)).await;
    assert_eq!(
        recv(&mut rx, "the event published after the restart").await,
        2
    );
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
}

/// What a crash test saw: which numbers were acknowledged to publishers and how often each was
/// handled.
#[derive(Default)]
struct Ledger {
    acknowledged: HashSet<usize>,
    handled: HashMap<usize, usize>,
}

impl Ledger {
    fn missing(&self) -> usize {
        self.acknowledged
            .iter()
            .filter(|n| !self.handled.contains_key(n))
            .count()
    }

    fn duplicates(&self) -> usize {
        self.handled.values().map(|c| c - 1).sum()
    }
}

/// Publishes `total` numbered events from `tasks` concurrent publishers, each retrying until
/// acknowledged, recording acknowledgements in the ledger.
fn spawn_publishers(
    transport: &RedisTransport,
    ledger: &Arc<Mutex<Ledger>>,
    total: usize,
    tasks: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|task| {
            let (transport, ledger) = (transport.clone(), Arc::clone(ledger));
            tokio::spawn(async move {
                for n in (task..total).step_by(tasks) {
                    publish_until_ok(&transport, event("ledger.entry", n)).await;
                    ledger.lock().unwrap().acknowledged.insert(n);
                }
            })
        })
        .collect()
}

async fn consume_into(
    transport: &RedisTransport,
    ledger: &Arc<Mutex<Ledger>>,
) -> redstream_core::SubscriptionHandle {
    let ledger = Arc::clone(ledger);
    transport
        .subscribe(vec!["ledger.entry".to_string()], move |event: Event| {
            *ledger
                .lock()
                .unwrap()
                .handled
                .entry(number(&event))
                .or_default() += 1;
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap()
}

/// Redis is killed and restarted (AOF, `appendfsync always`) while 10,000 events are being
/// published and consumed: every acknowledged publish is handled at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_across_a_restart_with_aof() {
    const EVENTS: usize = 10_000;
    let server = RedisServer::builder()
        .appendonly(true)
        .start()
        .await
        .unwrap();
    let prefix = unique("aof");
    let options = fast().with_response_timeout(Duration::from_secs(2));
    let publisher = transport(&server, &prefix, "writers", options.clone()).await;
    let consumer = transport(&server, &prefix, "ledger", options).await;
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let handle = consume_into(&consumer, &ledger).await;
    let publishers = spawn_publishers(&publisher, &ledger, EVENTS, 4);

    until("a third of the events to be handled", || async {
        ledger.lock().unwrap().handled.len() >= EVENTS / 3
    })
    .await;
    server.kill().unwrap();
    let killed_with = ledger.lock().unwrap().handled.len();
    server.restart().await.unwrap();
    for task in publishers {
        within("the publishers", task).await.unwrap();
    }
    until("every acknowledged event to be handled", || async {
        ledger.lock().unwrap().missing() == 0
    })
    .await;
    within("unsubscribe", consumer.unsubscribe(&handle))
        .await
        .unwrap();
    let ledger = ledger.lock().unwrap();
    println!(
        "restart with AOF: {} events acknowledged, {} handled ({} when the server was killed), \
         {} duplicates",
        ledger.acknowledged.len(),
        ledger.handled.len(),
        killed_with,
        ledger.duplicates()
    );
    assert_eq!(ledger.acknowledged.len(), EVENTS);
    assert_eq!(ledger.missing(), 0);
}

/// Redis frozen (SIGSTOP) for a few seconds while events flow: the consumer's calls time out, it
/// backs off, and after the resume it handles everything that was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_delays_but_loses_nothing() {
    const EVENTS: usize = 500;
    let server = Arc::new(RedisServer::start().await.unwrap());
    let prefix = unique("paused");
    // The publisher's breaker opens during the pause (default settings: open 1 s, doubling).
    let options = fast().with_response_timeout(Duration::from_millis(300));
    let publisher = transport(&server, &prefix, "writers", options.clone()).await;
    let consumer = transport(&server, &prefix, "ledger", options).await;
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let handle = consume_into(&consumer, &ledger).await;
    let publishers = spawn_publishers(&publisher, &ledger, EVENTS, 2);
    until("some events to be handled", || async {
        ledger.lock().unwrap().handled.len() >= EVENTS / 5
    })
    .await;
    server.pause().unwrap();
    // The fault lasts this long (the fault suite's SIGSTOP of 5 s); nothing waits on it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    server.resume().unwrap();
    let resumed = Instant::now();
    for task in publishers {
        within("the publishers", task).await.unwrap();
    }
    until("every acknowledged event to be handled", || async {
        ledger.lock().unwrap().missing() == 0
    })
    .await;
    tokio::time::timeout(HANG, consumer.unsubscribe(&handle))
        .await
        .unwrap()
        .unwrap();
    let ledger = ledger.lock().unwrap();
    println!(
        "fault suite, SIGSTOP 5 s: {} acknowledged, {} handled, {} duplicates, all handled \
         {:?} after the resume",
        ledger.acknowledged.len(),
        ledger.handled.len(),
        ledger.duplicates(),
        resumed.elapsed()
    );
    assert_eq!(ledger.missing(), 0);
}

/// An entry trimmed from its stream while pending (its handler failed, `MAXLEN` or `XTRIM` took
/// it before the retry) is reported when the claimer finds it gone, and acknowledged so that it
/// does not linger in the pending list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_trimmed_while_pending_are_reported() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("trimmed");
    let transport = transport(&server, &prefix, "workers", fast()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = transport
        .subscribe(vec!["job".to_string()], move |event: Event| {
            let _ = tx.send(number(&event));
            async { HandlerResult::Err("not yet".into()) }
        })
        .await
        .unwrap();
    let id = transport.publish(event("job", 1)).await.unwrap();
    assert_eq!(recv(&mut rx, "the first delivery").await, 1);
    let stream = transport.names().stream("job");
    let mut conn = server.connection().await.unwrap();
    let trimmed: i64 = redis::cmd("XTRIM")
        .arg(&stream)
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(trimmed, 1);
    until("the trimmed entry to be reported", || async {
        logged("deleted from the stream")
            .iter()
            .any(|line| line.contains(&stream) && line.contains(&id))
    })
    .await;
    until("the trimmed entry to leave the pending list", || async {
        crate::support::pending(&server, &stream, "workers").await == 0
    })
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
    assert!(
        rx.try_recv().is_err(),
        "a trimmed entry was delivered again"
    );
    assert!(xrange(&server, &transport.names().dlq()).await.is_empty());
}

/// While `XACK` is refused (here an ACL without it), the handled entries waiting for their
/// acknowledgement are bounded: the reader stops at as many as the buffer holds instead of
/// reading and handling the whole stream into memory. Once `XACK` is allowed again, everything
/// is acknowledged and reading goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_acknowledgements_pause_reading_instead_of_piling_up() {
    const EVENTS: usize = 60;
    const BUFFER: usize = 10;
    const READ_COUNT: usize = 5;
    crate::support::capture_logs();
    let server = RedisServer::builder()
        .acl_user_rules("noack", "pw-noack", &["~*", "&*", "+@all", "-xack"])
        .start()
        .await
        .unwrap();
    let prefix = unique("noack");
    let group = unique("paused");
    let transport = RedisTransport::with_options(
        RedisConfig::default()
            .with_url(server.url_with_user("noack", "pw-noack"))
            .with_stream_prefix(&prefix)
            .with_consumer_group(&group)
            .with_backpressure(
                redstream_core::BackpressureConfig::default().with_max_queue_size(BUFFER),
            ),
        fast()
            .with_read_count(READ_COUNT)
            .with_ack_batch_size(4)
            .with_claim_idle_time(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = transport
        .subscribe(vec!["order.created".to_owned()], move |event: Event| {
            let _ = tx.send(number(&event));
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    for n in 0..EVENTS {
        transport.publish(event("order.created", n)).await.unwrap();
    }
    until("reading to pause", || async {
        logged("reading paused")
            .iter()
            .any(|line| line.contains(&group))
    })
    .await;
    // Paused: what was read is at most the handled entries' limit, the last read and the
    // buffer, far from the whole stream.
    let read = pending_of_type(&server, &transport, "order.created", &group).await;
    let bound = (BUFFER + READ_COUNT + BUFFER) as u64;
    assert!(read <= bound, "{read} entries read, more than {bound}");
    assert!(!logged("permissions to run the 'xack' command").is_empty());

    let mut admin = server.connection().await.unwrap();
    acl_setuser(&mut admin, "noack", "+xack").await;
    let mut got = recv_n(&mut rx, EVENTS, "every event once XACK is allowed").await;
    got.sort_unstable();
    assert_eq!(got, (0..EVENTS).collect::<Vec<_>>());
    until("every entry acknowledged", || async {
        pending_of_type(&server, &transport, "order.created", &group).await == 0
    })
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
}

/// An entry in a running handler stays far from claimable even when a keep-alive round is
/// refused (here an ACL without `XCLAIM`, for one round): its idle time in Redis never reaches
/// five eighths of `claim_idle_time`. The keep-alive resets entries held for a quarter of it,
/// every eighth of it, so one refused round costs an eighth. (With resets at half of it every
/// quarter, a refused round let the idle time reach three quarters to all of it, and another
/// consumer's claim pass could take the entry from its running handler.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_keep_alive_round_leaves_a_held_entry_far_from_claimable() {
    const IDLE: Duration = Duration::from_millis(2400);
    crate::support::capture_logs();
    let server = RedisServer::builder()
        .acl_user_rules("keeper", "pw-keeper", &["~*", "&*", "+@all"])
        .start()
        .await
        .unwrap();
    let prefix = unique("keeper");
    let group = unique("kept");
    let transport = RedisTransport::with_options(
        RedisConfig::default()
            .with_url(server.url_with_user("keeper", "pw-keeper"))
            .with_stream_prefix(&prefix)
            .with_consumer_group(&group),
        fast().with_claim_idle_time(IDLE),
    )
    .await
    .unwrap();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (release_tx, release) = oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release)));
    let handle = transport
        .subscribe(vec!["order.created".to_owned()], move |_event: Event| {
            let _ = started_tx.send(());
            let release = release.lock().unwrap().take();
            async move {
                if let Some(release) = release {
                    let _ = release.await;
                }
                HandlerResult::Ok(())
            }
        })
        .await
        .unwrap();
    transport.publish(event("order.created", 1)).await.unwrap();
    recv(&mut started, "the handler to start").await;
    let stream = transport.names().stream("order.created");
    let mut admin = server.connection().await.unwrap();
    // The idle time of the one pending entry, in milliseconds.
    let idle = |mut conn: redis::aio::MultiplexedConnection| {
        let (stream, group) = (stream.clone(), group.clone());
        async move {
            let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(&stream)
                .arg(&group)
                .arg("-")
                .arg("+")
                .arg(10)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(pending.len(), 1, "one entry pending: {pending:?}");
            pending[0].2
        }
    };
    let limit = IDLE.as_millis() as u64 * 5 / 8;
    let mut most = 0;
    acl_setuser(&mut admin, "keeper", "-xclaim").await;
    // Watched until the keep-alive's refused round is logged (XPENDING is not refused: the
    // admin connection is the default user's)...
    let refused = || {
        logged("could not reset the idle time")
            .iter()
            .any(|line| line.contains(&group))
    };
    within("a keep-alive round to be refused", async {
        while !refused() {
            most = most.max(idle(admin.clone()).await);
            assert!(
                most < limit,
                "the held entry was idle for {most} ms before the refused round"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    acl_setuser(&mut admin, "keeper", "+xclaim").await;
    // ... and for a whole claim idle time after it.
    let watched_until = Instant::now() + IDLE;
    while Instant::now() < watched_until {
        most = most.max(idle(admin.clone()).await);
        assert!(
            most < limit,
            "the held entry was idle for {most} ms after a refused keep-alive round, \
             claimable at {} ms",
            IDLE.as_millis()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    release_tx.send(()).unwrap();
    until("the entry acknowledged", || async {
        pending_of_type(&server, &transport, "order.created", &group).await == 0
    })
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
}

/// `ACL SETUSER <user> <rule>` on `admin`.
async fn acl_setuser(admin: &mut redis::aio::MultiplexedConnection, user: &str, rule: &str) {
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(user)
        .arg(rule)
        .query_async(admin)
        .await
        .unwrap();
}
