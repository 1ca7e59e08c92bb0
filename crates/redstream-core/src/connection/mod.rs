//! Connections to Redis for every crate and the CLI: one way to say where Redis is
//! ([`ConnectionOptions`]), one way to connect ([`connect`]) whatever the topology, and the
//! rules every crate's connection code shares ([`resp3_client`], [`was_not_sent`]).
//!
//! Every crate's config embeds the connection fields instead of copying them:
//! [`ConnectionOptions`] where the config's URL is its own (the sink's), [`ConnectionSettings`]
//! (the same fields without `url`) where the URL lives elsewhere (the transport's
//! `RedisConfig::url`, the state store's backend). [`embed`] keeps files flat and refuses
//! unknown fields.
//!
//! # URL forms
//!
//! | URL | Topology |
//! |-----|----------|
//! | `redis://[user:password@]host[:6379][/db]` | [`Topology::Single`] |
//! | `rediss://...` (TLS) | [`Topology::Single`] |
//! | `redis+unix:///path/redis.sock[?db=0]`, `unix:///path/redis.sock` | [`Topology::Single`] |
//! | `redis-cluster://[user:password@]host1:6379,host2:6379` | [`Topology::Cluster`] |
//! | `rediss-cluster://...` (TLS) | [`Topology::Cluster`] |
//! | `redis-sentinel://[user:password@]s1:26379,s2:26379/mymaster[/db]` | [`Topology::Sentinel`] |
//! | `rediss-sentinel://...` (TLS to the sentinels and the data nodes) | [`Topology::Sentinel`] |
//!
//! The single-server forms are redis-rs's own. In the cluster and Sentinel forms, a host
//! without a port gets 6379 (cluster) or 26379 (Sentinel), IPv6 addresses are written in
//! brackets (`[::1]:26379`), and the user and password, percent-encoded, are the data nodes'.
//! Sentinels with a password of their own get it from
//! [`sentinel_password`](ConnectionOptions::sentinel_password) (and
//! [`sentinel_username`](ConnectionOptions::sentinel_username)); the master name may be given
//! in [`master_name`](ConnectionOptions::master_name) instead of the URL. A cluster has only
//! database 0. Cluster and Sentinel URLs take no query: timeouts and certificates are
//! fields of [`ConnectionOptions`].
//!
//! # What each topology guarantees
//!
//! - **Single**: one RESP3 multiplexed connection (`single.rs`), which does the job of
//!   redis-rs's `ConnectionManager` without its shared writes per command. Once it closes it
//!   is replaced before the next command is sent; a failed reconnection is tried once more
//!   about 100 ms later. Nothing follows a move of the server elsewhere.
//! - **Cluster**: redis-rs's async `ClusterConnection`. The cluster is discovered from the
//!   first seed that answers (one is enough; listing several survives the loss of one). Each
//!   command goes to the master of its key's slot; `MOVED` and `ASK` are followed and the slot
//!   map is refreshed when a node fails, a replica is promoted or a slot moves. Commands that
//!   name keys of several slots are refused by Redis (`CROSSSLOT`): keys that change together
//!   share a hash tag ([`keys::KeyLayout::Cluster`](crate::keys::KeyLayout)). A
//!   keyspace-wide command (`SCAN`) runs on each of
//!   [`cluster_masters`](Connection::cluster_masters) with
//!   [`query_node`](Connection::query_node).
//! - **Sentinel**: a RESP3 connection to the master the sentinels name, checked with `ROLE`.
//!   When the connection closes (the master died, or the sentinels demoted it and closed its
//!   clients) it is replaced, before the next command is sent, by asking the sentinels again;
//!   a command refused with `READONLY` (it reached a demoted master) was not run, and is sent
//!   again to the new master. The connection also listens to one sentinel at a time for
//!   `+switch-master` naming its master and moves as soon as the sentinels announce the new
//!   one, so a master that hangs or that only the sentinels cannot reach stops getting
//!   writes then, not when it is demoted. A process thus follows a failover without
//!   restarting. Until the sentinels have promoted a replica, calls fail with retryable
//!   connection errors. As with any Sentinel client, a write acknowledged by the old master
//!   but not yet replicated can be lost in a failover (the sink's `durability` waits for
//!   replicas for that reason). [Pinned](Connection::pinned) connections (for `WATCH`) do
//!   not listen: they are never replaced, by design.
//!
//! In every topology, commands are multiplexed on shared connections: a blocking command
//! (`XREADGROUP ... BLOCK`) goes to a [`dedicated`](Connection::dedicated) connection.
//!
//! ```no_run
//! # async fn demo() -> redstream_core::Result<()> {
//! use redstream_core::connection::{self, ConnectionOptions};
//!
//! let options = ConnectionOptions::new("redis-cluster://10.0.0.1:6379,10.0.0.2:6379");
//! let mut conn = connection::connect(&options).await?;
//! let () = redis::cmd("SET")
//!     .arg("myapp:counter")
//!     .arg(1)
//!     .query_async(&mut conn)
//!     .await
//!     .map_err(|err| redstream_core::Error::from_redis("SET", "myapp:counter", err))?;
//! # Ok(())
//! # }
//! ```

mod capabilities;
mod cluster;
mod connect;
pub mod embed;
mod endpoint;
mod options;
mod sentinel;
mod single;

use redis::{Client, ProtocolVersion, RedisError};

pub use capabilities::{Capabilities, CommandDocs};
pub use connect::{Connection, connect};
pub use endpoint::{NodeAddress, Topology};
pub use options::{ConnectionOptions, ConnectionSettings};

use crate::{Error, RedactedUrl, Result};

/// `client` speaking RESP3, as the single-server connection uses it (and as redis-rs's
/// `ConnectionManager` should be given it).
///
/// Over RESP3, redis-rs reports that a connection dropped as soon as its reader sees the socket
/// close (a disconnection push), so the connection is replaced before the next command. Over
/// RESP2 that is learnt from the next command, which fails with `broken pipe` after a restart however long the server has
/// been back, and that failure cannot be told from one where the command did reach the server.
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) if redis-rs refuses the
/// connection settings (it accepted them once already, so in practice never). `url` names the
/// server in the error, redacted.
pub fn resp3_client(client: &Client, url: &str) -> Result<Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(settings))
        .map_err(|err| Error::from_redis("open client", RedactedUrl(url).to_string(), err))
}

/// Whether `err` is certain to have come before the command left this process: no connection
/// could be made (refused). Such a command can be sent again without any risk of running twice.
/// Any other connection error (reset, broken pipe, timeout) may have come after the server ran
/// the command.
#[must_use]
pub fn was_not_sent(err: &RedisError) -> bool {
    err.is_connection_refusal()
}

/// `err`, from running `operation` on `target`, as redstream's [`Error`]; when it
/// [was not sent](was_not_sent), marked so with [`nothing_was_sent`]. Every crate's connection
/// code reports a failed command through this one function.
pub fn command_error(operation: &'static str, target: impl Into<String>, err: RedisError) -> Error {
    let not_sent = was_not_sent(&err);
    let target = target.into();
    let err = Error::from_redis(operation, target.clone(), err);
    if not_sent {
        nothing_was_sent(err, operation, target)
    } else {
        err
    }
}

/// `err`, of the same kind, with "(cannot connect: nothing was sent)" at the end of its
/// message: for a command that certainly never left this process (no connection could be
/// made), so that a write refused at connect is never reported as one that may have been
/// applied.
pub fn nothing_was_sent(err: Error, operation: &'static str, target: impl Into<String>) -> Error {
    Error::backend(
        err.kind(),
        operation,
        target.into(),
        format!("{err} (cannot connect: nothing was sent)"),
    )
}
