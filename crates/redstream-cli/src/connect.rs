//! Opening the redstream clients a command needs from the global options.

use redstream_transport::{RedisConfig, RedisTransport, TransportOptions};

use crate::{CliResult, GlobalArgs};

/// Opens a transport for the global `--url`, `--prefix` and `--key-layout`. It checks the
/// connection with a PING, so an unreachable server or refused credentials fail here with a
/// clear error.
pub async fn transport(global: &GlobalArgs) -> CliResult<RedisTransport> {
    let config = RedisConfig {
        url: global.url.clone(),
        stream_prefix: global.prefix.clone(),
        ..RedisConfig::default()
    };
    let options = TransportOptions::default().with_key_layout(global.key_layout);
    let transport = RedisTransport::with_options(config, options).await?;
    transport.ping().await?;
    Ok(transport)
}

/// Opens a state store on the global `--url` under `key_prefix`. Opening connects and checks
/// the credentials, so an unreachable server or a wrong password fails here.
pub async fn state(
    global: &GlobalArgs,
    key_prefix: &str,
    layout: redstream_state::KeyLayout,
) -> CliResult<redstream_state::StateStore> {
    let backend = redstream_state::StateBackend::redis(global.url.clone(), key_prefix);
    let config = redstream_state::StateConfig::new(backend).with_key_layout(layout);
    Ok(redstream_state::StateStore::with_config(config).await?)
}
