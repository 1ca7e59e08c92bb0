//! `GET /api/stream/{stream}/entries?before=&count=`: a stream's entries newest first, in pages,
//! for the stream page. A bounded read (`AppState::read_previews`, `XREVRANGE` one entry at a
//! time inside the script): the `event` field whole up to 64 KiB, so that it decodes and the page
//! can format its payload, every other field and name as its first 4 KiB. A larger entry is shown
//! by those previews; `GET /api/streams/{name}?startId=<id>&count=1` reads it whole (within the
//! wire format's limit).

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use super::config::{DEFAULT_PAGE_COUNT, OVERVIEW_EVENT_BYTES};
use super::entry::EntryView;
use super::error::ApiError;
use super::params;
use super::preview::{Direction, ReadLimits};
use super::state::AppState;

#[derive(Deserialize)]
pub(crate) struct NewestParams {
    before: Option<String>,
    count: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct NewestAnswer {
    stream: String,
    /// The stream's length when the page was read.
    length: u64,
    /// The cursor this page was read from: entries older than this id; `null` for the newest.
    before: Option<String>,
    count: usize,
    /// Newest first.
    messages: Vec<EntryView>,
    /// The `before` of the next (older) page; `null` when this one reached the oldest entry.
    next_before: Option<String>,
    /// The largest `event` field this view reads whole.
    event_preview_bytes: usize,
}

/// `GET /api/stream/{stream}/entries?before=&count=`: at most `count` entries (default 25,
/// 1 to 1000) older than the entry id `before` (all when absent), newest first.
pub(crate) async fn newest(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<NewestParams>, QueryRejection>,
) -> Result<Json<NewestAnswer>, ApiError> {
    let Path(stream) = path?;
    let Query(query) = query?;
    let key = params::stream_key(&state, &stream).await?;
    let count = params::count(query.count.as_deref(), DEFAULT_PAGE_COUNT)?;
    let high = match &query.before {
        None => "+".to_owned(),
        Some(before) => {
            let before = params::name("before", Some(before))?;
            if params::entry_id(&before).is_err() {
                return Err(ApiError::parameter(format!(
                    "before {before:?} is not an entry id: give the id of the last entry shown, \
                     like 1700000000000-0, or leave it out for the newest entries"
                )));
            }
            format!("({before}")
        }
    };
    let limits = &state.transport().options().limits;
    let cap = OVERVIEW_EVENT_BYTES.min(limits.max_encoded_bytes);
    let read = ReadLimits::entries(cap);
    let (previews, length) = tokio::try_join!(
        state.read_previews(&key, ("-", &high), count, Direction::Backward, &read),
        state.stream_length(&key),
    )
    .map_err(|e| state.fail(e))?;
    let messages: Vec<EntryView> = previews
        .entries
        .iter()
        .map(|entry| EntryView::new(entry, limits, cap))
        .collect();
    // `0-0` is the smallest id: nothing is older.
    let next_before = (messages.len() == count || previews.stopped)
        .then(|| messages.last().map(|m| m.id.clone()))
        .flatten()
        .filter(|id| id != "0-0");
    Ok(Json(NewestAnswer {
        stream: key,
        length,
        before: query.before,
        count: messages.len(),
        messages,
        next_before,
        event_preview_bytes: cap,
    }))
}
