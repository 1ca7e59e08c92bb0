//! The sink's metrics, through a `DebuggingRecorder` local to the test's thread.

use std::collections::HashMap;

use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use redstream_core::{BatchSink, RetryPolicy, SourcePosition};
use redstream_sink::RedisSink;
use redstream_testkit::RedisServer;

use crate::{config, events};

#[test]
fn batches_events_latency_and_errors_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let server = RedisServer::start().await.unwrap();
            let sink = RedisSink::new(config(&server.url(), "{metrics}.events")).unwrap();
            for i in 0..3 {
                sink.send_batch(events(4), Some(SourcePosition::new(i.to_string())))
                    .await
                    .unwrap();
            }
            server.kill().unwrap();
            let down = RedisSink::new(
                config(&server.url(), "{metrics}.events").with_retry(
                    RetryPolicy::default()
                        .with_initial_delay(std::time::Duration::from_millis(1))
                        .with_max_attempts(Some(2)),
                ),
            )
            .unwrap();
            down.send_batch(events(1), None).await.unwrap_err();
            // Refused before sending: counted as an error of its kind all the same.
            let small =
                RedisSink::new(config(&server.url(), "{metrics}.events").with_max_batch_events(1))
                    .unwrap();
            small.send_batch(events(2), None).await.unwrap_err();
        });
    });

    let mut counters = HashMap::new();
    let mut samples = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let series = format!("{}{{{}}}", key.name(), labels.join(","));
        match (kind, value) {
            (MetricKind::Counter, DebugValue::Counter(n)) => {
                counters.insert(series, n);
            }
            (MetricKind::Histogram, DebugValue::Histogram(values)) => {
                samples.insert(series, values.len());
            }
            (kind, value) => panic!("unexpected {kind:?} {series} = {value:?}"),
        }
    }
    let sink = "sink=test-sink";
    assert_eq!(
        counters[&format!("redstream_sink_batch_total{{{sink}}}")],
        3
    );
    assert_eq!(
        counters[&format!("redstream_sink_events_total{{{sink}}}")],
        12
    );
    assert_eq!(
        samples[&format!("redstream_sink_latency_seconds{{{sink}}}")],
        3
    );
    assert_eq!(
        counters[&format!("redstream_sink_retries_total{{{sink}}}")],
        1
    );
    assert_eq!(
        counters[&format!("redstream_sink_errors_total{{kind=connection,{sink}}}")],
        2
    );
    assert_eq!(
        counters[&format!("redstream_sink_errors_total{{kind=invalid_input,{sink}}}")],
        1
    );
}
