//! The throughput history the page draws: a ring buffer of rates per stream, kept by the
//! server so that a reload (or a second page) starts with the last hour instead of nothing.
//!
//! A sample is taken every refresh interval by the one poller (`ws.rs`), whether or not a page
//! is open: from the snapshot it builds for the pages, or, while none is open, from the stream
//! summaries alone ([`AppState::sample_history`]), so Redis is read once per interval either
//! way. Per stream, events per second from the growth of Redis's own `entries-added` counter
//! (`XINFO STREAM`, Redis 7) since the previous sample, so trimming (`MAXLEN ~`) and `XDEL` do
//! not distort it; acknowledgements per second from the groups' delivered counts
//! (`entries-read`, which is `entries-added` minus the lag) less the growth of their pending
//! entries; and the lag of the slowest group. Where Redis does not give `entries-added` (before
//! 7.0, or a user without `XINFO STREAM`), the rate comes from the length, as a lower bound
//! (`exact: false`), and there is no ack rate.
//!
//! Memory is bounded: at most [`MAX_SAMPLES`] samples (an hour at the snapshot interval, one per
//! second at most) of at most [`MAX_STREAMS`] streams each. The history starts when the server
//! does; a router served without `serve` (tests in-process) samples only while a WebSocket
//! client is connected, and the first rate after a gap is the average over the gap.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use super::snapshot::now_ms;
use super::state::AppState;
use super::summary::Summary;

/// The most samples kept: an hour at one per second.
pub(crate) const MAX_SAMPLES: usize = 3600;

/// The most streams a sample holds (the first by name); the others are not charted.
pub(crate) const MAX_STREAMS: usize = 64;

/// How long the history reaches back.
const SPAN: Duration = Duration::from_secs(3600);

/// One stream at one sample.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Point {
    /// Entries added per second since the previous sample.
    pub(crate) rate: f64,
    /// Entries acknowledged per second over all its groups; `None` without `entries-added`.
    pub(crate) ack_rate: Option<f64>,
    /// The lag of its slowest group, in entries.
    pub(crate) lag: Option<u64>,
    /// Whether `rate` comes from `entries-added` (exact) or from the length (a lower bound).
    pub(crate) exact: bool,
}

/// One sample as kept: when, and the streams' points (names shared between samples).
#[derive(Debug, Clone)]
struct Kept {
    t: u64,
    streams: Vec<(Arc<str>, Point)>,
}

/// One sample as a snapshot carries it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    /// Unix milliseconds (the dashboard's clock).
    pub(crate) t: u64,
    pub(crate) streams: BTreeMap<String, Point>,
}

/// A stream's counters at the previous sample.
#[derive(Debug, Clone)]
struct Counts {
    /// `entries-added`, or the length when Redis does not give it.
    added: u64,
    exact: bool,
    last_id: Option<String>,
    /// Entries delivered to its groups, summed (`entries-added` minus each group's lag).
    delivered: Option<u64>,
    pending: u64,
}

impl Counts {
    fn of(summary: &Summary) -> Self {
        let (added, exact) = match summary.entries_added {
            Some(added) => (added, true),
            None => (summary.length, false),
        };
        // No groups: nothing is delivered or acknowledged, and there is no ack rate.
        let groups = summary.entries_added.filter(|_| !summary.groups.is_empty());
        let delivered = groups.and_then(|added| {
            summary
                .groups
                .iter()
                .map(|g| g.lag.map(|lag| added.saturating_sub(lag)))
                .sum::<Option<u64>>()
        });
        Self {
            added,
            exact,
            last_id: summary.last_id.clone(),
            delivered,
            pending: summary.groups.iter().map(|g| g.pending).sum(),
        }
    }
}

#[derive(Debug, Default)]
struct Ring {
    samples: VecDeque<Kept>,
    last_t: Option<u64>,
    last: HashMap<Arc<str>, Counts>,
}

/// The ring buffer; one per dashboard, in its `AppState`.
#[derive(Debug)]
pub(crate) struct History {
    /// The least time between two samples: the snapshot interval, at least a second.
    spacing_ms: u64,
    capacity: usize,
    ring: Mutex<Ring>,
}

impl History {
    pub(crate) fn new(refresh: Duration) -> Self {
        let spacing = refresh.max(Duration::from_secs(1));
        let capacity = usize::try_from(SPAN.as_millis().div_ceil(spacing.as_millis()))
            .unwrap_or(MAX_SAMPLES)
            .clamp(2, MAX_SAMPLES);
        Self {
            spacing_ms: u64::try_from(spacing.as_millis()).unwrap_or(u64::MAX),
            capacity,
            ring: Mutex::new(Ring::default()),
        }
    }

    /// Records the streams of a snapshot taken at `t` (Unix ms), and returns the new sample;
    /// `None` for the first snapshot (no rate yet) and for one that comes sooner than nine
    /// tenths of the spacing after the previous sample (its counters wait for the next).
    pub(crate) fn record(&self, t: u64, summaries: &[Summary]) -> Option<Sample> {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = ring.last_t;
        // A tenth of slack: snapshots are built every interval, and their times jitter.
        if previous.is_some_and(|last| t < last.saturating_add(self.spacing_ms * 9 / 10)) {
            return None;
        }
        let now: HashMap<Arc<str>, Counts> = summaries
            .iter()
            .take(MAX_STREAMS)
            .map(|s| (Arc::from(s.name.as_str()), Counts::of(s)))
            .collect();
        let sample = previous.map(|last| {
            let secs = (t - last) as f64 / 1000.0;
            let lags: HashMap<&str, Option<u64>> = summaries
                .iter()
                .map(|s| (s.name.as_str(), s.groups.iter().filter_map(|g| g.lag).max()))
                .collect();
            let streams = now
                .iter()
                .map(|(name, counts)| {
                    let point = point(ring.last.get(name), counts, secs);
                    let lag = lags.get(name.as_ref()).copied().flatten();
                    (name.clone(), Point { lag, ..point })
                })
                .collect();
            Kept { t, streams }
        });
        ring.last = now;
        ring.last_t = Some(t);
        let shown = sample.as_ref().map(|kept| Sample {
            t: kept.t,
            streams: kept
                .streams
                .iter()
                .map(|(name, point)| (name.to_string(), *point))
                .collect(),
        });
        if let Some(sample) = sample {
            ring.samples.push_back(sample);
            while ring.samples.len() > self.capacity {
                ring.samples.pop_front();
            }
        }
        shown
    }

    /// The history as the page reads it: one array of times, and per stream its series aligned
    /// with it (`null` where the stream has no point).
    pub(crate) fn view(&self) -> HistoryView {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let t: Vec<u64> = ring.samples.iter().map(|s| s.t).collect();
        let mut streams: BTreeMap<String, Series> = BTreeMap::new();
        for (i, sample) in ring.samples.iter().enumerate() {
            for (name, point) in &sample.streams {
                let series = streams.entry(name.to_string()).or_insert_with(|| Series {
                    rate: vec![None; t.len()],
                    ack_rate: vec![None; t.len()],
                    lag: vec![None; t.len()],
                    exact: true,
                });
                series.rate[i] = Some(point.rate);
                series.ack_rate[i] = point.ack_rate;
                series.lag[i] = point.lag;
                series.exact &= point.exact;
            }
        }
        HistoryView {
            interval_ms: self.spacing_ms,
            capacity: self.capacity,
            t,
            streams,
        }
    }
}

impl AppState {
    /// Samples the history from the streams' summaries alone: what the poller does in an
    /// interval when no page is open (a snapshot reads the rest for the pages).
    pub(crate) async fn sample_history(&self) -> redstream_core::Result<()> {
        let summaries = self.stream_summaries().await?;
        self.history().record(now_ms(), &summaries);
        Ok(())
    }
}

/// The rates of one stream between two samples `secs` apart; from zero for a stream that
/// appeared in between. A counter that went down (the stream was deleted and written again)
/// counts from zero too.
fn point(before: Option<&Counts>, now: &Counts, secs: f64) -> Point {
    let zero = Counts {
        added: 0,
        exact: now.exact,
        last_id: None,
        delivered: Some(0),
        pending: 0,
    };
    let before = before
        .filter(|b| b.added <= now.added || !now.exact)
        .unwrap_or(&zero);
    let mut added = now.added.saturating_sub(before.added);
    // From lengths: trimming can hold the length flat while entries arrive.
    if !now.exact && added == 0 && now.last_id.is_some() && now.last_id != before.last_id {
        added = 1;
    }
    let ack_rate = match (before.delivered, now.delivered) {
        (Some(b), Some(n)) if now.exact => {
            let delivered = n.saturating_sub(b) as f64;
            let pending_growth = now.pending as f64 - before.pending as f64;
            Some((delivered - pending_growth).max(0.0) / secs)
        }
        _ => None,
    };
    Point {
        rate: added as f64 / secs,
        ack_rate,
        lag: None,
        exact: now.exact,
    }
}

/// Per stream, its series.
#[derive(Debug, Serialize)]
pub(crate) struct Series {
    pub(crate) rate: Vec<Option<f64>>,
    pub(crate) ack_rate: Vec<Option<f64>>,
    pub(crate) lag: Vec<Option<u64>>,
    /// Whether every rate came from `entries-added`.
    pub(crate) exact: bool,
}

/// `GET /api/throughput`.
#[derive(Debug, Serialize)]
pub(crate) struct HistoryView {
    /// The least time between samples.
    pub(crate) interval_ms: u64,
    /// The most samples kept.
    pub(crate) capacity: usize,
    /// When each sample was taken, Unix milliseconds, oldest first.
    pub(crate) t: Vec<u64>,
    pub(crate) streams: BTreeMap<String, Series>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::summary::GroupInfo;

    fn summary(
        name: &str,
        length: u64,
        added: Option<u64>,
        lag: Option<u64>,
        pending: u64,
    ) -> Summary {
        Summary {
            name: name.to_owned(),
            event_type: None,
            dead_letter: false,
            length,
            first_id: None,
            last_id: Some(format!("{length}-0")),
            groups: vec![GroupInfo {
                name: "g".to_owned(),
                consumers: 1,
                pending,
                last_delivered_id: "0-0".to_owned(),
                lag,
                oldest_pending_age_secs: None,
                oldest_pending_idle_ms: None,
                oldest_undelivered_age_secs: None,
            }],
            entries_added: added,
        }
    }

    #[test]
    fn rates_come_from_entries_added_and_trimming_does_not_hide_them() {
        let history = History::new(Duration::from_secs(5));
        assert_eq!(history.capacity, 720);
        assert!(
            history
                .record(0, &[summary("s", 10, Some(10), Some(10), 0)])
                .is_none()
        );
        // Too soon: skipped.
        assert!(
            history
                .record(1000, &[summary("s", 10, Some(20), Some(10), 0)])
                .is_none()
        );
        // 50 added in 5 s while trimming holds the length at 10; 30 delivered, 10 still pending.
        let sample = history
            .record(5000, &[summary("s", 10, Some(60), Some(30), 10)])
            .unwrap();
        let point = sample.streams["s"];
        assert!((point.rate - 10.0).abs() < 1e-9, "{point:?}");
        assert!((point.ack_rate.unwrap() - 4.0).abs() < 1e-9, "{point:?}");
        assert_eq!(point.lag, Some(30));
        assert!(point.exact);
        // Without entries-added: from the length, a lower bound, no ack rate.
        let sample = history
            .record(10_000, &[summary("s", 12, None, None, 0)])
            .unwrap();
        let point = sample.streams["s"];
        assert!(!point.exact && point.ack_rate.is_none());
        let view = history.view();
        assert_eq!(view.t, [5000, 10_000]);
        assert!(!view.streams["s"].exact);
    }

    #[test]
    fn the_ring_is_bounded() {
        let history = History::new(Duration::from_millis(100));
        assert_eq!((history.capacity, history.spacing_ms), (MAX_SAMPLES, 1000));
        let many: Vec<Summary> = (0..MAX_STREAMS + 10)
            .map(|i| summary(&format!("s{i:03}"), 1, Some(1), None, 0))
            .collect();
        for i in 0..(MAX_SAMPLES as u64 + 50) {
            history.record(i * 1000, &many);
        }
        let view = history.view();
        assert_eq!(view.t.len(), MAX_SAMPLES);
        assert_eq!(view.streams.len(), MAX_STREAMS);
        assert_eq!(*view.t.last().unwrap(), (MAX_SAMPLES as u64 + 49) * 1000);
    }
}
