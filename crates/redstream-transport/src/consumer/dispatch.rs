//! From an entry read or claimed to the buffer: its priority, its delivery count, and entries
//! that were deleted while pending.

use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use redstream_core::wire::EVENT_FIELD;
use redstream_core::{Priority, Result};
use serde::Deserialize;

use super::buffer::{Pushed, lane_of};
use super::sub::{Delivery, Sub};
use super::{claim, priority};
use crate::{dlq, reply, telemetry};

/// An envelope's type and priority, read by serde without decoding the rest (skipped with
/// `IgnoredAny`, not built): the type a dead letter records, and the priority where
/// [`priority::scan`] is not sure of it.
#[derive(Deserialize, Default)]
pub(crate) struct Peek {
    #[serde(rename = "type", default)]
    pub(crate) event_type: Option<String>,
    #[serde(default)]
    metadata: Option<PeekMetadata>,
}

#[derive(Deserialize, Default)]
struct PeekMetadata {
    #[serde(default)]
    priority: Option<Priority>,
}

impl Peek {
    /// The look at an entry's envelope; empty when there is none or it is not JSON of that shape.
    pub(crate) fn of(fields: &[(Vec<u8>, Vec<u8>)]) -> Self {
        fields
            .iter()
            .find(|(k, _)| k.as_slice() == EVENT_FIELD.as_bytes())
            .and_then(|(_, v)| serde_json::from_slice(v).ok())
            .unwrap_or_default()
    }

    pub(crate) fn priority(&self) -> Priority {
        self.metadata
            .as_ref()
            .and_then(|m| m.priority)
            .unwrap_or_default()
    }
}

/// The priority of the envelope in `fields` (`Normal` without one).
fn envelope_priority(fields: &[(Vec<u8>, Vec<u8>)]) -> Priority {
    let Some((_, json)) = fields
        .iter()
        .find(|(k, _)| k.as_slice() == EVENT_FIELD.as_bytes())
    else {
        return Priority::Normal;
    };
    priority::scan(json).unwrap_or_else(|| Peek::of(fields).priority())
}

impl Sub {
    /// A delivery of an entry, in the buffer lane of its envelope's priority. The worker that
    /// takes it decodes it: the reader only finds the priority ([`priority::scan`], or serde's
    /// [`Peek`] where the scan is not sure), so that a read's decoding is spread over the
    /// workers instead of holding up the reader's next read.
    pub(super) fn delivery(
        &self,
        stream: usize,
        id: String,
        deliveries: u32,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Delivery {
        let priority = if self.envelopes {
            envelope_priority(&fields)
        } else {
            Priority::Normal
        };
        Delivery {
            stream,
            lane: lane_of(priority),
            id,
            deliveries,
            fields,
        }
    }

    /// Dispatches entries taken from the pending list (re-read or claimed), with the delivery
    /// counts read just before (`before`): dead-letters those delivered too often,
    /// acknowledges those trimmed away.
    pub(crate) async fn dispatch_claimed(
        &self,
        stream: usize,
        entries: Vec<reply::RawEntry>,
        before: &claim::Snapshot,
        leftover: &mut Vec<Delivery>,
    ) -> Result<()> {
        let key = &self.spec(stream).key;
        let mut deleted = Vec::new();
        let mut live = Vec::new();
        for entry in entries {
            match entry.fields {
                None => deleted.push(entry.id),
                Some(fields) if !self.flights.contains(key, &entry.id) => {
                    live.push((entry.id, fields));
                }
                Some(_) => {}
            }
        }
        if !deleted.is_empty() {
            self.ack_deleted(stream, &deleted).await;
        }
        if live.is_empty() {
            return Ok(());
        }
        for (id, fields) in live {
            // A claim's snapshot and its `XCLAIM`, and a re-read's and its read, list the same
            // entries. One the snapshot lacks is left pending (a claim takes it again after
            // `claim_idle_time`) rather than delivered with a count that is not known.
            let Some(deliveries) = before.after(&id) else {
                tracing::debug!(stream = %key, id = %id, "no delivery count read for an entry; left pending");
                continue;
            };
            let delivery = self.delivery(stream, id, deliveries, fields);
            if deliveries > self.options.max_deliveries {
                if self.flights.insert(self.id, key, &delivery.id) {
                    let error = format!(
                        "delivered {deliveries} times without being acknowledged (handler \
                         failures, or consumers that stopped while handling it); max_deliveries \
                         is {}",
                        self.options.max_deliveries
                    );
                    self.give_up(&delivery, &error, dlq::Reason::Handler).await;
                }
                continue;
            }
            self.dispatch(delivery, leftover).await;
        }
        Ok(())
    }

    /// Pending entries whose stream entry is gone (trimmed by `MAXLEN` or deleted before they
    /// were acknowledged): reported, and acknowledged so that they do not linger.
    pub(crate) async fn ack_deleted(&self, stream: usize, ids: &[String]) {
        let key = &self.spec(stream).key;
        tracing::warn!(
            stream = %key,
            group = %self.group,
            count = ids.len(),
            ids = ?ids,
            "pending entries were deleted from the stream (trimmed by MAXLEN or XDEL) before \
             this group handled them; their events are lost to this group. Raise \
             max_stream_length or consume faster"
        );
        metrics::counter!(telemetry::CLAIM_DELETED, "group" => Arc::clone(&self.group))
            .increment(ids.len() as u64);
        let mut cmd = redis::cmd("XACK");
        cmd.arg(key).arg(&*self.group).arg(ids);
        if let Err(err) = self.redis.query::<i64>("XACK", key, &cmd).await {
            tracing::warn!(stream = %key, error = %err, "could not acknowledge deleted entries");
        }
    }

    /// Queues a delivery for the workers. Entries that do not fit are released; with the
    /// subscription stopping, they are handed back in `leftover`.
    pub(crate) async fn dispatch(&self, delivery: Delivery, leftover: &mut Vec<Delivery>) {
        let key = &self.spec(delivery.stream).key;
        if !self.flights.insert(self.id, key, &delivery.id) {
            return;
        }
        self.queue(delivery, leftover).await;
    }

    /// [`dispatch`](Self::dispatch) for the entries of one read, recorded as held under one
    /// lock before the first is queued: those still waiting for room in the buffer are held
    /// too, so the keep-alive keeps them from being claimed by another consumer meanwhile.
    /// When they all fit (beyond the claims' reserve, with the `Block` strategy) they are
    /// pushed in one go ([`Buffer::push_all`](super::buffer::Buffer::push_all)). Otherwise,
    /// with the `Block` strategy, each waits for room beyond the reserve
    /// ([`Buffer::room`](super::buffer::Buffer::room)) before it is pushed, so that reading a
    /// backlog never takes the room the claim passes need; a dropping strategy applies to
    /// each in turn.
    pub(crate) async fn dispatch_read(
        &self,
        mut deliveries: Vec<Delivery>,
        leftover: &mut Vec<Delivery>,
    ) {
        let fresh = self.flights.insert_all(
            self.id,
            deliveries
                .iter()
                .map(|d| (self.spec(d.stream).key.as_str(), d.id.as_str())),
        );
        let mut fresh = fresh.into_iter();
        deliveries.retain(|_| fresh.next().unwrap_or(false));
        // Usually the whole read fits, beyond the claims' reserve: pushed in one go.
        if !self.stop.is_cancelled()
            && self
                .buffer
                .reader_budget()
                .is_none_or(|room| room >= deliveries.len())
        {
            match self.buffer.push_all(deliveries) {
                Ok(()) => return,
                Err(back) => deliveries = back,
            }
        }
        // Pushes left before the buffer is looked at again (its count takes its lock): once
        // per read while it has room, not once per entry. Meanwhile workers free places, and
        // a claim pass may take some (at most a page): the reserve is what readers leave, not
        // a lock.
        let mut budget = 0;
        for delivery in deliveries {
            if budget == 0 {
                budget = match self.buffer.reader_budget() {
                    None => usize::MAX,
                    Some(0) => {
                        // `false` when stopped: `queue` then puts the entry in `leftover`.
                        let _ = self.buffer.room(&self.stop).await;
                        self.buffer.reader_budget().unwrap_or(1).max(1)
                    }
                    Some(room) => room,
                };
            }
            budget -= 1;
            self.queue(delivery, leftover).await;
        }
    }

    /// Queues a delivery recorded as held; see [`dispatch`](Self::dispatch).
    async fn queue(&self, delivery: Delivery, leftover: &mut Vec<Delivery>) {
        if self.stop.is_cancelled() {
            leftover.push(delivery);
            return;
        }
        // `push` queues the entry before it waits, so if the stop cancels the wait the entry is
        // in the buffer, which is released when the subscription drains.
        let pushed = {
            let mut push = pin!(self.buffer.push(delivery));
            // Usually there is room and the push is done at its first poll, without the
            // select's registration with the stop token's wait list.
            let first = std::future::poll_fn(|cx| Poll::Ready(push.as_mut().poll(cx))).await;
            match first {
                Poll::Ready(pushed) => pushed,
                Poll::Pending => tokio::select! {
                    biased;
                    () = self.stop.cancelled() => return,
                    pushed = push => pushed,
                },
            }
        };
        match pushed {
            Pushed::Queued => {}
            Pushed::Dropped(victims) => {
                tracing::debug!(
                    group = %self.group,
                    count = victims.len(),
                    "buffer full: entries released for redelivery"
                );
                claim::release(self, victims).await;
            }
            Pushed::Closed(delivery) => leftover.extend(delivery.map(|d| *d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_priority_is_read_from_the_envelope_only() {
        let fields = |v: &str| vec![(b"event".to_vec(), v.as_bytes().to_vec())];
        let high = fields(
            r#"{"v":1,"id":"x","type":"t","payload":{"metadata":{"priority":"low"}},"metadata":{"priority":"high"}}"#,
        );
        assert_eq!(Peek::of(&high).priority(), Priority::High);
        assert_eq!(Peek::of(&high).event_type.as_deref(), Some("t"));
        // A priority inside the payload is not the event's.
        let nested = fields(r#"{"v":1,"type":"t","payload":{"metadata":{"priority":"critical"}}}"#);
        assert_eq!(Peek::of(&nested).priority(), Priority::Normal);
        for odd in ["not json", r#"{"metadata":{"priority":"urgent"}}"#, "[]"] {
            assert_eq!(Peek::of(&fields(odd)).priority(), Priority::Normal, "{odd}");
        }
        assert_eq!(Peek::of(&[]).priority(), Priority::Normal);
    }
}
