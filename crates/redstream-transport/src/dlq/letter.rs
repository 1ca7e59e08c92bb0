//! One dead letter before it is written: what its `event` field holds, its fields, and the move
//! from its stream (see the module docs of `dlq`).

use redis::Cmd;
use redstream_core::Result;
use redstream_core::atomic::{Atomic, KeyType};
use redstream_core::wire::EVENT_FIELD;
use tracing::Instrument;

use super::{Reason, encoding, field};
use crate::commands::Commands;
use crate::keys::{KeyLayout, StreamNames};
use crate::telemetry;

/// The longest `error` stored; longer handler messages are cut at a character boundary.
const MAX_ERROR_LEN: usize = 8 * 1024;

/// The fields a preview keeps, and the bytes it keeps of each name and value: a preview holds
/// at most about 64 fields of 512 + 128 bytes, whatever the entry's size.
const PREVIEW_FIELDS: usize = 64;
const PREVIEW_VALUE: usize = 512;
const PREVIEW_NAME: usize = 128;

/// What the `event` field of a dead letter holds.
pub(crate) enum Body {
    /// The envelope as it was written.
    Envelope(String),
    /// A JSON object of the fields of an entry that could not be decoded (see
    /// [`encoding::object`]).
    Undecodable(String),
    /// A JSON array of the `[name, value]` pairs of a raw entry (see [`encoding::pairs`]).
    Raw(String),
    /// An entry over the size limit: a JSON object of the start of its fields (see
    /// [`preview`]), and the entry's size in bytes. The entry itself stays in its stream.
    Preview(String, usize),
}

impl Body {
    /// The body of a dead letter of an entry with these fields: a preview when its names and
    /// values add up to more than `limit` bytes (the event size limit: a dead letter is never
    /// bigger than an event may be), `raw` for a subscription that does not read envelopes,
    /// otherwise the envelope, or all fields when it does not decode.
    pub(crate) fn of(
        fields: &[(Vec<u8>, Vec<u8>)],
        raw: bool,
        undecodable: bool,
        limit: usize,
    ) -> Self {
        let size: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > limit {
            return Self::Preview(encoding::object(&preview(fields)), size);
        }
        if raw {
            return Self::Raw(encoding::pairs(fields));
        }
        if !undecodable
            && let Some((_, value)) = fields
                .iter()
                .find(|(k, _)| k.as_slice() == EVENT_FIELD.as_bytes())
            && let Ok(envelope) = std::str::from_utf8(value)
        {
            return Self::Envelope(envelope.to_owned());
        }
        Self::Undecodable(encoding::object(fields))
    }

    fn text(&self) -> &str {
        match self {
            Self::Envelope(text)
            | Self::Undecodable(text)
            | Self::Raw(text)
            | Self::Preview(text, _) => text,
        }
    }
}

/// The fields of one dead-letter entry, before it is written.
pub(crate) struct DeadLetterFields<'a> {
    pub(crate) body: Body,
    pub(crate) error: &'a str,
    pub(crate) original_type: &'a str,
    pub(crate) stream: &'a str,
    pub(crate) entry_id: &'a str,
    pub(crate) group: &'a str,
    pub(crate) consumer: &'a str,
    pub(crate) deliveries: u32,
    pub(crate) first_failure_ms: u64,
    pub(crate) last_failure_ms: u64,
}

impl DeadLetterFields<'_> {
    pub(super) fn xadd(&self, dlq: &str) -> Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(dlq)
            .arg("*")
            .arg(field::EVENT)
            .arg(self.body.text())
            .arg(field::ERROR)
            .arg(shorten(self.error))
            .arg(field::ORIGINAL_TYPE)
            .arg(self.original_type)
            .arg(field::STREAM)
            .arg(self.stream)
            .arg(field::ENTRY_ID)
            .arg(self.entry_id)
            .arg(field::GROUP)
            .arg(self.group)
            .arg(field::CONSUMER)
            .arg(self.consumer)
            .arg(field::DELIVERIES)
            .arg(self.deliveries)
            .arg(field::FIRST_FAILURE_MS)
            .arg(self.first_failure_ms)
            .arg(field::LAST_FAILURE_MS)
            .arg(self.last_failure_ms);
        match self.body {
            Body::Envelope(_) => {}
            Body::Undecodable(_) => {
                cmd.arg(field::UNDECODABLE).arg("true");
            }
            Body::Raw(_) => {
                cmd.arg(field::RAW).arg("true");
            }
            Body::Preview(_, size) => {
                cmd.arg(field::TRUNCATED)
                    .arg("true")
                    .arg(field::SIZE)
                    .arg(size);
            }
        }
        cmd
    }
}

/// The start of `fields`: the first [`PREVIEW_FIELDS`], each name and value cut to its preview
/// length (at a character boundary when it is text).
fn preview(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    fields
        .iter()
        .take(PREVIEW_FIELDS)
        .map(|(name, value)| {
            (
                cut(name, PREVIEW_NAME).to_vec(),
                cut(value, PREVIEW_VALUE).to_vec(),
            )
        })
        .collect()
}

/// At most `max` bytes of `bytes`, ending at a character boundary when `bytes` is UTF-8.
fn cut(bytes: &[u8], max: usize) -> &[u8] {
    if bytes.len() <= max {
        return bytes;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => shorten_to(text, max).as_bytes(),
        Err(_) => &bytes[..max],
    }
}

fn shorten(text: &str) -> &str {
    shorten_to(text, MAX_ERROR_LEN)
}

fn shorten_to(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// Moves an entry to the dead-letter stream and returns the dead letter's id, or `None` when
/// the entry was no longer pending in its group and nothing was written.
///
/// In the plain layout: `XACK <stream> <group> <id>` and `XADD <dlq> ...` as one transaction
/// (`redstream_core::atomic`): both run or neither does, whatever refuses them (`NOPERM` on the
/// dead-letter stream, a dead-letter key that is not a stream, `OOM`, `READONLY`), and the
/// `XADD` runs only if the `XACK` acknowledged the entry. An entry that another consumer
/// claimed and acknowledged meanwhile (this one stalled past `claim_idle_time`), or whose
/// group was re-created, is not dead-lettered: its group is done with it. In the
/// cluster layout the dead-letter stream is in another slot than the entry's stream, so the two
/// cannot share a transaction: `XADD` first and, only once it succeeded, `XACK`. A failure of
/// the `XADD` leaves the entry pending and writes nothing; a failure between the two (the
/// `XACK` refused, the connection lost) leaves the entry pending with its dead letter written:
/// it is delivered again and may be dead-lettered a second time, a repeat with the same
/// `stream` and `entry_id` that the redrive recognises and removes instead of republishing (see
/// the module docs). Nothing is lost either way.
pub(crate) async fn move_entry(
    redis: &Commands,
    names: &StreamNames,
    fields: &DeadLetterFields<'_>,
    reason: Reason,
) -> Result<Option<String>> {
    let dlq = names.dlq();
    let span = tracing::info_span!(
        "dead_letter",
        stream = %fields.stream,
        entry_id = %fields.entry_id,
        event_type = %fields.original_type,
        group = %fields.group,
        deliveries = fields.deliveries,
        reason = reason.as_str(),
        dlq_id = tracing::field::Empty,
    );
    async {
        let mut xack = redis::cmd("XACK");
        xack.arg(fields.stream)
            .arg(fields.group)
            .arg(fields.entry_id);
        let id = match names.layout() {
            KeyLayout::Cluster => {
                let id: String = redis
                    .query("XADD to the dead-letter stream", &dlq, &fields.xadd(&dlq))
                    .await?;
                let acked: i64 = redis
                    .query("XACK after the dead letter's XADD", fields.stream, &xack)
                    .await?;
                if acked == 0 {
                    tracing::warn!(
                        dlq_id = %id,
                        "dead-lettered, but the entry was no longer pending in the group \
                         (another consumer claimed and acknowledged it, or the group was \
                         re-created): its group is done with it, and redriving this dead letter \
                         would deliver it again"
                    );
                }
                id
            }
            _ => {
                let mut tx = Atomic::guarded(&xack, KeyType::Stream);
                tx.push(&fields.xadd(&dlq), KeyType::Stream);
                let moved: Option<(i64, String)> = redis
                    .atomic("transaction of XACK + XADD", &dlq, &tx)
                    .await?;
                let Some((_acked, id)) = moved else {
                    tracing::warn!(
                        error = %shorten(fields.error),
                        "not dead-lettered: the entry is no longer pending in the group (another \
                         consumer claimed and acknowledged it, or the group was re-created)"
                    );
                    return Ok(None);
                };
                id
            }
        };
        tracing::Span::current().record("dlq_id", id.as_str());
        metrics::counter!(telemetry::DEAD_LETTERED, "reason" => reason.as_str()).increment(1);
        tracing::warn!(error = %shorten(fields.error), "moved to the dead-letter stream");
        Ok(Some(id))
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_keep_every_byte() {
        let fields = vec![
            (b"foo".to_vec(), b"bar".to_vec()),
            (b"foo".to_vec(), b"baz".to_vec()),
            (b"bin".to_vec(), vec![0xff, b'x']),
        ];
        let Body::Undecodable(text) = Body::of(&fields, false, true, 1024) else {
            panic!("an undecodable body");
        };
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["foo"], serde_json::json!(["bar", "baz"]));
        assert_eq!(json["bin"], serde_json::json!({ "base64": "/3g=" }));
        let Body::Raw(text) = Body::of(&fields, true, false, 1024) else {
            panic!("a raw body");
        };
        assert_eq!(encoding::fields(&text, true).unwrap(), fields);
        let envelope = vec![(b"event".to_vec(), b"{\"v\":1}".to_vec())];
        assert!(
            matches!(Body::of(&envelope, false, false, 1024), Body::Envelope(e) if e == "{\"v\":1}")
        );
    }

    #[test]
    fn entries_over_the_limit_keep_a_bounded_preview() {
        let big = "é".repeat(1_000_000);
        let mut fields = vec![(b"event".to_vec(), big.clone().into_bytes())];
        fields.extend((0..100).map(|i| (format!("f{i}").into_bytes(), vec![0xff; 10_000])));
        for raw in [false, true] {
            let Body::Preview(text, size) = Body::of(&fields, raw, false, 1024 * 1024) else {
                panic!("a preview");
            };
            assert_eq!(size, 5 + 2_000_000 + 290 + 100 * 10_000);
            assert!(text.len() < 64 * 1024, "{} bytes", text.len());
            let kept = encoding::fields(&text, false).unwrap();
            assert_eq!(kept.len(), PREVIEW_FIELDS);
            assert!(big.as_bytes().starts_with(&kept[0].1));
            assert!(
                std::str::from_utf8(&kept[0].1).is_ok(),
                "cut at a char boundary"
            );
            assert_eq!(kept[1].1, vec![0xff; PREVIEW_VALUE]);
        }
    }

    #[test]
    fn long_errors_are_cut_at_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_LEN);
        let cut = shorten(&long);
        assert!(cut.len() <= MAX_ERROR_LEN);
        assert!(long.starts_with(cut));
    }
}
