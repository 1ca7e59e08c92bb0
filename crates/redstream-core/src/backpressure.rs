//! A bounded async queue with a choice of what happens when it is full.
//!
//! [`BackpressureQueue`] sits between a producer (for example a Redis consumer reading a
//! stream) and the code that processes its items. When the queue is full, its
//! [`BackpressureStrategy`] decides:
//!
//! - [`Block`](BackpressureStrategy::Block): [`push`](BackpressureQueue::push) waits for room;
//! - [`DropOldest`](BackpressureStrategy::DropOldest): the oldest queued item is evicted and
//!   handed back to the caller, so it can, for instance, leave that stream entry pending;
//! - [`DropNewest`](BackpressureStrategy::DropNewest): the incoming item is handed back;
//! - [`Reject`](BackpressureStrategy::Reject): the push fails with [`Error::QueueFull`].
//!
//! [`try_push_all`](BackpressureQueue::try_push_all) queues a batch whole or not at all,
//! without waiting or dropping, under one lock: the caller decides what to do with a batch
//! that does not fit.
//!
//! The queue never holds more than `max_queue_size` items. When it fills past
//! `warning_threshold`, a warning is logged once; the next warning needs the fill to drop below
//! the threshold first.
//!
//! ```
//! use redstream_core::{BackpressureConfig, BackpressureQueue, BackpressureStrategy, PushOutcome};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> redstream_core::Result<()> {
//! let queue = BackpressureQueue::new(BackpressureConfig {
//!     max_queue_size: 2,
//!     strategy: BackpressureStrategy::DropOldest,
//!     warning_threshold: 0.8,
//! })?;
//! queue.push("a").await?;
//! queue.push("b").await?;
//! assert_eq!(queue.push("c").await?, PushOutcome::DroppedOldest("a"));
//! assert_eq!(queue.pop().await, Some("b"));
//! assert_eq!(queue.stats().dropped_events, 1);
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::error::{Error, Result};

/// What a full [`BackpressureQueue`] does with a new item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackpressureStrategy {
    /// Wait until there is room (`try_push` fails with [`Error::QueueFull`] instead).
    #[default]
    Block,
    /// Evict the oldest queued item, hand it back, and queue the new one.
    DropOldest,
    /// Hand the incoming item back without queueing it.
    DropNewest,
    /// Fail with [`Error::QueueFull`].
    Reject,
}

/// The settings of a [`BackpressureQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackpressureConfig {
    /// The most items the queue holds. At least 1.
    pub max_queue_size: usize,
    /// What happens when the queue is full.
    pub strategy: BackpressureStrategy,
    /// The fill ratio, in `(0, 1]`, at which a warning is logged.
    pub warning_threshold: f64,
}

impl Default for BackpressureConfig {
    /// 1000 items, [`Block`](BackpressureStrategy::Block), warning at 80 %.
    fn default() -> Self {
        Self {
            max_queue_size: 1000,
            strategy: BackpressureStrategy::Block,
            warning_threshold: 0.8,
        }
    }
}

impl BackpressureConfig {
    /// Sets [`max_queue_size`](Self::max_queue_size).
    #[must_use]
    pub fn with_max_queue_size(mut self, size: usize) -> Self {
        self.max_queue_size = size;
        self
    }

    /// Sets [`strategy`](Self::strategy).
    #[must_use]
    pub fn with_strategy(mut self, strategy: BackpressureStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets [`warning_threshold`](Self::warning_threshold).
    #[must_use]
    pub fn with_warning_threshold(mut self, threshold: f64) -> Self {
        self.warning_threshold = threshold;
        self
    }

    /// Checks every field, naming the first invalid one in the error.
    pub fn validate(&self) -> Result<()> {
        if self.max_queue_size == 0 {
            return Err(Error::invalid_input(
                "config field backpressure.max_queue_size",
                "must be at least 1",
            ));
        }
        // Written so that NaN fails too.
        if !(self.warning_threshold > 0.0 && self.warning_threshold <= 1.0) {
            return Err(Error::invalid_input(
                "config field backpressure.warning_threshold",
                format!(
                    "must be a fill ratio in (0, 1], e.g. 0.8, got {}",
                    self.warning_threshold
                ),
            ));
        }
        Ok(())
    }
}

/// A snapshot of a [`BackpressureQueue`]'s counters, taken atomically.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct BackpressureStats {
    /// Items in the queue.
    pub current_queue_size: usize,
    /// The queue's capacity.
    pub max_queue_size: usize,
    /// Items handed back by [`DropOldest`](BackpressureStrategy::DropOldest) (evicted) or
    /// [`DropNewest`](BackpressureStrategy::DropNewest) (not queued).
    pub dropped_events: u64,
    /// Pushes refused with [`Error::QueueFull`].
    pub rejected_events: u64,
    /// Items accepted into the queue (including those later evicted).
    pub total_pushed: u64,
    /// Items taken out by `pop` or `try_pop`.
    pub total_popped: u64,
    /// The queue's strategy.
    pub strategy: BackpressureStrategy,
    /// The fill ratio at which a warning is logged.
    pub warning_threshold: f64,
    /// How many times the fill ratio rose to the warning threshold (one warning each).
    pub warnings_emitted: u64,
}

impl BackpressureStats {
    /// How full the queue is, from 0.0 (empty) to 1.0 (full); 0.0 when the capacity is 0.
    #[must_use]
    pub fn fill_ratio(&self) -> f64 {
        if self.max_queue_size == 0 {
            0.0
        } else {
            self.current_queue_size as f64 / self.max_queue_size as f64
        }
    }
}

/// What became of a pushed item.
///
/// With [`DropOldest`](BackpressureStrategy::DropOldest) and
/// [`DropNewest`](BackpressureStrategy::DropNewest), the item that did not stay in the queue is
/// handed back here: ignoring the outcome drops it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome<T> {
    /// The item was queued.
    Queued,
    /// The item was queued after evicting this one, the oldest.
    DroppedOldest(T),
    /// The queue was full: the pushed item was not queued and is handed back.
    DroppedNewest(T),
}

impl<T> PushOutcome<T> {
    /// Whether the pushed item was queued (possibly evicting another).
    #[must_use]
    pub fn is_queued(&self) -> bool {
        !matches!(self, Self::DroppedNewest(_))
    }

    /// The item that did not make it into the queue or was evicted from it, if any.
    #[must_use]
    pub fn into_dropped(self) -> Option<T> {
        match self {
            Self::Queued => None,
            Self::DroppedOldest(item) | Self::DroppedNewest(item) => Some(item),
        }
    }
}

/// A bounded multi-producer, multi-consumer async queue applying a [`BackpressureStrategy`].
///
/// Cloning gives another handle to the same queue. The internal lock is short and never held
/// across an `.await`.
pub struct BackpressureQueue<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    config: BackpressureConfig,
    state: Mutex<State<T>>,
    /// Signalled once per queued item while a pop waits, and to everyone on close.
    item_available: Notify,
    /// Signalled once per freed slot while a push waits, and to everyone on close.
    space_available: Notify,
}

/// Everything behind the lock. The counters live here too, so that a stats snapshot is
/// consistent: the lock is taken on every push and pop anyway.
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
    /// Whether the fill is at or above the warning threshold and the warning was logged.
    warned: bool,
    dropped: u64,
    rejected: u64,
    pushed: u64,
    popped: u64,
    warnings: u64,
    /// Pops waiting for an item, and pushes waiting for room (counted under this lock when
    /// their last look found none, until their wait ends): a push or pop signals only when
    /// someone waits. Signalling a `Notify` nobody waits on still writes its state, a cache
    /// line every thread that pushes or pops would otherwise share for each item.
    pop_waiters: usize,
    push_waiters: usize,
}

/// Which of [`State`]'s waiter counts a [`Waiting`] holds a place in.
#[derive(Clone, Copy)]
enum Waits {
    Pop,
    Push,
}

/// A place in a waiter count, given back when the wait ends or is dropped.
struct Waiting<'a, T> {
    shared: &'a Shared<T>,
    waits: Waits,
}

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let count = match self.waits {
            Waits::Pop => &mut state.pop_waiters,
            Waits::Push => &mut state.push_waiters,
        };
        *count = count.saturating_sub(1);
    }
}

/// The result of one non-waiting push attempt.
enum Attempt<T> {
    Done(Result<PushOutcome<T>>),
    /// Full, and the strategy is `Block`: the item is handed back.
    Full(T),
}

/// The result of one non-waiting pop attempt.
enum Popped<T> {
    Item(T),
    Empty,
    Closed,
}

const CLOSED: Error = Error::Closed {
    what: "backpressure queue",
};

impl<T> BackpressureQueue<T> {
    /// An empty queue, once `config` is [valid](BackpressureConfig::validate).
    pub fn new(config: BackpressureConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State {
                    // Grows up to the capacity; no need to reserve a huge one up front.
                    items: VecDeque::with_capacity(config.max_queue_size.min(1024)),
                    closed: false,
                    warned: false,
                    dropped: 0,
                    rejected: 0,
                    pushed: 0,
                    popped: 0,
                    warnings: 0,
                    pop_waiters: 0,
                    push_waiters: 0,
                }),
                item_available: Notify::new(),
                space_available: Notify::new(),
            }),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &BackpressureConfig {
        &self.shared.config
    }

    /// Pushes `item`, applying the strategy when the queue is full.
    ///
    /// With [`Block`](BackpressureStrategy::Block) this waits for room. It is cancel-safe: if
    /// the future is dropped while waiting, the item is dropped with it and never queued, and
    /// a wake-up meant for it passes on to another waiting pusher.
    ///
    /// # Errors
    ///
    /// [`Error::QueueFull`] when full with [`Reject`](BackpressureStrategy::Reject);
    /// [`Error::Closed`] once the queue is closed, also while waiting. The item is dropped.
    pub async fn push(&self, item: T) -> Result<PushOutcome<T>> {
        let mut item = match self.shared.push_now(item, None) {
            Attempt::Done(result) => return result,
            Attempt::Full(item) => item,
        };
        loop {
            // Register for a wake-up before looking again, so a pop in between is not missed;
            // counted as waiting in that look's lock, so that pops from then on signal.
            let mut space = pin!(self.shared.space_available.notified());
            space.as_mut().enable();
            let mut waiting = None;
            item = match self.shared.push_now(item, Some(&mut waiting)) {
                Attempt::Done(result) => return result,
                Attempt::Full(item) => item,
            };
            space.await;
            drop(waiting);
        }
    }

    /// Pushes `item` without waiting: like [`push`](Self::push), except that a full queue with
    /// the [`Block`](BackpressureStrategy::Block) strategy fails with [`Error::QueueFull`]
    /// (counted as rejected) instead of waiting.
    pub fn try_push(&self, item: T) -> Result<PushOutcome<T>> {
        match self.shared.push_now(item, None) {
            Attempt::Done(result) => result,
            Attempt::Full(_item) => {
                let capacity = self.shared.config.max_queue_size;
                self.shared.lock().rejected += 1;
                Err(Error::QueueFull { capacity })
            }
        }
    }

    /// Pushes every one of `items`, in order, if the queue has room for all of them now;
    /// otherwise (not enough room, or closed) pushes none and hands them all back. It never
    /// waits and never drops, whatever the strategy: the caller decides what to do with items
    /// that did not fit (push them one at a time with [`push`](Self::push), say). One lock
    /// for the batch instead of one per item; nothing is counted as rejected or dropped.
    ///
    /// # Errors
    ///
    /// The items, unqueued, when they do not all fit or the queue is closed.
    pub fn try_push_all(&self, items: Vec<T>) -> std::result::Result<(), Vec<T>> {
        let mut state = self.shared.lock();
        let free = self
            .shared
            .config
            .max_queue_size
            .saturating_sub(state.items.len());
        if state.closed || items.len() > free {
            return Err(items);
        }
        let n = items.len();
        state.items.extend(items);
        self.shared.queued(state, n);
        Ok(())
    }

    /// Takes the oldest item, waiting for one if the queue is empty.
    ///
    /// Returns `None` once the queue is closed and empty: items queued before
    /// [`close`](Self::close) are still delivered. Cancel-safe: dropping the future loses no
    /// item.
    pub async fn pop(&self) -> Option<T> {
        loop {
            match self.shared.pop_now(None) {
                Popped::Item(item) => return Some(item),
                Popped::Closed => return None,
                Popped::Empty => {}
            }
            // Register for a wake-up before looking again, so a push in between is not missed;
            // counted as waiting in that look's lock, so that pushes from then on signal.
            let mut available = pin!(self.shared.item_available.notified());
            available.as_mut().enable();
            let mut waiting = None;
            match self.shared.pop_now(Some(&mut waiting)) {
                Popped::Item(item) => return Some(item),
                Popped::Closed => return None,
                Popped::Empty => {}
            }
            available.await;
            drop(waiting);
        }
    }

    /// Takes the oldest item if there is one, without waiting.
    pub fn try_pop(&self) -> Option<T> {
        match self.shared.pop_now(None) {
            Popped::Item(item) => Some(item),
            Popped::Empty | Popped::Closed => None,
        }
    }

    /// The number of queued items.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shared.lock().items.len()
    }

    /// Whether the queue holds no item.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most items the queue holds.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.shared.config.max_queue_size
    }

    /// Closes the queue: later pushes, and pushes waiting for room, fail with
    /// [`Error::Closed`]; pops return the remaining items, then `None`. Closing twice is
    /// harmless.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.item_available.notify_waiters();
        self.shared.space_available.notify_waiters();
    }

    /// Whether [`close`](Self::close) was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// A consistent snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> BackpressureStats {
        let config = &self.shared.config;
        let state = self.shared.lock();
        BackpressureStats {
            current_queue_size: state.items.len(),
            max_queue_size: config.max_queue_size,
            dropped_events: state.dropped,
            rejected_events: state.rejected,
            total_pushed: state.pushed,
            total_popped: state.popped,
            strategy: config.strategy,
            warning_threshold: config.warning_threshold,
            warnings_emitted: state.warnings,
        }
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // No user code runs under the lock, so a poisoned lock still holds consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn at_or_above_threshold(&self, len: usize) -> bool {
        len as f64 / self.config.max_queue_size as f64 >= self.config.warning_threshold
    }

    /// One push attempt that never waits. With `waiting`, a push that finds the queue full
    /// (`Block`) is counted as waiting for room, its place held in `waiting`.
    fn push_now<'a>(&'a self, item: T, waiting: Option<&mut Option<Waiting<'a, T>>>) -> Attempt<T> {
        let capacity = self.config.max_queue_size;
        let mut state = self.lock();
        if state.closed {
            return Attempt::Done(Err(CLOSED));
        }
        if state.items.len() < capacity {
            state.items.push_back(item);
            self.queued(state, 1);
            return Attempt::Done(Ok(PushOutcome::Queued));
        }
        match self.config.strategy {
            BackpressureStrategy::Block => {
                if let Some(waiting) = waiting {
                    state.push_waiters += 1;
                    *waiting = Some(Waiting {
                        shared: self,
                        waits: Waits::Push,
                    });
                }
                Attempt::Full(item)
            }
            BackpressureStrategy::DropOldest => {
                let evicted = state.items.pop_front();
                state.items.push_back(item);
                state.pushed += 1;
                state.dropped += 1;
                Attempt::Done(Ok(match evicted {
                    Some(evicted) => PushOutcome::DroppedOldest(evicted),
                    // Unreachable: a full queue of capacity >= 1 is not empty.
                    None => PushOutcome::Queued,
                }))
            }
            BackpressureStrategy::DropNewest => {
                state.dropped += 1;
                Attempt::Done(Ok(PushOutcome::DroppedNewest(item)))
            }
            BackpressureStrategy::Reject => {
                state.rejected += 1;
                Attempt::Done(Err(Error::QueueFull { capacity }))
            }
        }
    }

    /// Counts `n` items just queued, releases the lock, wakes up to `n` waiting takers and
    /// warns if the fill crossed the threshold.
    fn queued(&self, mut state: MutexGuard<'_, State<T>>, n: usize) {
        state.pushed += n as u64;
        let wake = n.min(state.pop_waiters);
        let len = state.items.len();
        let warn = !state.warned && self.at_or_above_threshold(len);
        if warn {
            state.warned = true;
            state.warnings += 1;
        }
        drop(state);
        for _ in 0..wake {
            self.item_available.notify_one();
        }
        if warn {
            tracing::warn!(
                queue_size = len,
                capacity = self.config.max_queue_size,
                warning_threshold = self.config.warning_threshold,
                strategy = ?self.config.strategy,
                "backpressure queue is filling up"
            );
        }
    }

    /// One pop attempt that never waits. With `waiting`, a pop that finds the queue empty
    /// (and open) is counted as waiting for an item, its place held in `waiting`.
    fn pop_now<'a>(&'a self, waiting: Option<&mut Option<Waiting<'a, T>>>) -> Popped<T> {
        let mut state = self.lock();
        match state.items.pop_front() {
            Some(item) => {
                state.popped += 1;
                if state.warned && !self.at_or_above_threshold(state.items.len()) {
                    // Back below the threshold: the next rise warns again.
                    state.warned = false;
                }
                let wake = state.push_waiters > 0;
                drop(state);
                if wake {
                    self.space_available.notify_one();
                }
                Popped::Item(item)
            }
            None if state.closed => Popped::Closed,
            None => {
                if let Some(waiting) = waiting {
                    state.pop_waiters += 1;
                    *waiting = Some(Waiting {
                        shared: self,
                        waits: Waits::Pop,
                    });
                }
                Popped::Empty
            }
        }
    }
}

impl<T> Clone for BackpressureQueue<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> fmt::Debug for BackpressureQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("BackpressureQueue")
            .field("len", &state.items.len())
            .field("capacity", &self.shared.config.max_queue_size)
            .field("strategy", &self.shared.config.strategy)
            .field("closed", &state.closed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
