//! [`wait_until`]: polling for a condition that no event announces, with a deadline.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The first pause between two checks; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(5);
/// The longest pause between two checks.
const MAX_DELAY: Duration = Duration::from_millis(100);

/// Runs `check` until it returns `Ok`, and returns that value; gives up with
/// [`Error::Timeout`] once `timeout` has passed, carrying the last `Err` as the reason.
///
/// For conditions that a test can only observe by asking (a replica's link is up, every
/// cluster node reports `cluster_state:ok`, the sentinels name a new master). The pause between
/// checks starts at 5 ms and doubles up to 100 ms. `check` should say why it is not done yet:
/// that text ends up in the timeout error. The timeout is a hang guard, not an assertion about
/// speed: choose it generously.
///
/// The deadline is measured with the system clock, so a test running with a paused Tokio clock
/// still times out.
///
/// ```no_run
/// # async fn demo(server: &redstream_testkit::RedisServer) -> redstream_testkit::Result<()> {
/// use std::time::Duration;
///
/// let con = server.connection().await?;
/// let length: u64 = redstream_testkit::wait_until("three entries", Duration::from_secs(10), || {
///     let mut con = con.clone();
///     async move {
///         let length: u64 = redis::cmd("XLEN")
///             .arg("s")
///             .query_async(&mut con)
///             .await
///             .map_err(|err| err.to_string())?;
///         if length >= 3 { Ok(length) } else { Err(format!("{length} entries")) }
///     }
/// })
/// .await?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Timeout`] with `what` and the last reason.
pub async fn wait_until<T, E, F, Fut>(
    what: impl Display,
    timeout: Duration,
    mut check: F,
) -> Result<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let started = Instant::now();
    let mut delay = FIRST_DELAY;
    loop {
        let last = match check().await {
            Ok(value) => return Ok(value),
            Err(reason) => reason.to_string(),
        };
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(Error::Timeout {
                what: what.to_string(),
                waited,
                last,
            });
        }
        tokio::time::sleep(delay.min(timeout - waited)).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_success() {
        let mut calls = 0;
        let value = wait_until("the third call", Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move {
                if n == 3 {
                    Ok(n)
                } else {
                    Err(format!("call {n}"))
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn times_out_with_the_last_reason() {
        let err = wait_until("never", Duration::from_millis(30), || async {
            Err::<(), _>("still not")
        })
        .await
        .unwrap_err();
        let Error::Timeout { what, last, .. } = &err else {
            panic!("expected a timeout, got {err}");
        };
        assert_eq!(what, "never");
        assert_eq!(last, "still not");
        assert!(err.to_string().contains("waiting for never"), "{err}");
    }
}
