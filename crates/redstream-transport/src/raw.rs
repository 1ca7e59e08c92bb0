//! [`RawEntry`]: a stream entry as written, for subscriptions to streams in another writer's
//! format (seed 004's flat `event_id`, `brand_id`, `event_type`, `payload`, `timestamp`).

/// One stream entry as Redis holds it, handed to a
/// [`handle_raw`](crate::SubscriptionBuilder::handle_raw) handler or a
/// [`decode_with`](crate::SubscriptionBuilder::decode_with) decoder.
///
/// The entry goes through the same machinery as an event: the handler's `Ok` acknowledges it,
/// an `Err` or a panic leaves it for redelivery, and after `max_deliveries` it is moved to the
/// dead-letter stream with its fields, from where a redrive writes the same fields back to
/// [`stream`](Self::stream).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RawEntry {
    /// The stream it was read from.
    pub stream: String,
    /// Its entry id in that stream.
    pub id: String,
    /// How many times it was delivered, this time included.
    pub deliveries: u32,
    /// Its fields in the order they were written: names and values as bytes. A name may occur
    /// more than once.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl RawEntry {
    /// The value of the first field called `name`.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k.as_slice() == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The value of the first field called `name` as text; `None` when there is no such field
    /// or its value is not UTF-8.
    #[must_use]
    pub fn text(&self, name: &str) -> Option<&str> {
        self.field(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_by_name() {
        let entry = RawEntry {
            stream: "events.raw".to_owned(),
            id: "1-0".to_owned(),
            deliveries: 1,
            fields: vec![
                (b"event_id".to_vec(), b"e1".to_vec()),
                (b"bin".to_vec(), vec![0xff]),
                (b"event_id".to_vec(), b"e2".to_vec()),
            ],
        };
        assert_eq!(entry.text("event_id"), Some("e1"));
        assert_eq!(entry.field("bin"), Some(&[0xff][..]));
        assert_eq!(entry.text("bin"), None);
        assert_eq!(entry.field("missing"), None);
    }
}
