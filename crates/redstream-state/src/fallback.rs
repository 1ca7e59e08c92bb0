//! The opt-in fallback while Redis is unavailable: stale reads from a bounded local cache, and
//! writes buffered in a bounded queue and replayed in order.
//!
//! What a caller sees, by [`FallbackMode`]:
//!
//! | | Redis answers | Redis unavailable (retryable error, or breaker open) |
//! |---|---|---|
//! | `Off` (default) | every call goes to Redis | every call fails fast with the retryable error |
//! | `StaleReads`: `get`, `get_with_meta` | from Redis, remembered in the cache | from the cache, `stale: true`; a key the cache does not know is the error, never `None` |
//! | `StaleReads`: writes | to Redis | fail fast |
//! | `StaleReadsBufferedWrites`: `put`, `put_with_ttl`, `put_many`, `delete` | to Redis, unless earlier writes are still buffered: then buffered behind them | buffered; `Ok` means "queued", not "stored" |
//! | `StaleReadsBufferedWrites`: other writes | to Redis, unless writes are buffered: then they fail with a retryable error rather than overtake them | fail fast |
//! | every other read | from Redis | fails fast |
//!
//! While a key has buffered writes, `get` answers with the newest of them, `stale: true`
//! (read-your-writes in this process); other processes do not see them until they are
//! replayed. A background task replays the buffer in order as soon as Redis answers again,
//! retrying every [`replay_interval`](crate::FallbackConfig::replay_interval). A buffered
//! TTL keeps counting while the write waits: a write whose TTL has run out by the time it is
//! replayed is replayed as a delete. A write whose reply timed out may have been applied
//! before it was buffered and is then applied twice; puts and deletes are idempotent, so the
//! final value is the same.
//!
//! No write is lost silently. A write the full buffer refuses fails with
//! [`ErrorKind::QueueFull`]; one it drops
//! (`DropOldest`), one Redis refuses for good when it is replayed (a permission error, say),
//! and those still buffered when the store is dropped are counted in [`FallbackStats`] and
//! logged as errors with their keys. [`StateStore::flush`](crate::StateStore::flush) waits
//! until the buffer is empty.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redstream_core::{BackpressureQueue, Error, ErrorKind, PushOutcome, Result};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, Items};
use crate::config::{FallbackConfig, FallbackMode};
use crate::transaction::TxOp;

/// The fallback's counters, from [`StateStore::fallback_stats`](crate::StateStore::fallback_stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FallbackStats {
    /// The configured mode.
    pub mode: FallbackMode,
    /// Writes accepted into the buffer while Redis was unavailable (or behind such writes).
    pub buffered: u64,
    /// Buffered writes applied to Redis.
    pub replayed: u64,
    /// Buffered writes dropped by a full buffer (`DropOldest` evicts the oldest, `DropNewest`
    /// refuses the newest with an error), or still buffered when the store was dropped.
    pub dropped: u64,
    /// Buffered writes Redis refused for good when they were replayed (e.g. `NOPERM`).
    pub failed: u64,
    /// Writes buffered now, not yet replayed: those queued, and the one being replayed.
    pub pending: usize,
    /// Writes waiting in the queue, behind the one being replayed. At most the write
    /// buffer's `max_queue_size`: the write the replay task holds while it retries does not
    /// count against it.
    pub queued: usize,
    /// Reads answered from the local cache, marked stale.
    pub stale_reads: u64,
    /// Values in the local cache.
    pub cached: usize,
}

/// A write that may be buffered, with its value encoded and its TTL as a deadline.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    Put {
        key: String,
        value: Vec<u8>,
        deadline: Option<Instant>,
    },
    PutMany {
        items: Items,
        deadline: Option<Instant>,
    },
    Delete {
        key: String,
    },
}

impl Write {
    pub(crate) fn put(key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Self {
        Self::Put {
            key: key.to_owned(),
            value,
            deadline: ttl.map(|ttl| Instant::now() + ttl),
        }
    }

    pub(crate) fn put_many(items: Items, ttl: Option<Duration>) -> Self {
        Self::PutMany {
            items,
            deadline: ttl.map(|ttl| Instant::now() + ttl),
        }
    }

    /// Every key the write touches, with the value it leaves there.
    fn effects(&self) -> Vec<Effect<'_>> {
        match self {
            Self::Put {
                key,
                value,
                deadline,
            } => vec![Effect {
                key,
                value: Some(value),
                expires_at: *deadline,
            }],
            Self::PutMany { items, deadline } => items
                .iter()
                .map(|(key, value)| Effect {
                    key,
                    value: Some(value),
                    expires_at: *deadline,
                })
                .collect(),
            Self::Delete { key } => vec![Effect {
                key,
                value: None,
                expires_at: None,
            }],
        }
    }

    fn first_key(&self) -> &str {
        match self {
            Self::Put { key, .. } | Self::Delete { key } => key,
            Self::PutMany { items, .. } => items.first_key().unwrap_or(""),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Put { key, .. } => format!("put of key {key:?}"),
            Self::Delete { key } => format!("delete of key {key:?}"),
            Self::PutMany { items, .. } => format!(
                "put_many of {} keys starting with {:?}",
                items.len(),
                self.first_key()
            ),
        }
    }

    /// Sends the write to `backend` (Redis behind its breaker). The TTL is what is left of it
    /// now; a put whose TTL has run out is sent as a delete.
    pub(crate) async fn apply<B: Backend>(&self, backend: &B) -> Result<()> {
        let now = Instant::now();
        let left = |deadline: Option<Instant>| deadline.map(|d| d.saturating_duration_since(now));
        match self {
            Self::Put {
                key,
                value,
                deadline,
            } => match left(*deadline) {
                Some(ttl) if ttl < Duration::from_millis(1) => backend.delete(key).await,
                ttl => backend.set(key, value.clone(), ttl).await,
            },
            Self::PutMany { items, deadline } => match left(*deadline) {
                Some(ttl) if ttl < Duration::from_millis(1) => {
                    let deletes: Vec<TxOp> = items
                        .keys()
                        .map(|key| TxOp::Delete {
                            key: key.to_owned(),
                        })
                        .collect();
                    backend.transaction(&deletes, None).await.map(drop)
                }
                ttl => backend.set_many(items.clone(), ttl).await,
            },
            Self::Delete { key } => backend.delete(key).await,
        }
    }
}

/// What a write leaves under one key.
struct Effect<'a> {
    key: &'a str,
    value: Option<&'a [u8]>,
    expires_at: Option<Instant>,
}

/// A write in the buffer, numbered so its overlay entries can be found again.
#[derive(Debug)]
struct Buffered {
    seq: u64,
    write: Write,
}

/// A value this process knows, and until when it is valid.
#[derive(Debug, Clone)]
struct Known {
    value: Option<Vec<u8>>,
    expires_at: Option<Instant>,
}

impl Known {
    /// The value, or `None` once expired: an expired key is never returned.
    fn current(&self) -> Option<Vec<u8>> {
        match self.expires_at {
            Some(at) if at <= Instant::now() => None,
            _ => self.value.clone(),
        }
    }
}

/// The bounded cache of values last read from or written to Redis; the oldest entry is
/// forgotten first.
#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<String, (Known, u64)>,
    order: VecDeque<(String, u64)>,
    next: u64,
}

impl Cache {
    fn insert(&mut self, key: &str, known: Known, capacity: usize) {
        self.next += 1;
        let stamp = self.next;
        self.entries.insert(key.to_owned(), (known, stamp));
        self.order.push_back((key.to_owned(), stamp));
        while self.entries.len() > capacity {
            let Some((old, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&old).is_some_and(|(_, s)| *s == stamp) {
                self.entries.remove(&old);
            }
        }
        // Entries rewritten many times leave outdated stamps behind: compact now and then.
        if self.order.len() > 2 * capacity.max(16) {
            let entries = &self.entries;
            self.order
                .retain(|(k, s)| entries.get(k).is_some_and(|(_, current)| current == s));
        }
    }

    fn get(&self, key: &str) -> Option<&Known> {
        self.entries.get(key).map(|(known, _)| known)
    }

    fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[derive(Debug, Default)]
struct State {
    cache: Cache,
    /// For each key with buffered writes, their effects in order: `(seq, value)`.
    overlay: HashMap<String, VecDeque<(u64, Known)>>,
    next_seq: u64,
}

struct Shared {
    config: FallbackConfig,
    state: Mutex<State>,
    queue: Option<BackpressureQueue<Buffered>>,
    /// The number of buffered writes not yet replayed or dropped.
    pending: watch::Sender<usize>,
    buffered: AtomicU64,
    replayed: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    stale_reads: AtomicU64,
}

/// The fallback of one store: shared by its clones, stopped when the last is dropped.
pub(crate) struct Fallback {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for Fallback {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Fallback {
    /// The fallback for `config`, with its replay task spawned when writes are buffered: it
    /// replays them to `backend` (Redis behind its breaker).
    pub(crate) fn start<B: Backend + 'static>(config: FallbackConfig, backend: B) -> Result<Self> {
        let queue = match config.mode {
            FallbackMode::StaleReadsBufferedWrites => {
                Some(BackpressureQueue::new(config.write_buffer)?)
            }
            _ => None,
        };
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State::default()),
            queue,
            pending: watch::Sender::new(0),
            buffered: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stale_reads: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        if shared.queue.is_some() {
            tokio::spawn(replay(Arc::clone(&shared), backend, stop.clone()));
        }
        Ok(Self { shared, stop })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    pub(crate) fn buffers_writes(&self) -> bool {
        self.shared.queue.is_some()
    }

    /// The number of buffered writes waiting.
    pub(crate) fn pending(&self) -> usize {
        *self.shared.pending.borrow()
    }

    /// The newest buffered value of `key`, when it has buffered writes.
    pub(crate) fn buffered_value(&self, key: &str) -> Option<Option<Vec<u8>>> {
        let state = self.lock();
        let (_, known) = state.overlay.get(key)?.back()?;
        self.shared.stale_reads.fetch_add(1, Ordering::Relaxed);
        Some(known.current())
    }

    /// Remembers what Redis answered for `key` (the value and its remaining TTL).
    pub(crate) fn remember_read(&self, key: &str, value: Option<&(Vec<u8>, Option<Duration>)>) {
        let known = Known {
            value: value.map(|(v, _)| v.clone()),
            expires_at: value.and_then(|(_, ttl)| ttl.map(|ttl| Instant::now() + ttl)),
        };
        let capacity = self.shared.config.cache_capacity;
        self.lock().cache.insert(key, known, capacity);
    }

    /// The cached value of `key` for a read while Redis is unavailable, marked stale; `None`
    /// when the cache does not know the key.
    pub(crate) fn stale_read(&self, key: &str) -> Option<Option<Vec<u8>>> {
        let value = self.lock().cache.get(key)?.current();
        self.shared.stale_reads.fetch_add(1, Ordering::Relaxed);
        Some(value)
    }

    /// Forgets what the cache knows of `keys`: after a write whose outcome is not known to
    /// this process (an increment, an update, a failed write).
    pub(crate) fn forget<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let mut state = self.lock();
        for key in keys {
            state.cache.remove(key);
        }
    }

    /// Fails when buffered writes are waiting: a write that cannot be buffered must not
    /// overtake them.
    pub(crate) fn check_no_pending(&self, operation: &'static str, target: &str) -> Result<()> {
        match self.pending() {
            0 => Ok(()),
            n => Err(Error::backend(
                ErrorKind::Unavailable,
                operation,
                target.to_owned(),
                format!(
                    "{n} buffered writes are waiting to be replayed and this write would \
                     overtake them; retry after StateStore::flush"
                ),
            )),
        }
    }

    /// A bufferable write: sent to `backend` (Redis behind its breaker), or buffered when
    /// Redis is unavailable or earlier writes are still buffered.
    pub(crate) async fn write<B: Backend>(&self, write: Write, backend: &B) -> Result<()> {
        if self.buffers_writes() && self.pending() > 0 {
            return self.buffer(write).await;
        }
        match write.apply(backend).await {
            Ok(()) => {
                self.shared.remember_write(&write);
                Ok(())
            }
            Err(err) if err.is_retryable() && self.buffers_writes() => {
                tracing::debug!(error = %err, write = %write.describe(), "Redis unavailable: buffering the write");
                self.buffer(write).await
            }
            Err(err) => {
                self.forget(write.effects().into_iter().map(|e| e.key));
                Err(err)
            }
        }
    }

    async fn buffer(&self, write: Write) -> Result<()> {
        let Some(queue) = &self.shared.queue else {
            return Err(Error::Closed {
                what: "write buffer",
            });
        };
        let seq = {
            let mut state = self.lock();
            state.next_seq += 1;
            let seq = state.next_seq;
            for effect in write.effects() {
                state
                    .overlay
                    .entry(effect.key.to_owned())
                    .or_default()
                    .push_back((
                        seq,
                        Known {
                            value: effect.value.map(<[u8]>::to_vec),
                            expires_at: effect.expires_at,
                        },
                    ));
            }
            seq
        };
        self.shared.pending.send_modify(|n| *n += 1);
        let keys: Vec<String> = write
            .effects()
            .into_iter()
            .map(|e| e.key.to_owned())
            .collect();
        let description = write.describe();
        match queue.push(Buffered { seq, write }).await {
            Ok(PushOutcome::Queued) => {
                self.shared.buffered.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(PushOutcome::DroppedOldest(old)) => {
                self.shared.buffered.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .drop_write(&old, "the write buffer is full (DropOldest)");
                Ok(())
            }
            Ok(PushOutcome::DroppedNewest(new)) => {
                self.shared
                    .drop_write(&new, "the write buffer is full (DropNewest)");
                Err(Error::QueueFull {
                    capacity: queue.capacity(),
                })
            }
            Err(err) => {
                // Refused (Reject) or closed: the write is not buffered; undo its overlay.
                self.shared.release(seq, keys.iter().map(String::as_str));
                tracing::debug!(error = %err, write = %description, "write refused by the buffer");
                Err(err)
            }
        }
    }

    /// Waits until every buffered write has been replayed or dropped.
    pub(crate) async fn flush(&self) {
        let mut pending = self.shared.pending.subscribe();
        let _ = pending.wait_for(|n| *n == 0).await;
    }

    pub(crate) fn stats(&self) -> FallbackStats {
        let shared = &*self.shared;
        FallbackStats {
            mode: shared.config.mode,
            buffered: shared.buffered.load(Ordering::Relaxed),
            replayed: shared.replayed.load(Ordering::Relaxed),
            dropped: shared.dropped.load(Ordering::Relaxed),
            failed: shared.failed.load(Ordering::Relaxed),
            pending: *shared.pending.borrow(),
            queued: shared.queue.as_ref().map_or(0, BackpressureQueue::len),
            stale_reads: shared.stale_reads.load(Ordering::Relaxed),
            cached: self.lock().cache.entries.len(),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under the lock; the state stays consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A write reached Redis: the cache learns its values.
    fn remember_write(&self, write: &Write) {
        let capacity = self.config.cache_capacity;
        let mut state = self.lock();
        for effect in write.effects() {
            state.cache.insert(
                effect.key,
                Known {
                    value: effect.value.map(<[u8]>::to_vec),
                    expires_at: effect.expires_at,
                },
                capacity,
            );
        }
    }

    /// Removes the overlay entries of buffered write `seq` and counts it as no longer pending.
    fn release<'a>(&self, seq: u64, keys: impl IntoIterator<Item = &'a str>) {
        {
            let mut state = self.lock();
            for key in keys {
                if let Some(entries) = state.overlay.get_mut(key) {
                    entries.retain(|(s, _)| *s != seq);
                    if entries.is_empty() {
                        state.overlay.remove(key);
                    }
                }
            }
        }
        self.pending.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// A buffered write that will never reach Redis: counted, logged, and forgotten by the
    /// cache (which may have learned its value).
    fn drop_write(&self, buffered: &Buffered, why: &str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            write = %buffered.write.describe(),
            reason = why,
            "a buffered write was dropped and will not reach Redis"
        );
        self.finish(buffered, false);
    }

    /// Ends the life of a buffered write: replayed (`applied`) or not.
    fn finish(&self, buffered: &Buffered, applied: bool) {
        let effects = buffered.write.effects();
        if applied {
            self.remember_write(&buffered.write);
        } else {
            let mut state = self.lock();
            for effect in &effects {
                state.cache.remove(effect.key);
            }
        }
        self.release(buffered.seq, effects.into_iter().map(|e| e.key));
    }
}

/// Replays buffered writes in order, each until it is applied or refused for good.
async fn replay<B: Backend>(shared: Arc<Shared>, backend: B, stop: CancellationToken) {
    let Some(queue) = shared.queue.clone() else {
        return;
    };
    let interval = shared.config.replay_interval;
    'writes: loop {
        let next = tokio::select! {
            next = queue.pop() => next,
            () = stop.cancelled() => break,
        };
        let Some(buffered) = next else { break };
        loop {
            match buffered.write.apply(&backend).await {
                Ok(()) => {
                    shared.replayed.fetch_add(1, Ordering::Relaxed);
                    shared.finish(&buffered, true);
                    continue 'writes;
                }
                Err(err) if err.is_retryable() => {
                    tracing::debug!(error = %err, write = %buffered.write.describe(), "replay failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(interval) => {}
                        () = stop.cancelled() => {
                            shared.drop_write(&buffered, "the store was dropped before Redis came back");
                            break 'writes;
                        }
                    }
                }
                Err(err) => {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        error = %err,
                        write = %buffered.write.describe(),
                        "Redis refused a buffered write when it was replayed; it is not applied"
                    );
                    shared.finish(&buffered, false);
                    continue 'writes;
                }
            }
        }
    }
    queue.close();
    while let Some(buffered) = queue.try_pop() {
        shared.drop_write(&buffered, "the store was dropped before Redis came back");
    }
}
