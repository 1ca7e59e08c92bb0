//! Layers: a [`Backend`] wrapped in another, as opendal's layers wrap an accessor.
//!
//! - [`CircuitBreakerLayer`] sends every call of the backend it wraps through one
//!   [`CircuitBreaker`]: an open breaker fails the call fast, and retryable errors count as
//!   failures (see `redstream_core::circuit_breaker`).
//! - [`FallbackLayer`] puts the [fallback](crate::fallback) in front of a breaker-guarded
//!   backend: `read` answers from the buffered writes or, while the backend is unavailable,
//!   from the cache of values last seen; `set`, `set_many` and `delete` are the bufferable
//!   writes; every other write first checks that no buffered write would be overtaken, and
//!   afterwards the cache forgets the keys it touched (their values are no longer known);
//!   every other read goes straight through.
//!
//! Both forward the provided methods of [`Backend`] they do not answer themselves.

use std::future::Future;
use std::time::Duration;

use redstream_core::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerStats, CircuitState, Result,
};

use crate::backend::{Backend, Items, SetExpiry};
use crate::checkpoint::RawCheckpoint;
use crate::config::FallbackConfig;
use crate::fallback::{Fallback, FallbackStats, Write};
use crate::store::{Read, Ttl};
use crate::transaction::TxOp;

/// Runs `$call` (a call of the inner backend) if the breaker admits it, and records its
/// outcome as [`CircuitBreaker::call`] does. Written out in each method rather than through
/// `call`'s closure: a future returned by a closure inside `call` is copied into `call`'s
/// own future, and `call`'s into the layer's, about 1.7 KB each time for a single-key read;
/// awaited here directly, it is built in place.
macro_rules! guarded {
    ($layer:ident, $call:expr) => {{
        let permit = $layer.breaker.try_acquire()?;
        let result = $call.await;
        permit.record(&result);
        result
    }};
}

/// A backend behind a circuit breaker. Cloning shares the breaker.
#[derive(Clone)]
pub(crate) struct CircuitBreakerLayer<B> {
    inner: B,
    breaker: CircuitBreaker,
}

impl<B: Backend> CircuitBreakerLayer<B> {
    /// `inner` behind a new breaker configured by `config`.
    pub(crate) fn new(inner: B, config: CircuitBreakerConfig) -> Result<Self> {
        Ok(Self {
            inner,
            breaker: CircuitBreaker::new(config)?,
        })
    }
}

impl<B: Backend> Backend for CircuitBreakerLayer<B> {
    fn target(&self, key: &str) -> String {
        self.inner.target(key)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        guarded!(self, self.inner.get(key))
    }

    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Vec<u8>, Option<Duration>)>> {
        guarded!(self, self.inner.get_with_ttl(key))
    }

    async fn read(&self, key: &str) -> Result<Read<Vec<u8>>> {
        guarded!(self, self.inner.read(key))
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        guarded!(self, self.inner.exists(key))
    }

    async fn ttl(&self, key: &str) -> Result<Ttl> {
        guarded!(self, self.inner.ttl(key))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        guarded!(self, self.inner.get_many(keys))
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<()> {
        guarded!(self, self.inner.set(key, value, ttl))
    }

    async fn set_many(&self, items: Items, ttl: Option<Duration>) -> Result<()> {
        guarded!(self, self.inner.set_many(items, ttl))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        guarded!(self, self.inner.delete(key))
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        guarded!(self, self.inner.expire(key, ttl))
    }

    async fn persist(&self, key: &str) -> Result<bool> {
        guarded!(self, self.inner.persist(key))
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        expiry: SetExpiry,
    ) -> Result<bool> {
        guarded!(self, self.inner.compare_and_set(key, expected, new, expiry))
    }

    async fn incr_by(&self, key: &str, by: i64, ttl_if_new: Option<Duration>) -> Result<i64> {
        guarded!(self, self.inner.incr_by(key, by, ttl_if_new))
    }

    async fn hset(
        &self,
        key: &str,
        field: &str,
        value: Vec<u8>,
        ttl_if_new: Option<Duration>,
    ) -> Result<bool> {
        guarded!(self, self.inner.hset(key, field, value, ttl_if_new))
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>> {
        guarded!(self, self.inner.hget(key, field))
    }

    async fn hgetall(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>> {
        guarded!(self, self.inner.hgetall(key))
    }

    async fn hincr_by(
        &self,
        key: &str,
        field: &str,
        by: i64,
        ttl_if_new: Option<Duration>,
    ) -> Result<i64> {
        guarded!(self, self.inner.hincr_by(key, field, by, ttl_if_new))
    }

    async fn hdel(&self, key: &str, field: &str) -> Result<bool> {
        guarded!(self, self.inner.hdel(key, field))
    }

    async fn list(&self, key_prefix: &str) -> Result<Vec<String>> {
        guarded!(self, self.inner.list(key_prefix))
    }

    async fn list_matching(&self, glob: &str) -> Result<Vec<String>> {
        guarded!(self, self.inner.list_matching(glob))
    }

    async fn transaction(&self, ops: &[TxOp], implicit_ttl: Option<Duration>) -> Result<Vec<i64>> {
        guarded!(self, self.inner.transaction(ops, implicit_ttl))
    }

    async fn save_checkpoint(
        &self,
        name: &str,
        checkpoint: RawCheckpoint,
        implicit_ttl: Option<Duration>,
    ) -> Result<()> {
        guarded!(
            self,
            self.inner.save_checkpoint(name, checkpoint, implicit_ttl)
        )
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<RawCheckpoint>> {
        guarded!(self, self.inner.load_checkpoint(name))
    }

    async fn restore_checkpoint(
        &self,
        name: &str,
        implicit_ttl: Option<Duration>,
    ) -> Result<Option<RawCheckpoint>> {
        guarded!(self, self.inner.restore_checkpoint(name, implicit_ttl))
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<bool> {
        guarded!(self, self.inner.delete_checkpoint(name))
    }

    fn redis_key(&self, key: &str) -> Option<String> {
        self.inner.redis_key(key)
    }

    fn circuit_state(&self) -> Option<CircuitState> {
        Some(self.breaker.state())
    }

    fn circuit_breaker_stats(&self) -> Option<CircuitBreakerStats> {
        Some(self.breaker.stats())
    }

    fn fallback_stats(&self) -> Option<FallbackStats> {
        self.inner.fallback_stats()
    }

    async fn flush(&self) {
        self.inner.flush().await;
    }
}

/// A backend (behind its breaker) with the fallback in front. The fallback's replay task
/// writes to a clone of `inner`, so replays go through the same breaker.
pub(crate) struct FallbackLayer<B> {
    inner: B,
    fallback: Fallback,
}

impl<B: Backend + Clone + 'static> FallbackLayer<B> {
    /// The fallback `config` describes in front of `inner`, its replay task started when it
    /// buffers writes.
    pub(crate) fn start(config: FallbackConfig, inner: B) -> Result<Self> {
        let fallback = Fallback::start(config, inner.clone())?;
        Ok(Self { inner, fallback })
    }
}

impl<B: Backend> FallbackLayer<B> {
    /// A write that cannot be buffered: refused while buffered writes wait (it would overtake
    /// them; the error names the first of the keys `touched`), then sent, and the cache then
    /// forgets `touched`, whatever the outcome.
    async fn unbuffered<T, F, Fut>(
        &self,
        operation: &'static str,
        touched: &[&str],
        call: F,
    ) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let first = touched.first().copied().unwrap_or_default();
        self.fallback
            .check_no_pending(operation, &self.inner.target(first))?;
        let result = call().await;
        self.fallback.forget(touched.iter().copied());
        result
    }
}

impl<B: Backend> Backend for FallbackLayer<B> {
    fn target(&self, key: &str) -> String {
        self.inner.target(key)
    }

    /// The backend's value, never the cache's: the read of an `update`, which must not
    /// overtake buffered writes either.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.unbuffered("GET", &[key], || self.inner.get(key)).await
    }

    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Vec<u8>, Option<Duration>)>> {
        self.inner.get_with_ttl(key).await
    }

    /// The newest buffered value of `key`, stale; else the backend's, remembered; else, when
    /// the backend is unavailable, the cached one, stale (or the error if none is cached).
    async fn read(&self, key: &str) -> Result<Read<Vec<u8>>> {
        if let Some(buffered) = self.fallback.buffered_value(key) {
            return Ok(Read {
                value: buffered,
                stale: true,
            });
        }
        match self.inner.get_with_ttl(key).await {
            Ok(found) => {
                self.fallback.remember_read(key, found.as_ref());
                Ok(Read {
                    value: found.map(|(value, _)| value),
                    stale: false,
                })
            }
            Err(err) if err.is_retryable() => match self.fallback.stale_read(key) {
                Some(value) => {
                    tracing::debug!(key, error = %err, "Redis unavailable: answering from the local cache");
                    Ok(Read { value, stale: true })
                }
                None => Err(err),
            },
            Err(err) => Err(err),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key).await
    }

    async fn ttl(&self, key: &str) -> Result<Ttl> {
        self.inner.ttl(key).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        self.inner.get_many(keys).await
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<()> {
        self.fallback
            .write(Write::put(key, value, ttl), &self.inner)
            .await
    }

    async fn set_many(&self, items: Items, ttl: Option<Duration>) -> Result<()> {
        self.fallback
            .write(Write::put_many(items, ttl), &self.inner)
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let write = Write::Delete {
            key: key.to_owned(),
        };
        self.fallback.write(write, &self.inner).await
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        self.unbuffered("PEXPIRE", &[key], || self.inner.expire(key, ttl))
            .await
    }

    async fn persist(&self, key: &str) -> Result<bool> {
        self.unbuffered("PERSIST", &[key], || self.inner.persist(key))
            .await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        expiry: SetExpiry,
    ) -> Result<bool> {
        self.unbuffered("compare-and-set", &[key], || {
            self.inner.compare_and_set(key, expected, new, expiry)
        })
        .await
    }

    async fn incr_by(&self, key: &str, by: i64, ttl_if_new: Option<Duration>) -> Result<i64> {
        self.unbuffered("INCRBY", &[key], || self.inner.incr_by(key, by, ttl_if_new))
            .await
    }

    async fn hset(
        &self,
        key: &str,
        field: &str,
        value: Vec<u8>,
        ttl_if_new: Option<Duration>,
    ) -> Result<bool> {
        self.unbuffered("HSET", &[key], || {
            self.inner.hset(key, field, value, ttl_if_new)
        })
        .await
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>> {
        self.inner.hget(key, field).await
    }

    async fn hgetall(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.inner.hgetall(key).await
    }

    async fn hincr_by(
        &self,
        key: &str,
        field: &str,
        by: i64,
        ttl_if_new: Option<Duration>,
    ) -> Result<i64> {
        self.unbuffered("HINCRBY", &[key], || {
            self.inner.hincr_by(key, field, by, ttl_if_new)
        })
        .await
    }

    async fn hdel(&self, key: &str, field: &str) -> Result<bool> {
        self.unbuffered("HDEL", &[key], || self.inner.hdel(key, field))
            .await
    }

    async fn list(&self, key_prefix: &str) -> Result<Vec<String>> {
        self.inner.list(key_prefix).await
    }

    async fn list_matching(&self, glob: &str) -> Result<Vec<String>> {
        self.inner.list_matching(glob).await
    }

    async fn transaction(&self, ops: &[TxOp], implicit_ttl: Option<Duration>) -> Result<Vec<i64>> {
        let touched: Vec<&str> = ops.iter().map(TxOp::key).collect();
        self.unbuffered("transaction", &touched, || {
            self.inner.transaction(ops, implicit_ttl)
        })
        .await
    }

    async fn save_checkpoint(
        &self,
        name: &str,
        checkpoint: RawCheckpoint,
        implicit_ttl: Option<Duration>,
    ) -> Result<()> {
        // The checkpoint goes to the backend: its keys are kept to be forgotten afterwards.
        let keys: Vec<String> = checkpoint.state.iter().map(|(k, _)| k.clone()).collect();
        let touched: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.unbuffered("save checkpoint", &touched, || {
            self.inner.save_checkpoint(name, checkpoint, implicit_ttl)
        })
        .await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<RawCheckpoint>> {
        self.inner.load_checkpoint(name).await
    }

    async fn restore_checkpoint(
        &self,
        name: &str,
        implicit_ttl: Option<Duration>,
    ) -> Result<Option<RawCheckpoint>> {
        let restored = self
            .unbuffered("restore checkpoint", &[], || {
                self.inner.restore_checkpoint(name, implicit_ttl)
            })
            .await?;
        // The keys written are only known once the record is read: forget them now.
        if let Some(checkpoint) = &restored {
            self.fallback
                .forget(checkpoint.state.iter().map(|(k, _)| k.as_str()));
        }
        Ok(restored)
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<bool> {
        self.inner.delete_checkpoint(name).await
    }

    fn redis_key(&self, key: &str) -> Option<String> {
        self.inner.redis_key(key)
    }

    fn circuit_state(&self) -> Option<CircuitState> {
        self.inner.circuit_state()
    }

    fn circuit_breaker_stats(&self) -> Option<CircuitBreakerStats> {
        self.inner.circuit_breaker_stats()
    }

    fn fallback_stats(&self) -> Option<FallbackStats> {
        Some(self.fallback.stats())
    }

    async fn flush(&self) {
        self.fallback.flush().await;
    }
}
