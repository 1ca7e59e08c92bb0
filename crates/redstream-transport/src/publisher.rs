//! Publishing: `XADD <stream> MAXLEN ~ N * event <envelope>`, where the stream is the event
//! type's (`events:order.created`) or one named by the caller ([`RedisTransport::publish_to`]),
//! and entries in another writer's format ([`RedisTransport::publish_fields`]).
//!
//! `N` is the stream's entry in [`TransportOptions::max_stream_lengths`](crate::TransportOptions::max_stream_lengths),
//! or else [`RedisConfig::max_stream_length`](crate::RedisConfig::max_stream_length); 0 means
//! no trimming. Every write goes through the circuit breaker.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, PoisonError, RwLock};
use std::time::Instant;

use opentelemetry_semantic_conventions::attribute as semconv;
use redis::{Cmd, Script};
use redstream_core::wire::{self, EVENT_FIELD};
use redstream_core::{Error, Event, Publisher, Result};
use tracing::Instrument;

use crate::commands::Traffic;
use crate::keys::{validate_event_type, validate_stream_name};
use crate::telemetry;
use crate::trace_context::Outgoing;
use crate::transport::RedisTransport;

/// An event checked and encoded, ready to be written.
struct Encoded {
    stream: Arc<str>,
    /// Its `published_total` counter, labelled with its type.
    published: metrics::Counter,
    envelope: String,
}

/// The event types a transport has published, each checked once, with its stream's name and
/// its counter, so that a publish neither checks its type again nor builds the name and the
/// metric anew. The counter is registered with the recorder installed at the type's first
/// publish. Bounded: past [`TypeCache::CAPACITY`] types, the others are checked and named on
/// each publish as before.
pub(crate) struct TypeCache {
    /// Tells this transport's entries in each thread's [`RECENT`] from other transports'.
    id: u64,
    types: RwLock<HashMap<Box<str>, Named, foldhash::fast::RandomState>>,
    /// `publish_latency_seconds`, registered when the transport was made.
    pub(crate) latency: metrics::Histogram,
}

impl Default for TypeCache {
    fn default() -> Self {
        static IDS: AtomicU64 = AtomicU64::new(0);
        Self {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            types: RwLock::default(),
            latency: metrics::histogram!(telemetry::PUBLISH_LATENCY),
        }
    }
}

/// How many (transport, event type) names each thread keeps in [`RECENT`].
const RECENT_CAPACITY: usize = 8;

thread_local! {
    /// The names each thread published under last, newest last, as copies of the thread's
    /// own: tasks publishing from several threads then share neither the type cache's lock
    /// nor the reference count of one stream name, whose cache lines would move from core to
    /// core on every publish. A dropped transport's entries stay until pushed out.
    static RECENT: RefCell<Vec<(u64, Box<str>, Named)>> = const { RefCell::new(Vec::new()) };
}

/// A checked event type's stream name and `published_total` counter.
type Named = (Arc<str>, metrics::Counter);

/// The `published_total` counter of events of `event_type`.
fn published_counter(event_type: impl Into<metrics::SharedString>) -> metrics::Counter {
    metrics::counter!(telemetry::PUBLISHED, "event_type" => event_type.into())
}

impl TypeCache {
    const CAPACITY: usize = 1024;

    /// `(stream, counter)` of a type that passed `validate_event_type`, from this thread's
    /// recent names, or else as [`get_or_check`](Self::get_or_check) gives it (then kept among
    /// them).
    fn get_or_check_here(
        &self,
        event_type: &str,
        check: impl FnOnce() -> Result<String>,
    ) -> Result<Named> {
        let recent = RECENT.with_borrow(|recent| {
            recent
                .iter()
                .rev()
                .find(|(id, known, _)| *id == self.id && **known == *event_type)
                .map(|(_, _, (stream, published))| (Arc::clone(stream), published.clone()))
        });
        if let Some(named) = recent {
            return Ok(named);
        }
        let (stream, published) = self.get_or_check(event_type, check)?;
        let own: Named = (Arc::from(&*stream), published);
        RECENT.with_borrow_mut(|recent| {
            if recent.len() == RECENT_CAPACITY {
                drop(recent.remove(0));
            }
            recent.push((self.id, Box::from(event_type), own.clone()));
        });
        Ok(own)
    }

    /// `(stream, counter)` of a type that passed `validate_event_type`, checking and naming it
    /// on its first publish.
    fn get_or_check(
        &self,
        event_type: &str,
        check: impl FnOnce() -> Result<String>,
    ) -> Result<Named> {
        let types = self.types.read().unwrap_or_else(PoisonError::into_inner);
        if let Some((stream, published)) = types.get(event_type) {
            return Ok((Arc::clone(stream), published.clone()));
        }
        drop(types);
        let label: Arc<str> = Arc::from(event_type);
        let named: Named = (Arc::from(check()?), published_counter(label));
        let mut types = self.types.write().unwrap_or_else(PoisonError::into_inner);
        if types.len() < Self::CAPACITY {
            types.insert(Box::from(event_type), named.clone());
        }
        Ok(named)
    }
}

impl RedisTransport {
    /// Validates and encodes one event, for the stream of its type or for `stream`.
    fn encode(&self, event: &Event, stream: Option<&str>) -> Result<Encoded> {
        let options = &self.inner.options;
        let (stream, published) = match stream {
            Some(stream) => {
                validate_stream_name(stream)?;
                redstream_core::validate_event_type(
                    event.event_type(),
                    options.limits.max_event_type_len,
                )?;
                (
                    Arc::from(stream),
                    published_counter(event.event_type().to_owned()),
                )
            }
            None => self.named(event)?,
        };
        let envelope = wire::encode(event, &options.limits)?;
        Ok(Encoded {
            stream,
            published,
            envelope,
        })
    }

    /// The approximate length limit of `stream`: its entry in `max_stream_lengths`, or else
    /// `max_stream_length`. 0 means none.
    pub(crate) fn max_len(&self, stream: &str) -> usize {
        self.inner
            .options
            .max_stream_lengths
            .get(stream)
            .copied()
            .unwrap_or(self.inner.config.max_stream_length)
    }

    /// `XADD <stream> [MAXLEN ~ n] * <fields>`, built in buffers of its exact size (a command
    /// built argument by argument would reallocate them about three times for an event).
    pub(crate) fn xadd_fields<'a, I>(&self, stream: &str, fields: I) -> Cmd
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
        I::IntoIter: Clone,
    {
        let fields = fields.into_iter();
        let (mut args, mut bytes) = (3, "XADD".len() + stream.len() + 1);
        for (name, value) in fields.clone() {
            args += 2;
            bytes += name.len() + value.len();
        }
        let max_len = self.max_len(stream);
        if max_len > 0 {
            // `MAXLEN ~ n`, n of at most 20 digits.
            args += 3;
            bytes += "MAXLEN".len() + 1 + 20;
        }
        let mut cmd = Cmd::with_capacity(args, bytes);
        cmd.arg("XADD").arg(stream);
        if max_len > 0 {
            cmd.arg("MAXLEN").arg("~").arg(max_len);
        }
        cmd.arg("*");
        for (name, value) in fields {
            cmd.arg(name).arg(value);
        }
        cmd
    }

    /// The `XADD` for one encoded event.
    fn xadd(&self, encoded: &Encoded) -> Cmd {
        self.xadd_fields(
            &encoded.stream,
            [(EVENT_FIELD.as_bytes(), encoded.envelope.as_bytes())],
        )
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
    pub async fn publish(&self, event: Event) -> Result<String> {
        self.publish_one(event, None).await
    }

    /// Publishes one event to the stream named `stream` (used as it is: `events.raw`,
    /// `orders.events`), whatever its type, and returns its entry id. As
    /// [`publish`](Self::publish) otherwise: validated first, trimmed with the stream's
    /// `MAXLEN`, through the circuit breaker.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput) for an invalid
    /// stream name or event; a Redis error if the write fails.
    pub async fn publish_to(&self, stream: &str, event: Event) -> Result<String> {
        self.publish_one(event, Some(stream)).await
    }

    /// Writes one entry with the given fields, in another writer's format (seed 004's flat
    /// `event_id`, `brand_id`, `event_type`, `payload`, `timestamp`, say), to `stream`, and
    /// returns its entry id. Trimmed with the stream's `MAXLEN`, through the circuit breaker.
    /// Subscriptions read such entries with
    /// [`handle_raw`](crate::SubscriptionBuilder::handle_raw) or a
    /// [`decoder`](crate::SubscriptionBuilder::decode_with).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput) for an invalid
    /// stream name or no fields; a Redis error if the write fails.
    pub async fn publish_fields<N, V>(&self, stream: &str, fields: &[(N, V)]) -> Result<String>
    where
        N: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        validate_stream_name(stream)?;
        if fields.is_empty() {
            return Err(Error::invalid_input(
                format!("entry for stream {stream:?}"),
                "must have at least one field",
            ));
        }
        let cmd = self.xadd_fields(stream, fields.iter().map(|(n, v)| (n.as_ref(), v.as_ref())));
        let started = Instant::now();
        let result = self
            .commands(Traffic::Write)
            .query::<String>("XADD", stream, &cmd)
            .await;
        self.record_publish(&result, &published_counter(stream.to_owned()), started);
        result
    }

    async fn publish_one(&self, mut event: Event, stream: Option<&str>) -> Result<String> {
        Outgoing::current().inject(&mut event, &self.inner.options.limits);
        let encoded = self.encode(&event, stream)?;
        // OpenTelemetry's messaging conventions: a `send {stream}` producer span.
        let span = tracing::debug_span!(
            "publish",
            otel.name = %format_args!("send {}", encoded.stream),
            otel.kind = "producer",
            { semconv::MESSAGING_SYSTEM } = telemetry::MESSAGING_SYSTEM,
            { semconv::MESSAGING_OPERATION_TYPE } = "send",
            { semconv::MESSAGING_DESTINATION_NAME } = %encoded.stream,
            { semconv::MESSAGING_MESSAGE_BODY_SIZE } = encoded.envelope.len(),
            { semconv::MESSAGING_MESSAGE_ID } = tracing::field::Empty,
            stream = %encoded.stream,
            event_type = %event.event_type(),
            event_id = %event.id(),
            entry_id = tracing::field::Empty,
        );
        let send = async {
            let started = Instant::now();
            let cmd = self.xadd(&encoded);
            let result = self
                .inner
                .writes
                .query::<String>("XADD", &encoded.stream, &cmd)
                .await;
            self.record_publish(&result, &encoded.published, started);
            result
        };
        // Without a subscriber that wants the span, no wrapper around the send.
        if span.is_disabled() {
            return send.await;
        }
        let result = send.instrument(span.clone()).await;
        if let Ok(id) = &result {
            span.record("entry_id", id.as_str());
            span.record(semconv::MESSAGING_MESSAGE_ID, id.as_str());
        }
        result
    }

    /// Publishes several events in one round trip, as one transaction, and returns their entry
    /// ids in order.
    ///
    /// Every event is validated first, so one invalid event (or a batch of more than 65,535
    /// event types) fails the batch before anything is sent; and the transaction
    /// (`publish_batch.lua`: one script that checks each stream of the batch, the user's
    /// permission to `XADD` to it and its key type, before its first `XADD`) means the batch
    /// is written in full or not at all, never in part, also when a stream's key holds another
    /// type or the user may not write one of the streams. The one
    /// refusal no check foresees, a stream whose ids are used up (a hand-written entry at the
    /// top id, `18446744073709551615-18446744073709551615`), makes the script delete the
    /// entries it wrote before it (and a stream it created) before it answers the error. The
    /// user needs `EVALSHA` (and `SCRIPT LOAD` once per server start) and `TYPE`, besides
    /// `XADD`; `XDEL` (`DEL` for a stream the batch created) only for that refusal.
    ///
    /// On a Redis Cluster, a transaction runs on one node and may only name keys of one slot:
    /// a batch of events of one type (one stream, one slot) is written all or nothing as
    /// anywhere else, but a batch whose streams are in different slots is refused with
    /// [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput), naming two of its
    /// streams, before anything is sent. Publish such events in one batch per event type (or
    /// one by one with [`publish`](Self::publish)).
    /// A batch refused by Redis (`OOM`, `NOPERM`...) wrote nothing and can be retried as it is.
    /// After a timeout or a dropped connection the transaction may have run with its reply lost:
    /// retrying then may write the whole batch a second time (see `redstream-sink` for
    /// batches that must not be duplicated).
    ///
    /// With the `opentelemetry` feature, every event gets the current span's trace context, as
    /// with [`publish`](Self::publish).
    pub async fn publish_batch(&self, mut events: Vec<Event>) -> Result<Vec<String>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let count = events.len();
        let outgoing = Outgoing::current();
        for event in &mut events {
            outgoing.inject(event, &self.inner.options.limits);
        }
        let span = tracing::debug_span!(
            "publish_batch",
            otel.name = tracing::field::Empty,
            otel.kind = "producer",
            { semconv::MESSAGING_SYSTEM } = telemetry::MESSAGING_SYSTEM,
            { semconv::MESSAGING_OPERATION_TYPE } = "send",
            { semconv::MESSAGING_BATCH_MESSAGE_COUNT } = count,
            { semconv::MESSAGING_DESTINATION_NAME } = tracing::field::Empty,
            events = count,
        );
        crate::trace_context::link_batch(&span, &events);
        // Each event is encoded into the batch's one buffer of envelopes and dropped at once, so
        // the batch is held once (as its envelopes) rather than as events and envelopes.
        let mut batch = BatchCall::default();
        for event in events {
            let position = batch.position(event.event_type(), || self.named(&event))?;
            batch.push(position, count, |out| {
                wire::encode_into(&event, &self.inner.options.limits, out)
            })?;
        }
        if self.inner.conn.topology() == redstream_core::connection::Topology::Cluster {
            crate::connection::one_slot(
                "publish_batch",
                &self.inner.target,
                batch.types.iter().map(|named| &*named.stream),
                "one transaction cannot hold both; publish one batch per event type (one \
                 stream each), or the events one by one",
            )?;
        }
        // One stream: `send {stream}`; several (a plain layout allows it): `send`.
        match &*batch.types {
            [one] => {
                span.record(
                    "otel.name",
                    tracing::field::display(format_args!("send {}", one.stream)),
                );
                span.record(semconv::MESSAGING_DESTINATION_NAME, &*one.stream);
            }
            _ => {
                span.record("otel.name", "send");
            }
        }
        let call = batch.finish(|stream| self.max_len(stream));
        async {
            let started = Instant::now();
            let target = format!("{count} events under {:?}", self.inner.names.prefix());
            let result = self
                .inner
                .writes
                .evalsha::<String>("transaction of XADDs", &target, &BATCH_SCRIPT, &call)
                .await
                .map(|ids| ids.split(' ').map(str::to_owned).collect::<Vec<_>>());
            match &result {
                Ok(_) => {
                    for named in &batch.types {
                        named.published.increment(named.events);
                    }
                    self.inner
                        .published_types
                        .latency
                        .record(started.elapsed().as_secs_f64());
                }
                Err(err) => record_publish_error(err),
            }
            result
        }
        .instrument(span)
        .await
    }

    /// The stream and `published_total` counter of `event`'s type, checked (once per
    /// transport, through the type cache).
    fn named(&self, event: &Event) -> Result<Named> {
        let options = &self.inner.options;
        self.inner
            .published_types
            .get_or_check_here(event.event_type(), || {
                validate_event_type(event.event_type(), &options.limits)?;
                Ok(self.inner.names.stream(event.event_type()))
            })
    }

    fn record_publish<T>(
        &self,
        result: &Result<T>,
        published: &metrics::Counter,
        started: Instant,
    ) {
        match result {
            Ok(_) => {
                published.increment(1);
                self.inner
                    .published_types
                    .latency
                    .record(started.elapsed().as_secs_f64());
            }
            Err(err) => record_publish_error(err),
        }
    }
}

/// `publish_batch.lua`: the batch's `XADD`s, each stream checked before the first write.
static BATCH_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("publish_batch.lua")));

/// A batch's event types, in the order they first appear, each with its stream, its counter
/// and how many of the batch's events it has.
struct BatchType {
    event_type: Box<str>,
    stream: Arc<str>,
    published: metrics::Counter,
    events: u64,
}

/// The script call that writes a batch all or nothing, built one event at a time: the
/// streams as keys (each once, in the order they first appear), then as arguments the events'
/// envelopes, then each stream's `MAXLEN`, then, for a batch of several streams, one string of
/// the events' stream positions (the last two because the streams are known only once every
/// event is in). A batch of one type sends one argument per event where a list of `XADD`s
/// would send five, and the script's loop has nothing to look up per event.
///
/// The envelopes are written one after another into one buffer, and the `EVALSHA` is built
/// from it in buffers of its exact size: no `String` per envelope, and no argument list that
/// copies each one once more (as a `ScriptInvocation` would).
#[derive(Default)]
struct BatchCall {
    /// The envelopes, one after another.
    envelopes: Vec<u8>,
    /// Where each envelope ends in `envelopes`.
    ends: Vec<usize>,
    types: Vec<BatchType>,
    /// The positions in `types` by event type, kept once there are more than [`SCAN_TYPES`].
    index: HashMap<Box<str>, usize, foldhash::fast::RandomState>,
    /// The position in `types` of the last event's type: batches are mostly of one type.
    last: usize,
    /// Each event's position in `types`, counted from 1; sent only for two types or more.
    positions: Vec<u16>,
}

/// Up to this many types, a batch looks for an event's type among them in turn; past it, in a
/// map ([`BatchCall::known`]).
const SCAN_TYPES: usize = 16;

/// The most a batch reserves for its envelopes after the first, guessing from it: past this,
/// the buffer grows as they come.
const MAX_BATCH_RESERVE: usize = 16 * 1024 * 1024;

/// The most event types (so streams) one batch may have: the script reads each event's
/// stream position from at most two bytes.
const MAX_BATCH_TYPES: usize = u16::MAX as usize;

impl BatchCall {
    /// The position in the batch's types of `event_type`, which `name` checks and names when
    /// no event of the batch had that type before.
    fn position(
        &mut self,
        event_type: &str,
        name: impl FnOnce() -> Result<Named>,
    ) -> Result<usize> {
        if self
            .types
            .get(self.last)
            .is_none_or(|last| *last.event_type != *event_type)
        {
            self.last = match self.known(event_type) {
                Some(known) => known,
                None => {
                    if self.types.len() == MAX_BATCH_TYPES {
                        return Err(Error::invalid_input(
                            "publish_batch",
                            format!(
                                "has events of more than {MAX_BATCH_TYPES} types; split it \
                                 into batches of fewer types"
                            ),
                        ));
                    }
                    let (stream, published) = name()?;
                    self.types.push(BatchType {
                        event_type: Box::from(event_type),
                        stream,
                        published,
                        events: 0,
                    });
                    self.types.len() - 1
                }
            };
        }
        Ok(self.last)
    }

    /// The position of `event_type` among the batch's types, if it is one: looked for in
    /// turn among a few, in a map among more (so that a batch of many types is not quadratic
    /// in them: 65,535 types took seconds).
    fn known(&mut self, event_type: &str) -> Option<usize> {
        if self.types.len() <= SCAN_TYPES {
            return self
                .types
                .iter()
                .position(|known| *known.event_type == *event_type);
        }
        // The map, brought up to date with the types added since the last look.
        for (position, named) in self.types.iter().enumerate().skip(self.index.len()) {
            self.index.insert(named.event_type.clone(), position);
        }
        self.index.get(event_type).copied()
    }

    /// Adds an event of the type at `position`, one of `count` in the batch, by `encode`, which
    /// appends its envelope to the buffer it is given (or leaves it as it was and fails).
    fn push(
        &mut self,
        position: usize,
        count: usize,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        encode(&mut self.envelopes)?;
        if self.ends.is_empty() {
            // Room for the rest if they are about the size of the first, up to a bound: a
            // large first event in a long batch of small ones must not reserve gigabytes.
            let rest = self.envelopes.len().saturating_mul(count.saturating_sub(1));
            self.envelopes.reserve(rest.min(MAX_BATCH_RESERVE));
            self.ends.reserve_exact(count);
            self.positions.reserve_exact(count);
        }
        self.ends.push(self.envelopes.len());
        if let Some(named) = self.types.get_mut(position) {
            named.events += 1;
        }
        // Counted from 1, as Lua does; fits, as `position` refuses a type past
        // `MAX_BATCH_TYPES`.
        self.positions
            .push(u16::try_from(position + 1).unwrap_or(u16::MAX));
        Ok(())
    }

    /// The call: `EVALSHA` of the script with the streams as keys; after the events, their
    /// `MAXLEN`s (0 for none) and, for two streams or more, each event's stream position
    /// (counted from 1, as Lua does), one byte each, or two (high byte first) past 255 streams.
    /// The envelopes are freed once copied into the call, so the batch is not held twice while
    /// it is sent.
    fn finish(&mut self, max_len: impl Fn(&str) -> usize) -> Cmd {
        let several = self.types.len() > 1;
        let wide = self.types.len() > 255;
        let position_bytes = if several {
            self.positions.len() * (1 + usize::from(wide))
        } else {
            0
        };
        let keys = self.types.len();
        let args = 3 + keys + self.ends.len() + keys + usize::from(several);
        // The name, the digest, the key count; the keys; the envelopes; a `MAXLEN` of at most
        // 20 digits per stream; the positions.
        let bytes = "EVALSHA".len()
            + BATCH_SCRIPT.get_hash().len()
            + 20
            + self
                .types
                .iter()
                .map(|named| named.stream.len())
                .sum::<usize>()
            + self.envelopes.len()
            + 20 * keys
            + position_bytes;
        let mut cmd = Cmd::with_capacity(args, bytes);
        cmd.arg("EVALSHA").arg(BATCH_SCRIPT.get_hash()).arg(keys);
        for named in &self.types {
            cmd.arg(&*named.stream);
        }
        let mut start = 0;
        for &end in &self.ends {
            cmd.arg(self.envelopes.get(start..end).unwrap_or_default());
            start = end;
        }
        for named in &self.types {
            cmd.arg(max_len(&named.stream));
        }
        if several {
            let mut positions = Vec::with_capacity(position_bytes);
            for &position in &self.positions {
                let [high, low] = position.to_be_bytes();
                if wide {
                    positions.push(high);
                }
                positions.push(low);
            }
            cmd.arg(positions);
        }
        self.envelopes = Vec::new();
        self.ends = Vec::new();
        cmd
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_is_checked_once_and_a_refused_one_every_time() {
        let cache = TypeCache::default();
        let mut checks = 0;
        for _ in 0..3 {
            let (stream, _) = cache
                .get_or_check("order.created", || {
                    checks += 1;
                    Ok("events:order.created".to_owned())
                })
                .unwrap();
            assert_eq!(&*stream, "events:order.created");
        }
        assert_eq!(checks, 1);
        for _ in 0..2 {
            let refused = cache.get_or_check("dlq", || {
                checks += 1;
                Err(Error::invalid_input("event type \"dlq\"", "is reserved"))
            });
            assert!(refused.is_err());
        }
        assert_eq!(checks, 3);
    }

    #[test]
    fn past_its_capacity_types_are_named_on_each_publish() {
        let cache = TypeCache::default();
        for n in 0..TypeCache::CAPACITY + 10 {
            let event_type = format!("t{n}");
            let (stream, _) = cache
                .get_or_check(&event_type, || Ok(format!("events:{event_type}")))
                .unwrap();
            assert_eq!(&*stream, format!("events:t{n}"));
        }
        let len = cache.types.read().unwrap().len();
        assert_eq!(len, TypeCache::CAPACITY);
        // A type beyond the capacity is still answered, checked again each time.
        let mut checks = 0;
        for _ in 0..2 {
            let _named = cache
                .get_or_check("late.type", || {
                    checks += 1;
                    Ok("events:late.type".to_owned())
                })
                .unwrap();
        }
        assert_eq!(checks, 2);
    }
}
