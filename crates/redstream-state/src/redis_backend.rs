//! The Redis backend: each operation of [`Backend`] as the commands it sends. A store puts it
//! behind the circuit breaker and, when configured, the fallback (see [`layer`](crate::layer));
//! the backend itself only talks to Redis.
//!
//! | operation | commands |
//! |---|---|
//! | `get`, `exists`, `ttl`, `delete` | `GET`, `EXISTS`, `PTTL`, `DEL` |
//! | `put`, `put_with_ttl` | `SET key json [PX ms]` |
//! | `get_many` | one `MGET` (on a cluster, redis-rs splits it by slot: one `MGET` per slot) |
//! | `put_many` | one `MSET`, or, when a TTL applies, the crate's all-or-nothing script of a `SET .. PX` per key, every permission checked first ([`put_many`]) |
//! | `incr_by`, `hset`, `hincr_by` | `INCRBY`, `HSET`, `HINCRBY`; with a default TTL, a script that also sets it on a key it creates |
//! | `update`, `compare_and_set` | `GET`, then a compare-and-set script (`GET`, compare, `SET`) |
//! | `list_keys`, `list_keys_matching` | `SCAN cursor MATCH <escaped prefix>:<key prefix or glob> COUNT 1000` until the cursor is 0 (core's `keys::scan`); on a cluster, on every master in turn |
//! | `transaction` | puts and deletes: the crate's all-or-nothing script of their `SET`s and `DEL`s, every permission checked first ([`write`](mod@write)); with increments, `WATCH` + `GET` + `MULTI` on a dedicated connection, then the writes and `EXEC` |
//! | `save_checkpoint` | the same script ([`write`](mod@write)): `SET` per snapshot key, `DEL` + `HSET` of the record |
//! | `restore_checkpoint` | `WATCH` + `HGETALL` + `MULTI` on a dedicated connection, then a `SET` per key and `EXEC` |
//! | `load_checkpoint` | `HGETALL` of the record |
//!
//! Every key comes from [`Keys`]; every error names the key (as given and as stored) and the
//! server's redacted URL.
//!
//! # Topologies
//!
//! The connections are core's ([`redstream_core::connection`]): a single server, a cluster or
//! a master found through Sentinel, chosen by the URL. On a cluster each command goes to the
//! master of its key's slot; the key layout, unless the user chose one, is
//! [`KeyLayout::Cluster`](crate::KeyLayout) (one slot per store), so every operation works. In
//! the plain layout on a cluster, the operations that write several keys as one (`put_many`,
//! transactions, `save_checkpoint`, `restore_checkpoint`) first check that the keys share a
//! slot, and fail with `InvalidInput` naming the keys' slots, before anything is sent, when
//! they do not ([`RedisBackend::one_slot`]); `get_many` is split by slot by redis-rs.
//!
//! No write that must go with others is ever sent behind a `MULTI` that the server might refuse
//! (an ACL user without `+multi`): those writes would then run one by one. Either they go in one
//! script that checks permissions and key types before it writes anything, or `MULTI` is sent
//! behind the reads that precede them and its reply is checked before a write is sent. The
//! latter, the writes that `WATCH`, are in [`watched`].

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::{Cmd, RedisError, RedisResult, Script};
use redstream_core::connection::{Connection, Topology, command_error, was_not_sent};
use redstream_core::keys::KeyLayout;
use redstream_core::{Error, ErrorKind, Result};

use crate::backend::{Backend, Items, SetExpiry};
use crate::checkpoint::RawCheckpoint;
use crate::connection::{self, WatchPool};
use crate::keys::Keys;
use crate::store::{Read, Ttl};
use crate::transaction::TxOp;

mod put_many;
mod watched;
mod write;

/// The arguments of a command as bytes, for the tests of the commands the scripts are called
/// with.
#[cfg(test)]
fn args(cmd: &redis::Cmd) -> Vec<Vec<u8>> {
    cmd.args_iter()
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => bytes.to_vec(),
            _ => panic!("only plain arguments are expected"),
        })
        .collect()
}

/// A checkpoint record's fields as `HGETALL` answers them.
type RecordFields = Vec<(Vec<u8>, Vec<u8>)>;

/// The start of the scripts that write and then set a TTL: the user may run `PEXPIRE` on the
/// key, checked before anything is written (a refusal after the write would leave a key
/// without its TTL, and a retry would count twice). `#!lua` with no flags: refused whole when
/// the server is out of memory.
const PEXPIRE_ALLOWED: &str = r"if not redis.acl_check_cmd('PEXPIRE', KEYS[1], '1') then
  return redis.error_reply('NOPERM this user has no permissions to run the PEXPIRE command on ' ..
    KEYS[1] .. ', which sets the TTL of what this writes (nothing was written)')
end
";

/// Creates the key with `PEXPIRE` when `INCRBY` creates it.
static INCR_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "#!lua\n{PEXPIRE_ALLOWED}{}",
        r"local created = redis.call('EXISTS', KEYS[1]) == 0
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if created then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n
"
    ))
});

/// `HSET` of one field, with `PEXPIRE` when it creates the hash.
static HSET_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "#!lua\n{PEXPIRE_ALLOWED}{}",
        r"local created = redis.call('EXISTS', KEYS[1]) == 0
local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if created then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return added
"
    ))
});

/// `HINCRBY`, with `PEXPIRE` when it creates the hash.
static HINCR_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "#!lua\n{PEXPIRE_ALLOWED}{}",
        r"local created = redis.call('EXISTS', KEYS[1]) == 0
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if created then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return n
"
    ))
});

/// Compare-and-set. ARGV: `1` if a value is expected (`0`: the key must be absent), the
/// expected value, the new value, and `keep`, `persist` or a TTL in milliseconds.
static CAS_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[4] == 'keep' then
  redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
elseif ARGV[4] == 'persist' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1
",
    )
});

/// A store's view of one Redis (server, cluster or Sentinel-managed master) and prefix.
/// Cloning shares the connections.
#[derive(Clone)]
pub(crate) struct RedisBackend {
    conn: Connection,
    keys: Keys,
    /// Whether multi-key writes must check that their keys share a slot: the plain layout on a
    /// cluster.
    check_slots: bool,
    /// The server's URL, redacted, for messages.
    server: Arc<str>,
    watch: Arc<WatchPool>,
    update_max_attempts: u32,
}

fn ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisBackend {
    /// Connects (core's `connect`, which checks the server and the credentials with a
    /// `PING`), and names the keys under `prefix` in the layout the config gives for the
    /// topology found ([`StateConfig::key_layout_for`](crate::StateConfig::key_layout_for)).
    pub(crate) async fn connect(prefix: &str, config: &crate::config::StateConfig) -> Result<Self> {
        let conn = connection::connect(config).await?;
        let server: Arc<str> = conn.target().into();
        let topology = conn.topology();
        let layout = config.key_layout_for(topology);
        let check_slots = topology == Topology::Cluster && layout != KeyLayout::Cluster;
        if check_slots {
            tracing::warn!(
                server = %server,
                prefix,
                "the plain key layout on a Redis Cluster: put_many, transactions and \
                 checkpoints fail unless their keys share a slot; key_layout cluster puts a \
                 store in one slot"
            );
        }
        Ok(Self {
            watch: Arc::new(WatchPool::new(conn.clone(), config)),
            conn,
            keys: Keys::new(prefix, layout),
            check_slots,
            server,
            update_max_attempts: config.update_max_attempts,
        })
    }

    /// Whether the connection is to a cluster, a single server or a Sentinel-managed master.
    pub(crate) fn topology(&self) -> Topology {
        self.conn.topology()
    }

    /// Checks that the Redis keys of `keys` (user keys, or checkpoint records given as
    /// `(name, redis key)`) share a Redis Cluster slot when they must (the plain layout on a
    /// cluster): a command or transaction across slots would be refused by Redis
    /// (`CROSSSLOT`) or split by the client, and neither is all or nothing.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] naming the operation, a key of each slot (as given and as
    /// stored) with its slot, and the fix (the cluster key layout). Nothing was sent.
    pub(crate) fn one_slot<'k>(
        &self,
        operation: &str,
        keys: impl IntoIterator<Item = (&'k str, String)>,
    ) -> Result<()> {
        if !self.check_slots {
            return Ok(());
        }
        let mut slots: Vec<(u16, &str, String)> = Vec::new();
        for (key, redis_key) in keys {
            let slot = crate::keys::cluster_slot(&redis_key);
            if !slots.iter().any(|(s, _, _)| *s == slot) {
                slots.push((slot, key, redis_key));
            }
        }
        if slots.len() <= 1 {
            return Ok(());
        }
        const SHOWN: usize = 4;
        let mut named: Vec<String> = slots
            .iter()
            .take(SHOWN)
            .map(|(slot, key, redis_key)| format!("{key:?} ({redis_key}) in slot {slot}"))
            .collect();
        if slots.len() > SHOWN {
            named.push(format!("and keys in {} more slots", slots.len() - SHOWN));
        }
        Err(Error::invalid_input(
            format!("{operation} on the Redis Cluster {}", self.server),
            format!(
                "its keys are in different slots: {}; nothing was written. Operations that \
                 write several keys at once need them in one slot: use key_layout cluster \
                 ({{{prefix}}}:key, every key of the store in one slot), or keys that share a \
                 hash tag",
                named.join(", "),
                prefix = self.keys.base(),
            ),
        ))
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    fn error(&self, operation: &'static str, key: &str, err: RedisError) -> Error {
        command_error(operation, self.target(key), err)
    }

    /// Runs `call` on the shared connection. A call that failed because no connection could be
    /// made (refused: the server is down or restarting) never left this process, so it is sent
    /// once more at once: the second try makes a new connection, and a server that is back by
    /// now answers it. Nothing that may have reached the
    /// server is sent twice.
    async fn send<'a, T, F, Fut>(&'a self, call: F) -> RedisResult<T>
    where
        F: Fn(&'a Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>> + 'a,
    {
        match call(&self.conn).await {
            Err(err) if was_not_sent(&err) => call(&self.conn).await,
            result => result,
        }
    }

    /// `send` of one command. Written out rather than through `send`'s closure, and taking
    /// the command by value, so that a single-key operation is one future in the caller's
    /// (see [`get`](Backend::get)), not three nested ones.
    async fn query<T: redis::FromRedisValue>(
        &self,
        operation: &'static str,
        key: &str,
        cmd: impl std::borrow::Borrow<Cmd>,
    ) -> Result<T> {
        let cmd = cmd.borrow();
        let result = match self.conn.query(cmd).await {
            Err(err) if was_not_sent(&err) => self.conn.query(cmd).await,
            result => result,
        };
        result.map_err(|err| self.error(operation, key, err))
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        operation: &'static str,
        key: &str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        self.send(|conn| async move { invocation.invoke_async(&mut conn.clone()).await })
            .await
            .map_err(|err| self.error(operation, key, err))
    }

    /// The user keys of the Redis keys matching `pattern` (core's `SCAN` walk, which skips keys
    /// that are not UTF-8: no store key can name them), sorted, without duplicates. On a
    /// cluster, every master is scanned in turn ([`Connection::cluster_masters`]).
    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        let found = if self.conn.topology() == Topology::Cluster {
            self.scan_masters(pattern).await?
        } else {
            let mut conn = self.conn.clone();
            let target = format!("pattern {pattern:?} on {}", self.server);
            redstream_core::keys::scan(&mut conn, pattern, None, &target).await?
        };
        // Sorted Redis keys of one base and separator give sorted user keys.
        Ok(found
            .iter()
            .filter_map(|redis_key| self.keys.user_key(redis_key))
            .map(str::to_owned)
            .collect())
    }

    /// `SCAN` on each master of the cluster, until each cursor is 0: the matching keys,
    /// sorted, without duplicates. A master that fails over during the walk is read through
    /// the cluster's view at the time `cluster_masters` asked.
    async fn scan_masters(&self, pattern: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        for master in self.conn.cluster_masters().await? {
            let mut cursor: u64 = 0;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000);
                let (next, batch): (u64, Vec<Vec<u8>>) =
                    self.conn.query_node(&master, &cmd).await.map_err(|err| {
                        with_target(err, || {
                            format!("pattern {pattern:?} on {} (node {master})", self.server)
                        })
                    })?;
                keys.extend(batch.into_iter().filter_map(|k| String::from_utf8(k).ok()));
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }
}

impl Backend for RedisBackend {
    /// How a key is named in errors: as given, as stored, and where.
    fn target(&self, key: &str) -> String {
        format!("key {key:?} ({}) on {}", self.keys.key(key), self.server)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.query("GET", key, self.keys.command("GET", key, 0, 0))
            .await
    }

    async fn read(&self, key: &str) -> Result<Read<Vec<u8>>> {
        // Not through `get`: one future less in the store's `get`.
        let value = self
            .query("GET", key, self.keys.command("GET", key, 0, 0))
            .await?;
        Ok(Read {
            value,
            stale: false,
        })
    }

    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Vec<u8>, Option<Duration>)>> {
        let redis_key = self.keys.key(key);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&redis_key).cmd("PTTL").arg(&redis_key);
        let pipe = &pipe;
        let (value, pttl): (Option<Vec<u8>>, i64) = self
            .send(|conn| async move { pipe.query_async(&mut conn.clone()).await })
            .await
            .map_err(|err| self.error("GET", key, err))?;
        Ok(value.map(|v| (v, u64::try_from(pttl).ok().map(Duration::from_millis))))
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<()> {
        // With a TTL: `PX` and at most 20 digits.
        let (more_args, more_bytes) = if ttl.is_some() { (3, 22) } else { (1, 0) };
        let mut cmd = self
            .keys
            .command("SET", key, more_args, value.len() + more_bytes);
        cmd.arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ms(ttl));
        }
        self.query("SET", key, &cmd).await
    }

    async fn set_many(&self, items: Items, ttl: Option<Duration>) -> Result<()> {
        let Some(target_key) = items.first_key() else {
            return Ok(());
        };
        self.one_slot(
            "put_many",
            items.keys().map(|key| (key, self.keys.key(key))),
        )?;
        match ttl {
            None => {
                let mut cmd = redis::cmd("MSET");
                // One buffer for every Redis key: no allocation per key.
                let mut redis_key = String::new();
                for (key, value) in items.iter() {
                    self.keys.write_key(&mut redis_key, key);
                    cmd.arg(redis_key.as_str()).arg(value);
                }
                self.query("MSET", target_key, &cmd).await
            }
            Some(ttl) => {
                // All or nothing whatever the user may do: the crate's own script for this
                // shape, with core's guarantees and errors (see `put_many`).
                let cmd = put_many::call(&self.keys, &items, ms(ttl));
                let cmd = &cmd;
                let _written = self
                    .send(|conn| put_many::send(conn, cmd))
                    .await
                    .map_err(|err| self.error("transaction of SET .. PX", target_key, err))?;
                Ok(())
            }
        }
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let Some(first) = keys.first() else {
            return Ok(Vec::new());
        };
        let mut cmd = redis::cmd("MGET");
        // One buffer for every Redis key: no allocation per key.
        let mut redis_key = String::new();
        for key in keys {
            self.keys.write_key(&mut redis_key, key);
            cmd.arg(redis_key.as_str());
        }
        self.query("MGET", first, &cmd).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let _deleted: i64 = self
            .query("DEL", key, &self.keys.command("DEL", key, 0, 0))
            .await?;
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let n: i64 = self
            .query("EXISTS", key, &self.keys.command("EXISTS", key, 0, 0))
            .await?;
        Ok(n > 0)
    }

    async fn ttl(&self, key: &str) -> Result<Ttl> {
        let pttl: i64 = self
            .query("PTTL", key, &self.keys.command("PTTL", key, 0, 0))
            .await?;
        Ok(match pttl {
            -2 => Ttl::Missing,
            n if n < 0 => Ttl::Persistent,
            n => Ttl::ExpiresIn(Duration::from_millis(n.unsigned_abs())),
        })
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        let set: i64 = self
            .query(
                "PEXPIRE",
                key,
                self.keys.command("PEXPIRE", key, 1, 20).arg(ms(ttl)),
            )
            .await?;
        Ok(set == 1)
    }

    async fn persist(&self, key: &str) -> Result<bool> {
        let done: i64 = self
            .query("PERSIST", key, &self.keys.command("PERSIST", key, 0, 0))
            .await?;
        Ok(done == 1)
    }

    async fn incr_by(&self, key: &str, by: i64, ttl_if_new: Option<Duration>) -> Result<i64> {
        let redis_key = self.keys.key(key);
        match ttl_if_new {
            None => {
                self.query("INCRBY", key, redis::cmd("INCRBY").arg(redis_key).arg(by))
                    .await
            }
            Some(ttl) => {
                let mut invocation = INCR_SCRIPT.key(redis_key);
                invocation.arg(by).arg(ms(ttl));
                self.script("INCRBY", key, &invocation).await
            }
        }
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        expiry: SetExpiry,
    ) -> Result<bool> {
        let mut invocation = CAS_SCRIPT.key(self.keys.key(key));
        invocation
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(new);
        match expiry {
            SetExpiry::Keep => invocation.arg("keep"),
            SetExpiry::Persist => invocation.arg("persist"),
            SetExpiry::After(ttl) => invocation.arg(ms(ttl)),
        };
        let swapped: i64 = self.script("compare-and-set", key, &invocation).await?;
        Ok(swapped == 1)
    }

    async fn hset(
        &self,
        key: &str,
        field: &str,
        value: Vec<u8>,
        ttl_if_new: Option<Duration>,
    ) -> Result<bool> {
        let redis_key = self.keys.key(key);
        let added: i64 = match ttl_if_new {
            None => {
                self.query(
                    "HSET",
                    key,
                    redis::cmd("HSET").arg(redis_key).arg(field).arg(value),
                )
                .await?
            }
            Some(ttl) => {
                let mut invocation = HSET_SCRIPT.key(redis_key);
                invocation.arg(field).arg(value).arg(ms(ttl));
                self.script("HSET", key, &invocation).await?
            }
        };
        Ok(added == 1)
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>> {
        self.query(
            "HGET",
            key,
            self.keys.command("HGET", key, 1, field.len()).arg(field),
        )
        .await
    }

    async fn hgetall(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let raw: Vec<(Vec<u8>, Vec<u8>)> = self
            .query("HGETALL", key, &self.keys.command("HGETALL", key, 0, 0))
            .await?;
        raw.into_iter()
            .map(|(field, value)| {
                String::from_utf8(field)
                    .map(|field| (field, value))
                    .map_err(|_| {
                        Error::backend(
                            ErrorKind::Decode,
                            "HGETALL",
                            self.target(key),
                            "a field name is not UTF-8 (written by another client?)",
                        )
                    })
            })
            .collect()
    }

    async fn hincr_by(
        &self,
        key: &str,
        field: &str,
        by: i64,
        ttl_if_new: Option<Duration>,
    ) -> Result<i64> {
        let redis_key = self.keys.key(key);
        match ttl_if_new {
            None => {
                self.query(
                    "HINCRBY",
                    key,
                    redis::cmd("HINCRBY").arg(redis_key).arg(field).arg(by),
                )
                .await
            }
            Some(ttl) => {
                let mut invocation = HINCR_SCRIPT.key(redis_key);
                invocation.arg(field).arg(by).arg(ms(ttl));
                self.script("HINCRBY", key, &invocation).await
            }
        }
    }

    async fn hdel(&self, key: &str, field: &str) -> Result<bool> {
        let n: i64 = self
            .query(
                "HDEL",
                key,
                self.keys.command("HDEL", key, 1, field.len()).arg(field),
            )
            .await?;
        Ok(n > 0)
    }

    /// The keys of this store starting with `key_prefix`, sorted, found with `SCAN`.
    async fn list(&self, key_prefix: &str) -> Result<Vec<String>> {
        self.scan(&self.keys.scan_pattern(key_prefix)).await
    }

    /// The keys of this store whose user key matches the glob `glob`, sorted.
    async fn list_matching(&self, glob: &str) -> Result<Vec<String>> {
        self.scan(&self.keys.glob_pattern(glob)).await
    }

    /// Applies a transaction; see the [`transaction`](crate::transaction) module.
    async fn transaction(&self, ops: &[TxOp], implicit_ttl: Option<Duration>) -> Result<Vec<i64>> {
        let Some(first) = ops.first() else {
            return Ok(Vec::new());
        };
        self.one_slot(
            "transaction",
            ops.iter().map(|op| (op.key(), self.keys.key(op.key()))),
        )?;
        // Puts and deletes need no WATCH: one all-or-nothing script of the crate's own for
        // this shape (see `write`), which a refused permission or OOM stops before any write.
        if let Some(cmd) = write::transaction(&self.keys, ops, implicit_ttl) {
            let cmd = &cmd;
            self.send(|conn| write::query(conn, cmd))
                .await
                .map_err(|err| self.error("transaction of SET/DEL", first.key(), err))?;
            return Ok(Vec::new());
        }
        let incr_keys: Vec<&str> = {
            let mut keys: Vec<&str> = ops
                .iter()
                .filter_map(|op| match op {
                    TxOp::IncrBy { key, .. } => Some(key.as_str()),
                    _ => None,
                })
                .collect();
            keys.sort_unstable();
            keys.dedup();
            keys
        };
        self.watched_transaction(ops, &incr_keys, implicit_ttl)
            .await
    }

    async fn save_checkpoint(
        &self,
        name: &str,
        checkpoint: RawCheckpoint,
        implicit_ttl: Option<Duration>,
    ) -> Result<()> {
        let record = self.keys.checkpoint(name);
        self.one_slot(
            "save_checkpoint",
            std::iter::once((name, record.clone())).chain(
                checkpoint
                    .state
                    .iter()
                    .map(|(key, _)| (key.as_str(), self.keys.key(key))),
            ),
        )?;
        // All or nothing whatever the user may do: the crate's own script for this shape
        // (see `write`): a `SET` per snapshot key, then `DEL` and `HSET` of the record (after
        // the `DEL` the record is a hash or nothing, whatever it was).
        let cmd = write::checkpoint(&self.keys, &record, checkpoint, implicit_ttl);
        let cmd = &cmd;
        self.send(|conn| write::query(conn, cmd))
            .await
            .map_err(|err| {
                command_error(
                    "save checkpoint (transaction)",
                    format!("checkpoint {name:?} ({record}) on {}", self.server),
                    err,
                )
            })
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<RawCheckpoint>> {
        let record = self.keys.checkpoint(name);
        let target = format!("checkpoint {name:?} ({record}) on {}", self.server);
        let hgetall = redis::cmd("HGETALL").arg(&record).clone();
        let hgetall = &hgetall;
        let fields: RecordFields = self
            .send(|conn| async move { hgetall.query_async(&mut conn.clone()).await })
            .await
            .map_err(|err| command_error("HGETALL", target.clone(), err))?;
        RawCheckpoint::from_fields(&target, fields)
    }

    /// See [`watched`]: `WATCH` + `HGETALL` + `MULTI`, then the writes and `EXEC`.
    async fn restore_checkpoint(
        &self,
        name: &str,
        implicit_ttl: Option<Duration>,
    ) -> Result<Option<RawCheckpoint>> {
        self.watched_restore(name, implicit_ttl).await
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<bool> {
        let record = self.keys.checkpoint(name);
        let del = redis::cmd("DEL").arg(&record).clone();
        let del = &del;
        let n: i64 = self
            .send(|conn| async move { del.query_async(&mut conn.clone()).await })
            .await
            .map_err(|err| {
                command_error(
                    "DEL",
                    format!("checkpoint {name:?} ({record}) on {}", self.server),
                    err,
                )
            })?;
        Ok(n > 0)
    }

    fn redis_key(&self, key: &str) -> Option<String> {
        Some(self.keys.key(key))
    }
}

/// `err` with its target replaced by `target()` (core's `query_node` names only the node).
fn with_target(mut err: Error, target: impl FnOnce() -> String) -> Error {
    if let Error::Backend { target: shown, .. } = &mut err {
        *shown = target();
    }
    err
}
