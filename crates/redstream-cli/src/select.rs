//! Which streams `redstream streams` and the dashboard show: every stream under the prefix
//! (`events:*`), and the streams the user points at with `--streams`.
//!
//! A `--streams` value is a `SCAN ... MATCH` glob (`events.*`, `profiles.*`, `*`) or a stream
//! name as it is (`orders.events`); it may be repeated, and one value may be a comma-separated
//! list (`--streams events.raw,events.normalized`). A value with a glob character (`*`, `?`,
//! `[`) is matched with `SCAN ... TYPE stream`; a plain name is shown when a stream of that
//! name exists. Names that exist but are not streams are left out.

use redstream_core::Result;
use redstream_core::keys::escape_glob;
use redstream_transport::{NodeStats, RedisTransport, StreamSummary};

/// Parses one `--streams` value (one item of a comma list): not empty, no whitespace or control
/// characters, at most 512 bytes.
///
/// # Errors
///
/// A message naming what is wrong, for clap.
pub fn parse_pattern(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("a stream pattern must not be empty (`*` matches every stream)".to_owned());
    }
    if text.len() > 512 {
        return Err(format!(
            "a stream pattern is at most 512 bytes; this one is {}",
            text.len()
        ));
    }
    if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{text:?} contains {c:?}; stream names and patterns have no spaces or control \
             characters"
        ));
    }
    Ok(text.to_owned())
}

/// Whether `pattern` is a glob rather than a name (`SCAN`'s special characters).
fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// The names of the streams to show, sorted and without repeats: those under the prefix, then
/// those `patterns` match (a plain name is included as it is; [`describe`] leaves it out when
/// no such stream exists).
///
/// # Errors
///
/// A Redis error if a `SCAN` fails.
pub async fn names(transport: &RedisTransport, patterns: &[String]) -> Result<Vec<String>> {
    let mut names = transport.list_streams().await?;
    for pattern in patterns {
        if is_glob(pattern) {
            names.extend(transport.list_streams_matching(pattern).await?);
        } else {
            names.push(pattern.clone());
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The summaries of the streams to show (see [`names`]), sorted by name; names that are not
/// streams are left out.
///
/// # Errors
///
/// A Redis error if listing or describing fails.
pub async fn describe(
    transport: &RedisTransport,
    patterns: &[String],
) -> Result<Vec<StreamSummary>> {
    let names = names(transport, patterns).await?;
    transport.streams_info(&names).await
}

/// The `SCAN` globs of [`names`]: the prefix's (`events:*`), each `--streams` glob as it is, and
/// each plain name escaped so that it matches only itself.
#[must_use]
pub fn scan_patterns(transport: &RedisTransport, patterns: &[String]) -> Vec<String> {
    let mut globs = vec![transport.names().scan_pattern()];
    globs.extend(patterns.iter().map(|pattern| {
        if is_glob(pattern) {
            pattern.clone()
        } else {
            escape_glob(pattern)
        }
    }));
    globs.sort();
    globs.dedup();
    globs
}

/// Each node's figures and the streams it holds among those [`names`] would list (the
/// transport's `nodes` over [`scan_patterns`]): one per master of a cluster, one otherwise.
///
/// # Errors
///
/// A Redis error if a node cannot be read.
pub async fn nodes(transport: &RedisTransport, patterns: &[String]) -> Result<Vec<NodeStats>> {
    transport.nodes(&scan_patterns(transport, patterns)).await
}

/// The names of the streams on `nodes`, sorted: what [`names`] lists, less plain names that are
/// not streams.
#[must_use]
pub fn names_on(nodes: &[NodeStats]) -> Vec<String> {
    let mut names: Vec<String> = nodes.iter().flat_map(|n| n.streams.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// The address of the node holding each stream of `nodes`.
#[must_use]
pub fn node_of(nodes: &[NodeStats]) -> std::collections::HashMap<String, String> {
    nodes
        .iter()
        .flat_map(|n| n.streams.iter().map(|s| (s.clone(), n.address.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_checked() {
        assert_eq!(parse_pattern("events.*").unwrap(), "events.*");
        assert_eq!(parse_pattern("orders.events").unwrap(), "orders.events");
        for bad in ["", "a b", "a\tb", "a\u{0}"] {
            assert!(parse_pattern(bad).is_err(), "{bad:?}");
        }
        assert!(parse_pattern(&"a".repeat(513)).is_err());
        assert!(is_glob("events.*"));
        assert!(is_glob("events.r?w"));
        assert!(is_glob("events.[rn]*"));
        assert!(!is_glob("events.raw"));
    }
}
