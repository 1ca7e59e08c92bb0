//! Connections: a shared, self-reconnecting [`ConnectionManager`] for commands, and dedicated
//! connections for blocking reads.
//!
//! A blocking `XREADGROUP ... BLOCK` holds its connection until it returns; on a multiplexed
//! connection every command pipelined behind it would wait too. So each subscription reads on a
//! connection of its own, whose response timeout is the block time plus the normal timeout.
//!
//! Both kinds come from one [`Client`], built with the certificates of
//! [`TransportOptions::tls`] for `rediss://` URLs, so every connection trusts the same CA.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;

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
    let client = open_client(config, options, &target)?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.response_timeout))
        .set_number_of_retries(1);
    let mut manager = ConnectionManager::new_with_config(client.clone(), manager_config)
        .await
        .map_err(|err| connect_error(&target, err))?;
    warn_if_streams_may_be_evicted(&mut manager, &target).await;
    Ok((client, manager))
}

/// The client for `config.url`, with the certificates of `options.tls` when any is set.
fn open_client(config: &RedisConfig, options: &TransportOptions, target: &str) -> Result<Client> {
    let certificates = options.tls.certificates(&config.url)?;
    if config.url.starts_with("rediss://") {
        ensure_crypto_provider();
    }
    let client = match certificates {
        Some(certificates) => Client::build_with_tls(config.url.as_str(), certificates),
        None => Client::open(config.url.as_str()),
    };
    client.map_err(|err| Error::from_redis("open client", target.to_owned(), err))
}

/// Makes sure rustls has a process-level crypto provider before the first TLS handshake.
///
/// redis-rs builds its TLS configuration with `rustls::ClientConfig::builder()`, which panics
/// when no provider is installed and the rustls features do not name exactly one. Ours enable
/// `ring`, but another crate in the application may enable `aws-lc-rs` too, which makes the
/// choice ambiguous. So: if the application installed a provider, it is used; otherwise `ring`'s
/// is installed. Losing a race with another installer is fine: a provider is installed either way.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
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

/// A failed connection attempt, with a hint on the TLS options when the TLS handshake failed.
///
/// The kind is the usual classification's: redis-rs reports a rejected certificate as an I/O
/// error, so it is a (retryable) `Connection` error like a refused or reset connection. Only the
/// message is added to here.
fn connect_error(target: &str, err: RedisError) -> Error {
    let hint = tls_failure(&err).and_then(tls_hint);
    let mut error = Error::from_redis("connect", target.to_owned(), err);
    if let (Some(hint), Error::Backend { message, .. }) = (hint, &mut error) {
        message.push_str(hint);
    }
    error
}

/// The rustls error behind `err`, if any: redis-rs keeps it inside an `io::Error`, itself in an
/// `Arc`, and `io::Error::source` skips its payload, so the chain is walked by hand.
fn tls_failure<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = err.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
        return tls_failure(inner);
    }
    if let Some(inner) = err.downcast_ref::<Arc<dyn StdError + Send + Sync>>() {
        return tls_failure(&**inner);
    }
    err.source().and_then(tls_failure)
}

fn tls_hint(err: &rustls::Error) -> Option<&'static str> {
    use rustls::AlertDescription as Alert;
    match err {
        rustls::Error::InvalidCertificate(_) => Some(
            " (the server's certificate was rejected: if a private CA signed it, give that CA in \
             TransportOptions::tls, field ca_cert_pem or ca_cert_path; the certificate must also \
             name the host of the URL)",
        ),
        rustls::Error::AlertReceived(
            Alert::CertificateRequired
            | Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::CertificateExpired
            | Alert::CertificateRevoked
            | Alert::UnsupportedCertificate
            | Alert::AccessDenied,
        ) => Some(
            " (the server requires a client certificate, or rejected this one: set \
             TransportOptions::tls, fields client_cert_pem and client_key_pem, to a certificate \
             signed by a CA the server trusts)",
        ),
        _ => None,
    }
}

/// Streams evicted under memory pressure lose events silently: say so once, at connect.
async fn warn_if_streams_may_be_evicted(conn: &mut ConnectionManager, target: &str) {
    let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await;
    match reply {
        Ok(pair) => {
            if let Some(policy) = pair.get(1).filter(|p| p.starts_with("allkeys-")) {
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
