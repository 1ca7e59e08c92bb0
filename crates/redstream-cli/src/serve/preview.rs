//! Bounded reads of entries: what the dashboard shows of stream entries and dead letters is
//! read through a script (`scripts/previews.lua`) that cuts every field to a preview on the
//! server, so a value of 40 MiB costs the network its first kilobytes, not 40 MiB.
//!
//! The transport's `read_range`, `dlq_entries` and `dlq_entry` return whole entries, and the
//! dashboard used to read through them: eleven dead letters of 40 MiB made one snapshot pull
//! 560 MiB from Redis to show a few kilobytes. A [`ReadLimits`] says, per field name, up to
//! how many bytes a value is returned whole (its cap) and how much of a longer one is returned
//! (its preview), and how many bytes one read may carry in all (its budget). Every value comes
//! back with its full length, so a view can say what it did not read.
//!
//! Redis still reads each entry into the script's memory (one at a time), which costs the
//! server time in proportion to the entries' sizes; only the network, and the dashboard's
//! memory, are spared.

use std::sync::LazyLock;

use redis::{Script, Value};
use redstream_core::{Error, ErrorKind, Result};

use super::config::{
    MAX_FIELDS, PREVIEW_BYTES, REST_ERROR_BYTES, REST_READ_BUDGET, SERVER_READ_LIMIT,
    SNAPSHOT_ERROR_BYTES, SNAPSHOT_EVENT_PREVIEW, SNAPSHOT_READ_BUDGET,
};
use super::snapshot::DEAD_LETTER_FIELDS;
use super::state::AppState;

/// The script; loaded once per server (`EVALSHA`, and `SCRIPT LOAD` when the server does not
/// know it yet).
static PREVIEWS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/previews.lua")));

/// How much of a value is read: whole up to `whole` bytes, otherwise its first `preview`
/// bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cap {
    pub(crate) whole: usize,
    pub(crate) preview: usize,
}

impl Cap {
    pub(crate) const fn new(whole: usize, preview: usize) -> Self {
        Self { whole, preview }
    }
}

/// What one bounded read may carry.
#[derive(Debug, Clone)]
pub(crate) struct ReadLimits {
    /// Bytes of names and values the read may carry whole, over all its entries.
    pub(crate) budget: usize,
    /// End the read before an entry that does not fit in what is left of the budget (pages that
    /// can be continued); otherwise read every entry asked for, with previews only once the
    /// budget is spent (the snapshot's dead letters).
    pub(crate) stop_when_spent: bool,
    /// Bytes of entries the server may read for this read: it stops after the entry that
    /// reaches it. Redis copies each entry it reads into the script's memory, which takes time
    /// in proportion to the entry's size.
    pub(crate) read_limit: usize,
    /// Fields returned per entry at most.
    pub(crate) max_fields: usize,
    /// Return only the fields of `named` (dead letters); otherwise every field (stream entries).
    pub(crate) named_only: bool,
    /// Names and the values of fields not in `named`.
    pub(crate) other: Cap,
    /// Fields with their own cap.
    pub(crate) named: Vec<(&'static str, Cap)>,
}

impl ReadLimits {
    /// A snapshot's dead letters: every one asked for, with their events whole (so that they
    /// decode) when they are within the wire format's limit `max_event` and the budget lasts,
    /// otherwise their first KiB; the first KiB of their error.
    pub(crate) fn snapshot_dead_letters(max_event: usize) -> Self {
        Self {
            budget: SNAPSHOT_READ_BUDGET,
            stop_when_spent: false,
            read_limit: SERVER_READ_LIMIT,
            max_fields: DEAD_LETTER_FIELDS.len() + 4,
            named_only: true,
            other: Cap::new(PREVIEW_BYTES, SNAPSHOT_ERROR_BYTES),
            named: DEAD_LETTER_FIELDS
                .iter()
                .map(|&name| match name {
                    "event" => (name, Cap::new(max_event, SNAPSHOT_EVENT_PREVIEW)),
                    // The error, and the short fields (names, ids, numbers).
                    _ => (name, Cap::new(SNAPSHOT_ERROR_BYTES, SNAPSHOT_ERROR_BYTES)),
                })
                .collect(),
        }
    }

    /// Dead letters for the REST endpoints: events whole up to the wire format's limit
    /// `max_event`, errors up to 64 KiB, in pages of at most [`REST_READ_BUDGET`].
    pub(crate) fn dead_letters(max_event: usize) -> Self {
        Self {
            budget: REST_READ_BUDGET,
            stop_when_spent: true,
            read_limit: SERVER_READ_LIMIT,
            max_fields: DEAD_LETTER_FIELDS.len() + 4,
            named_only: true,
            other: Cap::new(PREVIEW_BYTES, PREVIEW_BYTES),
            named: DEAD_LETTER_FIELDS
                .iter()
                .map(|&name| match name {
                    "event" => (name, Cap::new(max_event, PREVIEW_BYTES)),
                    "error" => (name, Cap::new(REST_ERROR_BYTES, PREVIEW_BYTES)),
                    _ => (name, Cap::new(PREVIEW_BYTES, PREVIEW_BYTES)),
                })
                .collect(),
        }
    }

    /// One dead letter opened whole (`GET /api/dlq/{id}`): its fields as
    /// [`dead_letters`](Self::dead_letters) reads them, and every other field too (at most
    /// [`MAX_FIELDS`], each cut to 4 KiB). The one entry is always read: past the budget its
    /// values come as previews.
    pub(crate) fn dead_letter(max_event: usize) -> Self {
        Self {
            stop_when_spent: false,
            max_fields: MAX_FIELDS,
            named_only: false,
            ..Self::dead_letters(max_event)
        }
    }

    /// Stream entries for the REST endpoints: the `event` field whole up to `max_event` (so
    /// that it decodes), every other field and name as its first 4 KiB, in pages of at most
    /// [`REST_READ_BUDGET`].
    pub(crate) fn entries(max_event: usize) -> Self {
        Self {
            budget: REST_READ_BUDGET,
            stop_when_spent: true,
            read_limit: SERVER_READ_LIMIT,
            max_fields: MAX_FIELDS,
            named_only: false,
            other: Cap::new(PREVIEW_BYTES, PREVIEW_BYTES),
            named: vec![("event", Cap::new(max_event, PREVIEW_BYTES))],
        }
    }
}

/// Which end of the stream a read starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Oldest first (`XRANGE`).
    Forward,
    /// Newest first (`XREVRANGE`).
    Backward,
}

/// One field as read: its name and value, whole or cut, and their full lengths.
#[derive(Debug, Clone)]
pub(crate) struct PreviewField {
    pub(crate) name: Vec<u8>,
    pub(crate) name_len: usize,
    pub(crate) value: Vec<u8>,
    pub(crate) value_len: usize,
}

impl PreviewField {
    /// Whether name and value were read whole.
    pub(crate) fn is_whole(&self) -> bool {
        self.name.len() == self.name_len && self.value.len() == self.value_len
    }
}

/// One entry as read.
#[derive(Debug, Clone)]
pub(crate) struct PreviewEntry {
    pub(crate) id: String,
    /// How many fields the entry has; more than `fields.len()` when some were left out.
    pub(crate) field_count: usize,
    pub(crate) fields: Vec<PreviewField>,
}

impl PreviewEntry {
    /// The first field called `name`.
    pub(crate) fn field(&self, name: &str) -> Option<&PreviewField> {
        self.fields.iter().find(|f| f.name == name.as_bytes())
    }

    /// Whether every field was read, and read whole.
    pub(crate) fn is_whole(&self) -> bool {
        self.field_count == self.fields.len() && self.fields.iter().all(PreviewField::is_whole)
    }
}

/// The entries of one read.
#[derive(Debug, Default)]
pub(crate) struct Previews {
    pub(crate) entries: Vec<PreviewEntry>,
    /// Whether the budget ended the read before it had all the entries asked for.
    pub(crate) stopped: bool,
}

impl AppState {
    /// At most `count` entries of `stream` between `low` and `high` (`-`, `+`, an id or `(id`),
    /// read within `limits`.
    ///
    /// # Errors
    ///
    /// `NotFound` when the stream does not exist, `WrongType` when the key is not a stream; any
    /// Redis failure (a bound Redis refuses as an id is answered 400, see `ApiError`).
    pub(crate) async fn read_previews(
        &self,
        stream: &str,
        (low, high): (&str, &str),
        count: usize,
        direction: Direction,
        limits: &ReadLimits,
    ) -> Result<Previews> {
        let op = match direction {
            Direction::Forward => "XRANGE",
            Direction::Backward => "XREVRANGE",
        };
        let mut invocation = PREVIEWS.key(stream);
        invocation
            .arg(op)
            .arg(low)
            .arg(high)
            .arg(count)
            .arg(limits.budget)
            .arg(u8::from(limits.stop_when_spent))
            .arg(limits.max_fields)
            .arg(u8::from(limits.named_only))
            .arg(limits.other.whole)
            .arg(limits.other.preview.min(limits.other.whole))
            .arg(limits.read_limit);
        for (name, cap) in &limits.named {
            invocation
                .arg(*name)
                .arg(cap.whole)
                .arg(cap.preview.min(cap.whole));
        }
        let mut conn = self.transport().connection();
        let reply: Value = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|err| Error::from_redis(op, stream, err))?;
        let unexpected = |what: &str| {
            Error::backend(
                ErrorKind::Unexpected,
                op,
                stream,
                format!("unexpected reply from the dashboard's read script: {what}"),
            )
        };
        let Value::Array(parts) = reply else {
            return Err(unexpected("not a list"));
        };
        let [kind, entries, stopped]: [Value; 3] = parts
            .try_into()
            .map_err(|_| unexpected("not three parts"))?;
        match text(&kind).as_deref() {
            Some("stream") => {}
            Some("none") => {
                return Err(Error::not_found(
                    format!("stream {stream:?}"),
                    "the key does not exist",
                ));
            }
            Some(other) => {
                return Err(Error::backend(
                    ErrorKind::WrongType,
                    op,
                    stream,
                    format!("the key holds a {other}, not a stream"),
                ));
            }
            None => return Err(unexpected("no key type")),
        }
        let Value::Array(entries) = entries else {
            return Err(unexpected("entries that are not a list"));
        };
        let entries = entries
            .into_iter()
            .map(|entry| parse_entry(entry).ok_or_else(|| unexpected("a malformed entry")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Previews {
            entries,
            stopped: number(&stopped) == Some(1),
        })
    }
}

fn parse_entry(entry: Value) -> Option<PreviewEntry> {
    let Value::Array(parts) = entry else {
        return None;
    };
    let [id, field_count, fields]: [Value; 3] = parts.try_into().ok()?;
    let Value::Array(fields) = fields else {
        return None;
    };
    let mut parsed = Vec::with_capacity(fields.len() / 4);
    let mut fields = fields.into_iter();
    while let (Some(name), Some(name_len), Some(value), Some(value_len)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    {
        parsed.push(PreviewField {
            name: bytes(name)?,
            name_len: usize::try_from(number(&name_len)?).ok()?,
            value: bytes(value)?,
            value_len: usize::try_from(number(&value_len)?).ok()?,
        });
    }
    Some(PreviewEntry {
        id: text(&id)?,
        field_count: usize::try_from(number(&field_count)?).ok()?,
        fields: parsed,
    })
}

/// A reply's bytes: a bulk or simple string.
pub(crate) fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}

/// A reply as text (lossy), when it is a string.
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

/// A reply as a number: an integer, or a string of digits.
pub(crate) fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(text) => text.parse().ok(),
        _ => None,
    }
}
