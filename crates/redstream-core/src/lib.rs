#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod atomic;
pub mod backpressure;
pub mod circuit_breaker;
pub mod conformance;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod connection;
mod error;
mod event;
mod handler;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod keys;
pub mod memory;
mod redact;
#[cfg(feature = "redis")]
mod redis_error;
#[cfg(feature = "redis")]
mod redis_tls;
pub mod retry;
pub mod serde_duration;
pub mod serde_max_len;
pub mod serde_secret;
mod sink;
mod traits;
pub mod wire;

pub use backpressure::{
    BackpressureConfig, BackpressureQueue, BackpressureStats, BackpressureStrategy, PushOutcome,
};
pub use circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerStats, CircuitState,
};
#[cfg(feature = "redis")]
pub use connection::{Connection, ConnectionOptions, Topology};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use event::{Event, EventId, EventLimits, EventMetadata, Priority, validate_event_type};
pub use handler::{Handler, HandlerResult, run_isolated};
pub use memory::{DeadLetter, MemoryBus};
pub use redact::{RedactedUrl, redact_url};
#[cfg(feature = "redis")]
pub use redis_error::classify_redis_error;
#[cfg(feature = "redis")]
pub use redis_tls::{TlsOptions, open_client};
pub use retry::RetryPolicy;
pub use sink::{BatchAck, BatchSink, CheckpointHook, SourcePosition};
pub use traits::{Publisher, Subscriber, SubscriptionHandle, subscription_types};
pub use wire::{DecodeError, WIRE_VERSION};
