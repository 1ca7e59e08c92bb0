//! `put_many` with a TTL: one script of the state crate's own for this one shape, every key
//! written with `SET key value PX ms`, all or nothing.
//!
//! It promises what core's generic transaction ([`redstream_core::atomic`]) promises for the
//! same `SET`s, and it answers with the same errors:
//!
//! - before its first write it asks `redis.acl_check_cmd('SET', key, '-', 'PX', ms)` for every
//!   key, so a user refused `SET` on one key (an ACL selector that allows `SET` on some keys
//!   only) gets a `NOPERM` naming the command and the key, and nothing is written (a key the
//!   user may only read is refused even earlier, by the server's own check of the declared
//!   keys). ACL rules name commands and keys, never values, so a placeholder stands for the
//!   value: the check does not copy every value once more (6% of the script's time for
//!   seed-sized values);
//! - it is declared with `#!lua` and no flags, so a server out of memory or a read-only replica
//!   refuses it whole (`OOM`, `READONLY`) before it starts;
//! - every key is declared in `KEYS`, so the server checks the user's key permissions before it
//!   runs it and a Redis Cluster refuses keys of different slots (`CROSSSLOT`); the store
//!   refuses them first, naming the slots, in the plain layout on a cluster
//!   ([`RedisBackend::one_slot`](super::RedisBackend::one_slot));
//! - a script runs with no other client's command in between; the `SET`s cannot fail once the
//!   checks pass (every key takes `SET` whatever it holds, and they share one expiry, which the
//!   first `SET` would refuse before anything is written if the server found it invalid).
//!
//! Core's script walks a list of commands of any shape (argument counts, wanted types, a table
//! of checks done) and answers every command's reply; this one reads keys from `KEYS` and
//! values from `ARGV` and answers the number of keys written. The `EVALSHA` is built straight
//! into one command buffer, each key and value copied once, and on `NOSCRIPT` (a restarted
//! server, a failover, `SCRIPT FLUSH`) the script is loaded and the call sent again, as redis-rs's
//! `Script` does.

use std::sync::LazyLock;

use redis::{Cmd, RedisResult, Script};
use redstream_core::connection::Connection;

use crate::backend::Items;
use crate::keys::Keys;

/// `KEYS`: the Redis keys. `ARGV`: their values in the same order, then the TTL in
/// milliseconds.
const SOURCE: &str = r"#!lua
local px = ARGV[#ARGV]
for i = 1, #KEYS do
  if not redis.acl_check_cmd('SET', KEYS[i], '-', 'PX', px) then
    return redis.error_reply('NOPERM this user has no permissions to run the SET command on ' ..
      KEYS[i] .. ' (nothing of the transaction was written)')
  end
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i], 'PX', px)
end
return #KEYS
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// The `EVALSHA` of the script for `items` (user key and value), their Redis keys named by
/// `keys`, each expiring after `px` milliseconds. Each Redis key is built in one reused buffer
/// and copied into the command: no allocation per key.
pub(super) fn call(keys: &Keys, items: &Items, px: u64) -> Cmd {
    let base = keys.base().len() + 1;
    let bytes: usize = items
        .iter()
        .map(|(key, value)| base + key.len() + value.len() + 32)
        .sum();
    let mut cmd = Cmd::with_capacity(items.len() * 2 + 4, bytes + 96);
    cmd.arg("EVALSHA").arg(SCRIPT.get_hash()).arg(items.len());
    let mut redis_key = String::new();
    for key in items.keys() {
        keys.write_key(&mut redis_key, key);
        cmd.arg(redis_key.as_str());
    }
    for (_, value) in items.iter() {
        cmd.arg(value);
    }
    cmd.arg(px);
    cmd
}

/// Sends `cmd` (from [`call`]) on `conn`; on `NOSCRIPT` loads the script and sends it
/// again, once ([`Connection::evalsha`]). The number of keys written.
pub(super) async fn send(conn: &Connection, cmd: &Cmd) -> RedisResult<i64> {
    conn.evalsha(&SCRIPT, cmd).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_declares_itself_with_no_flags() {
        // `#!lua` with no flags: Redis refuses it whole when out of memory or on a replica.
        assert_eq!(SOURCE.lines().next(), Some("#!lua"));
    }

    #[test]
    fn keys_come_first_then_values_then_the_ttl() {
        let keys = Keys::new("p", redstream_core::keys::KeyLayout::Plain);
        let mut items = Items::default();
        items.push("a", b"1");
        items.push("b", b"2");
        let cmd = call(&keys, &items, 60_000);
        let args = super::super::args(&cmd);
        let expected: Vec<&[u8]> = vec![
            b"EVALSHA",
            SCRIPT.get_hash().as_bytes(),
            b"2",
            b"p:a",
            b"p:b",
            b"1",
            b"2",
            b"60000",
        ];
        assert_eq!(args, expected);
    }
}
