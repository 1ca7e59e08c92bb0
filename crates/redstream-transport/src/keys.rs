//! Stream names: core's [`StreamNames`] and [`KeyLayout`] (re-exported), and the transport's
//! rules on top of them.
//!
//! | key | plain layout (default) | cluster layout |
//! |---|---|---|
//! | the stream of `order.created` under `events` | `events:order.created` | `events:{order.created}` |
//! | the dead-letter stream | `events:dlq` | `events:{dlq}` |
//! | the redrive record (cluster layout only, see `dlq`) | | `events:{dlq}:redriven` |
//!
//! An event type names one stream, whatever the events' priorities: priority is a field of the
//! envelope, not a stream of its own. Any other stream is used by its full name (`events.raw`,
//! `orders.events`): see [`RedisTransport::stream_key_for`](crate::RedisTransport::stream_key_for)
//! for how a name given by a user is resolved.

pub use redstream_core::keys::{KeyLayout, StreamNames};
pub(crate) use redstream_core::keys::{validate_prefix, validate_stream_name};
use redstream_core::{Error, EventLimits, Result};

/// The name of the dead-letter stream under the prefix; reserved as an event type.
pub(crate) const DLQ: &str = redstream_core::keys::DLQ_NAME;

/// Checks that `event_type` is valid for the wire format and can name a stream under a prefix:
/// not the reserved `dlq`, and without `{` or `}` (the cluster layout puts the type in a hash
/// tag).
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput), saying what is wrong.
pub fn validate_event_type(event_type: &str, limits: &EventLimits) -> Result<()> {
    redstream_core::validate_event_type(event_type, limits.max_event_type_len)?;
    if event_type == DLQ {
        return Err(Error::invalid_input(
            "event type \"dlq\"",
            "is reserved for the dead-letter stream",
        ));
    }
    if let Some(c) = event_type
        .bytes()
        .find(|b| matches!(b, b'{' | b'}'))
        .map(char::from)
    {
        return Err(Error::invalid_input(
            format!("event type {event_type:?}"),
            format!("must not contain {c:?} (it marks a hash tag in stream keys)"),
        ));
    }
    Ok(())
}

/// Whether `stream` is a name of the layout before this version, `{<prefix>}:...` (one hash
/// tag for a whole prefix, priority lanes as `#high` suffixes), for `prefix`.
pub(crate) fn is_legacy_name(prefix: &str, stream: &str) -> bool {
    stream
        .strip_prefix('{')
        .and_then(|rest| rest.strip_prefix(prefix))
        .and_then(|rest| rest.strip_prefix("}:"))
        .is_some_and(|rest| !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_key_breaking_types_are_rejected() {
        let limits = EventLimits::default();
        for bad in ["dlq", "a{b", "a}b", "", "a b"] {
            assert!(validate_event_type(bad, &limits).is_err(), "{bad:?}");
        }
        for good in ["order.created", "order:created", "a#b"] {
            validate_event_type(good, &limits).unwrap();
        }
    }

    #[test]
    fn legacy_names_are_recognised() {
        assert!(is_legacy_name("events", "{events}:order.created#high"));
        assert!(is_legacy_name("events", "{events}:order.created"));
        assert!(!is_legacy_name("events", "events:order.created"));
        assert!(!is_legacy_name("events", "events:{order.created}"));
        assert!(!is_legacy_name("events", "{other}:x"));
        assert!(!is_legacy_name("events", "{events}:"));
    }
}
