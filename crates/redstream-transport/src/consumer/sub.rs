//! One subscription's shared state, the creation of its groups, and how it waits after errors.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Value;
use redstream_core::connection::Connection;
use redstream_core::{Error, ErrorKind, Result, RetryPolicy};
use tokio_util::sync::CancellationToken;

use super::ack::AckQueue;
use super::buffer::Buffer;
use super::registry::Flights;
use crate::commands::{Commands, is_nogroup};
use crate::config::TransportOptions;
use crate::keys::StreamNames;
use crate::telemetry;

/// What a subscription reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Event streams: failures end in the dead-letter stream.
    Events,
    /// The dead-letter stream itself: failures are logged and acknowledged.
    DeadLetters,
}

/// One stream a subscription reads.
pub(crate) struct StreamSpec {
    pub(crate) key: String,
    /// The event type, for a stream subscribed by event type: an entry of another type is
    /// dead-lettered. `None` for a stream subscribed by name, which hands over any type.
    pub(crate) event_type: Option<Arc<str>>,
    /// The `event_type` label of the stream's metrics: the event type, or for a stream by name
    /// the stream's name.
    pub(crate) label: Arc<str>,
}

impl StreamSpec {
    /// The stream of an event type.
    pub(crate) fn of_type(key: String, event_type: &str) -> Self {
        let event_type: Arc<str> = Arc::from(event_type);
        Self {
            key,
            label: Arc::clone(&event_type),
            event_type: Some(event_type),
        }
    }

    /// A stream by its name.
    pub(crate) fn by_name(key: String) -> Self {
        Self {
            label: Arc::from(key.as_str()),
            key,
            event_type: None,
        }
    }
}

/// An entry read from a stream, on its way to a handler.
pub(crate) struct Delivery {
    /// Index into [`Sub::streams`].
    pub(crate) stream: usize,
    /// Its buffer lane, from the envelope's priority (see `buffer::lane_of`).
    pub(crate) lane: usize,
    pub(crate) id: String,
    /// How many times Redis delivered it, this time included.
    pub(crate) deliveries: u32,
    pub(crate) fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A stream's metrics counted for every event handled: registered once, instead of building
/// their keys (and cloning their labels) per event.
pub(crate) struct HandledMetrics {
    pub(super) consumed: metrics::Counter,
    pub(super) latency: metrics::Histogram,
}

impl HandledMetrics {
    pub(super) fn register(spec: &StreamSpec, group: &Arc<str>) -> Self {
        Self {
            consumed: metrics::counter!(
                telemetry::CONSUMED,
                "event_type" => Arc::clone(&spec.label),
                "group" => Arc::clone(group),
            ),
            latency: metrics::histogram!(
                telemetry::HANDLER_LATENCY,
                "event_type" => Arc::clone(&spec.label),
                "group" => Arc::clone(group),
            ),
        }
    }
}

/// Everything one subscription's tasks share. Holds no reference to the transport, so that
/// dropping the last transport clone is noticed (through `stop`) while handlers drain.
pub(crate) struct Sub {
    pub(crate) id: u64,
    pub(crate) mode: Mode,
    pub(crate) group: Arc<str>,
    pub(crate) consumer: String,
    pub(crate) streams: Vec<StreamSpec>,
    /// The per-event metrics of each stream (same index as `streams`), registered once when
    /// the subscription starts, with the recorder installed then.
    pub(super) handled: Vec<HandledMetrics>,
    pub(super) by_key: HashMap<String, usize>,
    /// The stream keys, for messages.
    pub(crate) describe: String,
    /// Commands of [`Traffic::Consumer`](crate::commands::Traffic::Consumer).
    pub(crate) redis: Commands,
    /// The shared connection, from which each reader opens its dedicated one.
    pub(super) conn: Connection,
    /// The subscription's streams (indices) grouped by cluster slot: one blocking read per
    /// group. One group of every stream outside a cluster.
    pub(super) slot_groups: Vec<Vec<usize>>,
    pub(crate) names: StreamNames,
    pub(crate) options: TransportOptions,
    pub(crate) buffer: Buffer,
    pub(crate) flights: Arc<Flights>,
    /// Whether entries are redstream envelopes (the reader looks at their priority).
    pub(super) envelopes: bool,
    /// When this consumer first saw an entry fail, keyed by stream index and entry id.
    pub(super) failures: Mutex<HashMap<(usize, String), u64>>,
    /// Handled entries, for the ackers: one queue and one acker per slot group, so that a
    /// cluster master that is down holds back the acknowledgements of its own slots only.
    pub(super) acks: Vec<AckQueue>,
    /// The slot group of each stream (same index as `streams`): where its entries are read and
    /// acknowledged.
    pub(super) slot_group_of: Vec<usize>,
    /// Buffer room the slot groups' claim passes have asked `XAUTOCLAIM` to fill and not
    /// filled yet: passes run side by side and together claim no more than the free room.
    pub(super) claiming: AtomicUsize,
    /// Cancelled by `unsubscribe` or when the last transport clone is dropped.
    pub(crate) stop: CancellationToken,
}

/// How long reading has been failing, so that a stalled subscription says so at the default log
/// level without flooding it: a warning at the first failure, then at most one per
/// [`Stall::EVERY`], and one when reading works again.
#[derive(Debug, Default)]
pub(super) struct Stall {
    failures: u32,
    /// `NOGROUP` errors in a row (the group re-created each time, and gone again).
    nogroups: u32,
    since: Option<Instant>,
    warned: Option<Instant>,
}

impl Stall {
    /// The shortest time between two warnings of one stall.
    const EVERY: Duration = Duration::from_secs(10);

    /// Counts a failure; returns the failures so far and whether to warn now.
    pub(super) fn failed(&mut self) -> (u32, bool) {
        let now = Instant::now();
        self.failures = self.failures.saturating_add(1);
        self.since.get_or_insert(now);
        let warn = self
            .warned
            .is_none_or(|warned| now.duration_since(warned) >= Self::EVERY);
        if warn {
            self.warned = Some(now);
        }
        (self.failures, warn)
    }

    /// How long since the first failure of this stall.
    pub(super) fn stalled_for(&self) -> Duration {
        self.since.map(|since| since.elapsed()).unwrap_or_default()
    }

    /// Ends the stall after a successful read; returns its failures and length if there was one.
    pub(super) fn recovered(&mut self) -> Option<(u32, Duration)> {
        let stall = (self.failures > 0).then(|| (self.failures, self.stalled_for()));
        *self = Self::default();
        stall
    }
}

/// Backoff of the reader and the acker for transient errors.
pub(super) fn transient_backoff() -> RetryPolicy {
    RetryPolicy::unlimited()
        .with_initial_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(1))
}

/// Backoff for errors only an operator can fix (permissions, wrong types, authentication).
fn permanent_backoff() -> RetryPolicy {
    RetryPolicy::unlimited()
        .with_initial_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
}

/// The first few stream names, for messages.
pub(super) fn describe_streams(streams: &[StreamSpec]) -> String {
    const SHOWN: usize = 8;
    let mut out = streams
        .iter()
        .take(SHOWN)
        .map(|s| s.key.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if streams.len() > SHOWN {
        out.push_str(&format!(" and {} more", streams.len() - SHOWN));
    }
    out
}

impl Sub {
    pub(crate) fn spec(&self, stream: usize) -> &StreamSpec {
        &self.streams[stream]
    }

    /// `XGROUP CREATE <stream> <group> <start> MKSTREAM` on the given streams, in one round trip;
    /// a group that exists already (`BUSYGROUP`) is fine.
    pub(crate) async fn create_groups(&self, streams: &[usize], start: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for &i in streams {
            pipe.cmd("XGROUP")
                .arg("CREATE")
                .arg(&self.spec(i).key)
                .arg(&*self.group)
                .arg(start)
                .arg("MKSTREAM");
        }
        let results: Vec<redis::RedisResult<Value>> = self
            .redis
            .pipe("XGROUP CREATE", &self.describe, &pipe)
            .await?;
        for (&i, result) in streams.iter().zip(results) {
            match result {
                Ok(_) => {}
                Err(err) if err.code() == Some("BUSYGROUP") => {}
                Err(err) => {
                    return Err(Error::from_redis(
                        "XGROUP CREATE",
                        format!("{} (group {:?})", self.spec(i).key, self.group),
                        err,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Re-creates the group after `NOGROUP`, from the beginning of the streams.
    pub(crate) async fn recover_nogroup(&self, streams: &[usize], err: &Error) {
        tracing::warn!(
            group = %self.group,
            streams = %self.describe,
            error = %err,
            "the stream or the consumer group disappeared (NOGROUP: a restart without \
             persistence, a deleted stream or a destroyed group); re-creating the group from \
             the beginning of the stream"
        );
        if let Err(err) = self.create_groups(streams, "0").await {
            tracing::warn!(group = %self.group, error = %err, "could not re-create the consumer group");
        }
    }

    /// After a failed read: how long to wait, what to log, whether to reconnect. Returns `false`
    /// when the subscription is stopping.
    pub(super) async fn after_read_error(
        &self,
        err: &Error,
        stall: &mut Stall,
        conn: &mut Option<Connection>,
    ) -> bool {
        let (failures, warn) = stall.failed();
        if is_nogroup(err) {
            let all: Vec<usize> = (0..self.streams.len()).collect();
            self.recover_nogroup(&all, err).await;
            stall.nogroups = stall.nogroups.saturating_add(1);
            // Straight back to reading, unless the group keeps disappearing; counted apart
            // from the stall's other failures, so that the group re-created after a restart
            // is read at once however long the server was down.
            if stall.nogroups <= 1 {
                return !self.stop.is_cancelled();
            }
            let delay = transient_backoff().delay_for(stall.nogroups);
            return tokio::select! {
                () = self.stop.cancelled() => false,
                () = tokio::time::sleep(delay) => true,
            };
        }
        stall.nogroups = 0;
        let kind = err.kind();
        let stalled_for = stall.stalled_for();
        let delay = if kind.is_retryable() {
            if warn {
                tracing::warn!(
                    group = %self.group,
                    streams = %self.describe,
                    error = %err,
                    failures,
                    ?stalled_for,
                    "reading failed; retrying (nothing is consumed until the server answers)"
                );
            } else {
                tracing::debug!(group = %self.group, error = %err, failures, "reading failed; retrying");
            }
            transient_backoff().delay_for(failures)
        } else {
            if warn {
                tracing::error!(
                    group = %self.group,
                    streams = %self.describe,
                    error = %err,
                    failures,
                    ?stalled_for,
                    "reading failed with an error retrying will not fix (check permissions, key \
                     types and credentials); retrying slowly"
                );
            }
            permanent_backoff().delay_for(failures)
        };
        if matches!(kind, ErrorKind::Connection | ErrorKind::Timeout) {
            *conn = None;
        }
        tokio::select! {
            () = self.stop.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}
