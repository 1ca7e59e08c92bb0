//! Workers: an entry from the buffer through decoding and its handler, and what a failure
//! leads to (redelivery later, or a dead letter now).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use redstream_core::{Event, wire};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ack::Ack;
use super::dispatch::Peek;
use super::handler::{BoxFuture, Handling};
use super::sub::{Delivery, Mode, Sub};
use super::{lock, now_ms};
use crate::raw::RawEntry;
use crate::{dlq, reply, telemetry, trace_context};
use opentelemetry_semantic_conventions::attribute as semconv;

/// Tells a subscription's workers to stop. The flag is what a worker looks at between two
/// entries (a load, where the token's `is_cancelled` takes a lock); the token wakes the
/// workers waiting for an entry.
#[derive(Clone, Default)]
pub(super) struct WorkerStop {
    stopped: Arc<AtomicBool>,
    token: CancellationToken,
}

impl WorkerStop {
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.token.cancel();
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// Takes entries from the buffer and handles them, one at a time, until stopped.
pub(super) async fn worker(sub: Arc<Sub>, handling: Handling, stop: WorkerStop) {
    loop {
        if stop.is_stopped() {
            return;
        }
        // An entry waiting is taken without the select: waiting on the stop token registers
        // with (and leaves) its wait list, which cost more than the rest of the hand-over.
        let delivery = match sub.buffer.try_take() {
            Some(delivery) => delivery,
            None => {
                let delivery = tokio::select! {
                    biased;
                    () = stop.token.cancelled() => return,
                    delivery = sub.buffer.take() => delivery,
                };
                let Some(delivery) = delivery else {
                    return;
                };
                delivery
            }
        };
        sub.handle(delivery, &handling).await;
    }
}

impl Sub {
    pub(super) fn ack(&self, stream: usize, id: String) {
        self.acks[self.slot_group_of[stream]].push(Ack { stream, id });
    }

    /// Runs one entry through its handler.
    async fn handle(&self, delivery: Delivery, handling: &Handling) {
        match handling {
            Handling::Events(handler) => {
                // An event stream's entry is decoded here, at once; a dead letter's in `decode`.
                let decoded = (self.mode == Mode::Events).then(|| {
                    let fields = delivery
                        .fields
                        .iter()
                        .map(|(k, v)| (k.as_slice(), v.as_slice()));
                    wire::decode_stream_entry(&delivery.id, fields, &self.options.limits)
                });
                let event = match decoded {
                    // The usual case, decided without an await: an await would keep the event
                    // in this future's state and copy it in and out.
                    Some(Ok(event)) if self.is_of_its_streams_type(&delivery, &event) => event,
                    decoded => match self.decode(&delivery, decoded).await {
                        Some(event) => event,
                        None => return,
                    },
                };
                let span = self.span(&delivery, Some(&event));
                let call = start(&span, handler, event);
                self.run(delivery, span, call).await;
            }
            Handling::Decoded(decoder, handler) => {
                let entry = self.raw_entry(&delivery);
                let decoded =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decoder(&entry)));
                let event = match decoded {
                    Ok(Ok(event)) => event,
                    Ok(Err(err)) => {
                        let error = format!("the subscription's decoder refused the entry: {err}");
                        self.decode_failed(&delivery, &error).await;
                        return;
                    }
                    Err(_) => {
                        let error = "the subscription's decoder panicked on the entry";
                        self.decode_failed(&delivery, error).await;
                        return;
                    }
                };
                if !self.has_its_streams_type(&delivery, &event).await {
                    return;
                }
                let span = self.span(&delivery, Some(&event));
                let call = start(&span, handler, event);
                self.run(delivery, span, call).await;
            }
            Handling::Raw(handler) => {
                let entry = self.raw_entry(&delivery);
                let span = self.span(&delivery, None);
                let call = start(&span, handler, entry);
                self.run(delivery, span, call).await;
            }
        }
    }

    /// The entry as a raw entry, for a raw handler or a decoder.
    fn raw_entry(&self, delivery: &Delivery) -> RawEntry {
        RawEntry {
            stream: self.spec(delivery.stream).key.clone(),
            id: delivery.id.clone(),
            deliveries: delivery.deliveries,
            fields: delivery.fields.clone(),
        }
    }

    /// An entry that cannot be decoded: counted, logged, dead-lettered at once.
    async fn decode_failed(&self, delivery: &Delivery, error: &str) {
        let spec = self.spec(delivery.stream);
        metrics::counter!(telemetry::DECODE_FAILURES, "stream" => spec.key.clone()).increment(1);
        tracing::warn!(stream = %spec.key, entry_id = %delivery.id, error = %error, "undecodable entry");
        self.give_up(delivery, error, dlq::Reason::Decode).await;
    }

    /// Whether the event has the type of the stream it was read from, for a stream subscribed
    /// by type; an event of another type is dead-lettered (a stream by name takes any type).
    async fn has_its_streams_type(&self, delivery: &Delivery, event: &Event) -> bool {
        if self.is_of_its_streams_type(delivery, event) {
            return true;
        }
        let spec = self.spec(delivery.stream);
        let expected = spec.event_type.as_deref().unwrap_or_default();
        let error = format!(
            "the entry holds an event of type {:?}, but {} is the stream of type {expected:?} \
             and this subscription is by event type; publish it to its own type's stream, or \
             subscribe to the stream by name to receive any type",
            event.event_type(),
            spec.key
        );
        tracing::warn!(stream = %spec.key, entry_id = %delivery.id, error = %error, "entry of another type");
        self.give_up(delivery, &error, dlq::Reason::WrongType).await;
        false
    }

    /// Whether the event may be handed to the handler as far as its type goes: the stream is
    /// subscribed by name (any type), or the event is of the stream's type.
    fn is_of_its_streams_type(&self, delivery: &Delivery, event: &Event) -> bool {
        self.spec(delivery.stream)
            .event_type
            .as_deref()
            .is_none_or(|expected| event.event_type() == expected)
    }

    /// Checks the type of a decoded entry (`decoded`, from `handle`), or decodes a dead letter
    /// first; `None` when the entry was given up on.
    async fn decode(
        &self,
        delivery: &Delivery,
        decoded: Option<Result<Event, wire::DecodeError>>,
    ) -> Option<Event> {
        let decoded = match decoded {
            Some(decoded) => decoded,
            None => self.decode_dead_letter(delivery).await?,
        };
        match decoded {
            Ok(event) if self.has_its_streams_type(delivery, &event).await => Some(event),
            Ok(_) => None,
            Err(err) => {
                let error = format!("cannot decode the stream entry: {err}");
                self.decode_failed(delivery, &error).await;
                None
            }
        }
    }

    /// The envelope a dead letter holds, decoded with the id of the entry it was moved from
    /// (which gives an envelope without a timestamp a stable one); `None` when the dead letter
    /// holds a foreign entry's fields instead, which is given up on.
    async fn decode_dead_letter(
        &self,
        delivery: &Delivery,
    ) -> Option<Result<Event, wire::DecodeError>> {
        let holds_fields = [dlq::field::UNDECODABLE, dlq::field::RAW]
            .iter()
            .any(|flag| reply::text_field(&delivery.fields, flag).is_some());
        if holds_fields {
            let error = "the dead letter holds the fields of an entry that was not an envelope, so \
                         there is no event to hand over";
            self.give_up(delivery, error, dlq::Reason::Decode).await;
            return None;
        }
        let fields = delivery
            .fields
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()));
        let original_id =
            reply::text_field(&delivery.fields, dlq::field::ENTRY_ID).filter(|id| !id.is_empty());
        let entry_id = original_id.as_deref().unwrap_or(&delivery.id);
        Some(wire::decode_stream_entry(
            entry_id,
            fields,
            &self.options.limits,
        ))
    }
    /// The span of one handler call.
    fn span(&self, delivery: &Delivery, event: Option<&Event>) -> tracing::Span {
        let spec = self.spec(delivery.stream);
        // OpenTelemetry's messaging conventions: a `process {stream}` consumer span.
        let span = tracing::info_span!(
            "handle",
            otel.name = %format_args!("process {}", spec.key),
            otel.kind = "consumer",
            { semconv::MESSAGING_SYSTEM } = telemetry::MESSAGING_SYSTEM,
            { semconv::MESSAGING_OPERATION_TYPE } = "process",
            { semconv::MESSAGING_DESTINATION_NAME } = %spec.key,
            { semconv::MESSAGING_CONSUMER_GROUP_NAME } = %self.group,
            { semconv::MESSAGING_MESSAGE_ID } = %delivery.id,
            { semconv::MESSAGING_MESSAGE_BODY_SIZE } = delivery
                .fields
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum::<usize>(),
            stream = %spec.key,
            entry_id = %delivery.id,
            event_type = tracing::field::Empty,
            event_id = tracing::field::Empty,
            group = %self.group,
            deliveries = delivery.deliveries,
            traceparent = tracing::field::Empty,
        );
        if let Some(event) = event {
            span.record("event_type", event.event_type());
            span.record("event_id", tracing::field::display(event.id()));
            if let Some(traceparent) = event.metadata().headers.get("traceparent") {
                span.record("traceparent", traceparent.as_str());
            }
            // With the `opentelemetry` feature, the handler continues the publisher's trace.
            trace_context::continue_trace(&span, event);
        }
        span
    }

    /// Runs `call`, the handler of `delivery` (or the panic that started it), with its span
    /// and metrics, then acknowledges the entry or records the failure.
    async fn run(&self, delivery: Delivery, span: tracing::Span, call: Started) {
        let handled = &self.handled[delivery.stream];
        handled.consumed.increment(1);
        let started = Instant::now();
        // In this task, not one of its own: a panic is caught here and becomes a failed
        // delivery, and stopping the worker drops (cancels) the handler with it. The future is
        // the handler's own box; without a subscriber that wants the span, no wrapper.
        let caught = match call {
            Ok(call) if span.is_disabled() => AssertUnwindSafe(call).catch_unwind().await,
            Ok(call) => {
                AssertUnwindSafe(call.instrument(span.clone()))
                    .catch_unwind()
                    .await
            }
            Err(panic) => Err(panic),
        };
        let outcome = match caught {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(panic) => Err(panic_message(panic.as_ref())),
        };
        handled.latency.record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(()) => self.ack(delivery.stream, delivery.id),
            Err(error) => self.handler_failed(delivery, error).instrument(span).await,
        }
    }

    /// After a handler failed: redelivery later, or the end (dead letter) now.
    async fn handler_failed(&self, delivery: Delivery, error: String) {
        let last = self.options.dead_letter_on_first_failure
            || delivery.deliveries >= self.options.max_deliveries;
        if last {
            self.give_up(&delivery, &error, dlq::Reason::Handler).await;
            return;
        }
        let spec = self.spec(delivery.stream);
        tracing::warn!(
            error = %error,
            deliveries = delivery.deliveries,
            max_deliveries = self.options.max_deliveries,
            "handler failed; the entry stays pending and is delivered again after \
             claim_idle_time ({:?})",
            self.options.claim_idle_time
        );
        metrics::counter!(
            telemetry::RETRIED,
            "event_type" => Arc::clone(&spec.label),
            "group" => Arc::clone(&self.group),
        )
        .increment(1);
        lock(&self.failures)
            .entry((delivery.stream, delivery.id.clone()))
            .or_insert_with(now_ms);
        self.flights.remove(&spec.key, &delivery.id);
    }

    /// The entry will not be handled: moved to the dead-letter stream (or, for a subscription to
    /// the dead-letter stream, acknowledged with an error log).
    pub(crate) async fn give_up(&self, delivery: &Delivery, error: &str, reason: dlq::Reason) {
        let spec = self.spec(delivery.stream);
        let first_failure = lock(&self.failures).remove(&(delivery.stream, delivery.id.clone()));
        match self.mode {
            Mode::DeadLetters => {
                tracing::error!(
                    stream = %spec.key,
                    entry_id = %delivery.id,
                    deliveries = delivery.deliveries,
                    error = %error,
                    "giving up on a dead letter: acknowledged in group {:?}; it stays in the \
                     dead-letter stream (see dlq_entries and the redrive methods)",
                    self.group
                );
                self.ack(delivery.stream, delivery.id.clone());
            }
            Mode::Events => {
                let now = now_ms();
                let body = dlq::Body::of(
                    &delivery.fields,
                    !self.envelopes,
                    reason == dlq::Reason::Decode,
                    self.options.limits.max_encoded_bytes,
                );
                let peeked;
                let original_type = match &spec.event_type {
                    Some(event_type) if reason != dlq::Reason::WrongType => &**event_type,
                    _ => {
                        peeked = Peek::of(&delivery.fields).event_type;
                        peeked.as_deref().unwrap_or_default()
                    }
                };
                let fields = dlq::DeadLetterFields {
                    body,
                    error,
                    original_type,
                    stream: &spec.key,
                    entry_id: &delivery.id,
                    group: &self.group,
                    consumer: &self.consumer,
                    deliveries: delivery.deliveries,
                    first_failure_ms: first_failure.unwrap_or(now),
                    last_failure_ms: now,
                };
                // `Ok(None)`: no longer pending in the group, nothing written (logged there).
                let moved = dlq::move_entry(&self.redis, &self.names, &fields, reason).await;
                if let Err(err) = moved {
                    tracing::error!(
                        stream = %spec.key,
                        entry_id = %delivery.id,
                        error = %err,
                        "could not move the entry to the dead-letter stream; it stays pending and \
                         is claimed again later"
                    );
                }
                self.flights.remove(&spec.key, &delivery.id);
            }
        }
    }

    /// Forgets failure times old enough that their entries must have been dead-lettered or
    /// handled elsewhere since.
    pub(crate) fn prune_failures(&self) {
        let o = &self.options;
        // Saturating: the durations come from the configuration, which bounds none of them.
        let horizon = o
            .claim_idle_time
            .saturating_add(o.claim_interval)
            .saturating_mul(o.max_deliveries.saturating_add(1))
            .saturating_mul(4)
            .saturating_add(Duration::from_secs(60));
        let oldest =
            now_ms().saturating_sub(u64::try_from(horizon.as_millis()).unwrap_or(u64::MAX));
        lock(&self.failures).retain(|_, first| *first >= oldest);
    }
}

/// A handler's future, or the panic of the call that was to return it.
type Started = std::thread::Result<BoxFuture>;

/// Calls `handler` with `input` inside `span` (what the handler does before it returns its
/// future belongs to the delivery's span too), catching a panic of the call itself, before its
/// future exists, so that it fails the delivery as a panic of the future would.
fn start<T>(
    span: &tracing::Span,
    handler: &Arc<dyn Fn(T) -> BoxFuture + Send + Sync>,
    input: T,
) -> Started {
    let _entered = (!span.is_disabled()).then(|| span.enter());
    std::panic::catch_unwind(AssertUnwindSafe(|| handler(input)))
}

/// What a handler's panic says, as a delivery's error.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned());
    format!("handler panicked: {message}")
}
