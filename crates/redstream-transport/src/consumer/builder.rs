//! [`SubscriptionBuilder`]: subscriptions to event types and to streams by name, in any group.

use std::future::Future;

use std::sync::Arc;

use redstream_core::{BoxError, Error, Event, HandlerResult, Result, SubscriptionHandle};

use super::handler::{DynDecoder, Handling, erase, erase_raw};
use super::sub::{Mode, StreamSpec};
use crate::config::{StartFrom, validate_name};
use crate::keys::{validate_event_type, validate_stream_name};
use crate::raw::RawEntry;
use crate::transport::RedisTransport;

/// A subscription being set up: what it reads, as which group, from where; made by
/// [`RedisTransport::subscription`], started by [`handle`](Self::handle).
///
/// ```no_run
/// # async fn demo(transport: redstream_transport::RedisTransport) -> redstream_transport::Result<()> {
/// use redstream_core::{Event, HandlerResult};
/// // Seed 004: the topic `events.raw`, whatever its events' types, as `event-processors`.
/// let handle = transport
///     .subscription()
///     .streams(["events.raw"])
///     .group("event-processors")
///     .handle(|event: Event| async move {
///         println!("{} {}", event.event_type(), event.payload());
///         HandlerResult::Ok(())
///     })
///     .await?;
/// # Ok(())
/// # }
/// ```
///
/// # Streams by type and by name
///
/// [`types`](Self::types) reads the stream of each event type under the transport's prefix
/// (`events:order.created`); an entry there whose envelope has *another* type is dead-lettered,
/// with an error naming both types. [`streams`](Self::streams) reads streams by their full names
/// (`events.raw`, `orders.events`), used as they are, and hands over events of any type. One
/// subscription may do both; a stream may not be named twice.
#[must_use = "a subscription starts only with .handle(..)"]
pub struct SubscriptionBuilder {
    pub(super) transport: RedisTransport,
    pub(super) types: Vec<String>,
    pub(super) streams: Vec<String>,
    pub(super) group: Option<String>,
    pub(super) start_from: Option<StartFrom>,
    pub(super) decoder: Option<DynDecoder>,
}

impl RedisTransport {
    /// A subscription to set up: add [`types`](SubscriptionBuilder::types) and/or
    /// [`streams`](SubscriptionBuilder::streams), optionally a
    /// [`group`](SubscriptionBuilder::group) (default: the configuration's `consumer_group`) and
    /// a [`start_from`](SubscriptionBuilder::start_from) (default: the options'), then
    /// [`handle`](SubscriptionBuilder::handle).
    pub fn subscription(&self) -> SubscriptionBuilder {
        SubscriptionBuilder {
            transport: self.clone(),
            types: Vec::new(),
            streams: Vec::new(),
            group: None,
            start_from: None,
            decoder: None,
        }
    }
}

impl SubscriptionBuilder {
    /// Adds the streams of these event types under the transport's prefix.
    pub fn types<I, S>(mut self, event_types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.types.extend(event_types.into_iter().map(Into::into));
        self
    }

    /// Adds streams by their full names, used as they are (`events.raw`, `orders.events`).
    pub fn streams<I, S>(mut self, streams: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.streams.extend(streams.into_iter().map(Into::into));
        self
    }

    /// Reads as a member of this consumer group (created on each stream if missing) instead of
    /// the configuration's `consumer_group`. The consumer name stays the configuration's.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Where the group starts on streams where it does not exist yet.
    pub fn start_from(mut self, start_from: StartFrom) -> Self {
        self.start_from = Some(start_from);
        self
    }

    /// Maps each entry to an event with `decoder` instead of reading the redstream envelope:
    /// for streams someone else writes in their own format. The decoder runs before the
    /// handler of [`handle`](Self::handle); an entry it refuses (`Err`, or a panic) is
    /// dead-lettered at once with the decoder's error, keeping its fields, so that a redrive
    /// after a fix writes it back as it was. The events' priorities are not used to order the
    /// buffer (entries are taken in stream order).
    ///
    /// ```no_run
    /// # async fn demo(transport: redstream_transport::RedisTransport) -> redstream_transport::Result<()> {
    /// use redstream_core::{Event, EventMetadata, HandlerResult};
    /// // Seed 004's flat fields: event_id, brand_id, event_type, payload, timestamp.
    /// transport
    ///     .subscription()
    ///     .streams(["events.raw"])
    ///     .group("event-processors")
    ///     .decode_with(|entry| {
    ///         let event_type = entry.text("event_type").ok_or("no event_type field")?;
    ///         let payload = serde_json::from_slice(entry.field("payload").unwrap_or(b"null"))?;
    ///         Ok(Event::new(event_type, payload, EventMetadata::default()))
    ///     })
    ///     .handle(|event: Event| async move { HandlerResult::Ok(()) })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn decode_with<D>(mut self, decoder: D) -> Self
    where
        D: Fn(&RawEntry) -> Result<Event, BoxError> + Send + Sync + 'static,
    {
        self.decoder = Some(Arc::new(decoder));
        self
    }

    /// Starts the subscription with a handler of raw entries: the stream, the entry id, the
    /// delivery count and the fields as written, in any format. Acknowledgement, redelivery,
    /// claiming and dead letters are as for events; a dead letter keeps the entry's fields and
    /// its stream, and a redrive writes the same fields back to that stream. Entries are taken
    /// in stream order (they have no priority).
    ///
    /// # Errors
    ///
    /// As [`handle`](Self::handle).
    pub async fn handle_raw<F, Fut>(self, handler: F) -> Result<SubscriptionHandle>
    where
        F: Fn(RawEntry) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        if self.decoder.is_some() {
            return Err(Error::invalid_input(
                "subscription",
                "has a decoder, which makes events for .handle(..); .handle_raw(..) takes the \
                 entries as they are",
            ));
        }
        self.start(Handling::Raw(erase_raw(handler))).await
    }

    /// Starts the subscription with an event handler: entries are decoded from the redstream
    /// envelope (or by the [`decoder`](Self::decode_with)), and otherwise everything is as for
    /// [`RedisTransport::subscribe`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput) for no streams, an
    /// invalid type, stream or group name, or a stream named twice; a Redis error if the groups
    /// cannot be created or the reading connection cannot be opened.
    pub async fn handle<F, Fut>(self, handler: F) -> Result<SubscriptionHandle>
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let handler = erase(handler);
        let handling = match self.decoder.clone() {
            Some(decoder) => Handling::Decoded(decoder, handler),
            None => Handling::Events(handler),
        };
        self.start(handling).await
    }

    /// Checks everything, then starts the subscription.
    pub(super) async fn start(self, handling: Handling) -> Result<SubscriptionHandle> {
        let transport = &self.transport;
        let inner = &transport.inner;
        if self.types.is_empty() && self.streams.is_empty() {
            return Err(Error::invalid_input(
                "subscription",
                "names no stream: add .types([..]) or .streams([..])",
            ));
        }
        let group = self
            .group
            .unwrap_or_else(|| inner.config.consumer_group.clone());
        validate_name("group", &group, &[])?;
        let mut specs: Vec<StreamSpec> = Vec::new();
        let mut names = Vec::new();
        for event_type in &self.types {
            validate_event_type(event_type, &inner.options.limits)?;
            if !names.contains(event_type) {
                names.push(event_type.clone());
                specs.push(StreamSpec::of_type(
                    inner.names.stream(event_type),
                    event_type,
                ));
            }
        }
        for stream in &self.streams {
            validate_stream_name(stream)?;
            if inner.names.is_dlq(stream) {
                return Err(Error::invalid_input(
                    format!("stream {stream:?}"),
                    "is the dead-letter stream: read it with consume_dlq, whose failures are \
                     never dead-lettered again",
                ));
            }
            let by_name_already = specs
                .iter()
                .any(|s| s.key == *stream && s.event_type.is_none());
            if by_name_already {
                continue;
            }
            if specs.iter().any(|s| s.key == *stream) {
                return Err(Error::invalid_input(
                    format!("stream {stream:?}"),
                    "is named twice in the subscription (as an event type's stream and by name)",
                ));
            }
            names.push(stream.clone());
            specs.push(StreamSpec::by_name(stream.clone()));
        }
        let start_from = self.start_from.unwrap_or(inner.options.start_from);
        transport
            .start_subscription(Mode::Events, group, names, specs, start_from, handling)
            .await
    }
}
