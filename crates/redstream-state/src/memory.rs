//! The in-process backend: the same operations ([`Backend`]) and the same semantics as Redis,
//! in a map. A store in memory calls it directly: no circuit breaker, no fallback.
//!
//! Values are kept encoded, exactly as Redis keeps them, so the two backends agree on what an
//! integer is, on `WRONGTYPE`, and on decode errors. Time comes from `tokio::time`, so tests
//! with a paused clock see keys expire as soon as the clock is advanced past their TTL. An
//! expired key is never returned: every access checks the deadline, and expired keys are
//! swept out as writes go by. Every operation runs at once under one lock (its future is
//! ready on the first poll); [`glob`] reads `list_keys_matching`'s patterns as Redis does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redstream_core::Result;
use tokio::time::Instant;

use crate::backend::{Backend, Items, SetExpiry};
use crate::checkpoint::RawCheckpoint;
use crate::store::Ttl;
use crate::transaction::{
    Known, TxOp, not_an_integer, overflow, parse_redis_int, plan, wrong_type,
};

mod glob;

use glob::glob_match;

/// How many writes go by between two sweeps of expired keys.
const SWEEP_EVERY: u32 = 1024;

/// A map of keys shared by the clones of one store.
#[derive(Clone, Default)]
pub(crate) struct MemoryBackend {
    shared: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    checkpoints: HashMap<String, RawCheckpoint>,
    writes_since_sweep: u32,
}

struct Entry {
    data: Data,
    expires_at: Option<Instant>,
}

enum Data {
    String(Vec<u8>),
    Hash(BTreeMap<String, Vec<u8>>),
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

fn target(key: &str) -> String {
    format!("key {key:?}")
}

fn deadline(ttl: Option<Duration>) -> Option<Instant> {
    ttl.map(|ttl| Instant::now() + ttl)
}

impl State {
    /// The live entry under `key`, removing it first if it has expired.
    fn live(&mut self, key: &str) -> Option<&mut Entry> {
        let now = Instant::now();
        if self.entries.get(key).is_some_and(|e| e.expired(now)) {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn wrote(&mut self) {
        self.writes_since_sweep += 1;
        if self.writes_since_sweep >= SWEEP_EVERY {
            self.writes_since_sweep = 0;
            let now = Instant::now();
            self.entries.retain(|_, e| !e.expired(now));
        }
    }

    fn string(&mut self, key: &str, operation: &'static str) -> Result<Option<&mut Vec<u8>>> {
        match self.live(key) {
            None => Ok(None),
            Some(Entry {
                data: Data::String(bytes),
                ..
            }) => Ok(Some(bytes)),
            Some(_) => Err(wrong_type(operation, &target(key))),
        }
    }

    fn hash(
        &mut self,
        key: &str,
        operation: &'static str,
    ) -> Result<Option<&mut BTreeMap<String, Vec<u8>>>> {
        match self.live(key) {
            None => Ok(None),
            Some(Entry {
                data: Data::Hash(fields),
                ..
            }) => Ok(Some(fields)),
            Some(_) => Err(wrong_type(operation, &target(key))),
        }
    }

    /// `SET` with the given expiry.
    fn set(&mut self, key: &str, value: Vec<u8>, expiry: SetExpiry) {
        let expires_at = match expiry {
            SetExpiry::Persist => None,
            SetExpiry::After(ttl) => deadline(Some(ttl)),
            SetExpiry::Keep => self.live(key).and_then(|e| e.expires_at),
        };
        self.entries.insert(
            key.to_owned(),
            Entry {
                data: Data::String(value),
                expires_at,
            },
        );
        self.wrote();
    }

    fn what_incr_sees(&mut self, key: &str) -> Known {
        match self.live(key) {
            None => Known::Absent,
            Some(Entry {
                data: Data::String(bytes),
                ..
            }) => Known::of_string(bytes),
            Some(_) => Known::WrongType,
        }
    }
}

impl MemoryBackend {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under the lock, and every write leaves the map consistent before
        // anything can panic, so a poisoned lock still holds good data.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn list_where(&self, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let mut state = self.lock();
        let now = Instant::now();
        state.entries.retain(|_, e| !e.expired(now));
        let mut keys: Vec<String> = state
            .entries
            .keys()
            .filter(|k| wanted(k))
            .cloned()
            .collect();
        keys.sort();
        keys
    }
}

impl Backend for MemoryBackend {
    fn target(&self, key: &str) -> String {
        target(key)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().string(key, "GET")?.map(|b| b.clone()))
    }

    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Vec<u8>, Option<Duration>)>> {
        let mut state = self.lock();
        let Some(entry) = state.live(key) else {
            return Ok(None);
        };
        let ttl = remaining(entry);
        match &entry.data {
            Data::String(bytes) => Ok(Some((bytes.clone(), ttl))),
            Data::Hash(_) => Err(wrong_type("GET", &target(key))),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.lock().live(key).is_some())
    }

    async fn ttl(&self, key: &str) -> Result<Ttl> {
        Ok(match self.lock().live(key) {
            None => Ttl::Missing,
            Some(entry) => remaining(entry).map_or(Ttl::Persistent, Ttl::ExpiresIn),
        })
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut state = self.lock();
        Ok(keys
            .iter()
            .map(|key| match state.live(key) {
                // Like MGET: anything but a string reads as absent.
                Some(Entry {
                    data: Data::String(bytes),
                    ..
                }) => Some(bytes.clone()),
                _ => None,
            })
            .collect())
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<()> {
        self.lock().set(key, value, SetExpiry::from_ttl(ttl));
        Ok(())
    }

    async fn set_many(&self, items: Items, ttl: Option<Duration>) -> Result<()> {
        let mut state = self.lock();
        let expiry = SetExpiry::from_ttl(ttl);
        for (key, value) in items.iter() {
            state.set(key, value.to_vec(), expiry);
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.lock().entries.remove(key);
        Ok(())
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        Ok(match self.lock().live(key) {
            None => false,
            Some(entry) => {
                entry.expires_at = deadline(Some(ttl));
                true
            }
        })
    }

    async fn persist(&self, key: &str) -> Result<bool> {
        Ok(match self.lock().live(key) {
            Some(entry) if entry.expires_at.is_some() => {
                entry.expires_at = None;
                true
            }
            _ => false,
        })
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        expiry: SetExpiry,
    ) -> Result<bool> {
        let mut state = self.lock();
        let current = state
            .string(key, "GET")?
            .map(|b| b.as_slice() == expected.unwrap_or_default());
        let matches = match (current, expected) {
            (None, None) => true,
            (Some(equal), Some(_)) => equal,
            _ => false,
        };
        if matches {
            state.set(key, new, expiry);
        }
        Ok(matches)
    }

    async fn incr_by(&self, key: &str, by: i64, ttl_if_new: Option<Duration>) -> Result<i64> {
        let mut state = self.lock();
        let result = match state.string(key, "INCRBY")? {
            Some(bytes) => {
                let current =
                    parse_redis_int(bytes).ok_or_else(|| not_an_integer("INCRBY", &target(key)))?;
                let next = current
                    .checked_add(by)
                    .ok_or_else(|| overflow("INCRBY", &target(key)))?;
                *bytes = next.to_string().into_bytes();
                next
            }
            None => {
                state.set(
                    key,
                    by.to_string().into_bytes(),
                    SetExpiry::from_ttl(ttl_if_new),
                );
                by
            }
        };
        state.wrote();
        Ok(result)
    }

    async fn hset(
        &self,
        key: &str,
        field: &str,
        value: Vec<u8>,
        ttl_if_new: Option<Duration>,
    ) -> Result<bool> {
        let mut state = self.lock();
        let added = match state.hash(key, "HSET")? {
            Some(fields) => fields.insert(field.to_owned(), value).is_none(),
            None => {
                state.entries.insert(
                    key.to_owned(),
                    Entry {
                        data: Data::Hash(BTreeMap::from([(field.to_owned(), value)])),
                        expires_at: deadline(ttl_if_new),
                    },
                );
                true
            }
        };
        state.wrote();
        Ok(added)
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .lock()
            .hash(key, "HGET")?
            .and_then(|fields| fields.get(field).cloned()))
    }

    async fn hgetall(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self
            .lock()
            .hash(key, "HGETALL")?
            .map(|fields| fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    async fn hincr_by(
        &self,
        key: &str,
        field: &str,
        by: i64,
        ttl_if_new: Option<Duration>,
    ) -> Result<i64> {
        let mut state = self.lock();
        let result = match state.hash(key, "HINCRBY")? {
            Some(fields) => {
                let current = match fields.get(field) {
                    None => 0,
                    Some(bytes) => parse_redis_int(bytes).ok_or_else(|| {
                        let mut err = not_an_integer(
                            "HINCRBY",
                            &format!("field {field:?} of {}", target(key)),
                        );
                        if let redstream_core::Error::Backend { message, .. } = &mut err {
                            *message =
                                "ERR hash value is not an integer (nothing was changed)".to_owned();
                        }
                        err
                    })?,
                };
                let next = current.checked_add(by).ok_or_else(|| {
                    overflow("HINCRBY", &format!("field {field:?} of {}", target(key)))
                })?;
                fields.insert(field.to_owned(), next.to_string().into_bytes());
                next
            }
            None => {
                state.entries.insert(
                    key.to_owned(),
                    Entry {
                        data: Data::Hash(BTreeMap::from([(
                            field.to_owned(),
                            by.to_string().into_bytes(),
                        )])),
                        expires_at: deadline(ttl_if_new),
                    },
                );
                by
            }
        };
        state.wrote();
        Ok(result)
    }

    async fn hdel(&self, key: &str, field: &str) -> Result<bool> {
        let mut state = self.lock();
        let Some(fields) = state.hash(key, "HDEL")? else {
            return Ok(false);
        };
        let removed = fields.remove(field).is_some();
        // Like Redis: a hash without fields does not exist.
        if fields.is_empty() {
            state.entries.remove(key);
        }
        Ok(removed)
    }

    /// The live keys starting with `key_prefix`, sorted.
    async fn list(&self, key_prefix: &str) -> Result<Vec<String>> {
        Ok(self.list_where(|key| key.starts_with(key_prefix)))
    }

    /// The live keys matching the glob `glob` as Redis's `MATCH` reads it, sorted.
    async fn list_matching(&self, glob: &str) -> Result<Vec<String>> {
        Ok(self.list_where(|key| glob_match(glob.as_bytes(), key.as_bytes())))
    }

    /// Applies a transaction: plans it on the current values, then applies every write, all
    /// under the lock.
    async fn transaction(&self, ops: &[TxOp], implicit_ttl: Option<Duration>) -> Result<Vec<i64>> {
        let mut state = self.lock();
        let plan = {
            let state = &mut *state;
            let mut seen: HashMap<String, Known> = HashMap::new();
            for op in ops {
                if let TxOp::IncrBy { key, .. } = op
                    && !seen.contains_key(key)
                {
                    let known = state.what_incr_sees(key);
                    seen.insert(key.clone(), known);
                }
            }
            plan(
                ops,
                |k| seen.get(k).copied().unwrap_or(Known::Absent),
                target,
            )?
        };
        let mut results = plan.results.iter();
        for (op, creates) in ops.iter().zip(&plan.creates) {
            match op {
                TxOp::Put { key, value, ttl } => {
                    let expiry = SetExpiry::from_ttl(ttl.or(implicit_ttl));
                    state.set(key, value.clone(), expiry);
                }
                TxOp::Delete { key } => {
                    state.entries.remove(key);
                }
                TxOp::IncrBy { key, .. } => {
                    let Some(next) = results.next() else { break };
                    let bytes = next.to_string().into_bytes();
                    if *creates {
                        state.set(key, bytes, SetExpiry::from_ttl(implicit_ttl));
                    } else {
                        state.set(key, bytes, SetExpiry::Keep);
                    }
                }
            }
        }
        Ok(plan.results)
    }

    async fn save_checkpoint(
        &self,
        name: &str,
        checkpoint: RawCheckpoint,
        implicit_ttl: Option<Duration>,
    ) -> Result<()> {
        let mut state = self.lock();
        for (key, value) in &checkpoint.state {
            state.set(key, value.clone(), SetExpiry::from_ttl(implicit_ttl));
        }
        state.checkpoints.insert(name.to_owned(), checkpoint);
        Ok(())
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<RawCheckpoint>> {
        Ok(self.lock().checkpoints.get(name).cloned())
    }

    async fn restore_checkpoint(
        &self,
        name: &str,
        implicit_ttl: Option<Duration>,
    ) -> Result<Option<RawCheckpoint>> {
        let mut state = self.lock();
        let Some(checkpoint) = state.checkpoints.get(name).cloned() else {
            return Ok(None);
        };
        for (key, value) in &checkpoint.state {
            state.set(key, value.clone(), SetExpiry::from_ttl(implicit_ttl));
        }
        Ok(Some(checkpoint))
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<bool> {
        Ok(self.lock().checkpoints.remove(name).is_some())
    }
}

/// The time left before `entry` expires, rounded to the millisecond as `PTTL` does.
fn remaining(entry: &Entry) -> Option<Duration> {
    let left = entry.expires_at?.saturating_duration_since(Instant::now());
    Some(Duration::from_millis(
        u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
    ))
}
