//! A stalled sink says so at the default log level (`warn`) without flooding it: a warning at
//! the first failed attempt of a stall, then at most one per [`Stall::EVERY`] (with the
//! attempts that failed and how long it has been stalled), and one when it writes again.
//! Each attempt in between is logged at `debug`.

use std::time::{Duration, Instant};

use redstream_core::ErrorKind;

/// How long the sink has been failing, since its last success.
#[derive(Debug, Default)]
pub(crate) struct Stall {
    failures: u32,
    since: Option<Instant>,
    warned: Option<Instant>,
}

/// A failed attempt of a stall, as the warning reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failed {
    /// Attempts that failed in this stall, this one included.
    pub(crate) failures: u32,
    /// Since the first of them.
    pub(crate) stalled_for: Duration,
    /// Whether to warn now (else log at `debug`).
    pub(crate) warn: bool,
}

impl Stall {
    /// The shortest time between two warnings of one stall.
    pub(crate) const EVERY: Duration = Duration::from_secs(10);

    /// Counts a failed attempt that will be retried.
    pub(crate) fn failed(&mut self) -> Failed {
        self.failed_at(Instant::now())
    }

    fn failed_at(&mut self, now: Instant) -> Failed {
        self.failures = self.failures.saturating_add(1);
        let since = *self.since.get_or_insert(now);
        let warn = self
            .warned
            .is_none_or(|warned| now.saturating_duration_since(warned) >= Self::EVERY);
        if warn {
            self.warned = Some(now);
        }
        Failed {
            failures: self.failures,
            stalled_for: now.saturating_duration_since(since),
            warn,
        }
    }

    /// Ends the stall after a success: its failed attempts and length, if there was one.
    pub(crate) fn recovered(&mut self) -> Option<(u32, Duration)> {
        let stall = self
            .since
            .map(|since| (self.failures, since.elapsed()))
            .filter(|&(failures, _)| failures > 0);
        *self = Self::default();
        stall
    }
}

/// What a sink whose attempt failed with `kind` waits for, in words for its warning.
pub(crate) fn waiting_for(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::OutOfMemory => {
            "memory on the server (OOM: used_memory is over maxmemory; trim streams, free \
             memory or raise maxmemory)"
        }
        ErrorKind::NotDurable => {
            "replicas: WAIT saw too few of them acknowledge the batch (it is on the primary, \
             not yet durable)"
        }
        ErrorKind::Connection => "the server to accept a connection",
        ErrorKind::Timeout => "the server to answer in time",
        ErrorKind::Unavailable => {
            "the server to accept writes (loading, a read-only replica, a failover, or another \
             writer of the progress key)"
        }
        _ => "the server",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_at_once_then_at_most_once_per_period_then_on_recovery() {
        let mut stall = Stall::default();
        let start = Instant::now();
        let first = stall.failed_at(start);
        assert_eq!(
            first,
            Failed {
                failures: 1,
                stalled_for: Duration::ZERO,
                warn: true
            }
        );
        let quiet = stall.failed_at(start + Duration::from_secs(3));
        assert!(!quiet.warn);
        assert_eq!(quiet.failures, 2);
        let again = stall.failed_at(start + Stall::EVERY);
        assert!(again.warn);
        assert_eq!((again.failures, again.stalled_for), (3, Stall::EVERY));
        assert!(!stall.failed_at(start + Stall::EVERY * 3 / 2).warn);
        let (failures, _) = stall.recovered().unwrap();
        assert_eq!(failures, 4);
        // A success without a stall reports none; the next stall warns at once again.
        assert_eq!(stall.recovered(), None);
        assert!(stall.failed().warn);
    }
}
