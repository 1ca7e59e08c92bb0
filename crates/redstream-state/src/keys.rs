//! Every Redis key the state store uses, built in one place from the configured prefix.
//!
//! | key | what |
//! |---|---|
//! | `{prefix}:{key}` | the value (a string) or hash stored under `key` |
//! | `{prefix}#checkpoint:{name}` | the checkpoint `name` (a hash) |
//!
//! With the default [`KeyLayout::HashTag`], the prefix is wrapped in braces, a cluster hash
//! tag: every key of one store lives in one slot, so transactions, batches and checkpoints,
//! which touch several keys at once, work on Redis Cluster. [`KeyLayout::Plain`] writes
//! `prefix:key` without braces, the layout of data written by earlier versions of seed 001's
//! store; multi-key operations then need a single Redis node.
//!
//! Checkpoints live beside the user's keys, not among them: `#` follows the prefix where user
//! keys have `:`, and prefixes may not contain `#`, so no user key of any store can be a
//! checkpoint key, and listing a store's keys never returns a checkpoint.

use serde::{Deserialize, Serialize};

/// How a store's prefix and a key are joined into a Redis key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyLayout {
    /// `{prefix}:key`: the prefix is a cluster hash tag, so all keys of a store share a slot
    /// and multi-key operations (transactions, `get_many`, `put_many`, checkpoints) work on
    /// Redis Cluster. Prefixes can never overlap: `{app}:*` does not match `{app:v2}:x`.
    #[default]
    HashTag,
    /// `prefix:key`, exactly as seed 001 describes ("key `counter` under prefix `myapp` is
    /// `myapp:counter`"), for reading data written in that layout. Multi-key operations then
    /// need a single Redis node (or keys that happen to share a slot). Prefixes may overlap:
    /// key `v2:x` under prefix `app` is the same Redis key as `x` under `app:v2`, so do not give
    /// one store a prefix that starts with another store's prefix followed by `:`.
    Plain,
}

/// Builds the Redis keys of one store, and the `SCAN` patterns that find them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `{prefix}` or `prefix`, depending on the layout.
    base: String,
}

impl Keys {
    /// Keys under `prefix` in `layout`. The prefix must already be validated (see
    /// [`StateConfig::validate`](crate::StateConfig::validate)): non-empty, without `{`, `}`
    /// or `#`.
    #[must_use]
    pub fn new(prefix: &str, layout: KeyLayout) -> Self {
        let base = match layout {
            KeyLayout::HashTag => format!("{{{prefix}}}"),
            KeyLayout::Plain => prefix.to_owned(),
        };
        Self { base }
    }

    /// The part every key of this store starts with: `{prefix}` or `prefix`.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The Redis key holding the user's `key`.
    #[must_use]
    pub fn key(&self, key: &str) -> String {
        let mut out = String::with_capacity(self.base.len() + 1 + key.len());
        out.push_str(&self.base);
        out.push(':');
        out.push_str(key);
        out
    }

    /// The user's key inside a Redis key of this store, or `None` for any other key.
    #[must_use]
    pub fn user_key<'a>(&self, redis_key: &'a str) -> Option<&'a str> {
        redis_key.strip_prefix(&self.base)?.strip_prefix(':')
    }

    /// The Redis key holding the checkpoint `name`.
    #[must_use]
    pub fn checkpoint(&self, name: &str) -> String {
        format!("{}#checkpoint:{name}", self.base)
    }

    /// A `SCAN ... MATCH` pattern for the keys of this store that start with `key_prefix`
    /// (every key when it is empty). The store's prefix and `key_prefix` are matched
    /// literally: their glob characters (`*`, `?`, `[`, `]`, `\`) are escaped.
    #[must_use]
    pub fn scan_pattern(&self, key_prefix: &str) -> String {
        let mut pattern = String::with_capacity(self.base.len() + key_prefix.len() + 8);
        escape_glob_into(&mut pattern, &self.base);
        pattern.push(':');
        escape_glob_into(&mut pattern, key_prefix);
        pattern.push('*');
        pattern
    }
}

/// `text` with every character that `MATCH` patterns treat specially escaped by a `\`, so the
/// pattern matches exactly `text`.
#[must_use]
pub fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    escape_glob_into(&mut out, text);
    out
}

fn escape_glob_into(out: &mut String, text: &str) {
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tag_layout_wraps_the_prefix_in_braces() {
        let keys = Keys::new("myapp", KeyLayout::HashTag);
        assert_eq!(keys.key("counter"), "{myapp}:counter");
        assert_eq!(keys.checkpoint("orders"), "{myapp}#checkpoint:orders");
        assert_eq!(keys.scan_pattern(""), "{myapp}:*");
        assert_eq!(keys.scan_pattern("user:"), "{myapp}:user:*");
    }

    #[test]
    fn plain_layout_is_the_seed_layout() {
        let keys = Keys::new("myapp", KeyLayout::Plain);
        assert_eq!(keys.key("counter"), "myapp:counter");
        assert_eq!(keys.checkpoint("orders"), "myapp#checkpoint:orders");
        assert_eq!(keys.scan_pattern(""), "myapp:*");
    }

    #[test]
    fn user_key_is_the_inverse_of_key() {
        for layout in [KeyLayout::HashTag, KeyLayout::Plain] {
            let keys = Keys::new("app", layout);
            for key in ["a", "a:b", "{x}", "*", ":"] {
                assert_eq!(keys.user_key(&keys.key(key)), Some(key), "{layout:?} {key}");
            }
            assert_eq!(keys.user_key(&keys.checkpoint("c")), None);
            assert_eq!(keys.user_key("app2:x"), None);
            assert_eq!(keys.user_key("{app2}:x"), None);
        }
    }

    #[test]
    fn glob_characters_are_escaped() {
        let keys = Keys::new("a*b?[c]\\d", KeyLayout::HashTag);
        assert_eq!(keys.scan_pattern("k*"), "{a\\*b\\?\\[c\\]\\\\d}:k\\**");
        assert_eq!(escape_glob("plain:text"), "plain:text");
    }
}
