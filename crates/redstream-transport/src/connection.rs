//! Connections, through core's [`redstream_core::connection`]: one shared, self-reconnecting
//! [`Connection`] for commands, and dedicated connections for blocking reads.
//!
//! The URL may name a single server (`redis://`, `rediss://`, `redis+unix://`), a cluster
//! (`redis-cluster://h1:6379,h2:6379`) or a Sentinel-managed master
//! (`redis-sentinel://s1:26379,s2:26379/mymaster`); core's [`connect`] picks the client, and
//! the shared connection follows failovers and slot moves by itself.
//!
//! A blocking `XREADGROUP ... BLOCK` holds its connection until it returns; on a multiplexed
//! connection every command pipelined behind it would wait too. So each blocking read runs on a
//! [`dedicated`](Connection::dedicated) connection of its own, whose response timeout is the
//! block time plus the normal timeout. On a cluster, a subscription groups its streams by slot
//! and runs one blocking read per group, each on its own dedicated connection (see
//! `consumer::read`).

use redstream_core::connection::{
    Connection, ConnectionOptions, Topology, connect as core_connect,
};
use redstream_core::keys::KeyLayout;
use redstream_core::{Error, ErrorKind, Result};

use crate::config::{RedisConfig, TransportOptions};

/// The core connection options the transport's two configurations describe.
pub(crate) fn connection_options(
    config: &RedisConfig,
    options: &TransportOptions,
) -> ConnectionOptions {
    options.connection_options(config.url.clone())
}

/// Opens the shared connection, checks the server once, and picks the key layout for its
/// topology (see [`TransportOptions::key_layout_for`]).
pub(crate) async fn connect(
    config: &RedisConfig,
    options: &TransportOptions,
) -> Result<(Connection, KeyLayout)> {
    let conn_options = connection_options(config, options);
    // Checked before connecting, so that a plain layout chosen for a cluster fails at once.
    let layout = options.key_layout_for(conn_options.topology()?)?;
    let conn = core_connect(&conn_options).await?;
    if conn.topology() != Topology::Cluster {
        warn_if_streams_may_be_evicted(&conn).await;
    }
    Ok((conn, layout))
}

/// A dedicated connection for blocking reads: its own socket (its own connection to each node
/// on a cluster), following failovers like the shared one.
pub(crate) async fn blocking_connection(
    conn: &Connection,
    options: &TransportOptions,
) -> Result<Connection> {
    conn.dedicated(
        options
            .block_time
            .saturating_add(options.connection.response_timeout),
    )
    .await
}

/// Streams evicted under memory pressure lose events silently: say so once, at connect.
async fn warn_if_streams_may_be_evicted(conn: &Connection) {
    let target = conn.target().to_owned();
    let mut conn = conn.clone();
    // A map over RESP3, an array of name and value over RESP2: both read as a map.
    let reply: redis::RedisResult<std::collections::HashMap<String, String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut conn)
        .await;
    match reply {
        Ok(pair) => {
            if let Some(policy) = pair
                .get("maxmemory-policy")
                .filter(|p| p.starts_with("allkeys-"))
            {
                tracing::warn!(
                    server = %target,
                    maxmemory_policy = %policy,
                    "maxmemory-policy lets Redis evict stream keys under memory pressure, losing \
                     events; use noeviction (or volatile-*) for servers that hold streams"
                );
            }
        }
        Err(err) => {
            let kind = redstream_core::classify_redis_error(&err);
            if kind == ErrorKind::PermissionDenied {
                tracing::debug!(server = %target, "CONFIG GET not permitted; eviction policy not checked");
            } else {
                tracing::debug!(server = %target, error = %err, "could not read maxmemory-policy");
            }
        }
    }
}

/// The error of an operation that needs keys of one slot on a cluster.
pub(crate) fn not_on_a_cluster(op: &str, target: &str, what: &str) -> Error {
    Error::backend(
        ErrorKind::InvalidInput,
        op.to_owned(),
        target.to_owned(),
        what.to_owned(),
    )
}

/// Checks that `keys` are all in one cluster slot; otherwise the error names two of them in
/// different slots, then `fix`.
pub(crate) fn one_slot<'k>(
    op: &str,
    target: &str,
    mut keys: impl Iterator<Item = &'k str>,
    fix: &str,
) -> Result<()> {
    let Some(first) = keys.next() else {
        return Ok(());
    };
    let slot = redstream_core::keys::slot(first.as_bytes());
    if let Some(other) = keys.find(|k| redstream_core::keys::slot(k.as_bytes()) != slot) {
        return Err(not_on_a_cluster(
            op,
            target,
            &format!("{first} and {other} are in different slots of the Redis Cluster: {fix}"),
        ));
    }
    Ok(())
}
