#![doc = include_str!("../README.md")]

mod builder;
#[cfg(feature = "docker")]
mod docker;
mod error;
mod logs;
mod server;
mod tls;

pub use builder::RedisServerBuilder;
pub use error::{Error, Result};
pub use logs::{capture_logs, logged};
pub use server::RedisServer;
