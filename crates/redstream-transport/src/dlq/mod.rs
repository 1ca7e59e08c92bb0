//! Dead letters: the `{prefix}:dlq` stream (`events:dlq`; `events:{dlq}` in the cluster
//! layout), where entries go that will not be handled.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the field names, `publish_to_dlq`, `consume_dlq`, `dlq_entries` |
//! | `letter.rs` | a dead letter before it is written (`event` body, fields) and the move |
//! | `encoding.rs` | a foreign entry's fields in `event`, byte for byte (text, or base64) |
//! | `entry.rs` | `DeadLetterEntry`, a dead letter read back |
//! | `redrive/` | redrives: the public methods and their report (`mod.rs`), targets and fields (`plan.rs`), the script and the record of the cluster layout (`script.rs`) |
//!
//! An entry is dead-lettered when its handler failed `max_deliveries` times (or once, with
//! `dead_letter_on_first_failure`), when it was claimed after `max_deliveries` deliveries without
//! an acknowledgement (its consumers kept dying on it), when it cannot be decoded, when a
//! subscription by event type finds an event of another type in its stream, or by hand with
//! [`publish_to_dlq`](RedisTransport::publish_to_dlq). The original entry is acknowledged, never
//! deleted: other groups reading the stream still get it. The fields are listed in
//! `docs/wire-format.md` ("Dead-letter entries"); the first three, `event`, `error` and
//! `original_type`, are seed 000's; `stream` and `entry_id` name the entry it was moved from.
//! The dead-letter stream is never trimmed by the transport: remove entries with the redrive
//! methods (or `XDEL`/`XTRIM` by hand).
//!
//! # What `event` holds
//!
//! | entry | `event` | flag |
//! |---|---|---|
//! | a redstream envelope | the envelope as written | none |
//! | an entry that could not be decoded | a JSON object of its fields (a repeated field's values in an array) | `undecodable` |
//! | an entry of a raw subscription or one with a decoder | a JSON array of its `[name, value]` pairs, in order | `raw` |
//! | any entry whose names and values add up to more than the event size limit (`EventLimits::max_encoded_bytes`) | a preview: a JSON object of its first 64 fields, each name cut to 128 bytes and each value to 512 | `truncated`, with `size` |
//!
//! So a dead letter is never much bigger than an event may be, whatever was written to the
//! stream: a 40 MB entry leaves a dead letter of a few KiB that says where the entry is (`stream`
//! and `entry_id`: acknowledging never deletes it) and how big it was. Such a dead letter is
//! not redriven.
//!
//! Names and values are kept byte for byte: one that is valid UTF-8 is a JSON string, any other
//! is an object `{"base64": "..."}` (standard alphabet, padded), e.g.
//! `[["event_id","e1"],["blob",{"base64":"/wB4"}]]`. An undecodable entry with a name that is
//! not UTF-8 is stored as the array of pairs instead of the object. A redrive writes the exact
//! bytes back.
//!
//! # The move, plain layout: one transaction
//!
//! ```text
//! XACK events:order.created <group> <id>
//! XADD events:dlq * event <envelope> error <message> original_type order.created stream events:order.created entry_id <id> ...
//! ```
//!
//! both in one `redstream_core::atomic` transaction, a script that checks the user's
//! permissions, both keys' types and the server's memory before it runs either. The entry is
//! in the dead-letter stream or pending in its own, never in neither and never in both,
//! whatever refuses the move (`MULTI`/`EXEC` would run the `XACK` after a `WRONGTYPE` `XADD`,
//! losing the entry). The `XADD` runs only when the `XACK` acknowledged the entry: one that
//! another consumer claimed and acknowledged meanwhile (a consumer that stalled past
//! `claim_idle_time` and then gave up on it) gets no dead letter, since its group is done with
//! it. (The transport connects to one server; this assumes both keys are on it.)
//!
//! # The move, cluster layout: two steps, repeats removed by the redrive
//!
//! `events:{dlq}` and `events:{payment.failed}` are in different slots, so one transaction
//! cannot hold both. The move is `XADD` to the dead-letter stream, then, once it succeeded, `XACK`
//! of the entry (two round trips, not atomic):
//!
//! - never lost: the entry is acknowledged only after its dead letter was written;
//! - a failure between the two (a crash, a dropped connection, a refused `XACK`) leaves the entry
//!   pending: it is claimed again and, past `max_deliveries`, dead-lettered again. That repeat
//!   carries the same `stream` and `entry_id`, so it is recognisable;
//! - never silently doubled: a redrive deletes repeats instead of republishing them, counted in
//!   [`RedriveReport::repeats`]. A second dead letter of an entry in the same redrive call is a
//!   repeat. For repeats that arrive after the redrive, it keeps a record (the hash
//!   `events:{dlq}:redriven`, in the dead-letter stream's slot) with the `<entry_id> <stream>` of
//!   a dead letter it republished and the id it was republished as, but only while a repeat can
//!   come: when the entry is still pending in its group (`XPENDING <stream> <group> <id> <id>
//!   1`, checked in the redrive script). A repeat found in the record is deleted and so is its
//!   field, unless the entry is still pending. After a normal move the record is not written at
//!   all; it holds at most one field per entry still pending and needs no cleaning by hand.
//! - unlike the plain layout, a consumer that stalled past `claim_idle_time` and then gives up
//!   on an entry that another consumer claimed and acknowledged meanwhile still writes its dead
//!   letter (the `XACK` after it answers 0, and a warning says so): a redrive would deliver
//!   that event to its groups again.
//!
//! # Reading and redriving
//!
//! - [`dlq_entries`](RedisTransport::dlq_entries) lists the oldest dead letters, decoded into
//!   [`DeadLetterEntry`] values.
//! - [`consume_dlq`](RedisTransport::consume_dlq) subscribes a handler to the dead-letter stream,
//!   in the consumer group `{consumer_group}-dlq`, from its beginning. It receives the original
//!   events. Handling one does not remove it from the stream (the group remembers what it
//!   handled); a dead letter that holds fields rather than an event, or whose handler keeps
//!   failing, is logged and acknowledged, never dead-lettered again.
//! - [`redrive_all`](RedisTransport::redrive_all), [`redrive_ids`](RedisTransport::redrive_ids)
//!   and [`redrive_range`](RedisTransport::redrive_range) write dead letters again to the stream
//!   they came from and delete them from the dead-letter stream. The target is the recorded
//!   `stream`, whatever its name (`events:order.created`, `events.raw`); a dead letter that
//!   records none, or a name of the layout before this version (`{events}:order.created#high`),
//!   goes to the stream of its event's type under the current names. An envelope is written back
//!   as the `event` field; a raw entry's fields are written back as they were. Each dead letter
//!   moves with one script (check it is still there, write it, delete it), so it is either still
//!   a dead letter or republished once, never both; 100 go per round trip. (On a Redis Cluster
//!   the two streams are in two slots: each dead letter moves one command at a time, `XADD`
//!   then `XDEL`, with the repeat rule of `redrive/slots.rs`.) A redriven event is a
//!   new entry: every group of that stream receives it again, with the same event id, so
//!   handlers that must not see an event twice deduplicate on [`Event::id`]. Dead letters that
//!   could not be decoded cannot be redriven: they stay where they are and the
//!   [`RedriveReport`] names them.
mod encoding;
mod entry;
mod letter;
mod redrive;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use redis::Value;
use redstream_core::wire;
use redstream_core::{Error, ErrorKind, Event, HandlerResult, Result, SubscriptionHandle};
use tracing::Instrument;

pub use entry::DeadLetterEntry;
pub(crate) use letter::{Body, DeadLetterFields, move_entry};
pub use redrive::{RedriveReport, SkippedDeadLetter};

use crate::commands::Traffic;
use crate::config::StartFrom;
use crate::consumer::{Handling, Mode, StreamSpec, erase, now_ms};
use crate::keys::validate_event_type;
use crate::transport::RedisTransport;
use crate::{reply, telemetry};

/// Field names of a dead-letter entry.
pub(crate) mod field {
    pub(crate) const EVENT: &str = "event";
    pub(crate) const ERROR: &str = "error";
    pub(crate) const ORIGINAL_TYPE: &str = "original_type";
    pub(crate) const STREAM: &str = "stream";
    pub(crate) const ENTRY_ID: &str = "entry_id";
    pub(crate) const GROUP: &str = "group";
    pub(crate) const CONSUMER: &str = "consumer";
    pub(crate) const DELIVERIES: &str = "deliveries";
    pub(crate) const FIRST_FAILURE_MS: &str = "first_failure_ms";
    pub(crate) const LAST_FAILURE_MS: &str = "last_failure_ms";
    /// Present (`"true"`) when `event` holds the fields of an entry that could not be decoded,
    /// rather than an envelope.
    pub(crate) const UNDECODABLE: &str = "undecodable";
    /// Present (`"true"`) when `event` holds the fields of an entry of a raw subscription (or one
    /// with a decoder), as a JSON array of `[name, value]` pairs in their order; a redrive writes
    /// them back as they were.
    pub(crate) const RAW: &str = "raw";
    /// Present (`"true"`) when the entry was over the event size limit: `event` holds a preview
    /// of its fields (a JSON object of the start of each), and the entry stays in its stream.
    pub(crate) const TRUNCATED: &str = "truncated";
    /// With `truncated`: the entry's size, its names and values in bytes.
    pub(crate) const SIZE: &str = "size";
}

/// Dead letters read per `XRANGE` page and redriven per round trip.
const PAGE: usize = 100;

/// Why an entry was dead-lettered; the `reason` label of the dead-letter counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Its handler failed, or it was delivered too many times.
    Handler,
    /// It could not be decoded.
    Decode,
    /// [`RedisTransport::publish_to_dlq`].
    Manual,
    /// Its envelope has another type than the stream it was read from, in a subscription by
    /// event type.
    WrongType,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Handler => "handler",
            Self::Decode => "decode",
            Self::Manual => "manual",
            Self::WrongType => "wrong_type",
        }
    }
}

impl RedisTransport {
    /// Writes `event` to the dead-letter stream by hand, with `error` as the reason, and returns
    /// the dead letter's id.
    ///
    /// The event is validated like a published one. Its `stream` field is the stream the event
    /// would be published to, so a redrive publishes it there; `entry_id` is empty and
    /// `deliveries` is 0.
    pub async fn publish_to_dlq(
        &self,
        event: Event,
        error: &(impl fmt::Display + ?Sized),
    ) -> Result<String> {
        let limits = &self.inner.options.limits;
        validate_event_type(event.event_type(), limits)?;
        let envelope = wire::encode(&event, limits)?;
        let stream = self.inner.names.stream(event.event_type());
        let error = error.to_string();
        let now = now_ms();
        let fields = DeadLetterFields {
            body: Body::Envelope(envelope),
            error: &error,
            original_type: event.event_type(),
            stream: &stream,
            entry_id: "",
            group: &self.inner.config.consumer_group,
            consumer: &self.inner.config.consumer_name,
            deliveries: 0,
            first_failure_ms: now,
            last_failure_ms: now,
        };
        let dlq = self.inner.names.dlq();
        let span = tracing::info_span!(
            "dead_letter",
            stream = %stream,
            event_type = %event.event_type(),
            event_id = %event.id(),
            reason = Reason::Manual.as_str(),
        );
        let id: String = self
            .commands(Traffic::Write)
            .query("XADD", &dlq, &fields.xadd(&dlq))
            .instrument(span)
            .await?;
        metrics::counter!(telemetry::DEAD_LETTERED, "reason" => Reason::Manual.as_str())
            .increment(1);
        Ok(id)
    }

    /// Subscribes `handler` to the dead-letter stream: it receives the original events, from the
    /// oldest dead letter on, as a member of the consumer group `{consumer_group}-dlq`.
    ///
    /// Returns a handle for [`unsubscribe`](Self::unsubscribe). Handled dead letters stay in the
    /// dead-letter stream; see the module docs of `dlq` for what happens to failures.
    pub async fn consume_dlq<F, Fut>(&self, handler: F) -> Result<SubscriptionHandle>
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let group = format!("{}-dlq", self.inner.config.consumer_group);
        let mut spec = StreamSpec::by_name(self.inner.names.dlq());
        spec.label = Arc::from(crate::keys::DLQ);
        self.start_subscription(
            Mode::DeadLetters,
            group,
            vec![crate::keys::DLQ.to_owned()],
            vec![spec],
            StartFrom::Beginning,
            Handling::Events(erase(handler)),
        )
        .await
    }

    /// The oldest `count` dead letters, decoded.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] when `count` is 0; a Redis error if the stream cannot be read.
    pub async fn dlq_entries(&self, count: usize) -> Result<Vec<DeadLetterEntry>> {
        if count == 0 {
            return Err(Error::invalid_input("count", "must be at least 1"));
        }
        let dlq = self.inner.names.dlq();
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&dlq).arg("-").arg("+").arg("COUNT").arg(count);
        let reply: Value = self
            .commands(Traffic::Read)
            .query("XRANGE", &dlq, &cmd)
            .await?;
        let entries = reply::entries(reply).map_err(|reason| {
            Error::backend(ErrorKind::Unexpected, "XRANGE", dlq.clone(), reason)
        })?;
        let limits = &self.inner.options.limits;
        Ok(entries
            .into_iter()
            .map(|entry| DeadLetterEntry::from_raw(entry, limits))
            .collect())
    }
}
