//! The Redis keys of one store, built from its prefix on core's key rules
//! ([`redstream_core::keys`]: the [`KeyLayout`] vocabulary, the `:` separator, glob escaping and
//! the `SCAN` walk are written there once for every crate).
//!
//! | layout | key `counter` under `myapp` | checkpoint `orders` |
//! |---|---|---|
//! | [`KeyLayout::Plain`] (default) | `myapp:counter` | `myapp#checkpoint:orders` |
//! | [`KeyLayout::Cluster`] | `{myapp}:counter` | `{myapp}#checkpoint:orders` |
//!
//! The plain layout writes the names an operator types in `redis-cli` (`GET myapp:counter`).
//! Every key then hashes on its whole name, so on Redis Cluster the keys of one store spread over
//! the slots, and operations that touch several keys at once (transactions, `get_many`,
//! `put_many`, checkpoints) need a single Redis node or keys that happen to share a slot.
//!
//! The cluster layout wraps the prefix in a hash tag: a store is the unit that must change
//! atomically, so it gets one tag, every key of it lives in one slot, and the multi-key operations
//! work on Redis Cluster. Different stores (prefixes) land in different slots. This is also the
//! layout earlier versions wrote by default, so their data is read with `key_layout: cluster`.
//!
//! Checkpoints live beside the user's keys, not among them: `#` follows the prefix where user
//! keys have `:`, and prefixes may not contain `#`, so no user key of any store can be a
//! checkpoint key, and listing a store's keys never returns a checkpoint.

use std::io::Write as _;

use redis::{Cmd, RedisWrite as _};
use redstream_core::keys::{SEPARATOR, escape_glob_into};

pub use redstream_core::keys::KeyLayout;

/// What follows a store's base in the key of a checkpoint.
const CHECKPOINT: &str = "#checkpoint:";

/// Builds the Redis keys of one store, and the `SCAN` patterns that find them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `prefix` or `{prefix}`, depending on the layout.
    base: String,
    layout: KeyLayout,
}

impl Keys {
    /// Keys under `prefix` in `layout`. The prefix must already be validated (see
    /// [`StateConfig::validate`](crate::StateConfig::validate)): non-empty, without `{`, `}`
    /// or `#`.
    #[must_use]
    pub fn new(prefix: &str, layout: KeyLayout) -> Self {
        let base = match layout {
            KeyLayout::Cluster => format!("{{{prefix}}}"),
            // Plain, and any layout core adds later, until this store learns it.
            _ => prefix.to_owned(),
        };
        Self { base, layout }
    }

    /// The layout.
    #[must_use]
    pub fn layout(&self) -> KeyLayout {
        self.layout
    }

    /// The part every key of this store starts with: `prefix`, or `{prefix}` in the cluster
    /// layout.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The Redis key holding the user's `key`: `myapp:counter` (plain) or `{myapp}:counter`
    /// (cluster).
    #[must_use]
    pub fn key(&self, key: &str) -> String {
        let mut out = String::with_capacity(self.base.len() + 1 + key.len());
        self.write_key(&mut out, key);
        out
    }

    /// The command `name` with the Redis key of `key` as its first argument, sized for
    /// `more_args` further arguments of `more_bytes` bytes in all. The key is written straight
    /// into the command, and neither of its buffers grows while the caller adds the rest: a
    /// single-key operation allocates no key of its own and never reallocates the command.
    pub(crate) fn command(
        &self,
        name: &str,
        key: &str,
        more_args: usize,
        more_bytes: usize,
    ) -> Cmd {
        let mut separator = [0; 4];
        let parts = self.parts(key, &mut separator);
        let key_len: usize = parts.iter().map(|part| part.len()).sum();
        let mut cmd = Cmd::with_capacity(2 + more_args, name.len() + key_len + more_bytes);
        cmd.arg(name);
        let mut arg = cmd.writer_for_next_arg();
        // Writes into the command's own `Vec<u8>`, which cannot fail.
        for part in parts {
            let _ = arg.write_all(part.as_bytes());
        }
        drop(arg);
        cmd
    }

    /// [`key`](Self::key) written into `out`, which is cleared first: a caller naming many
    /// keys in turn reuses one buffer.
    pub(crate) fn write_key(&self, out: &mut String, key: &str) {
        out.clear();
        let mut separator = [0; 4];
        for part in self.parts(key, &mut separator) {
            out.push_str(part);
        }
    }

    /// The Redis key of `key` in its three parts, `base`, the separator (encoded into
    /// `separator`) and `key`: the one place that spells the key's format.
    fn parts<'a>(&'a self, key: &'a str, separator: &'a mut [u8; 4]) -> [&'a str; 3] {
        [&self.base, SEPARATOR.encode_utf8(separator), key]
    }

    /// The user's key inside a Redis key of this store, or `None` for any other key (a
    /// checkpoint, another store's key, a key in the other layout).
    #[must_use]
    pub fn user_key<'a>(&self, redis_key: &'a str) -> Option<&'a str> {
        redis_key
            .strip_prefix(self.base.as_str())?
            .strip_prefix(SEPARATOR)
    }

    /// The Redis key holding the checkpoint `name`.
    #[must_use]
    pub fn checkpoint(&self, name: &str) -> String {
        let mut out = String::with_capacity(self.base.len() + CHECKPOINT.len() + name.len());
        out.push_str(&self.base);
        out.push_str(CHECKPOINT);
        out.push_str(name);
        out
    }

    /// The checkpoint name inside a Redis key of this store's checkpoints, or `None` for any
    /// other key: the inverse of [`checkpoint`](Self::checkpoint).
    #[must_use]
    pub fn checkpoint_name<'a>(&self, redis_key: &'a str) -> Option<&'a str> {
        redis_key
            .strip_prefix(self.base.as_str())?
            .strip_prefix(CHECKPOINT)
    }

    /// A `SCAN ... MATCH` pattern for every checkpoint record of this store (the prefix matched
    /// literally). Use [`checkpoint_name`](Self::checkpoint_name) on what the scan returns.
    #[must_use]
    pub fn checkpoint_scan_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.base.len() + CHECKPOINT.len() + 4);
        escape_glob_into(&mut pattern, &self.base);
        pattern.push_str(CHECKPOINT);
        pattern.push('*');
        pattern
    }

    /// A `SCAN ... MATCH` pattern for the keys of this store that start with `key_prefix`
    /// (every key when it is empty). The store's prefix and `key_prefix` are matched
    /// literally: their glob characters (`*`, `?`, `[`, `]`, `\`) are escaped.
    #[must_use]
    pub fn scan_pattern(&self, key_prefix: &str) -> String {
        let mut pattern = self.head_pattern(key_prefix.len() + 4);
        escape_glob_into(&mut pattern, key_prefix);
        pattern.push('*');
        pattern
    }

    /// A `SCAN ... MATCH` pattern for the keys of this store whose user key (the part after the
    /// prefix) matches the glob `glob` (`*`, `?`, `[...]` and `\` as Redis reads them, e.g.
    /// `user:*`). The store's prefix is matched literally; the glob is used as given. Use
    /// [`user_key`](Self::user_key) on what the scan returns, and
    /// [`redstream_core::keys::scan`] to walk it.
    #[must_use]
    pub fn glob_pattern(&self, glob: &str) -> String {
        let mut pattern = self.head_pattern(glob.len());
        pattern.push_str(glob);
        pattern
    }

    /// The escaped base and the separator, with room for `more` bytes.
    fn head_pattern(&self, more: usize) -> String {
        let mut pattern = String::with_capacity(self.base.len() + 4 + more);
        escape_glob_into(&mut pattern, &self.base);
        pattern.push(SEPARATOR);
        pattern
    }
}

/// The Redis Cluster slot (0 to 16383) of the Redis key `redis_key`: CRC16 (XMODEM) of its
/// hash tag ([`redstream_core::keys::hash_tag`]) modulo 16384, the rule redis-rs routes by
/// (`redis::cluster_routing::Slot::for_key`, which does not expose the number) and the one
/// `CLUSTER KEYSLOT` answers. Errors about keys of different slots name their slots with it.
#[must_use]
pub fn cluster_slot(redis_key: &str) -> u16 {
    let mut crc: u16 = 0;
    for &byte in redstream_core::keys::hash_tag(redis_key.as_bytes()) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc % 16_384
}

#[cfg(test)]
mod tests {
    use redstream_core::keys::same_slot;

    use super::*;

    #[test]
    fn a_command_names_the_key_as_redis_cmd_would() {
        for layout in [KeyLayout::Plain, KeyLayout::Cluster] {
            let keys = Keys::new("myapp", layout);
            for key in ["counter", "", "ünï:x y", "a:b:c"] {
                let expected = redis::cmd("GET").arg(keys.key(key)).get_packed_command();
                let built = keys.command("GET", key, 0, 0);
                assert_eq!(built.get_packed_command(), expected, "{layout:?} {key:?}");

                let mut set = keys.command("SET", key, 3, 5 + 2 + 4);
                set.arg("value").arg("PX").arg(1_000);
                let expected = redis::cmd("SET")
                    .arg(keys.key(key))
                    .arg("value")
                    .arg("PX")
                    .arg(1_000)
                    .get_packed_command();
                assert_eq!(set.get_packed_command(), expected);
            }
        }
    }

    #[test]
    fn cluster_slots_are_redis_rs_s() {
        // The examples of the Redis Cluster specification and of the test kit.
        assert_eq!(cluster_slot("foo"), 12_182);
        assert_eq!(cluster_slot("123456789"), 0x31C3);
        assert_eq!(
            cluster_slot("{user1000}.following"),
            cluster_slot("user1000")
        );
        for key in [
            "",
            "a",
            "myapp:counter",
            "{myapp}:x",
            "foo{}{bar}",
            "ünï",
            "k:1234",
        ] {
            let routed = redis::cluster_routing::Slot::for_key(key.as_bytes());
            assert_eq!(
                format!("{routed:?}"),
                format!("Slot({})", cluster_slot(key)),
                "{key}"
            );
        }
    }

    #[test]
    fn plain_layout_is_the_default_and_the_seed_naming() {
        let keys = Keys::new("myapp", KeyLayout::default());
        assert_eq!(keys.layout(), KeyLayout::Plain);
        assert_eq!(keys.key("counter"), "myapp:counter");
        assert_eq!(keys.checkpoint("orders"), "myapp#checkpoint:orders");
        assert_eq!(keys.scan_pattern(""), "myapp:*");
        assert_eq!(keys.glob_pattern("user:*"), "myapp:user:*");
    }

    #[test]
    fn cluster_layout_tags_the_whole_store() {
        let keys = Keys::new("myapp", KeyLayout::Cluster);
        assert_eq!(keys.key("counter"), "{myapp}:counter");
        assert_eq!(keys.checkpoint("orders"), "{myapp}#checkpoint:orders");
        assert_eq!(keys.scan_pattern(""), "{myapp}:*");
        assert_eq!(keys.scan_pattern("user:"), "{myapp}:user:*");
        for key in ["b", "user:1", "{x}", ""] {
            assert!(same_slot(&keys.key("a"), &keys.key(key)), "{key}");
        }
        assert!(same_slot(&keys.key("a"), &keys.checkpoint("cp")));
    }

    #[test]
    fn user_key_is_the_inverse_of_key() {
        for layout in [KeyLayout::Cluster, KeyLayout::Plain] {
            let keys = Keys::new("app", layout);
            for key in ["a", "a:b", "{x}", "*", ":"] {
                assert_eq!(keys.user_key(&keys.key(key)), Some(key), "{layout} {key}");
            }
            assert_eq!(keys.user_key(&keys.checkpoint("c")), None);
            assert_eq!(keys.user_key("app2:x"), None);
            assert_eq!(keys.user_key("{app2}:x"), None);
        }
        // The two layouts never read each other's keys.
        let plain = Keys::new("app", KeyLayout::Plain);
        let cluster = Keys::new("app", KeyLayout::Cluster);
        assert_eq!(plain.user_key(&cluster.key("x")), None);
        assert_eq!(cluster.user_key(&plain.key("x")), None);
    }

    #[test]
    fn checkpoint_names_are_found_back() {
        for layout in [KeyLayout::Cluster, KeyLayout::Plain] {
            let keys = Keys::new("app", layout);
            for name in ["daily", "a:b", "#checkpoint:x"] {
                let key = keys.checkpoint(name);
                assert_eq!(keys.checkpoint_name(&key), Some(name), "{layout} {name}");
                assert_eq!(keys.user_key(&key), None);
            }
            assert_eq!(keys.checkpoint_name(&keys.key("daily")), None);
            assert_eq!(keys.checkpoint_name("app2#checkpoint:x"), None);
        }
        assert_eq!(
            Keys::new("app", KeyLayout::Plain).checkpoint_scan_pattern(),
            "app#checkpoint:*"
        );
        assert_eq!(
            Keys::new("a*", KeyLayout::Cluster).checkpoint_scan_pattern(),
            "{a\\*}#checkpoint:*"
        );
    }

    #[test]
    fn the_prefix_is_matched_literally() {
        let keys = Keys::new("a*b?[c]\\d", KeyLayout::Cluster);
        assert_eq!(keys.scan_pattern("k*"), "{a\\*b\\?\\[c\\]\\\\d}:k\\**");
        assert_eq!(keys.glob_pattern("k*"), "{a\\*b\\?\\[c\\]\\\\d}:k*");
        let keys = Keys::new("a*", KeyLayout::Plain);
        assert_eq!(keys.glob_pattern("[ab]?"), "a\\*:[ab]?");
    }
}
