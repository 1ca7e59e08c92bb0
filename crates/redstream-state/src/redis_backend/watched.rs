//! The writes that `WATCH` on a dedicated connection (see [`WatchPool`](crate::connection)):
//! transactions with increments, and `restore_checkpoint`.
//!
//! On a cluster the dedicated connection is a `ClusterConnection` of its own, new for each
//! try (see `WatchPool::give_back`); each pipeline below names keys of one slot (checked
//! before, see [`RedisBackend::one_slot`]), so redis-rs sends it whole to that slot's master,
//! where the `WATCH` and the open `MULTI` live. A transaction is never closed there with
//! `DISCARD` (a command without a key goes to any node): the connection is dropped instead,
//! which ends it.
//!
//! The two round trips rely on reaching the same server connection. On a single server and
//! under Sentinel the pool's connections are [pinned](redstream_core::connection::Connection::pinned):
//! never replaced, so when the connection closes between the two round trips the writes fail
//! with it and nothing runs outside the `MULTI`. On a cluster, redis-rs's `ClusterConnection`
//! may replace a node's connection between them (a failover); the writes then reach a
//! connection without `MULTI`, are applied one by one, and `EXEC` fails with `EXEC without
//! MULTI`, which is reported as such (an `Unexpected` error saying the writes may have been
//! applied outside the transaction), never as success.
//!
//! Each try leases a connection, `WATCH`es what it reads, reads it and sends `MULTI` in one
//! round trip, checks `MULTI`'s reply, then queues the writes and sends `EXEC`. A watched key
//! changed in between makes `EXEC` apply nothing, and the whole operation is tried again after
//! a [`backoff`], up to `update_max_attempts` times, then fails with a retryable
//! [`contention`] error.

use std::collections::HashMap;
use std::time::Duration;

use redis::{RedisError, RedisResult};
use redstream_core::{Error, ErrorKind, Result};

use super::{RecordFields, RedisBackend, ms};
use crate::backend::{Backend, backoff, contention};
use crate::checkpoint::RawCheckpoint;
use crate::transaction::{Known, TxOp, plan};

impl RedisBackend {
    /// A transaction with increments: `incr_keys` are the incremented keys, sorted, without
    /// duplicates, never empty.
    pub(super) async fn watched_transaction(
        &self,
        ops: &[TxOp],
        incr_keys: &[&str],
        implicit_ttl: Option<Duration>,
    ) -> Result<Vec<i64>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(results) = self
                .watched_transaction_once(ops, incr_keys, implicit_ttl)
                .await?
            {
                return Ok(results);
            }
            if attempt >= self.update_max_attempts {
                return Err(contention(
                    "transaction",
                    &self.target(incr_keys[0]),
                    attempt,
                ));
            }
            backoff(attempt).await;
        }
    }

    /// One try: `WATCH` the incremented keys, read them and open the transaction (`MULTI`) in
    /// one round trip, plan, then queue the writes and `EXEC`. `None` when a watched key changed
    /// and nothing was applied.
    ///
    /// `MULTI` is sent behind the reads, never in front of the writes: when the server refuses
    /// it (an ACL user without `+multi`), no write has been sent, so none can run on its own. A
    /// write the server refuses to queue (`NOPERM`, `OOM`) makes `EXEC` discard them all.
    async fn watched_transaction_once(
        &self,
        ops: &[TxOp],
        incr_keys: &[&str],
        implicit_ttl: Option<Duration>,
    ) -> Result<Option<Vec<i64>>> {
        let mut lease = self.watch.lease().await?;
        let first = incr_keys[0];
        let mut watch = redis::cmd("WATCH");
        for key in incr_keys {
            watch.arg(self.keys.key(key));
        }
        let mut read = redis::pipe();
        read.add_command(watch);
        for key in incr_keys {
            read.cmd("GET").arg(self.keys.key(key));
        }
        read.cmd("MULTI");
        read.ignore_errors();
        // Nothing is written yet: a pooled connection that went stale (its node died, a
        // replica took over) is replaced once and the reads sent again.
        let mut replies: Vec<RedisResult<redis::Value>> =
            match read.query_async(&mut lease.conn).await {
                Err(err) if lease.reused => {
                    tracing::debug!(error = %err, "a pooled WATCH connection failed; reopening it");
                    lease = self.watch.reopen(lease).await?;
                    read.query_async(&mut lease.conn).await
                }
                replies => replies,
            }
            .map_err(|err| self.error("WATCH/GET/MULTI", first, err))?;
        let conn = &mut lease.conn;
        // The lease is dropped, not given back, on any error: it may still hold the WATCH or
        // the open transaction.
        if replies.len() != incr_keys.len() + 2 {
            return Err(self.error(
                "WATCH/GET/MULTI",
                first,
                RedisError::from((
                    redis::ErrorKind::Parse,
                    "a reply is missing from the pipeline",
                )),
            ));
        }
        let multi = replies.remove(replies.len() - 1);
        let watched = replies.remove(0);
        watched.map_err(|err| self.error("WATCH", first, err))?;
        multi.map_err(|err| self.error("MULTI", first, err))?;
        let mut known = HashMap::with_capacity(incr_keys.len());
        for (key, value) in incr_keys.iter().zip(replies) {
            let state = match value {
                Ok(redis::Value::Nil) => Known::Absent,
                Ok(value) => match redis::from_redis_value::<Vec<u8>>(value) {
                    Ok(bytes) => Known::of_string(&bytes),
                    Err(err) => return Err(self.error("GET", key, err.into())),
                },
                // Queued reads are not run: `GET` answered before `MULTI` opened.
                Err(err) if err.code() == Some("WRONGTYPE") => Known::WrongType,
                Err(err) => return Err(self.error("GET", key, err)),
            };
            known.insert(*key, state);
        }
        let plan = match plan(
            ops,
            |k| known.get(k).copied().unwrap_or(Known::Absent),
            |k| self.target(k),
        ) {
            Ok(plan) => plan,
            Err(err) => {
                // DISCARD closes the transaction and clears the WATCH.
                self.watch.discard(lease).await;
                return Err(err);
            }
        };
        let pipe = self.queued(ops, &plan.creates, implicit_ttl);
        let mut replies: Vec<redis::Value> = pipe.query_async(conn).await.map_err(|err| {
            exec_error(err, |err| {
                self.error("transaction (MULTI/EXEC)", first, err)
            })
        })?;
        // EXEC clears the WATCH whether it ran the transaction or not.
        self.watch.give_back(lease);
        match replies.pop() {
            Some(redis::Value::Nil) => Ok(None),
            Some(_) => Ok(Some(plan.results)),
            None => Err(self.error(
                "EXEC",
                first,
                RedisError::from((redis::ErrorKind::Parse, "EXEC was not answered")),
            )),
        }
    }

    /// The writes of a transaction followed by `EXEC`, to send once `MULTI` was accepted.
    /// `creates[i]` says that op `i` is an increment creating its key, which then gets the
    /// implicit TTL.
    fn queued(
        &self,
        ops: &[TxOp],
        creates: &[bool],
        implicit_ttl: Option<Duration>,
    ) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for (op, creates) in ops.iter().zip(creates) {
            match op {
                TxOp::Put { key, value, ttl } => {
                    pipe.cmd("SET").arg(self.keys.key(key)).arg(value);
                    if let Some(ttl) = ttl.or(implicit_ttl) {
                        pipe.arg("PX").arg(ms(ttl));
                    }
                    pipe.ignore();
                }
                TxOp::Delete { key } => {
                    pipe.cmd("DEL").arg(self.keys.key(key)).ignore();
                }
                TxOp::IncrBy { key, by } => {
                    pipe.cmd("INCRBY").arg(self.keys.key(key)).arg(by).ignore();
                    if let (true, Some(ttl)) = (*creates, implicit_ttl) {
                        pipe.cmd("PEXPIRE")
                            .arg(self.keys.key(key))
                            .arg(ms(ttl))
                            .ignore();
                    }
                }
            }
        }
        pipe.cmd("EXEC");
        pipe
    }

    /// Writes the checkpoint's state back, atomically with respect to the record: the record
    /// is `WATCH`ed while it is read, so a concurrent `save_checkpoint` of the same name makes
    /// the `EXEC` fail and the restore starts again from the new record. What is written is
    /// therefore always one whole checkpoint, never a mix of two.
    pub(super) async fn watched_restore(
        &self,
        name: &str,
        implicit_ttl: Option<Duration>,
    ) -> Result<Option<RawCheckpoint>> {
        let record = self.keys.checkpoint(name);
        let target = format!("checkpoint {name:?} ({record}) on {}", self.server);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut lease = self.watch.lease().await?;
            // `MULTI` goes behind the read, never in front of the writes: a refused `MULTI`
            // leaves nothing written (see `watched_transaction_once`).
            let mut read = redis::pipe();
            read.cmd("WATCH")
                .arg(&record)
                .ignore()
                .cmd("HGETALL")
                .arg(&record)
                .cmd("MULTI");
            // A stale pooled connection is replaced once, as in `watched_transaction_once`.
            let (fields, _multi): (RecordFields, redis::Value) = match read
                .query_async(&mut lease.conn)
                .await
            {
                Err(err) if lease.reused => {
                    tracing::debug!(error = %err, "a pooled WATCH connection failed; reopening it");
                    lease = self.watch.reopen(lease).await?;
                    read.query_async(&mut lease.conn).await
                }
                read => read,
            }
            .map_err(|err| Error::from_redis("WATCH/HGETALL/MULTI", target.clone(), err))?;
            let conn = &mut lease.conn;
            let checkpoint = match RawCheckpoint::from_fields(&target, fields) {
                Ok(Some(checkpoint)) if !checkpoint.state.is_empty() => checkpoint,
                outcome => {
                    // DISCARD closes the transaction and clears the WATCH.
                    self.watch.discard(lease).await;
                    return outcome;
                }
            };
            // The plain layout on a cluster: the snapshot's keys must share the record's slot.
            if let Err(err) = self.one_slot(
                "restore_checkpoint",
                std::iter::once((name, record.clone())).chain(
                    checkpoint
                        .state
                        .iter()
                        .map(|(key, _)| (key.as_str(), self.keys.key(key))),
                ),
            ) {
                self.watch.discard(lease).await;
                return Err(err);
            }
            let ops: Vec<TxOp> = checkpoint
                .state
                .iter()
                .map(|(key, value)| TxOp::Put {
                    key: key.clone(),
                    value: value.clone(),
                    ttl: None,
                })
                .collect();
            let pipe = self.queued(&ops, &vec![false; ops.len()], implicit_ttl);
            let (reply,): (Option<redis::Value>,) =
                pipe.query_async(conn).await.map_err(|err| {
                    exec_error(err, |err| {
                        Error::from_redis("restore checkpoint (MULTI/EXEC)", target.clone(), err)
                    })
                })?;
            // EXEC clears the WATCH whether it ran the transaction or not.
            self.watch.give_back(lease);
            if reply.is_some() {
                return Ok(Some(checkpoint));
            }
            if attempt >= self.update_max_attempts {
                return Err(contention("restore checkpoint", &target, attempt));
            }
            backoff(attempt).await;
        }
    }
}

/// The error of the writes-and-`EXEC` round trip, `classify`d, and said plainly when `EXEC`
/// found no transaction: the connection was replaced after `MULTI` (see the module docs), so
/// the writes may have been applied one by one. Never retryable: they must not be sent again.
fn exec_error(err: RedisError, classify: impl FnOnce(RedisError) -> Error) -> Error {
    let outside = err.to_string().contains("EXEC without MULTI");
    let err = classify(err);
    if !outside {
        return err;
    }
    tracing::error!(
        error = %err,
        "the connection of a WATCHed transaction was replaced between its reads and its \
         writes: the writes may have been applied outside the transaction"
    );
    match err {
        Error::Backend {
            operation,
            target,
            message,
            ..
        } => Error::backend(
            ErrorKind::Unexpected,
            operation,
            target,
            format!(
                "{message}: the connection was replaced (closed by a restart or a failover) \
                 between the reads and the writes, so the writes reached a connection without \
                 MULTI and may have been applied one by one, outside the transaction; check \
                 the keys before retrying"
            ),
        ),
        other => other,
    }
}
