//! Consuming: subscriptions, the read loop, handler workers and batched acknowledgements.
//!
//! # One subscription
//!
//! [`subscribe`](RedisTransport::subscribe) creates the consumer group on every stream it reads
//! (`XGROUP CREATE <stream> <group> <start> MKSTREAM`; a group that already exists is kept) and
//! starts these tasks:
//!
//! - **The reader**, on a connection of its own (a blocking `XREADGROUP` holds its connection).
//!   It first re-reads the consumer's own pending entries (`XREADGROUP ... STREAMS <s> 0`, page
//!   by page): entries a previous run under the same consumer name received and never
//!   acknowledged. Then it reads new entries (`>`), `COUNT` at a time.
//! - **Workers**, `handler_concurrency` of them, each taking one entry at a time from the
//!   subscription's buffer, decoding it and running the handler in a task of its own (so a
//!   panicking handler is a failed delivery, not a dead worker).
//! - **The acker**, which acknowledges handled entries in batches: one `XACK <stream> <group>
//!   <id>...` per stream, when `ack_batch_size` entries are waiting or `ack_interval` after the
//!   first one. Entries are never `XDEL`eted: other groups may still need them.
//! - **The claimer** and **the keep-alive** (see the `claim` module): redelivery of failed and
//!   abandoned entries, and keeping the entries this consumer holds from being taken.
//!
//! # Priorities
//!
//! Each event type has four streams, one per [`Priority`] (see [`Keys`](crate::Keys)). The reader
//! first asks for new entries of the `Critical` and `High` streams without blocking; only when
//! they have none does it read every stream with `BLOCK` (so that an urgent entry arriving while
//! it waits wakes it up too). Entries it has read wait in a buffer with one lane per priority,
//! and workers always take from the most urgent non-empty lane. So when a backlog builds up,
//! urgent entries overtake the others both in Redis and in the consumer. Because the lanes are
//! separate streams in Redis, this holds for every consumer of a group and across restarts: no
//! in-process state is needed to keep the order of urgency. Within one lane, entries are handled
//! in stream order (strictly so with `handler_concurrency = 1`).
//!
//! The priority is strict: as long as urgent entries keep coming faster than they are handled,
//! `Normal` and `Low` ones wait. Entries redelivered after a failure join their lane behind the
//! entries already waiting there.
//!
//! # Backpressure
//!
//! The buffer holds at most `backpressure.max_queue_size` entries and applies the configured
//! strategy. With `Block`, the reader waits for room before it reads more: Redis keeps the
//! backlog. With `DropOldest`, `DropNewest` or `Reject`, an entry that does not fit is *released*,
//! never lost: it stays pending in Redis, its delivery count is set back (`XCLAIM ... RETRYCOUNT`,
//! so being dropped never pushes an entry towards the dead-letter stream) and it is marked idle,
//! so that the next claim pass (of this or another consumer) delivers it again. After a batch that
//! overflowed, the reader waits for room before reading again, so a full buffer never makes it
//! spin. The victim is always the least urgent entry: the oldest (`DropOldest`) or newest
//! (`DropNewest`, `Reject`) of the lowest non-empty priority lane.
//! [`backpressure_stats`](RedisTransport::backpressure_stats) sums the buffers of all
//! subscriptions.
//!
//! # Failures
//!
//! A handler's `Err` (or panic) leaves the entry pending; after `claim_idle_time` it is claimed
//! and delivered again, until it has been delivered `max_deliveries` times; then it is moved to
//! the dead-letter stream (see the `dlq` module). With `dead_letter_on_first_failure` it is moved
//! at once. An entry that cannot be decoded is moved to the dead-letter stream at once, with the
//! reason. A subscription to the dead-letter stream itself ([`consume_dlq`]) never writes dead
//! letters: an entry it cannot decode, or whose handler keeps failing, is acknowledged in its
//! group with an error log, and stays in the dead-letter stream.
//!
//! Redis errors never end a subscription. Transient ones (connection, timeout, loading, `OOM`)
//! are retried with jittered exponential backoff up to 5 s and logged as warnings; permanent ones (`NOPERM`, `WRONGTYPE`, authentication) are logged as errors and
//! retried every few seconds (up to 30 s), since only an operator can fix them and the
//! subscription should recover by itself when they do. `NOGROUP` (the stream or the group
//! disappeared: a restart without persistence, a deleted stream, a destroyed group) re-creates
//! the group with a warning, starting at the beginning of the stream, so that entries written
//! to a re-created stream before the group came back are not skipped.
//!
//! The consumer's commands do not go through the transport's circuit breaker, which guards
//! publishing. The breaker exists so that a caller waiting for a result fails fast while the
//! server is down; a consumer has no caller waiting, and it already backs off on its own. Gating
//! it would keep it idle for the breaker's whole open period after the server is back, and would
//! stop the keep-alive, so that other consumers would claim entries still being handled.
//!
//! # Stopping
//!
//! [`unsubscribe`](RedisTransport::unsubscribe), and dropping the last clone of the transport,
//! stop the reader and the claimer, let the running handlers finish (at most `drain_timeout`;
//! handlers still running then are aborted and their entries stay pending), acknowledge what
//! finished, and release the entries still in the buffer, so that other consumers can claim them
//! at once. A blocking read cancelled by the stop may have been answered by the server already:
//! those entries are pending for this consumer and are claimed by another one after
//! `claim_idle_time`, or re-read when a consumer of the same name starts again. A consumer is
//! never deleted from its group (`XGROUP DELCONSUMER` would drop its pending entries).
//!
//! The subscription's tasks hold no reference to the transport, so dropping the last clone is
//! noticed while they run; a handler that captures a clone of the transport keeps it alive,
//! and that subscription stops only with [`unsubscribe`](RedisTransport::unsubscribe).
//!
//! # Consumer names
//!
//! All subscriptions of one transport read as the one consumer `consumer_name`. They share a
//! record of the entries they hold, so one subscription never re-reads or claims what another
//! is handling. Two transports (or processes) must not use the same consumer name at the same
//! time: Redis cannot tell them apart, so each would take the other's entries as its own.
//!
//! Claiming uses `XAUTOCLAIM` and redrives use exclusive ranges, so the server must be Redis 6.2
//! or later (Redis 7 reports trimmed pending entries more precisely).
//!
//! [`consume_dlq`]: RedisTransport::consume_dlq

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{Client, Cmd, FromRedisValue, Pipeline, Value};
use redstream_core::wire;
use redstream_core::{
    BackpressureConfig, BackpressureQueue, BackpressureStats, CircuitBreaker, Error, ErrorKind,
    Event, HandlerResult, Priority, PushOutcome, Result, RetryPolicy, Subscriber,
    SubscriptionHandle, run_isolated,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{StartFrom, TransportOptions};
use crate::connection;
use crate::keys::Keys;
use crate::transport::RedisTransport;
use crate::{claim, dlq, telemetry, trace_context};

/// Subscription ids are unique in the process, so a handle of another transport is never
/// mistaken for one of this transport.
static NEXT_SUBSCRIPTION_ID: AtomicU64 = AtomicU64::new(1);

/// A handler with its type erased, so that the subscription machinery is compiled once.
pub(crate) type DynHandler =
    Arc<dyn Fn(Event) -> Pin<Box<dyn Future<Output = HandlerResult> + Send>> + Send + Sync>;

pub(crate) fn erase<F, Fut>(handler: F) -> DynHandler
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    Arc::new(move |event| Box::pin(handler(event)))
}

/// The lane index of a priority: 0 is the most urgent. Also the order of [`Keys::lanes`].
pub(crate) fn lane_of(priority: Priority) -> usize {
    match priority {
        Priority::Critical => 0,
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Low => 3,
    }
}

const LANES: usize = 4;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code runs under these locks, so a poisoned one still holds consistent data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// The transport's registry of subscriptions
// ---------------------------------------------------------------------------------------------

/// The running subscriptions of one transport (all its clones).
#[derive(Default)]
pub(crate) struct Registry {
    running: Mutex<HashMap<u64, Running>>,
    /// Entries held by any subscription of this transport: read and not yet acknowledged,
    /// dead-lettered or released.
    flights: Arc<Flights>,
}

struct Running {
    stop: CancellationToken,
    buffer: Buffer,
    task: JoinHandle<Drained>,
}

/// What stopping a subscription left behind.
struct Drained {
    /// Handlers were still running at the drain timeout and were aborted.
    abandoned: usize,
}

impl Registry {
    fn stats(&self, config: BackpressureConfig) -> BackpressureStats {
        let running = lock(&self.running);
        let mut queues = running.values().map(|r| r.buffer.tickets.stats());
        let Some(mut total) = queues.next() else {
            // An empty queue of the configured size. `new` validated the configuration.
            return BackpressureQueue::<()>::new(config)
                .expect("the backpressure configuration was validated by RedisTransport::new")
                .stats();
        };
        for stats in queues {
            total.current_queue_size += stats.current_queue_size;
            total.max_queue_size += stats.max_queue_size;
            total.dropped_events += stats.dropped_events;
            total.rejected_events += stats.rejected_events;
            total.total_pushed += stats.total_pushed;
            total.total_popped += stats.total_popped;
            total.warnings_emitted += stats.warnings_emitted;
        }
        total
    }
}

/// Entries held by the subscriptions of one transport, with when their idle time in Redis was
/// last reset. One consumer name is shared by all subscriptions of a transport, so this is what
/// keeps a subscription from re-reading or claiming an entry another one (or itself) holds.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<(String, String), Flight>>,
}

struct Flight {
    subscription: u64,
    touched: Instant,
}

impl Flights {
    /// Records that `subscription` holds the entry; `false` if it is held already.
    pub(crate) fn insert(&self, subscription: u64, stream: &str, id: &str) -> bool {
        let mut map = lock(&self.map);
        let key = (stream.to_owned(), id.to_owned());
        if map.contains_key(&key) {
            return false;
        }
        map.insert(
            key,
            Flight {
                subscription,
                touched: Instant::now(),
            },
        );
        true
    }

    pub(crate) fn contains(&self, stream: &str, id: &str) -> bool {
        lock(&self.map).contains_key(&(stream.to_owned(), id.to_owned()))
    }

    pub(crate) fn remove(&self, stream: &str, id: &str) {
        lock(&self.map).remove(&(stream.to_owned(), id.to_owned()));
    }

    /// The entries of `subscription` not touched for `older_than`, marked as touched now.
    pub(crate) fn stale(&self, subscription: u64, older_than: Duration) -> Vec<(String, String)> {
        let now = Instant::now();
        let mut map = lock(&self.map);
        let mut stale = Vec::new();
        for (key, flight) in map.iter_mut() {
            if flight.subscription == subscription && now - flight.touched >= older_than {
                flight.touched = now;
                stale.push(key.clone());
            }
        }
        stale
    }

    fn remove_subscription(&self, subscription: u64) {
        lock(&self.map).retain(|_, flight| flight.subscription != subscription);
    }
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

impl RedisTransport {
    /// Starts handling events of the given types with `handler`, as a member of the configured
    /// consumer group, and returns a handle for [`unsubscribe`](Self::unsubscribe).
    ///
    /// The group is created on each type's streams if it does not exist (at
    /// [`start_from`](crate::TransportOptions::start_from)); when this returns, every event
    /// published afterwards is delivered to the group. The handler's `Ok` acknowledges the event;
    /// an `Err` or a panic leaves it for redelivery and, after
    /// [`max_deliveries`](crate::TransportOptions::max_deliveries), the dead-letter stream.
    /// Delivery is at least once: deduplicate on [`Event::id`] where that matters.
    ///
    /// Plain `async` closures work, and so does the `|event| Box::pin(async move { .. })` style.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an empty list or an invalid event type (nothing is
    /// subscribed then); a Redis error if the groups cannot be created or the reading connection
    /// cannot be opened.
    pub async fn subscribe<F, Fut>(
        &self,
        event_types: Vec<String>,
        handler: F,
    ) -> Result<SubscriptionHandle>
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let types = redstream_core::subscription_types(event_types, |event_type| {
            Keys::validate_event_type(event_type, &self.inner.options.limits)
        })?;
        let streams = types
            .iter()
            .flat_map(|event_type| {
                let event_type: Arc<str> = Arc::from(event_type.as_str());
                self.inner
                    .keys
                    .lanes(&event_type)
                    .map(|(priority, key)| StreamSpec {
                        key,
                        event_type: Arc::clone(&event_type),
                        lane: lane_of(priority),
                    })
            })
            .collect();
        self.start_subscription(
            Mode::Events,
            self.inner.config.consumer_group.clone(),
            types,
            streams,
            self.inner.options.start_from,
            erase(handler),
        )
        .await
    }

    /// Stops a subscription: reading stops, running handlers finish (at most
    /// [`drain_timeout`](crate::TransportOptions::drain_timeout)), what finished is acknowledged,
    /// and entries read but not started are released for other consumers. Returns when all that
    /// is done.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a handle that is not an active subscription of this
    /// transport; [`ErrorKind::Timeout`] when handlers were still running at the drain timeout
    /// (they were aborted, and their entries stay pending for redelivery).
    pub async fn unsubscribe(&self, handle: &SubscriptionHandle) -> Result<()> {
        let running = lock(&self.inner.subscriptions.running).remove(&handle.id());
        let Some(running) = running else {
            return Err(Error::invalid_input(
                format!("subscription handle {handle:?}"),
                "is not an active subscription of this transport (already unsubscribed, or made \
                 by another transport)",
            ));
        };
        running.stop.cancel();
        match running.task.await {
            Ok(Drained { abandoned: 0 }) => Ok(()),
            Ok(Drained { abandoned }) => Err(Error::Timeout {
                operation: format!(
                    "unsubscribe of subscription {} of group {:?} ({abandoned} handlers were \
                     still running and were aborted; their entries stay pending for redelivery)",
                    handle.id(),
                    handle.group()
                )
                .into(),
                after: self.inner.options.drain_timeout,
            }),
            Err(err) => Err(Error::backend(
                ErrorKind::Unexpected,
                "unsubscribe",
                format!("subscription {}", handle.id()),
                format!("the subscription task failed: {err}"),
            )),
        }
    }

    /// The buffers between reading and handling, summed over this transport's subscriptions.
    ///
    /// Each subscription has a buffer of `backpressure.max_queue_size` entries, so
    /// `max_queue_size` is that times the number of subscriptions (or the configured size when
    /// there is none). `dropped_events` and `rejected_events` count entries that did not fit:
    /// they were left pending in Redis and delivered again later, not lost.
    pub async fn backpressure_stats(&self) -> BackpressureStats {
        self.inner
            .subscriptions
            .stats(self.inner.config.backpressure)
    }

    /// Starts a subscription on `streams`; shared by [`subscribe`](Self::subscribe) and
    /// [`consume_dlq`](Self::consume_dlq).
    pub(crate) async fn start_subscription(
        &self,
        mode: Mode,
        group: String,
        event_types: Vec<String>,
        streams: Vec<StreamSpec>,
        start_from: StartFrom,
        handler: DynHandler,
    ) -> Result<SubscriptionHandle> {
        let inner = &self.inner;
        let options = &inner.options;
        let buffer = Buffer::new(inner.config.backpressure)?;
        let (acks, acks_rx) = mpsc::unbounded_channel();
        let id = NEXT_SUBSCRIPTION_ID.fetch_add(1, Ordering::Relaxed);
        let describe = describe_streams(&streams);
        let by_key = streams
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key.clone(), i))
            .collect();
        let urgent = streams
            .iter()
            .enumerate()
            .filter(|(_, s)| s.lane < lane_of(Priority::Normal))
            .map(|(i, _)| i)
            .collect();
        let sub = Arc::new(Sub {
            id,
            mode,
            group: Arc::from(group.as_str()),
            consumer: inner.config.consumer_name.clone(),
            streams,
            by_key,
            urgent,
            describe,
            redis: Commands::unguarded(inner.conn.clone()),
            client: inner.client.clone(),
            keys: inner.keys.clone(),
            options: options.clone(),
            target: inner.target.clone(),
            buffer: buffer.clone(),
            flights: Arc::clone(&inner.subscriptions.flights),
            failures: Mutex::default(),
            acks,
            stop: inner.shutdown.child_token(),
        });
        let all: Vec<usize> = (0..sub.streams.len()).collect();
        sub.create_groups(&all, start_from.id()).await?;
        let conn = connection::blocking_connection(&sub.client, options, &sub.target).await?;

        let stop = sub.stop.clone();
        let span = tracing::info_span!(
            "subscription",
            subscription = id,
            group = %group,
            consumer = %sub.consumer,
        );
        let task =
            tokio::spawn(supervise(Arc::clone(&sub), handler, conn, acks_rx).instrument(span));
        lock(&inner.subscriptions.running).insert(id, Running { stop, buffer, task });
        tracing::debug!(
            subscription = id,
            group = %group,
            consumer = %sub.consumer,
            streams = %sub.describe,
            "subscription started"
        );
        Ok(SubscriptionHandle::new(id, group, event_types))
    }
}

impl Subscriber for RedisTransport {
    fn subscribe<F, Fut>(
        &self,
        event_types: Vec<String>,
        handler: F,
    ) -> impl Future<Output = Result<SubscriptionHandle>> + Send
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        RedisTransport::subscribe(self, event_types, handler)
    }

    fn unsubscribe(&self, handle: &SubscriptionHandle) -> impl Future<Output = Result<()>> + Send {
        RedisTransport::unsubscribe(self, handle)
    }
}

fn describe_streams(streams: &[StreamSpec]) -> String {
    const SHOWN: usize = 8;
    let mut out = streams
        .iter()
        .take(SHOWN)
        .map(|s| s.key.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if streams.len() > SHOWN {
        out.push_str(&format!(" and {} more", streams.len() - SHOWN));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Redis commands through the circuit breaker
// ---------------------------------------------------------------------------------------------

/// The shared connection, and the circuit breaker when the commands are to go through it: how
/// every short command is sent.
#[derive(Clone)]
pub(crate) struct Commands {
    conn: ConnectionManager,
    breaker: Option<CircuitBreaker>,
}

impl Commands {
    /// Commands that go through `breaker`.
    pub(crate) fn guarded(conn: ConnectionManager, breaker: CircuitBreaker) -> Self {
        Self {
            conn,
            breaker: Some(breaker),
        }
    }

    /// Commands that bypass the breaker.
    pub(crate) fn unguarded(conn: ConnectionManager) -> Self {
        Self {
            conn,
            breaker: None,
        }
    }

    /// Sends `cmd`; errors name `op` and `target`.
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        target: &str,
        cmd: &Cmd,
    ) -> Result<T> {
        let call = || async {
            let mut conn = self.conn.clone();
            cmd.query_async::<T>(&mut conn)
                .await
                .map_err(|err| Error::from_redis(op, target.to_owned(), err))
        };
        match &self.breaker {
            Some(breaker) => breaker.call(call).await,
            None => call().await,
        }
    }

    /// Sends `pipe` (a pipeline or a `MULTI`/`EXEC` transaction).
    pub(crate) async fn pipe<T: FromRedisValue>(
        &self,
        op: &'static str,
        target: &str,
        pipe: &Pipeline,
    ) -> Result<T> {
        let call = || async {
            let mut conn = self.conn.clone();
            pipe.query_async::<T>(&mut conn)
                .await
                .map_err(|err| Error::from_redis(op, target.to_owned(), err))
        };
        match &self.breaker {
            Some(breaker) => breaker.call(call).await,
            None => call().await,
        }
    }
}

/// Whether a Redis error says the stream or the consumer group does not exist.
pub(crate) fn is_nogroup(err: &Error) -> bool {
    let source = std::error::Error::source(err).and_then(|s| s.downcast_ref::<redis::RedisError>());
    match source {
        Some(redis_err) => {
            redis_err.code() == Some("NOGROUP") || redis_err.to_string().contains("NOGROUP")
        }
        None => false,
    }
}

// ---------------------------------------------------------------------------------------------
// One subscription
// ---------------------------------------------------------------------------------------------

/// What a subscription reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Event streams: failures end in the dead-letter stream.
    Events,
    /// The dead-letter stream itself: failures are logged and acknowledged.
    DeadLetters,
}

/// One stream a subscription reads.
pub(crate) struct StreamSpec {
    pub(crate) key: String,
    /// The event type the stream holds (`dlq` for the dead-letter stream).
    pub(crate) event_type: Arc<str>,
    /// 0 (critical) to 3 (low).
    pub(crate) lane: usize,
}

/// An entry read from a stream, on its way to a handler.
pub(crate) struct Delivery {
    /// Index into [`Sub::streams`].
    pub(crate) stream: usize,
    pub(crate) lane: usize,
    pub(crate) id: String,
    /// How many times Redis delivered it, this time included.
    pub(crate) deliveries: u32,
    pub(crate) fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// An acknowledgement waiting to be sent.
struct Ack {
    stream: usize,
    id: String,
}

/// Everything one subscription's tasks share. Holds no reference to the transport, so that
/// dropping the last transport clone is noticed (through `stop`) while handlers drain.
pub(crate) struct Sub {
    pub(crate) id: u64,
    pub(crate) mode: Mode,
    pub(crate) group: Arc<str>,
    pub(crate) consumer: String,
    pub(crate) streams: Vec<StreamSpec>,
    by_key: HashMap<String, usize>,
    /// Indices of the critical and high streams.
    urgent: Vec<usize>,
    /// The stream keys, for messages.
    pub(crate) describe: String,
    pub(crate) redis: Commands,
    client: Client,
    pub(crate) keys: Keys,
    pub(crate) options: TransportOptions,
    target: String,
    pub(crate) buffer: Buffer,
    pub(crate) flights: Arc<Flights>,
    /// When this consumer first saw an entry fail, keyed by stream index and entry id.
    failures: Mutex<HashMap<(usize, String), u64>>,
    acks: mpsc::UnboundedSender<Ack>,
    /// Cancelled by `unsubscribe` or when the last transport clone is dropped.
    pub(crate) stop: CancellationToken,
}

/// Backoff of the reader and the acker for transient errors.
fn transient_backoff() -> RetryPolicy {
    RetryPolicy::unlimited()
        .with_initial_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
}

/// Backoff for errors only an operator can fix (permissions, wrong types, authentication).
fn permanent_backoff() -> RetryPolicy {
    RetryPolicy::unlimited()
        .with_initial_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
}

impl Sub {
    fn spec(&self, stream: usize) -> &StreamSpec {
        &self.streams[stream]
    }

    /// `XGROUP CREATE <stream> <group> <start> MKSTREAM` on the given streams, in one round trip;
    /// a group that exists already (`BUSYGROUP`) is fine.
    pub(crate) async fn create_groups(&self, streams: &[usize], start: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for &i in streams {
            pipe.cmd("XGROUP")
                .arg("CREATE")
                .arg(&self.spec(i).key)
                .arg(&*self.group)
                .arg(start)
                .arg("MKSTREAM");
        }
        let results: Vec<redis::RedisResult<Value>> = self
            .redis
            .pipe("XGROUP CREATE", &self.describe, &pipe)
            .await?;
        for (&i, result) in streams.iter().zip(results) {
            match result {
                Ok(_) => {}
                Err(err) if err.code() == Some("BUSYGROUP") => {}
                Err(err) => {
                    return Err(Error::from_redis(
                        "XGROUP CREATE",
                        format!("{} (group {:?})", self.spec(i).key, self.group),
                        err,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Re-creates the group after `NOGROUP`, from the beginning of the streams.
    pub(crate) async fn recover_nogroup(&self, streams: &[usize], err: &Error) {
        tracing::warn!(
            group = %self.group,
            streams = %self.describe,
            error = %err,
            "the stream or the consumer group disappeared (NOGROUP: a restart without \
             persistence, a deleted stream or a destroyed group); re-creating the group from \
             the beginning of the stream"
        );
        if let Err(err) = self.create_groups(streams, "0").await {
            tracing::warn!(group = %self.group, error = %err, "could not re-create the consumer group");
        }
    }

    fn xreadgroup(&self, streams: &[usize], after: &str, block: Option<Duration>) -> Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&*self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.options.read_count);
        if let Some(block) = block {
            cmd.arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX));
        }
        cmd.arg("STREAMS");
        for &i in streams {
            cmd.arg(&self.spec(i).key);
        }
        for _ in streams {
            cmd.arg(after);
        }
        cmd
    }

    /// Maps an `XREADGROUP` reply to entries with their stream index, most urgent lane first.
    fn entries_of(&self, reply: Value) -> Result<Vec<(usize, reply::RawEntry)>> {
        let streams = reply::read_reply(reply).map_err(|reason| {
            Error::backend(
                ErrorKind::Unexpected,
                "XREADGROUP",
                self.describe.clone(),
                reason,
            )
        })?;
        let mut out = Vec::new();
        for (key, entries) in streams {
            let Some(&i) = self.by_key.get(&key) else {
                tracing::warn!(stream = %key, "XREADGROUP answered for a stream it was not asked for");
                continue;
            };
            out.extend(entries.into_iter().map(|entry| (i, entry)));
        }
        out.sort_by_key(|(i, _)| self.spec(*i).lane);
        Ok(out)
    }

    /// New entries: the urgent lanes without blocking, then, if they had none, every lane with
    /// `BLOCK`.
    async fn read_new(
        &self,
        conn: &mut Option<MultiplexedConnection>,
    ) -> Result<Vec<(usize, reply::RawEntry)>> {
        if !self.urgent.is_empty() {
            let cmd = self.xreadgroup(&self.urgent, ">", None);
            let reply: Value = self.redis.query("XREADGROUP", &self.describe, &cmd).await?;
            let entries = self.entries_of(reply)?;
            if !entries.is_empty() {
                return Ok(entries);
            }
        }
        if conn.is_none() {
            *conn = Some(
                connection::blocking_connection(&self.client, &self.options, &self.target).await?,
            );
        }
        let Some(blocking) = conn.as_mut() else {
            return Err(Error::backend(
                ErrorKind::Unexpected,
                "XREADGROUP",
                self.describe.clone(),
                "no reading connection",
            ));
        };
        let all: Vec<usize> = (0..self.streams.len()).collect();
        let cmd = self.xreadgroup(&all, ">", Some(self.options.block_time));
        let reply: Value = cmd
            .query_async(blocking)
            .await
            .map_err(|err| Error::from_redis("XREADGROUP", self.describe.clone(), err))?;
        self.entries_of(reply)
    }

    /// Re-reads this consumer's own pending entries, stream by stream, most urgent first.
    async fn reread_own_pending(&self, leftover: &mut Vec<Delivery>) -> Result<()> {
        let mut order: Vec<usize> = (0..self.streams.len()).collect();
        order.sort_by_key(|&i| self.spec(i).lane);
        for i in order {
            let mut after = "0".to_owned();
            loop {
                if self.stop.is_cancelled() {
                    return Ok(());
                }
                let cmd = self.xreadgroup(&[i], &after, None);
                let reply: Value = match self
                    .redis
                    .query("XREADGROUP", &self.spec(i).key, &cmd)
                    .await
                {
                    Ok(reply) => reply,
                    // A group that does not exist has nothing pending.
                    Err(err) if is_nogroup(&err) => {
                        self.recover_nogroup(&[i], &err).await;
                        break;
                    }
                    Err(err) => return Err(err),
                };
                let entries = self.entries_of(reply)?;
                let Some((_, last)) = entries.last() else {
                    break;
                };
                after = last.id.clone();
                let count = entries.len();
                tracing::debug!(stream = %self.spec(i).key, count, "re-reading own pending entries");
                self.dispatch_claimed(i, entries.into_iter().map(|(_, e)| e).collect(), leftover)
                    .await?;
                if count < self.options.read_count {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Dispatches entries taken from the pending list (re-read or claimed): looks up their
    /// delivery counts, dead-letters those delivered too often, acknowledges those trimmed away.
    pub(crate) async fn dispatch_claimed(
        &self,
        stream: usize,
        entries: Vec<reply::RawEntry>,
        leftover: &mut Vec<Delivery>,
    ) -> Result<()> {
        let key = &self.spec(stream).key;
        let mut deleted = Vec::new();
        let mut live = Vec::new();
        for entry in entries {
            match entry.fields {
                None => deleted.push(entry.id),
                Some(fields) if !self.flights.contains(key, &entry.id) => {
                    live.push((entry.id, fields))
                }
                Some(_) => {}
            }
        }
        if !deleted.is_empty() {
            self.ack_deleted(stream, &deleted).await;
        }
        if live.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = live.iter().map(|(id, _)| id.as_str()).collect();
        let counts = claim::delivery_counts(self, stream, &ids).await?;
        for (id, fields) in live {
            // Not pending any more (acknowledged meanwhile by someone else): nothing to do.
            let Some(&deliveries) = counts.get(&id) else {
                continue;
            };
            let delivery = Delivery {
                stream,
                lane: self.spec(stream).lane,
                id,
                deliveries,
                fields,
            };
            if deliveries > self.options.max_deliveries {
                if self.flights.insert(self.id, key, &delivery.id) {
                    let error = format!(
                        "delivered {deliveries} times without being acknowledged (handler \
                         failures, or consumers that stopped while handling it); max_deliveries \
                         is {}",
                        self.options.max_deliveries
                    );
                    self.give_up(&delivery, &error, dlq::Reason::Handler).await;
                }
                continue;
            }
            self.dispatch(delivery, leftover).await;
        }
        Ok(())
    }

    /// Pending entries whose stream entry is gone (trimmed by `MAXLEN` or deleted before they
    /// were acknowledged): reported, and acknowledged so that they do not linger.
    pub(crate) async fn ack_deleted(&self, stream: usize, ids: &[String]) {
        let key = &self.spec(stream).key;
        tracing::warn!(
            stream = %key,
            group = %self.group,
            count = ids.len(),
            ids = ?ids,
            "pending entries were deleted from the stream (trimmed by MAXLEN or XDEL) before \
             this group handled them; their events are lost to this group. Raise \
             max_stream_length or consume faster"
        );
        metrics::counter!(telemetry::CLAIM_DELETED, "group" => Arc::clone(&self.group))
            .increment(ids.len() as u64);
        let mut cmd = redis::cmd("XACK");
        cmd.arg(key).arg(&*self.group).arg(ids);
        if let Err(err) = self.redis.query::<i64>("XACK", key, &cmd).await {
            tracing::warn!(stream = %key, error = %err, "could not acknowledge deleted entries");
        }
    }

    /// Queues a delivery for the workers. Entries that do not fit are released; with the
    /// subscription stopping, they are handed back in `leftover`.
    pub(crate) async fn dispatch(&self, delivery: Delivery, leftover: &mut Vec<Delivery>) {
        let key = &self.spec(delivery.stream).key;
        if !self.flights.insert(self.id, key, &delivery.id) {
            return;
        }
        if self.stop.is_cancelled() {
            leftover.push(delivery);
            return;
        }
        // `push` queues the entry before it waits, so if the stop cancels the wait the entry is
        // in the buffer, which is released when the subscription drains.
        let pushed = {
            let push = self.buffer.push(delivery);
            tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                pushed = push => pushed,
            }
        };
        match pushed {
            Pushed::Queued => {}
            Pushed::Dropped(victims) => {
                tracing::debug!(
                    group = %self.group,
                    count = victims.len(),
                    "buffer full: entries released for redelivery"
                );
                claim::release(self, victims).await;
            }
            Pushed::Closed(delivery) => leftover.extend(delivery),
        }
    }

    fn ack(&self, stream: usize, id: String) {
        // The acker outlives every worker; if it is gone the entry stays pending.
        let _ = self.acks.send(Ack { stream, id });
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
            "event_type" => Arc::clone(&spec.event_type),
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
                let undecodable = reason == dlq::Reason::Decode;
                let fields = dlq::DeadLetterFields {
                    event: dlq::event_field(&delivery.fields, undecodable),
                    undecodable,
                    error,
                    original_type: &spec.event_type,
                    stream: &spec.key,
                    entry_id: &delivery.id,
                    group: &self.group,
                    consumer: &self.consumer,
                    deliveries: delivery.deliveries,
                    first_failure_ms: first_failure.unwrap_or(now),
                    last_failure_ms: now,
                };
                let moved = dlq::move_entry(&self.redis, &self.keys.dlq(), &fields, reason).await;
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
        let horizon = (o.claim_idle_time + o.claim_interval)
            .saturating_mul(o.max_deliveries.saturating_add(1))
            .saturating_mul(4)
            + Duration::from_secs(60);
        let oldest =
            now_ms().saturating_sub(u64::try_from(horizon.as_millis()).unwrap_or(u64::MAX));
        lock(&self.failures).retain(|_, first| *first >= oldest);
    }

    /// Runs one entry through its handler.
    async fn handle(&self, delivery: Delivery, handler: &DynHandler) {
        let spec = self.spec(delivery.stream);
        if self.mode == Mode::DeadLetters
            && reply::text_field(&delivery.fields, dlq::field::UNDECODABLE).is_some()
        {
            let error = "the original stream entry could not be decoded, so there is no event to                          hand over";
            self.give_up(&delivery, error, dlq::Reason::Decode).await;
            return;
        }
        let fields = delivery
            .fields
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()));
        let event = match wire::decode_entry(fields, &self.options.limits) {
            Ok(event) => event,
            Err(err) => {
                metrics::counter!(telemetry::DECODE_FAILURES, "stream" => spec.key.clone())
                    .increment(1);
                let error = format!("cannot decode the stream entry: {err}");
                tracing::warn!(stream = %spec.key, entry_id = %delivery.id, error = %error, "undecodable entry");
                self.give_up(&delivery, &error, dlq::Reason::Decode).await;
                return;
            }
        };
        let span = tracing::info_span!(
            "handle",
            stream = %spec.key,
            entry_id = %delivery.id,
            event_type = %event.event_type(),
            event_id = %event.id(),
            group = %self.group,
            deliveries = delivery.deliveries,
            traceparent = tracing::field::Empty,
        );
        if let Some(traceparent) = event.metadata().headers.get("traceparent") {
            span.record("traceparent", traceparent.as_str());
        }
        // With the `opentelemetry` feature, the handler continues the publisher's trace.
        trace_context::continue_trace(&span, &event);
        metrics::counter!(
            telemetry::CONSUMED,
            "event_type" => Arc::clone(&spec.event_type),
            "group" => Arc::clone(&self.group),
        )
        .increment(1);
        let started = Instant::now();
        let handler = Arc::clone(handler);
        let outcome =
            run_isolated(async move { handler(event).await }.instrument(span.clone())).await;
        metrics::histogram!(
            telemetry::HANDLER_LATENCY,
            "event_type" => Arc::clone(&spec.event_type),
            "group" => Arc::clone(&self.group),
        )
        .record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(()) => self.ack(delivery.stream, delivery.id),
            Err(error) => self.handler_failed(delivery, error).instrument(span).await,
        }
    }

    /// Sends one batch of acknowledgements: one `XACK` per stream, in one round trip.
    async fn flush_acks(&self, batch: &[Ack]) -> Result<()> {
        let mut by_stream: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        for ack in batch {
            by_stream.entry(ack.stream).or_default().push(&ack.id);
        }
        let mut pipe = redis::pipe();
        for (&stream, ids) in &by_stream {
            pipe.cmd("XACK")
                .arg(&self.spec(stream).key)
                .arg(&*self.group)
                .arg(ids);
        }
        let span = tracing::debug_span!("ack", group = %self.group, entries = batch.len());
        let _: Vec<i64> = self
            .redis
            .pipe("XACK", &self.describe, &pipe)
            .instrument(span)
            .await?;
        let mut failures = lock(&self.failures);
        for ack in batch {
            self.flights.remove(&self.spec(ack.stream).key, &ack.id);
            failures.remove(&(ack.stream, ack.id.clone()));
        }
        drop(failures);
        metrics::counter!(telemetry::ACKED, "group" => Arc::clone(&self.group))
            .increment(batch.len() as u64);
        Ok(())
    }

    /// After a failed read: how long to wait, what to log, whether to reconnect. Returns `false`
    /// when the subscription is stopping.
    async fn after_read_error(
        &self,
        err: &Error,
        failures: u32,
        conn: &mut Option<MultiplexedConnection>,
    ) -> bool {
        if is_nogroup(err) {
            let all: Vec<usize> = (0..self.streams.len()).collect();
            self.recover_nogroup(&all, err).await;
            // Straight back to reading, unless the group keeps disappearing.
            if failures <= 1 {
                return !self.stop.is_cancelled();
            }
        }
        let kind = err.kind();
        let delay = match err {
            _ if kind.is_retryable() => {
                tracing::warn!(
                    group = %self.group,
                    streams = %self.describe,
                    error = %err,
                    failures,
                    "reading failed; retrying"
                );
                transient_backoff().delay_for(failures)
            }
            _ => {
                tracing::error!(
                    group = %self.group,
                    streams = %self.describe,
                    error = %err,
                    failures,
                    "reading failed with an error retrying will not fix (check permissions, key \
                     types and credentials); retrying slowly"
                );
                permanent_backoff().delay_for(failures)
            }
        };
        if matches!(kind, ErrorKind::Connection | ErrorKind::Timeout) {
            *conn = None;
        }
        tokio::select! {
            () = self.stop.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tasks of a subscription
// ---------------------------------------------------------------------------------------------

/// Runs a subscription until it is stopped, then drains it.
async fn supervise(
    sub: Arc<Sub>,
    handler: DynHandler,
    conn: MultiplexedConnection,
    acks: mpsc::UnboundedReceiver<Ack>,
) -> Drained {
    let (ready_tx, ready_rx) = oneshot::channel();
    let reader = tokio::spawn(read_loop(Arc::clone(&sub), conn, ready_tx).in_current_span());
    let claimer = tokio::spawn(claim::claim_loop(Arc::clone(&sub), ready_rx).in_current_span());
    let keepalive_stop = CancellationToken::new();
    let keepalive = tokio::spawn(
        claim::keepalive_loop(Arc::clone(&sub), keepalive_stop.clone()).in_current_span(),
    );
    let acker_stop = CancellationToken::new();
    let acker =
        tokio::spawn(ack_loop(Arc::clone(&sub), acks, acker_stop.clone()).in_current_span());
    let workers_stop = CancellationToken::new();
    let mut workers = JoinSet::new();
    for _ in 0..sub.options.handler_concurrency {
        workers.spawn(
            worker(Arc::clone(&sub), Arc::clone(&handler), workers_stop.clone()).in_current_span(),
        );
    }

    sub.stop.cancelled().await;
    tracing::debug!("subscription stopping");
    let mut leftover = reader.await.unwrap_or_default();
    leftover.extend(claimer.await.unwrap_or_default());

    workers_stop.cancel();
    let drain_timeout = sub.options.drain_timeout;
    let all_done = async { while workers.join_next().await.is_some() {} };
    let abandoned = match tokio::time::timeout(drain_timeout, all_done).await {
        Ok(()) => 0,
        Err(_) => {
            let running = workers.len();
            tracing::warn!(
                running,
                ?drain_timeout,
                "handlers still running at the drain timeout were aborted; their entries stay \
                 pending and are delivered again"
            );
            workers.abort_all();
            while workers.join_next().await.is_some() {}
            running
        }
    };

    sub.buffer.close();
    leftover.extend(sub.buffer.drain());
    if !leftover.is_empty() {
        claim::release(&sub, leftover).await;
    }
    keepalive_stop.cancel();
    let _ = keepalive.await;
    acker_stop.cancel();
    let _ = acker.await;
    sub.flights.remove_subscription(sub.id);
    tracing::debug!("subscription stopped");
    Drained { abandoned }
}

/// Re-reads own pending entries, then reads new ones until stopped. Returns deliveries it read
/// but could not queue because the subscription stopped.
async fn read_loop(
    sub: Arc<Sub>,
    conn: MultiplexedConnection,
    ready: oneshot::Sender<()>,
) -> Vec<Delivery> {
    let mut conn = Some(conn);
    let mut leftover = Vec::new();
    let mut failures = 0u32;
    loop {
        let result = tokio::select! {
            biased;
            () = sub.stop.cancelled() => return leftover,
            result = sub.reread_own_pending(&mut leftover) => result,
        };
        match result {
            Ok(()) => break,
            Err(err) => {
                failures = failures.saturating_add(1);
                if !sub.after_read_error(&err, failures, &mut conn).await {
                    return leftover;
                }
            }
        }
    }
    // The claimer starts only now, so it does not claim what the re-read is about to deliver.
    let _ = ready.send(());

    failures = 0;
    loop {
        let result = tokio::select! {
            biased;
            () = sub.stop.cancelled() => break,
            result = sub.read_new(&mut conn) => result,
        };
        let entries = match result {
            Ok(entries) => entries,
            Err(err) => {
                failures = failures.saturating_add(1);
                if !sub.after_read_error(&err, failures, &mut conn).await {
                    break;
                }
                continue;
            }
        };
        failures = 0;
        let mut deleted: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (stream, entry) in entries {
            let Some(fields) = entry.fields else {
                deleted.entry(stream).or_default().push(entry.id);
                continue;
            };
            let delivery = Delivery {
                stream,
                lane: sub.spec(stream).lane,
                id: entry.id,
                deliveries: 1,
                fields,
            };
            sub.dispatch(delivery, &mut leftover).await;
        }
        for (stream, ids) in deleted {
            sub.ack_deleted(stream, &ids).await;
        }
        if sub.stop.is_cancelled() {
            break;
        }
        // With a dropping strategy the buffer never makes `dispatch` wait: wait for room here,
        // or a full buffer would make this loop read (and drop) as fast as Redis answers.
        if sub.buffer.free() == 0 && !sub.buffer.room(&sub.stop).await {
            break;
        }
    }
    leftover
}

/// Takes entries from the buffer and handles them, one at a time, until stopped.
async fn worker(sub: Arc<Sub>, handler: DynHandler, stop: CancellationToken) {
    loop {
        let delivery = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            delivery = sub.buffer.take() => delivery,
        };
        let Some(delivery) = delivery else {
            return;
        };
        sub.handle(delivery, &handler).await;
    }
}

/// Collects acknowledgements and sends them in batches until stopped, then sends the rest.
async fn ack_loop(sub: Arc<Sub>, mut rx: mpsc::UnboundedReceiver<Ack>, stop: CancellationToken) {
    let options = &sub.options;
    let mut batch: Vec<Ack> = Vec::new();
    let mut due: Option<tokio::time::Instant> = None;
    let mut failures = 0u32;
    loop {
        let flush_now = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            ack = rx.recv() => {
                let Some(ack) = ack else { break };
                if batch.is_empty() {
                    due = Some(tokio::time::Instant::now() + options.ack_interval);
                }
                batch.push(ack);
                (failures == 0 && batch.len() >= options.ack_batch_size)
                    || due.is_some_and(|due| due <= tokio::time::Instant::now())
            }
            () = sleep_until(due) => true,
        };
        if !flush_now {
            continue;
        }
        match sub.flush_acks(&batch).await {
            Ok(()) => {
                batch.clear();
                due = None;
                failures = 0;
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                let delay = transient_backoff().delay_for(failures);
                tracing::warn!(
                    error = %err,
                    entries = batch.len(),
                    failures,
                    "acknowledging failed; the entries stay pending until it succeeds"
                );
                due = Some(tokio::time::Instant::now() + delay);
            }
        }
    }
    // Stopping: everything handled is in the channel by now (the workers are done).
    while let Ok(ack) = rx.try_recv() {
        batch.push(ack);
    }
    for attempt in 1..=3 {
        if batch.is_empty() {
            break;
        }
        match sub.flush_acks(&batch).await {
            Ok(()) => batch.clear(),
            Err(err) => {
                tracing::warn!(error = %err, attempt, entries = batch.len(), "final acknowledgement failed");
                tokio::time::sleep(transient_backoff().delay_for(attempt)).await;
            }
        }
    }
    if !batch.is_empty() {
        tracing::warn!(
            entries = batch.len(),
            "handled entries could not be acknowledged; they will be delivered again"
        );
    }
}

async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------------------------
// The buffer between reading and handling
// ---------------------------------------------------------------------------------------------

/// A bounded buffer with one FIFO lane per priority.
///
/// A [`BackpressureQueue`] of unit tickets does the accounting (capacity, strategy, stats,
/// warnings); the entries themselves wait in the lanes, so that a worker takes the most urgent
/// one whatever order they were read in. An entry is put in its lane before its ticket is
/// pushed and taken after a ticket is popped, so a popped ticket always finds an entry.
#[derive(Clone)]
pub(crate) struct Buffer {
    tickets: BackpressureQueue<()>,
    lanes: Arc<Mutex<[VecDeque<Delivery>; LANES]>>,
    /// Signalled when a worker takes an entry.
    room: Arc<Notify>,
}

/// What became of a pushed delivery.
pub(crate) enum Pushed {
    Queued,
    /// The buffer was full: these (the strategy's victims) are out of it.
    Dropped(Vec<Delivery>),
    /// The buffer is closed: the delivery is handed back (if it was still there).
    Closed(Option<Delivery>),
}

impl Buffer {
    fn new(config: BackpressureConfig) -> Result<Self> {
        Ok(Self {
            tickets: BackpressureQueue::new(config)?,
            lanes: Arc::default(),
            room: Arc::default(),
        })
    }

    fn lanes(&self) -> MutexGuard<'_, [VecDeque<Delivery>; LANES]> {
        lock(&self.lanes)
    }

    /// Puts `delivery` in its lane at once, then waits for a ticket (with the `Block` strategy)
    /// in the returned future.
    pub(crate) fn push(&self, delivery: Delivery) -> impl Future<Output = Pushed> + Send + '_ {
        let lane = delivery.lane.min(LANES - 1);
        let key = (delivery.stream, delivery.id.clone());
        self.lanes()[lane].push_back(delivery);
        async move {
            match self.tickets.push(()).await {
                Ok(PushOutcome::Queued) => Pushed::Queued,
                Ok(PushOutcome::DroppedOldest(())) => Pushed::Dropped(self.evict(true)),
                Ok(PushOutcome::DroppedNewest(())) => Pushed::Dropped(self.evict(false)),
                Err(err) if err.kind() == ErrorKind::QueueFull => {
                    Pushed::Dropped(self.evict(false))
                }
                Err(_closed) => {
                    let mut lanes = self.lanes();
                    let position = lanes[lane]
                        .iter()
                        .rposition(|d| d.stream == key.0 && d.id == key.1);
                    Pushed::Closed(position.and_then(|p| lanes[lane].remove(p)))
                }
            }
        }
    }

    /// Takes the least urgent entry out: the oldest or the newest of the lowest non-empty lane.
    fn evict(&self, oldest: bool) -> Vec<Delivery> {
        let mut lanes = self.lanes();
        let victim = lanes
            .iter_mut()
            .rev()
            .find(|lane| !lane.is_empty())
            .and_then(|lane| {
                if oldest {
                    lane.pop_front()
                } else {
                    lane.pop_back()
                }
            });
        victim.into_iter().collect()
    }

    /// The most urgent entry, waiting for one; `None` once closed.
    pub(crate) async fn take(&self) -> Option<Delivery> {
        loop {
            self.tickets.pop().await?;
            let delivery = self.lanes().iter_mut().find_map(VecDeque::pop_front);
            self.room.notify_waiters();
            if delivery.is_some() {
                return delivery;
            }
        }
    }

    /// Free places.
    pub(crate) fn free(&self) -> usize {
        self.tickets.capacity().saturating_sub(self.tickets.len())
    }

    /// Waits until there is a free place; `false` if `stop` came first.
    async fn room(&self, stop: &CancellationToken) -> bool {
        loop {
            let mut notified = pin!(self.room.notified());
            notified.as_mut().enable();
            if self.free() > 0 {
                return true;
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = notified => {}
            }
        }
    }

    fn close(&self) {
        self.tickets.close();
    }

    /// Everything still in the buffer.
    fn drain(&self) -> Vec<Delivery> {
        while self.tickets.try_pop().is_some() {}
        self.lanes().iter_mut().flat_map(std::mem::take).collect()
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buffer")
            .field("tickets", &self.tickets)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// Reading replies
// ---------------------------------------------------------------------------------------------

/// Parsing of stream replies from redis-rs [`Value`]s, RESP2 or RESP3. Never panics: a reply of
/// an unexpected shape is an error message.
pub(crate) mod reply {
    use redis::Value;

    /// One stream entry: its id and its field/value pairs, or `None` when the entry was deleted
    /// while pending (`XREADGROUP ... 0` and Redis 6.2's `XAUTOCLAIM` answer it with nil).
    pub(crate) struct RawEntry {
        pub(crate) id: String,
        pub(crate) fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    }

    pub(crate) fn bytes(value: Value) -> Option<Vec<u8>> {
        match value {
            Value::BulkString(bytes) => Some(bytes),
            Value::SimpleString(s) => Some(s.into_bytes()),
            Value::VerbatimString { text, .. } => Some(text.into_bytes()),
            Value::Int(i) => Some(i.to_string().into_bytes()),
            Value::Okay => Some(b"OK".to_vec()),
            _ => None,
        }
    }

    pub(crate) fn string(value: Value) -> Option<String> {
        bytes(value).and_then(|b| String::from_utf8(b).ok())
    }

    pub(crate) fn int(value: &Value) -> Option<i64> {
        match value {
            Value::Int(i) => Some(*i),
            Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            Value::SimpleString(s) => s.parse().ok(),
            _ => None,
        }
    }

    fn entry(value: Value) -> Result<RawEntry, String> {
        let Value::Array(parts) = value else {
            return Err(format!("a stream entry is not an array: {value:?}"));
        };
        let mut parts = parts.into_iter();
        let (Some(id), Some(fields), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err("a stream entry is not an [id, fields] pair".to_owned());
        };
        let id = string(id).ok_or("a stream entry id is not a string")?;
        let fields = match fields {
            Value::Nil => None,
            Value::Array(flat) => {
                if flat.len() % 2 != 0 {
                    return Err(format!(
                        "entry {id} has an odd number of field names and values"
                    ));
                }
                let mut pairs = Vec::with_capacity(flat.len() / 2);
                let mut flat = flat.into_iter();
                while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                    let name = bytes(name)
                        .ok_or_else(|| format!("entry {id}: a field name is not a string"))?;
                    let value = bytes(value)
                        .ok_or_else(|| format!("entry {id}: a field value is not a string"))?;
                    pairs.push((name, value));
                }
                Some(pairs)
            }
            Value::Map(map) => {
                let mut pairs = Vec::with_capacity(map.len());
                for (name, value) in map {
                    let name = bytes(name)
                        .ok_or_else(|| format!("entry {id}: a field name is not a string"))?;
                    let value = bytes(value)
                        .ok_or_else(|| format!("entry {id}: a field value is not a string"))?;
                    pairs.push((name, value));
                }
                Some(pairs)
            }
            other => {
                return Err(format!(
                    "entry {id} has fields of an unexpected shape: {other:?}"
                ));
            }
        };
        Ok(RawEntry { id, fields })
    }

    /// A list of entries (`XRANGE`, and the middle of `XAUTOCLAIM`).
    pub(crate) fn entries(value: Value) -> Result<Vec<RawEntry>, String> {
        match value {
            Value::Nil => Ok(Vec::new()),
            Value::Array(items) => items.into_iter().map(entry).collect(),
            other => Err(format!(
                "a list of stream entries is not an array: {other:?}"
            )),
        }
    }

    /// An `XREAD`/`XREADGROUP` reply: entries per stream key. Nil (nothing new) is empty.
    pub(crate) fn read_reply(value: Value) -> Result<Vec<(String, Vec<RawEntry>)>, String> {
        let pairs: Vec<(Value, Value)> = match value {
            Value::Nil => return Ok(Vec::new()),
            Value::Map(map) => map,
            Value::Array(streams) => streams
                .into_iter()
                .map(|stream| match stream {
                    Value::Array(pair) if pair.len() == 2 => {
                        let mut pair = pair.into_iter();
                        match (pair.next(), pair.next()) {
                            (Some(key), Some(entries)) => Ok((key, entries)),
                            _ => Err("a stream reply is not a [key, entries] pair".to_owned()),
                        }
                    }
                    other => Err(format!(
                        "a stream reply is not a [key, entries] pair: {other:?}"
                    )),
                })
                .collect::<Result<_, _>>()?,
            other => return Err(format!("unexpected XREADGROUP reply: {other:?}")),
        };
        pairs
            .into_iter()
            .map(|(key, entries_value)| {
                let key = string(key).ok_or("a stream key is not a string")?;
                Ok((key, entries(entries_value)?))
            })
            .collect()
    }

    /// An `XAUTOCLAIM` reply: the next cursor, the claimed entries, and the ids of pending
    /// entries that no longer exist (Redis 7; empty on 6.2, which answers them with nil fields).
    pub(crate) fn autoclaim(value: Value) -> Result<(String, Vec<RawEntry>, Vec<String>), String> {
        let Value::Array(parts) = value else {
            return Err(format!("unexpected XAUTOCLAIM reply: {value:?}"));
        };
        let mut parts = parts.into_iter();
        let cursor = parts
            .next()
            .and_then(string)
            .ok_or("the XAUTOCLAIM cursor is missing")?;
        let claimed = entries(parts.next().unwrap_or(Value::Nil))?;
        let deleted = match parts.next() {
            None | Some(Value::Nil) => Vec::new(),
            Some(Value::Array(ids)) => ids
                .into_iter()
                .map(|id| string(id).ok_or("a deleted id is not a string"))
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(format!("unexpected XAUTOCLAIM deleted ids: {other:?}")),
        };
        Ok((cursor, claimed, deleted))
    }

    /// Fields of an entry by name, as text (lossy UTF-8).
    pub(crate) fn text_field(fields: &[(Vec<u8>, Vec<u8>)], name: &str) -> Option<String> {
        fields
            .iter()
            .find(|(k, _)| k.as_slice() == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn bulk(s: &str) -> Value {
            Value::BulkString(s.as_bytes().to_vec())
        }

        #[test]
        fn read_reply_resp2_and_resp3_and_nil() {
            let entries = Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("event"), bulk("{}")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]);
            let resp2 = Value::Array(vec![Value::Array(vec![bulk("s"), entries.clone()])]);
            let resp3 = Value::Map(vec![(bulk("s"), entries)]);
            for reply in [resp2, resp3] {
                let parsed = read_reply(reply).unwrap();
                assert_eq!(parsed.len(), 1);
                assert_eq!(parsed[0].0, "s");
                assert_eq!(parsed[0].1[0].id, "1-0");
                assert_eq!(
                    parsed[0].1[0].fields.as_deref(),
                    Some(&[(b"event".to_vec(), b"{}".to_vec())][..])
                );
                assert!(parsed[0].1[1].fields.is_none());
            }
            assert!(read_reply(Value::Nil).unwrap().is_empty());
        }

        #[test]
        fn malformed_replies_are_errors_not_panics() {
            for bad in [
                Value::Int(3),
                Value::Array(vec![Value::Int(1)]),
                Value::Array(vec![Value::Array(vec![bulk("s"), Value::Int(1)])]),
                Value::Array(vec![Value::Array(vec![
                    bulk("s"),
                    Value::Array(vec![Value::Array(vec![
                        bulk("1-0"),
                        Value::Array(vec![bulk("odd")]),
                    ])]),
                ])]),
            ] {
                assert!(read_reply(bad).is_err());
            }
            assert!(autoclaim(Value::Nil).is_err());
            assert!(autoclaim(Value::Array(vec![])).is_err());
        }

        #[test]
        fn autoclaim_with_and_without_deleted_ids() {
            let v7 = Value::Array(vec![
                bulk("0-0"),
                Value::Array(vec![Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("a"), bulk("b")]),
                ])]),
                Value::Array(vec![bulk("2-0")]),
            ]);
            let (cursor, claimed, deleted) = autoclaim(v7).unwrap();
            assert_eq!(cursor, "0-0");
            assert_eq!(claimed.len(), 1);
            assert_eq!(deleted, vec!["2-0".to_owned()]);
            let v62 = Value::Array(vec![bulk("5-0"), Value::Array(vec![])]);
            let (cursor, claimed, deleted) = autoclaim(v62).unwrap();
            assert_eq!(
                (cursor.as_str(), claimed.len(), deleted.len()),
                ("5-0", 0, 0)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redstream_core::BackpressureStrategy;

    fn delivery(lane: usize, n: u32) -> Delivery {
        Delivery {
            stream: lane,
            lane,
            id: format!("{n}-0"),
            deliveries: 1,
            fields: Vec::new(),
        }
    }

    fn buffer(size: usize, strategy: BackpressureStrategy) -> Buffer {
        Buffer::new(
            BackpressureConfig::default()
                .with_max_queue_size(size)
                .with_strategy(strategy),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_most_urgent_lane_is_taken_first() {
        let buffer = buffer(10, BackpressureStrategy::Block);
        for (lane, n) in [(3, 1), (2, 2), (1, 3), (0, 4), (2, 5)] {
            assert!(matches!(
                buffer.push(delivery(lane, n)).await,
                Pushed::Queued
            ));
        }
        let mut order = Vec::new();
        while buffer.free() < 10 {
            order.push(buffer.take().await.unwrap().id);
        }
        assert_eq!(order, ["4-0", "3-0", "2-0", "5-0", "1-0"]);
    }

    #[tokio::test]
    async fn drops_evict_the_least_urgent_entry() {
        let buffer = buffer(2, BackpressureStrategy::DropNewest);
        buffer.push(delivery(3, 1)).await;
        buffer.push(delivery(2, 2)).await;
        // A critical entry arrives at a full buffer: the low one makes room.
        let Pushed::Dropped(victims) = buffer.push(delivery(0, 3)).await else {
            panic!("the buffer is full");
        };
        assert_eq!(victims[0].id, "1-0");
        // A low entry arrives: it is itself the least urgent, newest entry.
        let Pushed::Dropped(victims) = buffer.push(delivery(3, 4)).await else {
            panic!("the buffer is full");
        };
        assert_eq!(victims[0].id, "4-0");
        assert_eq!(buffer.take().await.unwrap().id, "3-0");
        assert_eq!(buffer.take().await.unwrap().id, "2-0");
        assert_eq!(buffer.tickets.stats().dropped_events, 2);

        let oldest = self::buffer(2, BackpressureStrategy::DropOldest);
        oldest.push(delivery(2, 1)).await;
        oldest.push(delivery(2, 2)).await;
        let Pushed::Dropped(victims) = oldest.push(delivery(2, 3)).await else {
            panic!("the buffer is full");
        };
        assert_eq!(victims[0].id, "1-0");
    }

    #[tokio::test]
    async fn closing_hands_back_everything() {
        let buffer = buffer(1, BackpressureStrategy::Block);
        buffer.push(delivery(2, 1)).await;
        let waiting = {
            let buffer = buffer.clone();
            tokio::spawn(async move {
                matches!(buffer.push(delivery(2, 2)).await, Pushed::Closed(Some(_)))
            })
        };
        while buffer.lanes()[2].len() < 2 {
            tokio::task::yield_now().await;
        }
        buffer.close();
        assert!(waiting.await.unwrap());
        let rest: Vec<String> = buffer.drain().into_iter().map(|d| d.id).collect();
        assert_eq!(rest, ["1-0"]);
        assert!(buffer.take().await.is_none());
    }
}
