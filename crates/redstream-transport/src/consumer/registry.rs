//! The running subscriptions of one transport, and the entries they hold ("flights").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redstream_core::{BackpressureConfig, BackpressureQueue, BackpressureStats};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::buffer::Buffer;
use super::lock;

/// The running subscriptions of one transport (all its clones).
#[derive(Default)]
pub(crate) struct Registry {
    pub(super) running: Mutex<HashMap<u64, Running>>,
    /// Entries held by any subscription of this transport: read and not yet acknowledged,
    /// dead-lettered or released.
    pub(super) flights: Arc<Flights>,
}

pub(super) struct Running {
    pub(super) stop: CancellationToken,
    pub(super) buffer: Buffer,
    pub(super) task: JoinHandle<Drained>,
}

/// What stopping a subscription left behind.
pub(super) struct Drained {
    /// Handlers were still running at the drain timeout and were aborted.
    pub(super) abandoned: usize,
}

impl Registry {
    /// The buffers of every subscription, summed.
    pub(super) fn stats(&self, config: BackpressureConfig) -> BackpressureStats {
        let running = lock(&self.running);
        let mut queues = running.values().map(|r| r.buffer.stats());
        let Some(mut total) = queues.next() else {
            // An empty queue of the configured size. `new` validated the configuration.
            return BackpressureQueue::<()>::new(config)
                .expect("the backpressure configuration was validated by RedisTransport::new")
                .stats();
        };
        for stats in queues {
            total.current_queue_size += stats.current_queue_size;
            total.max_queue_size += stats.max_queue_size;
            total.dropped_events += stats.dropped_events;
            total.rejected_events += stats.rejected_events;
            total.total_pushed += stats.total_pushed;
            total.total_popped += stats.total_popped;
            total.warnings_emitted += stats.warnings_emitted;
        }
        total
    }
}

/// Entries held by the subscriptions of one transport, with when their idle time in Redis was
/// last reset. One consumer name is shared by all subscriptions of a transport, so this is what
/// keeps a subscription from re-reading or claiming an entry another one (or itself) holds.
///
/// Keyed by stream, then entry id, so that a lookup by `&str` allocates nothing; hashed with
/// foldhash (randomly seeded per process) rather than SipHash: every entry passes through this
/// map three times, and the ids are Redis's.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, HashMap<String, Flight, Hasher>, Hasher>>,
}

type Hasher = foldhash::fast::RandomState;

struct Flight {
    subscription: u64,
    touched: Instant,
}

impl Flights {
    /// Records that `subscription` holds the entry; `false` if it is held already.
    pub(crate) fn insert(&self, subscription: u64, stream: &str, id: &str) -> bool {
        let mut map = lock(&self.map);
        let ids = match map.get_mut(stream) {
            Some(ids) => ids,
            None => map.entry(stream.to_owned()).or_default(),
        };
        if ids.contains_key(id) {
            return false;
        }
        ids.insert(
            id.to_owned(),
            Flight {
                subscription,
                touched: Instant::now(),
            },
        );
        true
    }

    pub(crate) fn contains(&self, stream: &str, id: &str) -> bool {
        lock(&self.map)
            .get(stream)
            .is_some_and(|ids| ids.contains_key(id))
    }

    pub(crate) fn remove(&self, stream: &str, id: &str) {
        if let Some(ids) = lock(&self.map).get_mut(stream) {
            ids.remove(id);
        }
    }

    /// The entries of `subscription` not touched for `older_than`, marked as touched now.
    pub(crate) fn stale(&self, subscription: u64, older_than: Duration) -> Vec<(String, String)> {
        let now = Instant::now();
        let mut map = lock(&self.map);
        let mut stale = Vec::new();
        for (stream, ids) in map.iter_mut() {
            for (id, flight) in ids.iter_mut() {
                if flight.subscription == subscription && now - flight.touched >= older_than {
                    flight.touched = now;
                    stale.push((stream.clone(), id.clone()));
                }
            }
        }
        stale
    }

    pub(super) fn remove_subscription(&self, subscription: u64) {
        let mut map = lock(&self.map);
        for ids in map.values_mut() {
            ids.retain(|_, flight| flight.subscription != subscription);
        }
        map.retain(|_, ids| !ids.is_empty());
    }
}
