//! How every short command is sent, and the one place that decides which commands go through
//! the circuit breaker.
//!
//! # The policy
//!
//! | traffic | breaker | why |
//! |---|---|---|
//! | [`Traffic::Write`]: publishing, hand-written dead letters, redrives, purges, claims by hand, a follower's group | through it | a caller waits for the result: while the server is failing it should fail fast instead of piling up |
//! | [`Traffic::Read`]: inspection, listing dead letters, following | bypasses it | an operator must be able to look at a server the breaker gave up on, and a dashboard polling a struggling server must not open the breaker for the publishers |
//! | [`Traffic::Consumer`]: a subscription's reads, acks, claims, keep-alives and dead-letter moves | bypasses it | no caller waits; the subscription backs off by itself, and gating it would keep it idle for the breaker's whole open period after the server is back and stop the keep-alive (so other consumers would claim entries still being handled) |
//!
//! [`Commands::new`] is the only constructor of [`Commands`] (through
//! [`Inner::commands`](crate::transport::Inner::commands), and once for `Inner::writes`), so the
//! rule is stated here and nowhere else. The commands that do not fit a [`Commands`] call are all reads or a
//! consumer's, and bypass the breaker accordingly: blocking reads on dedicated connections (a
//! subscription's `XREADGROUP ... BLOCK`, a follower's `XREAD`/`XREADGROUP` and its `XACK`),
//! and `SCAN` (core's `keys::scan`).

use std::future::Future;

use redis::{Cmd, FromRedisValue, Pipeline, Script, ScriptInvocation, Value};
use redstream_core::atomic::Atomic;
use redstream_core::connection::{Connection, Topology};
use redstream_core::connection::{command_error, was_not_sent as not_sent};
use redstream_core::{CircuitBreaker, Error, Result};

use crate::transport::Inner;

/// Who sends a command; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Traffic {
    Write,
    Read,
    Consumer,
}

impl Traffic {
    /// Whether this traffic goes through the circuit breaker: the policy, in one place.
    fn guarded(self) -> bool {
        match self {
            Self::Write => true,
            Self::Read | Self::Consumer => false,
        }
    }
}

/// The shared connection, and the circuit breaker when the traffic goes through it.
#[derive(Clone)]
pub(crate) struct Commands {
    conn: Connection,
    breaker: Option<CircuitBreaker>,
}

impl Commands {
    /// Commands for `traffic` on `conn`, through `breaker` when the policy says so.
    pub(crate) fn new(conn: Connection, traffic: Traffic, breaker: &CircuitBreaker) -> Self {
        Self {
            conn,
            breaker: traffic.guarded().then(|| breaker.clone()),
        }
    }
}

impl Inner {
    /// Commands for `traffic`, on the shared connection.
    pub(crate) fn commands(&self, traffic: Traffic) -> Commands {
        Commands::new(self.conn.clone(), traffic, &self.breaker)
    }
}

impl crate::RedisTransport {
    /// Commands for `traffic`, on the shared connection.
    pub(crate) fn commands(&self, traffic: Traffic) -> Commands {
        self.inner.commands(traffic)
    }
}

impl Commands {
    /// Sends `cmd`; errors name `op` and `target`.
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        target: &str,
        cmd: &Cmd,
    ) -> Result<T> {
        self.send(op, target, |conn| conn.query::<T>(cmd)).await
    }

    /// Runs `tx`, all or nothing (see `redstream_core::atomic`).
    pub(crate) async fn atomic<T: FromRedisValue>(
        &self,
        op: &'static str,
        target: &str,
        tx: &Atomic,
    ) -> Result<T> {
        self.invoke(op, target, tx.invocation()).await
    }

    /// Calls a script (`EVALSHA`, loading it on `NOSCRIPT`).
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        op: &'static str,
        target: &str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T> {
        self.send(op, target, |conn| async move {
            invocation.invoke_async::<T>(&mut conn.clone()).await
        })
        .await
    }

    /// Calls `script` by `evalsha`, an `EVALSHA` of it built by the caller; on `NOSCRIPT`
    /// (a restarted or failed-over server, `SCRIPT FLUSH`), loads the script and calls it
    /// again ([`Connection::evalsha`]).
    pub(crate) async fn evalsha<T: FromRedisValue>(
        &self,
        op: &'static str,
        target: &str,
        script: &Script,
        evalsha: &Cmd,
    ) -> Result<T> {
        self.send(op, target, |conn| conn.evalsha(script, evalsha))
            .await
    }

    /// Sends `pipe`, a pipeline (never a `MULTI`/`EXEC` transaction: see [`Self::atomic`]).
    ///
    /// On a Redis Cluster a pipeline goes to one node and may only name keys of one slot: one
    /// naming streams of several slots (acknowledgements of a subscription to several streams,
    /// the groups it creates, an overview) is sent as one pipeline per slot, concurrently, and
    /// the replies put back in order, so the caller gets what one pipeline would have given.
    pub(crate) async fn pipe<T: FromRedisValue>(
        &self,
        op: &'static str,
        target: &str,
        pipe: &Pipeline,
    ) -> Result<T> {
        if self.conn.topology() == Topology::Cluster
            && let Some(parts) = split_by_slot(pipe)
        {
            let parts = &parts;
            return self
                .send(op, target, |conn| async move {
                    query_split::<T>(conn.clone(), parts, pipe.len()).await
                })
                .await;
        }
        self.send(op, target, |conn| async move {
            pipe.query_async::<T>(&mut conn.clone()).await
        })
        .await
    }

    /// Runs `call` on the shared connection, through the breaker when this traffic is guarded.
    ///
    /// A call that failed because no connection could be made (refused: the server is down or
    /// restarting) was not sent, so it is sent once more at once: the second try makes a new
    /// connection, and a server that is back by now answers it. Without this, the first call after a restart would fail however long the
    /// server had been back. Nothing that may have reached the server is sent twice.
    async fn send<'a, T, F, Fut>(&'a self, op: &'static str, target: &str, call: F) -> Result<T>
    where
        F: Fn(&'a Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>> + 'a,
    {
        // Written flat (a permit, the call, the outcome) rather than through the breaker's
        // `call` and a closure: every publish comes through here, and each layer of futures
        // made its future larger to move (about 600 instructions per publish).
        let permit = match &self.breaker {
            Some(breaker) => Some(breaker.try_acquire()?),
            None => None,
        };
        let mut result = call(&self.conn).await;
        if matches!(&result, Err(err) if not_sent(err)) {
            result = call(&self.conn).await;
        }
        let result = result.map_err(|err| command_error(op, target, err));
        if let Some(permit) = permit {
            permit.record(&result);
        }
        result
    }
}

/// One slot's share of a pipeline: the positions of its commands in the pipeline, and a
/// pipeline of them.
struct SlotPart {
    positions: Vec<usize>,
    pipe: Pipeline,
}

/// The key a command of the transport's pipelines names: after a subcommand (`XINFO STREAM
/// k`, `XGROUP CREATE k`), after the script and key count (`EVALSHA sha 1 k`), the first stream
/// of a read (`XREADGROUP GROUP g c COUNT n STREAMS k id`), otherwise first.
fn key_of(cmd: &Cmd) -> Option<Vec<u8>> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|arg| match arg {
            redis::Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let index = match name.as_slice() {
        b"XINFO" | b"XGROUP" => 2,
        b"EVAL" | b"EVALSHA" => 3,
        b"XREADGROUP" | b"XREAD" => {
            args.iter()
                .position(|arg| arg.eq_ignore_ascii_case(b"STREAMS"))?
                + 1
        }
        _ => 1,
    };
    args.get(index).map(|key| key.to_vec())
}

/// `pipe` split by slot, when its commands name keys of more than one slot; `None` when it can
/// go as it is. Every part ignores errors, so that each command's reply (or error) comes back
/// in its place.
fn split_by_slot(pipe: &Pipeline) -> Option<Vec<SlotPart>> {
    let mut parts: Vec<(redis::cluster_routing::Slot, SlotPart)> = Vec::new();
    for (position, cmd) in pipe.cmd_iter().enumerate() {
        let slot = redstream_core::keys::slot(&key_of(cmd).unwrap_or_default());
        let part = match parts.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, part)) => part,
            None => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                parts.push((
                    slot,
                    SlotPart {
                        positions: Vec::new(),
                        pipe,
                    },
                ));
                let (_, part) = parts.last_mut()?;
                part
            }
        };
        part.positions.push(position);
        part.pipe.add_command(cmd.clone());
    }
    (parts.len() > 1).then(|| parts.into_iter().map(|(_, part)| part).collect())
}

/// Sends the parts of a split pipeline of `len` commands concurrently and composes the reply
/// the whole pipeline would have had: each command's reply in its place; the first server
/// error when the caller's type cannot hold errors (a pipeline that does not ignore errors).
async fn query_split<T: FromRedisValue>(
    conn: Connection,
    parts: &[SlotPart],
    len: usize,
) -> redis::RedisResult<T> {
    let replies = futures_util::future::join_all(parts.iter().map(|part| {
        let mut conn = conn.clone();
        async move { part.pipe.query_async::<Vec<Value>>(&mut conn).await }
    }))
    .await;
    let mut values = vec![Value::Nil; len];
    for (part, reply) in parts.iter().zip(replies) {
        for (&position, value) in part.positions.iter().zip(reply?) {
            if let Some(slot) = values.get_mut(position) {
                *slot = value;
            }
        }
    }
    let first_error = values.iter().find_map(|value| match value {
        Value::ServerError(err) => Some(err.clone()),
        _ => None,
    });
    match T::from_redis_value(Value::Array(values)) {
        Ok(reply) => Ok(reply),
        Err(err) => Err(first_error.map_or_else(|| err.into(), Into::into)),
    }
}

/// The error code (`BUSYGROUP`, `NOGROUP`...) of the Redis error inside `err`.
pub(crate) fn redis_code(err: &Error) -> Option<&str> {
    std::error::Error::source(err)?
        .downcast_ref::<redis::RedisError>()?
        .code()
}

/// Whether a Redis error says the stream or the consumer group does not exist.
pub(crate) fn is_nogroup(err: &Error) -> bool {
    let source = std::error::Error::source(err).and_then(|s| s.downcast_ref::<redis::RedisError>());
    match source {
        Some(redis_err) => {
            redis_err.code() == Some("NOGROUP") || redis_err.to_string().contains("NOGROUP")
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe_of(cmds: &[Cmd]) -> Pipeline {
        let mut pipe = redis::pipe();
        for cmd in cmds {
            pipe.add_command(cmd.clone());
        }
        pipe
    }

    fn cmd(args: &[&str]) -> Cmd {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd
    }

    #[test]
    fn the_key_of_each_kind_of_command() {
        for (args, key) in [
            (&["XACK", "s1", "g", "1-0"][..], "s1"),
            (&["XINFO", "STREAM", "s2"][..], "s2"),
            (&["EVALSHA", "abc", "1", "s3", "x"][..], "s3"),
            (
                &[
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    "c",
                    "COUNT",
                    "5",
                    "STREAMS",
                    "s4",
                    "0",
                ][..],
                "s4",
            ),
            (&["XREAD", "COUNT", "5", "streams", "s5", "0"][..], "s5"),
        ] {
            assert_eq!(
                key_of(&cmd(args)),
                Some(key.as_bytes().to_vec()),
                "{args:?}"
            );
        }
        assert_eq!(key_of(&cmd(&["XREADGROUP", "GROUP", "g", "c"])), None);
    }

    /// A re-read's `XPENDING` and `XREADGROUP` name one stream: one pipeline, in order (split,
    /// the two parts would go concurrently, and the snapshot could follow the read).
    #[test]
    fn a_snapshot_and_its_read_of_one_stream_are_not_split() {
        // Keys of different slots ("a" is slot 15495, "b" 3300).
        let stream = "{a}:order.created";
        let together = pipe_of(&[
            cmd(&["XPENDING", stream, "g", "-", "+", "10", "c"]),
            cmd(&[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "COUNT",
                "10",
                "STREAMS",
                stream,
                "0",
            ]),
        ]);
        assert!(split_by_slot(&together).is_none());
        let apart = pipe_of(&[
            cmd(&["XACK", "{a}:x", "g", "1-0"]),
            cmd(&["XACK", "{b}:x", "g", "1-0"]),
        ]);
        let parts = split_by_slot(&apart).expect("two slots, two parts");
        assert_eq!(
            parts
                .iter()
                .map(|p| p.positions.clone())
                .collect::<Vec<_>>(),
            [vec![0], vec![1]]
        );
    }
}
