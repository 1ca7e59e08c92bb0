//! Reading entries: [`StreamEntry`], `read_range`.

use redis::Value;
use redstream_core::{Event, Result, wire};
use serde::Serialize;

use super::checks::{bounded_count, check_id, unexpected};
use crate::reply::{self, RawFields, sequence};
use crate::transport::RedisTransport;

/// Longest field name or value kept in [`StreamEntry::fields`], in bytes.
pub(super) const MAX_FIELD_BYTES: usize = 4096;

/// One stream entry, decoded when possible and shown raw in any case.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct StreamEntry {
    /// The entry's id.
    pub id: String,
    /// The event, when the entry is in the redstream wire format; `None` otherwise.
    pub event: Option<Event>,
    /// The entry's fields as written, in order: bytes that are not UTF-8 are replaced by
    /// `U+FFFD`, and names and values longer than 4 KiB are cut (see `truncated`).
    pub fields: Vec<(String, String)>,
    /// Whether a field name or value was cut in `fields`. (`event` is decoded from the full
    /// value.)
    pub truncated: bool,
    /// Why the entry could not be decoded into an event (another writer's entry, another wire
    /// format version, bad JSON...); `None` when `event` is `Some`.
    pub decode_error: Option<String>,
}

/// One stream entry, `[id, [field, value, ...]]`, with raw bytes. A deleted entry's fields
/// (nil) are no fields.
pub(super) fn raw_entry(item: &Value) -> Option<(String, RawFields)> {
    let entry = reply::entry(item.clone()).ok()?;
    Some((entry.id, entry.fields.unwrap_or_default()))
}

/// A field as shown: lossy UTF-8, cut to [`MAX_FIELD_BYTES`] on a character boundary. The
/// flag says whether it was cut.
pub(super) fn shown(raw: &[u8]) -> (String, bool) {
    let cut = raw.len() > MAX_FIELD_BYTES;
    let mut text = String::from_utf8_lossy(&raw[..raw.len().min(MAX_FIELD_BYTES)]).into_owned();
    if cut {
        // Cutting the bytes may split a character (now U+FFFD); cutting the text again keeps
        // the result within the limit.
        let mut end = text.len().min(MAX_FIELD_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    (text, cut)
}

impl RedisTransport {
    /// Entries of a stream between two ids, decoded into events where possible.
    ///
    /// `start` and `end` are the low and high bounds whatever the direction: `-` and `+` for
    /// the ends of the stream, an id (`1700000000000-0` or `1700000000000`), or `(id` to leave
    /// that id out. `reverse` returns the newest entries first (`XREVRANGE`): `read_range(s,
    /// "-", "+", 10, true)` is the last ten entries. `count` is capped at
    /// [`MAX_INSPECT_COUNT`](Self::MAX_INSPECT_COUNT); 0 is refused.
    pub async fn read_range(
        &self,
        stream: &str,
        start: &str,
        end: &str,
        count: usize,
        reverse: bool,
    ) -> Result<Vec<StreamEntry>> {
        self.check_stream_name(stream)?;
        check_id("start id", start)?;
        check_id("end id", end)?;
        let count = bounded_count(count)?;
        // XREVRANGE takes the high bound first.
        let (op, first, second) = if reverse {
            ("XREVRANGE", end, start)
        } else {
            ("XRANGE", start, end)
        };
        let mut cmd = redis::cmd(op);
        cmd.arg(stream)
            .arg(first)
            .arg(second)
            .arg("COUNT")
            .arg(count);
        let reply = self.query_stream(op, stream, None, cmd).await?;
        sequence(&reply)
            .ok_or_else(|| unexpected(op, stream, "a reply that is not a list"))?
            .iter()
            .map(|item| {
                let (id, fields) =
                    raw_entry(item).ok_or_else(|| unexpected(op, stream, "a malformed entry"))?;
                Ok(self.stream_entry(id, fields))
            })
            .collect()
    }

    /// Builds the [`StreamEntry`] of one raw entry; never fails, whatever the entry holds.
    pub(super) fn stream_entry(&self, id: String, raw: RawFields) -> StreamEntry {
        let limits = &self.inner.options.limits;
        let (event, decode_error) =
            match wire::decode_stream_entry(&id, raw.iter().map(|(k, v)| (k, v)), limits) {
                Ok(event) => (Some(event), None),
                Err(err) => (None, Some(err.to_string())),
            };
        let mut truncated = false;
        let fields = raw
            .iter()
            .map(|(name, value)| {
                let (name, cut_name) = shown(name);
                let (value, cut_value) = shown(value);
                truncated |= cut_name || cut_value;
                (name, value)
            })
            .collect();
        StreamEntry {
            id,
            event,
            fields,
            truncated,
            decode_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_fields_are_cut_on_a_character_boundary() {
        let (short, cut) = shown(b"abc\xff");
        assert_eq!((short.as_str(), cut), ("abc\u{fffd}", false));
        let long = "é".repeat(MAX_FIELD_BYTES); // two bytes each
        let (text, cut) = shown(long.as_bytes());
        assert!(cut);
        assert!(text.len() <= MAX_FIELD_BYTES);
        assert!(text.chars().all(|c| c == 'é'));
        // A cut in the middle of a character becomes U+FFFD and stays within the limit.
        let odd = format!("a{long}");
        let (text, cut) = shown(odd.as_bytes());
        assert!(cut && text.len() <= MAX_FIELD_BYTES, "{}", text.len());
    }
}
