//! The dead-letter endpoints: `GET /api/dlq`, `GET /api/dlq/{id}`, and the write actions
//! `POST /api/dlq/redrive` and `POST /api/dlq/purge`.
//!
//! The write actions answer 403 `writes_disabled` without `--allow-writes`, whatever their body,
//! and take a JSON body: a browser cannot send `application/json` to another origin
//! without a CORS preflight, which the dashboard never grants.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use redstream_core::ErrorKind;
use redstream_transport::RedriveReport;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::{DEFAULT_LIST_COUNT, MAX_REDRIVE_IDS};
use super::entry::shown_fields;
use super::error::ApiError;
use super::params;
use super::preview::{Direction, ReadLimits};
use super::snapshot::{DeadLetterView, Detail};
use super::state::{AppState, Counters};

/// The query of `GET /api/dlq`.
#[derive(Deserialize)]
pub(crate) struct ListQuery {
    count: Option<String>,
    #[serde(rename = "startId")]
    start_id: Option<String>,
}

/// `GET /api/dlq?count=&startId=`: the oldest dead letters (from `startId` on), whole.
pub(crate) async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query?;
    let count = params::count(query.count.as_deref(), DEFAULT_LIST_COUNT)?;
    let start_id = params::start_id(query.start_id)?;
    let stream = state.transport().names().dlq();
    let ((entries, truncated), length) = tokio::try_join!(
        state.dead_letters(&start_id, count, Detail::Full),
        state.stream_length(&stream),
    )
    .map_err(|e| state.fail(e))?;
    let next_start_id = (entries.len() == count || truncated)
        .then(|| entries.last().and_then(|e| params::after(&e.id)))
        .flatten();
    Ok(Json(json!({
        "stream": stream,
        "length": length,
        "count": entries.len(),
        "truncated": truncated,
        "entries": entries,
        "next_start_id": next_start_id,
    })))
}

/// `GET /api/dlq/{id}`: one dead letter opened whole.
#[derive(Debug, Serialize)]
pub(crate) struct DeadLetterDetail {
    /// What the list shows of it: the event whole (its payload as JSON), the error up to
    /// 64 KiB.
    #[serde(flatten)]
    letter: DeadLetterView,
    /// Every field of the dead-letter entry as stored, in order (extra fields of other writers
    /// included): lossy UTF-8, names and values cut at 4 KiB, at most 256 fields.
    fields: Vec<(String, String)>,
    /// Whether a name or value of `fields` was cut, or fields were left out.
    fields_truncated: bool,
}

/// `GET /api/dlq/{id}`: one dead letter with all its fields, or 404.
pub(crate) async fn entry(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<DeadLetterDetail>, ApiError> {
    let Path(id) = id?;
    params::entry_id(&id).map_err(ApiError::parameter)?;
    let limits = &state.transport().options().limits;
    let read = ReadLimits::dead_letter(limits.max_encoded_bytes);
    let dlq = state.transport().names().dlq();
    let entry = match state
        .read_previews(&dlq, (&id, &id), 1, Direction::Forward, &read)
        .await
    {
        Ok(previews) => previews.entries.into_iter().next(),
        // No dead letter was ever written.
        Err(err) if err.kind() == ErrorKind::NotFound => None,
        Err(err) => return Err(state.fail(err)),
    };
    let entry =
        entry.ok_or_else(|| ApiError::not_found(format!("no dead letter has the id {id:?}")))?;
    let (fields, fields_truncated) = shown_fields(&entry);
    Ok(Json(DeadLetterDetail {
        letter: DeadLetterView::new(&entry, Detail::Full, limits),
        fields,
        fields_truncated,
    }))
}

/// The body of `POST /api/dlq/redrive`: exactly one of the three.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedriveRequest {
    ids: Option<Vec<String>>,
    all: Option<bool>,
    #[serde(rename = "type")]
    event_type: Option<String>,
}

/// `POST /api/dlq/redrive`: publishes dead letters again to the stream they came from.
pub(crate) async fn redrive(
    State(state): State<AppState>,
    body: Result<Json<RedriveRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    state.require_writes()?;
    let Json(request) = body?;
    let transport = state.transport();
    let report = match (request.ids, request.all, request.event_type) {
        (Some(ids), None | Some(false), None) => {
            if ids.is_empty() || ids.len() > MAX_REDRIVE_IDS {
                return Err(ApiError::body(format!(
                    "ids has {} entries: give from 1 to {MAX_REDRIVE_IDS} dead-letter ids",
                    ids.len()
                )));
            }
            for id in &ids {
                params::entry_id(id).map_err(ApiError::body)?;
            }
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            transport.redrive_ids(&ids).await
        }
        (None, Some(true), None) => transport.redrive_all().await,
        (None, None | Some(false), Some(event_type)) => transport.redrive_type(&event_type).await,
        _ => {
            return Err(ApiError::body(
                "give exactly one of {\"ids\": [...]}, {\"all\": true} or {\"type\": \"...\"}",
            ));
        }
    }
    .map_err(|e| state.fail(e))?;
    Counters::add(
        &state.counters().redriven,
        u64::try_from(report.redriven).unwrap_or(u64::MAX),
    );
    tracing::info!(
        redriven = report.redriven,
        skipped = report.skipped.len(),
        "dead letters redriven from the dashboard"
    );
    Ok(Json(report_json(&report)))
}

fn report_json(report: &RedriveReport) -> Value {
    let skipped: Vec<Value> = report
        .skipped
        .iter()
        .map(|s| json!({ "id": s.id, "reason": s.reason }))
        .collect();
    json!({ "redriven": report.redriven, "skipped": skipped })
}

/// The body of `POST /api/dlq/purge`: an empty object. Required all the same, so that the
/// request is JSON (see the module docs).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeRequest {}

/// `POST /api/dlq/purge`: deletes every dead letter.
pub(crate) async fn purge(
    State(state): State<AppState>,
    body: Result<Json<PurgeRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    state.require_writes()?;
    let Json(PurgeRequest {}) = body?;
    let purged = state
        .transport()
        .dlq_purge()
        .await
        .map_err(|e| state.fail(e))?;
    Counters::add(&state.counters().purged, purged);
    tracing::warn!(purged, "dead-letter stream purged from the dashboard");
    Ok(Json(json!({ "purged": purged })))
}
