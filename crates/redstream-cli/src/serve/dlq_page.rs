//! `GET /api/dlq/page?before=&count=&type=&group=&q=`: dead letters newest first, in pages, and
//! searched on the server by event type, group and error text.
//!
//! A search never reads the whole dead-letter stream: one request reads at most
//! [`DLQ_SEARCH_WINDOW`] dead letters, newest first from the cursor, through the bounded read of
//! the snapshots (`ReadLimits::snapshot_dead_letters`: the first KiB of every field but the
//! event, the event whole while 1 MiB lasts), and keeps those that match. The answer says how
//! many it looked at (`scanned`), and `next_before` goes on from where it stopped, whether it
//! filled the page or reached the end of its window: a rare match deep in a long stream is
//! found page by page, never by one unbounded read.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use redstream_core::ErrorKind;
use serde::{Deserialize, Serialize};

use super::config::{DEFAULT_PAGE_COUNT, DLQ_SEARCH_WINDOW, SNAPSHOT_ERROR_BYTES};
use super::error::ApiError;
use super::params;
use super::preview::{Direction, ReadLimits};
use super::snapshot::{DeadLetterView, Detail};
use super::state::AppState;

#[derive(Deserialize)]
pub(crate) struct PageParams {
    before: Option<String>,
    count: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    group: Option<String>,
    q: Option<String>,
}

/// The filters of a search; an empty one matches everything.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Filters {
    /// The dead letter's `original_type`, exactly.
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// The group it failed in, exactly.
    group: Option<String>,
    /// Text the error contains (its first KiB), ignoring case.
    q: Option<String>,
}

impl Filters {
    fn is_empty(&self) -> bool {
        self.event_type.is_none() && self.group.is_none() && self.q.is_none()
    }

    fn matches(&self, letter: &DeadLetterView) -> bool {
        self.event_type
            .as_ref()
            .is_none_or(|t| *t == letter.original_type)
            && self.group.as_ref().is_none_or(|g| *g == letter.group)
            && self
                .q
                .as_ref()
                .is_none_or(|q| letter.error.to_lowercase().contains(&q.to_lowercase()))
    }
}

#[derive(Serialize)]
pub(crate) struct PageAnswer {
    stream: String,
    /// Dead letters in the stream.
    length: u64,
    /// The cursor this page was read from: dead letters older than this id; `null` for the
    /// newest.
    before: Option<String>,
    filters: Filters,
    count: usize,
    /// Newest first, as snapshots show them (`payload_preview`, the first KiB of the error).
    entries: Vec<DeadLetterView>,
    /// Dead letters this request looked at.
    scanned: usize,
    /// The most dead letters one request looks at when it filters.
    window: usize,
    /// Bytes of the error a search looks at.
    searched_error_bytes: usize,
    /// The `before` of the next (older) page; `null` once the oldest dead letter was looked at.
    next_before: Option<String>,
}

/// Text filter from a query: absent or empty is none; otherwise at most 512 bytes.
fn filter(what: &str, raw: Option<String>, spaces: bool) -> Result<Option<String>, ApiError> {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Ok(None);
    };
    if spaces {
        // Error text has spaces: check it as a name with them replaced.
        params::name(what, Some(&raw.trim().replace(' ', "_")))?;
        Ok(Some(raw.trim().to_owned()))
    } else {
        params::name(what, Some(&raw)).map(Some)
    }
}

/// `GET /api/dlq/page?before=&count=&type=&group=&q=`: at most `count` dead letters (default
/// 25) older than `before`, newest first, that match the filters.
pub(crate) async fn page(
    State(state): State<AppState>,
    query: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<PageAnswer>, ApiError> {
    let Query(query) = query?;
    let count = params::count(query.count.as_deref(), DEFAULT_PAGE_COUNT)?;
    let high = match &query.before {
        None => "+".to_owned(),
        Some(before) => {
            let before = params::name("before", Some(before))?;
            if params::entry_id(&before).is_err() {
                return Err(ApiError::parameter(format!(
                    "before {before:?} is not a dead-letter id: give the next_before of the \
                     previous page, like 1700000000000-0, or leave it out for the newest"
                )));
            }
            format!("({before}")
        }
    };
    let filters = Filters {
        event_type: filter("type", query.event_type, false)?,
        group: filter("group", query.group, false)?,
        q: filter("q", query.q, true)?,
    };
    let window = if filters.is_empty() {
        count
    } else {
        DLQ_SEARCH_WINDOW
    };
    let limits = &state.transport().options().limits;
    let read = ReadLimits::snapshot_dead_letters(limits.max_encoded_bytes);
    let dlq = state.transport().names().dlq();
    let (previews, length) = tokio::try_join!(
        async {
            match state
                .read_previews(&dlq, ("-", &high), window, Direction::Backward, &read)
                .await
            {
                // No dead letter was ever written.
                Err(err) if err.kind() == ErrorKind::NotFound => Ok(Default::default()),
                other => other,
            }
        },
        state.stream_length(&dlq),
    )
    .map_err(|e| state.fail(e))?;
    let scanned = previews.entries.len();
    let mut entries = Vec::new();
    let mut last_looked_at = None;
    for entry in &previews.entries {
        last_looked_at = Some(entry.id.clone());
        let view = DeadLetterView::new(entry, Detail::Preview, limits);
        if filters.matches(&view) {
            entries.push(view);
            if entries.len() == count {
                break;
            }
        }
    }
    let more = entries.len() == count || scanned == window || previews.stopped;
    let next_before = more
        .then_some(last_looked_at)
        .flatten()
        .filter(|id| id != "0-0");
    Ok(Json(PageAnswer {
        stream: dlq,
        length,
        before: query.before,
        filters,
        count: entries.len(),
        entries,
        scanned,
        window,
        searched_error_bytes: SNAPSHOT_ERROR_BYTES,
        next_before,
    }))
}
