#![doc = include_str!("../README.md")]

mod builder;
#[cfg(feature = "docker")]
mod docker;
mod error;
mod server;
mod tls;

pub use builder::RedisServerBuilder;
pub use error::{Error, Result};
pub use server::RedisServer;
