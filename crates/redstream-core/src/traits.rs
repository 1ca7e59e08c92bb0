//! The publish/subscribe traits that the in-memory bus and the Redis transport implement.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::error::Result;
use crate::event::Event;
use crate::handler::HandlerResult;

/// Publishes events.
///
/// Implementations validate every event before it is accepted and return the id the backend
/// assigned to it (for Redis, the stream entry id such as `1700000000000-0`).
pub trait Publisher: Send + Sync {
    /// Publishes one event and returns the backend's id for it.
    fn publish(&self, event: Event) -> impl Future<Output = Result<String>> + Send;

    /// Publishes several events in one round trip and returns their ids in order.
    ///
    /// Every event is validated before anything is written, so an invalid event fails the whole
    /// batch without publishing any of it.
    fn publish_batch(&self, events: Vec<Event>)
    -> impl Future<Output = Result<Vec<String>>> + Send;
}

/// Delivers events to handlers, as a member of a consumer group.
///
/// Within one group each event is handled by one subscriber; every group sees every event.
///
/// # Generic code and `Send`
///
/// In a function generic over `S: Subscriber`, awaiting `subscribe(..)` directly can make rustc
/// fail to prove that the function's own future is `Send` ("one type is more general than the
/// other"), a known compiler limitation with generic closures and `impl Future` in traits. If
/// such a function must be `tokio::spawn`ed, box the call:
/// `Box::pin(subscriber.subscribe(types, handler)) as Pin<Box<dyn Future<Output = _> + Send + '_>>`.
/// Code that names the concrete type (`MemoryBus`, `RedisTransport`) is not affected.
pub trait Subscriber: Send + Sync {
    /// Starts handling events of the given types with `handler` and returns a handle for
    /// [`unsubscribe`](Self::unsubscribe).
    ///
    /// A handler that returns `Ok` acknowledges the event. One that returns `Err` leaves it for
    /// redelivery (or for the dead-letter stream, by configuration).
    fn subscribe<F, Fut>(
        &self,
        event_types: Vec<String>,
        handler: F,
    ) -> impl Future<Output = Result<SubscriptionHandle>> + Send
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static;

    /// Stops the subscription: reading stops, handlers already running finish (bounded by the
    /// implementation's drain timeout) and what finished is acknowledged before this returns.
    fn unsubscribe(&self, handle: &SubscriptionHandle) -> impl Future<Output = Result<()>> + Send;
}

/// Identifies one subscription, returned by [`Subscriber::subscribe`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SubscriptionHandle {
    id: u64,
    group: Arc<str>,
    event_types: Arc<[String]>,
}

impl SubscriptionHandle {
    /// A handle; implementations of [`Subscriber`] make these.
    pub fn new(id: u64, group: impl Into<Arc<str>>, event_types: impl Into<Arc<[String]>>) -> Self {
        Self {
            id,
            group: group.into(),
            event_types: event_types.into(),
        }
    }

    /// The subscription's id, unique within its subscriber.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The consumer group it reads as.
    #[must_use]
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The event types it handles.
    #[must_use]
    pub fn event_types(&self) -> &[String] {
        &self.event_types
    }
}

impl fmt::Debug for SubscriptionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionHandle")
            .field("id", &self.id)
            .field("group", &&*self.group)
            .field("event_types", &&*self.event_types)
            .finish()
    }
}

/// Checks the event types given to [`Subscriber::subscribe`] and returns them without
/// duplicates, in their first order. `check` validates one type (each backend has its own
/// rules on top of the core ones); an empty list is [`InvalidInput`](crate::ErrorKind::InvalidInput).
pub fn subscription_types(
    event_types: Vec<String>,
    check: impl Fn(&str) -> Result<()>,
) -> Result<Vec<String>> {
    if event_types.is_empty() {
        return Err(crate::Error::invalid_input(
            "list of event types",
            "must name at least one event type to subscribe to",
        ));
    }
    let mut types: Vec<String> = Vec::with_capacity(event_types.len());
    for event_type in event_types {
        check(&event_type)?;
        if !types.contains(&event_type) {
            types.push(event_type);
        }
    }
    Ok(types)
}
