//! Inspection: what the CLI and the dashboard show about a server and its streams.
//!
//! Every method is read-only: nothing here creates, acknowledges, claims or deletes anything.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | these docs, `MAX_INSPECT_COUNT` |
//! | `health.rs` | `ping`, `server_info`, [`ServerInfo`] |
//! | `streams.rs` | `list_streams`, `list_streams_matching`, `stream_info`, `streams_info`, `streams_overview`, [`StreamSummary`], [`GroupSummary`] |
//! | `describe.rs` | the two round trips behind a summary, ages against `TIME` |
//! | `groups.rs` | `consumers`, `pending`, [`ConsumerSummary`], [`PendingQuery`], [`PendingEntry`] |
//! | `range.rs` | `read_range`, [`StreamEntry`] |
//! | `nodes.rs` | `nodes`, [`NodeStats`]: per master of a cluster (or the one server) |
//! | `checks.rs` | names, ids and counts; the `TYPE` check before a stream command; errors |
//! The methods do not go through the circuit breaker, on purpose (`Traffic::Read` in
//! `commands.rs`): they are how an operator finds out whether Redis is back, so they must reach
//! it even while the breaker is open, and a dashboard polling a struggling server must not open
//! the breaker for the publishers.
//!
//! # Health
//!
//! - [`ping`](RedisTransport::ping): the round-trip time of one `PING`. Fails with
//!   [`ErrorKind::Timeout`](redstream_core::ErrorKind::Timeout) when the server does not answer
//!   within the configured `response_timeout`.
//! - [`server_info`](RedisTransport::server_info): a few fields of `INFO`, see [`ServerInfo`].
//!   On a cluster, the masters' memory, clients and ops/s summed.
//! - [`nodes`](RedisTransport::nodes): per master of a Redis Cluster (or for the one server),
//!   a [`NodeStats`]: `INFO`'s figures, `DBSIZE`, and the streams on that node with their total
//!   length, each node asked by itself (`SCAN` per master, as `list_streams` does).
//!
//! # Streams
//!
//! - [`list_streams`](RedisTransport::list_streams): the name of every stream key under the
//!   prefix (`events:*`: the streams of event types, the dead-letter stream, and any other
//!   stream whose name starts with the prefix), sorted.
//!   [`list_streams_matching`](RedisTransport::list_streams_matching) takes any `SCAN ... MATCH`
//!   pattern instead (`events.*` finds seed 004's `events.raw` and `events.normalized`; `*`
//!   every stream). Both use `SCAN ... MATCH <pattern> COUNT 1000 TYPE stream` (core's
//!   `keys::scan`), never `KEYS`, so a large keyspace does not block the server; keys of other
//!   types are left out. Like any `SCAN`, a stream created or deleted while the listing runs
//!   may or may not appear.
//! - [`stream_info`](RedisTransport::stream_info) and
//!   [`streams_overview`](RedisTransport::streams_overview): a [`StreamSummary`] with a
//!   [`GroupSummary`] per consumer group. One stream costs two round trips (`TYPE` + `XINFO
//!   STREAM` + `XINFO GROUPS`, then `TIME` and per group one `XPENDING` and at most one
//!   `XRANGE`); the overview batches up to 64 streams into each of those two pipelines.
//! - [`consumers`](RedisTransport::consumers): a [`ConsumerSummary`] per consumer of a group.
//! - [`pending`](RedisTransport::pending): the pending entries of a group, one
//!   [`PendingEntry`] each, filtered by a [`PendingQuery`].
//! - [`read_range`](RedisTransport::read_range): entries of a stream, decoded into events when
//!   they are in the redstream wire format, shown raw either way; see [`StreamEntry`].
//!
//! # Ages and time
//!
//! A stream entry id is `<milliseconds>-<sequence>`, the milliseconds being the server's clock
//! when the entry was added. Ages are "now" minus that timestamp, in seconds, where "now" comes
//! from the server's `TIME` in the same round trip: they do not depend on the client's clock.
//! An id that is ahead of the server's clock (explicit ids, a clock stepped back) gives age 0.
//!
//! # Names and errors
//!
//! Stream names are full names, used as they are: `events:order.created`, `events.raw`,
//! `orders.events`, as [`list_streams`](RedisTransport::list_streams) returns them;
//! [`stream_key_for`](RedisTransport::stream_key_for) and
//! [`resolve_stream`](RedisTransport::resolve_stream) turn an event type into one. Errors, all
//! typed:
//!
//! | situation | kind |
//! |---|---|
//! | an empty name, or one with whitespace or control characters | `InvalidInput` |
//! | the stream does not exist | `NotFound`: `no such stream ...` |
//! | the group does not exist (`NOGROUP`) | `NotFound`: `no such consumer group ...` |
//! | the key exists but is not a stream | `WrongType` |
//! | `count` is 0, a malformed entry id, an empty group or consumer name | `InvalidInput` |
//! | connection lost, timeout... | as classified by [`Error::from_redis`](redstream_core::Error::from_redis) |
//!
//! A missing stream or group is an [`InvalidInput`](redstream_core::ErrorKind::InvalidInput) because the caller
//! named something that is not there; it is never retryable. (A missing stream is not turned
//! into an empty result: "nothing there" and "wrong name" look the same otherwise.)
//!
//! Counts are bounded: [`pending`](RedisTransport::pending) and
//! [`read_range`](RedisTransport::read_range) return at most
//! [`MAX_INSPECT_COUNT`](RedisTransport::MAX_INSPECT_COUNT) (1000) entries per call; a larger
//! count is capped, not refused. Page with an exclusive start id, `(` followed by the last id
//! seen.

mod checks;
mod describe;
mod groups;
mod health;
mod nodes;
mod range;
mod streams;

pub(crate) use checks::{check_non_empty, no_such_group, parse_id};
pub use groups::{ConsumerSummary, PendingEntry, PendingQuery};
pub use health::ServerInfo;
pub use nodes::NodeStats;
pub use range::StreamEntry;
pub use streams::{GroupSummary, StreamSummary};

use crate::transport::RedisTransport;

/// # Inspection
///
/// Read-only views for the CLI and the dashboard. They bypass the circuit breaker, so they report
/// on a server the breaker has given up on. Stream names are full names, used as they are. An
/// invalid name fails with [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput); a
/// stream or a consumer group that does not exist with
/// [`ErrorKind::NotFound`](redstream_core::ErrorKind::NotFound); a key that is not a stream with
/// [`ErrorKind::WrongType`](redstream_core::ErrorKind::WrongType). Ages are measured against the
/// server's clock (`TIME`), not the client's.
impl RedisTransport {
    /// The most entries [`pending`](Self::pending) and [`read_range`](Self::read_range) return
    /// per call.
    pub const MAX_INSPECT_COUNT: usize = 1000;
}
