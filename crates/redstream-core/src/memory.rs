//! An in-memory bus (placeholder, being written).
#![allow(missing_docs)]
#[derive(Debug, Default, Clone)]
pub struct MemoryBus;
