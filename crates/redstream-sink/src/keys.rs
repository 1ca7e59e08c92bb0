//! The one place where the sink builds Redis keys.

/// The progress key of sink `id` writing to `stream`: `<stream>:redstream-sink:<id>`.
///
/// Redis Cluster hashes only the first `{...}` of a key, so when `stream` carries a hash tag
/// (`{orders}.events`) the progress key carries the same one and lives in the same slot: the
/// layout is cluster-ready, the `MULTI` that writes both would be valid on a cluster. The sink
/// itself connects to one node and does not support Redis Cluster yet (no cluster client, no
/// `MOVED` handling). An untagged stream's two keys could land on different slots.
/// [`SinkConfig::validate`](crate::SinkConfig::validate) keeps `{` and `}` out of `id`, so the
/// suffix can never introduce a tag of its own.
pub(crate) fn progress_key(stream: &str, id: &str) -> String {
    format!("{stream}:redstream-sink:{id}")
}

/// Whether `key` holds a non-empty `{hash tag}`.
pub(crate) fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_key_shares_the_stream_tag() {
        assert_eq!(
            progress_key("{orders}.events", "s1"),
            "{orders}.events:redstream-sink:s1"
        );
        assert!(has_hash_tag("{orders}.events"));
        assert!(!has_hash_tag("orders.events"));
        assert!(!has_hash_tag("{}orders"));
    }
}
