#![doc = include_str!("../README.md")]

mod config;
mod connection;
pub mod keys;
pub mod runner;
mod script;
mod sink;
mod stall;

pub use config::{Durability, SinkConfig};
pub use sink::{Delivery, Progress, RedisSink, SinkStats};
