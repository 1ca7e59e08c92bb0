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
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use proptest::prelude::*;
    use tokio::time::timeout;

    use super::*;
    use crate::ErrorKind;

    /// Only detects a hang; never used to order events.
    const HANG: Duration = Duration::from_secs(10);

    fn queue<T>(size: usize, strategy: BackpressureStrategy) -> BackpressureQueue<T> {
        BackpressureQueue::new(
            BackpressureConfig::default()
                .with_max_queue_size(size)
                .with_strategy(strategy),
        )
        .unwrap()
    }

    fn drain<T>(queue: &BackpressureQueue<T>) -> Vec<T> {
        std::iter::from_fn(|| queue.try_pop()).collect()
    }

    /// Lets spawned tasks on a current-thread runtime run until they block.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn config_defaults_seed_literal_validation_and_serde() {
        let config = BackpressureConfig::default();
        assert_eq!(config.max_queue_size, 1000);
        assert_eq!(config.strategy, BackpressureStrategy::Block);
        assert_eq!(config.warning_threshold, 0.8);
        config.validate().unwrap();
        BackpressureConfig {
            max_queue_size: 1000,
            strategy: BackpressureStrategy::DropOldest,
            warning_threshold: 0.8,
        }
        .validate()
        .unwrap();
        config.with_warning_threshold(1.0).validate().unwrap();

        let bad = [
            (config.with_max_queue_size(0), "backpressure.max_queue_size"),
            (
                config.with_warning_threshold(0.0),
                "backpressure.warning_threshold",
            ),
            (
                config.with_warning_threshold(1.5),
                "backpressure.warning_threshold",
            ),
            (
                config.with_warning_threshold(f64::NAN),
                "backpressure.warning_threshold",
            ),
        ];
        for (config, field) in bad {
            let err = BackpressureQueue::<()>::new(config).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }

        let json =
            serde_json::to_value(config.with_strategy(BackpressureStrategy::DropNewest)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "max_queue_size": 1000,
                "strategy": "drop_newest",
                "warning_threshold": 0.8,
            })
        );
        let read: BackpressureConfig =
            serde_json::from_str(r#"{"strategy": "drop_oldest", "max_queue_size": 5}"#).unwrap();
        assert_eq!(
            read,
            config
                .with_max_queue_size(5)
                .with_strategy(BackpressureStrategy::DropOldest)
        );
        for (name, strategy) in [
            ("block", BackpressureStrategy::Block),
            ("reject", BackpressureStrategy::Reject),
        ] {
            assert_eq!(
                serde_json::from_value::<BackpressureStrategy>(name.into()).unwrap(),
                strategy
            );
        }
        assert!(serde_json::from_str::<BackpressureStrategy>(r#""Block""#).is_err());
    }

    #[test]
    fn fill_ratio() {
        let queue = queue(4, BackpressureStrategy::Reject);
        assert_eq!(queue.stats().fill_ratio(), 0.0);
        queue.try_push(1).unwrap();
        assert_eq!(queue.stats().fill_ratio(), 0.25);
        for i in 2..=4 {
            queue.try_push(i).unwrap();
        }
        assert_eq!(queue.stats().fill_ratio(), 1.0);
        let empty = BackpressureStats {
            max_queue_size: 0,
            ..queue.stats()
        };
        assert_eq!(empty.fill_ratio(), 0.0);
    }

    #[tokio::test]
    async fn block_waits_until_a_pop_frees_space() {
        let queue = queue(2, BackpressureStrategy::Block);
        assert_eq!(queue.push(1).await.unwrap(), PushOutcome::Queued);
        assert_eq!(queue.push(2).await.unwrap(), PushOutcome::Queued);
        let pusher = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push(3).await }
        });
        settle().await;
        assert!(
            !pusher.is_finished(),
            "a push into a full Block queue waits"
        );
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.pop().await, Some(1));
        let outcome = timeout(HANG, pusher).await.unwrap().unwrap().unwrap();
        assert_eq!(outcome, PushOutcome::Queued);
        assert_eq!(drain(&queue), vec![2, 3]);
        let stats = queue.stats();
        assert_eq!((stats.dropped_events, stats.rejected_events), (0, 0));
        assert_eq!((stats.total_pushed, stats.total_popped), (3, 3));
    }

    #[test]
    fn try_push_on_a_full_block_queue_fails_instead_of_waiting() {
        let queue = queue(1, BackpressureStrategy::Block);
        queue.try_push(1).unwrap();
        let err = queue.try_push(2).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QueueFull);
        assert_eq!(queue.stats().rejected_events, 1);
        assert_eq!(drain(&queue), vec![1]);
    }

    #[tokio::test]
    async fn try_push_all_pushes_all_or_none() {
        for strategy in [
            BackpressureStrategy::Block,
            BackpressureStrategy::DropOldest,
            BackpressureStrategy::DropNewest,
            BackpressureStrategy::Reject,
        ] {
            let queue = queue(4, strategy);
            queue.try_push_all(vec![1, 2]).unwrap();
            // Three more do not fit in the two free places: none is pushed, nothing dropped.
            assert_eq!(queue.try_push_all(vec![3, 4, 5]), Err(vec![3, 4, 5]));
            queue.try_push_all(vec![3, 4]).unwrap();
            assert_eq!(queue.try_push_all(vec![]), Ok(()));
            let stats = queue.stats();
            assert_eq!(stats.total_pushed, 4, "{strategy:?}");
            assert_eq!(
                stats.dropped_events + stats.rejected_events,
                0,
                "{strategy:?}"
            );
            assert_eq!(drain(&queue), vec![1, 2, 3, 4]);
        }
        let queue = queue(4, BackpressureStrategy::Block);
        // A taker waiting for an item gets one of the batch.
        let taker = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await }
        });
        settle().await;
        queue.try_push_all(vec![7, 8]).unwrap();
        assert_eq!(taker.await.unwrap(), Some(7));
        queue.close();
        assert_eq!(queue.try_push_all(vec![9]), Err(vec![9]));
        assert_eq!(drain(&queue), vec![8]);
    }

    #[tokio::test]
    async fn drop_oldest_hands_back_the_oldest() {
        let queue = queue(3, BackpressureStrategy::DropOldest);
        for i in 1..=3 {
            assert_eq!(queue.push(i).await.unwrap(), PushOutcome::Queued);
        }
        assert_eq!(queue.push(4).await.unwrap(), PushOutcome::DroppedOldest(1));
        assert_eq!(queue.try_push(5).unwrap(), PushOutcome::DroppedOldest(2));
        assert_eq!(queue.len(), 3);
        assert_eq!(drain(&queue), vec![3, 4, 5]);
        let stats = queue.stats();
        assert_eq!(stats.dropped_events, 2);
        assert_eq!(stats.total_pushed, 5);
    }

    #[tokio::test]
    async fn drop_newest_hands_back_the_new_item() {
        let queue = queue(2, BackpressureStrategy::DropNewest);
        queue.push(1).await.unwrap();
        queue.push(2).await.unwrap();
        let outcome = queue.push(3).await.unwrap();
        assert!(!outcome.is_queued());
        assert_eq!(outcome.into_dropped(), Some(3));
        assert_eq!(queue.try_push(4).unwrap(), PushOutcome::DroppedNewest(4));
        assert_eq!(drain(&queue), vec![1, 2]);
        let stats = queue.stats();
        assert_eq!(stats.dropped_events, 2);
        assert_eq!(stats.total_pushed, 2);
    }

    #[tokio::test]
    async fn reject_fails_and_loses_nothing_accepted() {
        let queue = queue(2, BackpressureStrategy::Reject);
        queue.push("a").await.unwrap();
        queue.push("b").await.unwrap();
        let err = queue.push("c").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QueueFull);
        assert!(err.is_retryable());
        assert!(matches!(err, Error::QueueFull { capacity: 2 }));
        assert!(queue.try_push("d").is_err());
        assert_eq!(queue.stats().rejected_events, 2);
        assert_eq!(queue.pop().await, Some("a"));
        queue.push("e").await.unwrap();
        assert_eq!(drain(&queue), vec!["b", "e"]);
    }

    #[test]
    fn stats_count_everything() {
        let queue = queue(3, BackpressureStrategy::DropOldest);
        for i in 0..10 {
            let _ = queue.try_push(i).unwrap();
        }
        queue.try_pop().unwrap();
        let stats = queue.stats();
        assert_eq!(stats.current_queue_size, 2);
        assert_eq!(stats.max_queue_size, 3);
        assert_eq!(stats.dropped_events, 7);
        assert_eq!(stats.rejected_events, 0);
        assert_eq!(stats.total_pushed, 10);
        assert_eq!(stats.total_popped, 1);
        assert_eq!(stats.strategy, BackpressureStrategy::DropOldest);
        assert_eq!(stats.warning_threshold, 0.8);
        assert_eq!(queue.capacity(), 3);
        assert!(!queue.is_empty());
    }

    #[test]
    fn warns_once_per_rise_above_the_threshold() {
        let queue = BackpressureQueue::new(
            BackpressureConfig::default()
                .with_max_queue_size(10)
                .with_strategy(BackpressureStrategy::DropOldest)
                .with_warning_threshold(0.8),
        )
        .unwrap();
        for i in 0..7 {
            queue.try_push(i).unwrap();
        }
        assert_eq!(queue.stats().warnings_emitted, 0, "7/10 is below 0.8");
        queue.try_push(7).unwrap();
        assert_eq!(queue.stats().warnings_emitted, 1, "8/10 reaches 0.8");
        for i in 8..100 {
            let _ = queue.try_push(i).unwrap();
        }
        assert_eq!(queue.stats().warnings_emitted, 1, "not once per item");
        // Down to 8/10: still at the threshold, not re-armed.
        queue.try_pop().unwrap();
        queue.try_pop().unwrap();
        queue.try_push(100).unwrap();
        assert_eq!(queue.stats().warnings_emitted, 1);
        // Down to 7/10: re-armed; back to 8/10: a second warning.
        queue.try_pop().unwrap();
        queue.try_pop().unwrap();
        assert_eq!(queue.len(), 7);
        queue.try_push(101).unwrap();
        assert_eq!(queue.stats().warnings_emitted, 2);
    }

    #[tokio::test]
    async fn close_drains_then_ends_and_refuses_pushes() {
        let queue = queue(4, BackpressureStrategy::Block);
        queue.push(1).await.unwrap();
        queue.push(2).await.unwrap();
        queue.close();
        queue.close();
        assert!(queue.is_closed());
        let err = queue.push(3).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed);
        assert_eq!(err.to_string(), "backpressure queue is closed");
        assert_eq!(queue.try_push(3).unwrap_err().kind(), ErrorKind::Closed);
        assert_eq!(queue.pop().await, Some(1));
        assert_eq!(queue.try_pop(), Some(2));
        assert_eq!(queue.pop().await, None);
        assert_eq!(queue.try_pop(), None);
    }

    #[tokio::test]
    async fn close_wakes_waiting_pushers_and_poppers() {
        let full = queue(1, BackpressureStrategy::Block);
        full.push(0).await.unwrap();
        let pushers: Vec<_> = (1..=3)
            .map(|i| {
                let queue = full.clone();
                tokio::spawn(async move { queue.push(i).await })
            })
            .collect();
        let empty = queue::<u32>(1, BackpressureStrategy::Block);
        let poppers: Vec<_> = (0..3)
            .map(|_| {
                let queue = empty.clone();
                tokio::spawn(async move { queue.pop().await })
            })
            .collect();
        settle().await;
        assert!(pushers.iter().all(|t| !t.is_finished()));
        assert!(poppers.iter().all(|t| !t.is_finished()));
        full.close();
        empty.close();
        for pusher in pushers {
            let err = timeout(HANG, pusher).await.unwrap().unwrap().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Closed);
        }
        for popper in poppers {
            assert_eq!(timeout(HANG, popper).await.unwrap().unwrap(), None);
        }
        assert_eq!(drain(&full), vec![0], "the queued item survives the close");
    }

    #[tokio::test]
    async fn a_cancelled_blocked_push_enqueues_nothing_and_leaks_nothing() {
        let queue = queue(1, BackpressureStrategy::Block);
        let first = Arc::new("first");
        let cancelled = Arc::new("cancelled");
        queue.push(Arc::clone(&first)).await.unwrap();
        {
            let push = queue.push(Arc::clone(&cancelled));
            tokio::select! {
                biased;
                _ = push => panic!("the queue is full"),
                () = tokio::task::yield_now() => {}
            }
        }
        assert_eq!(
            Arc::strong_count(&cancelled),
            1,
            "the item was dropped with the future"
        );
        assert_eq!(queue.len(), 1);
        assert!(Arc::ptr_eq(&queue.pop().await.unwrap(), &first));
        assert_eq!(queue.try_pop(), None);
        queue.push(Arc::clone(&first)).await.unwrap();
        assert_eq!(queue.len(), 1);
    }

    #[tokio::test]
    async fn a_wake_up_for_a_cancelled_pusher_passes_to_the_next() {
        let queue = queue(1, BackpressureStrategy::Block);
        queue.push(0).await.unwrap();
        let a = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push(1).await }
        });
        settle().await;
        let b = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push(2).await }
        });
        settle().await;
        // The freed slot's wake-up goes to `a`, the first waiter, which is cancelled before it
        // runs: the wake-up must reach `b`.
        assert_eq!(queue.try_pop(), Some(0));
        a.abort();
        assert!(timeout(HANG, a).await.unwrap().unwrap_err().is_cancelled());
        assert_eq!(
            timeout(HANG, b).await.unwrap().unwrap().unwrap(),
            PushOutcome::Queued
        );
        assert_eq!(drain(&queue), vec![2]);
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let queue = queue(4, BackpressureStrategy::Block);
        let popper = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await }
        });
        settle().await;
        assert!(!popper.is_finished());
        queue.push(7).await.unwrap();
        assert_eq!(timeout(HANG, popper).await.unwrap().unwrap(), Some(7));
    }

    /// (pop waiters, push waiters) as the queue counts them.
    fn waiters<T>(queue: &BackpressureQueue<T>) -> (usize, usize) {
        let state = queue.shared.lock();
        (state.pop_waiters, state.push_waiters)
    }

    #[tokio::test]
    async fn a_batch_wakes_as_many_waiting_pops_as_it_has_items() {
        let queue = queue::<u32>(8, BackpressureStrategy::Block);
        let poppers: Vec<_> = (0..3)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.pop().await })
            })
            .collect();
        settle().await;
        assert_eq!(waiters(&queue), (3, 0));
        queue.try_push_all(vec![1, 2, 3]).unwrap();
        let mut popped = Vec::new();
        for popper in poppers {
            popped.push(timeout(HANG, popper).await.unwrap().unwrap().unwrap());
        }
        popped.sort_unstable();
        assert_eq!(popped, [1, 2, 3]);
        assert_eq!(waiters(&queue), (0, 0));
    }

    #[tokio::test]
    async fn waits_that_end_or_are_dropped_leave_no_count_behind() {
        let queue = queue::<u32>(1, BackpressureStrategy::Block);
        // A pop that waits, then is dropped (a select that went the other way).
        let popper = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await }
        });
        settle().await;
        assert_eq!(waiters(&queue), (1, 0));
        popper.abort();
        assert!(popper.await.unwrap_err().is_cancelled());
        assert_eq!(waiters(&queue), (0, 0));
        // A push that waits for room, then gets it.
        queue.push(1).await.unwrap();
        let pusher = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push(2).await.map(|outcome| outcome.is_queued()) }
        });
        settle().await;
        assert_eq!(waiters(&queue), (0, 1));
        assert_eq!(queue.pop().await, Some(1));
        assert!(timeout(HANG, pusher).await.unwrap().unwrap().unwrap());
        assert_eq!(waiters(&queue), (0, 0));
        // Nobody waits: pushes and pops signal nothing, and the queue still works.
        assert_eq!(queue.pop().await, Some(2));
        assert_eq!(waiters(&queue), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_item_is_popped_exactly_once_with_many_producers_and_consumers() {
        const PRODUCERS: u64 = 4;
        const PER_PRODUCER: u64 = 2_000;
        let queue = queue::<u64>(8, BackpressureStrategy::Block);
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    for i in 0..PER_PRODUCER {
                        let outcome = queue.push(p * PER_PRODUCER + i).await.unwrap();
                        assert_eq!(outcome, PushOutcome::Queued);
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while let Some(item) = queue.pop().await {
                        assert!(queue.len() <= queue.capacity());
                        seen.push(item);
                    }
                    seen
                })
            })
            .collect();
        for producer in producers {
            timeout(HANG, producer).await.unwrap().unwrap();
        }
        queue.close();
        let mut all = Vec::new();
        for consumer in consumers {
            let seen = timeout(HANG, consumer).await.unwrap().unwrap();
            // Each producer's items reach any one consumer in the order they were pushed.
            for p in 0..PRODUCERS {
                let mine: Vec<_> = seen.iter().filter(|i| **i / PER_PRODUCER == p).collect();
                assert!(mine.windows(2).all(|w| w[0] < w[1]));
            }
            all.extend(seen);
        }
        let total = PRODUCERS * PER_PRODUCER;
        assert_eq!(all.len() as u64, total);
        assert_eq!(
            all.iter().copied().collect::<HashSet<_>>(),
            (0..total).collect()
        );
        let stats = queue.stats();
        assert_eq!((stats.total_pushed, stats.total_popped), (total, total));
    }

    #[test]
    fn queue_handles_are_send_sync_and_clone() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<BackpressureQueue<std::cell::Cell<u8>>>();
        let queue = queue(1, BackpressureStrategy::Reject);
        let other = queue.clone();
        queue.try_push(1).unwrap();
        assert_eq!(other.try_pop(), Some(1));
        assert!(format!("{queue:?}").contains("capacity: 1"));
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        TryPush,
        Push,
        Pop,
    }

    fn strategy() -> impl Strategy<Value = BackpressureStrategy> {
        prop_oneof![
            Just(BackpressureStrategy::Block),
            Just(BackpressureStrategy::DropOldest),
            Just(BackpressureStrategy::DropNewest),
            Just(BackpressureStrategy::Reject),
        ]
    }

    proptest! {
        #[test]
        fn bounded_accounted_and_fifo(
            capacity in 1usize..8,
            strategy in strategy(),
            ops in proptest::collection::vec(
                prop_oneof![Just(Op::TryPush), Just(Op::Push), Just(Op::Pop)],
                0..200,
            ),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let queue = queue::<u64>(capacity, strategy);
            let mut model = VecDeque::new();
            let (mut next, mut popped, mut evicted) = (0u64, Vec::new(), 0u64);
            for op in ops {
                let blocking_push_on_full =
                    strategy == BackpressureStrategy::Block && model.len() == capacity;
                match op {
                    Op::Pop => {
                        let item = queue.try_pop();
                        prop_assert_eq!(item, model.pop_front());
                        popped.extend(item);
                    }
                    // A blocking push on a full queue would wait forever in this single task.
                    Op::Push if blocking_push_on_full => {}
                    Op::Push | Op::TryPush => {
                        let item = next;
                        next += 1;
                        let result = match op {
                            Op::Push => runtime.block_on(queue.push(item)),
                            _ => queue.try_push(item),
                        };
                        let expected = if model.len() < capacity {
                            model.push_back(item);
                            Some(PushOutcome::Queued)
                        } else {
                            match strategy {
                                BackpressureStrategy::Block | BackpressureStrategy::Reject => None,
                                BackpressureStrategy::DropNewest => {
                                    Some(PushOutcome::DroppedNewest(item))
                                }
                                BackpressureStrategy::DropOldest => {
                                    evicted += 1;
                                    let oldest = model.pop_front().unwrap();
                                    model.push_back(item);
                                    Some(PushOutcome::DroppedOldest(oldest))
                                }
                            }
                        };
                        match (result, expected) {
                            (Ok(outcome), Some(expected)) => prop_assert_eq!(outcome, expected),
                            (Err(err), None) => prop_assert_eq!(err.kind(), ErrorKind::QueueFull),
                            (result, expected) => {
                                prop_assert!(false, "got {:?}, expected {:?}", result, expected);
                            }
                        }
                    }
                }
                let stats = queue.stats();
                prop_assert!(queue.len() <= capacity);
                prop_assert_eq!(stats.current_queue_size, model.len());
                prop_assert_eq!(stats.total_pushed, stats.total_popped + model.len() as u64 + evicted);
                prop_assert_eq!(stats.total_popped, popped.len() as u64);
            }
            // Survivors and popped items alike come out in push order.
            popped.extend(drain(&queue));
            prop_assert!(popped.windows(2).all(|w| w[0] < w[1]), "{:?}", popped);
        }
    }
}
