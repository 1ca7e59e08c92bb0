//! Opening the redstream clients a command needs from the global options.

use redstream_core::TlsOptions;
use redstream_transport::{RedisConfig, RedisTransport, TransportOptions};

use crate::{CliError, CliResult, GlobalArgs};

/// The TLS settings of `--tls-ca-cert`, `--tls-client-cert` and `--tls-client-key`: the CA by
/// path (the clients read it), the client certificate and key read here, as PEM text.
fn tls(global: &GlobalArgs) -> CliResult<TlsOptions> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::io(format!("reading the {what} {}", path.display()), e))
    };
    let mut tls = TlsOptions {
        ca_cert_path: global.tls_ca_cert.clone(),
        ..TlsOptions::default()
    };
    match (&global.tls_client_cert, &global.tls_client_key) {
        (Some(cert), Some(key)) => {
            tls.client_cert_pem = Some(read(cert, "client certificate (--tls-client-cert)")?);
            tls.client_key_pem = Some(read(key, "client key (--tls-client-key)")?);
        }
        (None, None) => {}
        _ => {
            return Err(CliError::usage(
                "--tls-client-cert and --tls-client-key go together: give both or neither",
            ));
        }
    }
    Ok(tls)
}

/// Opens a transport for the global `--url`, `--prefix`, `--key-layout`, timeouts and TLS
/// options. It checks the connection with a PING, so an unreachable server or refused
/// credentials fail here with a clear error.
pub async fn transport(global: &GlobalArgs) -> CliResult<RedisTransport> {
    let config = RedisConfig {
        url: global.url.clone(),
        stream_prefix: global.prefix.clone(),
        ..RedisConfig::default()
    };
    let options = TransportOptions {
        // Not given: the transport's own choice (cluster on a cluster, plain elsewhere).
        key_layout: global.key_layout,
        ..TransportOptions::default()
    }
    .with_connect_timeout(global.connect_timeout)
    .with_response_timeout(global.response_timeout)
    .with_tls(tls(global)?);
    tracing::debug!(
        connect_timeout = ?global.connect_timeout,
        response_timeout = ?global.response_timeout,
        tls_ca_cert = ?global.tls_ca_cert,
        tls_client_cert = ?global.tls_client_cert,
        "connecting"
    );
    let transport = RedisTransport::with_options(config, options).await?;
    transport.ping().await?;
    Ok(transport)
}

/// Opens a state store on the global `--url` under `key_prefix` (in `layout`, or the store's
/// default for the server when `None`), with the global timeouts and
/// TLS options. Opening connects and checks the credentials, so an unreachable server or a
/// wrong password fails here.
pub async fn state(
    global: &GlobalArgs,
    key_prefix: &str,
    layout: Option<redstream_state::KeyLayout>,
) -> CliResult<redstream_state::StateStore> {
    let backend = redstream_state::StateBackend::redis(global.url.clone(), key_prefix);
    let mut config = redstream_state::StateConfig::new(backend);
    // Not given: the store's own choice (cluster on a cluster, plain elsewhere).
    if let Some(layout) = layout {
        config = config.with_key_layout(layout);
    }
    let config = config
        .with_connect_timeout(global.connect_timeout)
        .with_response_timeout(global.response_timeout)
        .with_tls(tls(global)?);
    Ok(redstream_state::StateStore::with_config(config).await?)
}
