//! When entries a consumer holds or failed to handle come back: a held entry is kept alive
//! (a long handler, entries waiting for room in the buffer), and failed entries are claimed
//! again with the streams of a subscription in turn and while a backlog is read (the readers
//! leave the claims a tenth of a blocking buffer).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redstream_core::{BackpressureConfig, Event, HandlerResult};
use redstream_testkit::RedisServer;
use redstream_transport::{RawEntry, RedisConfig, RedisTransport, StartFrom, TransportOptions};
use tokio::sync::mpsc;

use crate::support::{
    capture_logs, config_for, event, fast, number, pending_on, recv, recv_n, transport, unique,
    until, within,
};

/// A transport on `server` in group `group` whose consumer buffer (`Block`) holds `places`
/// entries.
async fn with_buffer(
    server: &RedisServer,
    prefix: &str,
    group: &str,
    places: usize,
    options: TransportOptions,
) -> RedisTransport {
    capture_logs();
    RedisTransport::with_options(
        config_for(server, prefix, group)
            .with_backpressure(BackpressureConfig::default().with_max_queue_size(places)),
        options,
    )
    .await
    .unwrap()
}

/// Subscribes `transport` to `a` and `b`, whose one event fails its first delivery, until that
/// event comes back; returns what `then` said at that moment. `on_a` handles `a`'s events (by
/// number).
async fn until_b_comes_back<A, F, T>(transport: &RedisTransport, on_a: A, then: T) -> usize
where
    A: Fn(usize) -> F + Send + Sync + 'static,
    F: Future<Output = HandlerResult> + Send + 'static,
    T: Fn() -> usize + Send + Sync + 'static,
{
    let b_deliveries = Arc::new(AtomicUsize::new(0));
    let seen_then = Arc::new(AtomicUsize::new(usize::MAX));
    let handle = {
        let (b_deliveries, seen_then) = (Arc::clone(&b_deliveries), Arc::clone(&seen_then));
        transport
            .subscribe(
                vec!["a".to_string(), "b".to_string()],
                move |event: Event| -> Pin<Box<dyn Future<Output = HandlerResult> + Send>> {
                    if event.event_type() == "a" {
                        return Box::pin(on_a(number(&event)));
                    }
                    let first = b_deliveries.fetch_add(1, Ordering::SeqCst) == 0;
                    if !first {
                        seen_then.store(then(), Ordering::SeqCst);
                    }
                    Box::pin(async move {
                        if first {
                            HandlerResult::Err("the first delivery fails".into())
                        } else {
                            HandlerResult::Ok(())
                        }
                    })
                },
            )
            .await
            .unwrap()
    };
    until("b's event delivered again", || async {
        b_deliveries.load(Ordering::SeqCst) >= 2
    })
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
    seen_then.load(Ordering::SeqCst)
}

/// A handler running for several claim idle times keeps its entry: another consumer of the
/// group, claiming all along, never takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_handler_keeps_its_entry() {
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("long");
    let options = fast();
    let slow_for = options.claim_idle_time * 5;
    let first = transport(&server, &prefix, "workers", options.clone()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let first_handle = {
        let tx = tx.clone();
        first
            .subscribe(vec!["export".to_string()], move |event: Event| {
                let (tx, started_tx) = (tx.clone(), started_tx.clone());
                async move {
                    let _ = started_tx.send(());
                    tokio::time::sleep(slow_for).await;
                    let _ = tx.send(("first", number(&event)));
                    HandlerResult::Ok(())
                }
            })
            .await
            .unwrap()
    };
    first.publish(event("export", 1)).await.unwrap();
    recv(&mut started, "the slow handler to start").await;
    let second = transport(&server, &prefix, "workers", options).await;
    let second_handle = second
        .subscribe(vec!["export".to_string()], move |event: Event| {
            let _ = tx.send(("second", number(&event)));
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    assert_eq!(
        recv(&mut rx, "the slow handler to finish").await,
        ("first", 1)
    );
    within("unsubscribe", first.unsubscribe(&first_handle))
        .await
        .unwrap();
    within("unsubscribe", second.unsubscribe(&second_handle))
        .await
        .unwrap();
    assert!(
        rx.try_recv().is_err(),
        "the entry was claimed from a live consumer"
    );
}

/// The entries of one read that wait for room in a full buffer are held like those in it: the
/// keep-alive refreshes them, and another consumer of the group, claiming all along, takes none
/// of them while the only worker is busy for several claim idle times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_waiting_for_room_in_the_buffer_are_kept() {
    const EVENTS: usize = 5;
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("waiting");
    let options = fast()
        .with_start_from(StartFrom::Beginning)
        .with_read_count(EVENTS)
        .with_handler_concurrency(1);
    let slow_for = options.claim_idle_time * 5;
    // All five in the stream before the group exists: the first read takes them together.
    let first = with_buffer(&server, &prefix, "workers", 1, options.clone()).await;
    for n in 0..EVENTS {
        first.publish(event("export", n)).await.unwrap();
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let first_handle = {
        let tx = tx.clone();
        first
            .subscribe(vec!["export".to_string()], move |event: Event| {
                let (tx, started_tx) = (tx.clone(), started_tx.clone());
                async move {
                    let n = number(&event);
                    if n == 0 {
                        // One entry in the handler, one in the buffer, three waiting for room.
                        let _ = started_tx.send(());
                        tokio::time::sleep(slow_for).await;
                    }
                    let _ = tx.send(("first", n));
                    HandlerResult::Ok(())
                }
            })
            .await
            .unwrap()
    };
    recv(&mut started, "the slow handler to start").await;
    let second = transport(&server, &prefix, "workers", options).await;
    let second_handle = second
        .subscribe(vec!["export".to_string()], move |event: Event| {
            let _ = tx.send(("second", number(&event)));
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    let handled = recv_n(&mut rx, EVENTS, "every event handled").await;
    within("unsubscribe", first.unsubscribe(&first_handle))
        .await
        .unwrap();
    within("unsubscribe", second.unsubscribe(&second_handle))
        .await
        .unwrap();
    let expected: Vec<(&str, usize)> = (0..EVENTS).map(|n| ("first", n)).collect();
    assert_eq!(
        handled, expected,
        "an entry was claimed from a live consumer"
    );
    assert!(rx.try_recv().is_err(), "an entry was handled twice");
}

/// Claim passes take the streams of a subscription in turn: a stream whose failing entries
/// are idle by the dozen at every tick does not keep the buffer's room from the failed entry of
/// the stream after it. (In a fixed order, `b`'s entry came back only once every entry of `a`
/// had been delivered `max_deliveries` times and dead-lettered.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_many_failures_does_not_hold_back_the_claims_of_the_next() {
    const FAILING: usize = 50;
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("turns");
    let options = fast()
        .with_start_from(StartFrom::Beginning)
        .with_read_count(10);
    let max_deliveries = options.max_deliveries as usize;
    let transport = with_buffer(&server, &prefix, "workers", 10, options).await;
    for n in 0..FAILING {
        transport.publish(event("a", n)).await.unwrap();
    }
    transport.publish(event("b", 0)).await.unwrap();
    // Deliveries of each of `a`'s events, which all fail; the most any had when `b`'s came
    // back.
    let a_deliveries = Arc::new(Mutex::new(HashMap::<usize, usize>::new()));
    let counted = Arc::clone(&a_deliveries);
    let most = until_b_comes_back(
        &transport,
        move |n| {
            *counted.lock().unwrap().entry(n).or_default() += 1;
            async { HandlerResult::Err("failing on purpose".into()) }
        },
        move || {
            let most = a_deliveries.lock().unwrap().values().copied().max();
            most.unwrap_or(0)
        },
    )
    .await;
    assert!(
        most < max_deliveries - 1,
        "b's failed entry came back only when a's entries had been delivered {most} times \
         (max_deliveries {max_deliveries})"
    );
}

/// While a consumer reads a backlog that keeps its buffer full, a failed entry still comes back:
/// the readers leave a tenth of the buffer (with the `Block` strategy) to the claim passes.
/// (Without that, every place a worker freed went to the reader's next entry, and `b`'s entry
/// came back only once `a`'s backlog was read.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_entry_comes_back_while_a_backlog_is_read() {
    const BACKLOG: usize = 300;
    let server = RedisServer::start().await.unwrap();
    let prefix = unique("reserve");
    let options = fast()
        .with_start_from(StartFrom::Beginning)
        .with_read_count(10)
        .with_handler_concurrency(1);
    let transport = with_buffer(&server, &prefix, "workers", 20, options).await;
    transport.publish(event("b", 0)).await.unwrap();
    for n in 0..BACKLOG {
        transport.publish(event("a", n)).await.unwrap();
    }
    let a_handled = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&a_handled);
    let then = until_b_comes_back(
        &transport,
        move |_| {
            let counted = Arc::clone(&counted);
            async move {
                // A steady backlog: the reader always has an entry waiting for room.
                tokio::time::sleep(Duration::from_millis(10)).await;
                counted.fetch_add(1, Ordering::SeqCst);
                HandlerResult::Ok(())
            }
        },
        move || a_handled.load(Ordering::SeqCst),
    )
    .await;
    println!("b's failed entry came back after {then} of the {BACKLOG} backlog entries");
    assert!(
        then < BACKLOG / 2,
        "b's failed entry came back only after {then} of the {BACKLOG} backlog entries"
    );
}

/// Claimed entries come with their delivery counts (read by an `XPENDING` in the same pipeline
/// as each `XAUTOCLAIM`, one less than after the claim), also past pending entries deleted from
/// the stream, which count among a claim's `COUNT` (here `read_count`, 1). The deleted entries
/// are acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_entries_keep_their_delivery_counts_past_deleted_ones() {
    let server = RedisServer::start().await.unwrap();
    let conn = server.connection().await.unwrap();
    claims_keep_delivery_counts(&server.url(), conn).await;
}

/// A consumer that starts under the name of one that went away re-reads that name's pending
/// entries with their delivery counts (read in the same pipeline as each re-read, as for a
/// claim), pages of `read_count` at a time, past an entry deleted from the stream, which is
/// acknowledged. The claim idle time is an hour: only the re-read can deliver them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reread_entries_keep_their_delivery_counts() {
    let server = RedisServer::start().await.unwrap();
    let conn = server.connection().await.unwrap();
    rereads_keep_delivery_counts(&server.url(), conn).await;
}

/// `claimed_entries_keep_their_delivery_counts_past_deleted_ones` on the server at `url`,
/// set up and checked through `conn` (a cluster's too).
pub(crate) async fn claims_keep_delivery_counts<C>(url: &str, mut conn: C)
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync,
{
    const STREAM: &str = "claims.counted";
    const GROUP: &str = "counters";
    capture_logs();
    let transport = RedisTransport::with_options(counting_config(url), fast().with_read_count(1))
        .await
        .unwrap();
    let ids = add_entries(&mut conn, STREAM, GROUP, 4).await;
    // A consumer that reads all four, twice over (two deliveries each), and goes away.
    read_as(&mut conn, STREAM, GROUP, "gone", ">", 4).await;
    read_as(&mut conn, STREAM, GROUP, "gone", "0", 4).await;
    delete(&mut conn, STREAM, &ids[..2]).await;
    // Idle for `claim_idle_time` before the first claim pass, which would otherwise find them
    // all too recent, acknowledge the deleted ones alone, and claim the live ones at a later
    // pass with nothing deleted in front of them.
    until("the four entries idle for claim_idle_time", || {
        let mut conn = conn.clone();
        async move {
            let idle: Vec<redis::Value> = redis::cmd("XPENDING")
                .arg(STREAM)
                .arg(GROUP)
                .arg("IDLE")
                .arg(300)
                .arg("-")
                .arg("+")
                .arg(10)
                .query_async(&mut conn)
                .await
                .unwrap();
            idle.len() == 4
        }
    })
    .await;

    let (handle, mut rx) = subscribe_counting(&transport, STREAM, GROUP).await;
    let mut got = recv_n(&mut rx, 2, "the claimed entries").await;
    got.sort();
    assert_eq!(
        got,
        vec![(ids[2].clone(), 3), (ids[3].clone(), 3)],
        "each live entry is handled once, delivered twice before this claim"
    );
    until(
        "the deleted entries acknowledged and the live ones handled",
        || {
            let mut conn = conn.clone();
            async move { pending_on(&mut conn, STREAM, GROUP).await == 0 }
        },
    )
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
    assert!(
        rx.try_recv().is_err(),
        "no entry was handled twice: {:?}",
        rx.try_recv()
    );
}

/// `reread_entries_keep_their_delivery_counts` on the server at `url`, set up and checked
/// through `conn` (a cluster's too).
pub(crate) async fn rereads_keep_delivery_counts<C>(url: &str, mut conn: C)
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync,
{
    const STREAM: &str = "rereads.counted";
    const GROUP: &str = "counters";
    const NAME: &str = "worker-7";
    capture_logs();
    let transport = RedisTransport::with_options(
        counting_config(url).with_consumer_name(NAME),
        fast()
            .with_read_count(2)
            .with_claim_idle_time(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let ids = add_entries(&mut conn, STREAM, GROUP, 5).await;
    // The earlier life of the name: every entry read, the first three twice.
    read_as(&mut conn, STREAM, GROUP, NAME, ">", 5).await;
    read_as(&mut conn, STREAM, GROUP, NAME, "0", 3).await;
    delete(&mut conn, STREAM, &ids[1..2]).await;

    let (handle, mut rx) = subscribe_counting(&transport, STREAM, GROUP).await;
    let mut got = recv_n(&mut rx, 4, "the re-read entries").await;
    got.sort();
    assert_eq!(
        got,
        vec![
            (ids[0].clone(), 3),
            (ids[2].clone(), 3),
            (ids[3].clone(), 2),
            (ids[4].clone(), 2),
        ],
        "each entry is handled once, with one delivery more than before"
    );
    until("every entry acknowledged, the deleted one too", || {
        let mut conn = conn.clone();
        async move { pending_on(&mut conn, STREAM, GROUP).await == 0 }
    })
    .await;
    within("unsubscribe", transport.unsubscribe(&handle))
        .await
        .unwrap();
}

fn counting_config(url: &str) -> RedisConfig {
    RedisConfig::default()
        .with_url(url)
        .with_stream_prefix(unique("counts"))
        .with_consumer_group("g")
        .with_consumer_name(unique("consumer"))
}

/// `count` entries added to `stream`, whose group `group` is created before any is read.
async fn add_entries<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    stream: &str,
    group: &str,
    count: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        let id: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("n")
            .arg(n)
            .query_async(conn)
            .await
            .unwrap();
        ids.push(id);
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .query_async(conn)
        .await
        .unwrap();
    ids
}

/// `XREADGROUP GROUP <group> <consumer> COUNT <count> STREAMS <stream> <after>`.
async fn read_as<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    stream: &str,
    group: &str,
    consumer: &str,
    after: &str,
    count: usize,
) {
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(after)
        .query_async(conn)
        .await
        .unwrap();
}

async fn delete<C: redis::aio::ConnectionLike>(conn: &mut C, stream: &str, ids: &[String]) {
    let _: i64 = redis::cmd("XDEL")
        .arg(stream)
        .arg(ids)
        .query_async(conn)
        .await
        .unwrap();
}

/// A raw subscription to `stream` in `group` that sends each entry's id and delivery count.
async fn subscribe_counting(
    transport: &RedisTransport,
    stream: &str,
    group: &str,
) -> (
    redstream_core::SubscriptionHandle,
    mpsc::UnboundedReceiver<(String, u32)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = transport
        .subscription()
        .streams([stream])
        .group(group)
        .handle_raw(move |entry: RawEntry| {
            let _ = tx.send((entry.id, entry.deliveries));
            async { HandlerResult::Ok(()) }
        })
        .await
        .unwrap();
    (handle, rx)
}
