//! The batch-sink trait and its checkpoint hook, implemented by `redstream-sink`.

use std::fmt;
use std::future::Future;

use crate::error::Result;
use crate::event::Event;

/// A position in a source (a log offset, a stream entry id, a file line), opaque to the sink.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct SourcePosition(String);

impl SourcePosition {
    /// A position.
    pub fn new(position: impl Into<String>) -> Self {
        Self(position.into())
    }

    /// The position as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for SourcePosition {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for SourcePosition {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// What a sink reports once a whole batch is durably written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BatchAck {
    /// Events written by this call.
    pub written: usize,
    /// Events skipped because an earlier, ambiguous attempt had already written them.
    pub skipped_duplicates: usize,
    /// The backend ids of the entries written, in order.
    pub entry_ids: Vec<String>,
    /// The source position the batch carried, now safe to checkpoint.
    pub position: Option<SourcePosition>,
}

impl BatchAck {
    /// An acknowledgement of `written` events with their ids and position.
    #[must_use]
    pub fn new(
        entry_ids: Vec<String>,
        skipped_duplicates: usize,
        position: Option<SourcePosition>,
    ) -> Self {
        Self {
            written: entry_ids.len(),
            skipped_duplicates,
            entry_ids,
            position,
        }
    }
}

/// Writes batches of events, all-or-nothing.
pub trait BatchSink: Send + Sync {
    /// Writes `events` and returns only when every one of them is in the backend, or with an
    /// error after which none of them is. `position` is the source position just after the
    /// batch; the sink records it so a restarted source can resume there.
    fn send_batch(
        &self,
        events: Vec<Event>,
        position: Option<SourcePosition>,
    ) -> impl Future<Output = Result<BatchAck>> + Send;
}

/// Called with a source position once every batch up to it is acknowledged.
///
/// Closures `Fn(SourcePosition) -> impl Future<Output = Result<()>>` implement it.
pub trait CheckpointHook: Send + Sync {
    /// Persists `position` as the point to resume from.
    fn commit(&self, position: SourcePosition) -> impl Future<Output = Result<()>> + Send;
}

impl<F, Fut> CheckpointHook for F
where
    F: Fn(SourcePosition) -> Fut + Send + Sync,
    Fut: Future<Output = Result<()>> + Send,
{
    fn commit(&self, position: SourcePosition) -> impl Future<Output = Result<()>> + Send {
        self(position)
    }
}
