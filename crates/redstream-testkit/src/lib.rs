#![doc = include_str!("../README.md")]

pub mod bench;
mod builder;
pub mod callgrind;
mod cluster;
#[cfg(feature = "docker")]
mod docker;
mod error;
mod logs;
mod sentinel;
mod server;
mod tls;
mod version;
mod wait;

pub use builder::RedisServerBuilder;
pub use cluster::{ClusterNode, RedisCluster, RedisClusterBuilder, SLOTS, SlotMove, key_slot};
pub use error::{Error, Result};
pub use logs::{capture_logs, logged};
pub use sentinel::{RedisSentinel, RedisSentinelBuilder};
pub use server::RedisServer;
pub use version::{ServerName, ServerVersion};
pub use wait::wait_until;
