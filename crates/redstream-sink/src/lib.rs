#![doc = include_str!("../README.md")]

mod config;
pub mod keys;
pub mod runner;
mod sink;

pub use config::{Durability, SinkConfig};
pub use sink::{Delivery, Progress, RedisSink, SinkStats};
