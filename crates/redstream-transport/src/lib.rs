#![doc = include_str!("../README.md")]

mod admin;
mod claim;
mod config;
mod connection;
mod consumer;
mod dlq;
mod inspect;
mod keys;
mod publisher;
mod telemetry;
mod trace_context;
mod transport;

pub use admin::{FollowedEntry, Follower};
pub use config::{RedisConfig, StartFrom, TransportOptions};
pub use dlq::{DeadLetterEntry, RedriveReport, SkippedDeadLetter};
pub use inspect::{
    ConsumerSummary, GroupSummary, PendingEntry, PendingQuery, ServerInfo, StreamEntry,
    StreamSummary,
};
pub use keys::Keys;
pub use redstream_core::{Error, ErrorKind, Result, TlsOptions};
pub use transport::{RedisSubscriber, RedisTransport};
