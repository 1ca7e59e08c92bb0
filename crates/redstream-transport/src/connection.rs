//! Connections: a shared, self-reconnecting [`ConnectionManager`] for commands, and dedicated
//! connections for blocking reads.
//!
//! A blocking `XREADGROUP ... BLOCK` holds its connection until it returns; on a multiplexed
//! connection every command pipelined behind it would wait too. So each subscription reads on a
//! connection of its own, whose response timeout is the block time plus the normal timeout.
//!
//! Both kinds come from one [`Client`], built with the certificates of
//! [`TransportOptions::tls`] for `rediss://` URLs, so every connection trusts the same CA.

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError};
use redstream_core::{Error, ErrorKind, RedactedUrl, Result};

use crate::config::{RedisConfig, TransportOptions};

/// Opens the client and the shared connection, and checks the server once.
pub(crate) async fn connect(
    config: &RedisConfig,
    options: &TransportOptions,
) -> Result<(Client, ConnectionManager)> {
    let target = RedactedUrl(&config.url).to_string();
    let client = redstream_core::open_client(&config.url, &options.tls)?;
    // RESP3, so a dropped connection is noticed and replaced at once (see core's `connection`).
    let manager_client = redstream_core::connection::resp3_client(&client, &config.url)?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.response_timeout))
        .set_number_of_retries(1);
    let mut manager = ConnectionManager::new_with_config(manager_client, manager_config)
        .await
        .map_err(|err| connect_error(&target, err))?;
    warn_if_streams_may_be_evicted(&mut manager, &target).await;
    Ok((client, manager))
}

/// A dedicated connection for blocking reads.
pub(crate) async fn blocking_connection(
    client: &Client,
    options: &TransportOptions,
    target: &str,
) -> Result<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.block_time + options.response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|err| connect_error(target, err))
}

/// A failed connection attempt. A rejected TLS certificate gets its hint from the core's
/// classification.
fn connect_error(target: &str, err: RedisError) -> Error {
    Error::from_redis("connect", target.to_owned(), err)
}

/// Streams evicted under memory pressure lose events silently: say so once, at connect.
async fn warn_if_streams_may_be_evicted(conn: &mut ConnectionManager, target: &str) {
    // A map over RESP3, an array of name and value over RESP2: both read as a map.
    let reply: redis::RedisResult<std::collections::HashMap<String, String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
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
