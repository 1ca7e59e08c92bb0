//! Redis key names: the one place where every crate and the `redstream` binary name their keys,
//! decide which keys share a Redis Cluster slot, escape `SCAN` patterns and walk `SCAN`.
//!
//! # Stream names
//!
//! [`StreamNames`] turns an event type into the stream that holds it, under a prefix and in a
//! [`KeyLayout`]:
//!
//! | layout | `order.created` under `events` | dead letters | empty prefix |
//! |---|---|---|---|
//! | [`KeyLayout::Plain`] (default) | `events:order.created` | `events:dlq` | `order.created`, `dlq` |
//! | [`KeyLayout::Cluster`] | `events:{order.created}` | `events:{dlq}` | `{order.created}`, `{dlq}` |
//!
//! The plain layout writes the names operators type in `redis-cli` (`XLEN events:order.created`,
//! `--scan --pattern 'events:*'`). The cluster layout gives every stream a hash tag of its own,
//! so the streams of one deployment spread over the slots (and the shards) of a Redis Cluster
//! instead of all landing in one.
//!
//! Streams need not be named by event type at all: every crate also accepts a full stream name
//! (`events.raw`, `orders.events`), used exactly as given.
//!
//! # Companions
//!
//! A key that must change in one transaction with a stream (a sink's progress record, a state
//! checkpoint of that stream) is built with [`companion`], which puts it in the stream's slot
//! whatever the stream is called: `orders.events` gets `{orders.events}:suffix` (Redis Cluster
//! hashes only the tag, which is the whole stream name), and `events:{order.created}` gets
//! `events:{order.created}:suffix`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The reserved name of the dead-letter stream under a prefix.
pub const DLQ_NAME: &str = "dlq";

/// The separator between a prefix and the name under it.
pub const SEPARATOR: char = ':';

/// How a prefix and a name are joined into a key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeyLayout {
    /// `prefix:name`, the names the source documents show operators. Every key hashes on its
    /// whole name, so on Redis Cluster the keys spread, but a key and its companions may sit in
    /// different slots (the crates then use their documented non-atomic protocols).
    #[default]
    Plain,
    /// `prefix:{name}` for streams: one hash tag per stream, so different streams land on
    /// different slots and each stream's companions share its slot. A state store, whose
    /// transactions span any of its keys, tags its prefix instead (`{prefix}:key`, one slot per
    /// store).
    Cluster,
}

impl KeyLayout {
    /// The layout's name in configuration files: `plain` or `cluster`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Cluster => "cluster",
        }
    }
}

impl fmt::Display for KeyLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for KeyLayout {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "plain" => Ok(Self::Plain),
            "cluster" => Ok(Self::Cluster),
            other => Err(Error::invalid_input(
                format!("key layout {other:?}"),
                "expected plain or cluster",
            )),
        }
    }
}

/// Checks a key prefix: at most 200 bytes, no whitespace, control characters, `{` or `}` (the
/// layout decides where hash tags go). It may be empty: names are then used without a prefix.
/// `field` names the setting in the error.
pub fn validate_prefix(field: &str, prefix: &str) -> Result<()> {
    if prefix.len() > 200 {
        return Err(Error::invalid_input(
            format!("config field {field}"),
            format!("is {} bytes; at most 200 are allowed", prefix.len()),
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '{' | '}'))
    {
        return Err(Error::invalid_input(
            format!("config field {field} ({prefix:?})"),
            format!("must not contain {c:?}"),
        ));
    }
    Ok(())
}

/// Checks a full stream name given by a user: not empty, at most 512 bytes, no whitespace or
/// control characters. Any other byte is allowed, hash tags included.
pub fn validate_stream_name(name: &str) -> Result<()> {
    let what = || format!("stream name {name:?}");
    if name.is_empty() {
        return Err(Error::invalid_input("stream name", "must not be empty"));
    }
    if name.len() > 512 {
        return Err(Error::invalid_input(
            what(),
            format!("is {} bytes; at most 512 are allowed", name.len()),
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid_input(
            what(),
            format!("must not contain {c:?}"),
        ));
    }
    Ok(())
}

/// Names the streams of event types under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamNames {
    prefix: String,
    layout: KeyLayout,
    /// `prefix:` (or nothing for an empty prefix), built once.
    head: String,
}

impl StreamNames {
    /// Names under `prefix` (validated with [`validate_prefix`] by the caller's configuration).
    #[must_use]
    pub fn new(prefix: &str, layout: KeyLayout) -> Self {
        let head = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}{SEPARATOR}")
        };
        Self {
            prefix: prefix.to_owned(),
            layout,
            head,
        }
    }

    /// The prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The layout.
    #[must_use]
    pub fn layout(&self) -> KeyLayout {
        self.layout
    }

    /// The stream that holds events of `event_type`.
    #[must_use]
    pub fn stream(&self, event_type: &str) -> String {
        let mut out = String::with_capacity(self.head.len() + event_type.len() + 2);
        out.push_str(&self.head);
        match self.layout {
            KeyLayout::Plain => out.push_str(event_type),
            KeyLayout::Cluster => {
                out.push('{');
                out.push_str(event_type);
                out.push('}');
            }
        }
        out
    }

    /// The dead-letter stream.
    #[must_use]
    pub fn dlq(&self) -> String {
        self.stream(DLQ_NAME)
    }

    /// Whether `key` is this prefix's dead-letter stream.
    #[must_use]
    pub fn is_dlq(&self, key: &str) -> bool {
        self.name_of(key) == Some(DLQ_NAME)
    }

    /// The event type whose stream is `key`, or `None` for the dead-letter stream and for keys
    /// that are not a stream name of this prefix and layout.
    #[must_use]
    pub fn event_type<'a>(&self, key: &'a str) -> Option<&'a str> {
        self.name_of(key).filter(|name| *name != DLQ_NAME)
    }

    fn name_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        let rest = key.strip_prefix(self.head.as_str())?;
        let name = match self.layout {
            KeyLayout::Plain => rest,
            KeyLayout::Cluster => rest.strip_prefix('{')?.strip_suffix('}')?,
        };
        let valid = !name.is_empty() && !name.contains(['{', '}']);
        valid.then_some(name)
    }

    /// A `SCAN ... MATCH` pattern for every key under the prefix (`events:*`, or `*` for an
    /// empty prefix), the prefix matched literally.
    #[must_use]
    pub fn scan_pattern(&self) -> String {
        let mut pattern = escape_glob(&self.head);
        pattern.push('*');
        pattern
    }
}

/// The part of `key` that Redis Cluster hashes: the text between the first `{` and the first `}`
/// after it when that is not empty, otherwise the whole key.
#[must_use]
pub fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    match key[open + 1..].iter().position(|&b| b == b'}') {
        Some(len) if len > 0 => &key[open + 1..open + 1 + len],
        _ => key,
    }
}

/// Whether `key` carries a non-empty hash tag.
#[must_use]
pub fn has_hash_tag(key: &str) -> bool {
    hash_tag(key.as_bytes()).len() != key.len()
}

/// The Redis Cluster slot of `key` (0 to 16383), as redis-rs's cluster client routes it.
#[must_use]
pub fn slot(key: &[u8]) -> redis::cluster_routing::Slot {
    redis::cluster_routing::Slot::for_key(key)
}

/// Whether two keys live in the same Redis Cluster slot, so that one transaction may hold both.
#[must_use]
pub fn same_slot(a: &str, b: &str) -> bool {
    hash_tag(a.as_bytes()) == hash_tag(b.as_bytes())
}

/// A key that lives in the same Redis Cluster slot as `key`: `key:suffix` when `key` carries a
/// hash tag, `{key}:suffix` when it does not (the tag is then the whole of `key`, which hashes
/// like `key` itself). A `key` holding a `}` but no tag cannot be wrapped; it then gets
/// `key:suffix`, which [`same_slot`] reports as another slot.
#[must_use]
pub fn companion(key: &str, suffix: &str) -> String {
    if has_hash_tag(key) || key.contains('}') {
        format!("{key}{SEPARATOR}{suffix}")
    } else {
        format!("{{{key}}}{SEPARATOR}{suffix}")
    }
}

/// `text` with every character that `MATCH` patterns treat specially (`*`, `?`, `[`, `]`, `\`)
/// escaped by a `\`, so the pattern matches exactly `text`.
#[must_use]
pub fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    escape_glob_into(&mut out, text);
    out
}

/// [`escape_glob`], appending to `out`.
pub fn escape_glob_into(out: &mut String, text: &str) {
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Every key matching `pattern` (and of `key_type`, e.g. `"stream"`, when given), walked with
/// `SCAN ... MATCH ... COUNT ... [TYPE ...]` through redis-rs's `scan_options`. Keys that are not
/// UTF-8 are skipped. The result is sorted and has no duplicates (`SCAN` may return a key twice).
///
/// # Errors
///
/// The Redis error of a failed `SCAN` call, classified; `op` and `target` name it.
pub async fn scan<C>(
    conn: &mut C,
    pattern: &str,
    key_type: Option<&str>,
    target: &str,
) -> Result<Vec<String>>
where
    C: redis::aio::ConnectionLike + Send + Sync,
{
    let mut options = redis::ScanOptions::default()
        .with_pattern(pattern)
        .with_count(1000);
    if let Some(key_type) = key_type {
        options = options.with_type(key_type);
    }
    let mut keys = Vec::new();
    {
        let mut iter = redis::AsyncCommands::scan_options::<Vec<u8>>(conn, options)
            .await
            .map_err(|err| Error::from_redis("SCAN", target.to_owned(), err))?;
        while let Some(item) = iter.next_item().await {
            let key = item.map_err(|err| Error::from_redis("SCAN", target.to_owned(), err))?;
            if let Ok(key) = String::from_utf8(key) {
                keys.push(key);
            }
        }
    }
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_layout_is_the_seed_naming() {
        let names = StreamNames::new("events", KeyLayout::Plain);
        assert_eq!(names.stream("order.created"), "events:order.created");
        assert_eq!(names.dlq(), "events:dlq");
        assert_eq!(names.scan_pattern(), "events:*");
        assert_eq!(
            names.event_type("events:order.created"),
            Some("order.created")
        );
        assert_eq!(names.event_type("events:dlq"), None);
        assert!(names.is_dlq("events:dlq"));
        assert_eq!(names.event_type("other:x"), None);
        assert_eq!(names.event_type("events:"), None);
    }

    #[test]
    fn cluster_layout_tags_each_stream() {
        let names = StreamNames::new("events", KeyLayout::Cluster);
        assert_eq!(names.stream("order.created"), "events:{order.created}");
        assert_eq!(names.dlq(), "events:{dlq}");
        assert_eq!(
            names.event_type("events:{order.created}"),
            Some("order.created")
        );
        assert_eq!(names.event_type("events:order.created"), None);
        assert!(names.is_dlq("events:{dlq}"));
    }

    #[test]
    fn an_empty_prefix_uses_names_as_they_are() {
        let names = StreamNames::new("", KeyLayout::Plain);
        assert_eq!(names.stream("events.raw"), "events.raw");
        assert_eq!(names.dlq(), "dlq");
        assert_eq!(names.scan_pattern(), "*");
        assert_eq!(names.event_type("events.raw"), Some("events.raw"));
        let names = StreamNames::new("", KeyLayout::Cluster);
        assert_eq!(names.stream("events.raw"), "{events.raw}");
    }

    #[test]
    fn prefixes_are_matched_literally() {
        let names = StreamNames::new("a*b?[c]\\d", KeyLayout::Plain);
        assert_eq!(names.scan_pattern(), "a\\*b\\?\\[c\\]\\\\d:*");
        assert_eq!(escape_glob("plain:text"), "plain:text");
    }

    #[test]
    fn hash_tags_follow_the_cluster_rule() {
        assert_eq!(hash_tag(b"events:{order.created}"), b"order.created");
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"plain"), b"plain");
        assert!(has_hash_tag("a{b}"));
        assert!(!has_hash_tag("a{}b"));
    }

    #[test]
    fn companions_share_the_slot() {
        for key in [
            "orders.events",
            "events:{order.created}",
            "{orders}.events",
            "a{b",
            "events:order.created",
        ] {
            let companion = companion(key, "redstream-sink:s1");
            assert!(same_slot(key, &companion), "{key} / {companion}");
            assert_eq!(slot(key.as_bytes()), slot(companion.as_bytes()), "{key}");
        }
        assert_eq!(
            companion("orders.events", "p"),
            "{orders.events}:p".to_owned()
        );
        assert_eq!(
            companion("events:{order.created}", "p"),
            "events:{order.created}:p".to_owned()
        );
        // No tag can be made from a name holding a `}`: reported as another slot.
        assert!(!same_slot("a}b", &companion("a}b", "p")));
    }

    #[test]
    fn layouts_parse_and_print() {
        for layout in [KeyLayout::Plain, KeyLayout::Cluster] {
            assert_eq!(layout.as_str().parse::<KeyLayout>().unwrap(), layout);
        }
        assert!("hash".parse::<KeyLayout>().is_err());
        assert_eq!(KeyLayout::default(), KeyLayout::Plain);
    }

    #[test]
    fn names_are_validated() {
        validate_prefix("stream_prefix", "").unwrap();
        validate_prefix("stream_prefix", "events").unwrap();
        validate_prefix("stream_prefix", "a*b").unwrap();
        assert!(validate_prefix("stream_prefix", "{events}").is_err());
        assert!(validate_prefix("stream_prefix", "a b").is_err());
        validate_stream_name("events.raw").unwrap();
        validate_stream_name("{orders}.events").unwrap();
        assert!(validate_stream_name("").is_err());
        assert!(validate_stream_name("a\nb").is_err());
    }
}
