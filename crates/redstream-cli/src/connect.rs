//! Opening the redstream clients a command needs from the global options.

use redstream_transport::{RedisConfig, RedisTransport};

use crate::{CliResult, GlobalArgs};

/// Opens a transport for the global `--url` and `--prefix`. It checks the connection with a
/// PING, so an unreachable server or refused credentials fail here with a clear error.
pub async fn transport(global: &GlobalArgs) -> CliResult<RedisTransport> {
    let config = RedisConfig {
        url: global.url.clone(),
        stream_prefix: global.prefix.clone(),
        ..RedisConfig::default()
    };
    let transport = RedisTransport::new(config).await?;
    transport.ping().await?;
    Ok(transport)
}
