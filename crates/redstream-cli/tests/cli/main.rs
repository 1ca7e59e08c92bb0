//! The `redstream` operations commands, run as the built binary against private redis-servers
//! started by the test kit: what they print (tables and `--json`), what they change in Redis, and
//! how they fail (unreachable server, refused password, unknown stream, bad input).

// Tests unwrap (STYLE.md); clippy's allow-unwrap-in-tests covers `#[test]` functions only, not
// the helpers next to them.
#![allow(clippy::unwrap_used)]

mod acl;
mod bench;
mod connection;
mod dlq;
mod failures;
mod group;
mod help;
mod inspect;
mod migrate;
mod nodes;
mod publish;
mod redaction;
mod state;
mod support;
mod tail;
mod trim;
mod width;
