//! [`EntryView`]: a stream entry as the REST endpoints show it, from a bounded read.

use redstream_core::{DecodeError, Event, EventLimits, wire};
use serde::Serialize;

use super::config::PREVIEW_BYTES;
use super::preview::PreviewEntry;

/// One stream entry: decoded when it is in the redstream wire format, shown raw in any case.
/// The shape of the transport's `StreamEntry`, read within a budget.
#[derive(Debug, Serialize)]
pub(crate) struct EntryView {
    pub(crate) id: String,
    /// The event, when the entry is in the wire format and its `event` field was read whole.
    pub(crate) event: Option<Event>,
    /// The fields as written, in order: lossy UTF-8, names and values cut at 4 KiB.
    pub(crate) fields: Vec<(String, String)>,
    /// Whether a name or value was cut, or fields were left out.
    pub(crate) truncated: bool,
    /// Why `event` is `null`.
    pub(crate) decode_error: Option<String>,
}

impl EntryView {
    /// The view of an entry read by `AppState::read_previews`; `event_cap` is the largest
    /// `event` field the read took whole.
    pub(crate) fn new(entry: &PreviewEntry, limits: &EventLimits, event_cap: usize) -> Self {
        let (fields, truncated) = shown_fields(entry);
        let unread = entry
            .fields
            .iter()
            .find(|f| f.name == b"event" && f.value.len() < f.value_len);
        let (event, decode_error) = match unread {
            Some(field) if field.value_len > limits.max_encoded_bytes => (
                None,
                Some(
                    DecodeError::TooLarge {
                        field: "event",
                        len: field.value_len,
                        limit: limits.max_encoded_bytes,
                    }
                    .to_string(),
                ),
            ),
            Some(field) => (
                None,
                Some(format!(
                    "the `event` field is {} bytes; this view decodes events of at most {event_cap} \
                     bytes: read the entry with /api/streams/{{name}}?startId={}&count=1",
                    field.value_len, entry.id
                )),
            ),
            None => {
                let raw = entry
                    .fields
                    .iter()
                    .map(|f| (f.name.as_slice(), f.value.as_slice()));
                match wire::decode_stream_entry(&entry.id, raw, limits) {
                    Ok(event) => (Some(event), None),
                    Err(err) => (None, Some(err.to_string())),
                }
            }
        };
        Self {
            id: entry.id.clone(),
            event,
            fields,
            truncated,
            decode_error,
        }
    }
}

/// The fields of `entry` as written, in order, as people read them: lossy UTF-8, names and
/// values cut at 4 KiB; and whether anything was cut or left out (here or by the read).
pub(crate) fn shown_fields(entry: &PreviewEntry) -> (Vec<(String, String)>, bool) {
    let mut truncated = !entry.is_whole();
    let fields = entry
        .fields
        .iter()
        .map(|field| {
            let (name, cut_name) = shown(&field.name);
            let (value, cut_value) = shown(&field.value);
            truncated |= cut_name || cut_value;
            (name, value)
        })
        .collect();
    (fields, truncated)
}

/// Bytes as shown: lossy UTF-8, cut to [`PREVIEW_BYTES`] on a character boundary; the flag
/// says whether this cut anything.
fn shown(raw: &[u8]) -> (String, bool) {
    let cut = raw.len() > PREVIEW_BYTES;
    let mut text = String::from_utf8_lossy(&raw[..raw.len().min(PREVIEW_BYTES)]).into_owned();
    // A cut may split a character (now U+FFFD, which may be longer than what it replaced):
    // cutting the text again keeps the result within the limit.
    let mut end = text.len().min(PREVIEW_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_fields_are_cut_on_a_character_boundary() {
        let (short, cut) = shown(b"abc\xff");
        assert_eq!((short.as_str(), cut), ("abc\u{fffd}", false));
        let long = "é".repeat(PREVIEW_BYTES); // two bytes each
        let (text, cut) = shown(long.as_bytes());
        assert!(cut);
        assert!(text.len() <= PREVIEW_BYTES);
        assert!(text.chars().all(|c| c == 'é'));
        let odd = format!("a{long}");
        let (text, cut) = shown(odd.as_bytes());
        assert!(cut && text.len() <= PREVIEW_BYTES, "{}", text.len());
    }
}
