//! The running subscriptions of one transport, and the entries they hold ("flights").

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::{Hash, Hasher};
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
    /// Entries held by the subscriptions of this transport, per consumer group: read and not
    /// yet acknowledged, dead-lettered or released. Per group because an entry is delivered
    /// once to each group: a subscription in another group holding the same entry id is no
    /// reason to leave it alone.
    flights: Mutex<HashMap<String, Arc<Flights>>>,
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
    /// The entries held by the subscriptions of `group`, shared by every subscription of
    /// this transport in that group.
    pub(super) fn flights(&self, group: &str) -> Arc<Flights> {
        let mut groups = lock(&self.flights);
        // Groups whose subscriptions all stopped hold nothing: dropped here, so that the
        // map does not keep every group this transport ever read in.
        groups.retain(|name, flights| name == group || Arc::strong_count(flights) > 1);
        Arc::clone(groups.entry(group.to_owned()).or_default())
    }

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

/// Entries held by the subscriptions of one transport in one consumer group, with when their
/// idle time in Redis was last reset. One consumer name is shared by all subscriptions of a
/// transport, so this is what keeps a subscription from re-reading or claiming an entry another
/// one of its group (or itself) holds.
///
/// Keyed by stream, then entry id, so that a lookup by `&str` allocates nothing; the ids are
/// kept inline ([`FlightId`]), so that holding an entry allocates nothing either;
/// hashed with foldhash (randomly seeded per process) rather than SipHash: every entry passes
/// through this map at least twice.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, HashMap<FlightId, Flight, Seeded>, Seeded>>,
}

type Seeded = foldhash::fast::RandomState;

/// An entry id as a key, its text kept inline: holding an entry allocates nothing. Every id
/// Redis writes fits (`<milliseconds>-<sequence>`, two 64-bit numbers: at most 41 bytes);
/// a longer one is kept on the heap.
#[derive(Debug, Clone)]
enum FlightId {
    Inline {
        len: u8,
        bytes: [u8; FlightId::INLINE],
    },
    Heap(Box<str>),
}

impl FlightId {
    const INLINE: usize = 47;

    fn of(id: &str) -> Self {
        match u8::try_from(id.len()) {
            Ok(len) if id.len() <= Self::INLINE => {
                let mut bytes = [0; Self::INLINE];
                bytes[..id.len()].copy_from_slice(id.as_bytes());
                Self::Inline { len, bytes }
            }
            _ => Self::Heap(id.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(text) => text.as_bytes(),
        }
    }
}

impl PartialEq for FlightId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for FlightId {}

impl Hash for FlightId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Display for FlightId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Made from a `&str` and cut at its end: always UTF-8.
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

struct Flight {
    subscription: u64,
    touched: Instant,
}

impl Flights {
    /// Records that `subscription` holds the entry; `false` if it is held already.
    pub(crate) fn insert(&self, subscription: u64, stream: &str, id: &str) -> bool {
        let id = FlightId::of(id);
        let mut map = lock(&self.map);
        let ids = match map.get_mut(stream) {
            Some(ids) => ids,
            None => map.entry(stream.to_owned()).or_default(),
        };
        match ids.entry(id) {
            Entry::Occupied(_) => false,
            Entry::Vacant(vacant) => {
                vacant.insert(Flight {
                    subscription,
                    touched: Instant::now(),
                });
                true
            }
        }
    }

    /// [`insert`](Self::insert) for each of `entries` (stream, id), under one lock: a read's
    /// entries are recorded in one go. Says for each whether it was not held already.
    pub(crate) fn insert_all<'a>(
        &self,
        subscription: u64,
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<bool> {
        let touched = Instant::now();
        let mut map = lock(&self.map);
        entries
            .into_iter()
            .map(|(stream, id)| {
                let ids = match map.get_mut(stream) {
                    Some(ids) => ids,
                    None => map.entry(stream.to_owned()).or_default(),
                };
                match ids.entry(FlightId::of(id)) {
                    Entry::Occupied(_) => false,
                    Entry::Vacant(vacant) => {
                        vacant.insert(Flight {
                            subscription,
                            touched,
                        });
                        true
                    }
                }
            })
            .collect()
    }

    pub(crate) fn contains(&self, stream: &str, id: &str) -> bool {
        let id = FlightId::of(id);
        lock(&self.map)
            .get(stream)
            .is_some_and(|ids| ids.contains_key(&id))
    }

    pub(crate) fn remove(&self, stream: &str, id: &str) {
        self.remove_all(stream, [id]);
    }

    /// Removes the entries `ids` of `stream` under one lock: an acknowledged batch leaves in
    /// one go, not with a lock and a lookup of its stream per entry.
    pub(crate) fn remove_all<'a>(&self, stream: &str, ids: impl IntoIterator<Item = &'a str>) {
        if let Some(held) = lock(&self.map).get_mut(stream) {
            for id in ids {
                held.remove(&FlightId::of(id));
            }
        }
    }

    /// The entries of `subscription` in the streams `of` accepts, not touched for
    /// `older_than` at `now`. They stay as they are until [`touch`](Self::touch) says their
    /// idle time was reset: a reset that fails leaves them stale for the next round.
    pub(crate) fn stale(
        &self,
        subscription: u64,
        older_than: Duration,
        now: Instant,
        of: impl Fn(&str) -> bool,
    ) -> Vec<(String, String)> {
        let map = lock(&self.map);
        let mut stale = Vec::new();
        for (stream, ids) in map.iter().filter(|(stream, _)| of(stream)) {
            for (id, flight) in ids {
                if flight.subscription == subscription
                    && now.saturating_duration_since(flight.touched) >= older_than
                {
                    stale.push((stream.clone(), id.to_string()));
                }
            }
        }
        stale
    }

    /// Records that the idle time of the entries `ids` of `stream` still held was reset at
    /// `at` (when the reset was sent: Redis reset it then or later).
    pub(crate) fn touch(&self, stream: &str, ids: &[String], at: Instant) {
        if let Some(held) = lock(&self.map).get_mut(stream) {
            for id in ids {
                if let Some(flight) = held.get_mut(&FlightId::of(id)) {
                    flight.touched = flight.touched.max(at);
                }
            }
        }
    }

    pub(super) fn remove_subscription(&self, subscription: u64) {
        let mut map = lock(&self.map);
        for ids in map.values_mut() {
            ids.retain(|_, flight| flight.subscription != subscription);
        }
        map.retain(|_, ids| !ids.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    proptest::proptest! {
        #[test]
        fn an_id_is_its_own_key(
            id in "[0-9]{0,21}-[0-9]{0,21}|.{0,60}",
            other in "[0-9]{0,21}-[0-9]{0,21}|.{0,60}",
        ) {
            let key = FlightId::of(&id);
            proptest::prop_assert_eq!(key.to_string(), id.as_str());
            proptest::prop_assert_eq!(key == FlightId::of(&other), id == other);
            let hash = |key: &FlightId| foldhash::fast::FixedState::with_seed(7).hash_one(key);
            if id == other {
                proptest::prop_assert_eq!(hash(&key), hash(&FlightId::of(&other)));
            }
        }
    }

    #[test]
    fn the_longest_ids_redis_writes_are_kept_inline() {
        let longest = format!("{}-{}", u64::MAX, u64::MAX);
        assert!(matches!(FlightId::of(&longest), FlightId::Inline { .. }));
        let longer = "x".repeat(FlightId::INLINE + 1);
        assert!(matches!(FlightId::of(&longer), FlightId::Heap(_)));
        assert_eq!(FlightId::of(&longer).to_string(), longer);
    }

    #[test]
    fn an_entry_is_held_once_until_removed() {
        let flights = Flights::default();
        assert!(flights.insert(1, "s", "5-1"));
        assert!(!flights.insert(2, "s", "5-1"));
        assert!(flights.insert(1, "t", "5-1"));
        assert!(flights.insert(1, "s", "odd-id"));
        assert!(flights.contains("s", "5-1") && flights.contains("s", "odd-id"));
        flights.remove("s", "5-1");
        assert!(!flights.contains("s", "5-1"));
        assert!(flights.insert(1, "s", "6-0") && flights.insert(1, "s", "7-0"));
        assert_eq!(
            flights.insert_all(1, [("s", "7-0"), ("s", "9-0"), ("u", "7-0"), ("s", "9-0")]),
            [false, true, true, false]
        );
        flights.remove_all("s", ["9-0"]);
        flights.remove_all("u", ["7-0"]);
        flights.remove_all("s", ["6-0", "7-0", "8-0"]);
        flights.remove_all("unknown", ["6-0"]);
        assert!(!flights.contains("s", "6-0") && !flights.contains("s", "7-0"));
        assert!(flights.insert(2, "s", "5-1"));
        let now = Instant::now();
        assert_eq!(
            flights.stale(1, Duration::ZERO, now, |stream| stream == "t"),
            [("t".to_owned(), "5-1".to_owned())]
        );
        let mut stale = flights.stale(1, Duration::ZERO, now, |_| true);
        stale.sort();
        assert_eq!(
            stale,
            [
                ("s".to_owned(), "odd-id".to_owned()),
                ("t".to_owned(), "5-1".to_owned())
            ]
        );
        flights.remove_subscription(1);
        assert!(!flights.contains("t", "5-1") && flights.contains("s", "5-1"));
    }

    /// An entry stays stale until a reset of its idle time is recorded: a keep-alive round
    /// that failed tries it again at the next round, not half a `claim_idle_time` later.
    #[test]
    fn entries_stay_stale_until_their_reset_is_recorded() {
        let flights = Flights::default();
        assert!(flights.insert(1, "s", "1-0") && flights.insert(1, "s", "2-0"));
        let later = Instant::now() + Duration::from_secs(10);
        let older_than = Duration::from_secs(5);
        let stale = |at| {
            let mut stale = flights.stale(1, older_than, at, |_| true);
            stale.sort();
            stale
        };
        let both = [
            ("s".to_owned(), "1-0".to_owned()),
            ("s".to_owned(), "2-0".to_owned()),
        ];
        assert_eq!(stale(later), both);
        // The reset failed: nothing recorded, both still stale.
        assert_eq!(stale(later), both);
        flights.touch("s", &["1-0".to_owned(), "gone-0".to_owned()], later);
        assert_eq!(stale(later), [("s".to_owned(), "2-0".to_owned())]);
        // An older time never moves an entry's back.
        flights.touch("s", &["1-0".to_owned()], Instant::now());
        assert_eq!(stale(later), [("s".to_owned(), "2-0".to_owned())]);
        assert_eq!(stale(later + older_than), both);
    }
}
