//! [`BlockingStateStore`]: the store for synchronous code, as seed 001 writes it:
//! `store.put("counter", 42)?` with no `async` in sight.
//!
//! It owns a small current-thread tokio runtime, driven by a background thread of its own
//! (named `redstream-state`), and runs each call to completion on the calling thread. The
//! background thread is what lets the connection reconnect, and the fallback replay buffered
//! writes, between two calls.
//!
//! Do not use it from inside an async runtime (an `async fn`, a tokio task): blocking a
//! runtime's thread on network I/O stalls every task of that thread, and nesting runtimes
//! panics. It checks, and every call made from a runtime context, including from a
//! `spawn_blocking` closure, fails with an
//! [`InvalidInput`](redstream_core::ErrorKind::InvalidInput) error that says to use the async
//! [`StateStore`] there instead.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use redstream_core::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

use crate::checkpoint::Checkpoint;
use crate::config::{StateBackend, StateConfig};
use crate::fallback::FallbackStats;
use crate::store::{Read, StateStore, Ttl};
use crate::transaction::Transaction;

/// A [`StateStore`] for synchronous code, as seed 001 writes it: `store.put("counter", 42)?`.
///
/// It owns a small current-thread tokio runtime, driven by a background thread of its own
/// (named `redstream-state`), and runs each call to completion on the calling thread. The
/// background thread is what lets the connection reconnect, and the fallback replay buffered
/// writes, between two calls. Clones share the store and the runtime; the thread stops when
/// the last clone is dropped. Each method does what the [`StateStore`] method of the same
/// name does.
///
/// Do not use it from inside an async runtime (an `async fn`, a tokio task, a
/// `spawn_blocking` closure): blocking a runtime's thread on network I/O stalls its other
/// tasks. Every call checks, and fails with an
/// [`InvalidInput`](redstream_core::ErrorKind::InvalidInput) error saying to use the async
/// [`StateStore`] there.
///
/// ```no_run
/// use std::time::Duration;
/// use redstream_state::{BlockingStateStore, StateBackend, Value};
///
/// fn main() -> redstream_state::Result<()> {
///     let backend = StateBackend::Redis {
///         url: "redis://127.0.0.1:6379".to_string(),
///         key_prefix: "myapp".to_string(),
///     };
///     let store = BlockingStateStore::new(backend)?;
///     store.put("counter", Value::Integer(42))?;
///     let value: Option<Value> = store.get("counter")?;
///     store.put_with_ttl(
///         "session_key",
///         Value::String("token".to_string()),
///         Duration::from_secs(3600),
///     )?;
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct BlockingStateStore {
    store: StateStore,
    runtime: Arc<RuntimeThread>,
}

/// A current-thread runtime and the thread that drives it.
struct RuntimeThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The store is dropped from synchronous code (see `check_not_async`), so joining
            // does not block a runtime. If the drop happens on the runtime thread itself (the
            // last clone dropped inside a task), it cannot join itself: let it end on its own.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl fmt::Debug for BlockingStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingStateStore")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Fails when called from inside an async runtime.
fn check_not_async(operation: &str) -> Result<()> {
    if Handle::try_current().is_ok() {
        return Err(Error::invalid_input(
            format!("BlockingStateStore::{operation}"),
            "was called from inside an async runtime, where blocking would stall the runtime's \
             thread; use the async StateStore there (or call from a thread without a runtime)",
        ));
    }
    Ok(())
}

impl BlockingStateStore {
    /// Opens a store on `backend` with the default config; see [`StateStore::new`].
    pub fn new(backend: StateBackend) -> Result<Self> {
        Self::with_config(StateConfig::new(backend))
    }

    /// Opens a store as `config` says; see [`StateStore::with_config`].
    pub fn with_config(config: StateConfig) -> Result<Self> {
        check_not_async("with_config")?;
        config.validate()?;
        let runtime = Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| {
                Error::backend(
                    redstream_core::ErrorKind::Unexpected,
                    "start runtime",
                    "BlockingStateStore",
                    err.to_string(),
                )
            })?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("redstream-state".to_owned())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|err| {
                Error::backend(
                    redstream_core::ErrorKind::Unexpected,
                    "start runtime thread",
                    "BlockingStateStore",
                    err.to_string(),
                )
            })?;
        let runtime = Arc::new(RuntimeThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        });
        let store = runtime.handle.block_on(StateStore::with_config(config))?;
        Ok(Self { store, runtime })
    }

    /// The async store this wraps, for use from async code (with its own runtime running
    /// elsewhere, its futures still need this store's runtime thread, which runs them).
    #[must_use]
    pub fn as_async(&self) -> &StateStore {
        &self.store
    }

    fn run<F: Future>(&self, operation: &str, future: F) -> Result<F::Output> {
        check_not_async(operation)?;
        Ok(self.runtime.handle.block_on(future))
    }

    /// See [`StateStore::get`].
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.run("get", self.store.get(key))?
    }

    /// See [`StateStore::get_with_meta`].
    pub fn get_with_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Read<T>> {
        self.run("get_with_meta", self.store.get_with_meta(key))?
    }

    /// See [`StateStore::put`].
    pub fn put<V: Serialize>(&self, key: &str, value: V) -> Result<()> {
        self.run("put", self.store.put(key, value))?
    }

    /// See [`StateStore::put_with_ttl`].
    pub fn put_with_ttl<V: Serialize>(&self, key: &str, value: V, ttl: Duration) -> Result<()> {
        self.run("put_with_ttl", self.store.put_with_ttl(key, value, ttl))?
    }

    /// See [`StateStore::delete`].
    pub fn delete(&self, key: &str) -> Result<()> {
        self.run("delete", self.store.delete(key))?
    }

    /// See [`StateStore::exists`].
    pub fn exists(&self, key: &str) -> Result<bool> {
        self.run("exists", self.store.exists(key))?
    }

    /// See [`StateStore::ttl`].
    pub fn ttl(&self, key: &str) -> Result<Ttl> {
        self.run("ttl", self.store.ttl(key))?
    }

    /// See [`StateStore::expire`].
    pub fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        self.run("expire", self.store.expire(key, ttl))?
    }

    /// See [`StateStore::update`].
    pub fn update<T, F>(&self, key: &str, f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send,
        F: FnMut(Option<T>) -> T + Send,
    {
        self.run("update", self.store.update(key, f))?
    }

    /// See [`StateStore::update_with_ttl`].
    pub fn update_with_ttl<T, F>(&self, key: &str, ttl: Duration, f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send,
        F: FnMut(Option<T>) -> T + Send,
    {
        self.run("update_with_ttl", self.store.update_with_ttl(key, ttl, f))?
    }

    /// See [`StateStore::compare_and_set`].
    pub fn compare_and_set<V: Serialize>(
        &self,
        key: &str,
        expected: Option<V>,
        new: V,
    ) -> Result<bool> {
        self.run(
            "compare_and_set",
            self.store.compare_and_set(key, expected, new),
        )?
    }

    /// See [`StateStore::incr`].
    pub fn incr(&self, key: &str) -> Result<i64> {
        self.run("incr", self.store.incr(key))?
    }

    /// See [`StateStore::incr_by`].
    pub fn incr_by(&self, key: &str, by: i64) -> Result<i64> {
        self.run("incr_by", self.store.incr_by(key, by))?
    }

    /// See [`StateStore::decr`].
    pub fn decr(&self, key: &str) -> Result<i64> {
        self.run("decr", self.store.decr(key))?
    }

    /// See [`StateStore::decr_by`].
    pub fn decr_by(&self, key: &str, by: i64) -> Result<i64> {
        self.run("decr_by", self.store.decr_by(key, by))?
    }

    /// See [`StateStore::persist`].
    pub fn persist(&self, key: &str) -> Result<bool> {
        self.run("persist", self.store.persist(key))?
    }

    /// See [`StateStore::hset`].
    pub fn hset<V: Serialize>(&self, key: &str, field: &str, value: V) -> Result<bool> {
        self.run("hset", self.store.hset(key, field, value))?
    }

    /// See [`StateStore::hget`].
    pub fn hget<T: DeserializeOwned>(&self, key: &str, field: &str) -> Result<Option<T>> {
        self.run("hget", self.store.hget(key, field))?
    }

    /// See [`StateStore::hgetall`].
    pub fn hgetall<T: DeserializeOwned>(&self, key: &str) -> Result<HashMap<String, T>> {
        self.run("hgetall", self.store.hgetall(key))?
    }

    /// See [`StateStore::hincr_by`].
    pub fn hincr_by(&self, key: &str, field: &str, by: i64) -> Result<i64> {
        self.run("hincr_by", self.store.hincr_by(key, field, by))?
    }

    /// See [`StateStore::hdel`].
    pub fn hdel(&self, key: &str, field: &str) -> Result<bool> {
        self.run("hdel", self.store.hdel(key, field))?
    }

    /// See [`StateStore::get_many`].
    pub fn get_many<T: DeserializeOwned, K: AsRef<str>>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<T>>> {
        self.run("get_many", self.store.get_many(keys))?
    }

    /// See [`StateStore::put_many`].
    pub fn put_many<K, V, I>(&self, items: I) -> Result<()>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Serialize,
    {
        self.run("put_many", self.store.put_many(items))?
    }

    /// See [`StateStore::put_many_with_ttl`].
    pub fn put_many_with_ttl<K, V, I>(&self, items: I, ttl: Duration) -> Result<()>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Serialize,
    {
        self.run(
            "put_many_with_ttl",
            self.store.put_many_with_ttl(items, ttl),
        )?
    }

    /// See [`StateStore::list_keys`].
    pub fn list_keys(&self, key_prefix: &str) -> Result<Vec<String>> {
        self.run("list_keys", self.store.list_keys(key_prefix))?
    }

    /// See [`StateStore::list_keys_matching`].
    pub fn list_keys_matching(&self, pattern: &str) -> Result<Vec<String>> {
        self.run("list_keys_matching", self.store.list_keys_matching(pattern))?
    }

    /// See [`StateStore::transaction`].
    pub fn transaction(&self, tx: Transaction) -> Result<Vec<i64>> {
        self.run("transaction", self.store.transaction(tx))?
    }

    /// See [`StateStore::save_checkpoint`].
    pub fn save_checkpoint<K, V, I>(&self, name: &str, position: &str, snapshot: I) -> Result<()>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Serialize,
    {
        self.run(
            "save_checkpoint",
            self.store.save_checkpoint(name, position, snapshot),
        )?
    }

    /// See [`StateStore::load_checkpoint`].
    pub fn load_checkpoint<V: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<Checkpoint<V>>> {
        self.run("load_checkpoint", self.store.load_checkpoint(name))?
    }

    /// See [`StateStore::restore_checkpoint`].
    pub fn restore_checkpoint<V: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<Checkpoint<V>>> {
        self.run("restore_checkpoint", self.store.restore_checkpoint(name))?
    }

    /// See [`StateStore::delete_checkpoint`].
    pub fn delete_checkpoint(&self, name: &str) -> Result<bool> {
        self.run("delete_checkpoint", self.store.delete_checkpoint(name))?
    }

    /// See [`StateStore::circuit_breaker_stats`].
    #[must_use]
    pub fn circuit_breaker_stats(&self) -> Option<redstream_core::CircuitBreakerStats> {
        self.store.circuit_breaker_stats()
    }

    /// See [`StateStore::fallback_stats`].
    #[must_use]
    pub fn fallback_stats(&self) -> Option<FallbackStats> {
        self.store.fallback_stats()
    }

    /// See [`StateStore::flush`].
    pub fn flush(&self) -> Result<()> {
        self.run("flush", self.store.flush())
    }
}
