//! The sink's progress key, named through `redstream_core::keys`, the one module that names
//! redstream's keys and decides which of them share a Redis Cluster slot.

use redstream_core::keys;

/// The part of a progress key between the stream and the sink's id.
pub const PROGRESS_KEY_PART: &str = "redstream-sink";

/// The progress key of sink `id` writing to `stream`: a companion of the stream
/// ([`redstream_core::keys::companion`]), so it always lives in the stream's Redis Cluster slot
/// and the script that writes a batch and its progress is valid on a cluster whatever the
/// stream is called.
///
/// | stream | progress key of sink `s1` |
/// |---|---|
/// | `orders.events` | `{orders.events}:redstream-sink:s1` |
/// | `{orders}.events` | `{orders}.events:redstream-sink:s1` |
/// | `events:{order.created}` | `events:{order.created}:redstream-sink:s1` |
///
/// [`SinkConfig::validate`](crate::SinkConfig::validate) keeps `{`, `}` and `:` out of `id`,
/// so the suffix can never introduce a tag of its own.
#[must_use]
pub fn progress_key(stream: &str, id: &str) -> String {
    keys::companion(stream, &format!("{PROGRESS_KEY_PART}:{id}"))
}

/// The name that redstream versions before the per-stream cluster layout gave the progress
/// key, `<stream>:redstream-sink:<id>`, when it differs from [`progress_key`]'s (that is, for a
/// stream without a hash tag); `None` when the two names are the same.
///
/// The sink refuses to start over when it finds its progress under this name only (see
/// `docs/sink.md`); `redstream migrate` renames it to [`progress_key`]'s.
#[must_use]
pub fn previous_progress_key(stream: &str, id: &str) -> Option<String> {
    let previous = format!("{stream}:{PROGRESS_KEY_PART}:{id}");
    (previous != progress_key(stream, id)).then_some(previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_key_is_in_the_stream_slot() {
        assert_eq!(
            progress_key("orders.events", "s1"),
            "{orders.events}:redstream-sink:s1"
        );
        assert_eq!(
            progress_key("{orders}.events", "s1"),
            "{orders}.events:redstream-sink:s1"
        );
        assert_eq!(
            progress_key("events:{order.created}", "s1"),
            "events:{order.created}:redstream-sink:s1"
        );
        for stream in ["orders.events", "{orders}.events", "events:{order.created}"] {
            assert!(keys::same_slot(stream, &progress_key(stream, "s1")));
        }
    }

    #[test]
    fn only_untagged_streams_had_another_name() {
        assert_eq!(
            previous_progress_key("orders.events", "s1").as_deref(),
            Some("orders.events:redstream-sink:s1")
        );
        assert_eq!(previous_progress_key("{orders}.events", "s1"), None);
        assert_eq!(previous_progress_key("events:{order.created}", "s1"), None);
    }
}
