//! Metrics: every name in `telemetry.rs` is recorded, with its labels, when the thing it counts
//! happens.
//!
//! Each test runs a current-thread runtime inside `metrics::with_local_recorder`, so every task
//! of the transport runs on the thread where the test's `DebuggingRecorder` is set, and tests
//! running in parallel do not see each other's metrics. Only counts are asserted, never
//! latencies.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use redstream_core::{CircuitBreakerConfig, ErrorKind, Event, HandlerResult};
use redstream_testkit::RedisServer;
use tokio::sync::mpsc;

use crate::support::{event, fast, number, recv, recv_n, transport, unique, until};

const PUBLISHED: &str = "redstream_transport_published_total";
const PUBLISH_ERRORS: &str = "redstream_transport_publish_errors_total";
const PUBLISH_LATENCY: &str = "redstream_transport_publish_latency_seconds";
const CONSUMED: &str = "redstream_transport_consumed_total";
const ACKED: &str = "redstream_transport_acked_total";
const RETRIED: &str = "redstream_transport_retried_total";
const DEAD_LETTERED: &str = "redstream_transport_dead_lettered_total";
const CLAIMED: &str = "redstream_transport_claimed_total";
const CLAIM_DELETED: &str = "redstream_transport_claim_deleted_total";
const DECODE_FAILURES: &str = "redstream_transport_decode_failures_total";
const HANDLER_LATENCY: &str = "redstream_transport_handler_latency_seconds";
const CIRCUIT_OPEN: &str = "redstream_transport_circuit_open";
const CIRCUIT_OPENED: &str = "redstream_transport_circuit_opened_total";

/// Runs `test` on a current-thread runtime with `recorder` as the thread's metrics recorder.
fn run_recorded<F: Future>(recorder: &DebuggingRecorder, test: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    ::metrics::with_local_recorder(recorder, || runtime.block_on(test))
}

/// `name{label=value,...}`, labels sorted: one key per metric and label set.
type Series = String;

fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// What a recorder has recorded so far. A `DebuggingRecorder` snapshot resets counters and
/// empties histograms, so the totals are kept here.
struct Recorded {
    snapshotter: Snapshotter,
    counters: RefCell<HashMap<Series, u64>>,
    samples: RefCell<HashMap<Series, usize>>,
    gauges: RefCell<HashMap<Series, f64>>,
}

impl Recorded {
    fn new(recorder: &DebuggingRecorder) -> Self {
        Self {
            snapshotter: recorder.snapshotter(),
            counters: RefCell::default(),
            samples: RefCell::default(),
            gauges: RefCell::default(),
        }
    }

    fn update(&self) {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
            let series = series(key.name(), &labels);
            match (kind, value) {
                (MetricKind::Counter, DebugValue::Counter(n)) => {
                    *self.counters.borrow_mut().entry(series).or_default() += n;
                }
                // A snapshot swaps a gauge to 0: a later 0 means "not set since", so only a
                // series' first value or a non-zero one replaces the one kept (a return to 0
                // cannot be told from no change here).
                (MetricKind::Gauge, DebugValue::Gauge(value)) => {
                    let value = value.into_inner();
                    let mut gauges = self.gauges.borrow_mut();
                    if value != 0.0 || !gauges.contains_key(&series) {
                        gauges.insert(series, value);
                    }
                }
                (MetricKind::Histogram, DebugValue::Histogram(values)) => {
                    *self.samples.borrow_mut().entry(series).or_default() += values.len();
                }
                (kind, value) => panic!("unexpected {kind:?} {series} = {value:?}"),
            }
        }
    }

    /// The total of a counter with exactly these labels (0 if never incremented).
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.update();
        self.counters
            .borrow()
            .get(&series(name, labels))
            .copied()
            .unwrap_or(0)
    }

    /// Every series of a counter, whatever its labels.
    fn counters_named(&self, name: &str) -> HashMap<Series, u64> {
        self.update();
        let prefix = format!("{name}{{");
        self.counters
            .borrow()
            .iter()
            .filter(|(series, _)| series.starts_with(&prefix))
            .map(|(series, n)| (series.clone(), *n))
            .collect()
    }

    /// Every series of a gauge, whatever its labels, with its last value.
    fn gauges_named(&self, name: &str) -> HashMap<Series, f64> {
        self.update();
        let prefix = format!("{name}{{");
        self.gauges
            .borrow()
            .iter()
            .filter(|(series, _)| series.starts_with(&prefix))
            .map(|(series, v)| (series.clone(), *v))
            .collect()
    }

    /// How many values a histogram with exactly these labels has received.
    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.update();
        self.samples
            .borrow()
            .get(&series(name, labels))
            .copied()
            .unwrap_or(0)
    }

    /// Waits until a counter reaches `expected`, then checks that it does not go past it.
    async fn wait_for(&self, name: &str, labels: &[(&str, &str)], expected: u64) {
        let what = format!("{} to reach {expected}", series(name, labels));
        until(&what, || {
            let reached = self.counter(name, labels) >= expected;
            async move { reached }
        })
        .await;
        assert_eq!(self.counter(name, labels), expected, "{what}");
    }
}

/// Publishing `N` events one at a time and a batch of `B`: the counter grows by the number of
/// events per type, and the latency histogram gets one sample per call.
#[test]
fn publishing_is_counted_per_event_type() {
    const N: usize = 5;
    const B: usize = 3;
    let recorder = DebuggingRecorder::new();
    let recorded = Recorded::new(&recorder);
    run_recorded(&recorder, async {
        let server = RedisServer::start().await.unwrap();
        let transport = transport(&server, &unique("m-pub"), "g", fast()).await;
        for n in 0..N {
            transport.publish(event("metric.single", n)).await.unwrap();
        }
        let batch = (0..B).map(|n| event("metric.batch", n)).collect();
        transport.publish_batch(batch).await.unwrap();

        assert_eq!(
            recorded.counter(PUBLISHED, &[("event_type", "metric.single")]),
            N as u64
        );
        assert_eq!(
            recorded.counter(PUBLISHED, &[("event_type", "metric.batch")]),
            B as u64
        );
        assert_eq!(recorded.samples(PUBLISH_LATENCY, &[]), N + 1);
        assert!(recorded.counters_named(PUBLISH_ERRORS).is_empty());
    });
}

/// Publishing while the server is gone: each failed call counts once under its error kind,
/// first the connection failures and then, once the breaker has opened, `circuit_open`.
#[test]
fn publish_errors_are_counted_by_kind() {
    const CALLS: usize = 6;
    let recorder = DebuggingRecorder::new();
    let recorded = Recorded::new(&recorder);
    run_recorded(&recorder, async {
        let server = RedisServer::start().await.unwrap();
        let options = fast()
            .with_connect_timeout(Duration::from_secs(1))
            .with_response_timeout(Duration::from_secs(1))
            .with_circuit_breaker(CircuitBreakerConfig {
                failure_threshold: 2,
                open_duration: Duration::from_secs(60),
                max_open_duration: None,
                ..CircuitBreakerConfig::default()
            });
        let transport = transport(&server, &unique("m-err"), "g", options).await;
        transport.publish(event("metric.err", 0)).await.unwrap();
        // The breaker's state is exported for the server, closed to begin with.
        let breaker = series(CIRCUIT_OPEN, &[("server", &server.url())]);
        assert_eq!(
            recorded.gauges_named(CIRCUIT_OPEN),
            HashMap::from([(breaker.clone(), 0.0)])
        );
        server.kill().unwrap();

        let mut kinds: HashMap<String, u64> = HashMap::new();
        for n in 0..CALLS {
            let err = transport.publish(event("metric.err", n)).await.unwrap_err();
            *kinds
                .entry(series(PUBLISH_ERRORS, &[("kind", err.kind().as_str())]))
                .or_default() += 1;
        }
        println!("publish errors with the server killed: {kinds:?}");
        let open = series(PUBLISH_ERRORS, &[("kind", ErrorKind::CircuitOpen.as_str())]);
        assert_eq!(kinds.get(&open), Some(&(CALLS as u64 - 2)), "{kinds:?}");
        assert_eq!(recorded.counters_named(PUBLISH_ERRORS), kinds);
        assert_eq!(
            recorded.counter(PUBLISHED, &[("event_type", "metric.err")]),
            1
        );
        assert_eq!(recorded.samples(PUBLISH_LATENCY, &[]), 1);
        // The breaker opened once, and says so.
        assert_eq!(
            recorded.gauges_named(CIRCUIT_OPEN),
            HashMap::from([(breaker, 1.0)])
        );
        assert_eq!(
            recorded.counter(CIRCUIT_OPENED, &[("server", &server.url())]),
            1
        );
    });
}

/// A subscription that handles `N` events: `N` consumed with the event type and group, `N`
/// handler latency samples, `N` acknowledged, and nothing retried or dead-lettered.
#[test]
fn consuming_and_acking_are_counted() {
    const N: usize = 4;
    let recorder = DebuggingRecorder::new();
    let recorded = Recorded::new(&recorder);
    run_recorded(&recorder, async {
        let server = RedisServer::start().await.unwrap();
        let transport = transport(&server, &unique("m-consume"), "readers", fast()).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let handle = transport
            .subscribe(vec!["metric.consumed".to_owned()], move |event: Event| {
                let _ = tx.send(event);
                async { HandlerResult::Ok(()) }
            })
            .await
            .unwrap();
        for n in 0..N {
            transport
                .publish(event("metric.consumed", n))
                .await
                .unwrap();
        }
        recv_n(&mut rx, N, "the handled events").await;

        let labels = [("event_type", "metric.consumed"), ("group", "readers")];
        recorded
            .wait_for(ACKED, &[("group", "readers")], N as u64)
            .await;
        assert_eq!(recorded.counter(CONSUMED, &labels), N as u64);
        assert_eq!(recorded.samples(HANDLER_LATENCY, &labels), N);
        assert!(recorded.counters_named(RETRIED).is_empty());
        assert!(recorded.counters_named(DEAD_LETTERED).is_empty());
        transport.unsubscribe(&handle).await.unwrap();
    });
}

/// A handler that always fails with `max_deliveries = 1`: each event is dead-lettered with
/// reason `handler`. A raw entry without the `event` field: a decode failure on its stream and a
/// dead letter with reason `decode`, without reaching the handler.
#[test]
fn dead_letters_and_decode_failures_are_counted() {
    const N: usize = 2;
    let recorder = DebuggingRecorder::new();
    let recorded = Recorded::new(&recorder);
    run_recorded(&recorder, async {
        let server = RedisServer::start().await.unwrap();
        let transport = transport(
            &server,
            &unique("m-dlq"),
            "failing",
            fast().with_max_deliveries(1),
        )
        .await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let handle = transport
            .subscribe(
                vec!["metric.fail".to_owned(), "metric.poison".to_owned()],
                move |event: Event| {
                    let _ = tx.send(event);
                    async { HandlerResult::Err("always fails".into()) }
                },
            )
            .await
            .unwrap();
        for n in 0..N {
            transport.publish(event("metric.fail", n)).await.unwrap();
        }
        let poison_stream = transport.names().stream("metric.poison");
        let mut conn = server.connection().await.unwrap();
        let _: String = redis::cmd("XADD")
            .arg(&poison_stream)
            .arg("*")
            .arg("foo")
            .arg("bar")
            .query_async(&mut conn)
            .await
            .unwrap();

        recv_n(&mut rx, N, "the failing deliveries").await;
        recorded
            .wait_for(DEAD_LETTERED, &[("reason", "handler")], N as u64)
            .await;
        recorded
            .wait_for(DEAD_LETTERED, &[("reason", "decode")], 1)
            .await;
        assert_eq!(
            recorded.counter(DECODE_FAILURES, &[("stream", &poison_stream)]),
            1
        );
        let fail = [("event_type", "metric.fail"), ("group", "failing")];
        assert_eq!(recorded.counter(CONSUMED, &fail), N as u64);
        assert!(recorded.counters_named(RETRIED).is_empty());
        assert!(
            rx.try_recv().is_err(),
            "the poison entry reached the handler"
        );
        transport.unsubscribe(&handle).await.unwrap();
    });
}

/// A handler that fails once: one retry, the entry claimed back after `claim_idle_time`,
/// handled again and acknowledged. A failed entry deleted from the stream while pending: found
/// by the claimer among `XAUTOCLAIM`'s deleted ids and counted.
#[test]
fn retries_claims_and_deleted_pending_entries_are_counted() {
    let recorder = DebuggingRecorder::new();
    let recorded = Recorded::new(&recorder);
    run_recorded(&recorder, async {
        let server = RedisServer::start().await.unwrap();
        let transport = transport(
            &server,
            &unique("m-retry"),
            "retriers",
            fast().with_max_deliveries(5),
        )
        .await;
        let failed_once = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let handle = transport
            .subscribe(vec!["metric.retry".to_owned()], move |event: Event| {
                let n = number(&event);
                let fail = n == 1 || (n == 0 && !failed_once.swap(true, Ordering::SeqCst));
                let _ = tx.send((n, fail));
                async move {
                    if fail {
                        HandlerResult::Err("not yet".into())
                    } else {
                        HandlerResult::Ok(())
                    }
                }
            })
            .await
            .unwrap();

        // Event 0 fails once, then succeeds.
        transport.publish(event("metric.retry", 0)).await.unwrap();
        assert_eq!(recv(&mut rx, "the first delivery").await, (0, true));
        assert_eq!(recv(&mut rx, "the second delivery").await, (0, false));
        let labels = [("event_type", "metric.retry"), ("group", "retriers")];
        recorded.wait_for(ACKED, &[("group", "retriers")], 1).await;
        assert_eq!(recorded.counter(RETRIED, &labels), 1);
        assert_eq!(recorded.counter(CONSUMED, &labels), 2);
        assert_eq!(recorded.counter(CLAIMED, &[("group", "retriers")]), 1);

        // Event 1 fails and is deleted while pending.
        let id = transport.publish(event("metric.retry", 1)).await.unwrap();
        assert_eq!(recv(&mut rx, "the failing delivery").await, (1, true));
        let stream = transport.names().stream("metric.retry");
        let mut conn = server.connection().await.unwrap();
        let deleted: i64 = redis::cmd("XDEL")
            .arg(&stream)
            .arg(&id)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(deleted, 1);
        recorded
            .wait_for(CLAIM_DELETED, &[("group", "retriers")], 1)
            .await;
        assert_eq!(recorded.counter(RETRIED, &labels), 2);
        transport.unsubscribe(&handle).await.unwrap();
    });
}
