//! [`RedisSink`]: batches to a Redis stream, all-or-nothing, retried, without duplicates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, ServerError, Value};
use redstream_core::wire::{self, EVENT_FIELD};
use redstream_core::{
    BatchAck, BatchSink, CheckpointHook, Error, ErrorKind, Event, EventLimits, RedactedUrl, Result,
    SourcePosition,
};
use tokio::sync::Mutex;
use tracing::Instrument;

use crate::config::SinkConfig;
use crate::keys;

/// The hash fields of the progress key.
const POSITION_FIELD: &str = "position";
const LAST_EVENT_FIELD: &str = "last_event_id";

/// What the progress key says the sink last wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// The source position of the last batch written, if it carried one.
    pub position: Option<SourcePosition>,
    /// The id of the last event written.
    pub last_event_id: String,
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
    conn: Option<ConnectionManager>,
    /// `None`: unknown (at start, or after an ambiguous failure); read the key before writing.
    progress: Option<Option<Progress>>,
}

/// A batch sink that appends events to one Redis stream.
///
/// Each event becomes one entry whose field `event` holds the core wire-format JSON envelope
/// (see `redstream_core::wire`), so consumers read entries as the stream's other readers do.
/// A batch is one `MULTI`/`EXEC` holding its `XADD`s and an `HSET` of the sink's progress key
/// (source position and last event id): either all of it is applied or none of it.
///
/// When the sink does not know whether its last write ran (at start, after a timeout or a
/// dropped connection, and after a `send_batch` future was dropped mid-write) it reads the
/// progress key first, `WATCH`ing it, and skips a batch whose last event is already recorded
/// there; an `EXEC` that finds the key changed since applies nothing, and the key is read
/// again. See the crate documentation for the guarantee and its limits.
pub struct RedisSink {
    config: SinkConfig,
    client: Client,
    server: String,
    progress_key: String,
    /// The progress key's name in earlier versions, when it differs (an untagged stream).
    previous_progress_key: Option<String>,
    limits: EventLimits,
    state: Mutex<State>,
    counters: Counters,
}

impl std::fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSink")
            .field("config", &self.config)
            .field("progress_key", &self.progress_key)
            .finish_non_exhaustive()
    }
}

impl RedisSink {
    /// A sink for `config`, after validating it. Does not connect: the first batch does, and
    /// retries connecting like any other transient failure, so the sink can be created while
    /// Redis is still down.
    pub fn new(config: SinkConfig) -> Result<Self> {
        config.validate()?;
        let client = redstream_core::open_client(&config.uri, &config.tls)?;
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
            server: RedactedUrl(&config.uri).to_string(),
            previous_progress_key: keys::previous_progress_key(&config.stream, &config.id),
            progress_key,
            limits: EventLimits::default(),
            client,
            config,
            state: Mutex::new(State {
                conn: None,
                progress: None,
            }),
            counters: Counters::default(),
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
        // Read without WATCH, so it does not make the progress known: a batch sent while it is
        // unknown reads it again, watched, just before its EXEC (an older transaction of that
        // batch may still land in between).
        self.read_progress(&mut state).await
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
    /// may have stopped after the batch's `EXEC` and before its `WAIT` said it was durable.
    pub async fn confirm_recorded(&self) -> Result<()> {
        if self.config.durability.is_none() {
            return Ok(());
        }
        let confirm = async {
            let mut state = self.state.lock().await;
            let mut attempt: u32 = 1;
            loop {
                let err = match self.confirm_attempt(&mut state).await {
                    Ok(()) => return Ok(()),
                    Err(err) => err,
                };
                if !self.retry_after(&mut state, &mut attempt, &err).await {
                    return Err(err);
                }
            }
        };
        self.within_batch_timeout("confirming the recorded batch (batch_timeout)", confirm)
            .await
    }

    async fn confirm_attempt(&self, state: &mut State) -> Result<()> {
        // Like `recorded_progress`, an unwatched read leaves the progress as it was.
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
    /// all the same. An error from the hook itself is always returned.
    ///
    /// One failure calls the hook with `required = true` too: a batch whose entries are all in
    /// the stream but could not be recorded in the progress key (the key was replaced by
    /// another type while the sink ran; the error is [`ErrorKind::WrongType`] and says so).
    /// The entries are there and the progress key cannot tell a retry so, so the checkpoint
    /// moves past them before the error is returned: a source resuming from it does not write
    /// them again.
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
            Err(Failure {
                error,
                written_unrecorded: true,
            }) if self.config.required => {
                if let Some(position) = position {
                    tracing::warn!(
                        sink = %self.config.id,
                        stream = %self.config.stream,
                        position = %position.as_str(),
                        "batch written but not recorded: checkpointing past it so that it is \
                         not written again"
                    );
                    hook.commit(position).await?;
                }
                Err(error)
            }
            Err(Failure { error: err, .. }) if self.config.required => Err(err),
            Err(Failure { error: err, .. }) => {
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

    async fn send(
        &self,
        events: Vec<Event>,
        position: Option<SourcePosition>,
    ) -> Result<BatchAck, Failure> {
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
                return Err(err.into());
            }
        };
        let started = Instant::now();
        let retried = self.send_with_retries(&encoded, position.as_ref(), &last_event_id);
        // Dropping `retried` mid-EXEC is safe: the progress is marked unknown before every
        // EXEC, so the next batch reads the progress key first.
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
    async fn within_batch_timeout<T, E: From<Error>>(
        &self,
        what: &'static str,
        operation: impl Future<Output = std::result::Result<T, E>>,
    ) -> std::result::Result<T, E> {
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
                Err(err.into())
            }
        }
    }

    async fn send_with_retries(
        &self,
        encoded: &[String],
        position: Option<&SourcePosition>,
        last_event_id: &str,
    ) -> Result<BatchAck, Failure> {
        let mut state = self.state.lock().await;
        let mut attempt: u32 = 1;
        loop {
            let failure = match self
                .attempt(&mut state, encoded, position, last_event_id)
                .await
            {
                Ok(ack) => return Ok(ack),
                Err(failure) => failure,
            };
            if !self
                .retry_after(&mut state, &mut attempt, &failure.error)
                .await
            {
                return Err(failure);
            }
        }
    }

    /// After attempt `attempt` failed with `err`: records the error and, if the retry policy
    /// allows another attempt, waits its delay, counts the retry and returns `true`.
    async fn retry_after(&self, state: &mut State, attempt: &mut u32, err: &Error) -> bool {
        if matches!(err.kind(), ErrorKind::Timeout | ErrorKind::Connection) {
            // The EXEC may or may not have run: read the progress key before the next
            // attempt.
            state.progress = None;
        }
        self.record_error(err);
        if !self.config.retry.should_retry(*attempt, err) {
            return false;
        }
        let delay = self.config.retry.delay_for(*attempt);
        tracing::debug!(
            sink = %self.config.id,
            attempt = *attempt,
            ?delay,
            error = %err,
            "attempt failed, retrying"
        );
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("redstream_sink_retries_total", "sink" => self.config.id.clone())
            .increment(1);
        tokio::time::sleep(delay).await;
        *attempt = attempt.saturating_add(1);
        true
    }

    fn record_error(&self, err: &Error) {
        metrics::counter!(
            "redstream_sink_errors_total",
            "sink" => self.config.id.clone(),
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
    /// otherwise write it in one `MULTI`/`EXEC`. An `EXEC` that finds the watched progress key
    /// changed applied nothing: the progress is read again at once (no delay, no error counted)
    /// and the batch skipped or written, up to [`WATCH_TRIES`] times; then the attempt fails
    /// with a retryable error and the retry policy takes over.
    async fn attempt(
        &self,
        state: &mut State,
        encoded: &[String],
        position: Option<&SourcePosition>,
        last_event_id: &str,
    ) -> Result<BatchAck, Failure> {
        for tried in 1..=WATCH_TRIES {
            match self
                .try_write(state, encoded, position, last_event_id)
                .await?
            {
                Written::Acked(ack) => return Ok(ack),
                Written::WatchTripped => {
                    tracing::debug!(
                        sink = %self.config.id,
                        key = %self.progress_key,
                        tried,
                        "the progress key changed between its read and EXEC; nothing was \
                         applied, reading it again"
                    );
                    // `write` left the progress unknown: the next try reads (and watches) it.
                    state.progress = None;
                }
            }
        }
        Err(Error::backend(
            ErrorKind::Unavailable,
            "MULTI/EXEC of XADD batch",
            self.config.stream.clone(),
            format!(
                "the progress key {} changed between the sink's read of it and its EXEC \
                 {WATCH_TRIES} times in a row, so nothing of the batch was applied; something \
                 else is writing that key (another sink with the same id on this stream?)",
                self.progress_key
            ),
        )
        .into())
    }

    /// [`attempt`](Self::attempt)'s body, once. When the progress is unknown it is read with
    /// the key `WATCH`ed, so that the `EXEC` that follows applies nothing if an older
    /// transaction of the batch (queued on a connection that died, or sent by an earlier
    /// process) records it in between.
    async fn try_write(
        &self,
        state: &mut State,
        encoded: &[String],
        position: Option<&SourcePosition>,
        last_event_id: &str,
    ) -> Result<Written, Failure> {
        if !self.config.exactly_once {
            return self.write(state, encoded, position, None).await;
        }
        // Progress known (the hot path): no WATCH, the sink wrote the key itself.
        let (known, watching) = match &state.progress {
            Some(known) => (known.clone(), false),
            None => {
                let read = self.watch_progress(state).await?;
                state.progress = Some(read.clone());
                (read, true)
            }
        };
        if known
            .as_ref()
            .is_some_and(|p| p.last_event_id == last_event_id && p.position.as_ref() == position)
        {
            if watching {
                // No EXEC follows to clear the WATCH. A WATCH left behind (this failed) would
                // at worst make a later EXEC apply nothing and the progress be read again.
                self.unwatch(state).await?;
            }
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
            return Ok(Written::Acked(BatchAck::new(
                Vec::new(),
                encoded.len(),
                position.cloned(),
            )));
        }
        self.write(state, encoded, position, Some((known, last_event_id)))
            .await
    }

    /// With `durability` set, waits for replicas to have a batch found already written.
    ///
    /// `WAIT` vouches for the writes made on its own connection, and this one may have made
    /// none (the batch was written before a reconnect or a restart): `WAIT` would return at
    /// once. Rewriting the same progress fields, an idempotent write replicated after the
    /// batch, makes `WAIT` cover the batch.
    async fn confirm_written(
        &self,
        state: &mut State,
        position: Option<&SourcePosition>,
        last_event_id: &str,
    ) -> Result<()> {
        if self.config.durability.is_none() {
            return Ok(());
        }
        self.record_progress(state, position, last_event_id).await?;
        self.wait_for_replicas(state).await
    }

    /// Writes the batch in one `MULTI`/`EXEC`; with `progress` (exactly-once on: what the key
    /// held, and the batch's last event id) the `HSET` of the progress key goes in it too.
    /// Then waits for replicas if `durability` asks for it.
    ///
    /// `MULTI`, the commands and `EXEC` go as one plain pipeline, in one round trip, rather than
    /// through redis-rs's `atomic()`: that way every reply comes back. redis-rs's transaction
    /// parsing turns an `EXEC` refused by itself (`EXECABORT Transaction discarded because of:
    /// OOM ...`, when memory or the node's role changed after the commands were queued) into
    /// an "invalid response" without its code, and folds the errors raised while `EXEC` ran
    /// into one without saying which command failed; both matter here.
    async fn write(
        &self,
        state: &mut State,
        encoded: &[String],
        position: Option<&SourcePosition>,
        progress: Option<(Option<Progress>, &str)>,
    ) -> Result<Written, Failure> {
        let mut pipe = redis::pipe();
        // Keep server errors as values: `read_exec` sorts them out.
        pipe.ignore_errors();
        pipe.cmd("MULTI");
        for json in encoded {
            let cmd = pipe.cmd("XADD").arg(&self.config.stream);
            if let Some(max) = self.config.trim_length() {
                cmd.arg("MAXLEN").arg("~").arg(max);
            }
            cmd.arg("*").arg(EVENT_FIELD).arg(json);
        }
        if let Some((_, last_event_id)) = &progress {
            pipe.add_command(self.progress_hset(last_event_id, position));
        }
        pipe.cmd("EXEC");
        // Unknown until the reply is in: if this future is dropped while the EXEC is in
        // flight, the next batch reads the progress key instead of trusting memory. After an
        // error it stays unknown too (a timeout or a dropped connection, but also a reply of
        // an unexpected shape or a refusal), so the next attempt reads it with one HMGET;
        // the one exception is a WRONGTYPE on the stream, after which the key is put back.
        state.progress = None;
        let conn = self.connection(state).await?;
        let replies: Vec<Value> = pipe
            .query_async(conn)
            .await
            .map_err(|err| self.batch_error(err))?;
        let ids = match read_exec(replies, encoded.len(), progress.is_some()) {
            Ok(ids) => ids,
            // The progress key was WATCHed and changed before EXEC: nothing was applied, and
            // the progress stays unknown.
            Err(ExecFailure::WatchTripped) => return Ok(Written::WatchTripped),
            Err(ExecFailure::Discarded(err)) => return Err(self.batch_error(err).into()),
            Err(ExecFailure::MultiRefused(err)) => {
                let err = self.batch_error(err);
                return Err(Error::backend(
                    err.kind(),
                    "MULTI/EXEC of XADD batch",
                    self.config.stream.clone(),
                    format!(
                        "{err}: MULTI was refused, so the batch's commands ran outside a \
                         transaction and some may be in the stream; allow MULTI and EXEC to \
                         the sink's user, and check the stream before resending"
                    ),
                )
                .into());
            }
            Err(ExecFailure::Unexpected(what)) => {
                return Err(Error::backend(
                    ErrorKind::Unexpected,
                    "MULTI/EXEC of XADD batch",
                    self.config.stream.clone(),
                    what,
                )
                .into());
            }
            Err(ExecFailure::Ran {
                xadd_error,
                xadds_applied,
                hset_error,
            }) => {
                let written_unrecorded =
                    hset_error.is_some() && xadd_error.is_none() && xadds_applied == encoded.len();
                let error = self
                    .after_failed_exec(
                        state,
                        position,
                        progress,
                        xadd_error,
                        xadds_applied,
                        hset_error,
                    )
                    .await;
                return Err(Failure {
                    error,
                    written_unrecorded,
                });
            }
        };
        let Some((_, last_event_id)) = progress else {
            self.wait_for_replicas(state).await?;
            return Ok(Written::Acked(BatchAck::new(ids, 0, position.cloned())));
        };
        state.progress = Some(Some(Progress {
            position: position.cloned(),
            last_event_id: last_event_id.to_owned(),
        }));
        self.wait_for_replicas(state).await?;
        Ok(Written::Acked(BatchAck::new(ids, 0, position.cloned())))
    }

    /// The error of an `EXEC` that ran but in which commands failed (`WRONGTYPE` is raised
    /// there, not while queueing), after putting the progress key back when that is right.
    async fn after_failed_exec(
        &self,
        state: &mut State,
        position: Option<&SourcePosition>,
        progress: Option<(Option<Progress>, &str)>,
        xadd_error: Option<ServerError>,
        xadds_applied: usize,
        hset_error: Option<ServerError>,
    ) -> Error {
        if let Some(hset_error) = hset_error {
            // The progress key holds another type. The XADDs that did not fail are in the
            // stream, unrecorded: say so, so that nobody resends them. The next attempt reads
            // the key first, and that HMGET fails with WRONGTYPE before any XADD.
            let err = Error::from_redis(
                "HSET of the progress key",
                self.progress_key.clone(),
                hset_error.into(),
            );
            return Error::backend(
                err.kind(),
                "MULTI/EXEC of XADD batch",
                self.config.stream.clone(),
                format!(
                    "{err}: the progress key {} is not a hash. {xadds_applied} entries of this \
                     batch (source position {}) were written to the stream but could not be \
                     recorded; do not resend them. Remove or rename that key (it is the sink's \
                     own), then resume after this batch",
                    self.progress_key,
                    position.map_or("none", SourcePosition::as_str),
                ),
            );
        }
        let err = match xadd_error {
            Some(err) => Error::from_redis(
                "MULTI/EXEC of XADD batch",
                self.config.stream.clone(),
                err.into(),
            ),
            None => Error::backend(
                ErrorKind::Unexpected,
                "MULTI/EXEC of XADD batch",
                self.config.stream.clone(),
                "EXEC reported a failure without an error",
            ),
        };
        // The XADDs failed (the stream holds another type) but the HSET of the progress key
        // applied: put it back, so that the key never claims a batch that is not in the
        // stream. Then the sink knows the progress again.
        if let Some((known, _)) = progress
            && self.restore_progress(state, known.as_ref()).await
        {
            state.progress = Some(known);
        }
        if xadds_applied > 0 {
            return Error::backend(
                err.kind(),
                "MULTI/EXEC of XADD batch",
                self.config.stream.clone(),
                format!("{err} ({xadds_applied} entries of the batch were written all the same)"),
            );
        }
        err
    }

    /// With `durability` set, `WAIT replicas timeout` after a batch; fewer acknowledgements
    /// than asked for is a retryable [`ErrorKind::NotDurable`] error. `WAIT` counts the
    /// replicas that acknowledged every write this connection made, so after a reconnect it
    /// vouches only for writes made since: the skip path rewrites the progress fields first.
    async fn wait_for_replicas(&self, state: &mut State) -> Result<()> {
        let Some(durability) = self.config.durability else {
            return Ok(());
        };
        let conn = self.connection(state).await?;
        let timeout_ms = u64::try_from(durability.timeout.as_millis()).unwrap_or(u64::MAX);
        let acked: u64 = redis::cmd("WAIT")
            .arg(durability.replicas)
            .arg(timeout_ms.max(1))
            .query_async(conn)
            .await
            .map_err(|err| Error::from_redis("WAIT", self.config.stream.clone(), err))?;
        if acked < u64::from(durability.replicas) {
            metrics::counter!("redstream_sink_not_durable_total", "sink" => self.config.id.clone())
                .increment(1);
            return Err(Error::backend(
                ErrorKind::NotDurable,
                "WAIT",
                self.config.stream.clone(),
                format!(
                    "{acked} of {} replicas acknowledged the batch within {:?}; it is on the \
                     primary but not durable",
                    durability.replicas, durability.timeout
                ),
            ));
        }
        Ok(())
    }

    /// `HSET`s the progress fields on the sink's connection, outside any batch.
    async fn record_progress(
        &self,
        state: &mut State,
        position: Option<&SourcePosition>,
        last_event_id: &str,
    ) -> Result<()> {
        let conn = self.connection(state).await?;
        self.progress_hset(last_event_id, position)
            .query_async::<()>(conn)
            .await
            .map_err(|err| Error::from_redis("HSET", self.progress_key.clone(), err))
    }

    /// `HSET <progress key> last_event_id <id> position <position>`: the one place the
    /// progress record is written from.
    fn progress_hset(&self, last_event_id: &str, position: Option<&SourcePosition>) -> redis::Cmd {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&self.progress_key)
            .arg(LAST_EVENT_FIELD)
            .arg(last_event_id)
            .arg(POSITION_FIELD)
            .arg(position.map_or("", SourcePosition::as_str));
        cmd
    }

    /// Reads the progress key, unwatched: for callers that report it, not for deciding whether
    /// to write a batch (that is [`watch_progress`](Self::watch_progress)).
    async fn read_progress(&self, state: &mut State) -> Result<Option<Progress>> {
        self.query_progress(state, false).await
    }

    /// `WATCH`es the progress key and reads it, in one round trip: the batch's `EXEC` then
    /// applies nothing if the key changes in between.
    ///
    /// `WATCH` belongs to the connection. That is safe here: the sink's connection is used by
    /// nothing else, and the state lock is held from this read to the `EXEC`. If the
    /// connection manager reconnects in between, the `WATCH` is lost with the old connection
    /// and the `EXEC` is not guarded (see the crate documentation's limits).
    async fn watch_progress(&self, state: &mut State) -> Result<Option<Progress>> {
        self.query_progress(state, true).await
    }

    /// `HMGET` of the progress fields, after a `WATCH` of the key in the same round trip when
    /// `watch` is set.
    async fn query_progress(&self, state: &mut State, watch: bool) -> Result<Option<Progress>> {
        let mut pipe = redis::pipe();
        if watch {
            pipe.cmd("WATCH").arg(&self.progress_key).ignore();
        }
        pipe.cmd("HMGET")
            .arg(&self.progress_key)
            .arg(LAST_EVENT_FIELD)
            .arg(POSITION_FIELD);
        let operation = if watch { "WATCH and HMGET" } else { "HMGET" };
        let conn = self.connection(state).await?;
        let (fields,): (ProgressFields,) = pipe
            .query_async(conn)
            .await
            .map_err(|err| Error::from_redis(operation, self.progress_key.clone(), err))?;
        let progress = progress_from(fields);
        if progress.is_none() {
            self.refuse_previous_progress(state).await?;
        }
        Ok(progress)
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
        let conn = self.connection(state).await?;
        let read = redis::cmd("HMGET")
            .arg(previous)
            .arg(LAST_EVENT_FIELD)
            .arg(POSITION_FIELD)
            .query_async::<ProgressFields>(conn)
            .await
            .map_err(|err| Error::from_redis("HMGET", previous.clone(), err));
        let fields = match read {
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

    /// Drops the `WATCH` of [`watch_progress`](Self::watch_progress) when no `EXEC` follows.
    async fn unwatch(&self, state: &mut State) -> Result<()> {
        let conn = self.connection(state).await?;
        redis::cmd("UNWATCH")
            .query_async::<()>(conn)
            .await
            .map_err(|err| Error::from_redis("UNWATCH", self.progress_key.clone(), err))
    }

    async fn connection<'s>(&self, state: &'s mut State) -> Result<&'s mut ConnectionManager> {
        if state.conn.is_none() {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.config.connect_timeout))
                .set_response_timeout(Some(self.config.send_timeout))
                // One try per call: the sink's retry policy decides when to try again.
                .set_number_of_retries(0);
            let conn = ConnectionManager::new_with_config(self.client.clone(), config)
                .await
                .map_err(|err| Error::from_redis("connect", self.server.clone(), err))?;
            state.conn = Some(conn);
        }
        state
            .conn
            .as_mut()
            .ok_or_else(|| Error::backend(ErrorKind::Unexpected, "connect", "", "no connection"))
    }

    /// A failed `MULTI`/`EXEC`, classified by the core (which reads the codes of the commands
    /// inside an aborted transaction: `OOM`, `NOPERM`, `WRONGTYPE`...).
    fn batch_error(&self, err: RedisError) -> Error {
        Error::from_redis("MULTI/EXEC of XADD batch", self.config.stream.clone(), err)
    }

    /// Puts the progress key back to `previous` after an `EXEC` that ran but whose `XADD`s
    /// failed (`WRONGTYPE` on the stream is reported per command while the `HSET` still
    /// applies), so that the key never claims a batch that is not in the stream.
    /// Returns whether the key was restored.
    async fn restore_progress(&self, state: &mut State, previous: Option<&Progress>) -> bool {
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(&self.progress_key).ignore();
        if let Some(previous) = previous {
            pipe.add_command(
                self.progress_hset(&previous.last_event_id, previous.position.as_ref()),
            )
            .ignore();
        }
        let restored = match self.connection(state).await {
            Ok(conn) => pipe.query_async::<()>(conn).await.map_err(|err| {
                Error::from_redis("restore progress", self.progress_key.clone(), err)
            }),
            Err(err) => Err(err),
        };
        if let Err(err) = &restored {
            tracing::error!(
                sink = %self.config.id,
                key = %self.progress_key,
                error = %err,
                "could not restore the progress key after a failed batch"
            );
        }
        restored.is_ok()
    }

    fn record_success(&self, ack: &BatchAck, started: Instant) {
        let sink = self.config.id.clone();
        if ack.written > 0 {
            self.counters.batches.fetch_add(1, Ordering::Relaxed);
            self.counters
                .events
                .fetch_add(ack.written as u64, Ordering::Relaxed);
            metrics::counter!("redstream_sink_batch_total", "sink" => sink.clone()).increment(1);
            metrics::counter!("redstream_sink_events_total", "sink" => sink.clone())
                .increment(ack.written as u64);
        }
        metrics::histogram!("redstream_sink_latency_seconds", "sink" => sink)
            .record(started.elapsed().as_secs_f64());
    }
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

/// Why a batch was not acknowledged.
#[derive(Debug)]
struct Failure {
    error: Error,
    /// Every entry of the batch is in the stream, but the progress key could not record them
    /// (it holds another type): the batch must be checkpointed, not sent again.
    written_unrecorded: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self {
            error,
            written_unrecorded: false,
        }
    }
}

/// What one `MULTI`/`EXEC` of a batch did, short of failing.
#[derive(Debug)]
enum Written {
    /// The batch is in the stream (written now, or found written and skipped).
    Acked(BatchAck),
    /// `EXEC` answered nil: the watched progress key changed after it was read, and nothing of
    /// the batch was applied. Read the progress again before deciding.
    WatchTripped,
}

/// How many `EXEC`s in a row of one attempt may find the watched progress key changed.
/// Once is an older transaction of the batch landing after the read; more means something
/// else keeps writing the key.
const WATCH_TRIES: u32 = 3;

/// Why a batch's `MULTI`/`EXEC` did not write it.
#[derive(Debug)]
enum ExecFailure {
    /// `EXEC` answered nil: a `WATCH`ed key (the progress key) changed since it was watched,
    /// so the transaction was not run. Nothing was applied.
    WatchTripped,
    /// Nothing was applied: a command was refused while queued (`OOM`, `NOPERM`,
    /// `READONLY`...), or `EXEC` itself was (`EXECABORT ... because of: OOM`).
    Discarded(RedisError),
    /// `EXEC` ran, and some of its commands failed.
    Ran {
        /// The first error of an `XADD`.
        xadd_error: Option<ServerError>,
        /// How many `XADD`s applied.
        xadds_applied: usize,
        /// The error of the progress key's `HSET`.
        hset_error: Option<ServerError>,
    },
    /// `MULTI` itself was refused (an ACL without it): the commands after it ran one by one,
    /// outside any transaction, and some may have applied.
    MultiRefused(RedisError),
    /// Replies of another shape than `MULTI`/`EXEC`'s.
    Unexpected(String),
}

/// Reads the replies of `MULTI`, `xadds` `XADD`s, the progress `HSET` if `with_hset`, and
/// `EXEC`: the new entry ids, or what went wrong.
fn read_exec(
    mut replies: Vec<Value>,
    xadds: usize,
    with_hset: bool,
) -> std::result::Result<Vec<String>, ExecFailure> {
    let commands = xadds + usize::from(with_hset);
    if replies.len() != commands + 2 {
        return Err(ExecFailure::Unexpected(format!(
            "{} replies to MULTI, {commands} commands and EXEC",
            replies.len()
        )));
    }
    if let Some(Value::ServerError(err)) = replies.first() {
        return Err(ExecFailure::MultiRefused(err.clone().into()));
    }
    let exec = replies.pop().unwrap_or(Value::Nil);
    // Errors before EXEC are refusals while queueing; they name the cause more precisely than
    // EXEC's "EXECABORT Transaction discarded because of previous errors."
    let refused = replies.into_iter().find_map(|reply| match reply {
        Value::ServerError(err) => Some(err),
        _ => None,
    });
    let items = match exec {
        Value::Array(items) if refused.is_none() => items,
        Value::ServerError(err) => {
            return Err(ExecFailure::Discarded(refused.unwrap_or(err).into()));
        }
        Value::Nil if refused.is_none() => return Err(ExecFailure::WatchTripped),
        other => {
            return Err(match refused {
                Some(err) => ExecFailure::Discarded(err.into()),
                None => ExecFailure::Unexpected(format!("EXEC answered {other:?}")),
            });
        }
    };
    if items.len() != commands {
        return Err(ExecFailure::Unexpected(format!(
            "EXEC answered {} replies for {commands} commands",
            items.len()
        )));
    }
    let mut items = items.into_iter();
    let mut ids = Vec::with_capacity(xadds);
    let mut xadd_error = None;
    for item in items.by_ref().take(xadds) {
        match item {
            Value::ServerError(err) => {
                xadd_error.get_or_insert(err);
            }
            other => match redis::from_redis_value::<String>(other) {
                Ok(id) => ids.push(id),
                Err(err) => {
                    return Err(ExecFailure::Unexpected(format!(
                        "XADD answered something other than an entry id: {err}"
                    )));
                }
            },
        }
    }
    let hset_error = match items.next() {
        Some(Value::ServerError(err)) => Some(err),
        _ => None,
    };
    if xadd_error.is_some() || hset_error.is_some() {
        return Err(ExecFailure::Ran {
            xadd_error,
            xadds_applied: ids.len(),
            hset_error,
        });
    }
    Ok(ids)
}

impl BatchSink for RedisSink {
    fn send_batch(
        &self,
        events: Vec<Event>,
        position: Option<SourcePosition>,
    ) -> impl Future<Output = Result<BatchAck>> + Send {
        let span = self.batch_span(events.len());
        async move { self.send(events, position).await.map_err(|f| f.error) }.instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Value {
        Value::SimpleString(text.to_owned())
    }

    #[test]
    fn exec_answering_nil_is_a_tripped_watch() {
        let replies = vec![ok("OK"), ok("QUEUED"), ok("QUEUED"), Value::Nil];
        assert!(matches!(
            read_exec(replies, 1, true),
            Err(ExecFailure::WatchTripped)
        ));
    }

    #[test]
    fn exec_answering_entry_ids_is_a_write() {
        let replies = vec![
            ok("OK"),
            ok("QUEUED"),
            ok("QUEUED"),
            Value::Array(vec![Value::BulkString(b"1-0".to_vec()), Value::Int(2)]),
        ];
        assert_eq!(read_exec(replies, 1, true).unwrap(), vec!["1-0".to_owned()]);
    }
}
