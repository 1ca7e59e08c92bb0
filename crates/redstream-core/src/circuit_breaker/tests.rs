use std::sync::atomic::AtomicU32;

use proptest::prelude::*;
use tokio::time::advance;

use super::*;
use crate::ErrorKind;

const OPEN_FOR: Duration = Duration::from_secs(10);

fn breaker(failures: u32, trials: u32, successes: u32) -> CircuitBreaker {
    CircuitBreaker::new(
        CircuitBreakerConfig::default()
            .with_failure_threshold(failures)
            .with_open_duration(OPEN_FOR)
            .with_max_open_duration(Some(OPEN_FOR * 4))
            .with_half_open_max_calls(trials)
            .with_success_threshold(successes),
    )
    .unwrap()
}

fn transient() -> Error {
    Error::backend(ErrorKind::Timeout, "XADD", "events", "timed out")
}

fn permanent() -> Error {
    Error::backend(ErrorKind::PermissionDenied, "XADD", "events", "NOPERM")
}

async fn fail(breaker: &CircuitBreaker) -> Error {
    breaker
        .call(|| async { Err::<(), _>(transient()) })
        .await
        .unwrap_err()
}

async fn succeed(breaker: &CircuitBreaker) -> Result<()> {
    breaker.call(|| async { Ok(()) }).await
}

async fn open(breaker: &CircuitBreaker) {
    while breaker.state() != CircuitState::Open {
        fail(breaker).await;
    }
}

#[test]
fn config_defaults_validation_and_serde() {
    let config = CircuitBreakerConfig::default();
    config.validate().unwrap();
    assert_eq!(config.failure_threshold, 5);
    assert_eq!(config.open_duration, Duration::from_secs(1));
    assert_eq!(config.max_open_duration, None);
    for (config, field) in [
        (
            config.with_max_open_duration(Some(Duration::from_millis(999))),
            "circuit_breaker.max_open_duration",
        ),
        (
            config.with_failure_threshold(0),
            "circuit_breaker.failure_threshold",
        ),
        (
            config.with_half_open_max_calls(0),
            "circuit_breaker.half_open_max_calls",
        ),
        (
            config.with_success_threshold(0),
            "circuit_breaker.success_threshold",
        ),
        (
            config.with_open_duration(Duration::ZERO),
            "circuit_breaker.open_duration",
        ),
    ] {
        let err = CircuitBreaker::new(config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains(field), "{err} should name {field}");
    }

    let json = serde_json::to_value(config).unwrap();
    assert_eq!(json["open_duration"], "1s");
    assert_eq!(json["max_open_duration"], serde_json::Value::Null);
    let doubling: CircuitBreakerConfig =
        serde_json::from_str(r#"{"max_open_duration": "30s"}"#).unwrap();
    assert_eq!(doubling.max_open_duration, Some(Duration::from_secs(30)));
    let read: CircuitBreakerConfig =
        serde_json::from_str(r#"{"failure_threshold": 3, "open_duration": "1m 500ms"}"#).unwrap();
    assert_eq!(read.failure_threshold, 3);
    assert_eq!(read.open_duration, Duration::from_millis(60_500));
    assert_eq!(read.success_threshold, 1);
    assert_eq!(
        serde_json::from_value::<CircuitBreakerConfig>(json).unwrap(),
        config
    );
    assert!(serde_json::from_str::<CircuitBreakerConfig>(r#"{"open_duration": 30}"#).is_err());
}

#[test]
fn state_display() {
    assert_eq!(CircuitState::Closed.to_string(), "closed");
    assert_eq!(CircuitState::Open.to_string(), "open");
    assert_eq!(CircuitState::HalfOpen.to_string(), "half_open");
}

#[test]
fn word_packing_round_trips() {
    for state in [
        CircuitState::Closed,
        CircuitState::Open,
        CircuitState::HalfOpen,
    ] {
        for (generation, failures) in [(0, 0), (GENERATION_MASK, u32::MAX), (12345, 7)] {
            let word = Word {
                generation,
                state,
                failures,
            };
            assert_eq!(Word::unpack(word.pack()), word);
        }
    }
    let last = Word {
        generation: GENERATION_MASK,
        state: CircuitState::Closed,
        failures: 0,
    };
    assert_eq!(
        last.next(CircuitState::Open, 1).generation,
        0,
        "generations wrap"
    );
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_retryable_failures() {
    let breaker = breaker(3, 1, 1);
    for expected in 1..3 {
        assert_eq!(fail(&breaker).await.kind(), ErrorKind::Timeout);
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(breaker.stats().failure_count, expected);
    }
    fail(&breaker).await;
    assert_eq!(breaker.state(), CircuitState::Open);
    let stats = breaker.stats();
    assert_eq!(stats.failure_count, 3);
    assert_eq!(stats.opened_count, 1);
    assert_eq!(stats.total_failures, 3);
}

#[tokio::test(start_paused = true)]
async fn open_rejects_without_calling() {
    let breaker = breaker(1, 1, 1);
    open(&breaker).await;
    advance(Duration::from_secs(4)).await;
    let called = AtomicU32::new(0);
    for rejected in 1..=3 {
        let err = breaker
            .call(|| async {
                called.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with("Circuit breaker is open"),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::CircuitOpen);
        assert!(err.is_retryable());
        match err {
            Error::CircuitOpen { retry_after } => {
                assert_eq!(retry_after, Duration::from_secs(6));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(breaker.stats().rejected_requests, rejected);
    }
    assert_eq!(called.load(Ordering::SeqCst), 0);
    assert!(breaker.try_acquire().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_listener_hears_each_state_change_once() {
    let breaker = breaker(2, 1, 1);
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&heard);
    breaker
        .on_state_change(move |state| log.lock().unwrap().push(state))
        .unwrap();
    assert_eq!(
        breaker.on_state_change(|_| {}).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    succeed(&breaker).await.unwrap();
    open(&breaker).await;
    fail(&breaker).await; // rejected while open: no change
    advance(OPEN_FOR).await;
    succeed(&breaker).await.unwrap();
    assert_eq!(
        *heard.lock().unwrap(),
        [
            CircuitState::Open,
            CircuitState::HalfOpen,
            CircuitState::Closed
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn half_opens_after_the_open_duration_and_closes_on_success() {
    let breaker = breaker(1, 1, 1);
    open(&breaker).await;
    advance(OPEN_FOR - Duration::from_millis(1)).await;
    assert!(
        succeed(&breaker).await.is_err(),
        "still open 1 ms before the end"
    );
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "the transition is lazy"
    );
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "the transition is lazy"
    );

    let permit = breaker.try_acquire().unwrap();
    assert!(permit.is_trial());
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    permit.record_success();
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.stats().failure_count, 0);
    assert!(!breaker.try_acquire().unwrap().is_trial());
}

#[tokio::test(start_paused = true)]
async fn closing_needs_success_threshold_successes() {
    let breaker = breaker(1, 1, 3);
    open(&breaker).await;
    advance(OPEN_FOR).await;
    for _ in 0..2 {
        succeed(&breaker).await.unwrap();
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
    }
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.stats().success_count, 3);
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_reopens_for_twice_the_period() {
    let breaker = breaker(2, 1, 2);
    open(&breaker).await;
    advance(OPEN_FOR).await;
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    assert_eq!(fail(&breaker).await.kind(), ErrorKind::Timeout);
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(breaker.stats().opened_count, 2);
    // One failure after a success: the count restarted.
    assert_eq!(breaker.stats().failure_count, 1);
    advance(OPEN_FOR * 2 - Duration::from_millis(1)).await;
    assert_eq!(
        succeed(&breaker).await.unwrap_err().kind(),
        ErrorKind::CircuitOpen
    );
    advance(Duration::from_millis(1)).await;
    succeed(&breaker).await.unwrap();
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), CircuitState::Closed);
}

/// Without `max_open_duration` (the default) every open period is `open_duration`.
#[tokio::test(start_paused = true)]
async fn open_periods_stay_the_same_by_default() {
    let breaker = CircuitBreaker::new(
        CircuitBreakerConfig::default()
            .with_failure_threshold(1)
            .with_open_duration(OPEN_FOR),
    )
    .unwrap();
    open(&breaker).await;
    for _ in 0..3 {
        match succeed(&breaker).await.unwrap_err() {
            Error::CircuitOpen { retry_after } => assert_eq!(retry_after, OPEN_FOR),
            other => panic!("not a rejection: {other}"),
        }
        advance(OPEN_FOR).await;
        fail(&breaker).await;
    }
}

/// Failed trials double the open period up to `max_open_duration`; closing starts over.
#[tokio::test(start_paused = true)]
async fn open_periods_double_up_to_the_maximum_and_start_over_once_closed() {
    let breaker = breaker(1, 1, 1);
    let retry_after = |err: Error| match err {
        Error::CircuitOpen { retry_after } => retry_after,
        other => panic!("not a rejection: {other}"),
    };
    open(&breaker).await;
    let mut periods = Vec::new();
    for _ in 0..4 {
        periods.push(retry_after(succeed(&breaker).await.unwrap_err()));
        advance(*periods.last().unwrap()).await;
        fail(&breaker).await;
    }
    assert_eq!(
        periods,
        [OPEN_FOR, OPEN_FOR * 2, OPEN_FOR * 4, OPEN_FOR * 4],
        "doubled, then capped"
    );
    advance(OPEN_FOR * 4).await;
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), CircuitState::Closed);
    fail(&breaker).await;
    assert_eq!(retry_after(succeed(&breaker).await.unwrap_err()), OPEN_FOR);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_only_the_configured_number_of_trials() {
    let breaker = breaker(1, 2, 5);
    open(&breaker).await;
    advance(OPEN_FOR).await;
    let first = breaker.try_acquire().unwrap();
    let second = breaker.try_acquire().unwrap();
    let err = breaker.try_acquire().unwrap_err();
    assert!(matches!(err, Error::CircuitOpen { retry_after } if retry_after.is_zero()));
    first.record_success();
    let third = breaker.try_acquire().unwrap();
    assert!(breaker.try_acquire().is_err());
    // Dropping a permit unrecorded frees its slot without counting anything.
    drop(second);
    let fourth = breaker.try_acquire().unwrap();
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    third.record_ignored();
    fourth.record_success();
    let stats = breaker.stats();
    assert_eq!(stats.success_count, 2);
    assert_eq!(stats.rejected_requests, 2);
    assert_eq!(stats.state, CircuitState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_trial_call_frees_its_slot() {
    let breaker = breaker(1, 1, 1);
    open(&breaker).await;
    advance(OPEN_FOR).await;
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    let call = breaker.call(|| async move {
        let _ = rx.await;
        Ok(())
    });
    tokio::select! {
        biased;
        _ = call => panic!("the call cannot finish"),
        () = tokio::task::yield_now() => {}
    }
    // The select dropped the call future, and its permit with it.
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_never_open_it() {
    let breaker = breaker(2, 1, 1);
    for _ in 0..10 {
        let err = breaker
            .call(|| async { Err::<(), _>(permanent()) })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    let stats = breaker.stats();
    assert_eq!(
        (
            stats.failure_count,
            stats.total_failures,
            stats.success_count
        ),
        (0, 0, 0)
    );
    // Nor do they reset the consecutive count.
    fail(&breaker).await;
    breaker
        .call(|| async { Err::<(), _>(permanent()) })
        .await
        .unwrap_err();
    fail(&breaker).await;
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_consecutive_count() {
    let breaker = breaker(3, 1, 1);
    for _ in 0..5 {
        fail(&breaker).await;
        fail(&breaker).await;
        succeed(&breaker).await.unwrap();
        assert_eq!(breaker.stats().failure_count, 0);
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    let stats = breaker.stats();
    assert_eq!(stats.total_failures, 10);
    assert_eq!(stats.success_count, 5);
    assert_eq!(stats.total_requests, 15);
    assert_eq!(stats.opened_count, 0);
}

#[tokio::test(start_paused = true)]
async fn stale_outcomes_do_not_drive_transitions() {
    let breaker = breaker(2, 1, 1);
    let late = breaker.try_acquire().unwrap();
    open(&breaker).await;
    advance(OPEN_FOR).await;
    succeed(&breaker).await.unwrap();
    assert_eq!(breaker.state(), CircuitState::Closed);
    // Admitted two states ago: counted, but does not start a new failure streak.
    late.record_failure();
    assert_eq!(breaker.stats().failure_count, 0);
    assert_eq!(breaker.stats().total_failures, 3);
}

#[tokio::test(start_paused = true)]
async fn stats_and_reset() {
    let breaker = breaker(2, 1, 1);
    let created = breaker.stats().last_state_change;
    succeed(&breaker).await.unwrap();
    open(&breaker).await;
    let _ = succeed(&breaker).await;
    let stats = breaker.stats();
    assert_eq!(stats.state, CircuitState::Open);
    assert_eq!(stats.total_requests, 4);
    assert_eq!(stats.rejected_requests, 1);
    assert_eq!(stats.success_count, 1);
    assert_eq!(stats.total_failures, 2);
    assert_eq!(stats.opened_count, 1);
    assert!(stats.last_state_change >= created);

    let clone = breaker.clone();
    clone.reset();
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.stats().failure_count, 0);
    assert_eq!(
        breaker.stats().total_requests,
        4,
        "cumulative counters are kept"
    );
    succeed(&breaker).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn call_with_classifies_other_error_types() {
    let breaker = breaker(1, 1, 1);
    let result: Result<(), crate::BoxError> = breaker
        .call_with(
            |e: &crate::BoxError| e.to_string() == "boom",
            || async { Err("not counted".into()) },
        )
        .await;
    assert!(result.is_err());
    assert_eq!(breaker.state(), CircuitState::Closed);
    let _ = breaker
        .call_with(
            |e: &crate::BoxError| e.to_string() == "boom",
            || async { Err::<(), crate::BoxError>("boom".into()) },
        )
        .await;
    assert_eq!(breaker.state(), CircuitState::Open);
    let err = breaker
        .call_with(|_: &crate::BoxError| true, || async { Ok(()) })
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("Circuit breaker is open"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_failures_open_it_exactly_once() {
    let breaker = breaker(10, 1, 1);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let breaker = breaker.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    let _ = breaker.call(|| async { Err::<(), _>(transient()) }).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = breaker.stats();
    assert_eq!(stats.state, CircuitState::Open);
    assert_eq!(stats.opened_count, 1);
    assert_eq!(stats.total_requests, 800);
    assert_eq!(stats.total_failures + stats.rejected_requests, 800);
    assert!(stats.total_failures >= 10);
}

#[test]
fn breaker_and_permit_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CircuitBreaker>();
    assert_send_sync::<Permit<'static>>();
}

/// One step of the model-based test.
#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Finish(usize, Outcome),
    Advance(u64),
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        Just(Outcome::Success),
        Just(Outcome::Failure),
        Just(Outcome::Ignored),
    ];
    prop_oneof![
        4 => Just(Op::Acquire),
        4 => (any::<usize>(), outcome).prop_map(|(i, o)| Op::Finish(i, o)),
        2 => (0u64..4_000).prop_map(Op::Advance),
        1 => Just(Op::Reset),
    ]
}

/// A straightforward single-threaded model of the documented state machine, in milliseconds.
#[derive(Debug)]
struct Model {
    config: CircuitBreakerConfig,
    state: CircuitState,
    epoch: u64,
    failures: u32,
    in_flight: u32,
    successes: u32,
    open_until: u64,
    open_for: u64,
    now: u64,
    rejected: u64,
    opened: u64,
}

impl Model {
    fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            config,
            state: CircuitState::Closed,
            epoch: 0,
            failures: 0,
            in_flight: 0,
            successes: 0,
            open_until: 0,
            open_for: 0,
            now: 0,
            rejected: 0,
            opened: 0,
        }
    }

    fn enter(&mut self, state: CircuitState) {
        if state == CircuitState::Open {
            self.open_for = match self.config.max_open_duration {
                Some(max) if self.state == CircuitState::HalfOpen => {
                    (self.open_for * 2).min(max.as_millis() as u64)
                }
                _ => self.config.open_duration.as_millis() as u64,
            };
        }
        self.state = state;
        self.epoch += 1;
        self.in_flight = 0;
        self.successes = 0;
        if state == CircuitState::Open {
            self.open_until = self.now + self.open_for;
            self.opened += 1;
        }
    }

    /// `Ok((epoch, trial))` or `Err(retry_after_ms)`.
    fn acquire(&mut self) -> std::result::Result<(u64, bool), u64> {
        if self.state == CircuitState::Open {
            if self.now < self.open_until {
                self.rejected += 1;
                return Err(self.open_until - self.now);
            }
            self.enter(CircuitState::HalfOpen);
        }
        match self.state {
            CircuitState::Closed => Ok((self.epoch, false)),
            _ if self.in_flight < self.config.half_open_max_calls => {
                self.in_flight += 1;
                Ok((self.epoch, true))
            }
            _ => {
                self.rejected += 1;
                Err(0)
            }
        }
    }

    fn finish(&mut self, epoch: u64, outcome: Outcome) {
        if epoch != self.epoch {
            return;
        }
        match (self.state, outcome) {
            (_, Outcome::Ignored) if self.state == CircuitState::HalfOpen => self.in_flight -= 1,
            (_, Outcome::Ignored) => {}
            (CircuitState::Closed, Outcome::Success) => self.failures = 0,
            (CircuitState::Closed, Outcome::Failure) => {
                self.failures += 1;
                if self.failures >= self.config.failure_threshold {
                    self.enter(CircuitState::Open);
                }
            }
            (CircuitState::HalfOpen, Outcome::Success) => {
                self.in_flight -= 1;
                self.successes += 1;
                self.failures = 0;
                if self.successes >= self.config.success_threshold {
                    self.enter(CircuitState::Closed);
                }
            }
            (CircuitState::HalfOpen, Outcome::Failure) => {
                self.failures += 1;
                self.enter(CircuitState::Open);
            }
            (CircuitState::Open, _) => unreachable!("no call is admitted while open"),
        }
    }

    fn reset(&mut self) {
        self.failures = 0;
        self.enter(CircuitState::Closed);
    }
}

proptest! {
    #[test]
    fn matches_the_reference_model(
        failure_threshold in 1u32..5,
        half_open_max_calls in 1u32..4,
        success_threshold in 1u32..4,
        open_ms in 1u64..5_000,
        max_factor in proptest::option::of(1u64..10),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let config = CircuitBreakerConfig {
            failure_threshold,
            open_duration: Duration::from_millis(open_ms),
            max_open_duration: max_factor.map(|f| Duration::from_millis(open_ms * f)),
            half_open_max_calls,
            success_threshold,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let breaker = CircuitBreaker::new(config).unwrap();
            let mut model = Model::new(config);
            let mut held: Vec<(Permit<'_>, u64)> = Vec::new();
            let (mut successes, mut failures) = (0, 0);
            for (step, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Acquire => match (breaker.try_acquire(), model.acquire()) {
                        (Ok(permit), Ok((epoch, trial))) => {
                            prop_assert_eq!(permit.is_trial(), trial, "step {}", step);
                            held.push((permit, epoch));
                        }
                        (Err(Error::CircuitOpen { retry_after }), Err(ms)) => {
                            prop_assert_eq!(retry_after, Duration::from_millis(ms));
                        }
                        (real, model) => prop_assert!(
                            false,
                            "step {}: breaker {:?}, model {:?}",
                            step,
                            real.map(|p| p.is_trial()),
                            model
                        ),
                    },
                    Op::Finish(_, _) if held.is_empty() => {}
                    Op::Finish(i, outcome) => {
                        let (permit, epoch) = held.swap_remove(i % held.len());
                        match outcome {
                            Outcome::Success => {
                                successes += 1;
                                permit.record_success();
                            }
                            Outcome::Failure => {
                                failures += 1;
                                permit.record_failure();
                            }
                            // Alternate between the explicit call and a plain drop.
                            Outcome::Ignored if i % 2 == 0 => permit.record_ignored(),
                            Outcome::Ignored => drop(permit),
                        }
                        model.finish(epoch, outcome);
                    }
                    Op::Advance(ms) => {
                        advance(Duration::from_millis(ms)).await;
                        model.now += ms;
                    }
                    Op::Reset => {
                        breaker.reset();
                        model.reset();
                    }
                }
                let stats = breaker.stats();
                prop_assert_eq!(stats.state, model.state, "step {}: {:?}", step, model);
                prop_assert_eq!(stats.failure_count, model.failures, "step {}", step);
                prop_assert_eq!(stats.rejected_requests, model.rejected);
                prop_assert_eq!(stats.opened_count, model.opened);
                prop_assert_eq!(stats.success_count, successes);
                prop_assert_eq!(stats.total_failures, failures);
            }
            Ok(())
        })?;
    }
}

/// Calls counted on many threads at once all add up in the snapshot: the admitted calls, and
/// the successes among them (an ignored call is admitted but not a success).
#[test]
fn calls_from_many_threads_are_all_counted() {
    const THREADS: u64 = 12;
    const CALLS: u64 = 1_000;
    let breaker = breaker(5, 1, 1);
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let breaker = &breaker;
            scope.spawn(move || {
                for call in 0..CALLS {
                    let permit = breaker.try_acquire().unwrap();
                    // One call in ten per thread is ignored: admitted, not a success.
                    if (thread + call) % 10 == 0 {
                        permit.record_ignored();
                    } else {
                        permit.record_success();
                    }
                }
            });
        }
    });
    let stats = breaker.stats();
    assert_eq!(stats.total_requests, THREADS * CALLS);
    assert_eq!(stats.success_count, THREADS * CALLS * 9 / 10);
    assert_eq!(stats.failure_count, 0);
}
