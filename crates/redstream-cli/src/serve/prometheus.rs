//! `GET /metrics`: Prometheus text exposition of the streams and of the dashboard itself.
//!
//! Each scrape reads the streams overview, the nodes and `INFO` afresh and records them, with the
//! dashboard's counters, into a recorder of its own that is rendered and dropped: a stream
//! deleted since the last scrape disappears from the next one instead of lingering with its
//! last value, and nothing is installed as the process's global recorder.
//!
//! When Redis cannot be read, the answer is still 200 with `redstream_redis_up 0` and the
//! dashboard's counters: an exporter that fails its scrape hides why.
//!
//! Names follow redis_exporter's stream metrics where the meaning is the same
//! (`redis_stream_group_lag` is `redstream_stream_group_lag` here), and Prometheus's rules:
//! `_total` on counters, base units (`_seconds`). docs/observability.md lists every metric
//! with the command it comes from; `.ci/check-observability` checks that every name the Grafana
//! dashboard queries is one of the names [`describe`] gives.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;
use redstream_transport::{NodeStats, ServerInfo};

use super::origins::Origins;
use super::state::{AppState, Counters};
use super::summary::Summary;

/// The `Content-Type` of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) async fn scrape(State(state): State<AppState>) -> Response {
    let transport = state.transport();
    let read = tokio::try_join!(
        transport.server_info(),
        state.nodes_and_summaries(),
        state.dead_letter_origins()
    );
    let read = match read {
        Ok(all) => Some(all),
        Err(error) => {
            // Logged and counted; the scrape itself succeeds with `redstream_redis_up 0`.
            let _ = state.fail(error);
            None
        }
    };
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        gauge!("redstream_redis_up").set(if read.is_some() { 1.0 } else { 0.0 });
        if let Some((info, (nodes, streams), origins)) = &read {
            record_server(info);
            record_nodes(nodes);
            record_streams(streams);
            record_dead_letters(streams, origins);
        }
        record_dashboard(&state);
    });
    let mut response = handle.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

fn describe() {
    describe_gauge!(
        "redstream_redis_up",
        "1 when the last read of Redis succeeded, else 0"
    );
    describe_gauge!("redstream_redis_used_memory_bytes", "INFO used_memory");
    describe_gauge!(
        "redstream_redis_maxmemory_bytes",
        "INFO maxmemory (0: no limit)"
    );
    describe_gauge!(
        "redstream_redis_connected_clients",
        "INFO connected_clients"
    );
    describe_gauge!(
        "redstream_redis_ops_per_second",
        "INFO instantaneous_ops_per_sec"
    );
    describe_gauge!("redstream_redis_uptime_seconds", "INFO uptime_in_seconds");
    describe_counter!(
        "redstream_redis_keyspace_hits_total",
        "INFO keyspace_hits: key lookups that found the key (summed over the masters of a \
         cluster)"
    );
    describe_counter!(
        "redstream_redis_keyspace_misses_total",
        "INFO keyspace_misses: key lookups that did not find the key"
    );
    describe_gauge!(
        "redstream_node_used_memory_bytes",
        "INFO used_memory of the node (each master of a cluster)"
    );
    describe_gauge!(
        "redstream_node_maxmemory_bytes",
        "INFO maxmemory of the node (0: no limit)"
    );
    describe_gauge!(
        "redstream_node_ops_per_second",
        "INFO instantaneous_ops_per_sec of the node"
    );
    describe_gauge!(
        "redstream_node_connected_clients",
        "INFO connected_clients of the node"
    );
    describe_gauge!("redstream_node_keys", "DBSIZE of the node");
    describe_counter!(
        "redstream_node_keyspace_hits_total",
        "INFO keyspace_hits of the node: key lookups that found the key"
    );
    describe_counter!(
        "redstream_node_keyspace_misses_total",
        "INFO keyspace_misses of the node: key lookups that did not find the key"
    );
    describe_gauge!(
        "redstream_node_streams",
        "streams shown by the dashboard that the node holds"
    );
    describe_gauge!(
        "redstream_node_stream_entries",
        "entries in the streams the node holds (sum of XLEN)"
    );
    describe_gauge!("redstream_streams", "streams under the prefix");
    describe_gauge!("redstream_stream_length", "entries in the stream (XLEN)");
    describe_gauge!("redstream_stream_groups", "consumer groups of the stream");
    describe_gauge!(
        "redstream_stream_pending",
        "pending entries summed over the stream's groups"
    );
    describe_gauge!("redstream_stream_lag", "largest lag of the stream's groups");
    describe_counter!(
        "redstream_stream_entries_added_total",
        "entries ever added to the stream, trimmed and deleted ones included (XINFO STREAM \
         entries-added; Redis 7+)"
    );
    describe_gauge!(
        "redstream_stream_dead_letters",
        "dead letters in the dead-letter stream that came from this stream (among the oldest \
         redstream_dlq_dead_letters_counted)"
    );
    describe_gauge!(
        "redstream_stream_group_consumers",
        "consumers of the group (XINFO GROUPS consumers)"
    );
    describe_gauge!(
        "redstream_stream_group_messages_pending",
        "entries delivered to the group, not acknowledged (XINFO GROUPS pending)"
    );
    describe_gauge!(
        "redstream_stream_group_lag",
        "entries not delivered to the group yet (XINFO GROUPS lag; Redis 7+)"
    );
    describe_gauge!(
        "redstream_stream_group_lag_seconds",
        "age of the oldest entry not delivered to the group yet, 0 when there is none"
    );
    describe_gauge!(
        "redstream_stream_group_oldest_pending_age_seconds",
        "age of the group's oldest pending entry (from its id), 0 when nothing is pending"
    );
    describe_gauge!(
        "redstream_stream_group_oldest_pending_idle_seconds",
        "time since the group's oldest pending entry was last delivered (XPENDING idle), 0 \
         when nothing is pending"
    );
    describe_gauge!(
        "redstream_dlq_length",
        "dead letters in the dead-letter stream"
    );
    describe_counter!(
        "redstream_dlq_entries_added_total",
        "dead letters ever written (the dead-letter stream's entries-added; Redis 7+)"
    );
    describe_gauge!(
        "redstream_dlq_dead_letters_counted",
        "dead letters read to count redstream_stream_dead_letters (the oldest, at most 1000)"
    );
    describe_counter!(
        "redstream_dashboard_http_requests_total",
        "requests answered, by route pattern and status"
    );
    describe_counter!(
        "redstream_dashboard_auth_failures_total",
        "requests refused for a missing or wrong token"
    );
    describe_counter!(
        "redstream_dashboard_redis_errors_total",
        "failed Redis calls of the dashboard, by error kind"
    );
    describe_counter!(
        "redstream_dashboard_http_connections_total",
        "HTTP connections accepted"
    );
    describe_gauge!(
        "redstream_dashboard_http_connections",
        "HTTP connections open (upgraded WebSockets not counted)"
    );
    describe_counter!(
        "redstream_dashboard_ws_connections_total",
        "WebSocket connections accepted"
    );
    describe_gauge!(
        "redstream_dashboard_ws_clients",
        "WebSocket connections open"
    );
    describe_counter!("redstream_dashboard_snapshots_total", "snapshots built");
    describe_counter!(
        "redstream_dashboard_dlq_redriven_total",
        "dead letters redriven from the dashboard"
    );
    describe_counter!(
        "redstream_dashboard_dlq_purged_total",
        "dead letters purged from the dashboard"
    );
    describe_gauge!(
        "redstream_dashboard_uptime_seconds",
        "seconds since the dashboard started"
    );
}

#[allow(clippy::cast_precision_loss)] // gauges are f64; counts this large do not happen
fn record_server(info: &ServerInfo) {
    let set = |name: &'static str, value: Option<u64>| {
        if let Some(value) = value {
            gauge!(name).set(value as f64);
        }
    };
    set("redstream_redis_used_memory_bytes", info.used_memory);
    set("redstream_redis_maxmemory_bytes", info.maxmemory);
    set("redstream_redis_connected_clients", info.connected_clients);
    set("redstream_redis_ops_per_second", info.ops_per_sec);
    set("redstream_redis_uptime_seconds", info.uptime_seconds);
    // Redis's own counters, exposed as they are (they reset with the server or RESETSTAT).
    if let Some(hits) = info.keyspace_hits {
        counter!("redstream_redis_keyspace_hits_total").absolute(hits);
    }
    if let Some(misses) = info.keyspace_misses {
        counter!("redstream_redis_keyspace_misses_total").absolute(misses);
    }
}

#[allow(clippy::cast_precision_loss)]
fn record_nodes(nodes: &[NodeStats]) {
    for node in nodes {
        let label = || [("node", node.address.clone())];
        let info = &node.info;
        let set = |name: &'static str, value: Option<u64>| {
            if let Some(value) = value {
                gauge!(name, &label()).set(value as f64);
            }
        };
        set("redstream_node_used_memory_bytes", info.used_memory);
        set("redstream_node_maxmemory_bytes", info.maxmemory);
        set("redstream_node_ops_per_second", info.ops_per_sec);
        set("redstream_node_connected_clients", info.connected_clients);
        set("redstream_node_keys", Some(node.keys));
        set("redstream_node_streams", Some(node.streams.len() as u64));
        set("redstream_node_stream_entries", Some(node.stream_entries));
        if let Some(hits) = info.keyspace_hits {
            counter!("redstream_node_keyspace_hits_total", &label()).absolute(hits);
        }
        if let Some(misses) = info.keyspace_misses {
            counter!("redstream_node_keyspace_misses_total", &label()).absolute(misses);
        }
    }
}

#[allow(clippy::cast_precision_loss)]
fn record_streams(streams: &[Summary]) {
    gauge!("redstream_streams").set(streams.len() as f64);
    for stream in streams {
        let name = stream.name.clone();
        if stream.dead_letter {
            gauge!("redstream_dlq_length").set(stream.length as f64);
            if let Some(added) = stream.entries_added {
                counter!("redstream_dlq_entries_added_total").absolute(added);
            }
        }
        gauge!("redstream_stream_length", "stream" => name.clone()).set(stream.length as f64);
        gauge!("redstream_stream_groups", "stream" => name.clone()).set(stream.groups.len() as f64);
        if let Some(added) = stream.entries_added {
            counter!("redstream_stream_entries_added_total", "stream" => name.clone())
                .absolute(added);
        }
        let pending: u64 = stream.groups.iter().map(|g| g.pending).sum();
        gauge!("redstream_stream_pending", "stream" => name.clone()).set(pending as f64);
        if let Some(lag) = stream.groups.iter().filter_map(|g| g.lag).max() {
            gauge!("redstream_stream_lag", "stream" => name.clone()).set(lag as f64);
        }
        for group in &stream.groups {
            let labels = [("stream", name.clone()), ("group", group.name.clone())];
            gauge!("redstream_stream_group_consumers", &labels).set(group.consumers as f64);
            gauge!("redstream_stream_group_messages_pending", &labels).set(group.pending as f64);
            if let Some(lag) = group.lag {
                gauge!("redstream_stream_group_lag", &labels).set(lag as f64);
            }
            // The age of the first entry after the group's last-delivered-id: how long the
            // oldest waiting entry has waited. 0 when the group has been delivered everything.
            gauge!("redstream_stream_group_lag_seconds", &labels)
                .set(group.oldest_undelivered_age_secs.unwrap_or(0.0));
            gauge!("redstream_stream_group_oldest_pending_age_seconds", &labels)
                .set(group.oldest_pending_age_secs.unwrap_or(0.0));
            gauge!(
                "redstream_stream_group_oldest_pending_idle_seconds",
                &labels
            )
            .set(group.oldest_pending_idle_ms.unwrap_or(0) as f64 / 1000.0);
        }
    }
    if !streams.iter().any(|s| s.dead_letter) {
        gauge!("redstream_dlq_length").set(0.0);
    }
}

/// Dead letters per original stream. Every stream shown gets a series (0 when none of the
/// counted dead letters came from it), so that `increase()` sees the first one arrive; an origin
/// that is not shown (a stream deleted since) gets one too.
#[allow(clippy::cast_precision_loss)]
fn record_dead_letters(streams: &[Summary], origins: &Origins) {
    gauge!("redstream_dlq_dead_letters_counted").set(origins.counted as f64);
    for stream in streams.iter().filter(|s| !s.dead_letter) {
        let n = origins.by_stream.get(&stream.name).copied().unwrap_or(0);
        gauge!("redstream_stream_dead_letters", "stream" => stream.name.clone()).set(n as f64);
    }
    for (name, n) in &origins.by_stream {
        if !streams.iter().any(|s| &s.name == name) {
            gauge!("redstream_stream_dead_letters", "stream" => name.clone()).set(*n as f64);
        }
    }
}

#[allow(clippy::cast_precision_loss)]
fn record_dashboard(state: &AppState) {
    let counters = state.counters();
    for ((route, status), n) in counters.requests() {
        counter!(
            "redstream_dashboard_http_requests_total",
            "route" => route,
            "status" => status.to_string()
        )
        .absolute(n);
    }
    for (kind, n) in counters.redis_errors() {
        counter!("redstream_dashboard_redis_errors_total", "kind" => kind).absolute(n);
    }
    counter!("redstream_dashboard_auth_failures_total")
        .absolute(Counters::get(&counters.auth_failures));
    counter!("redstream_dashboard_http_connections_total")
        .absolute(Counters::get(&counters.http_connections_total));
    gauge!("redstream_dashboard_http_connections")
        .set(Counters::get(&counters.http_connections) as f64);
    counter!("redstream_dashboard_ws_connections_total")
        .absolute(Counters::get(&counters.ws_connections));
    gauge!("redstream_dashboard_ws_clients").set(Counters::get(&counters.ws_clients) as f64);
    counter!("redstream_dashboard_snapshots_total").absolute(Counters::get(&counters.snapshots));
    counter!("redstream_dashboard_dlq_redriven_total").absolute(Counters::get(&counters.redriven));
    counter!("redstream_dashboard_dlq_purged_total").absolute(Counters::get(&counters.purged));
    gauge!("redstream_dashboard_uptime_seconds").set(state.started().elapsed().as_secs_f64());
}
