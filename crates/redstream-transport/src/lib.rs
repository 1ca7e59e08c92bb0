#![doc = include_str!("../README.md")]

mod admin;
mod commands;
mod config;
mod connection;
mod consumer;
mod dlq;
mod inspect;
mod keys;
mod publisher;
mod raw;
mod reply;
mod telemetry;
mod trace_context;
mod transport;

pub use admin::{ConsumerDeletion, FollowedEntry, Follower, Trim, TrimOutcome};
pub use config::{RedisConfig, StartFrom, TransportOptions};
pub use consumer::SubscriptionBuilder;
pub use dlq::{DeadLetterEntry, RedriveReport, SkippedDeadLetter};
pub use inspect::{
    ConsumerSummary, GroupSummary, NodeStats, PendingEntry, PendingQuery, ServerInfo, StreamEntry,
    StreamSummary,
};
pub use keys::{KeyLayout, StreamNames, validate_event_type};
pub use raw::RawEntry;
pub use redstream_core::connection::{Connection, Topology};
pub use redstream_core::{Error, ErrorKind, Result, TlsOptions};
pub use transport::{RedisSubscriber, RedisTransport};
