//! Event handlers: what a subscriber runs for every delivered event.

use std::future::Future;
use std::sync::Arc;

use crate::error::BoxError;
use crate::event::Event;

/// What a handler returns. `Ok` acknowledges the event; `Err` leaves it for redelivery or the
/// dead-letter stream, depending on the subscriber's configuration.
///
/// The error is boxed so that `?` works on any error type inside a handler.
pub type HandlerResult = Result<(), BoxError>;

/// Something that handles events.
///
/// Every `Fn(Event) -> impl Future<Output = HandlerResult>` closure is a handler, so plain
/// `async` closures work, and so does the `|event| Box::pin(async move { .. })` style:
///
/// ```
/// use redstream_core::{Event, Handler, HandlerResult};
///
/// fn assert_handler<H: Handler>(_: H) {}
///
/// assert_handler(|event: Event| async move {
///     println!("{}", event.event_type());
///     Ok(())
/// });
/// assert_handler(|event: Event| Box::pin(async move {
///     let _ = event;
///     HandlerResult::Ok(())
/// }));
/// ```
///
/// Implement it by hand for handlers that carry state.
pub trait Handler: Send + Sync + 'static {
    /// Handles one event.
    fn handle(&self, event: Event) -> impl Future<Output = HandlerResult> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send,
{
    fn handle(&self, event: Event) -> impl Future<Output = HandlerResult> + Send {
        self(event)
    }
}

impl<H: Handler> Handler for Arc<H> {
    fn handle(&self, event: Event) -> impl Future<Output = HandlerResult> + Send {
        (**self).handle(event)
    }
}
