//! Commands that run all or nothing: one Lua script that checks every command before it runs any.
//!
//! `MULTI`/`EXEC` promises less than it seems to. A queued command that fails when `EXEC` runs it
//! (`WRONGTYPE` on a key that holds a string, say) fails alone: the commands around it still
//! run. And a pipelined `MULTI` that the server refuses (an ACL user without `+multi`) is
//! answered with an error while the commands behind it run one by one, outside any
//! transaction. [`Atomic`] sends its commands as one `EVALSHA` of a script that first checks
//! each of them and only then runs them:
//!
//! - the user may run it, with its keys and arguments (`redis.acl_check_cmd`), so a refusal
//!   (`NOPERM`) comes before any write;
//! - its key holds the expected type or does not exist (`TYPE`), when the command names one
//!   ([`Atomic::push`]);
//! - the server is not out of memory and not a read-only replica: the script is declared with
//!   `#!lua` and no flags, so Redis refuses it as a whole (`OOM`, `READONLY`) before it starts.
//!
//! A transaction may also depend on its first command's answer ([`Atomic::guarded`]): the rest
//! runs only when that command changed something (an `XACK` that acknowledged the entry).
//!
//! A script runs without other clients' commands in between, and if the server refuses the
//! `EVALSHA` itself (an ACL user without `+evalsha`, or `NOSCRIPT` for a user without
//! `+script|load`) nothing runs. A failure the checks do not cover stops the script at the
//! command that fails, with the commands before it applied (Redis does not roll a script back):
//! in practice only an argument the server refuses, such as an explicit `XADD` id at or below
//! the stream's last one. Callers build their commands so that such arguments cannot occur, or
//! put the one command that may refuse them first.
//!
//! The keys of every command are declared as the script's keys, so on a Redis Cluster the
//! server refuses (`CROSSSLOT`) a transaction whose keys are in different slots.
//!
//! One command may carry up to 7,500 arguments: the script passes them to `redis.call` with
//! Lua's `unpack`, which cannot take many more; a longer command is refused (`ERR`, before any
//! write). Split a larger write into several commands (`HSET`s of 1,000 fields, say).
//!
//! Needs Redis 7.0 or later, or Valkey (the `#!lua` line and `redis.acl_check_cmd`). The user
//! needs `EVALSHA`, `SCRIPT LOAD` (once per server start), `TYPE` on the keys whose type is
//! checked, and the commands themselves.

use std::collections::HashSet;
use std::sync::LazyLock;

use redis::{Arg, Cmd, Script, ScriptInvocation};

/// The script. ARGV holds the commands one after the other, each as its number of arguments, the
/// type its key must have (empty: any) and its arguments (name first, then the key).
const SOURCE: &str = r"#!lua
local spans, checked, i = {}, {}, 1
local last1, last2, last3, last_want
-- A first command whose wanted type starts with '!' is a guard: when it answers 0, nothing
-- after it runs and the script answers nil.
local guarded = string.sub(ARGV[2] or '', 1, 1) == '!'
while i <= #ARGV do
  local argc, want = tonumber(ARGV[i]), ARGV[i + 1]
  if i == 1 and guarded then
    want = string.sub(want, 2)
  end
  local first, last = i + 2, i + 1 + argc
  i = last + 1
  if argc > 7500 then
    return redis.error_reply('ERR a command of ' .. argc .. ' arguments is more than one ' ..
      'transaction command may have (7,500) (nothing of the transaction was written)')
  end
  local a1, a2, a3 = ARGV[first], ARGV[first + 1], ARGV[first + 2]
  -- ACL rules name commands, subcommands and keys: one check per command, first two arguments
  -- (the key, or a subcommand and its key) and wanted type is enough, and a run of commands
  -- alike (a batch of XADDs to one stream) is checked once.
  if a1 ~= last1 or a2 ~= last2 or a3 ~= last3 or want ~= last_want then
    last1, last2, last3, last_want = a1, a2, a3, want
    local seen = table.concat({a1, tostring(a2), tostring(a3), want}, '\0')
    if not checked[seen] then
      if not redis.acl_check_cmd(unpack(ARGV, first, last)) then
        return redis.error_reply('NOPERM this user has no permissions to run the ' .. a1 ..
          ' command on ' .. tostring(a2) .. ' (nothing of the transaction was written)')
      end
      if want ~= '' then
        if not redis.acl_check_cmd('TYPE', a2) then
          return redis.error_reply('NOPERM this user has no permissions to run the TYPE command on ' ..
            a2 .. ', which the transaction runs to check key types first (nothing was written)')
        end
        local kind = redis.call('TYPE', a2)['ok']
        if kind ~= 'none' and kind ~= want then
          return redis.error_reply('WRONGTYPE ' .. a2 .. ' holds a ' .. kind .. ', not a ' ..
            want .. ' (nothing of the transaction was written)')
        end
      end
      checked[seen] = true
    end
  end
  spans[#spans + 1] = first
  spans[#spans + 1] = last
end
local replies = {}
for c = 1, #spans, 2 do
  local reply = redis.call(unpack(ARGV, spans[c], spans[c + 1]))
  if c == 1 and guarded and reply == 0 then
    return false
  end
  replies[#replies + 1] = reply
end
return replies
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// The type a command's key must hold for the transaction to run (or the key must not exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyType {
    /// A stream (`XADD`, `XACK`...).
    Stream,
    /// A string (`SET`, `INCRBY`...).
    String,
    /// A hash (`HSET`...).
    Hash,
    /// Any type: no check (`DEL`, `EXPIRE`...).
    Any,
}

impl KeyType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::String => "string",
            Self::Hash => "hash",
            Self::Any => "",
        }
    }
}

/// A transaction: commands that run all or nothing, in one round trip (see the module docs).
///
/// ```no_run
/// # async fn demo(mut conn: redis::aio::MultiplexedConnection) -> redis::RedisResult<()> {
/// use redstream_core::atomic::{Atomic, KeyType};
///
/// let mut tx = Atomic::new();
/// tx.push(redis::cmd("XADD").arg("events:dlq").arg("*").arg("event").arg("{}"), KeyType::Stream);
/// tx.push(redis::cmd("XACK").arg("events:order.created").arg("workers").arg("1-0"), KeyType::Stream);
/// let (dead_letter_id, acked): (String, i64) = tx.invocation().invoke_async(&mut conn).await?;
/// # Ok(())
/// # }
/// ```
pub struct Atomic {
    invocation: ScriptInvocation<'static>,
    commands: usize,
    /// The keys declared so far (each once, in the invocation, in the order first seen): a set,
    /// so a transaction of many keys is not quadratic.
    keys: HashSet<Vec<u8>>,
}

impl Atomic {
    /// An empty transaction.
    pub fn new() -> Self {
        Self {
            invocation: SCRIPT.prepare_invoke(),
            commands: 0,
            keys: HashSet::new(),
        }
    }

    /// A transaction that runs `guard` first and the commands pushed after it only when
    /// `guard` answers a number other than 0: an `XACK` that acknowledged the entry, a `DEL`
    /// that deleted something. When it answers 0 nothing else runs, nothing was written, and
    /// the transaction's reply is nil instead of the array of replies (decode it as an
    /// `Option`). Every command is checked before `guard` runs, as in any transaction.
    ///
    /// ```no_run
    /// # async fn demo(mut conn: redis::aio::MultiplexedConnection) -> redis::RedisResult<()> {
    /// use redstream_core::atomic::{Atomic, KeyType};
    ///
    /// // The dead letter is written only if the entry was still pending in the group.
    /// let mut tx = Atomic::guarded(
    ///     redis::cmd("XACK").arg("events:order.created").arg("workers").arg("1-0"),
    ///     KeyType::Stream,
    /// );
    /// tx.push(redis::cmd("XADD").arg("events:dlq").arg("*").arg("event").arg("{}"), KeyType::Stream);
    /// let moved: Option<(i64, String)> = tx.invocation().invoke_async(&mut conn).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn guarded(guard: &Cmd, key_type: KeyType) -> Self {
        let mut tx = Self::new();
        tx.push_marked(guard, key_type, true);
        tx
    }

    /// Adds `cmd`, whose first argument is its key and must hold `key_type` (or not exist) for
    /// the transaction to run. A command without arguments (no key) is added as it is; one whose
    /// first argument is a subcommand (`XGROUP CREATE`) takes [`KeyType::Any`].
    pub fn push(&mut self, cmd: &Cmd, key_type: KeyType) -> &mut Self {
        self.push_marked(cmd, key_type, false)
    }

    fn push_marked(&mut self, cmd: &Cmd, key_type: KeyType, guard: bool) -> &mut Self {
        let args: Vec<&[u8]> = cmd
            .args_iter()
            .filter_map(|arg| match arg {
                Arg::Simple(bytes) => Some(bytes),
                // Only `SCAN`-style commands have a cursor argument; none belongs here.
                _ => None,
            })
            .collect();
        if let Some(&key) = args.get(1)
            && !self.keys.contains(key)
        {
            self.invocation.key(key);
            self.keys.insert(key.to_vec());
        }
        let want = key_type.as_str();
        if guard {
            self.invocation.arg(args.len()).arg(format!("!{want}"));
        } else {
            self.invocation.arg(args.len()).arg(want);
        }
        for arg in args {
            self.invocation.arg(arg);
        }
        self.commands += 1;
        self
    }

    /// How many commands the transaction holds.
    pub fn len(&self) -> usize {
        self.commands
    }

    /// Whether the transaction holds no command.
    pub fn is_empty(&self) -> bool {
        self.commands == 0
    }

    /// The script call, to send with [`ScriptInvocation::invoke_async`]: `EVALSHA`, and on
    /// `NOSCRIPT` the script is loaded and called again. Its reply is an array of the commands'
    /// replies, in order.
    pub fn invocation(&self) -> &ScriptInvocation<'static> {
        &self.invocation
    }
}

impl Default for Atomic {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Atomic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The arguments may hold payloads; their count is enough to tell transactions apart.
        f.debug_struct("Atomic")
            .field("commands", &self.commands)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use redis::AsyncCommands;
    use redstream_testkit::RedisServer;

    use super::*;

    #[test]
    fn each_key_is_declared_once() {
        let mut tx = Atomic::new();
        tx.push(redis::cmd("SET").arg("a").arg("1"), KeyType::String)
            .push(redis::cmd("SET").arg("b").arg("2"), KeyType::String)
            .push(redis::cmd("DEL").arg("a"), KeyType::Any)
            .push(&redis::cmd("PING"), KeyType::Any);
        assert_eq!(tx.len(), 4);
        let shown = format!("{:?}", tx.invocation());
        assert!(shown.contains("keys: 2"), "{shown}");
    }

    /// Many distinct keys, each declared once, and a command on a key seen before: every
    /// command runs, in order.
    #[tokio::test]
    async fn a_transaction_of_thousands_of_keys_runs_whole() {
        const KEYS: usize = 5_000;
        let server = RedisServer::start().await.unwrap();
        let mut conn = server.connection().await.unwrap();
        let mut tx = Atomic::new();
        for n in 0..KEYS {
            tx.push(
                redis::cmd("SET").arg(format!("k:{n}")).arg(n),
                KeyType::String,
            );
        }
        tx.push(redis::cmd("DEL").arg("k:0"), KeyType::Any);
        let shown = format!("{:?}", tx.invocation());
        assert!(shown.contains(&format!("keys: {KEYS}")), "{shown}");
        let replies: Vec<redis::Value> = tx.invocation().invoke_async(&mut conn).await.unwrap();
        assert_eq!(replies.len(), KEYS + 1);
        let size: usize = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        assert_eq!(size, KEYS - 1);
        let last: Option<usize> = conn.get(format!("k:{}", KEYS - 1)).await.unwrap();
        assert_eq!(last, Some(KEYS - 1));
    }

    /// A command longer than Lua can unpack is refused before any write, even after a command
    /// alike was checked (the script checks a run of commands alike once).
    #[tokio::test]
    async fn a_command_too_long_for_the_script_writes_nothing() {
        let server = RedisServer::start().await.unwrap();
        let mut conn = server.connection().await.unwrap();
        let hset = |fields: usize| {
            let mut cmd = redis::cmd("HSET");
            cmd.arg("h");
            for n in 0..fields {
                cmd.arg(format!("f{n}")).arg(n);
            }
            cmd
        };
        let mut tx = Atomic::new();
        tx.push(&hset(10), KeyType::Hash)
            .push(&hset(3_749), KeyType::Hash);
        let _: Vec<redis::Value> = tx.invocation().invoke_async(&mut conn).await.unwrap();
        let written: usize = redis::cmd("HLEN")
            .arg("h")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(written, 3_749);

        let mut tx = Atomic::new();
        tx.push(redis::cmd("SET").arg("s").arg("1"), KeyType::String)
            .push(&hset(10), KeyType::Hash)
            .push(&hset(4_000), KeyType::Hash);
        let err = tx
            .invocation()
            .invoke_async::<Vec<redis::Value>>(&mut conn)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("8002 arguments"), "{err}");
        assert!(
            err.to_string()
                .contains("nothing of the transaction was written"),
            "{err}"
        );
        let exists: usize = redis::cmd("EXISTS")
            .arg("s")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(exists, 0);
        let written: usize = redis::cmd("HLEN")
            .arg("h")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(written, 3_749);
    }

    /// A guarded transaction runs whole when its guard answers a number other than 0, and
    /// writes nothing after a guard that answers 0 (the reply is then nil). A refused later
    /// command is refused before the guard runs.
    #[tokio::test]
    async fn a_guard_that_changed_nothing_stops_the_transaction() {
        let server = RedisServer::start().await.unwrap();
        let mut conn = server.connection().await.unwrap();
        let _: () = conn.set("present", "1").await.unwrap();
        let _: () = conn.set("text", "1").await.unwrap();
        let guarded = |key: &str, then: &str, key_type: KeyType| {
            let mut tx = Atomic::guarded(redis::cmd("DEL").arg(key), KeyType::Any);
            tx.push(redis::cmd("SET").arg(then).arg("done"), key_type);
            tx
        };

        let skipped: Option<(i64, String)> = guarded("missing", "a", KeyType::String)
            .invocation()
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(skipped, None);
        let a: Option<String> = conn.get("a").await.unwrap();
        assert_eq!(a, None, "nothing after a guard that answered 0");

        let ran: Option<(i64, String)> = guarded("present", "b", KeyType::String)
            .invocation()
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(ran, Some((1, "OK".to_owned())));
        let b: Option<String> = conn.get("b").await.unwrap();
        assert_eq!(b.as_deref(), Some("done"));

        // `text` holds a string, not a hash: refused before the guard deletes anything.
        let mut tx = Atomic::guarded(redis::cmd("DEL").arg("b"), KeyType::Any);
        tx.push(
            redis::cmd("HSET").arg("text").arg("f").arg("v"),
            KeyType::Hash,
        );
        let err = tx
            .invocation()
            .invoke_async::<Option<Vec<redis::Value>>>(&mut conn)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("WRONGTYPE"), "{err}");
        let b: Option<String> = conn.get("b").await.unwrap();
        assert_eq!(b.as_deref(), Some("done"), "the guard did not run");
    }
}
