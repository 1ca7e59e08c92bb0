//! Micro-benchmarks of the core's hot paths, each next to a baseline doing the same work
//! without redstream:
//!
//! - `wire::encode` vs `serde_json::to_string` of the bare payload (what a hand-rolled
//!   publisher would put in the entry);
//! - `wire::decode_entry` vs `serde_json::from_str` of the bare payload;
//! - `CircuitBreaker::call` vs awaiting the same future directly.
//!
//! Run with `cargo bench -p redstream-core`.

// A benchmark that fails should stop loudly.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use redstream_core::wire::{self, EVENT_FIELD};
use redstream_core::{CircuitBreaker, CircuitBreakerConfig, Event, EventLimits, EventMetadata};
use serde_json::{Value, json};

fn main() {
    divan::main();
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

    #[divan::bench]
    fn baseline_serde_json_payload_from_str(bencher: divan::Bencher<'_, '_>) {
        let payload = serde_json::to_string(sample_event().payload()).unwrap();
        bencher.bench_local(|| serde_json::from_str::<Value>(black_box(&payload)).unwrap());
    }
}

mod circuit_breaker {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[divan::bench]
    fn call_through_closed_breaker(bencher: divan::Bencher<'_, '_>) {
        let rt = runtime();
        let breaker = CircuitBreaker::new(CircuitBreakerConfig::default()).unwrap();
        bencher.bench_local(|| {
            rt.block_on(
                breaker.call(|| async { Ok::<u64, redstream_core::Error>(black_box(1u64)) }),
            )
            .unwrap()
        });
    }

    #[divan::bench]
    fn baseline_direct_call(bencher: divan::Bencher<'_, '_>) {
        let rt = runtime();
        bencher.bench_local(|| {
            rt.block_on(async { Ok::<u64, redstream_core::Error>(black_box(1u64)) })
                .unwrap()
        });
    }
}
