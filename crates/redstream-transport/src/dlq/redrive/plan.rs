//! What each dead letter of a redrive becomes: a [`Plan`] (its target stream, the fields to
//! write, its field in the redrive record), or a reason to leave it where it is.

use redstream_core::wire::EVENT_FIELD;

use super::RedriveReport;
use crate::dlq::DeadLetterEntry;
use crate::keys::{KeyLayout, is_legacy_name, validate_event_type};
use crate::reply;
use crate::transport::RedisTransport;

/// A dead letter ready to be republished.
pub(super) struct Plan {
    pub(super) dlq_id: String,
    pub(super) target: String,
    /// Its field in the redrive record (cluster layout): `<entry id> <stream>` of the entry it
    /// was moved from; empty when none is kept.
    pub(super) record: String,
    /// The entry it was moved from, for the record's `XPENDING` check: its stream, group and id
    /// (used only when `record` is not empty).
    pub(super) source: (String, String, String),
    /// Whether a dead letter of the same entry was republished earlier in this redrive call: it
    /// is then removed as a repeat.
    pub(super) repeat: bool,
    /// The fields of the entry to write: `event` and the envelope, or a raw entry's fields.
    pub(super) fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl RedisTransport {
    /// The dead letter's field in the redrive record: `<entry id> <stream>` of the entry it was
    /// moved from, in the cluster layout; empty (no record) otherwise, and for dead letters
    /// written by hand (no entry id, group or stream). Whether the script writes it depends on
    /// the entry still being pending.
    pub(super) fn record_field(&self, dead: &DeadLetterEntry) -> String {
        if self.inner.names.layout() != KeyLayout::Cluster
            || dead.entry_id.is_empty()
            || dead.group.is_empty()
            || dead.stream.is_empty()
        {
            return String::new();
        }
        format!("{} {}", dead.entry_id, dead.stream)
    }

    /// Where a dead letter is redriven: the stream it records, except
    ///
    /// - a name of the layout before this version (`{prefix}:type#lane`) or none at all, and
    /// - the stream of another event type (`events:order.created` recorded for an
    ///   `order.cancelled` event: dead-lettered by a subscription of `order.created` because
    ///   its type is not the stream's, and written back there it would be dead-lettered again),
    ///
    /// where the stream of its own event type is used instead. `None` when neither gives a
    /// stream.
    pub(super) fn redrive_target(&self, recorded: &str, event_type: &str) -> Option<String> {
        let names = &self.inner.names;
        let own_stream = || {
            validate_event_type(event_type, &self.inner.options.limits)
                .ok()
                .map(|()| names.stream(event_type))
        };
        if recorded.is_empty() || is_legacy_name(names.prefix(), recorded) {
            return own_stream();
        }
        match names.event_type(recorded) {
            Some(stream_type) if stream_type != event_type => {
                own_stream().or_else(|| Some(recorded.to_owned()))
            }
            _ => Some(recorded.to_owned()),
        }
    }

    /// What to do with each of `entries`: a [`Plan`] for each dead letter that can be
    /// republished; the others are reported as skipped.
    pub(super) fn plan_redrives(
        &self,
        entries: Vec<reply::RawEntry>,
        report: &mut RedriveReport,
    ) -> Vec<Plan> {
        let limits = &self.inner.options.limits;
        let names = &self.inner.names;
        let mut plans = Vec::with_capacity(entries.len());
        for entry in entries {
            let dead = DeadLetterEntry::from_raw(entry, limits);
            let record = self.record_field(&dead);
            let source = (
                dead.stream.clone(),
                dead.group.clone(),
                dead.entry_id.clone(),
            );
            if let Some(size) = dead.truncated_size {
                report.skip(
                    dead.id,
                    format!(
                        "it keeps only a preview of an entry of {size} bytes, over the event \
                         size limit; the entry is {} in {} (read it with XRANGE)",
                        dead.entry_id, dead.stream
                    ),
                );
                continue;
            }
            if dead.raw {
                let recorded =
                    !dead.stream.is_empty() && !is_legacy_name(names.prefix(), &dead.stream);
                match dead.field_bytes {
                    Some(fields) if !fields.is_empty() && recorded => plans.push(Plan {
                        record,
                        source,
                        repeat: false,
                        dlq_id: dead.id,
                        target: dead.stream,
                        fields,
                    }),
                    Some(_) if !recorded => {
                        report.skip(dead.id, "it records no stream to write its fields back to")
                    }
                    _ => report.skip(
                        dead.id,
                        "its `event` field does not hold the entry's fields as an array of \
                         [name, value] pairs; inspect it with XRANGE",
                    ),
                }
                continue;
            }
            let Some(event) = &dead.event else {
                let reason = dead.decode_error.as_deref().unwrap_or("no event");
                report.skip(
                    dead.id,
                    format!("its event cannot be decoded ({reason}); inspect it with XRANGE and fix or delete it by hand"),
                );
                continue;
            };
            let Some(target) = self.redrive_target(&dead.stream, event.event_type()) else {
                report.skip(
                    dead.id,
                    format!(
                        "it records no stream and its event type {:?} names none",
                        event.event_type()
                    ),
                );
                continue;
            };
            plans.push(Plan {
                record,
                source,
                repeat: false,
                dlq_id: dead.id,
                target,
                fields: vec![(EVENT_FIELD.as_bytes().to_vec(), dead.raw_event.into_bytes())],
            });
        }
        plans
    }
}
