//! [`RedisSink`]: batches to a Redis stream, all-or-nothing, retried, without duplicates.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::{Cmd, Pipeline, Value};
use redstream_core::wire;
use redstream_core::{
    BatchAck, BatchSink, CheckpointHook, Error, ErrorKind, Event, EventLimits, Result,
    SourcePosition,
};
use tokio::sync::Mutex;
use tracing::Instrument;

use crate::config::SinkConfig;
use crate::connection::Connection;
use crate::keys;
use crate::script::{self, Batch, LAST_EVENT_FIELD, POSITION_FIELD, ProgressCheck, Reply};
use crate::stall::{self, Stall};

/// What the progress key says the sink last wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// The source position of the last batch written, if it carried one.
    pub position: Option<SourcePosition>,
    /// The id of the last event written.
    pub last_event_id: String,
}

impl Progress {
    /// Whether this records the batch ending with `last_event_id` at `position`.
    fn records(&self, last_event_id: &str, position: Option<&SourcePosition>) -> bool {
        self.last_event_id == last_event_id && self.position.as_ref() == position
    }
}

/// Counters of one sink since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SinkStats {
    /// Batches written.
    pub batches: u64,
    /// Events written.
    pub events: u64,
    /// Attempts that failed and were tried again.
    pub retries: u64,
    /// Batches found already written and skipped.
    pub skipped_batches: u64,
    /// Batches given up on (returned as an error, or dropped by a sink that is not required).
    pub failed_batches: u64,
}

/// The outcome of [`RedisSink::send_and_checkpoint`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Delivery {
    /// The batch is in the stream; the checkpoint hook was called with its position.
    Acknowledged(BatchAck),
    /// The batch failed on a sink with `required = false`: it was counted, logged and dropped,
    /// and the checkpoint hook was called anyway, so that this sink does not block the
    /// checkpoint beyond its retry schedule.
    Dropped(Error),
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    events: AtomicU64,
    retries: AtomicU64,
    skipped_batches: AtomicU64,
    failed_batches: AtomicU64,
}

/// The connection and what the sink knows of its progress key. Held for a whole batch, so
/// batches are written one at a time and in order.
struct State {
    conn: Connection,
    /// `None`: unknown (at start, or after a failure); read the key before writing.
    progress: Option<Option<Progress>>,
    /// Failed attempts since the last success, for the stall warnings.
    stall: Stall,
}

/// A batch sink that appends events to one Redis stream.
///
/// Each event becomes one entry whose field `event` holds the core wire-format JSON envelope
/// (see `redstream_core::wire`), so consumers read entries as the stream's other readers do.
/// A batch is one Lua script holding its `XADD`s and an `HSET` of the sink's progress key
/// (source position and last event id), which checks permissions, key types and the recorded
/// progress before its first write: either all of it is applied or none of it.
///
/// When the sink does not know whether its last write ran (at start, after a timeout or a
/// dropped connection, and after a `send_batch` future was dropped mid-write) it reads the
/// progress key first and skips a batch whose last event is already recorded there; the
/// script checks the key again where nothing can run in between, so an older attempt of the
/// batch that lands after the read is not written twice either. See the crate documentation
/// for the guarantee and its limits.
pub struct RedisSink {
    config: SinkConfig,
    progress_key: String,
    /// The progress key's name in earlier versions, when it differs (an untagged stream).
    previous_progress_key: Option<String>,
    limits: EventLimits,
    state: Mutex<State>,
    counters: Counters,
    /// The `sink` label of the metrics: the id, shared, so a metric costs no allocation.
    label: metrics::SharedString,
}

impl std::fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSink")
            .field("config", &self.config)
            .field("progress_key", &self.progress_key)
            .finish_non_exhaustive()
    }
}

/// What the batch script's errors name as the operation.
const BATCH_OP: &str = "batch script";

impl RedisSink {
    /// A sink for `config`, after validating it. Does not connect: the first batch does, and
    /// retries connecting like any other transient failure, so the sink can be created while
    /// Redis is still down.
    pub fn new(config: SinkConfig) -> Result<Self> {
        config.validate()?;
        let conn = Connection::new(&config);
        let label = metrics::SharedString::from_shared(std::sync::Arc::from(config.id.as_str()));
        let progress_key = keys::progress_key(&config.stream, &config.id);
        if !redstream_core::keys::same_slot(&config.stream, &progress_key) {
            // Only a stream holding a `}` without a hash tag before it cannot be wrapped in one.
            tracing::debug!(
                stream = %config.stream,
                progress_key = %progress_key,
                "the progress key hashes to another Redis Cluster slot than the stream"
            );
        }
        Ok(Self {
            previous_progress_key: keys::previous_progress_key(&config.stream, &config.id),
            progress_key,
            limits: EventLimits::default(),
            config,
            state: Mutex::new(State {
                conn,
                progress: None,
                stall: Stall::default(),
            }),
            counters: Counters::default(),
            label,
        })
    }

    /// Sets the limits events are checked against when encoded (default: the core's).
    #[must_use]
    pub fn with_event_limits(mut self, limits: EventLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &SinkConfig {
        &self.config
    }

    /// The key where the sink records its progress, in the stream's Redis Cluster slot:
    /// `{orders.events}:redstream-sink:<id>` for the stream `orders.events`,
    /// `{orders}.events:redstream-sink:<id>` for `{orders}.events` (see
    /// [`keys::progress_key`]).
    #[must_use]
    pub fn progress_key(&self) -> &str {
        &self.progress_key
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> SinkStats {
        let c = &self.counters;
        SinkStats {
            batches: c.batches.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            skipped_batches: c.skipped_batches.load(Ordering::Relaxed),
            failed_batches: c.failed_batches.load(Ordering::Relaxed),
        }
    }

    /// Reads the progress key: the position and last event id of the last batch written, or
    /// `None` if this sink never wrote to this stream. A restarted source can resume from the
    /// position recorded here rather than from its own, possibly older, checkpoint.
    ///
    /// # Errors
    ///
    /// Besides Redis errors, [`ErrorKind::NotFound`] when there is no progress key but the
    /// stream has one under the name earlier versions used
    /// ([`keys::previous_progress_key`]): the message names both keys and says to run
    /// `redstream migrate`. Sending a batch fails the same way, before any `XADD`.
    pub async fn recorded_progress(&self) -> Result<Option<Progress>> {
        let mut state = self.state.lock().await;
        // It does not make the progress known: the next batch reads it again, since an older
        // attempt of a batch may land in between (the batch script would catch that too, at
        // the cost of a round trip).
        self.read_progress(&mut state).await
    }

    /// [`recorded_progress`](Self::recorded_progress) with the sink's retry policy (and its
    /// stall warnings); the runner reads the progress at start with it.
    pub(crate) async fn recorded_progress_retried(&self) -> Result<Option<Progress>> {
        let mut state = self.state.lock().await;
        let mut attempt: u32 = 1;
        loop {
            let err = match self.read_progress(&mut state).await {
                Ok(progress) => {
                    self.end_stall(&mut state);
                    return Ok(progress);
                }
                Err(err) => err,
            };
            if !self
                .retry_after(&mut state, &mut attempt, &err, "reading its progress key")
                .await
            {
                return Err(err);
            }
        }
    }

    /// With `durability` set, makes sure that the batch the progress key records is on enough
    /// replicas: rewrites the recorded progress fields on the sink's connection (an idempotent
    /// `HSET`, replicated after the batch, so that `WAIT` covers the batch) and `WAIT`s, with
    /// the sink's retry policy and within its `batch_timeout`, as a batch found already written
    /// is confirmed. Fails with [`ErrorKind::NotDurable`] when too few replicas acknowledge it.
    /// Without `durability`, or with nothing recorded, there is nothing to confirm.
    ///
    /// A restarted source that resumes from [`recorded_progress`](Self::recorded_progress)
    /// ahead of its own checkpoint calls this before moving its checkpoint there: the last run
    /// may have stopped after the batch was written and before its `WAIT` said it was durable.
    pub async fn confirm_recorded(&self) -> Result<()> {
        if self.config.durability.is_none() {
            return Ok(());
        }
        let confirm = async {
            let mut state = self.state.lock().await;
            let mut attempt: u32 = 1;
            loop {
                let err = match self.confirm_attempt(&mut state).await {
                    Ok(()) => {
                        self.end_stall(&mut state);
                        return Ok(());
                    }
                    Err(err) => err,
                };
                if !self
                    .retry_after(
                        &mut state,
                        &mut attempt,
                        &err,
                        "confirming its recorded batch",
                    )
                    .await
                {
                    return Err(err);
                }
            }
        };
        self.within_batch_timeout("confirming the recorded batch (batch_timeout)", confirm)
            .await
    }

    async fn confirm_attempt(&self, state: &mut State) -> Result<()> {
        // Like `recorded_progress`, this read leaves the progress as it was.
        let recorded = self.read_progress(state).await?;
        match recorded {
            Some(progress) => {
                self.confirm_written(state, progress.position.as_ref(), &progress.last_event_id)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Sends a batch, then calls `hook` with `position` once the batch is acknowledged.
    ///
    /// With `required = true` a failure is returned and the hook is not called: the checkpoint
    /// stays where it was. With `required = false` a failure (once the retry schedule is
    /// spent) is counted, logged and returned as [`Delivery::Dropped`], and the hook is called
    /// all the same. An error from the hook itself is always returned. A batch the server
    /// refused wrote nothing (the batch script checks everything it could be refused for
    /// before its first write); after a timeout, a dropped connection or
    /// [`ErrorKind::NotDurable`] it may be in the stream, and the progress key tells the next
    /// attempt so.
    ///
    /// The hook contract (called once per acknowledged batch, in the order of the batches)
    /// holds for one caller at a time. Batches from concurrent callers are written one after
    /// the other (the sink holds its state lock for a whole batch), but their hooks run after
    /// that lock is released, so two concurrent callers' hooks may run in either order: a
    /// source with one checkpoint should send its batches from one task.
    pub async fn send_and_checkpoint<H: CheckpointHook>(
        &self,
        events: Vec<Event>,
        position: Option<SourcePosition>,
        hook: &H,
    ) -> Result<Delivery> {
        let span = self.batch_span(events.len());
        match self.send(events, position.clone()).instrument(span).await {
            Ok(ack) => {
                if let Some(position) = ack.position.clone() {
                    hook.commit(position).await?;
                }
                Ok(Delivery::Acknowledged(ack))
            }
            Err(err) if self.config.required => Err(err),
            Err(err) => {
                tracing::warn!(
                    sink = %self.config.id,
                    stream = %self.config.stream,
                    error = %err,
                    "batch dropped by a sink that is not required"
                );
                if let Some(position) = position {
                    hook.commit(position).await?;
                }
                Ok(Delivery::Dropped(err))
            }
        }
    }

    fn batch_span(&self, events: usize) -> tracing::Span {
        tracing::info_span!(
            "redstream_sink.batch",
            sink = %self.config.id,
            stream = %self.config.stream,
            events,
        )
    }

    async fn send(&self, events: Vec<Event>, position: Option<SourcePosition>) -> Result<BatchAck> {
        let Some(last) = events.last() else {
            return Ok(BatchAck::new(Vec::new(), 0, position));
        };
        let last_event_id = last.id().to_string();
        let encoded = match self.encode(&events) {
            Ok(encoded) => encoded,
            Err(err) => {
                // A batch refused before sending (too many events or bytes, an invalid event)
                // is a failed batch like any other.
                self.record_error(&err);
                self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                return Err(err);
            }
        };
        let started = Instant::now();
        let retried = self.send_with_retries(&encoded, position.as_ref(), &last_event_id);
        // Dropping `retried` while its script is in flight is safe: the progress is marked
        // unknown before every script, so the next batch reads the progress key first.
        let outcome = self
            .within_batch_timeout("sink batch (batch_timeout)", retried)
            .await;
        match &outcome {
            Ok(ack) => self.record_success(ack, started),
            Err(_) => {
                self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
            }
        }
        outcome
    }

    /// `operation` bounded by `batch_timeout`, if set: when it runs out, a [`Error::Timeout`].
    async fn within_batch_timeout<T>(
        &self,
        what: &'static str,
        operation: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(limit) = self.config.batch_timeout else {
            return operation.await;
        };
        match tokio::time::timeout(limit, operation).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let err = Error::Timeout {
                    operation: what.into(),
                    after: limit,
                };
                self.record_error(&err);
                Err(err)
            }
        }
    }

    async fn send_with_retries(
        &self,
        encoded: &[String],
        position: Option<&SourcePosition>,
        last_event_id: &str,
    ) -> Result<BatchAck> {
        let mut state = self.state.lock().await;
        let mut attempt: u32 = 1;
        loop {
            let err = match self
                .attempt(&mut state, encoded, position, last_event_id)
                .await
            {
                Ok(ack) => {
                    self.end_stall(&mut state);
                    return Ok(ack);
                }
                Err(err) => err,
            };
            if !self
                .retry_after(&mut state, &mut attempt, &err, "writing a batch")
                .await
            {
                return Err(err);
            }
        }
    }

    /// After attempt `attempt` at `doing` failed with `err`: records the error and, if the
    /// retry policy allows another attempt, says that the sink is stalled (a warning at the
    /// first failure and then at most every [`Stall::EVERY`]), waits the policy's delay,
    /// counts the retry and returns `true`.
    async fn retry_after(
        &self,
        state: &mut State,
        attempt: &mut u32,
        err: &Error,
        doing: &'static str,
    ) -> bool {
        if matches!(err.kind(), ErrorKind::Timeout | ErrorKind::Connection) {
            // The script may or may not have run, and the server may have restarted without
            // its data: read the progress key before the next attempt.
            state.progress = None;
        }
        self.record_error(err);
        if !self.config.retry.should_retry(*attempt, err) {
            return false;
        }
        let delay = self.config.retry.delay_for(*attempt);
        let failed = state.stall.failed();
        if failed.warn {
            tracing::warn!(
                sink = %self.config.id,
                stream = %self.config.stream,
                error = %err,
                failures = failed.failures,
                stalled_for = ?to_millis(failed.stalled_for),
                retry_in = ?to_millis(delay),
                "sink stalled {doing}: waiting for {}; retrying (nothing is written meanwhile; \
                 the next warning in {:?} at the earliest)",
                stall::waiting_for(err.kind()),
                Stall::EVERY,
            );
        } else {
            tracing::debug!(
                sink = %self.config.id,
                attempt = *attempt,
                failures = failed.failures,
                ?delay,
                error = %err,
                "attempt failed, retrying"
            );
        }
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("redstream_sink_retries_total", "sink" => self.label.clone())
            .increment(1);
        tokio::time::sleep(delay).await;
        *attempt = attempt.saturating_add(1);
        true
    }

    /// After a success: says that a stall ended, at the level it was reported at.
    fn end_stall(&self, state: &mut State) {
        if let Some((failures, stalled_for)) = state.stall.recovered() {
            tracing::warn!(
                sink = %self.config.id,
                stream = %self.config.stream,
                failures,
                stalled_for = ?to_millis(stalled_for),
                "sink writing again after a stall"
            );
        }
    }

    fn record_error(&self, err: &Error) {
        metrics::counter!(
            "redstream_sink_errors_total",
            "sink" => self.label.clone(),
            "kind" => err.kind().as_str()
        )
        .increment(1);
    }

    fn encode(&self, events: &[Event]) -> Result<Vec<String>> {
        if events.len() > self.config.max_batch_events {
            return Err(Error::invalid_input(
                format!("batch for stream {}", self.config.stream),
                format!(
                    "holds {} events, over max_batch_events ({})",
                    events.len(),
                    self.config.max_batch_events
                ),
            ));
        }
        let encoded = events
            .iter()
            .map(|event| wire::encode(event, &self.limits))
            .collect::<Result<Vec<_>>>()?;
        let bytes: usize = encoded.iter().map(String::len).sum();
        if bytes > self.config.max_batch_bytes {
            return Err(Error::invalid_input(
                format!("batch for stream {}", self.config.stream),
                format!(
                    "encodes to {bytes} bytes, over max_batch_bytes ({})",
                    self.config.max_batch_bytes
                ),
            ));
        }
        Ok(encoded)
    }

    /// One attempt: learn the progress if unknown, skip the batch if it is already written,
    /// otherwise run the batch script. A script that finds the progress key recording
    /// something other than what the sink expected wrote nothing and answered what it found:
    /// the sink decides again at once (no delay, no error counted), up to [`CHANGE_TRIES`]
    /// times; then the attempt fails with a retryable error and the retry policy takes over.
    async fn attempt(
        &self,
        state: &mut State,
        encoded: &[String],
        position: Option<&SourcePosition>,
        last_event_id: &str,
    ) -> Result<BatchAck> {
        for tried in 1..=CHANGE_TRIES {
            match self
                .try_write(state, encoded, position, last_event_id)
                .await?
            {
                Written::Acked(ack) => return Ok(ack),
                Written::Changed => {
                    tracing::debug!(
                        sink = %self.config.id,
                        key = %self.progress_key,
                        tried,
                        "the progress key changed since the sink read or wrote it; nothing was \
                         written, deciding again on what it holds now"
                    );
                }
            }
        }
        Err(Error::backend(
            ErrorKind::Unavailable,
            BATCH_OP,
            self.config.stream.clone(),
            format!(
                "the progress key {} changed between the sink's read of it and its batch script \
                 {CHANGE_TRIES} times in a row, so nothing of the batch was written; something \
                 else is writing that key (another sink with the same id on this stream?)",
                self.progress_key
            ),
        ))
    }

    /// [`attempt`](Self::attempt)'s body, once.
    async fn try_write(
        &self,
        state: &mut State,
        encoded: &[String],
        position: Option<&SourcePosition>,
        last_event_id: &str,
    ) -> Result<Written> {
        if !self.config.exactly_once {
            return self.write(state, encoded, position, None).await;
        }
        // Progress known (the hot path): no read, the sink wrote the key itself, and the
        // script checks that it still holds that.
        let known = match &state.progress {
            Some(known) => known.clone(),
            None => {
                let read = self.read_progress(state).await?;
                state.progress = Some(read.clone());
                read
            }
        };
        if known
            .as_ref()
            .is_some_and(|p| p.records(last_event_id, position))
        {
            return self
                .skip(state, encoded.len(), position, last_event_id)
                .await;
        }
        self.write(state, encoded, position, Some((known, last_event_id)))
            .await
    }

    /// Acknowledges a batch the progress key records, without writing it again (after
    /// confirming it on replicas with `durability`).
    async fn skip(
        &self,
        state: &mut State,
        events: usize,
        position: Option<&SourcePosition>,
        last_event_id: &str,
    ) -> Result<Written> {
        tracing::info!(
            sink = %self.config.id,
            stream = %self.config.stream,
            last_event_id,
            "batch already written by an earlier attempt, skipped"
        );
        self.counters
            .skipped_batches
            .fetch_add(1, Ordering::Relaxed);
        self.confirm_written(state, position, last_event_id).await?;
        Ok(Written::Acked(BatchAck::new(
            Vec::new(),
            events,
            position.cloned(),
        )))
    }

    /// With `durability` set, waits for replicas to have a batch found already written.
    ///
    /// `WAIT` vouches for the writes made on its own connection, and this one may have made
    /// none (the batch was written before a reconnect or a restart): `WAIT` would return at
    /// once. Rewriting the same progress fields, an idempotent write replicated after the
    /// batch, in one pipeline with the `WAIT` (so on the same connection), makes `WAIT` cover
    /// the batch.
    async fn confirm_written(
        &self,
        state: &mut State,
        position: Option<&SourcePosition>,
        last_event_id: &str,
    ) -> Result<()> {
        let Some(wait) = self.wait_cmd() else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        pipe.add_command(self.progress_hset(last_event_id, position))
            .ignore()
            .add_command(wait);
        let (acked,): (u64,) = state
            .conn
            .call("HSET and WAIT", &self.progress_key, true, |mut conn| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        self.check_durable(acked)
    }

    /// Runs the batch script; with `progress` (exactly-once on: what the sink knows the key
    /// records, and the batch's last event id) it checks and records the progress too. With
    /// `durability`, the `WAIT` goes in the same pipeline, so that it runs on the connection
    /// that wrote the batch.
    async fn write(
        &self,
        state: &mut State,
        encoded: &[String],
        position: Option<&SourcePosition>,
        progress: Option<(Option<Progress>, &str)>,
    ) -> Result<Written> {
        let batch = Batch {
            stream: &self.config.stream,
            max_len: self.config.trim_length(),
            events: encoded,
            wait: self.wait_args(),
            progress: progress
                .as_ref()
                .map(|(known, last_event_id)| ProgressCheck {
                    key: &self.progress_key,
                    expected: known.as_ref(),
                    last_event_id,
                    position,
                }),
        };
        // Unknown until the reply is in: if this future is dropped while the script is in
        // flight, the next batch reads the progress key instead of trusting memory. After an
        // error it stays unknown too, so the next attempt reads it with one HMGET.
        state.progress = None;
        let (reply, acked) = self.run_script(state, &batch).await?;
        let Some((_, last_event_id)) = progress else {
            return match reply {
                Reply::Written(ids) => {
                    self.check_replicas(acked)?;
                    Ok(Written::Acked(BatchAck::new(ids, 0, position.cloned())))
                }
                other => Err(self.unexpected(format!(
                    "the batch script answered {other:?} for a batch without progress"
                ))),
            };
        };
        let this_batch = Progress {
            position: position.cloned(),
            last_event_id: last_event_id.to_owned(),
        };
        match reply {
            Reply::Written(ids) => {
                state.progress = Some(Some(this_batch));
                self.check_replicas(acked)?;
                Ok(Written::Acked(BatchAck::new(ids, 0, position.cloned())))
            }
            // An older attempt of this batch landed after the sink's read of the key.
            Reply::Recorded => {
                state.progress = Some(Some(this_batch));
                self.skip(state, encoded.len(), position, last_event_id)
                    .await
            }
            Reply::Changed(recorded) => {
                if recorded.is_none() {
                    tracing::warn!(
                        sink = %self.config.id,
                        key = %self.progress_key,
                        "the sink's progress key is gone (deleted, or lost by the server): \
                         batches are recorded afresh from now on"
                    );
                    self.refuse_previous_progress(state).await?;
                }
                state.progress = Some(recorded);
                Ok(Written::Changed)
            }
        }
    }

    /// Sends the batch script (and `WAIT` with `durability`) in one round trip, loading the
    /// script first when the server does not have it. Returns its reply, and the replicas
    /// `WAIT` counted.
    async fn run_script(
        &self,
        state: &mut State,
        batch: &Batch<'_>,
    ) -> Result<(Reply, Option<u64>)> {
        let mut pipe = redis::pipe();
        // Server errors come back as values: the script's is the one that matters.
        pipe.ignore_errors().add_command(script::call(batch));
        if let Some(wait) = self.wait_cmd() {
            pipe.add_command(wait);
        }
        let idempotent = batch.progress.is_some();
        let mut replies = self.exchange(state, &pipe, idempotent).await?;
        if matches!(replies.first(), Some(Value::ServerError(err)) if err.code() == "NOSCRIPT") {
            // After a restart, a failover or SCRIPT FLUSH. Nothing ran; load it and send again.
            let load = script::load();
            let _: String = state
                .conn
                .call("SCRIPT LOAD", &self.config.stream, true, |mut conn| {
                    let load = &load;
                    async move { load.query_async(&mut conn).await }
                })
                .await?;
            replies = self.exchange(state, &pipe, idempotent).await?;
        }
        let mut replies = replies.into_iter();
        let reply = match replies.next() {
            Some(Value::ServerError(err)) => return Err(self.script_error(batch, err.into())),
            Some(value) => script::parse(value).map_err(|what| self.unexpected(what))?,
            None => return Err(self.unexpected("no reply to the batch script".to_owned())),
        };
        let acked = match replies.next() {
            None => None,
            Some(Value::ServerError(err)) => {
                return Err(Error::from_redis(
                    "WAIT",
                    self.config.stream.clone(),
                    err.into(),
                ));
            }
            Some(value) => Some(
                redis::from_redis_value::<u64>(value)
                    .map_err(|err| self.unexpected(format!("WAIT answered {err}")))?,
            ),
        };
        Ok((reply, acked))
    }

    /// The error of a batch script the server refused or that refused the batch.
    ///
    /// The server checks the keys a script declares against the user's ACL before it runs
    /// it, and then says only that "one of the keys" (Redis) or "a key" (Valkey) is refused:
    /// this names the commands the script runs on each key, and the access the user needs.
    fn script_error(&self, batch: &Batch<'_>, err: redis::RedisError) -> Error {
        let text = err.to_string();
        if redstream_core::classify_redis_error(&err) != ErrorKind::PermissionDenied
            || !(text.contains("of the keys") || text.contains("access a key"))
        {
            return Error::from_redis(BATCH_OP, self.config.stream.clone(), err);
        }
        let (commands, keys) = match &batch.progress {
            Some(progress) => (
                format!(
                    "XADD on the stream {:?} and HSET, HMGET and TYPE on the progress key {:?}",
                    self.config.stream, progress.key
                ),
                format!("~{} ~{}", self.config.stream, progress.key),
            ),
            None => (
                format!("XADD and TYPE on the stream {:?}", self.config.stream),
                format!("~{}", self.config.stream),
            ),
        };
        Error::backend(
            ErrorKind::PermissionDenied,
            BATCH_OP,
            self.config.stream.clone(),
            format!(
                "{err}: the batch script runs {commands}, and the user needs read and write \
                 access to these keys ({keys}); nothing of the batch was written"
            ),
        )
    }

    /// The pipeline of [`run_script`](Self::run_script), sent on the sink's connection. It is
    /// idempotent when it checks the progress key: a second run of a batch that the first one
    /// wrote finds it recorded and writes nothing.
    async fn exchange(
        &self,
        state: &mut State,
        pipe: &Pipeline,
        idempotent: bool,
    ) -> Result<Vec<Value>> {
        state
            .conn
            .call(
                BATCH_OP,
                &self.config.stream,
                idempotent,
                |mut conn| async move { pipe.query_async::<Vec<Value>>(&mut conn).await },
            )
            .await
    }

    fn unexpected(&self, what: String) -> Error {
        Error::backend(
            ErrorKind::Unexpected,
            BATCH_OP,
            self.config.stream.clone(),
            what,
        )
    }

    /// With `durability` set, the replicas and the timeout in milliseconds of `WAIT`.
    fn wait_args(&self) -> Option<(u32, u64)> {
        let durability = self.config.durability?;
        let timeout_ms = u64::try_from(durability.timeout.as_millis()).unwrap_or(u64::MAX);
        Some((durability.replicas, timeout_ms.max(1)))
    }

    /// `WAIT replicas timeout`, with `durability` set.
    fn wait_cmd(&self) -> Option<Cmd> {
        let (replicas, timeout_ms) = self.wait_args()?;
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout_ms);
        Some(cmd)
    }

    /// With `durability`, the replicas `WAIT` counted (`acked`) must be enough.
    fn check_replicas(&self, acked: Option<u64>) -> Result<()> {
        match (self.config.durability, acked) {
            (None, _) => Ok(()),
            (Some(_), Some(acked)) => self.check_durable(acked),
            (Some(_), None) => Err(self.unexpected("no reply to WAIT".to_owned())),
        }
    }

    /// Fewer acknowledgements than `durability` asks for is a retryable
    /// [`ErrorKind::NotDurable`] error. `WAIT` counts the replicas that acknowledged every
    /// write its connection made, so it is always sent on the connection that wrote (in one
    /// pipeline with the write), and the skip path rewrites the progress fields first.
    fn check_durable(&self, acked: u64) -> Result<()> {
        let Some(durability) = self.config.durability else {
            return Ok(());
        };
        if acked >= u64::from(durability.replicas) {
            return Ok(());
        }
        metrics::counter!("redstream_sink_not_durable_total", "sink" => self.label.clone())
            .increment(1);
        Err(Error::backend(
            ErrorKind::NotDurable,
            "WAIT",
            self.config.stream.clone(),
            format!(
                "{acked} of {} replicas acknowledged the batch within {:?}; it is on the primary \
                 but not durable",
                durability.replicas, durability.timeout
            ),
        ))
    }

    /// `HSET <progress key> last_event_id <id> position <position>`, for the skip path's
    /// rewrite (the batch script writes the same fields).
    fn progress_hset(&self, last_event_id: &str, position: Option<&SourcePosition>) -> Cmd {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&self.progress_key)
            .arg(LAST_EVENT_FIELD)
            .arg(last_event_id)
            .arg(POSITION_FIELD)
            .arg(script::position_arg(position));
        cmd
    }

    /// Reads the progress key (`HMGET` of its fields). Where it is missing, checks the name
    /// earlier versions gave it ([`refuse_previous_progress`](Self::refuse_previous_progress)).
    async fn read_progress(&self, state: &mut State) -> Result<Option<Progress>> {
        let fields = self.hmget(state, &self.progress_key).await?;
        let progress = progress_from(fields);
        if progress.is_none() {
            self.refuse_previous_progress(state).await?;
        }
        Ok(progress)
    }

    async fn hmget(&self, state: &mut State, key: &str) -> Result<ProgressFields> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(key).arg(LAST_EVENT_FIELD).arg(POSITION_FIELD);
        state
            .conn
            .call("HMGET", key, true, |mut conn| {
                let cmd = &cmd;
                async move { cmd.query_async(&mut conn).await }
            })
            .await
    }

    /// When the progress key does not exist, makes sure the sink's progress is not under the
    /// name earlier versions gave it (`<stream>:redstream-sink:<id>`, another Redis Cluster slot
    /// for an untagged stream): starting over would write every batch recorded there again.
    /// Fails with [`ErrorKind::NotFound`], naming both keys, when it is.
    ///
    /// Runs only where the progress is read (at start, after an unknown outcome) and found
    /// missing: a sink that has written a batch has its key, so this costs one round trip at a
    /// sink's first start, and none on the path of consecutive batches.
    async fn refuse_previous_progress(&self, state: &mut State) -> Result<()> {
        let Some(previous) = &self.previous_progress_key else {
            return Ok(());
        };
        let fields = match self.hmget(state, previous).await {
            Ok(fields) => fields,
            // A user whose ACL does not reach the old name cannot have written there with
            // it: a deployment set up after the rename need not allow that name.
            Err(err) if err.kind() == ErrorKind::PermissionDenied => {
                tracing::warn!(
                    sink = %self.config.id,
                    key = %previous,
                    error = %err,
                    "cannot check for progress under the previous key name (NOPERM); \
                     assuming there is none"
                );
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        let Some(found) = progress_from(fields) else {
            return Ok(());
        };
        Err(Error::not_found(
            format!("sink progress key {:?}", self.progress_key),
            format!(
                "sink {} has its progress on stream {:?} under {previous:?}, the name earlier \
                 redstream versions gave it (last event {}, source position {}). Nothing was \
                 written: starting over would write every batch recorded there again. Stop \
                 the sinks with this id and run `redstream migrate`, which renames {previous:?} \
                 to {:?}, then start the sink again; to start over on purpose, delete it \
                 instead (redis-cli DEL {previous:?})",
                self.config.id,
                self.config.stream,
                found.last_event_id,
                found
                    .position
                    .as_ref()
                    .map_or("none", SourcePosition::as_str),
                self.progress_key,
            ),
        ))
    }

    fn record_success(&self, ack: &BatchAck, started: Instant) {
        let sink = &self.label;
        if ack.written > 0 {
            self.counters.batches.fetch_add(1, Ordering::Relaxed);
            self.counters
                .events
                .fetch_add(ack.written as u64, Ordering::Relaxed);
            metrics::counter!("redstream_sink_batch_total", "sink" => sink.clone()).increment(1);
            metrics::counter!("redstream_sink_events_total", "sink" => sink.clone())
                .increment(ack.written as u64);
        }
        metrics::histogram!("redstream_sink_latency_seconds", "sink" => sink.clone())
            .record(started.elapsed().as_secs_f64());
    }
}

/// `duration` to the millisecond, for logs people read.
fn to_millis(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// The `last_event_id` and `position` fields of a progress key, as `HMGET` answers them.
type ProgressFields = (Option<String>, Option<String>);

/// The progress a key's fields record; `None` without a `last_event_id` (no key).
fn progress_from((last, position): ProgressFields) -> Option<Progress> {
    last.map(|last_event_id| Progress {
        position: position.filter(|p| !p.is_empty()).map(SourcePosition::new),
        last_event_id,
    })
}

/// What one batch script did, short of failing.
#[derive(Debug)]
enum Written {
    /// The batch is in the stream (written now, or found written and skipped).
    Acked(BatchAck),
    /// The progress key held something other than what the sink expected, and nothing of the
    /// batch was written; the sink now knows what it holds.
    Changed,
}

/// How many batch scripts in a row of one attempt may find the progress key changed. Once is
/// an older attempt of a batch landing after the sink's read, or a server that lost the key;
/// more means something else keeps writing the key.
const CHANGE_TRIES: u32 = 3;

impl BatchSink for RedisSink {
    fn send_batch(
        &self,
        events: Vec<Event>,
        position: Option<SourcePosition>,
    ) -> impl Future<Output = Result<BatchAck>> + Send {
        let span = self.batch_span(events.len());
        async move { self.send(events, position).await }.instrument(span)
    }
}
