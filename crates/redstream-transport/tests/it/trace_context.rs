//! W3C trace context across a stream (feature `opentelemetry`): a publish inside a span writes
//! that span's `traceparent`, the handler's span continues the trace, and headers given by the
//! caller are left alone.
//!
//! Every test sets its own `tracing` dispatcher (a `tracing-opentelemetry` layer over an SDK
//! tracer provider that exports into memory) as the default of its thread only: the binary's one
//! global subscriber is `support::capture_logs`'s. `#[tokio::test]` runs a current-thread
//! runtime, so the transport's spawned tasks (the subscription, the handlers) run on the test's
//! thread, under that dispatcher.

use std::collections::{BTreeMap, HashMap};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanKind, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use redstream_core::{Event, EventLimits, wire};
use redstream_testkit::RedisServer;
use redstream_transport::RedisTransport;
use tokio::sync::mpsc;
use tracing::{Dispatch, Instrument};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

use crate::support::{event, fast, recv, transport, unique, until, xrange};

/// A trace context as another service would send it.
const FOREIGN_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const FOREIGN_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const FOREIGN_SPAN_ID: &str = "00f067aa0ba902b7";

/// An OpenTelemetry pipeline that keeps finished spans in memory, and a `tracing` dispatcher
/// feeding it. The provider must outlive the test's spans (dropping it shuts it down).
struct Otel {
    provider: SdkTracerProvider,
    exporter: InMemorySpanExporter,
    dispatch: Dispatch,
}

impl Otel {
    fn new() -> Self {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("redstream-tests"));
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
        Self {
            provider,
            exporter,
            dispatch,
        }
    }

    /// The exported spans named `name`.
    fn finished(&self, name: &str) -> Vec<SpanData> {
        self.provider.force_flush().unwrap();
        self.exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|span| span.name == name)
            .collect()
    }

    /// Waits until a span named `name` has been exported (spans are exported when they close,
    /// which for the `handle` span is after the handler returned and its outcome was recorded).
    async fn wait_for(&self, name: &str) -> SpanData {
        until(&format!("the {name:?} span to be exported"), || async {
            !self.finished(name).is_empty()
        })
        .await;
        let mut spans = self.finished(name);
        assert_eq!(spans.len(), 1, "one {name:?} span");
        spans.remove(0)
    }
}

/// The OpenTelemetry span context of a `tracing` span (this starts the span).
fn context_of(span: &tracing::Span) -> SpanContext {
    span.context().span().span_context().clone()
}

/// The `messaging.*` attributes an exported span has, in a fixed order.
fn attributes(span: &SpanData) -> Vec<(&'static str, String)> {
    const NAMES: [&str; 6] = [
        "messaging.system",
        "messaging.operation.type",
        "messaging.batch.message_count",
        "messaging.destination.name",
        "messaging.consumer.group.name",
        "messaging.message.id",
    ];
    NAMES
        .iter()
        .filter_map(|name| {
            let value = span
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == *name)?
                .value
                .to_string();
            Some((*name, value))
        })
        .collect()
}

/// The `traceparent` W3C writes for `cx` (sampled).
fn traceparent(cx: &SpanContext) -> String {
    format!("00-{}-{}-01", cx.trace_id(), cx.span_id())
}

/// The headers of the events stored in the `Normal` lane of `event_type`, oldest first.
async fn stored_headers(
    server: &RedisServer,
    transport: &RedisTransport,
    event_type: &str,
) -> Vec<BTreeMap<String, String>> {
    let stream = transport.names().stream(event_type);
    xrange(server, &stream)
        .await
        .into_iter()
        .map(|(_, fields)| {
            let event = wire::decode_entry(fields, &EventLimits::default()).unwrap();
            event.metadata().headers.clone()
        })
        .collect()
}

/// What a handler saw: the event, and the context of a span it opened.
type Seen = (Event, SpanContext);

/// Subscribes a handler that opens a `prepare` span before it returns its future (the
/// closure's own work) and a `charge` span in it, and reports the latter's context.
async fn subscribe_reporting(
    transport: &RedisTransport,
    event_type: &str,
) -> mpsc::UnboundedReceiver<Seen> {
    let (tx, rx) = mpsc::unbounded_channel();
    transport
        .subscribe(vec![event_type.to_owned()], move |event: Event| {
            let tx = tx.clone();
            tracing::info_span!("prepare").in_scope(|| {});
            async move {
                let charge = tracing::info_span!("charge");
                let cx = context_of(&charge);
                tx.send((event, cx)).unwrap();
                Ok(())
            }
        })
        .await
        .unwrap();
    rx
}

#[tokio::test]
async fn the_handler_continues_the_trace_of_the_publishing_span() {
    let otel = Otel::new();
    let _default = tracing::dispatcher::set_default(&otel.dispatch);
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, &unique("tc"), "g", fast()).await;
    let mut seen = subscribe_reporting(&transport, "order.created").await;

    let checkout = tracing::info_span!("checkout");
    let publisher = context_of(&checkout);
    assert!(publisher.is_valid());
    transport
        .publish(event("order.created", 1))
        .instrument(checkout.clone())
        .await
        .unwrap();

    // The stored envelope carries the publishing span's context, and nothing else was added
    // (the sdk's trace state is empty, so no `tracestate`).
    let headers = stored_headers(&server, &transport, "order.created").await;
    assert_eq!(headers.len(), 1);
    assert_eq!(
        headers[0],
        BTreeMap::from([("traceparent".to_owned(), traceparent(&publisher))])
    );

    // The handler's own span is in the publisher's trace...
    let (event, charge) = recv(&mut seen, "the handled event").await;
    assert_eq!(
        event.metadata().headers["traceparent"],
        traceparent(&publisher)
    );
    assert_eq!(charge.trace_id(), publisher.trace_id());
    assert_ne!(charge.span_id(), publisher.span_id());

    // ...under the transport's `process {stream}` span (OpenTelemetry's messaging
    // conventions), whose parent is the publishing span (not the subscription's span, its
    // parent in `tracing`).
    let stream = transport.names().stream("order.created");
    let handle = otel.wait_for(&format!("process {stream}")).await;
    assert_eq!(handle.span_kind, SpanKind::Consumer);
    let entry_id = xrange(&server, &stream).await[0].0.clone();
    assert_eq!(
        attributes(&handle),
        [
            ("messaging.system", "redis".to_owned()),
            ("messaging.operation.type", "process".to_owned()),
            ("messaging.destination.name", stream.clone()),
            ("messaging.consumer.group.name", "g".to_owned()),
            ("messaging.message.id", entry_id.clone()),
        ]
    );
    // The transport's own `send {stream}` span, a producer span with the entry id Redis gave.
    let send = otel.wait_for(&format!("send {stream}")).await;
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(send.parent_span_id, publisher.span_id());
    assert_eq!(
        attributes(&send),
        [
            ("messaging.system", "redis".to_owned()),
            ("messaging.operation.type", "send".to_owned()),
            ("messaging.destination.name", stream.clone()),
            ("messaging.message.id", entry_id),
        ]
    );
    assert_eq!(handle.span_context.trace_id(), publisher.trace_id());
    assert_eq!(handle.parent_span_id, publisher.span_id());
    assert!(handle.parent_span_is_remote);
    let exported_charge = otel.wait_for("charge").await;
    assert_eq!(exported_charge.span_context.span_id(), charge.span_id());
    assert_eq!(
        exported_charge.parent_span_id,
        handle.span_context.span_id()
    );
    // What the handler's closure does before it returns its future is under the span too.
    let prepare = otel.wait_for("prepare").await;
    assert_eq!(prepare.parent_span_id, handle.span_context.span_id());
}

#[tokio::test]
async fn a_traceparent_given_by_the_caller_wins_and_is_continued() {
    let otel = Otel::new();
    let _default = tracing::dispatcher::set_default(&otel.dispatch);
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, &unique("tc"), "g", fast()).await;
    let mut seen = subscribe_reporting(&transport, "order.created").await;

    // Published inside a span of its own, which must not replace the caller's headers.
    let checkout = tracing::info_span!("checkout");
    let publisher = context_of(&checkout);
    let explicit = event("order.created", 1)
        .with_header("traceparent", FOREIGN_TRACEPARENT)
        .with_header("tracestate", "vendor=opaque");
    transport
        .publish(explicit)
        .instrument(checkout.clone())
        .await
        .unwrap();

    let headers = stored_headers(&server, &transport, "order.created").await;
    assert_eq!(
        headers,
        [BTreeMap::from([
            ("traceparent".to_owned(), FOREIGN_TRACEPARENT.to_owned()),
            ("tracestate".to_owned(), "vendor=opaque".to_owned()),
        ])]
    );

    // The handler continues the caller's trace, not the publishing span's.
    let (_, charge) = recv(&mut seen, "the handled event").await;
    assert_eq!(charge.trace_id().to_string(), FOREIGN_TRACE_ID);
    assert_ne!(charge.trace_id(), publisher.trace_id());
    let stream = transport.names().stream("order.created");
    let handle = otel.wait_for(&format!("process {stream}")).await;
    assert_eq!(handle.parent_span_id.to_string(), FOREIGN_SPAN_ID);
    assert_eq!(
        handle.span_context.trace_state().header(),
        "vendor=opaque",
        "the trace state travels with the trace"
    );
}

#[tokio::test]
async fn a_batch_carries_the_context_and_its_trace_state() {
    let otel = Otel::new();
    let _default = tracing::dispatcher::set_default(&otel.dispatch);
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, &unique("tc"), "g", fast()).await;

    // A span continuing an incoming request that had a trace state: its children inherit it.
    let incoming = HashMap::from([
        ("traceparent".to_owned(), FOREIGN_TRACEPARENT.to_owned()),
        ("tracestate".to_owned(), "vendor=opaque".to_owned()),
    ]);
    let request = tracing::info_span!("request");
    request
        .set_parent(TraceContextPropagator::new().extract(&incoming))
        .unwrap();
    let publisher = context_of(&request);
    assert_eq!(publisher.trace_id().to_string(), FOREIGN_TRACE_ID);

    // One event has its own traceparent: it keeps it, the others get the span's context.
    let batch = vec![
        event("order.created", 1),
        event("order.created", 2).with_header("traceparent", FOREIGN_TRACEPARENT),
        event("order.created", 3).with_header("source-system", "web"),
    ];
    transport
        .publish_batch(batch)
        .instrument(request.clone())
        .await
        .unwrap();

    let headers = stored_headers(&server, &transport, "order.created").await;
    let injected = |extra: Option<(&str, &str)>| {
        let mut expected = BTreeMap::from([
            ("traceparent".to_owned(), traceparent(&publisher)),
            ("tracestate".to_owned(), "vendor=opaque".to_owned()),
        ]);
        if let Some((name, value)) = extra {
            expected.insert(name.to_owned(), value.to_owned());
        }
        expected
    };
    assert_eq!(
        headers,
        [
            injected(None),
            BTreeMap::from([("traceparent".to_owned(), FOREIGN_TRACEPARENT.to_owned())]),
            injected(Some(("source-system", "web"))),
        ]
    );
    // One producer span for the batch, with its size.
    let stream = transport.names().stream("order.created");
    let send = otel.wait_for(&format!("send {stream}")).await;
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(
        attributes(&send),
        [
            ("messaging.system", "redis".to_owned()),
            ("messaging.operation.type", "send".to_owned()),
            ("messaging.batch.message_count", "3".to_owned()),
            ("messaging.destination.name", stream),
        ]
    );
    // Linked to each distinct context its events carry: the caller's and the foreign one.
    let mut links: Vec<String> = send
        .links
        .links
        .iter()
        .map(|link| traceparent(&link.span_context))
        .collect();
    links.sort();
    let mut expected = vec![traceparent(&publisher), FOREIGN_TRACEPARENT.to_owned()];
    expected.sort();
    assert_eq!(links, expected);
}

#[tokio::test]
async fn nothing_is_injected_outside_a_traced_span() {
    let otel = Otel::new();
    let _default = tracing::dispatcher::set_default(&otel.dispatch);
    let server = RedisServer::start().await.unwrap();
    let transport = transport(&server, &unique("tc"), "g", fast()).await;

    // No current span.
    transport.publish(event("order.created", 1)).await.unwrap();
    // A span of a subscriber without an OpenTelemetry layer.
    {
        let plain = Dispatch::new(tracing_subscriber::registry());
        let _plain = tracing::dispatcher::set_default(&plain);
        let untraced = tracing::info_span!("untraced");
        transport
            .publish(event("order.created", 2))
            .instrument(untraced)
            .await
            .unwrap();
    }

    let headers = stored_headers(&server, &transport, "order.created").await;
    assert_eq!(headers, [BTreeMap::new(), BTreeMap::new()]);
}
