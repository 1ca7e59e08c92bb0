//! W3C trace context in event headers (feature `opentelemetry`).
//!
//! With the feature on, a trace crosses the stream:
//!
//! - [`publish`](crate::RedisTransport::publish) and
//!   [`publish_batch`](crate::RedisTransport::publish_batch) take the OpenTelemetry context of the
//!   caller's current `tracing` span (through `tracing-opentelemetry`) and write it into each
//!   event's `traceparent` header, plus `tracestate` when that is not empty, in the
//!   [W3C Trace Context](https://www.w3.org/TR/trace-context/) format.
//! - The consumer reads those headers back and makes them the parent of the handler's `handle`
//!   span, so the handler, and every span it opens, continues the publisher's trace.
//!
//! The rules:
//!
//! - **A header given by the caller wins.** An event that already has a `traceparent` is
//!   published as it is, so a context from elsewhere (an incoming HTTP request, an event being
//!   republished) can be passed on by setting the header. An existing `tracestate` is never
//!   overwritten either.
//! - **Nothing is injected without a valid context**: no current span, no `tracing-opentelemetry`
//!   layer in the subscriber, or a span that layer does not see. Nothing is injected either when
//!   the event has no room left for another header under
//!   [`EventLimits::max_headers`](redstream_core::EventLimits::max_headers): tracing must never
//!   make a publish fail.
//! - **The context is the caller's span**, not the transport's own `publish` span: that one is at
//!   `debug` level and usually filtered out, and a trace should not change shape with the log
//!   level. In a trace view, `publish` and the handler's `handle` are both children of the span
//!   that published.
//! - **Always W3C `TraceContextPropagator`**, never the process-wide propagator: the header names
//!   are part of the wire format (`docs/wire-format.md`), read by services in other languages,
//!   and an application that configures B3 or Jaeger headers for HTTP should not change what is
//!   written into streams.
//! - A `traceparent` that does not parse is ignored: the `handle` span then has the parent it
//!   would have had without the header.
//!
//! Without the feature no OpenTelemetry code is compiled in, headers travel untouched, and a
//! `traceparent` header is only recorded as a field of the `handle` span (it is recorded so with
//! the feature too). The functions here are then empty and inlined away.

use redstream_core::{Event, EventLimits};

/// The W3C header that carries the trace id, the parent span id and the sampled flag.
#[cfg(feature = "opentelemetry")]
const TRACEPARENT: &str = "traceparent";
/// The W3C header that carries vendor-specific trace state.
#[cfg(feature = "opentelemetry")]
const TRACESTATE: &str = "tracestate";

/// The caller's trace context as W3C headers, captured once per publish call and written into
/// every event of that call.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    /// `traceparent`, and `tracestate` when it is not empty; `None` without a valid context.
    #[cfg(feature = "opentelemetry")]
    headers: Option<(String, Option<String>)>,
}

#[cfg(not(feature = "opentelemetry"))]
impl Outgoing {
    /// Nothing to capture without the `opentelemetry` feature.
    #[inline]
    pub(crate) fn current() -> Self {
        Self {}
    }

    /// Nothing to write without the `opentelemetry` feature.
    #[inline]
    pub(crate) fn inject(&self, _event: &mut Event, _limits: &EventLimits) {}
}

#[cfg(feature = "opentelemetry")]
impl Outgoing {
    /// The context of the current `tracing` span, if it has a valid OpenTelemetry one.
    pub(crate) fn current() -> Self {
        use opentelemetry::propagation::TextMapPropagator;
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;

        let cx = tracing::Span::current().context();
        if !cx.span().span_context().is_valid() {
            return Self::default();
        }
        let mut carrier = otel::Carrier::default();
        opentelemetry_sdk::propagation::TraceContextPropagator::new()
            .inject_context(&cx, &mut carrier);
        Self {
            headers: carrier
                .traceparent
                .map(|traceparent| (traceparent, carrier.tracestate)),
        }
    }

    /// Writes the captured context into `event`'s headers, unless the event has a `traceparent`
    /// already or no room for one under `limits`.
    pub(crate) fn inject(&self, event: &mut Event, limits: &EventLimits) {
        let Some((traceparent, tracestate)) = &self.headers else {
            return;
        };
        let headers = &mut event.metadata_mut().headers;
        if headers.contains_key(TRACEPARENT) || headers.len() >= limits.max_headers {
            return;
        }
        headers.insert(TRACEPARENT.to_owned(), traceparent.clone());
        if let Some(tracestate) = tracestate
            && !headers.contains_key(TRACESTATE)
            && headers.len() < limits.max_headers
            && tracestate.len() <= limits.max_string_len
        {
            headers.insert(TRACESTATE.to_owned(), tracestate.clone());
        }
    }
}

/// Makes the trace context in `event`'s headers the parent of `span`, the handler's span, so the
/// handler continues the publisher's trace. Must run before `span` is first entered: a started
/// OpenTelemetry span cannot change its parent.
#[cfg(not(feature = "opentelemetry"))]
#[inline]
pub(crate) fn continue_trace(_span: &tracing::Span, _event: &Event) {}

/// Makes the trace context in `event`'s headers the parent of `span`, the handler's span, so the
/// handler continues the publisher's trace. Must run before `span` is first entered: a started
/// OpenTelemetry span cannot change its parent.
#[cfg(feature = "opentelemetry")]
pub(crate) fn continue_trace(span: &tracing::Span, event: &Event) {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};

    let headers = &event.metadata().headers;
    if span.is_disabled() || !headers.contains_key(TRACEPARENT) {
        return;
    }
    // Extract into an empty context, not the thread's current one: the parent is the publisher's
    // span and nothing else.
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract_with_context(&opentelemetry::Context::new(), &otel::Headers(headers));
    if !cx.span().span_context().is_valid() {
        return;
    }
    // Without a `tracing-opentelemetry` layer (`LayerNotFound`) or with the span filtered out by
    // it (`SpanDisabled`) there is no OpenTelemetry span to continue the trace: nothing to do.
    if let Err(SetParentError::AlreadyStarted) = span.set_parent(cx) {
        tracing::debug!("the handle span started before its parent was set: trace not continued");
    }
}

/// Links a batch's `send` span to the trace contexts its events carry (each distinct one once,
/// at most [`MAX_LINKS`]), as OpenTelemetry's messaging conventions ask of a span that sends
/// several messages: an event that came with a context of its own stays reachable from the
/// batch that sent it.
#[cfg(not(feature = "opentelemetry"))]
#[inline]
pub(crate) fn link_batch(_span: &tracing::Span, _events: &[Event]) {}

/// The most links a batch's span gets (the OpenTelemetry SDK's default limit).
#[cfg(feature = "opentelemetry")]
const MAX_LINKS: usize = 128;

/// Links a batch's `send` span to the trace contexts its events carry (each distinct one once,
/// at most [`MAX_LINKS`]), as OpenTelemetry's messaging conventions ask of a span that sends
/// several messages: an event that came with a context of its own stays reachable from the
/// batch that sent it.
#[cfg(feature = "opentelemetry")]
pub(crate) fn link_batch(span: &tracing::Span, events: &[Event]) {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    if span.is_disabled() {
        return;
    }
    let propagator = opentelemetry_sdk::propagation::TraceContextPropagator::new();
    let mut linked: Vec<(opentelemetry::trace::TraceId, opentelemetry::trace::SpanId)> = Vec::new();
    for event in events {
        let headers = &event.metadata().headers;
        if !headers.contains_key(TRACEPARENT) {
            continue;
        }
        let cx = propagator
            .extract_with_context(&opentelemetry::Context::new(), &otel::Headers(headers));
        let context = cx.span().span_context().clone();
        let key = (context.trace_id(), context.span_id());
        if !context.is_valid() || linked.contains(&key) {
            continue;
        }
        if linked.len() == MAX_LINKS {
            break;
        }
        linked.push(key);
        span.add_link(context);
    }
}

/// The carriers between event headers and the OpenTelemetry propagator.
#[cfg(feature = "opentelemetry")]
mod otel {
    use std::collections::BTreeMap;

    use opentelemetry::propagation::{Extractor, Injector};

    use super::{TRACEPARENT, TRACESTATE};

    /// What the propagator writes, kept as two strings to be copied into each event.
    #[derive(Default)]
    pub(super) struct Carrier {
        pub(super) traceparent: Option<String>,
        pub(super) tracestate: Option<String>,
    }

    impl Injector for Carrier {
        fn set(&mut self, key: &str, value: String) {
            match key {
                TRACEPARENT => self.traceparent = Some(value),
                // The propagator writes `tracestate` even when it is empty; an empty header says
                // nothing.
                TRACESTATE if !value.is_empty() => self.tracestate = Some(value),
                _ => {}
            }
        }
    }

    /// An event's headers, read by the propagator.
    pub(super) struct Headers<'a>(pub(super) &'a BTreeMap<String, String>);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(String::as_str)
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(String::as_str).collect()
        }
    }
}
