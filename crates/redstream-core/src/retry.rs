//! Retrying transient failures with exponential backoff and full jitter.
//!
//! A [`RetryPolicy`] decides whether a failed attempt is tried again (only
//! [retryable](crate::ErrorKind::is_retryable) errors are, and only while attempts remain) and
//! how long to wait first. The wait before retry `n` is
//! `min(max_delay, initial_delay * multiplier^(n - 1))`; with `jitter` on, the actual wait is
//! drawn uniformly from `[0, that]` ("full jitter"), which spreads out clients that failed
//! together so they do not come back together.
//!
//! ```
//! use std::time::Duration;
//! use redstream_core::RetryPolicy;
//!
//! let policy = RetryPolicy::default()
//!     .with_initial_delay(Duration::from_millis(50))
//!     .with_max_attempts(Some(3))
//!     .with_jitter(false);
//! policy.validate().unwrap();
//! assert_eq!(policy.delay_for(1), Duration::from_millis(50));
//! assert_eq!(policy.delay_for(2), Duration::from_millis(100));
//! ```
//!
//! In configuration files durations are written as human-readable strings (`"100ms"`, `"30s"`,
//! `"1m 30s"`) and `max_attempts` is a number or `"unlimited"`:
//!
//! ```toml
//! [retry]
//! initial_delay = "100ms"
//! max_delay = "30s"
//! multiplier = 2.0
//! max_attempts = 5        # or "unlimited"
//! jitter = true
//! ```

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a failed operation is retried: how many attempts, and how long to wait between them.
///
/// Attempts are numbered from 1: attempt 1 is the first call, and the wait before attempt
/// `n + 1` is [`delay_for(n)`](Self::delay_for).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// The wait before the first retry (without jitter). Must be positive.
    #[serde(with = "humane_duration")]
    pub initial_delay: Duration,
    /// The longest wait between two attempts. Must be at least `initial_delay`.
    #[serde(with = "humane_duration")]
    pub max_delay: Duration,
    /// The growth factor of the wait from one retry to the next. Finite and at least 1.
    pub multiplier: f64,
    /// How many attempts in total, the first one included; `None` retries until success or a
    /// permanent error. `Some(1)` never retries.
    #[serde(with = "attempts")]
    pub max_attempts: Option<u32>,
    /// Whether each wait is drawn uniformly from `[0, computed wait]` (full jitter).
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// 100 ms doubling up to 30 s, at most 5 attempts, with jitter.
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            max_attempts: Some(5),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The default schedule without a limit on the number of attempts: only success or a
    /// permanent error ends [`retry`](Self::retry).
    #[must_use]
    pub fn unlimited() -> Self {
        Self {
            max_attempts: None,
            ..Self::default()
        }
    }

    /// A policy that never retries: one attempt, whose error is returned as is.
    #[must_use]
    pub fn none() -> Self {
        Self {
            max_attempts: Some(1),
            ..Self::default()
        }
    }

    /// Sets [`initial_delay`](Self::initial_delay).
    #[must_use]
    pub fn with_initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// Sets [`max_delay`](Self::max_delay).
    #[must_use]
    pub fn with_max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Sets [`multiplier`](Self::multiplier).
    #[must_use]
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts); `None` means unlimited.
    #[must_use]
    pub fn with_max_attempts(mut self, max_attempts: Option<u32>) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets [`jitter`](Self::jitter).
    #[must_use]
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// Checks every field, naming the first invalid one in the error.
    pub fn validate(&self) -> Result<()> {
        if self.initial_delay.is_zero() {
            return Err(Error::invalid_input(
                "config field retry.initial_delay",
                "must be positive (e.g. \"100ms\")",
            ));
        }
        if self.max_delay < self.initial_delay {
            return Err(Error::invalid_input(
                "config field retry.max_delay",
                format!(
                    "must be at least retry.initial_delay ({:?}), got {:?}",
                    self.initial_delay, self.max_delay
                ),
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(Error::invalid_input(
                "config field retry.multiplier",
                format!("must be a finite number >= 1.0, got {}", self.multiplier),
            ));
        }
        if self.max_attempts == Some(0) {
            return Err(Error::invalid_input(
                "config field retry.max_attempts",
                "must be at least 1 (1 means no retries), or unlimited",
            ));
        }
        Ok(())
    }

    /// The wait before retry number `attempt` without jitter:
    /// `min(max_delay, initial_delay * multiplier^(attempt - 1))`.
    ///
    /// `attempt` is 1 for the first retry; 0 is treated as 1. The result is never above
    /// `max_delay`, nor below `initial_delay` unless that exceeds `max_delay`; the computation
    /// saturates and never panics, whatever the attempt number or the field values.
    #[must_use]
    pub fn base_delay_for(&self, attempt: u32) -> Duration {
        let cap = self.max_delay;
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        // Exact for integer multipliers as long as the result fits in 53 bits of nanoseconds,
        // i.e. for waits up to about 104 days.
        let nanos = self.initial_delay.as_nanos() as f64 * self.multiplier.powi(exponent);
        if nanos.is_nan() || nanos >= cap.as_nanos() as f64 {
            return cap;
        }
        // `as` saturates (a negative product becomes zero); rounding through `f64` may land a
        // little outside the bounds, so clamp to them.
        duration_from_nanos(nanos.round() as u128)
            .max(self.initial_delay.min(cap))
            .min(cap)
    }

    /// The wait before retry number `attempt` (1 for the first retry): the
    /// [`base_delay_for`](Self::base_delay_for) value, or with [`jitter`](Self::jitter) a
    /// uniformly random duration between zero and that value, drawn from `fastrand`'s
    /// thread-local generator.
    #[must_use]
    pub fn delay_for(&self, attempt: u32) -> Duration {
        let base = self.base_delay_for(attempt);
        if self.jitter {
            duration_from_nanos(fastrand::u128(0..=base.as_nanos()))
        } else {
            base
        }
    }

    /// [`delay_for`](Self::delay_for) with the jitter drawn from `rng`, for reproducible
    /// schedules.
    #[must_use]
    pub fn delay_for_with_rng(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let base = self.base_delay_for(attempt);
        if self.jitter {
            duration_from_nanos(rng.u128(0..=base.as_nanos()))
        } else {
            base
        }
    }

    /// Whether to try again after attempt number `attempt_that_failed` (1 for the first call)
    /// failed with `err`: only if the error is
    /// [retryable](crate::ErrorKind::is_retryable) and the policy allows another attempt.
    #[must_use]
    pub fn should_retry(&self, attempt_that_failed: u32, err: &Error) -> bool {
        err.is_retryable() && self.has_attempts_after(attempt_that_failed)
    }

    /// Whether the policy allows an attempt after attempt number `attempt`.
    fn has_attempts_after(&self, attempt: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempt < max)
    }

    /// Runs `op` until it succeeds, fails with a permanent error, or runs out of attempts,
    /// sleeping [`delay_for`](Self::delay_for) between attempts.
    ///
    /// `op` receives the attempt number, starting at 1. The error returned is the last one.
    /// Dropping the returned future stops retrying; it is as cancel-safe as `op`'s futures.
    pub async fn retry<F, Fut, T>(&self, mut op: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt: u32 = 1;
        loop {
            let err = match op(attempt).await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if !err.is_retryable() {
                tracing::debug!(attempt, error = %err, "permanent error, not retrying");
                return Err(err);
            }
            if !self.has_attempts_after(attempt) {
                tracing::warn!(attempt, error = %err, "giving up: no attempts left");
                return Err(err);
            }
            let delay = self.delay_for(attempt);
            tracing::debug!(
                attempt,
                next_attempt = attempt.saturating_add(1),
                ?delay,
                error = %err,
                "retryable error, retrying after a delay"
            );
            tokio::time::sleep(delay).await;
            attempt = attempt.saturating_add(1);
        }
    }
}

/// A [`Duration`] of `nanos` nanoseconds, saturating at [`Duration::MAX`].
fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    match u64::try_from(nanos / NANOS_PER_SEC) {
        // The remainder is below 10^9 and fits in a u32.
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

/// Serde for [`Duration`] fields as human-readable strings: `"250ms"`, `"30s"`, `"1m 30s"`.
///
/// Serialization writes the exact value (`humantime` format), so values round-trip. Bare
/// numbers are refused on input, since they would not say their unit.
pub(crate) use crate::serde_duration as humane_duration;

/// Serde for `max_attempts`: a positive number, or `"unlimited"` for `None`.
///
/// `None` is written as the string `"unlimited"` rather than left out, because formats such as
/// TOML cannot write a null and a missing field would read back as the default (5 attempts).
mod attempts {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;

    const UNLIMITED: &str = "unlimited";

    pub(super) fn serialize<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_u32(*n),
            None => s.serialize_str(UNLIMITED),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        d.deserialize_any(AttemptsVisitor)
    }

    struct AttemptsVisitor;

    impl<'de> Visitor<'de> for AttemptsVisitor {
        type Value = Option<u32>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number of attempts or \"unlimited\"")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            u32::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u32::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v.eq_ignore_ascii_case(UNLIMITED) {
                Ok(None)
            } else {
                Err(E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use proptest::prelude::*;

    use super::*;
    use crate::ErrorKind;

    /// A misspelled field in any configuration section is an error, not a silent default.
    #[test]
    fn every_config_section_refuses_unknown_fields() {
        fn refused<T: serde::de::DeserializeOwned>(json: &str) {
            let err = serde_json::from_str::<T>(json).err().expect(json);
            assert!(err.to_string().contains("unknown field"), "{json}: {err}");
        }
        refused::<RetryPolicy>(r#"{"max_dealy": "1s"}"#);
        refused::<crate::CircuitBreakerConfig>(r#"{"open_durration": "1s"}"#);
        refused::<crate::BackpressureConfig>(r#"{"capacityy": 10}"#);
        refused::<crate::EventLimits>(r#"{"max_bytes": 10}"#);
        #[cfg(feature = "redis")]
        refused::<crate::TlsOptions>(r#"{"ca_file": "/etc/ca.pem"}"#);
    }

    fn transient() -> Error {
        Error::backend(ErrorKind::Connection, "XADD", "events", "connection reset")
    }

    fn permanent() -> Error {
        Error::backend(ErrorKind::Auth, "AUTH", "redis://127.0.0.1/", "WRONGPASS")
    }

    fn no_jitter() -> RetryPolicy {
        RetryPolicy::default().with_jitter(false)
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let policy = RetryPolicy::default();
        policy.validate().unwrap();
        assert_eq!(policy.initial_delay, Duration::from_millis(100));
        assert_eq!(policy.max_delay, Duration::from_secs(30));
        assert_eq!(policy.multiplier, 2.0);
        assert_eq!(policy.max_attempts, Some(5));
        assert!(policy.jitter);
        RetryPolicy::unlimited().validate().unwrap();
        assert_eq!(RetryPolicy::unlimited().max_attempts, None);
        RetryPolicy::none().validate().unwrap();
        assert_eq!(RetryPolicy::none().max_attempts, Some(1));
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (
                no_jitter().with_initial_delay(Duration::ZERO),
                "retry.initial_delay",
            ),
            (
                no_jitter()
                    .with_initial_delay(Duration::from_secs(2))
                    .with_max_delay(Duration::from_secs(1)),
                "retry.max_delay",
            ),
            (no_jitter().with_multiplier(0.5), "retry.multiplier"),
            (no_jitter().with_multiplier(f64::NAN), "retry.multiplier"),
            (
                no_jitter().with_multiplier(f64::INFINITY),
                "retry.multiplier",
            ),
            (no_jitter().with_max_attempts(Some(0)), "retry.max_attempts"),
        ];
        for (policy, field) in cases {
            let err = policy.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
    }

    #[test]
    fn schedule_doubles_then_caps() {
        let policy = no_jitter().with_max_delay(Duration::from_secs(1));
        let expected = [100, 200, 400, 800, 1000, 1000];
        for (i, ms) in expected.into_iter().enumerate() {
            let attempt = u32::try_from(i).unwrap() + 1;
            assert_eq!(
                policy.delay_for(attempt),
                Duration::from_millis(ms),
                "attempt {attempt}"
            );
        }
        assert_eq!(
            policy.delay_for(0),
            policy.delay_for(1),
            "attempt 0 counts as 1"
        );
        assert_eq!(policy.delay_for(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn extreme_values_saturate_instead_of_panicking() {
        let huge = RetryPolicy {
            initial_delay: Duration::MAX,
            max_delay: Duration::MAX,
            multiplier: f64::MAX,
            max_attempts: None,
            jitter: false,
        };
        assert_eq!(huge.delay_for(1), Duration::MAX);
        assert_eq!(huge.delay_for(u32::MAX), Duration::MAX);
        // Invalid, unvalidated values must not panic either.
        let nonsense = RetryPolicy {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_millis(10),
            multiplier: f64::NAN,
            max_attempts: Some(0),
            jitter: true,
        };
        assert!(nonsense.delay_for(3) <= Duration::from_millis(10));
        let negative = no_jitter().with_multiplier(-3.0);
        assert_eq!(negative.delay_for(2), negative.initial_delay);
    }

    #[test]
    fn seeded_jitter_is_reproducible() {
        let policy = RetryPolicy::default();
        let a: Vec<_> = (1..20)
            .scan(fastrand::Rng::with_seed(7), |rng, n| {
                Some(policy.delay_for_with_rng(n, rng))
            })
            .collect();
        let b: Vec<_> = (1..20)
            .scan(fastrand::Rng::with_seed(7), |rng, n| {
                Some(policy.delay_for_with_rng(n, rng))
            })
            .collect();
        assert_eq!(a, b);
        assert!(
            a.iter().any(|d| *d != policy.base_delay_for(1)),
            "jitter varies the delays"
        );
    }

    #[test]
    fn should_retry_only_transient_errors_with_attempts_left() {
        let policy = no_jitter().with_max_attempts(Some(3));
        assert!(policy.should_retry(1, &transient()));
        assert!(policy.should_retry(2, &transient()));
        assert!(
            !policy.should_retry(3, &transient()),
            "attempt 3 was the last"
        );
        assert!(!policy.should_retry(1, &permanent()));
        assert!(!RetryPolicy::none().should_retry(1, &transient()));
        assert!(RetryPolicy::unlimited().should_retry(u32::MAX, &transient()));
        assert!(!RetryPolicy::unlimited().should_retry(1, &permanent()));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let err = no_jitter()
            .retry(|_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(permanent()) }
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Auth);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_up_to_max_attempts_with_the_schedule() {
        let start = tokio::time::Instant::now();
        let mut seen = Vec::new();
        let err = no_jitter()
            .with_max_attempts(Some(4))
            .retry(|attempt| {
                seen.push((attempt, start.elapsed()));
                async { Err::<(), _>(transient()) }
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connection);
        let ms = Duration::from_millis;
        // Waits of 100, 200 and 400 ms between the four attempts.
        assert_eq!(
            seen,
            vec![(1, ms(0)), (2, ms(100)), (3, ms(300)), (4, ms(700))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_after_transient_ones_stops_retrying() {
        let err = no_jitter()
            .retry(|attempt| async move {
                if attempt < 3 {
                    Err::<(), _>(transient())
                } else {
                    Err(permanent())
                }
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Auth);
    }

    #[tokio::test(start_paused = true)]
    async fn none_makes_a_single_attempt() {
        let calls = AtomicU32::new(0);
        RetryPolicy::none()
            .retry(|_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(transient()) }
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_keeps_going_until_success() {
        let calls = Arc::new(AtomicU32::new(0));
        let value = RetryPolicy::unlimited()
            .with_max_delay(Duration::from_secs(1))
            .retry(|attempt| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if attempt < 50 {
                        Err(transient())
                    } else {
                        Ok(attempt)
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(value, 50);
        assert_eq!(calls.load(Ordering::SeqCst), 50);
    }

    #[test]
    fn serde_uses_readable_durations_and_round_trips() {
        let json = serde_json::to_value(no_jitter()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "initial_delay": "100ms",
                "max_delay": "30s",
                "multiplier": 2.0,
                "max_attempts": 5,
                "jitter": false,
            })
        );
        let unlimited = RetryPolicy::unlimited().with_initial_delay(Duration::new(1, 5));
        let text = serde_json::to_string(&unlimited).unwrap();
        assert!(text.contains("\"max_attempts\":\"unlimited\""), "{text}");
        assert_eq!(
            serde_json::from_str::<RetryPolicy>(&text).unwrap(),
            unlimited
        );

        let partial: RetryPolicy =
            serde_json::from_str(r#"{"initial_delay": "1m 30s", "max_attempts": null}"#).unwrap();
        assert_eq!(partial.initial_delay, Duration::from_secs(90));
        assert_eq!(partial.max_attempts, None);
        assert_eq!(partial.max_delay, RetryPolicy::default().max_delay);

        for bad in [
            r#"{"initial_delay": 100}"#,
            r#"{"initial_delay": "soon"}"#,
            r#"{"max_attempts": -1}"#,
            r#"{"max_attempts": "forever"}"#,
        ] {
            assert!(serde_json::from_str::<RetryPolicy>(bad).is_err(), "{bad}");
        }
    }

    fn any_policy() -> impl Strategy<Value = RetryPolicy> {
        (
            0u64..=u64::MAX,
            0u64..=u64::MAX,
            prop_oneof![Just(1.0), Just(2.0), 1.0f64..100.0],
            any::<bool>(),
        )
            .prop_map(|(a, b, multiplier, jitter)| {
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                RetryPolicy {
                    initial_delay: Duration::from_nanos(lo.max(1)),
                    max_delay: Duration::from_nanos(hi.max(1)),
                    multiplier,
                    max_attempts: None,
                    jitter,
                }
            })
    }

    proptest! {
        #[test]
        fn delays_stay_within_zero_and_the_cap(
            policy in any_policy(),
            attempt in prop_oneof![0u32..70, any::<u32>()],
            seed in any::<u64>(),
        ) {
            let base = policy.base_delay_for(attempt);
            prop_assert!(base <= policy.max_delay);
            prop_assert!(base >= policy.initial_delay.min(policy.max_delay));
            let delay = policy.delay_for_with_rng(attempt, &mut fastrand::Rng::with_seed(seed));
            prop_assert!(delay <= base);
            if !policy.jitter {
                prop_assert_eq!(delay, base);
            }
            prop_assert!(policy.delay_for(attempt) <= base);
        }

        #[test]
        fn without_jitter_the_delay_doubles_exactly_until_the_cap(
            initial_ms in 1u64..10_000,
            cap_ms in 1u64..100_000_000,
            attempt in any::<u32>(),
        ) {
            let policy = RetryPolicy {
                initial_delay: Duration::from_millis(initial_ms),
                max_delay: Duration::from_millis(cap_ms.max(initial_ms)),
                multiplier: 2.0,
                max_attempts: None,
                jitter: false,
            };
            let exponent = attempt.saturating_sub(1);
            let expected = 2u64
                .checked_pow(exponent)
                .and_then(|factor| factor.checked_mul(initial_ms))
                .map_or(policy.max_delay, |ms| Duration::from_millis(ms).min(policy.max_delay));
            prop_assert_eq!(policy.delay_for(attempt), expected);
        }
    }
}
