//! [`router`]: every route, and the middleware around them.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};

use super::config::MAX_BODY_BYTES;
use super::error::ApiError;
use super::state::AppState;
use super::{api, dlq, dlq_page, guard, newest, page, prometheus, ws};

/// The dashboard's routes over `state`. [`serve`](super::serve) serves them with the
/// connection limits; tests may also call the router in-process (`tower::ServiceExt::oneshot`).
///
/// | route | what |
/// |---|---|
/// | `GET /` | the page |
/// | `GET /ws` | WebSocket of snapshots |
/// | `GET /health` | 200 when Redis answers a PING, else 503 |
/// | `GET /metrics` | Prometheus text |
/// | `GET /api/streams`, `/api/stream/{stream}` | streams, groups, consumers |
/// | `GET /api/stream/{stream}/entries?before=&count=` | entries newest first, in pages |
/// | `GET /api/pending/{stream}/{group}?count=&startId=` | pending entries of a group |
/// | `GET /api/metrics` | `INFO` figures, stream totals, the dashboard's counters |
/// | `GET /api/throughput` | the rates of the last hour, sampled from the snapshots |
/// | `GET /api/nodes` | per master (or the one server): memory, ops/s, clients, keys, streams; totals |
/// | `GET /api/streams/info` | length, first and last entry of every stream (seed 004) |
/// | `GET /api/streams/{name}?startId=&count=` | entries of a stream (seed 004) |
/// | `GET /api/streams/{name}/pending?group=&count=` | pending entries (seed 004) |
/// | `GET /api/dlq?count=&startId=`, `/api/dlq/{id}` | dead letters; one by id with all its fields |
/// | `GET /api/dlq/page?before=&count=&type=&group=&q=` | dead letters newest first, searched |
/// | `POST /api/dlq/redrive`, `/api/dlq/purge` | write actions (`allow_writes`) |
///
/// Every answer that is not a success is JSON: `{ "error": { "kind", "message" } }`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/ws", get(ws::upgrade))
        .route("/health", get(api::health))
        .route("/metrics", get(prometheus::scrape))
        .route("/api/streams", get(api::streams))
        .route("/api/stream/{stream}", get(api::stream))
        .route("/api/stream/{stream}/entries", get(newest::newest))
        .route("/api/pending/{stream}/{group}", get(api::pending_by_path))
        .route("/api/metrics", get(api::metrics))
        .route("/api/nodes", get(api::nodes))
        .route("/api/throughput", get(api::throughput))
        .route("/api/streams/info", get(api::streams_info))
        .route("/api/streams/{name}", get(api::read))
        .route("/api/streams/{name}/pending", get(api::pending_by_query))
        .route("/api/dlq", get(dlq::list))
        .route("/api/dlq/page", get(dlq_page::page))
        .route("/api/dlq/{id}", get(dlq::entry))
        .route(
            "/api/dlq/redrive",
            post(dlq::redrive).route_layer(from_fn_with_state(state.clone(), guard::writes)),
        )
        .route(
            "/api/dlq/purge",
            post(dlq::purge).route_layer(from_fn_with_state(state.clone(), guard::writes)),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(from_fn_with_state(state.clone(), guard::count))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(from_fn_with_state(state.clone(), guard::guard))
        .layer(from_fn(guard::security_headers))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "there is no endpoint at {:?}; the endpoints are listed in docs/dashboard.md",
        uri.path()
    ))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take this method: reads are GET, write actions are POST",
    )
}
