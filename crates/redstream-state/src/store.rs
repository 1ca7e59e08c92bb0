//! [`StateStore`]: the async API, over the memory or the Redis backend.
//!
//! The store validates what the caller gives (keys, TTLs, checkpoint names), encodes and
//! decodes values (see [`value`](crate::value)), resolves TTLs, and calls its backend stack, an
//! [`AnyBackend`], once per operation through the crate-private [`Backend`] trait. Both
//! backends implement every operation with the same semantics; on Redis, the circuit breaker
//! and, when configured, the [fallback](crate::fallback) are [layers](crate::layer) of that
//! stack, not code of the store's.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redstream_core::{CircuitBreakerStats, Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{AnyBackend, Backend, Items, SetExpiry, backoff, contention};
use crate::checkpoint::{Checkpoint, RawCheckpoint, check_name, now_ms};
use crate::config::{StateBackend, StateConfig, validate_ttl};
use crate::fallback::FallbackStats;
use crate::transaction::{Transaction, check_key};
use crate::value::{decode, encode, encode_into};

/// How long a key has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key does not exist (or has expired).
    Missing,
    /// The key exists and does not expire.
    Persistent,
    /// The key expires after this long (to the millisecond).
    ExpiresIn(Duration),
}

impl Ttl {
    /// The time left, for a key that expires.
    #[must_use]
    pub fn remaining(self) -> Option<Duration> {
        match self {
            Self::ExpiresIn(d) => Some(d),
            _ => None,
        }
    }
}

/// A value read by [`StateStore::get_with_meta`], and whether it is stale.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Read<T> {
    /// The value, `None` if the key does not exist (or, when stale, did not when last seen).
    pub value: Option<T>,
    /// `true` when the value did not come from the backend just now: Redis was unavailable
    /// and the [fallback](crate::fallback) answered from its cache, or the key has buffered
    /// writes not yet replayed and this is the newest of them. Always `false` for the memory
    /// backend and when the fallback is off.
    pub stale: bool,
}

/// A key-value store for stream-processing state, in Redis or in memory.
///
/// Cloning is cheap: clones share the connection (or the memory map), the circuit breaker
/// and the fallback. Every method takes `&self`, and the futures are `Send`.
///
/// Values are any `Serialize` / `DeserializeOwned` type, stored as JSON (see
/// [`value`](crate::value)); [`Value`](crate::Value) is seed 001's dynamic value. Keys are
/// any non-empty text; in Redis they live under the configured prefix (see
/// [`keys`](crate::keys)).
///
/// ```no_run
/// use std::time::Duration;
/// use redstream_state::{StateBackend, StateStore, Value};
///
/// # async fn demo() -> redstream_state::Result<()> {
/// let store = StateStore::new(StateBackend::Redis {
///     url: "redis://127.0.0.1:6379".to_string(),
///     key_prefix: "myapp".to_string(),
/// })
/// .await?;
/// store.put("counter", Value::Integer(42)).await?; // SET myapp:counter 42
/// let value: Option<Value> = store.get("counter").await?;
/// assert_eq!(value, Some(Value::Integer(42)));
/// store
///     .put_with_ttl("session_key", "token", Duration::from_secs(3600))
///     .await?;
/// assert_eq!(store.incr("counter").await?, 43);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct StateStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: StateConfig,
    backend: AnyBackend,
}

impl fmt::Debug for StateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("StateStore");
        s.field("config", &self.inner.config);
        if let Some(circuit) = self.inner.backend.circuit_state() {
            s.field("circuit", &circuit);
        }
        s.finish_non_exhaustive()
    }
}

impl StateStore {
    /// Opens a store on `backend` with the default [`StateConfig`].
    ///
    /// For Redis this connects, and checks the credentials and the permission to use the
    /// prefix's keys, before returning: a wrong password or a missing ACL permission fails
    /// here, with [`ErrorKind::Auth`](redstream_core::ErrorKind::Auth) or
    /// [`PermissionDenied`](redstream_core::ErrorKind::PermissionDenied).
    pub async fn new(backend: StateBackend) -> Result<Self> {
        Self::with_config(StateConfig::new(backend)).await
    }

    /// Opens a store as `config` says, once it is [valid](StateConfig::validate).
    pub async fn with_config(config: StateConfig) -> Result<Self> {
        config.validate()?;
        let backend = AnyBackend::open(&config).await?;
        Ok(Self {
            inner: Arc::new(Inner { config, backend }),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &StateConfig {
        &self.inner.config
    }

    /// The Redis key that holds `key`, e.g. `myapp:counter` (`{myapp}:counter` in the cluster
    /// layout); `None` for the memory backend.
    #[must_use]
    pub fn redis_key(&self, key: &str) -> Option<String> {
        self.inner.backend.redis_key(key)
    }

    /// The state and counters of the circuit breaker in front of Redis; `None` for memory.
    #[must_use]
    pub fn circuit_breaker_stats(&self) -> Option<CircuitBreakerStats> {
        self.inner.backend.circuit_breaker_stats()
    }

    /// The fallback's counters; `None` when the fallback is off or the backend is memory.
    #[must_use]
    pub fn fallback_stats(&self) -> Option<FallbackStats> {
        self.inner.backend.fallback_stats()
    }

    /// Waits until every write buffered by the fallback has been replayed to Redis (or
    /// dropped, which [`fallback_stats`](Self::fallback_stats) counts). Returns at once when
    /// nothing is buffered. Wrap it in a timeout to bound the wait.
    pub async fn flush(&self) {
        self.inner.backend.flush().await;
    }

    /// How `key` is named in errors.
    fn target(&self, key: &str) -> String {
        self.inner.backend.target(key)
    }

    fn backend(&self) -> &AnyBackend {
        &self.inner.backend
    }

    fn implicit_ttl(&self) -> Option<Duration> {
        self.inner.config.implicit_ttl()
    }

    // ----- reads -------------------------------------------------------------------------

    /// The value under `key`, or `None` if there is none (an expired key is never returned).
    ///
    /// Fails with [`ErrorKind::WrongType`](redstream_core::ErrorKind::WrongType) if the key
    /// holds a hash, and [`ErrorKind::Decode`](redstream_core::ErrorKind::Decode) if its JSON
    /// is not a `T`. With the [fallback](crate::fallback) on, may answer from the local cache
    /// while Redis is unavailable: use [`get_with_meta`](Self::get_with_meta) to know.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        Ok(self.get_with_meta(key).await?.value)
    }

    /// Like [`get`](Self::get), saying whether the value is [stale](Read::stale).
    pub async fn get_with_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Read<T>> {
        check_key(key)?;
        let Read { value: raw, stale } = self.backend().read(key).await?;
        let value = match raw {
            Some(bytes) => Some(decode(|| self.target(key), &bytes)?),
            None => None,
        };
        Ok(Read { value, stale })
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.backend().exists(key).await
    }

    /// How long `key` has left.
    pub async fn ttl(&self, key: &str) -> Result<Ttl> {
        check_key(key)?;
        self.backend().ttl(key).await
    }

    /// The values under `keys`, in the same order, in one round trip (`MGET`). A key that
    /// does not exist, or holds a hash, reads as `None`. On a Redis Cluster in the plain key
    /// layout, keys of different slots are read with one `MGET` per slot: each slot's keys at
    /// one instant, not all of them together.
    pub async fn get_many<T, K>(&self, keys: &[K]) -> Result<Vec<Option<T>>>
    where
        T: DeserializeOwned,
        K: AsRef<str>,
    {
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        for key in &keys {
            check_key(key)?;
        }
        let raw = self.backend().get_many(&keys).await?;
        keys.iter()
            .zip(raw)
            .map(|(key, bytes)| match bytes {
                Some(bytes) => decode(|| self.target(key), &bytes).map(Some),
                None => Ok(None),
            })
            .collect()
    }

    /// The keys of this store that start with `key_prefix` (all of them for `""`), sorted.
    ///
    /// `key_prefix` is literal text, not a pattern: in Redis the listing is a `SCAN` whose
    /// `MATCH` pattern escapes the glob characters of the store's prefix and of `key_prefix`,
    /// so it never returns keys of another prefix. `SCAN` does not block the server, but it
    /// is not a snapshot: a key written or deleted while the listing runs may or may not be
    /// in it. On a Redis Cluster the `SCAN` runs on every master in turn. Checkpoints are not
    /// keys and are never listed.
    pub async fn list_keys(&self, key_prefix: &str) -> Result<Vec<String>> {
        self.backend().list(key_prefix).await
    }

    /// The keys of this store that match the glob `pattern` (all of them for `"*"`), sorted:
    /// `*` matches any text, `?` one character, `[abc]`, `[^abc]` and `[a-z]` one character of
    /// (or not of) a set, and `\` makes the next character literal, as in Redis's `SCAN ...
    /// MATCH`. Use [`list_keys`](Self::list_keys) for a literal key prefix.
    ///
    /// The pattern applies to the keys without the store's prefix: `user:*` lists `user:1`, and
    /// never a key of another store. In Redis it is one `SCAN` walk over
    /// `<escaped prefix>:<pattern>` ([`Keys::glob_pattern`](crate::Keys::glob_pattern)), with
    /// the guarantees of [`list_keys`](Self::list_keys). Checkpoints are never listed.
    pub async fn list_keys_matching(&self, pattern: &str) -> Result<Vec<String>> {
        self.backend().list_matching(pattern).await
    }

    // ----- writes ------------------------------------------------------------------------

    /// Stores `value` under `key`, replacing any value (and any TTL) it had. The key expires
    /// after the default TTL if [`enable_ttl`](StateConfig::enable_ttl) is on.
    pub async fn put<V: Serialize>(&self, key: &str, value: V) -> Result<()> {
        check_key(key)?;
        let bytes = encode(|| self.target(key), &value)?;
        self.backend().set(key, bytes, self.implicit_ttl()).await
    }

    /// Stores `value` under `key`, expiring after `ttl` (at least 1 ms).
    pub async fn put_with_ttl<V: Serialize>(
        &self,
        key: &str,
        value: V,
        ttl: Duration,
    ) -> Result<()> {
        check_key(key)?;
        validate_ttl(&format!("TTL for key {key:?}"), ttl)?;
        let bytes = encode(|| self.target(key), &value)?;
        self.backend().set(key, bytes, Some(ttl)).await
    }

    /// Stores every `(key, value)` in one round trip, all at once: one `MSET`, or, with a
    /// default TTL, one all-or-nothing script of `SET .. PX` that checks every `SET`'s
    /// permission before its first write (core's `redstream_core::atomic` guarantees, in a
    /// script of this crate's own for this one shape). Each key expires after the default TTL
    /// if it is on. On a Redis Cluster in the plain key layout, keys of different slots fail
    /// with [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput) naming their
    /// slots, and nothing is written (as for transactions and checkpoints).
    pub async fn put_many<K, V, I>(&self, items: I) -> Result<()>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Serialize,
    {
        self.put_many_raw(items, self.implicit_ttl()).await
    }

    /// Like [`put_many`](Self::put_many), every key expiring after `ttl`.
    pub async fn put_many_with_ttl<K, V, I>(&self, items: I, ttl: Duration) -> Result<()>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Serialize,
    {
        validate_ttl("TTL for put_many", ttl)?;
        self.put_many_raw(items, Some(ttl)).await
    }

    async fn put_many_raw<K, V, I>(&self, items: I, ttl: Option<Duration>) -> Result<()>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Serialize,
    {
        let items = items.into_iter();
        let mut encoded = Items::with_capacity(items.size_hint().0);
        for (key, value) in items {
            let key = key.as_ref();
            check_key(key)?;
            encoded.push_with(key, |values| {
                encode_into(|| self.target(key), &value, values)
            })?;
        }
        if encoded.is_empty() {
            return Ok(());
        }
        self.backend().set_many(encoded, ttl).await
    }

    /// Deletes `key`; deleting a key that does not exist is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.backend().delete(key).await
    }

    /// Sets `key` to expire after `ttl`; `false` if it does not exist.
    pub async fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        check_key(key)?;
        validate_ttl(&format!("TTL for key {key:?}"), ttl)?;
        self.backend().expire(key, ttl).await
    }

    /// Removes the TTL of `key`; `false` if it does not exist or has no TTL.
    pub async fn persist(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.backend().persist(key).await
    }

    /// Replaces the value under `key` with `f(current)`, atomically against every other
    /// writer, in this process or another, and returns the new value.
    ///
    /// Optimistic: the value is read, `f` computes the new one, and a compare-and-set writes
    /// it only if the key still holds what was read (its exact bytes); otherwise `f` runs
    /// again on the newer value, after a short random pause, up to
    /// [`update_max_attempts`](StateConfig::update_max_attempts) times. So `f` may run more
    /// than once and should have no side effects. The key keeps the TTL it has; a key that
    /// did not exist gets the default TTL, if on. Giving up fails with a retryable
    /// [`ErrorKind::Unavailable`](redstream_core::ErrorKind::Unavailable) error.
    ///
    /// ```no_run
    /// # async fn demo(store: redstream_state::StateStore) -> redstream_state::Result<()> {
    /// let visits: u64 = store.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn update<T, F>(&self, key: &str, f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send,
        F: FnMut(Option<T>) -> T + Send,
    {
        self.update_inner(key, None, f).await
    }

    /// Like [`update`](Self::update), and the key then expires after `ttl`.
    pub async fn update_with_ttl<T, F>(&self, key: &str, ttl: Duration, f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send,
        F: FnMut(Option<T>) -> T + Send,
    {
        validate_ttl(&format!("TTL for key {key:?}"), ttl)?;
        self.update_inner(key, Some(ttl), f).await
    }

    async fn update_inner<T, F>(&self, key: &str, ttl: Option<Duration>, mut f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send,
        F: FnMut(Option<T>) -> T + Send,
    {
        check_key(key)?;
        let attempts = self.inner.config.update_max_attempts;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // From the backend itself, never from the fallback's cache.
            let current = self.backend().get(key).await?;
            let old = match &current {
                Some(bytes) => Some(decode::<T>(|| self.target(key), bytes)?),
                None => None,
            };
            let new = f(old);
            let bytes = encode(|| self.target(key), &new)?;
            let expiry = match (ttl, current.is_some()) {
                (Some(ttl), _) => SetExpiry::After(ttl),
                (None, true) => SetExpiry::Keep,
                (None, false) => SetExpiry::from_ttl(self.implicit_ttl()),
            };
            if self
                .backend()
                .compare_and_set(key, current.as_deref(), bytes, expiry)
                .await?
            {
                return Ok(new);
            }
            if attempt >= attempts {
                return Err(contention("update", &self.target(key), attempt));
            }
            backoff(attempt).await;
        }
    }

    /// Writes `new` under `key` only if the key holds `expected` (`None`: only if it does not
    /// exist), atomically; returns whether it did.
    ///
    /// The comparison is of the stored JSON, byte for byte, with the JSON of `expected`: use
    /// types whose encoding is deterministic (a `BTreeMap`, not a `HashMap`, for maps). The
    /// key keeps its TTL; a key created gets the default TTL, if on.
    pub async fn compare_and_set<V: Serialize>(
        &self,
        key: &str,
        expected: Option<V>,
        new: V,
    ) -> Result<bool> {
        check_key(key)?;
        let expected = match expected {
            Some(value) => Some(encode(|| self.target(key), &value)?),
            None => None,
        };
        let new = encode(|| self.target(key), &new)?;
        let expiry = match expected {
            Some(_) => SetExpiry::Keep,
            None => SetExpiry::from_ttl(self.implicit_ttl()),
        };
        self.backend()
            .compare_and_set(key, expected.as_deref(), new, expiry)
            .await
    }

    /// Adds 1 to the integer under `key` and returns the result. See [`incr_by`](Self::incr_by).
    pub async fn incr(&self, key: &str) -> Result<i64> {
        self.incr_by(key, 1).await
    }

    /// Subtracts 1 from the integer under `key` and returns the result.
    pub async fn decr(&self, key: &str) -> Result<i64> {
        self.incr_by(key, -1).await
    }

    /// Subtracts `by` from the integer under `key` and returns the result.
    pub async fn decr_by(&self, key: &str, by: i64) -> Result<i64> {
        let by = by.checked_neg().ok_or_else(|| {
            Error::invalid_input(format!("decrement of key {key:?}"), "is i64::MIN")
        })?;
        self.incr_by(key, by).await
    }

    /// Adds `by` to the integer under `key`, atomically (`INCRBY`), and returns the result.
    ///
    /// An absent key counts as 0 and is created with the default TTL, if on; an existing key
    /// keeps its TTL. The value must be an integer (as `put` stores one, e.g. `put(key, 41)`);
    /// otherwise, or on overflow, the call fails with
    /// [`ErrorKind::Server`](redstream_core::ErrorKind::Server) and nothing changes.
    pub async fn incr_by(&self, key: &str, by: i64) -> Result<i64> {
        check_key(key)?;
        let ttl = self.implicit_ttl();
        self.backend().incr_by(key, by, ttl).await
    }

    // ----- hashes ------------------------------------------------------------------------

    /// Sets `field` of the hash `key` to `value`; returns whether the field is new. A hash
    /// created gets the default TTL, if on. Each field holds its value's JSON.
    pub async fn hset<V: Serialize>(&self, key: &str, field: &str, value: V) -> Result<bool> {
        check_key(key)?;
        let bytes = encode(
            || format!("field {field:?} of {}", self.target(key)),
            &value,
        )?;
        let ttl = self.implicit_ttl();
        self.backend().hset(key, field, bytes, ttl).await
    }

    /// The value of `field` in the hash `key`.
    pub async fn hget<T: DeserializeOwned>(&self, key: &str, field: &str) -> Result<Option<T>> {
        check_key(key)?;
        let raw = self.backend().hget(key, field).await?;
        match raw {
            Some(bytes) => decode(
                || format!("field {field:?} of {}", self.target(key)),
                &bytes,
            )
            .map(Some),
            None => Ok(None),
        }
    }

    /// Every field of the hash `key` (empty if it does not exist).
    pub async fn hgetall<T: DeserializeOwned>(&self, key: &str) -> Result<HashMap<String, T>> {
        check_key(key)?;
        let raw = self.backend().hgetall(key).await?;
        let target = self.target(key);
        raw.into_iter()
            .map(|(field, bytes)| {
                let value = decode(|| format!("field {field:?} of {target}"), &bytes)?;
                Ok((field, value))
            })
            .collect()
    }

    /// Adds `by` to the integer in `field` of the hash `key` (`HINCRBY`) and returns the
    /// result. An absent field counts as 0; a hash created gets the default TTL, if on.
    pub async fn hincr_by(&self, key: &str, field: &str, by: i64) -> Result<i64> {
        check_key(key)?;
        let ttl = self.implicit_ttl();
        self.backend().hincr_by(key, field, by, ttl).await
    }

    /// Removes `field` from the hash `key`; returns whether it was there. A hash left without
    /// fields no longer exists.
    pub async fn hdel(&self, key: &str, field: &str) -> Result<bool> {
        check_key(key)?;
        self.backend().hdel(key, field).await
    }

    // ----- transactions and checkpoints --------------------------------------------------

    /// Applies every write of `tx` atomically: no other client sees some of them without the
    /// others, and if one would fail (an increment of a key holding text, or a hash), none is
    /// applied. Returns the new values of the increments, in order. On a Redis Cluster its
    /// keys must share a slot (always so in the cluster key layout, the default there);
    /// otherwise it fails with [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput)
    /// naming the slots, before anything is sent.
    ///
    /// See the [`transaction`](crate::transaction) module for how this is done.
    pub async fn transaction(&self, tx: Transaction) -> Result<Vec<i64>> {
        let ops = tx.into_ops()?;
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let implicit_ttl = self.implicit_ttl();
        self.backend().transaction(&ops, implicit_ttl).await
    }

    /// Saves the checkpoint `name`: `position` (where the processor is in its input) and the
    /// `snapshot` of its state, in one transaction. Each `(key, value)` of the snapshot is
    /// also written to its key, as [`put`](Self::put) would.
    ///
    /// See the [`checkpoint`](crate::checkpoint) module.
    ///
    /// ```no_run
    /// # async fn demo(store: redstream_state::StateStore) -> redstream_state::Result<()> {
    /// let (count, total) = (12_u64, 1_234_u64);
    /// store
    ///     .save_checkpoint("orders", "1700000000000-3", [("count", count), ("total", total)])
    ///     .await?;
    /// let checkpoint = store.load_checkpoint::<u64>("orders").await?.expect("saved above");
    /// assert_eq!(checkpoint.position, "1700000000000-3");
    /// assert_eq!(checkpoint.state["total"], 1_234);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn save_checkpoint<K, V, I>(
        &self,
        name: &str,
        position: &str,
        snapshot: I,
    ) -> Result<()>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Serialize,
    {
        check_name(name)?;
        let mut state: Vec<(String, Vec<u8>)> = Vec::new();
        for (key, value) in snapshot {
            let key = key.as_ref();
            check_key(key)?;
            state.push((key.to_owned(), encode(|| self.target(key), &value)?));
        }
        state.sort_by(|a, b| a.0.cmp(&b.0));
        state.dedup_by(|later, earlier| {
            // Keep the last value given for a key, as successive puts would.
            if later.0 == earlier.0 {
                std::mem::swap(later, earlier);
                true
            } else {
                false
            }
        });
        let raw = RawCheckpoint {
            position: position.to_owned(),
            saved_at_ms: now_ms(),
            state,
        };
        let implicit_ttl = self.implicit_ttl();
        self.backend()
            .save_checkpoint(name, raw, implicit_ttl)
            .await
    }

    /// The checkpoint `name` as it was saved, or `None` if there is none.
    pub async fn load_checkpoint<V: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<Checkpoint<V>>> {
        check_name(name)?;
        let raw = self.backend().load_checkpoint(name).await?;
        raw.map(|raw| raw.decode(name, |k| self.target(k)))
            .transpose()
    }

    /// Loads the checkpoint `name` and writes its snapshot back to the state keys (in one
    /// transaction), for a processor that restarts from it. `None` if there is none.
    ///
    /// Atomic against a concurrent [`save_checkpoint`](Self::save_checkpoint) of the same
    /// name: the record is watched while it is read, and a save in between makes the restore
    /// start again from the new record, so it never writes an older snapshot over a newer
    /// one. Under constant contention it gives up after `update_max_attempts` with a
    /// retryable error.
    pub async fn restore_checkpoint<V: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<Checkpoint<V>>> {
        check_name(name)?;
        let implicit_ttl = self.implicit_ttl();
        let raw = self
            .backend()
            .restore_checkpoint(name, implicit_ttl)
            .await?;
        raw.map(|raw| raw.decode(name, |k| self.target(k)))
            .transpose()
    }

    /// Deletes the checkpoint `name` (not its state keys); returns whether it existed.
    pub async fn delete_checkpoint(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        self.backend().delete_checkpoint(name).await
    }
}
