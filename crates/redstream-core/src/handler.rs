//! Event handlers: what a subscriber runs for every delivered event.

use std::future::Future;
use std::sync::Arc;

use tokio::task::{JoinError, JoinHandle};

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

/// Runs a handler's future in a task of its own and returns its outcome, with the error (or the
/// panic) as a message.
///
/// A panicking handler becomes a failed delivery instead of ending the loop that called it, and
/// dropping the returned future aborts the task, so that stopping a subscription also stops its
/// handlers. The in-memory bus runs handlers through this (the Redis transport catches panics in
/// its workers instead, without a task per event).
pub async fn run_isolated<Fut>(future: Fut) -> Result<(), String>
where
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    let mut task = AbortOnDrop(tokio::spawn(future));
    match (&mut task.0).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(err) => Err(join_error_message(err)),
    }
}

fn join_error_message(err: JoinError) -> String {
    if !err.is_panic() {
        return "the handler task was cancelled".to_owned();
    }
    let payload = err.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned());
    format!("handler panicked: {message}")
}

/// Aborts the task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
