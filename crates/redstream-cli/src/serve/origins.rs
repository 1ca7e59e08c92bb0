//! Dead letters counted by the stream they came from, for `/metrics`.
//!
//! A dead letter records its original stream in its `stream` field (docs/wire-format.md). No
//! Redis counter keeps these per stream, so a scrape reads them: the oldest
//! [`COUNTED_DEAD_LETTERS`] dead letters, through the bounded read script with nothing but the
//! `stream` field returned, and at most [`SERVER_READ_LIMIT`] bytes of entries read by the
//! server. When the dead-letter stream holds more, the counts cover the oldest ones and
//! `redstream_dlq_dead_letters_counted` says how many that was.

use std::collections::BTreeMap;

use redstream_core::{ErrorKind, Result};

use super::config::{MAX_COUNT, SERVER_READ_LIMIT};
use super::preview::{Cap, Direction, ReadLimits};
use super::state::AppState;

/// Dead letters a scrape counts by origin: the oldest ones, as many as one request may list.
pub(crate) const COUNTED_DEAD_LETTERS: usize = MAX_COUNT;

/// The longest origin stream name counted as it is; a dead letter whose `stream` field is
/// longer (or missing, or not UTF-8) is counted under the empty name.
const MAX_NAME_BYTES: usize = 512;

/// Dead letters per original stream, among the oldest [`COUNTED_DEAD_LETTERS`].
#[derive(Debug, Default)]
pub(crate) struct Origins {
    /// Dead letters per stream name, sorted by name.
    pub(crate) by_stream: BTreeMap<String, u64>,
    /// Dead letters read in all (the sum of `by_stream`).
    pub(crate) counted: u64,
}

impl AppState {
    /// The dead letters of the dead-letter stream, counted by the stream they came from; none
    /// when it does not exist.
    pub(crate) async fn dead_letter_origins(&self) -> Result<Origins> {
        let limits = ReadLimits {
            // 1000 names of 512 bytes fit; a longer name is cut and counted under "".
            budget: COUNTED_DEAD_LETTERS * (MAX_NAME_BYTES + 16),
            stop_when_spent: false,
            read_limit: SERVER_READ_LIMIT,
            max_fields: 1,
            named_only: true,
            other: Cap::new(16, 16),
            named: vec![("stream", Cap::new(MAX_NAME_BYTES, 0))],
        };
        let dlq = self.transport().names().dlq();
        let previews = match self
            .read_previews(
                &dlq,
                ("-", "+"),
                COUNTED_DEAD_LETTERS,
                Direction::Forward,
                &limits,
            )
            .await
        {
            Ok(previews) => previews,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Origins::default()),
            Err(err) => return Err(err),
        };
        let mut origins = Origins::default();
        for entry in &previews.entries {
            let name = entry
                .field("stream")
                .filter(|f| f.is_whole())
                .and_then(|f| std::str::from_utf8(&f.value).ok())
                .unwrap_or_default();
            *origins.by_stream.entry(name.to_owned()).or_default() += 1;
            origins.counted += 1;
        }
        Ok(origins)
    }
}
