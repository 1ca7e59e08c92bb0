//! The integration tests of redstream-core, in one binary: the conformance suite run against
//! `MemoryBus`, deliberately broken buses that every case must catch, the behaviour specific to
//! the in-memory bus, key naming, the wire format's timestamps on real servers, and connections
//! to a single server, a cluster and a Sentinel group.

// Tests unwrap (STYLE.md); clippy's allow-unwrap-in-tests covers `#[test]` functions only, not
// the helpers next to them.
#![allow(clippy::unwrap_used)]

mod atomic;
mod capabilities;
mod conformance;
mod connection;
mod faults;
mod keys;
mod memory;
mod wire;
