//! The integration tests of redstream-transport, in one binary, against private redis-servers
//! started by the test kit.

// Tests unwrap and print (STYLE.md); clippy's allow-unwrap-in-tests and allow-print-in-tests
// cover `#[test]` functions only, not the helpers next to them.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod admin;
mod cluster;
mod conformance;
mod consumer;
mod dlq;
mod failures;
mod fault_suite;
mod inspect;
mod least_privilege;
mod metrics;
mod on_cluster;
mod on_sentinel;
mod operator;
mod oversized;
mod publisher;
mod raw;
mod recovery;
mod redelivery;
mod refused;
mod stopped_master;
mod streams;
mod support;
mod tls;
#[cfg(feature = "opentelemetry")]
mod trace_context;
