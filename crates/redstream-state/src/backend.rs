//! The one (crate-private) interface of the state backends: [`Backend`], one method per raw
//! operation, on keys as the caller gives them and values already encoded.
//!
//! Two backends implement it, with the same semantics: [`MemoryBackend`] (a map in the
//! process) and [`RedisBackend`] (the commands each operation sends). Layers implement it too,
//! wrapping a backend as opendal's layers wrap an accessor
//! ([`layer`](crate::layer)): [`CircuitBreakerLayer`] sends every call through the circuit
//! breaker, [`FallbackLayer`] adds the [fallback](crate::fallback)'s stale reads and buffered
//! writes around it. A store on Redis is one of
//!
//! ```text
//! CircuitBreakerLayer<RedisBackend>                  fallback off
//! FallbackLayer<CircuitBreakerLayer<RedisBackend>>   fallback on
//! ```
//!
//! and a store in memory is the bare [`MemoryBackend`] (no breaker, no fallback).
//! [`StateStore`](crate::StateStore) validates input, encodes and decodes values, and calls
//! [`AnyBackend`], the enum of these three, once per operation.
//!
//! # Dispatch
//!
//! Static, with no allocation per call. Every method returns `impl Future + Send` (written
//! `async fn` in the impls): the store's futures must be `Send`, and so must the fallback's
//! replay task, which is generic over the backend it writes to. Layers are generic over the
//! backend they wrap, so a stack is one concrete type whose calls inline, and [`AnyBackend`]
//! picks one of three stacks with one `match` per method (the `dispatch_async!` macro below):
//! its future holds the in-memory or plain Redis stack's future inline, and the fallback
//! stack's boxed (for writes it is the largest: `put`'s future is 2,680 bytes with it inline,
//! 1,976 with it boxed, and every call's future is as large as its largest arm). A `dyn Backend` would need a boxed future per call on the hot path,
//! and making `StateStore` generic would change the public API.
//!
//! # Provided methods
//!
//! [`read`](Backend::read) (the read behind `get`, which a layer may answer from elsewhere,
//! saying so with `stale`) and the introspection methods (the breaker's state, the fallback's
//! counters, `flush`, the Redis key of a key) have defaults for the two backends. **Every layer
//! forwards each of them to the backend it wraps, or answers itself**: a default left in place
//! by a layer would hide what is below it.

use std::future::Future;
use std::time::Duration;

use redstream_core::{CircuitBreakerStats, CircuitState, Error, ErrorKind, Result};

use crate::checkpoint::RawCheckpoint;
use crate::config::{FallbackMode, StateBackend, StateConfig};
use crate::fallback::FallbackStats;
use crate::layer::{CircuitBreakerLayer, FallbackLayer};
use crate::memory::MemoryBackend;
use crate::redis_backend::RedisBackend;
use crate::store::{Read, Ttl};
use crate::transaction::TxOp;

/// How a `SET` treats the key's TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetExpiry {
    /// No TTL (a `SET` without options clears the old one).
    Persist,
    /// Expire after this long.
    After(Duration),
    /// Keep the key's current TTL (`KEEPTTL`).
    Keep,
}

impl SetExpiry {
    /// `After(ttl)`, or `Persist` without a TTL.
    pub(crate) fn from_ttl(ttl: Option<Duration>) -> Self {
        ttl.map_or(Self::Persist, Self::After)
    }
}

/// The keys and encoded values of one `put_many`, in two buffers: every key in one string,
/// every value in one byte vector, and where each ends. A `Vec<(String, Vec<u8>)>` made two
/// allocations per key, each freed only once the whole batch was sent; the raw loop it is
/// measured against frees each value as soon as it is in the command, and the scattered
/// allocations cost the store about five times its data-cache misses (`docs/performance.md`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Items {
    keys: String,
    values: Vec<u8>,
    /// The end of each item's key in `keys` and of its value in `values`.
    ends: Vec<(usize, usize)>,
}

impl Items {
    /// Room for `items` items.
    pub(crate) fn with_capacity(items: usize) -> Self {
        Self {
            keys: String::new(),
            values: Vec::new(),
            ends: Vec::with_capacity(items),
        }
    }

    /// Adds `key` with the value `write` appends to the values; if `write` fails, nothing of
    /// the item is kept.
    pub(crate) fn push_with<E>(
        &mut self,
        key: &str,
        write: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let start = self.values.len();
        if let Err(err) = write(&mut self.values) {
            self.values.truncate(start);
            return Err(err);
        }
        self.keys.push_str(key);
        self.ends.push((self.keys.len(), self.values.len()));
        Ok(())
    }

    /// Adds `key` with `value`.
    #[cfg(test)]
    pub(crate) fn push(&mut self, key: &str, value: &[u8]) {
        let pushed: std::result::Result<(), std::convert::Infallible> =
            self.push_with(key, |values| {
                values.extend_from_slice(value);
                Ok(())
            });
        let Ok(()) = pushed;
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Each item's key and value, in order.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> + Clone + '_ {
        let mut start = (0, 0);
        self.ends.iter().map(move |&(key_end, value_end)| {
            let (key_start, value_start) = std::mem::replace(&mut start, (key_end, value_end));
            (
                self.keys.get(key_start..key_end).unwrap_or_default(),
                self.values.get(value_start..value_end).unwrap_or_default(),
            )
        })
    }

    /// Each item's key, in order.
    pub(crate) fn keys(&self) -> impl ExactSizeIterator<Item = &str> + Clone + '_ {
        self.iter().map(|(key, _)| key)
    }

    /// The first item's key, if any.
    pub(crate) fn first_key(&self) -> Option<&str> {
        self.keys().next()
    }
}

/// A state backend, or a layer around one. See the [module](self) docs.
///
/// Keys are the caller's (non-empty: the store checks); values are the encoded bytes, passed
/// by value so that what the store encoded moves down the stack without a copy (only the
/// fallback, which keeps a write to replay or remember it, copies one). An `Option<Duration>`
/// named `ttl_if_new` or `implicit_ttl` is the store's default TTL, applied to keys the
/// operation creates. Errors name the key as [`target`](Self::target) does.
pub(crate) trait Backend: Send + Sync {
    /// How `key` is named in errors.
    fn target(&self, key: &str) -> String;

    /// The value under `key`, read from the backend itself (never from a cache): the read of
    /// an `update` before its compare-and-set.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// The value under `key` and its remaining TTL (`None`: persistent).
    fn get_with_ttl(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<(Vec<u8>, Option<Duration>)>>> + Send;

    /// The value under `key` for `get` and `get_with_meta`, and whether it is stale (a layer
    /// answered it from elsewhere). The backends read with [`get`](Self::get), never stale.
    fn read(&self, key: &str) -> impl Future<Output = Result<Read<Vec<u8>>>> + Send {
        async move {
            Ok(Read {
                value: self.get(key).await?,
                stale: false,
            })
        }
    }

    /// Whether `key` exists.
    fn exists(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// How long `key` has left.
    fn ttl(&self, key: &str) -> impl Future<Output = Result<Ttl>> + Send;

    /// The values under `keys`, in order; anything but a string value reads as `None`.
    fn get_many(&self, keys: &[&str]) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>>> + Send;

    /// `SET key value`, with a TTL or none (clearing the old one).
    fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Every `(key, value)` at once, each with the TTL or none.
    fn set_many(
        &self,
        items: Items,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Deletes `key`, if it exists. (Whether it did is not known when the write is buffered.)
    fn delete(&self, key: &str) -> impl Future<Output = Result<()>> + Send;

    /// Sets `key` to expire after `ttl`; `false` if it does not exist.
    fn expire(&self, key: &str, ttl: Duration) -> impl Future<Output = Result<bool>> + Send;

    /// Removes the TTL of `key`; `false` if it does not exist or has none.
    fn persist(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Writes `new` if `key` holds `expected` byte for byte (`None`: if it does not exist).
    fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        expiry: SetExpiry,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// `INCRBY key by`; a key it creates gets `ttl_if_new`.
    fn incr_by(
        &self,
        key: &str,
        by: i64,
        ttl_if_new: Option<Duration>,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// `HSET key field value`; whether the field is new. A hash it creates gets `ttl_if_new`.
    fn hset(
        &self,
        key: &str,
        field: &str,
        value: Vec<u8>,
        ttl_if_new: Option<Duration>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// `HGET key field`.
    fn hget(&self, key: &str, field: &str) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// `HGETALL key` (empty if it does not exist).
    fn hgetall(&self, key: &str) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>>> + Send;

    /// `HINCRBY key field by`; a hash it creates gets `ttl_if_new`.
    fn hincr_by(
        &self,
        key: &str,
        field: &str,
        by: i64,
        ttl_if_new: Option<Duration>,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// `HDEL key field`; whether it was there.
    fn hdel(&self, key: &str, field: &str) -> impl Future<Output = Result<bool>> + Send;

    /// The keys starting with `key_prefix` (literal text), sorted.
    fn list(&self, key_prefix: &str) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// The keys matching the glob `glob` as Redis's `MATCH` reads it, sorted.
    fn list_matching(&self, glob: &str) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Applies `ops` all or nothing; the new values of the increments, in order. See the
    /// [`transaction`](crate::transaction) module.
    fn transaction(
        &self,
        ops: &[TxOp],
        implicit_ttl: Option<Duration>,
    ) -> impl Future<Output = Result<Vec<i64>>> + Send;

    /// Writes the snapshot's keys and the record of checkpoint `name`, all or nothing.
    fn save_checkpoint(
        &self,
        name: &str,
        checkpoint: RawCheckpoint,
        implicit_ttl: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The record of checkpoint `name`.
    fn load_checkpoint(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<RawCheckpoint>>> + Send;

    /// Writes the snapshot of checkpoint `name` back to its keys, atomically with respect to
    /// the record; the record written back.
    fn restore_checkpoint(
        &self,
        name: &str,
        implicit_ttl: Option<Duration>,
    ) -> impl Future<Output = Result<Option<RawCheckpoint>>> + Send;

    /// Deletes the record of checkpoint `name`; whether it existed.
    fn delete_checkpoint(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;

    /// The Redis key that holds `key`; `None` when the backend is not Redis.
    fn redis_key(&self, _key: &str) -> Option<String> {
        None
    }

    /// The state of the circuit breaker in front of the backend, if any.
    fn circuit_state(&self) -> Option<CircuitState> {
        None
    }

    /// The counters of the circuit breaker in front of the backend, if any.
    fn circuit_breaker_stats(&self) -> Option<CircuitBreakerStats> {
        None
    }

    /// The fallback's counters, if there is a fallback.
    fn fallback_stats(&self) -> Option<FallbackStats> {
        None
    }

    /// Waits until every buffered write is replayed or dropped; at once when none can be.
    fn flush(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// The backend stack of a store, as its configuration chose it.
pub(crate) enum AnyBackend {
    /// In memory: no breaker, no fallback.
    Memory(MemoryBackend),
    /// Redis behind the circuit breaker, fallback off.
    Redis(CircuitBreakerLayer<RedisBackend>),
    /// Redis behind the circuit breaker and the fallback.
    RedisWithFallback(FallbackLayer<CircuitBreakerLayer<RedisBackend>>),
}

impl AnyBackend {
    /// The stack `config` asks for; for Redis, connected and checked.
    pub(crate) async fn open(config: &StateConfig) -> Result<Self> {
        let key_prefix = match &config.backend {
            StateBackend::Memory => return Ok(Self::Memory(MemoryBackend::default())),
            StateBackend::Redis { key_prefix, .. } => key_prefix,
        };
        let redis = RedisBackend::connect(key_prefix, config).await?;
        let (server, prefix) = (redis.server().to_owned(), redis.keys().base().to_owned());
        let topology = redis.topology();
        let guarded = CircuitBreakerLayer::new(redis, config.circuit_breaker)?;
        let backend = match config.fallback.mode {
            FallbackMode::Off => Self::Redis(guarded),
            _ => Self::RedisWithFallback(FallbackLayer::start(config.fallback, guarded)?),
        };
        tracing::debug!(server = %server, prefix = %prefix, %topology, "state store opened");
        Ok(backend)
    }
}

/// Runs the same expression on whichever stack `$self` holds.
macro_rules! dispatch {
    ($self:ident, $b:ident => $call:expr) => {
        match $self {
            AnyBackend::Memory($b) => $call,
            AnyBackend::Redis($b) => $call,
            AnyBackend::RedisWithFallback($b) => $call,
        }
    };
}

/// Awaits the same call on whichever stack `$self` holds. The fallback's futures are boxed:
/// they are the largest (the buffer and its replay), and an async fn's future is as large as
/// its largest arm, so unboxed they would make every call's future that large, to be moved on
/// each call without a fallback too.
macro_rules! dispatch_async {
    ($self:ident, $b:ident => $call:expr) => {
        match $self {
            AnyBackend::Memory($b) => $call.await,
            AnyBackend::Redis($b) => $call.await,
            AnyBackend::RedisWithFallback($b) => Box::pin($call).await,
        }
    };
}

impl Backend for AnyBackend {
    fn target(&self, key: &str) -> String {
        dispatch!(self, b => b.target(key))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        dispatch_async!(self, b => b.get(key))
    }

    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Vec<u8>, Option<Duration>)>> {
        dispatch_async!(self, b => b.get_with_ttl(key))
    }

    async fn read(&self, key: &str) -> Result<Read<Vec<u8>>> {
        dispatch_async!(self, b => b.read(key))
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        dispatch_async!(self, b => b.exists(key))
    }

    async fn ttl(&self, key: &str) -> Result<Ttl> {
        dispatch_async!(self, b => b.ttl(key))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        dispatch_async!(self, b => b.get_many(keys))
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<()> {
        dispatch_async!(self, b => b.set(key, value, ttl))
    }

    async fn set_many(&self, items: Items, ttl: Option<Duration>) -> Result<()> {
        dispatch_async!(self, b => b.set_many(items, ttl))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        dispatch_async!(self, b => b.delete(key))
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        dispatch_async!(self, b => b.expire(key, ttl))
    }

    async fn persist(&self, key: &str) -> Result<bool> {
        dispatch_async!(self, b => b.persist(key))
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        expiry: SetExpiry,
    ) -> Result<bool> {
        dispatch_async!(self, b => b.compare_and_set(key, expected, new, expiry))
    }

    async fn incr_by(&self, key: &str, by: i64, ttl_if_new: Option<Duration>) -> Result<i64> {
        dispatch_async!(self, b => b.incr_by(key, by, ttl_if_new))
    }

    async fn hset(
        &self,
        key: &str,
        field: &str,
        value: Vec<u8>,
        ttl_if_new: Option<Duration>,
    ) -> Result<bool> {
        dispatch_async!(self, b => b.hset(key, field, value, ttl_if_new))
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>> {
        dispatch_async!(self, b => b.hget(key, field))
    }

    async fn hgetall(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>> {
        dispatch_async!(self, b => b.hgetall(key))
    }

    async fn hincr_by(
        &self,
        key: &str,
        field: &str,
        by: i64,
        ttl_if_new: Option<Duration>,
    ) -> Result<i64> {
        dispatch_async!(self, b => b.hincr_by(key, field, by, ttl_if_new))
    }

    async fn hdel(&self, key: &str, field: &str) -> Result<bool> {
        dispatch_async!(self, b => b.hdel(key, field))
    }

    async fn list(&self, key_prefix: &str) -> Result<Vec<String>> {
        dispatch_async!(self, b => b.list(key_prefix))
    }

    async fn list_matching(&self, glob: &str) -> Result<Vec<String>> {
        dispatch_async!(self, b => b.list_matching(glob))
    }

    async fn transaction(&self, ops: &[TxOp], implicit_ttl: Option<Duration>) -> Result<Vec<i64>> {
        dispatch_async!(self, b => b.transaction(ops, implicit_ttl))
    }

    async fn save_checkpoint(
        &self,
        name: &str,
        checkpoint: RawCheckpoint,
        implicit_ttl: Option<Duration>,
    ) -> Result<()> {
        dispatch_async!(self, b => b.save_checkpoint(name, checkpoint, implicit_ttl))
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<RawCheckpoint>> {
        dispatch_async!(self, b => b.load_checkpoint(name))
    }

    async fn restore_checkpoint(
        &self,
        name: &str,
        implicit_ttl: Option<Duration>,
    ) -> Result<Option<RawCheckpoint>> {
        dispatch_async!(self, b => b.restore_checkpoint(name, implicit_ttl))
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<bool> {
        dispatch_async!(self, b => b.delete_checkpoint(name))
    }

    fn redis_key(&self, key: &str) -> Option<String> {
        dispatch!(self, b => b.redis_key(key))
    }

    fn circuit_state(&self) -> Option<CircuitState> {
        dispatch!(self, b => b.circuit_state())
    }

    fn circuit_breaker_stats(&self) -> Option<CircuitBreakerStats> {
        dispatch!(self, b => b.circuit_breaker_stats())
    }

    fn fallback_stats(&self) -> Option<FallbackStats> {
        dispatch!(self, b => b.fallback_stats())
    }

    async fn flush(&self) {
        dispatch_async!(self, b => b.flush());
    }
}

/// Gave up after `attempts` tries because other writers kept changing the key. Retryable:
/// contention passes.
pub(crate) fn contention(operation: &'static str, target: &str, attempts: u32) -> Error {
    Error::backend(
        ErrorKind::Unavailable,
        operation,
        target.to_owned(),
        format!(
            "gave up after {attempts} attempts: other writers changed the key between every \
             read and write (raise update_max_attempts, or spread the writes over more keys)"
        ),
    )
}

/// A short random pause before trying again after a conflict, growing with the attempt
/// (full jitter, 1 ms doubling up to 64 ms), so that writers that collided spread out.
pub(crate) async fn backoff(attempt: u32) {
    let cap_us = 1_000u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..=cap_us))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_give_back_each_key_and_value_in_order() {
        let mut items = Items::with_capacity(3);
        assert!(items.is_empty());
        assert_eq!(items.first_key(), None);
        items.push("a", b"{\"n\":1}");
        items.push("", b"");
        items.push("order:3", b"[1,2,3]");
        let got: Vec<(&str, &[u8])> = items.iter().collect();
        assert_eq!(
            got,
            [
                ("a", &b"{\"n\":1}"[..]),
                ("", &b""[..]),
                ("order:3", &b"[1,2,3]"[..])
            ]
        );
        assert_eq!(items.len(), 3);
        assert_eq!(items.first_key(), Some("a"));
        assert_eq!(items.keys().collect::<Vec<_>>(), ["a", "", "order:3"]);
    }

    #[test]
    fn an_item_whose_value_fails_to_encode_leaves_nothing_behind() {
        let mut items = Items::default();
        items.push("a", b"1");
        let failed = items.push_with("b", |values| {
            values.extend_from_slice(b"half of a va");
            Err("cannot encode")
        });
        assert_eq!(failed, Err("cannot encode"));
        items.push("c", b"3");
        let got: Vec<(&str, &[u8])> = items.iter().collect();
        assert_eq!(got, [("a", &b"1"[..]), ("c", &b"3"[..])]);
    }
}
