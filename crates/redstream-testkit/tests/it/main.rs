//! Integration tests: every test starts its own real redis-server.
#![cfg(unix)] // redis-server, SIGSTOP and the pid checks are Unix-only.

mod auth;
mod chaos;
mod cluster;
mod lifecycle;
mod limits;
mod replica;
mod sentinel;
mod tls;
mod version;

use redis::aio::MultiplexedConnection;

/// `SET key value` then `GET key`.
async fn set_get(
    con: &mut MultiplexedConnection,
    key: &str,
    value: &str,
) -> redis::RedisResult<String> {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .exec_async(con)
        .await?;
    redis::cmd("GET").arg(key).query_async(con).await
}
