//! Benchmarks of the core's hot paths, each next to a baseline doing the same work without
//! redstream, in the same run:
//!
//! - `wire_format`: `wire::encode` / `wire::decode_entry` / `wire::decode_stream_entry` of a
//!   whole event vs `serde_json` on the bare payload (what a hand-rolled publisher would put in
//!   the entry);
//! - `circuit_breaker`: a call through a closed breaker vs the same call made directly;
//! - `on_redis`: XADD of an encoded event and XRANGE + decode of it, on a private
//!   `redis-server`, vs raw redis-rs doing XADD / XRANGE of the bare payload.
//!
//! Run with `cargo bench -p redstream-core`.

// A benchmark that fails should stop loudly.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use redstream_core::wire::{self, EVENT_FIELD};
use redstream_core::{CircuitBreaker, CircuitBreakerConfig, Event, EventLimits, EventMetadata};
use redstream_testkit::RedisServer;
use serde_json::{Value, json};

/// The private server of the `on_redis` group, with a runtime and a connection to it.
struct Bench {
    server: RedisServer,
    runtime: tokio::runtime::Runtime,
    conn: redis::aio::MultiplexedConnection,
}

static REDIS: OnceLock<Bench> = OnceLock::new();

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (server, conn) = runtime.block_on(async {
        let server = RedisServer::start().await.unwrap();
        let conn = server.connection().await.unwrap();
        (server, conn)
    });
    let _ = REDIS.set(Bench {
        server,
        runtime,
        conn,
    });
    divan::main();
    // Statics are never dropped: stop the server by hand.
    if let Some(bench) = REDIS.get() {
        bench.server.kill().unwrap();
    }
}

fn sample_event() -> Event {
    Event::new(
        "order.created",
        json!({
            "order_id": "12345",
            "total": 99.99,
            "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
            "customer": {"id": "c-42", "tier": "gold"}
        }),
        EventMetadata::default(),
    )
    .with_source("checkout")
    .with_correlation_id("req-42")
    .with_header(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
}

mod wire_format {
    use super::*;

    #[divan::bench]
    fn encode_event(bencher: divan::Bencher<'_, '_>) {
        let event = sample_event();
        let limits = EventLimits::default();
        bencher.bench_local(|| wire::encode(black_box(&event), &limits).unwrap());
    }

    #[divan::bench]
    fn baseline_serde_json_payload_to_string(bencher: divan::Bencher<'_, '_>) {
        let event = sample_event();
        bencher.bench_local(|| serde_json::to_string(black_box(event.payload())).unwrap());
    }

    #[divan::bench]
    fn decode_entry(bencher: divan::Bencher<'_, '_>) {
        let limits = EventLimits::default();
        let envelope = wire::encode(&sample_event(), &limits).unwrap();
        let fields = [(EVENT_FIELD, envelope.as_str())];
        bencher.bench_local(|| wire::decode_entry(black_box(fields), &limits).unwrap());
    }

    /// What a stream reader calls: the entry id is parsed too (and used when the envelope has
    /// no timestamp, as in the second case).
    #[divan::bench(args = ["with metadata", "without metadata"])]
    fn decode_stream_entry(bencher: divan::Bencher<'_, '_>, case: &str) {
        let limits = EventLimits::default();
        let envelope = if case == "with metadata" {
            wire::encode(&sample_event(), &limits).unwrap()
        } else {
            json!({"id": "evt-1", "type": "order.created", "payload": sample_event().payload()})
                .to_string()
        };
        let fields = [(EVENT_FIELD, envelope.as_str())];
        bencher.bench_local(|| {
            wire::decode_stream_entry(black_box("1700000000123-0"), black_box(fields), &limits)
                .unwrap()
        });
    }

    #[divan::bench]
    fn baseline_serde_json_payload_from_str(bencher: divan::Bencher<'_, '_>) {
        let payload = serde_json::to_string(sample_event().payload()).unwrap();
        bencher.bench_local(|| serde_json::from_str::<Value>(black_box(&payload)).unwrap());
    }
}

/// Polls a future that completes without waiting, once, with no runtime in the way.
fn poll_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the benchmarked future was expected to be ready"),
    }
}

mod circuit_breaker {
    use super::*;

    #[divan::bench]
    fn call_through_closed_breaker(bencher: divan::Bencher<'_, '_>) {
        let breaker = CircuitBreaker::new(CircuitBreakerConfig::default()).unwrap();
        bencher.bench_local(|| {
            poll_ready(breaker.call(|| async { Ok::<u64, redstream_core::Error>(black_box(1)) }))
                .unwrap()
        });
    }

    #[divan::bench]
    fn baseline_direct_call(bencher: divan::Bencher<'_, '_>) {
        bencher.bench_local(|| {
            poll_ready(async { Ok::<u64, redstream_core::Error>(black_box(1)) }).unwrap()
        });
    }
}

mod on_redis {
    use super::*;

    const STREAM: &str = "{bench}:order.created";

    fn bench() -> &'static Bench {
        REDIS.get().unwrap()
    }

    #[divan::bench]
    fn xadd_encoded_event(bencher: divan::Bencher<'_, '_>) {
        let Bench { runtime, conn, .. } = bench();
        let event = sample_event();
        let limits = EventLimits::default();
        bencher.bench_local(|| {
            let envelope = wire::encode(&event, &limits).unwrap();
            let mut conn = conn.clone();
            runtime.block_on(async move {
                redis::cmd("XADD")
                    .arg(STREAM)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(10_000)
                    .arg("*")
                    .arg(EVENT_FIELD)
                    .arg(envelope)
                    .query_async::<String>(&mut conn)
                    .await
                    .unwrap()
            })
        });
    }

    #[divan::bench]
    fn baseline_raw_xadd_payload(bencher: divan::Bencher<'_, '_>) {
        let Bench { runtime, conn, .. } = bench();
        let event = sample_event();
        bencher.bench_local(|| {
            let payload = serde_json::to_string(event.payload()).unwrap();
            let mut conn = conn.clone();
            runtime.block_on(async move {
                redis::cmd("XADD")
                    .arg("{bench}:raw")
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(10_000)
                    .arg("*")
                    .arg("payload")
                    .arg(payload)
                    .query_async::<String>(&mut conn)
                    .await
                    .unwrap()
            })
        });
    }

    type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;

    #[divan::bench]
    fn xrange_and_decode_event(bencher: divan::Bencher<'_, '_>) {
        let Bench { runtime, conn, .. } = bench();
        let limits = EventLimits::default();
        let envelope = wire::encode(&sample_event(), &limits).unwrap();
        let mut setup = conn.clone();
        runtime.block_on(async {
            redis::cmd("XADD")
                .arg("{bench}:read")
                .arg("*")
                .arg(EVENT_FIELD)
                .arg(&envelope)
                .query_async::<String>(&mut setup)
                .await
                .unwrap()
        });
        bencher.bench_local(|| {
            let mut conn = conn.clone();
            let entries: Entries = runtime.block_on(async move {
                redis::cmd("XRANGE")
                    .arg("{bench}:read")
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await
                    .unwrap()
            });
            let (id, fields) = entries.into_iter().next().unwrap();
            wire::decode_stream_entry(&id, fields, &limits).unwrap()
        });
    }

    #[divan::bench]
    fn baseline_raw_xrange_payload(bencher: divan::Bencher<'_, '_>) {
        let Bench { runtime, conn, .. } = bench();
        let payload = serde_json::to_string(sample_event().payload()).unwrap();
        let mut setup = conn.clone();
        runtime.block_on(async {
            redis::cmd("XADD")
                .arg("{bench}:read-raw")
                .arg("*")
                .arg("payload")
                .arg(&payload)
                .query_async::<String>(&mut setup)
                .await
                .unwrap()
        });
        bencher.bench_local(|| {
            let mut conn = conn.clone();
            let entries: Entries = runtime.block_on(async move {
                redis::cmd("XRANGE")
                    .arg("{bench}:read-raw")
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await
                    .unwrap()
            });
            let (_, fields) = entries.into_iter().next().unwrap();
            serde_json::from_slice::<Value>(&fields[0].1).unwrap()
        });
    }
}
