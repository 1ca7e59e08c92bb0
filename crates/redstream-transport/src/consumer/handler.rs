//! Handlers and decoders with their types erased, so that the subscription machinery is
//! compiled once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use redstream_core::{BoxError, Event, HandlerResult};

use crate::raw::RawEntry;

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// An event handler with its type erased.
pub(crate) type DynHandler = Arc<dyn Fn(Event) -> BoxFuture + Send + Sync>;

/// A raw-entry handler with its type erased.
pub(crate) type DynRawHandler = Arc<dyn Fn(RawEntry) -> BoxFuture + Send + Sync>;

/// A user's decoder from a raw entry to an event.
pub(crate) type DynDecoder = Arc<dyn Fn(&RawEntry) -> Result<Event, BoxError> + Send + Sync>;

pub(crate) fn erase<F, Fut>(handler: F) -> DynHandler
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    Arc::new(move |event| Box::pin(handler(event)))
}

pub(crate) fn erase_raw<F, Fut>(handler: F) -> DynRawHandler
where
    F: Fn(RawEntry) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    Arc::new(move |entry| Box::pin(handler(entry)))
}

/// What a subscription does with an entry.
#[derive(Clone)]
pub(crate) enum Handling {
    /// Decode the redstream envelope and hand the event over.
    Events(DynHandler),
    /// Map the raw entry to an event with the user's decoder, and hand that over.
    Decoded(DynDecoder, DynHandler),
    /// Hand the raw entry over.
    Raw(DynRawHandler),
}

impl Handling {
    /// Whether entries are redstream envelopes: the reader looks at their priority, and a dead
    /// letter holds the envelope (otherwise it holds the entry's fields).
    pub(crate) fn reads_envelopes(&self) -> bool {
        matches!(self, Self::Events(_))
    }
}
