//! The integration tests of redstream-state, in one binary, against the memory backend and
//! private redis-servers started by the test kit.

// Tests unwrap and print (STYLE.md); clippy's allow-unwrap-in-tests and allow-print-in-tests
// cover `#[test]` functions only, not the helpers next to them.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod behaviour;
mod blocking;
mod cluster;
mod errors;
mod failures;
mod permissions;
mod redis;
mod scripts;
mod sentinel;
mod support;
