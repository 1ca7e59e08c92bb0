//! `transaction` of puts and deletes, and `save_checkpoint`: one script of the state crate's own
//! for these two shapes, all or nothing.
//!
//! It promises what core's generic transaction ([`redstream_core::atomic`]) promised for the
//! same commands, and it answers with the same errors:
//!
//! - before its first write it asks `redis.acl_check_cmd` about every command it will run, with
//!   that command's arguments (`SET key -`, `SET key - PX ms`, `DEL key`, and for a checkpoint
//!   `DEL record` and `HSET record` with a placeholder field; ACL rules name commands and keys,
//!   never values, so a placeholder stands for each value, which is not copied once more), so
//!   a user refused one of them (an ACL selector that allows `SET` on some keys only) gets a
//!   `NOPERM` naming the command and the key, and nothing is written (a key the user may only
//!   read is refused even earlier, by the server's own check of the declared keys);
//! - it is declared with `#!lua` and no flags, so a server out of memory or a read-only replica
//!   refuses it whole (`OOM`, `READONLY`) before it starts;
//! - every key is declared in `KEYS`, so the server checks the user's key permissions before it
//!   runs it and a Redis Cluster refuses keys of different slots (`CROSSSLOT`); the store
//!   refuses them first, naming the slots, in the plain layout on a cluster
//!   ([`RedisBackend::one_slot`](super::RedisBackend::one_slot));
//! - a script runs with no other client's command in between; once the checks pass its
//!   commands cannot fail: `SET` and `DEL` take a key whatever it holds, the `HSET`s follow a
//!   `DEL` of their key, and every TTL was validated by the store (1 ms up to `i64::MAX / 2`
//!   ms, which Redis accepts).
//!
//! The writes run in the order of the keys: a transaction's puts and deletes as given; a
//! checkpoint's `SET` per snapshot key (with the store's implicit TTL, if any), then `DEL` of
//! the record and its `HSET`: `format`, `position`, `saved_at_ms`, then a `state:<key>` field per
//! snapshot key. The record's fields are not sent twice: the script names each `state:<key>`
//! from the snapshot key's Redis key (past the store's `prefix:`) and takes its value from that
//! key's `SET`. Lua cannot pass more than about 8,000 values to one call, so the record is
//! written in `HSET`s of at most 1,000 fields each, one after the other in the same script.
//! The `HSET` is checked once, with a placeholder field: ACL rules name commands and keys,
//! never a hash's fields.
//!
//! Core's script walks a list of commands of any shape (argument counts, wanted types, a table
//! of checks done) and answers every command's reply; this one reads keys from `KEYS`, what to
//! do with each from one letter per key, and values from `ARGV`, and answers the number of keys
//! written. The `EVALSHA` is built straight into one command buffer, each key and value copied
//! once, and on `NOSCRIPT` (a restarted server, a failover, `SCRIPT FLUSH`) the script is
//! loaded and the call sent again ([`query`]), as redis-rs's `Script` does.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{Cmd, RedisResult, Script};
use redstream_core::connection::Connection;

use super::ms;
use crate::checkpoint::RawCheckpoint;
use crate::keys::Keys;
use crate::transaction::TxOp;

/// `KEYS`: one Redis key per write. `ARGV[1]`: one letter per key saying what to do with it;
/// then each write's arguments, in the order of the keys:
///
/// - `s`: `SET key value` (ARGV: the value);
/// - `p`: `SET key value PX ms` (ARGV: the value, the milliseconds);
/// - `d`: `DEL key` (no ARGV);
/// - `r`, the last key only: a checkpoint record, `DEL key` then `HSET key` of the fields
///   that close ARGV and of a field per `SET` before it. ARGV: the length of the prefix of the
///   `SET` keys (`myapp:`), the prefix of their field names (`state:`), then field, value, ...
///
/// Answers the number of keys.
const SOURCE: &str = r"#!lua
local SET, SET_PX, DEL, RECORD = 115, 112, 100, 114 -- 's', 'p', 'd', 'r'
local CHUNK = 2000 -- fields and values per HSET: Lua unpacks at most ~8,000 values
local byte, call, allowed = string.byte, redis.call, redis.acl_check_cmd
local kinds, n = ARGV[1], #KEYS
if #kinds ~= n then
  return redis.error_reply('ERR redstream write script: ' .. #kinds .. ' kinds for ' .. n .. ' keys')
end
local function refused(command, key)
  return redis.error_reply('NOPERM this user has no permissions to run the ' .. command ..
    ' command on ' .. key .. ' (nothing of the transaction was written)')
end
-- Every command is checked before the first write; `a` walks ARGV along the keys.
local a, fields = 2, {}
for i = 1, n do
  local kind, key = byte(kinds, i), KEYS[i]
  if kind == SET then
    if not allowed('SET', key, '-') then return refused('SET', key) end
    a = a + 1
  elseif kind == SET_PX then
    if not allowed('SET', key, '-', 'PX', ARGV[a + 1]) then return refused('SET', key) end
    a = a + 2
  elseif kind == DEL then
    if not allowed('DEL', key) then return refused('DEL', key) end
  elseif kind == RECORD and i == n then
    -- The fields that close ARGV, then a field per SET before the record, named after its
    -- key past the prefix, holding its value.
    local skip, prefix = tonumber(ARGV[a]) + 1, ARGV[a + 1]
    for f = a + 2, #ARGV do fields[#fields + 1] = ARGV[f] end
    local v = 2
    for j = 1, i - 1 do
      local written = byte(kinds, j)
      if written == SET or written == SET_PX then
        fields[#fields + 1] = prefix .. string.sub(KEYS[j], skip)
        fields[#fields + 1] = ARGV[v]
        v = v + (written == SET and 1 or 2)
      end
    end
    if not allowed('DEL', key) then return refused('DEL', key) end
    -- ACL rules name commands and keys, never a hash's fields: one check, with a placeholder.
    if not allowed('HSET', key, 'format', '-') then return refused('HSET', key) end
  else
    return redis.error_reply('ERR redstream write script: no write ' .. tostring(kind) ..
      ' for key ' .. i)
  end
end
a = 2
for i = 1, n do
  local kind, key = byte(kinds, i), KEYS[i]
  if kind == SET then
    call('SET', key, ARGV[a])
    a = a + 1
  elseif kind == SET_PX then
    call('SET', key, ARGV[a], 'PX', ARGV[a + 1])
    a = a + 2
  elseif kind == DEL then
    call('DEL', key)
  else
    call('DEL', key)
    for c = 1, #fields, CHUNK do
      call('HSET', key, unpack(fields, c, math.min(c + CHUNK - 1, #fields)))
    end
  end
end
return n
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// The letters of `SOURCE`.
const SET: u8 = b's';
const SET_PX: u8 = b'p';
const DEL: u8 = b'd';
const RECORD: u8 = b'r';

/// What precedes a snapshot key in the name of its field of the checkpoint record (see
/// [`checkpoint`](crate::checkpoint); a test below checks it against `RawCheckpoint::to_fields`).
const STATE_FIELD: &str = "state:";

/// Room for the arguments besides the keys and values: the command, the hash, the key count,
/// the letters, and per key its length prefix and a TTL.
const PER_KEY: usize = 32;

/// A command with room for `keys` keys and about `bytes` bytes of arguments, and its first
/// three arguments: `EVALSHA <hash> <keys>`.
fn evalsha(keys: usize, bytes: usize) -> Cmd {
    let mut cmd = Cmd::with_capacity(keys * 3 + 8, bytes + keys * PER_KEY + 128);
    cmd.arg("EVALSHA").arg(SCRIPT.get_hash()).arg(keys);
    cmd
}

/// The `EVALSHA` of the script for a transaction of puts and deletes, their Redis keys named
/// by `keys`; a put without a TTL of its own gets `implicit_ttl`. `None` when `ops` holds an
/// increment, which this script does not do. Each Redis key is built in one reused buffer and
/// copied into the command: no allocation per key.
pub(super) fn transaction(
    keys: &Keys,
    ops: &[TxOp],
    implicit_ttl: Option<Duration>,
) -> Option<Cmd> {
    let base = keys.base().len() + 1;
    // One pass for the letters and the size of the command, which ends at an increment.
    let mut kinds = Vec::with_capacity(ops.len());
    let mut bytes = 0;
    for op in ops {
        let (kind, len) = match op {
            TxOp::Put { key, value, ttl } => (
                if ttl.or(implicit_ttl).is_some() {
                    SET_PX
                } else {
                    SET
                },
                base + key.len() + value.len(),
            ),
            TxOp::Delete { key } => (DEL, base + key.len()),
            TxOp::IncrBy { .. } => return None,
        };
        kinds.push(kind);
        bytes += len;
    }
    let mut cmd = evalsha(ops.len(), bytes);
    let mut redis_key = String::new();
    for op in ops {
        keys.write_key(&mut redis_key, op.key());
        cmd.arg(redis_key.as_str());
    }
    cmd.arg(kinds.as_slice());
    for op in ops {
        if let TxOp::Put { value, ttl, .. } = op {
            cmd.arg(value.as_slice());
            if let Some(ttl) = ttl.or(implicit_ttl) {
                cmd.arg(ms(ttl));
            }
        }
    }
    Some(cmd)
}

/// The `EVALSHA` of the script for saving `checkpoint` in `record` (its Redis key): a `SET` per
/// snapshot key (named by `keys`), each with `implicit_ttl` if there is one, then `DEL` and
/// `HSET` of the record. Each value is sent once: the script takes the record's `state:<key>`
/// fields from the `SET`s.
pub(super) fn checkpoint(
    keys: &Keys,
    record: &str,
    mut checkpoint: RawCheckpoint,
    implicit_ttl: Option<Duration>,
) -> Cmd {
    let state = std::mem::take(&mut checkpoint.state);
    // The record's fields other than the snapshot's, named where the record format is.
    let head = checkpoint.to_fields();
    let base = keys.base().len() + 1;
    let bytes: usize = state
        .iter()
        .map(|(key, value)| base + key.len() + value.len())
        .chain(
            head.iter()
                .map(|(field, value)| field.len() + value.len() + PER_KEY),
        )
        .sum::<usize>()
        + record.len();
    let mut cmd = evalsha(state.len() + 1, bytes);
    let mut redis_key = String::new();
    for (key, _) in &state {
        keys.write_key(&mut redis_key, key);
        cmd.arg(redis_key.as_str());
    }
    cmd.arg(record);
    let px = implicit_ttl.map(ms);
    let mut kinds = vec![if px.is_some() { SET_PX } else { SET }; state.len()];
    kinds.push(RECORD);
    cmd.arg(kinds.as_slice());
    for (_, value) in &state {
        cmd.arg(value.as_slice());
        if let Some(px) = px {
            cmd.arg(px);
        }
    }
    // `prefix:` of every snapshot key, which the script cuts to name its field.
    keys.write_key(&mut redis_key, "");
    cmd.arg(redis_key.len()).arg(STATE_FIELD);
    for (field, value) in &head {
        cmd.arg(field.as_str()).arg(value.as_slice());
    }
    cmd
}

/// Sends `cmd` (from [`transaction`] or [`checkpoint`]) on `conn`; on `NOSCRIPT` loads the
/// script and sends it again, once ([`Connection::evalsha`]).
pub(super) async fn query(conn: &Connection, cmd: &Cmd) -> RedisResult<()> {
    let _written: i64 = conn.evalsha(&SCRIPT, cmd).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::args;
    use super::*;
    use redstream_core::keys::KeyLayout;

    #[test]
    fn the_script_declares_itself_with_no_flags() {
        // `#!lua` with no flags: Redis refuses it whole when out of memory or on a replica.
        assert_eq!(SOURCE.lines().next(), Some("#!lua"));
    }

    #[test]
    fn a_transaction_sends_keys_then_letters_then_values_and_ttls() {
        let keys = Keys::new("p", KeyLayout::Plain);
        let ops = [
            TxOp::Put {
                key: "a".into(),
                value: b"1".to_vec(),
                ttl: None,
            },
            TxOp::Delete { key: "b".into() },
            TxOp::Put {
                key: "c".into(),
                value: b"3".to_vec(),
                ttl: Some(Duration::from_secs(5)),
            },
        ];
        let plain: Vec<&[u8]> = vec![
            b"EVALSHA",
            SCRIPT.get_hash().as_bytes(),
            b"3",
            b"p:a",
            b"p:b",
            b"p:c",
            b"sdp",
            b"1",
            b"3",
            b"5000",
        ];
        assert_eq!(args(&transaction(&keys, &ops, None).unwrap()), plain);
        // The implicit TTL goes to the puts without one of their own.
        let implicit: Vec<&[u8]> = vec![
            b"EVALSHA",
            SCRIPT.get_hash().as_bytes(),
            b"3",
            b"p:a",
            b"p:b",
            b"p:c",
            b"pdp",
            b"1",
            b"60000",
            b"3",
            b"5000",
        ];
        let cmd = transaction(&keys, &ops, Some(Duration::from_secs(60))).unwrap();
        assert_eq!(args(&cmd), implicit);
        let with_incr = [TxOp::IncrBy {
            key: "n".into(),
            by: 1,
        }];
        assert!(transaction(&keys, &with_incr, None).is_none());
    }

    #[test]
    fn a_checkpoint_sends_its_values_once_and_the_record_last() {
        let keys = Keys::new("app", KeyLayout::Cluster);
        let checkpoint = RawCheckpoint {
            position: "7-0".into(),
            saved_at_ms: 1_700_000_000_000,
            state: vec![("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())],
        };
        let cmd = super::checkpoint(&keys, "{app}#checkpoint:cp", checkpoint, None);
        let expected: Vec<&[u8]> = vec![
            b"EVALSHA",
            SCRIPT.get_hash().as_bytes(),
            b"3",
            b"{app}:a",
            b"{app}:b",
            b"{app}#checkpoint:cp",
            b"ssr",
            b"1",
            b"2",
            b"6",
            b"state:",
            b"format",
            b"1",
            b"position",
            b"7-0",
            b"saved_at_ms",
            b"1700000000000",
        ];
        assert_eq!(args(&cmd), expected);
    }

    /// The record the script writes has the fields `RawCheckpoint::to_fields` names: the head
    /// it is sent, then `STATE_FIELD` and each snapshot key.
    #[test]
    fn the_record_fields_are_those_of_the_checkpoint_format() {
        let checkpoint = RawCheckpoint {
            position: "7-0".into(),
            saved_at_ms: 1,
            state: vec![("a:b".into(), b"1".to_vec())],
        };
        let mut head = checkpoint.clone();
        head.state.clear();
        let mut fields = head.to_fields();
        fields.push((format!("{STATE_FIELD}a:b"), b"1".to_vec()));
        assert_eq!(fields, checkpoint.to_fields());
    }
}
