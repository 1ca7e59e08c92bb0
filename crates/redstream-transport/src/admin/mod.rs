//! Administration: what an operator does by hand, for the `redstream` CLI and the dashboard.
//!
//! | method | what | Redis |
//! |---|---|---|
//! | [`stream_key_for`](RedisTransport::stream_key_for) | the stream key an operator means by a name | none |
//! | [`dlq_entry`](RedisTransport::dlq_entry) | one dead letter by id | `XRANGE events:dlq id id` |
//! | [`dlq_purge`](RedisTransport::dlq_purge) | delete every dead letter | `XTRIM events:dlq MAXLEN 0` |
//! | [`redrive_type`](RedisTransport::redrive_type) | redrive the dead letters of one event type | `XRANGE` pages, then as [`redrive_ids`](RedisTransport::redrive_ids) |
//! | [`claim`](RedisTransport::claim) | hand idle pending entries of a group to a consumer | `XAUTOCLAIM ... JUSTID` |
//! | [`claim_ids`](RedisTransport::claim_ids) | hand these pending entries to a consumer | `XCLAIM ... JUSTID` |
//! | [`create_group`](RedisTransport::create_group), [`destroy_group`](RedisTransport::destroy_group), [`set_group_id`](RedisTransport::set_group_id) | a group's life and position | `XGROUP CREATE`, `DESTROY`, `SETID` |
//! | [`delete_consumer`](RedisTransport::delete_consumer) | delete a consumer without pending entries (unless forced) | one script: `XINFO CONSUMERS`, `XGROUP DELCONSUMER` |
//! | [`ack`](RedisTransport::ack) | acknowledge entries by id | `XACK` |
//! | [`trim`](RedisTransport::trim) | delete the oldest entries, not those still pending (unless forced) | one script: `XINFO GROUPS`, `XPENDING`, `XTRIM` |
//! | [`follow`](RedisTransport::follow) | read entries as they are added, no group | `XREAD BLOCK` |
//! | [`follow_group`](RedisTransport::follow_group), [`follow_group_from`](RedisTransport::follow_group_from) | the same as a member of a consumer group (created at `$` or where asked) | `XGROUP CREATE`, `XREADGROUP BLOCK`, `XACK` |
//!
//! A [`Follower`] survives a restart of the server: after a connection error or a timeout it
//! opens a new connection on its next call, and resumes where it stopped (see
//! [`Follower::next`]).
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | these docs; read and write commands |
//! | `names.rs` | `stream_key_for`, `resolve_stream` |
//! | `dead_letters.rs` | `dlq_entry`, `dlq_purge`, `redrive_type` |
//! | `claim.rs` | `claim` |
//! | `trim.rs` | `trim`, [`Trim`], [`TrimOutcome`] |
//! | `groups.rs` | `create_group`, `destroy_group`, `set_group_id`, `delete_consumer` ([`ConsumerDeletion`]), `ack`, `claim_ids` |
//! | `follow.rs` | `follow`, `follow_group`, `follow_group_from`, their start ids |
//! | `follower.rs` | [`Follower`], [`FollowedEntry`] |
//! | `checks.rs` | the key's type, entry ids |
//!
//! # Names
//!
//! Every method takes full stream names, used as they are: `events:order.created`,
//! `events.raw`, `orders.events`. [`stream_key_for`](RedisTransport::stream_key_for) and
//! [`resolve_stream`](RedisTransport::resolve_stream) turn what an operator types into one
//! (prefix `events`, plain layout, here):
//!
//! | name | stream |
//! |---|---|
//! | `dlq` | `events:dlq` |
//! | `events:order.created`, a stream name of this prefix and layout | itself |
//! | `order.created`, an event type | `events:order.created` |
//! | `events.raw`, a stream ([`resolve_stream`](RedisTransport::resolve_stream) only) | itself |
//! | anything else that is a valid stream name but not an event type (`{orders}.events`) | itself |
//!
//! So a name that is an event type under the prefix still resolves, and a full name that is a
//! stream is used as it is. [`stream_key_for`](RedisTransport::stream_key_for) asks Redis nothing, so it
//! cannot know that `events.raw` exists and reads it as an event type (`events:events.raw`);
//! [`resolve_stream`](RedisTransport::resolve_stream) asks the `TYPE` of both first, and refuses
//! a name when both are streams, naming the two.
//!
//! # Errors
//!
//! As in the inspection API: an invalid stream name, a malformed entry id, a count of 0 or an empty
//! group or consumer name is [`ErrorKind::InvalidInput`](redstream_core::ErrorKind::InvalidInput);
//! a stream or a consumer group that does not exist is
//! [`ErrorKind::NotFound`](redstream_core::ErrorKind::NotFound); a key that is not a stream is
//! [`ErrorKind::WrongType`](redstream_core::ErrorKind::WrongType). Reads
//! ([`dlq_entry`](RedisTransport::dlq_entry), the scan of
//! [`redrive_type`](RedisTransport::redrive_type), following) bypass the circuit breaker like the
//! inspection API; writes ([`dlq_purge`](RedisTransport::dlq_purge), redrives,
//! [`claim`](RedisTransport::claim), creating a follower's group) go through it.

mod checks;
mod claim;
mod dead_letters;
mod follow;
mod follower;
mod groups;
mod names;
mod trim;

pub use follower::{FollowedEntry, Follower};
pub use groups::ConsumerDeletion;
pub use trim::{Trim, TrimOutcome};

use crate::commands::{Commands, Traffic};
use crate::transport::RedisTransport;

pub(super) fn reads(transport: &RedisTransport) -> Commands {
    transport.commands(Traffic::Read)
}

pub(super) fn writes(transport: &RedisTransport) -> Commands {
    transport.commands(Traffic::Write)
}
