//! Publishing: `XADD {prefix}:{event_type} MAXLEN ~ N * event <envelope>`.

use std::time::Instant;

use redis::Cmd;
use redstream_core::wire::{self, EVENT_FIELD};
use redstream_core::{Error, Event, Publisher, Result};
use tracing::Instrument;

use crate::keys::Keys;
use crate::telemetry;
use crate::trace_context::Outgoing;
use crate::transport::RedisTransport;

/// An event checked and encoded, ready to be written.
struct Encoded {
    stream: String,
    envelope: String,
}

impl RedisTransport {
    /// Validates and encodes one event, and picks its stream from its type and priority.
    fn encode(&self, event: &Event) -> Result<Encoded> {
        let options = &self.inner.options;
        Keys::validate_event_type(event.event_type(), &options.limits)?;
        let envelope = wire::encode(event, &options.limits)?;
        let stream = self.inner.keys.stream(event.event_type(), event.priority());
        Ok(Encoded { stream, envelope })
    }

    /// The `XADD` for one encoded event, trimmed with `MAXLEN ~` when a limit is set.
    fn xadd(&self, encoded: &Encoded) -> Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&encoded.stream);
        let max_len = self.inner.config.max_stream_length;
        if max_len > 0 {
            cmd.arg("MAXLEN").arg("~").arg(max_len);
        }
        cmd.arg("*").arg(EVENT_FIELD).arg(&encoded.envelope);
        cmd
    }

    /// Publishes one event and returns its stream entry id.
    ///
    /// The event is validated (type, metadata, size) before anything is sent. The write goes
    /// through the circuit breaker: while it is open, this fails at once with
    /// [`ErrorKind::CircuitOpen`](redstream_core::ErrorKind::CircuitOpen). Concurrent calls share
    /// one multiplexed connection, which pipelines them.
    ///
    /// With the `opentelemetry` feature, the current span's trace context is written into the
    /// event's `traceparent`/`tracestate` headers unless the event has a `traceparent` already
    /// ("Trace context" in `docs/transport.md`).
    pub async fn publish(&self, mut event: Event) -> Result<String> {
        Outgoing::current().inject(&mut event, &self.inner.options.limits);
        let encoded = self.encode(&event)?;
        let span = tracing::debug_span!(
            "publish",
            stream = %encoded.stream,
            event_type = %event.event_type(),
            event_id = %event.id(),
            entry_id = tracing::field::Empty,
        );
        async {
            let started = Instant::now();
            let cmd = self.xadd(&encoded);
            let result = self
                .inner
                .breaker
                .call(|| async {
                    let mut conn = self.inner.conn.clone();
                    cmd.query_async::<String>(&mut conn)
                        .await
                        .map_err(|err| Error::from_redis("XADD", encoded.stream.clone(), err))
                })
                .await;
            self.record_publish(&result, event.event_type(), started);
            if let Ok(id) = &result {
                tracing::Span::current().record("entry_id", id.as_str());
            }
            result
        }
        .instrument(span)
        .await
    }

    /// Publishes several events in one round trip, as one `MULTI`/`EXEC` transaction, and
    /// returns their entry ids in order.
    ///
    /// Every event is validated first, so one invalid event fails the batch before anything is
    /// sent; and the transaction means the batch is written in full or not at all, never in
    /// part. (All streams of one prefix share a hash tag, so this holds on Redis Cluster too.)
    /// A batch refused by Redis (`OOM`, `NOPERM`...) wrote nothing and can be retried as it is.
    /// After a timeout or a dropped connection the `EXEC` may have run with its reply lost:
    /// retrying then may write the whole batch a second time (see `redstream-sink` for
    /// batches that must not be duplicated).
    ///
    /// With the `opentelemetry` feature, every event gets the current span's trace context, as
    /// with [`publish`](Self::publish).
    pub async fn publish_batch(&self, mut events: Vec<Event>) -> Result<Vec<String>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let outgoing = Outgoing::current();
        for event in &mut events {
            outgoing.inject(event, &self.inner.options.limits);
        }
        let encoded = events
            .iter()
            .map(|event| self.encode(event))
            .collect::<Result<Vec<_>>>()?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for item in &encoded {
            pipe.add_command(self.xadd(item));
        }
        let span = tracing::debug_span!("publish_batch", events = events.len());
        async {
            let started = Instant::now();
            let result = self
                .inner
                .breaker
                .call(|| async {
                    let mut conn = self.inner.conn.clone();
                    pipe.query_async::<Vec<String>>(&mut conn)
                        .await
                        .map_err(|err| {
                            Error::from_redis(
                                "MULTI/EXEC of XADDs",
                                self.inner.keys.tag().to_owned(),
                                err,
                            )
                        })
                })
                .await;
            match &result {
                Ok(_) => {
                    // Count each event under its own type; a batch may mix types.
                    let mut counted: Vec<(&str, u64)> = Vec::new();
                    for event in &events {
                        match counted.iter_mut().find(|(t, _)| *t == event.event_type()) {
                            Some((_, n)) => *n += 1,
                            None => counted.push((event.event_type(), 1)),
                        }
                    }
                    for (event_type, n) in counted {
                        metrics::counter!(telemetry::PUBLISHED, "event_type" => event_type.to_owned())
                            .increment(n);
                    }
                    metrics::histogram!(telemetry::PUBLISH_LATENCY)
                        .record(started.elapsed().as_secs_f64());
                }
                Err(err) => record_publish_error(err),
            }
            result
        }
        .instrument(span)
        .await
    }

    fn record_publish<T>(&self, result: &Result<T>, event_type: &str, started: Instant) {
        match result {
            Ok(_) => {
                metrics::counter!(telemetry::PUBLISHED, "event_type" => event_type.to_owned())
                    .increment(1);
                metrics::histogram!(telemetry::PUBLISH_LATENCY)
                    .record(started.elapsed().as_secs_f64());
            }
            Err(err) => record_publish_error(err),
        }
    }
}

/// Counts a publish that reached the breaker or Redis and failed. Events refused by validation
/// are not counted: they are the caller's error, returned before anything is sent.
fn record_publish_error(err: &redstream_core::Error) {
    metrics::counter!(telemetry::PUBLISH_ERRORS, "kind" => err.kind().as_str()).increment(1);
    tracing::debug!(error = %err, "publish failed");
}

impl Publisher for RedisTransport {
    fn publish(&self, event: Event) -> impl Future<Output = Result<String>> + Send {
        RedisTransport::publish(self, event)
    }

    fn publish_batch(
        &self,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Vec<String>>> + Send {
        RedisTransport::publish_batch(self, events)
    }
}
