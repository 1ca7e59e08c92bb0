//! The read-only JSON endpoints: seed 002's (`/health`, `/api/streams`, `/api/stream/{stream}`,
//! `/api/pending/{stream}/{group}`, `/api/metrics`) and seed 004's (`/api/streams/info`,
//! `/api/streams/{name}`, `/api/streams/{name}/pending`). Examples of every answer are in
//! `docs/dashboard.md`.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt, stream};
use redstream_core::ErrorKind;
use redstream_transport::{PendingEntry, PendingQuery, ServerInfo};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::{DEFAULT_LIST_COUNT, DEFAULT_READ_COUNT, FAN_OUT, OVERVIEW_EVENT_BYTES};
use super::entry::EntryView;
use super::error::ApiError;
use super::params;
use super::preview::{Direction, ReadLimits};
use super::snapshot::{NodesView, StreamView};
use super::state::{AppState, Counters};

type ApiResult<T> = Result<Json<T>, ApiError>;

/// `GET /health`: 200 when Redis answers a `PING`, 503 otherwise; both with the same shape.
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    match state.transport().ping().await {
        Ok(rtt) => Json(json!({
            "status": "ok",
            "redis": { "ok": true, "latency_ms": rtt.as_secs_f64() * 1000.0 },
            "prefix": state.prefix(),
            "writes_allowed": state.config().allow_writes,
            "version": env!("CARGO_PKG_VERSION"),
        }))
        .into_response(),
        Err(error) => {
            let error = state.fail(error);
            let body = json!({
                "status": "unavailable",
                "redis": { "ok": false, "latency_ms": null },
                "prefix": state.prefix(),
                "writes_allowed": state.config().allow_writes,
                "version": env!("CARGO_PKG_VERSION"),
                "error": { "kind": error.kind, "message": error.message },
            });
            (error.status, Json(body)).into_response()
        }
    }
}

#[derive(Serialize)]
pub(crate) struct StreamsAnswer {
    prefix: String,
    /// The `--streams` patterns.
    patterns: Vec<String>,
    count: usize,
    streams: Vec<StreamView>,
}

/// `GET /api/streams`: every stream with its groups and consumers.
pub(crate) async fn streams(State(state): State<AppState>) -> ApiResult<StreamsAnswer> {
    let summaries = state.stream_summaries().await.map_err(|e| state.fail(e))?;
    let streams = state
        .stream_views(summaries, usize::MAX)
        .await
        .map_err(|e| state.fail(e))?;
    Ok(Json(StreamsAnswer {
        prefix: state.prefix().to_owned(),
        patterns: state.config().streams.clone(),
        count: streams.len(),
        streams,
    }))
}

/// `GET /api/stream/{stream}`: one stream with its groups and consumers.
pub(crate) async fn stream(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<StreamView> {
    let Path(name) = name?;
    let key = params::stream_key(&state, &name).await?;
    let summary = state
        .stream_summary(&key)
        .await
        .map_err(|e| state.fail(e))?;
    let mut views = state
        .stream_views(vec![summary], usize::MAX)
        .await
        .map_err(|e| state.fail(e))?;
    views
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no such stream {key:?}")))
}

#[derive(Deserialize)]
pub(crate) struct CountQuery {
    pub(crate) count: Option<String>,
    #[serde(rename = "startId")]
    pub(crate) start_id: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct PendingParams {
    group: Option<String>,
    count: Option<String>,
    #[serde(rename = "startId")]
    start_id: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct PendingAnswer {
    stream: String,
    group: String,
    count: usize,
    pending: Vec<PendingEntry>,
    /// The `startId` of the next page (`(` and the last id), when this one has `count` entries.
    next_start_id: Option<String>,
}

/// `GET /api/pending/{stream}/{group}?count=&startId=`: the oldest pending entries of a group
/// (`XPENDING` extended form, at most `count`), from `startId` on.
pub(crate) async fn pending_by_path(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<CountQuery>, QueryRejection>,
) -> ApiResult<PendingAnswer> {
    let Path((stream, group)) = path?;
    let Query(query) = query?;
    pending(
        &state,
        &stream,
        Some(&group),
        query.count.as_deref(),
        query.start_id,
    )
    .await
}

/// `GET /api/streams/{name}/pending?group=&count=`: seed 004's form of the same.
pub(crate) async fn pending_by_query(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<PendingParams>, QueryRejection>,
) -> ApiResult<PendingAnswer> {
    let Path(stream) = path?;
    let Query(query) = query?;
    pending(
        &state,
        &stream,
        query.group.as_deref(),
        query.count.as_deref(),
        query.start_id,
    )
    .await
}

async fn pending(
    state: &AppState,
    stream: &str,
    group: Option<&str>,
    count: Option<&str>,
    start_id: Option<String>,
) -> ApiResult<PendingAnswer> {
    let key = params::stream_key(state, stream).await?;
    let group = params::name("group", group)?;
    let count = params::count(count, DEFAULT_LIST_COUNT)?;
    let start = params::start_id(start_id)?;
    let query = PendingQuery {
        start: Some(start),
        ..PendingQuery::new(count)
    };
    let pending = state
        .transport()
        .pending(&key, &group, query)
        .await
        .map_err(|e| state.fail(e))?;
    let next_start_id = (pending.len() == count)
        .then(|| pending.last().and_then(|p| params::after(&p.id)))
        .flatten();
    Ok(Json(PendingAnswer {
        stream: key,
        group,
        count: pending.len(),
        pending,
        next_start_id,
    }))
}

#[derive(Deserialize)]
pub(crate) struct ReadParams {
    #[serde(rename = "startId")]
    start_id: Option<String>,
    count: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct ReadAnswer {
    stream: String,
    start_id: String,
    count: usize,
    messages: Vec<EntryView>,
    /// The `startId` of the next page, when this one was full (it has `count` entries, or as
    /// many as the read's budget allowed).
    next_start_id: Option<String>,
}

/// `GET /api/streams/{name}?startId=&count=`: entries from `startId` (inclusive; `-` or absent
/// for the oldest, `(id` to start after `id`), oldest first.
pub(crate) async fn read(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ReadParams>, QueryRejection>,
) -> ApiResult<ReadAnswer> {
    let Path(stream) = path?;
    let Query(query) = query?;
    let key = params::stream_key(&state, &stream).await?;
    let count = params::count(query.count.as_deref(), DEFAULT_READ_COUNT)?;
    let start_id = params::start_id(query.start_id)?;
    let limits = &state.transport().options().limits;
    let read = ReadLimits::entries(limits.max_encoded_bytes);
    let previews = state
        .read_previews(&key, (&start_id, "+"), count, Direction::Forward, &read)
        .await
        .map_err(|e| state.fail(e))?;
    let messages: Vec<EntryView> = previews
        .entries
        .iter()
        .map(|entry| EntryView::new(entry, limits, limits.max_encoded_bytes))
        .collect();
    let next_start_id = (messages.len() == count || previews.stopped)
        .then(|| messages.last().and_then(|m| params::after(&m.id)))
        .flatten();
    Ok(Json(ReadAnswer {
        stream: key,
        start_id,
        count: messages.len(),
        messages,
        next_start_id,
    }))
}

#[derive(Serialize)]
pub(crate) struct StreamInfo {
    name: String,
    length: u64,
    groups: usize,
    first_entry: Option<EntryView>,
    last_entry: Option<EntryView>,
}

/// `GET /api/streams/info`: seed 004's overview: length and first and last entries of every
/// stream shown (under the prefix, and those `--streams` names).
pub(crate) async fn streams_info(State(state): State<AppState>) -> ApiResult<Value> {
    let summaries = state.stream_summaries().await.map_err(|e| state.fail(e))?;
    let limits = &state.transport().options().limits;
    let cap = OVERVIEW_EVENT_BYTES.min(limits.max_encoded_bytes);
    let read = &ReadLimits::entries(cap);
    let state = &state;
    let infos: Vec<Option<StreamInfo>> = stream::iter(summaries.into_iter().map(|s| async move {
        let name = s.name.as_str();
        let end = |direction| async move {
            let previews = state
                .read_previews(name, ("-", "+"), 1, direction, read)
                .await?;
            Ok::<_, redstream_core::Error>(
                previews
                    .entries
                    .first()
                    .map(|entry| EntryView::new(entry, limits, cap)),
            )
        };
        let ends = tokio::try_join!(end(Direction::Forward), end(Direction::Backward));
        match ends {
            Ok((first, last)) => Ok(Some(StreamInfo {
                length: s.length,
                groups: s.groups.len(),
                first_entry: first,
                last_entry: last,
                name: s.name.clone(),
            })),
            // Deleted since the listing.
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }))
    .buffered(FAN_OUT)
    .try_collect()
    .await
    .map_err(|e| state.fail(e))?;
    let streams: Vec<StreamInfo> = infos.into_iter().flatten().collect();
    Ok(Json(json!({
        "prefix": state.prefix(),
        "patterns": state.config().streams,
        "count": streams.len(),
        "streams": streams,
    })))
}

/// `GET /api/throughput`: the rates of the last hour the dashboard sampled (see `history.rs`).
/// Reads nothing from Redis.
pub(crate) async fn throughput(State(state): State<AppState>) -> Json<super::history::HistoryView> {
    Json(state.history().view())
}

/// `GET /api/nodes`: each master of a cluster (the one server otherwise) with its memory,
/// ops/s, clients, keys and the streams it holds, and the totals.
pub(crate) async fn nodes(State(state): State<AppState>) -> ApiResult<Value> {
    let transport = state.transport();
    let nodes = crate::select::nodes(transport, &state.config().streams)
        .await
        .map_err(|e| state.fail(e))?;
    let view = NodesView::new(transport.topology(), &nodes);
    Ok(Json(json!({
        "prefix": state.prefix(),
        "patterns": state.config().streams,
        "topology": view.topology,
        "count": view.nodes.len(),
        "nodes": view.nodes,
        "totals": view.totals,
    })))
}

/// `redis` of `/api/metrics`: `INFO`'s figures and the round trip of a `PING`.
#[derive(Serialize)]
struct RedisFigures {
    #[serde(flatten)]
    info: ServerInfo,
    /// `keyspace_hits / (keyspace_hits + keyspace_misses)`; `null` without lookups.
    hit_ratio: Option<f64>,
    latency_ms: f64,
}

/// `GET /api/metrics`: the server's figures from `INFO`, totals over the streams, and the
/// dashboard's own counters.
pub(crate) async fn metrics(State(state): State<AppState>) -> ApiResult<Value> {
    let transport = state.transport();
    let (rtt, redis, summaries) = tokio::try_join!(
        transport.ping(),
        transport.server_info(),
        state.stream_summaries(),
    )
    .map_err(|e| state.fail(e))?;
    let dlq = transport.names().dlq();
    let dead_letters = summaries
        .iter()
        .find(|s| s.name == dlq)
        .map_or(0, |s| s.length);
    let events = summaries.iter().filter(|s| !s.dead_letter);
    let totals = json!({
        "count": summaries.len(),
        "entries": events.clone().map(|s| s.length).sum::<u64>(),
        "consumer_groups": summaries.iter().map(|s| s.groups.len()).sum::<usize>(),
        "pending": events.flat_map(|s| &s.groups).map(|g| g.pending).sum::<u64>(),
        "dead_letters": dead_letters,
    });
    let redis = RedisFigures {
        hit_ratio: redis.hit_ratio(),
        info: redis,
        latency_ms: rtt.as_secs_f64() * 1000.0,
    };
    Ok(Json(json!({
        "redis": redis,
        "streams": totals,
        "dashboard": dashboard_counters(&state),
    })))
}

pub(crate) fn dashboard_counters(state: &AppState) -> Value {
    let counters = state.counters();
    let requests: u64 = counters.requests().values().sum();
    let redis_errors: u64 = counters.redis_errors().values().sum();
    json!({
        "uptime_seconds": state.started().elapsed().as_secs(),
        "requests_total": requests,
        "auth_failures_total": Counters::get(&counters.auth_failures),
        "redis_errors_total": redis_errors,
        "http_connections": Counters::get(&counters.http_connections),
        "http_connections_total": Counters::get(&counters.http_connections_total),
        "ws_clients": Counters::get(&counters.ws_clients),
        "ws_connections_total": Counters::get(&counters.ws_connections),
        "snapshots_total": Counters::get(&counters.snapshots),
        "dlq_redriven_total": Counters::get(&counters.redriven),
        "dlq_purged_total": Counters::get(&counters.purged),
    })
}
