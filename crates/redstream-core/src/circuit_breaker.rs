//! A circuit breaker that stops calling a failing backend for a while.
//!
//! The breaker has three [states](CircuitState):
//!
//! - **Closed**: calls go through. `failure_threshold` consecutive *retryable* failures open it;
//!   a success resets the count.
//! - **Open**: calls are rejected at once with [`Error::CircuitOpen`] (whose message starts with
//!   "Circuit breaker is open"). After the open period the next call moves it to half-open; the
//!   check is lazy, so an idle breaker stays `Open` until it is called.
//! - **HalfOpen**: at most `half_open_max_calls` trial calls run at once, the others are
//!   rejected. `success_threshold` successful trials close the breaker; one retryable failure
//!   opens it again, for twice the previous open period.
//!
//! The open period is `open_duration`, 1 s by default: a server back after an outage is used
//! again about a second later, at the cost of one trial call a second while it is down. With
//! `max_open_duration` set, each failed trial doubles the period up to it instead, so a server
//! that stays down is tried less and less often; closing the breaker starts over at
//! `open_duration`.
//!
//! Only errors for which [`Error::is_retryable`] holds count as failures. A permanent error
//! (authentication, permissions, invalid input, a handler error...) says nothing about the
//! backend's health: it is *ignored*, counting neither as a failure nor as a success, so it
//! never opens the breaker and never resets the consecutive-failure count.
//!
//! Outcomes are attributed to the state the call was admitted in: a call admitted before the
//! breaker last changed state only updates the cumulative statistics. For example, when a
//! breaker opens while other calls are in flight, their later failures do not extend the open
//! period, and their later successes do not close it.
//!
//! ```
//! use std::time::Duration;
//! use redstream_core::{CircuitBreaker, CircuitBreakerConfig, CircuitState, Error, ErrorKind};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> redstream_core::Result<()> {
//! let breaker = CircuitBreaker::new(
//!     CircuitBreakerConfig::default()
//!         .with_failure_threshold(2)
//!         .with_open_duration(Duration::from_secs(10)),
//! )?;
//! for _ in 0..2 {
//!     let result: redstream_core::Result<()> = breaker
//!         .call(|| async { Err(Error::backend(ErrorKind::Connection, "XADD", "s", "reset")) })
//!         .await;
//!     assert!(result.is_err());
//! }
//! assert_eq!(breaker.state(), CircuitState::Open);
//! let err = breaker.call(|| async { Ok(()) }).await.unwrap_err();
//! assert!(err.to_string().starts_with("Circuit breaker is open"));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{Error, Result};

/// The state of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls go through; consecutive retryable failures are counted.
    Closed,
    /// Calls are rejected until the open period has elapsed.
    Open,
    /// A limited number of trial calls decide whether to close or to reopen.
    HalfOpen,
}

impl CircuitState {
    /// A short, stable, snake_case name, suitable as a metric label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    const fn to_bits(self) -> u64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    const fn from_bits(bits: u64) -> Self {
        match bits & 0b11 {
            0 => Self::Closed,
            1 => Self::Open,
            _ => Self::HalfOpen,
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The settings of a [`CircuitBreaker`].
///
/// In configuration files `open_duration` is a human-readable string such as `"30s"` or
/// `"1m 30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive retryable failures that open a closed breaker. At least 1.
    pub failure_threshold: u32,
    /// How long a breaker opened by failures in the closed state rejects calls before it admits
    /// trials. Positive.
    #[serde(with = "crate::retry::humane_duration")]
    pub open_duration: Duration,
    /// When set, each failed trial doubles the open period, up to this (at least
    /// `open_duration`); when `None` (the default), every open period is `open_duration`.
    #[serde(with = "crate::serde_duration::option")]
    pub max_open_duration: Option<Duration>,
    /// How many trial calls a half-open breaker runs at once. At least 1.
    pub half_open_max_calls: u32,
    /// Successful trials that close a half-open breaker. At least 1.
    pub success_threshold: u32,
}

impl Default for CircuitBreakerConfig {
    /// Opens after 5 consecutive failures, for 1 s, then closes after 1 successful trial.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_duration: Duration::from_secs(1),
            max_open_duration: None,
            half_open_max_calls: 1,
            success_threshold: 1,
        }
    }
}

impl CircuitBreakerConfig {
    /// Sets [`failure_threshold`](Self::failure_threshold).
    #[must_use]
    pub fn with_failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures;
        self
    }

    /// Sets [`open_duration`](Self::open_duration).
    #[must_use]
    pub fn with_open_duration(mut self, duration: Duration) -> Self {
        self.open_duration = duration;
        self
    }

    /// Sets [`max_open_duration`](Self::max_open_duration).
    #[must_use]
    pub fn with_max_open_duration(mut self, duration: Option<Duration>) -> Self {
        self.max_open_duration = duration;
        self
    }

    /// Sets [`half_open_max_calls`](Self::half_open_max_calls).
    #[must_use]
    pub fn with_half_open_max_calls(mut self, calls: u32) -> Self {
        self.half_open_max_calls = calls;
        self
    }

    /// Sets [`success_threshold`](Self::success_threshold).
    #[must_use]
    pub fn with_success_threshold(mut self, successes: u32) -> Self {
        self.success_threshold = successes;
        self
    }

    /// Checks every field, naming the first invalid one in the error.
    pub fn validate(&self) -> Result<()> {
        let counts = [
            ("failure_threshold", self.failure_threshold),
            ("half_open_max_calls", self.half_open_max_calls),
            ("success_threshold", self.success_threshold),
        ];
        for (name, value) in counts {
            if value == 0 {
                return Err(Error::invalid_input(
                    format!("config field circuit_breaker.{name}"),
                    "must be at least 1",
                ));
            }
        }
        if self.open_duration.is_zero() {
            return Err(Error::invalid_input(
                "config field circuit_breaker.open_duration",
                "must be positive (e.g. \"1s\")",
            ));
        }
        if let Some(max) = self.max_open_duration
            && max < self.open_duration
        {
            return Err(Error::invalid_input(
                "config field circuit_breaker.max_open_duration",
                format!(
                    "must be at least open_duration ({:?}), but is {max:?}",
                    self.open_duration
                ),
            ));
        }
        Ok(())
    }
}

/// A snapshot of a [`CircuitBreaker`]'s state and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitBreakerStats {
    /// The current state.
    pub state: CircuitState,
    /// Consecutive retryable failures since the last success or reset: the count that opens a
    /// closed breaker. In the open state, the failures that opened it.
    pub failure_count: u32,
    /// Successful calls, in total.
    pub success_count: u64,
    /// Calls asked for, admitted or rejected.
    pub total_requests: u64,
    /// Calls rejected without being tried.
    pub rejected_requests: u64,
    /// Retryable failures, in total.
    pub total_failures: u64,
    /// When the state last changed (or the breaker was created or reset).
    pub last_state_change: SystemTime,
    /// How many times the breaker has opened.
    pub opened_count: u64,
}

/// A circuit breaker; see the [module documentation](self).
///
/// Cloning is cheap and the clones share one state. Admitting a call in the closed state takes
/// a few atomic operations and no lock; the rarer transitions take a short internal lock that
/// is never held across an `.await`.
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

/// The word packing the state, its generation and the consecutive-failure count.
///
/// Bits 0..32: consecutive failures; bits 32..34: state; bits 34..64: generation, bumped (and
/// wrapping) on every state change, so that outcomes of calls admitted in an earlier state are
/// recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word {
    generation: u32,
    state: CircuitState,
    failures: u32,
}

const GENERATION_MASK: u32 = (1 << 30) - 1;

impl Word {
    fn pack(self) -> u64 {
        (u64::from(self.generation & GENERATION_MASK) << 34)
            | (self.state.to_bits() << 32)
            | u64::from(self.failures)
    }

    fn unpack(bits: u64) -> Self {
        Self {
            generation: (bits >> 34) as u32 & GENERATION_MASK,
            state: CircuitState::from_bits(bits >> 32),
            failures: bits as u32,
        }
    }

    fn next(self, state: CircuitState, failures: u32) -> Self {
        Self {
            generation: self.generation.wrapping_add(1) & GENERATION_MASK,
            state,
            failures,
        }
    }
}

struct Inner {
    config: CircuitBreakerConfig,
    /// The packed [`Word`]. Its state and generation only change under `transitions`.
    word: AtomicU64,
    /// The time origin of `open_until`.
    origin: Instant,
    /// When an open breaker may admit trials, in nanoseconds since `origin`.
    open_until: AtomicU64,
    transitions: Mutex<Transitions>,
    calls: CallCounts,
    rejected_requests: AtomicU64,
    total_failures: AtomicU64,
    opened_count: AtomicU64,
    /// Told of every state change ([`CircuitBreaker::on_state_change`]).
    listener: std::sync::OnceLock<StateListener>,
}

/// The counts every call writes, on cache lines of their own: written from every thread on
/// every call, next to `word` they would take the line every call reads away from the other
/// cores each time.
#[derive(Default)]
#[repr(align(128))]
struct CallCounts {
    total_requests: AtomicU64,
    success_count: AtomicU64,
}

/// A function told of each state change of a breaker.
type StateListener = Box<dyn Fn(CircuitState) + Send + Sync>;

/// What only changes in the half-open state or on transitions.
struct Transitions {
    /// The current (or last) open period.
    open_for: Duration,
    half_open_in_flight: u32,
    half_open_successes: u32,
    last_state_change: SystemTime,
}

/// What a finished call tells the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    Ignored,
}

impl CircuitBreaker {
    /// A closed breaker with the given configuration, once it is [valid](CircuitBreakerConfig::validate).
    pub fn new(config: CircuitBreakerConfig) -> Result<Self> {
        config.validate()?;
        let initial = Word {
            generation: 0,
            state: CircuitState::Closed,
            failures: 0,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                word: AtomicU64::new(initial.pack()),
                origin: Instant::now(),
                open_until: AtomicU64::new(0),
                transitions: Mutex::new(Transitions {
                    open_for: config.open_duration,
                    half_open_in_flight: 0,
                    half_open_successes: 0,
                    last_state_change: SystemTime::now(),
                }),
                calls: CallCounts::default(),
                rejected_requests: AtomicU64::new(0),
                total_failures: AtomicU64::new(0),
                opened_count: AtomicU64::new(0),
                listener: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Calls `listener` with the new state on every state change from now on (not with the
    /// current one): how a crate exports the state as a metric, say. One listener per breaker
    /// (shared by its clones); it runs while the breaker holds its transition lock, so it must
    /// be quick and must not call the breaker.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) when the breaker has a
    /// listener already.
    pub fn on_state_change(
        &self,
        listener: impl Fn(CircuitState) + Send + Sync + 'static,
    ) -> Result<()> {
        self.inner
            .listener
            .set(Box::new(listener))
            .map_err(|_| Error::invalid_input("circuit breaker", "has a state listener already"))
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.inner.config
    }

    /// Runs `f` if the breaker admits a call, and records its outcome: a
    /// [retryable](Error::is_retryable) error is a failure, any other error is ignored.
    ///
    /// Returns [`Error::CircuitOpen`] without calling `f` when the breaker is open, or
    /// half-open with all its trial slots taken. If the returned future is dropped while `f`'s
    /// future runs, the call is recorded as ignored and its trial slot, if any, is freed.
    ///
    /// The future `f` returns is moved into this one, and this one into its caller's: for a
    /// large future on a hot path (a Redis call's is over a kilobyte),
    /// [`try_acquire`](Self::try_acquire), the call awaited in place and
    /// [`Permit::record`] do the same without those copies.
    pub async fn call<F, Fut, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.call_with(Error::is_retryable, f).await
    }

    /// [`call`](Self::call) for any error type: `is_failure` says which errors count as
    /// failures, the others are ignored. A rejection is returned as `E::from(Error::CircuitOpen
    /// { .. })`.
    pub async fn call_with<C, F, Fut, T, E>(&self, is_failure: C, f: F) -> Result<T, E>
    where
        C: FnOnce(&E) -> bool,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        let permit = self.try_acquire()?;
        let result = f().await;
        match &result {
            Ok(_) => permit.record_success(),
            Err(err) if is_failure(err) => permit.record_failure(),
            Err(_) => permit.record_ignored(),
        }
        result
    }

    /// Asks to make one call, for callers that cannot wrap it in a closure.
    ///
    /// The [`Permit`] must be told the outcome; dropping it unrecorded counts as
    /// [ignored](Permit::record_ignored). Fails with [`Error::CircuitOpen`] when the breaker is
    /// open, or half-open with all its trial slots taken (then `retry_after` is zero: a slot
    /// frees up as soon as a trial ends).
    pub fn try_acquire(&self) -> Result<Permit<'_>> {
        let inner = &*self.inner;
        inner.calls.total_requests.fetch_add(1, Ordering::Relaxed);
        let word = inner.load();
        match word.state {
            CircuitState::Closed => Ok(Permit::new(self, word.generation, false)),
            CircuitState::Open => {
                let now = inner.now_nanos();
                let until = inner.open_until.load(Ordering::Acquire);
                if now < until {
                    Err(inner.reject(until - now))
                } else {
                    self.try_acquire_slow()
                }
            }
            CircuitState::HalfOpen => self.try_acquire_slow(),
        }
    }

    /// Admission in the open and half-open states, under the transitions lock.
    fn try_acquire_slow(&self) -> Result<Permit<'_>> {
        let inner = &*self.inner;
        let mut transitions = inner.lock();
        let mut word = inner.load();
        match word.state {
            CircuitState::Closed => return Ok(Permit::new(self, word.generation, false)),
            CircuitState::Open => {
                let now = inner.now_nanos();
                let until = inner.open_until.load(Ordering::Acquire);
                if now < until {
                    return Err(inner.reject(until - now));
                }
                word = inner.transition(&mut transitions, CircuitState::HalfOpen, None);
            }
            CircuitState::HalfOpen => {}
        }
        if transitions.half_open_in_flight < inner.config.half_open_max_calls {
            transitions.half_open_in_flight += 1;
            Ok(Permit::new(self, word.generation, true))
        } else {
            Err(inner.reject(0))
        }
    }

    /// The current state. An open breaker whose open period has elapsed still reports `Open`
    /// until the next call moves it to `HalfOpen`.
    #[must_use]
    pub fn state(&self) -> CircuitState {
        self.inner.load().state
    }

    /// A snapshot of the state and counters.
    #[must_use]
    pub fn stats(&self) -> CircuitBreakerStats {
        let inner = &*self.inner;
        let last_state_change = inner.lock().last_state_change;
        let word = inner.load();
        CircuitBreakerStats {
            state: word.state,
            failure_count: word.failures,
            success_count: inner.calls.success_count.load(Ordering::Relaxed),
            total_requests: inner.calls.total_requests.load(Ordering::Relaxed),
            rejected_requests: inner.rejected_requests.load(Ordering::Relaxed),
            total_failures: inner.total_failures.load(Ordering::Relaxed),
            last_state_change,
            opened_count: inner.opened_count.load(Ordering::Relaxed),
        }
    }

    /// Closes the breaker and clears its consecutive-failure count. The cumulative counters
    /// are kept; calls in flight are treated as admitted before the reset.
    pub fn reset(&self) {
        let inner = &*self.inner;
        let mut transitions = inner.lock();
        inner.transition(&mut transitions, CircuitState::Closed, Some(0));
    }

    /// Records the outcome of a call admitted in `generation`.
    fn record(&self, generation: u32, trial: bool, outcome: Outcome) {
        let inner = &*self.inner;
        match outcome {
            Outcome::Success => inner.calls.success_count.fetch_add(1, Ordering::Relaxed),
            Outcome::Failure => inner.total_failures.fetch_add(1, Ordering::Relaxed),
            Outcome::Ignored => 0,
        };
        if trial {
            inner.record_trial(generation, outcome);
        } else {
            inner.record_closed(generation, outcome);
        }
    }
}

impl Inner {
    fn load(&self) -> Word {
        Word::unpack(self.word.load(Ordering::Acquire))
    }

    fn lock(&self) -> MutexGuard<'_, Transitions> {
        // Nothing panics while the lock is held; a poisoned lock still holds consistent data.
        self.transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Nanoseconds since `origin`, saturating.
    fn now_nanos(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.origin);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }

    fn reject(&self, retry_after_nanos: u64) -> Error {
        self.rejected_requests.fetch_add(1, Ordering::Relaxed);
        Error::CircuitOpen {
            retry_after: Duration::from_nanos(retry_after_nanos),
        }
    }

    /// Moves to `state` in a new generation, setting the failure count to `failures` (`None`
    /// keeps it), and returns the new word. Must be called with the transitions lock held.
    fn transition(
        &self,
        transitions: &mut Transitions,
        state: CircuitState,
        failures: Option<u32>,
    ) -> Word {
        if state == CircuitState::Open {
            // A failed trial doubles the previous period; failures while closed start over.
            transitions.open_for = match self.config.max_open_duration {
                Some(max) if self.load().state == CircuitState::HalfOpen => {
                    transitions.open_for.saturating_mul(2).min(max)
                }
                _ => self.config.open_duration,
            };
            // Set before the state, so whoever sees `Open` sees this period's deadline.
            let open_for = u64::try_from(transitions.open_for.as_nanos()).unwrap_or(u64::MAX);
            let until = self.now_nanos().saturating_add(open_for);
            self.open_until.store(until, Ordering::Release);
            self.opened_count.fetch_add(1, Ordering::Relaxed);
        }
        transitions.half_open_in_flight = 0;
        transitions.half_open_successes = 0;
        transitions.last_state_change = SystemTime::now();
        // Only the failure count can change concurrently (calls finishing in the closed state).
        let mut previous = self.load();
        let mut next = previous.next(state, failures.unwrap_or(previous.failures));
        while let Err(actual) = self.word.compare_exchange_weak(
            previous.pack(),
            next.pack(),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            previous = Word::unpack(actual);
            next = previous.next(state, failures.unwrap_or(previous.failures));
        }
        match (previous.state, state) {
            (_, CircuitState::Open) => tracing::warn!(
                from = %previous.state,
                consecutive_failures = next.failures,
                open_for = ?transitions.open_for,
                "circuit breaker opened: rejecting calls"
            ),
            (CircuitState::Open, CircuitState::HalfOpen) => tracing::info!(
                trials = self.config.half_open_max_calls,
                "circuit breaker half-open: admitting trial calls"
            ),
            (from, to) if from != to => {
                tracing::info!(%from, "circuit breaker {to}: admitting calls");
            }
            _ => {}
        }
        if previous.state != state
            && let Some(listener) = self.listener.get()
        {
            listener(state);
        }
        next
    }

    /// Records the outcome of a call admitted in the closed state of `generation`.
    fn record_closed(&self, generation: u32, outcome: Outcome) {
        let current = |w: &Word| w.generation == generation && w.state == CircuitState::Closed;
        match outcome {
            Outcome::Ignored => {}
            Outcome::Success => {
                // Usually a plain load: the count is only written when it is not zero already.
                let _ = self
                    .word
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                        let w = Word::unpack(bits);
                        (current(&w) && w.failures != 0).then(|| Word { failures: 0, ..w }.pack())
                    });
            }
            Outcome::Failure => {
                let updated = self
                    .word
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                        let w = Word::unpack(bits);
                        current(&w).then(|| {
                            Word {
                                failures: w.failures.saturating_add(1),
                                ..w
                            }
                            .pack()
                        })
                    });
                let Ok(before) = updated else { return };
                if Word::unpack(before).failures.saturating_add(1) < self.config.failure_threshold {
                    return;
                }
                let mut transitions = self.lock();
                let w = self.load();
                // Another failure of this generation may have opened it already.
                if current(&w) && w.failures >= self.config.failure_threshold {
                    self.transition(&mut transitions, CircuitState::Open, None);
                }
            }
        }
    }

    /// Records the outcome of a trial admitted in the half-open state of `generation`.
    fn record_trial(&self, generation: u32, outcome: Outcome) {
        let mut transitions = self.lock();
        let w = self.load();
        if w.generation != generation || w.state != CircuitState::HalfOpen {
            // The trial's slot was released when the state changed.
            return;
        }
        transitions.half_open_in_flight = transitions.half_open_in_flight.saturating_sub(1);
        match outcome {
            Outcome::Ignored => {}
            Outcome::Success => {
                transitions.half_open_successes += 1;
                if transitions.half_open_successes >= self.config.success_threshold {
                    self.transition(&mut transitions, CircuitState::Closed, Some(0));
                } else {
                    // The state is half-open: only this lock's holder writes the word.
                    self.word
                        .store(Word { failures: 0, ..w }.pack(), Ordering::Release);
                }
            }
            Outcome::Failure => {
                let failures = w.failures.saturating_add(1);
                self.transition(&mut transitions, CircuitState::Open, Some(failures));
            }
        }
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = self.inner.load();
        f.debug_struct("CircuitBreaker")
            .field("state", &word.state)
            .field("failure_count", &word.failures)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Permission to make one call through a [`CircuitBreaker`], from
/// [`try_acquire`](CircuitBreaker::try_acquire).
///
/// Consume it with the call's outcome. Dropping it without recording one counts as
/// [`record_ignored`](Self::record_ignored), so a cancelled call frees its half-open trial slot.
#[must_use = "a permit records nothing unless told the call's outcome"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u32,
    trial: bool,
    recorded: bool,
}

impl<'a> Permit<'a> {
    fn new(breaker: &'a CircuitBreaker, generation: u32, trial: bool) -> Self {
        Self {
            breaker,
            generation,
            trial,
            recorded: false,
        }
    }

    /// Whether this is a half-open trial call, whose outcome decides to close or reopen.
    #[must_use]
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    /// The call succeeded: resets the consecutive-failure count, and counts towards closing a
    /// half-open breaker.
    pub fn record_success(mut self) {
        self.finish(Outcome::Success);
    }

    /// The call failed in a way that says the backend is unhealthy: counts towards opening the
    /// breaker, and reopens a half-open one.
    pub fn record_failure(mut self) {
        self.finish(Outcome::Failure);
    }

    /// The call's outcome says nothing about the backend's health (a permanent error, or the
    /// call was not made after all): only frees the trial slot, if any.
    pub fn record_ignored(mut self) {
        self.finish(Outcome::Ignored);
    }

    /// Records `result` as [`CircuitBreaker::call`] does: success, failure for a
    /// [retryable](Error::is_retryable) error, ignored for any other error.
    pub fn record<T>(self, result: &Result<T>) {
        match result {
            Ok(_) => self.record_success(),
            Err(err) if err.is_retryable() => self.record_failure(),
            Err(_) => self.record_ignored(),
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if !self.recorded {
            self.recorded = true;
            self.breaker.record(self.generation, self.trial, outcome);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.finish(Outcome::Ignored);
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("trial", &self.trial)
            .field("recorded", &self.recorded)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
