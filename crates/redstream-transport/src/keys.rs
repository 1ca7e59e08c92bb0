//! Every Redis key the transport uses, built in one place from the configured prefix.
//!
//! | key | what |
//! |---|---|
//! | `{prefix}:{event_type}` | the stream of `Normal` events of one type |
//! | `{prefix}:{event_type}#critical`, `#high`, `#low` | the priority lanes of that type |
//! | `{prefix}:dlq` | the dead-letter stream |
//!
//! The prefix is wrapped in braces, a cluster hash tag: all keys of one prefix live in one
//! slot, so a dead-letter move (XADD to the DLQ + XACK of the original) is one transaction even
//! on Redis Cluster.

use redstream_core::{Error, EventLimits, Priority, Result, validate_event_type};

/// The suffix separating an event type from its priority lane.
const LANE_SEPARATOR: char = '#';

/// The name of the dead-letter stream under the prefix; reserved as an event type.
const DLQ: &str = "dlq";

/// Builds and parses the transport's keys for one stream prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `{prefix}`, the hash-tagged prefix.
    tag: String,
}

impl Keys {
    /// Keys under `prefix`, which must already be validated (see `RedisConfig::validate`).
    pub fn new(prefix: &str) -> Self {
        Self {
            tag: format!("{{{prefix}}}"),
        }
    }

    /// The hash-tagged prefix, `{prefix}`.
    #[must_use]
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Checks that `event_type` is valid for the wire format and can name a stream: not the
    /// reserved `dlq`, and without `#`, `{` or `}`.
    pub fn validate_event_type(event_type: &str, limits: &EventLimits) -> Result<()> {
        validate_event_type(event_type, limits.max_event_type_len)?;
        if event_type == DLQ {
            return Err(Error::invalid_input(
                "event type \"dlq\"",
                "is reserved for the dead-letter stream",
            ));
        }
        if let Some(c) = event_type.chars().find(|c| matches!(c, '#' | '{' | '}')) {
            return Err(Error::invalid_input(
                format!("event type {event_type:?}"),
                format!("must not contain {c:?} (it has a meaning in stream keys)"),
            ));
        }
        Ok(())
    }

    /// The stream an event of this type and priority is written to.
    #[must_use]
    pub fn stream(&self, event_type: &str, priority: Priority) -> String {
        match priority {
            Priority::Normal => format!("{}:{event_type}", self.tag),
            other => format!(
                "{}:{event_type}{LANE_SEPARATOR}{}",
                self.tag,
                other.as_str()
            ),
        }
    }

    /// Every stream of one event type, most urgent first: the order consumers read them in.
    #[must_use]
    pub fn lanes(&self, event_type: &str) -> [(Priority, String); 4] {
        [
            Priority::Critical,
            Priority::High,
            Priority::Normal,
            Priority::Low,
        ]
        .map(|p| (p, self.stream(event_type, p)))
    }

    /// The dead-letter stream.
    #[must_use]
    pub fn dlq(&self) -> String {
        format!("{}:{DLQ}", self.tag)
    }

    /// Splits a stream key of this prefix into its event type and lane, or `None` for keys
    /// of another prefix and for the dead-letter stream.
    #[must_use]
    pub fn parse_stream(&self, key: &str) -> Option<(String, Priority)> {
        let rest = key.strip_prefix(&self.tag)?.strip_prefix(':')?;
        if rest == DLQ || rest.is_empty() {
            return None;
        }
        match rest.rsplit_once(LANE_SEPARATOR) {
            Some((event_type, lane)) => {
                let priority = lane.parse::<Priority>().ok()?;
                (priority != Priority::Normal && !event_type.is_empty())
                    .then(|| (event_type.to_owned(), priority))
            }
            None => Some((rest.to_owned(), Priority::Normal)),
        }
    }

    /// A `SCAN ... MATCH` pattern for every key of this prefix, with the prefix's glob
    /// characters escaped.
    #[must_use]
    pub fn scan_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.tag.len() + 4);
        for c in self.tag.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(":*");
        pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_seed_naming_with_a_hash_tag() {
        let keys = Keys::new("events");
        assert_eq!(
            keys.stream("order.created", Priority::Normal),
            "{events}:order.created"
        );
        assert_eq!(
            keys.stream("order.created", Priority::High),
            "{events}:order.created#high"
        );
        assert_eq!(keys.dlq(), "{events}:dlq");
        let lanes = keys.lanes("a");
        assert_eq!(
            lanes[0],
            (Priority::Critical, "{events}:a#critical".to_owned())
        );
        assert_eq!(lanes[2], (Priority::Normal, "{events}:a".to_owned()));
        assert_eq!(keys.scan_pattern(), "{events}:*");
    }

    #[test]
    fn parse_is_the_inverse_of_stream() {
        let keys = Keys::new("app");
        for p in Priority::ALL {
            let key = keys.stream("user.created", p);
            assert_eq!(
                keys.parse_stream(&key),
                Some(("user.created".to_owned(), p))
            );
        }
        assert_eq!(keys.parse_stream("{app}:dlq"), None);
        assert_eq!(keys.parse_stream("{other}:x"), None);
        assert_eq!(keys.parse_stream("{app}:x#normal"), None);
        assert_eq!(keys.parse_stream("{app}:x#weird"), None);
    }

    #[test]
    fn reserved_and_key_breaking_types_are_rejected() {
        let limits = EventLimits::default();
        for bad in ["dlq", "a#b", "a{b", "a}b", "", "a b"] {
            assert!(Keys::validate_event_type(bad, &limits).is_err(), "{bad:?}");
        }
        Keys::validate_event_type("order.created", &limits).unwrap();
        Keys::validate_event_type("order:created", &limits).unwrap();
    }
}
