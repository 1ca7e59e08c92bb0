#![doc = include_str!("../README.md")]

mod backend;
mod blocking;
pub mod checkpoint;
mod config;
mod connection;
pub mod fallback;
pub mod keys;
mod layer;
mod memory;
mod redis_backend;
mod store;
pub mod transaction;
pub mod value;

pub use blocking::BlockingStateStore;
pub use checkpoint::Checkpoint;
pub use config::{FallbackConfig, FallbackMode, StateBackend, StateConfig};
pub use fallback::FallbackStats;
pub use keys::{KeyLayout, Keys};
pub use redstream_core::TlsOptions;
pub use redstream_core::{
    BackpressureConfig, BackpressureStrategy, CircuitBreakerConfig, CircuitBreakerStats,
    CircuitState, Error, ErrorKind, Result,
};
pub use store::{Read, StateStore, Ttl};
pub use transaction::Transaction;
pub use value::Value;
