//! What every crate's connection code shares: the client for a self-reconnecting shared
//! connection, and which failures are certain not to have reached the server.

use redis::{Client, ProtocolVersion, RedisError};

use crate::{Error, RedactedUrl, Result};

/// `client` speaking RESP3, for a `ConnectionManager`.
///
/// Over RESP3, redis-rs's `ConnectionManager` learns that its connection dropped as soon as its
/// reader sees the socket close, and starts reconnecting then. Over RESP2 it learns it from the
/// next command, which fails with `broken pipe` after a restart however long the server has
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
