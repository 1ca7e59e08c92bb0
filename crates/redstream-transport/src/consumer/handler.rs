//! Handlers with their types erased, so that the subscription machinery is compiled once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use redstream_core::{Event, HandlerResult};

/// An event handler with its type erased.
pub(crate) type DynHandler =
    Arc<dyn Fn(Event) -> Pin<Box<dyn Future<Output = HandlerResult> + Send>> + Send + Sync>;

pub(crate) fn erase<F, Fut>(handler: F) -> DynHandler
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    Arc::new(move |event| Box::pin(handler(event)))
}

/// What a subscription does with an entry.
#[derive(Clone)]
pub(crate) enum Handling {
    /// Decode the redstream envelope and hand the event over.
    Events(DynHandler),
}

impl Handling {
    /// Whether entries are redstream envelopes, whose priority the reader can look at.
    pub(crate) fn reads_envelopes(&self) -> bool {
        matches!(self, Self::Events(_))
    }
}
