//! Consuming: subscriptions, the read loop, handler workers and batched acknowledgements.
//!
//! One concern per file (tower's `retry/` is the model):
//!
//! | file | what |
//! |---|---|
//! | `subscribe.rs` | the public API: `subscribe`, `unsubscribe`, `backpressure_stats` |
//! | `builder.rs` | `SubscriptionBuilder`: streams by type and by name, any group |
//! | `registry.rs` | the running subscriptions of a transport and the entries they hold |
//! | `sub.rs` | one subscription's shared state, group creation, error backoff |
//! | `supervise.rs` | a subscription's tasks, and how they stop |
//! | `read.rs` | the reader: own pending entries, then one blocking read per poll |
//! | `dispatch.rs` | from a read or claimed entry to the buffer |
//! | `handle.rs` | workers: decoding, the handler, failures and dead letters |
//! | `ack.rs` | batched acknowledgements |
//! | `buffer.rs` | the bounded buffer between reading and handling |
//! | `claim.rs` | redelivery (`XAUTOCLAIM`), keep-alive and release |
//! | `handler.rs` | handlers with their types erased |
//!
//! # One subscription
//!
//! [`subscribe`](crate::RedisTransport::subscribe) creates the consumer group on every stream
//! it reads (`XGROUP CREATE <stream> <group> <start> MKSTREAM`; a group that already exists is
//! kept) and starts these tasks:
//!
//! - **The reader**, on a connection of its own (a blocking `XREADGROUP` holds its connection).
//!   It first re-reads the consumer's own pending entries (`XREADGROUP ... STREAMS <s> 0`, page
//!   by page): entries a previous run under the same consumer name received and never
//!   acknowledged. Then each poll is one `XREADGROUP ... COUNT n BLOCK t STREAMS <s>... > ...`
//!   over all the subscription's streams: one round trip, one key per stream. On a Redis
//!   Cluster one `XREADGROUP` may name one slot only, so there is one reader per slot group of
//!   the subscription's streams, each on a dedicated connection of its own (`read.rs`).
//! - **Workers**, `handler_concurrency` of them, each taking one entry at a time from the
//!   subscription's buffer and running the handler with its panics caught (a panicking handler is a
//!   failed delivery, not a dead worker). The reader only finds each envelope's priority, which
//!   picks the entry's buffer lane (`priority.rs`); the worker that takes the entry decodes it,
//!   so a read's decoding is shared by the workers rather than done by the reader before its
//!   next read.
//! - **The acker**, which acknowledges handled entries in batches: one `XACK <stream> <group>
//!   <id>...` per stream, when `ack_batch_size` entries are waiting or `ack_interval` after the
//!   first one. Entries are never `XDEL`eted: other groups may still need them.
//! - **The claimer** and **the keep-alive** (`claim.rs`): redelivery of failed and abandoned
//!   entries, and keeping the entries this consumer holds from being taken.
//!
//! # Priorities
//!
//! Priority is a field of the envelope (`metadata.priority`); every priority of a type is in the
//! type's one stream, in publish order. The reader looks at the priority of each entry it reads
//! (a cheap look at the envelope, before the full decode in a worker) and the buffer keeps one
//! lane per priority: workers always take from the most urgent non-empty lane. So priority
//! orders what one consumer has in hand (up to `read_count` entries per read, and what waits in
//! its buffer), not the stream: an urgent entry behind a long backlog in Redis waits for the
//! backlog to be read. Within one priority, entries are handled in stream order (strictly so
//! with `handler_concurrency = 1`). Entries of raw subscriptions (and of subscriptions with a
//! decoder) all count as `Normal`.
//!
//! # Backpressure
//!
//! The buffer holds at most `backpressure.max_queue_size` entries and applies the configured
//! strategy. With `Block`, the reader waits for room before it reads more: Redis keeps the
//! backlog. With `DropOldest`, `DropNewest` or `Reject`, an entry that does not fit is *released*,
//! never lost: it stays pending in Redis, its delivery count is set back (`XCLAIM ... RETRYCOUNT`,
//! so being dropped never pushes an entry towards the dead-letter stream) and it is marked idle,
//! so that the next claim pass (of this or another consumer) delivers it again. After a batch that
//! overflowed, the reader waits for room before reading again, so a full buffer never makes it
//! spin. The victim is always the least urgent entry: the oldest (`DropOldest`) or newest
//! (`DropNewest`, `Reject`) of the lowest non-empty priority lane.
//!
//! # Failures
//!
//! A handler's `Err` (or panic) leaves the entry pending; after `claim_idle_time` it is claimed
//! and delivered again, until it has been delivered `max_deliveries` times; then it is moved to
//! the dead-letter stream (see the `dlq` module). With `dead_letter_on_first_failure` it is moved
//! at once. An entry that cannot be decoded is moved to the dead-letter stream at once, with the
//! reason; so is an entry of a subscription *by event type* whose envelope has another type
//! (the error names both). A subscription to the dead-letter stream itself (`consume_dlq`) never
//! writes dead letters: an entry it cannot decode, or whose handler keeps failing, is
//! acknowledged in its group with an error log, and stays in the dead-letter stream.
//!
//! Redis errors never end a subscription. Transient ones (connection, timeout, loading, `OOM`)
//! are retried with jittered exponential backoff up to 5 s and logged as warnings; permanent
//! ones (`NOPERM`, `WRONGTYPE`, authentication) are logged as errors and retried every few
//! seconds (up to 30 s), since only an operator can fix them. `NOGROUP` (the stream or the group
//! disappeared) re-creates the group with a warning, starting at the beginning of the stream, so
//! that entries written to a re-created stream before the group came back are not skipped.
//!
//! The consumer's commands do not go through the circuit breaker (see `commands.rs`).
//!
//! # Stopping
//!
//! `unsubscribe`, and dropping the last clone of the transport, stop the reader and the
//! claimer, let the running handlers finish (at most `drain_timeout`; handlers still running
//! then are aborted and their entries stay pending), acknowledge what finished, and release the
//! entries still in the buffer, so that other consumers can claim them at once. A blocking read
//! cancelled by the stop may have been answered by the server already: those entries are pending
//! for this consumer and are claimed by another one after `claim_idle_time`, or re-read when a
//! consumer of the same name starts again. A consumer is never deleted from its group
//! (`XGROUP DELCONSUMER` would drop its pending entries).
//!
//! The subscription's tasks hold no reference to the transport, so dropping the last clone is
//! noticed while they run; a handler that captures a clone of the transport keeps it alive,
//! and that subscription stops only with `unsubscribe`.
//!
//! # Consumer names
//!
//! All subscriptions of one transport read as the one consumer `consumer_name`. They share a
//! record of the entries they hold, so one subscription never re-reads or claims what another
//! is handling. Two transports (or processes) must not use the same consumer name at the same
//! time: Redis cannot tell them apart, so each would take the other's entries as its own.
//!
//! Claiming uses `XAUTOCLAIM` and redrives use exclusive ranges, so the server must be Redis 6.2
//! or later.

mod ack;
mod buffer;
mod builder;
pub(crate) mod claim;
mod dispatch;
mod handle;
mod handler;
mod priority;
mod read;
mod registry;
mod sub;
mod subscribe;
mod supervise;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

pub use builder::SubscriptionBuilder;
pub(crate) use handler::{Handling, erase};
pub(crate) use registry::Registry;
pub(crate) use sub::{Mode, StreamSpec};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code runs under these locks, so a poisoned one still holds consistent data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
