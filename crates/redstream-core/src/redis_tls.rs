//! TLS for every Redis crate (feature `redis`): [`TlsOptions`], [`open_client`], and the
//! recognition of rejected certificates used by the error classification.
//!
//! Written once here so that the transport, the state store and the sink accept the same TLS
//! settings, open clients the same way and explain a rejected certificate the same way.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redis::{Client, RedisError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::redact::RedactedUrl;

/// Certificates for connecting with `rediss://`.
///
/// With every field unset (the default), a `rediss://` connection trusts the system's root
/// certificates, which suits servers with publicly trusted certificates. For a server whose
/// certificate is signed by a private CA, give that CA with [`ca_cert_pem`](Self::ca_cert_pem)
/// or [`ca_cert_path`](Self::ca_cert_path): it then replaces the system roots. For servers that
/// require client certificates (`tls-auth-clients yes`), give
/// [`client_cert_pem`](Self::client_cert_pem) and [`client_key_pem`](Self::client_key_pem).
///
/// Setting any field with a URL that is not a TLS URL (`rediss://`, `rediss-cluster://`,
/// `rediss-sentinel://`) is an error: certificates given for a
/// plain-text connection would silently protect nothing.
///
/// TLS is rustls with the `ring` crypto provider. If the process has not installed a rustls
/// `CryptoProvider` by the time a client is first opened over TLS, [`open_client`] installs
/// `ring`'s as the process default; an application that wants another one (`aws-lc-rs`, FIPS)
/// installs it before connecting.
///
/// `Debug` shows whether a client key is set, never the key.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsOptions {
    /// The PEM text of the CA certificate(s) that signed the server's certificate.
    pub ca_cert_pem: Option<String>,
    /// A PEM file holding the CA certificate(s), read once when the client is opened (when the
    /// transport or the store is created). Set either this or `ca_cert_pem`, not both.
    pub ca_cert_path: Option<PathBuf>,
    /// The PEM text of this client's certificate chain, for mutual TLS. Needs `client_key_pem`.
    pub client_cert_pem: Option<String>,
    /// The PEM text of this client's private key, for mutual TLS. Needs `client_cert_pem`.
    pub client_key_pem: Option<String>,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let Self {
            ca_cert_pem,
            ca_cert_path,
            client_cert_pem,
            client_key_pem,
        } = self;
        f.debug_struct("TlsOptions")
            .field("ca_cert_pem", &ca_cert_pem.as_ref().map(|_| "<pem>"))
            .field("ca_cert_path", ca_cert_path)
            .field(
                "client_cert_pem",
                &client_cert_pem.as_ref().map(|_| "<pem>"),
            )
            .field(
                "client_key_pem",
                &client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl TlsOptions {
    /// Trusts the CA certificate(s) in `pem`.
    #[must_use]
    pub fn with_ca_cert_pem(mut self, pem: impl Into<String>) -> Self {
        self.ca_cert_pem = Some(pem.into());
        self
    }

    /// Trusts the CA certificate(s) in the PEM file at `path`.
    #[must_use]
    pub fn with_ca_cert_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert_path = Some(path.into());
        self
    }

    /// Presents `cert_pem` (a certificate chain) with the private key `key_pem`, for mutual TLS.
    #[must_use]
    pub fn with_client_cert(
        mut self,
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> Self {
        self.client_cert_pem = Some(cert_pem.into());
        self.client_key_pem = Some(key_pem.into());
        self
    }

    fn first_set_field(&self) -> Option<&'static str> {
        [
            ("tls.ca_cert_pem", self.ca_cert_pem.is_some()),
            ("tls.ca_cert_path", self.ca_cert_path.is_some()),
            ("tls.client_cert_pem", self.client_cert_pem.is_some()),
            ("tls.client_key_pem", self.client_key_pem.is_some()),
        ]
        .into_iter()
        .find_map(|(name, set)| set.then_some(name))
    }

    /// Checks the fields that can be checked without the URL or the file system: no two ways of
    /// giving the CA, a client certificate only with its key, and PEM text that parses.
    pub fn validate(&self) -> Result<()> {
        if self.ca_cert_pem.is_some() && self.ca_cert_path.is_some() {
            return Err(Error::invalid_input(
                "config field tls.ca_cert_path",
                "is set together with tls.ca_cert_pem; set only one of them",
            ));
        }
        match (&self.client_cert_pem, &self.client_key_pem) {
            (Some(_), None) => {
                return Err(Error::invalid_input(
                    "config field tls.client_key_pem",
                    "is not set, but tls.client_cert_pem is; mutual TLS needs both",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::invalid_input(
                    "config field tls.client_cert_pem",
                    "is not set, but tls.client_key_pem is; mutual TLS needs both",
                ));
            }
            _ => {}
        }
        if let Some(pem) = &self.ca_cert_pem {
            check_certificates("config field tls.ca_cert_pem", pem.as_bytes())?;
        }
        if let Some(pem) = &self.client_cert_pem {
            check_certificates("config field tls.client_cert_pem", pem.as_bytes())?;
        }
        if let Some(pem) = &self.client_key_pem {
            // The parser's message is not echoed: nothing about a key belongs in an error.
            PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
                Error::invalid_input(
                    "config field tls.client_key_pem",
                    "holds no PEM private key (expected a -----BEGIN PRIVATE KEY----- section, \
                     or an RSA or EC one)",
                )
            })?;
        }
        Ok(())
    }

    /// [`validate`](Self::validate), and that no field is set unless `url` is a TLS URL
    /// (`rediss://`, `rediss-cluster://`, `rediss-sentinel://`).
    pub fn validate_for_url(&self, url: &str) -> Result<()> {
        self.validate()?;
        self.check_scheme(url)
    }

    /// Certificates given for a plain-text connection would silently protect nothing.
    fn check_scheme(&self, url: &str) -> Result<()> {
        match self.first_set_field() {
            Some(field) if !is_tls_url(url) => Err(Error::invalid_input(
                format!("config field {field}"),
                format!(
                    "is set, but the URL ({}) is not rediss:// (nor rediss-cluster:// or \
                     rediss-sentinel://); certificates apply only to TLS connections: use a \
                     rediss:// URL, or unset the tls options",
                    RedactedUrl(url)
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The certificates to build a TLS client with, or `None` when no field is set. Reads
    /// `ca_cert_path`. Fails when a field is set but `url` is not a TLS URL (`rediss://`,
    /// `rediss-cluster://`, `rediss-sentinel://`).
    pub fn certificates(&self, url: &str) -> Result<Option<redis::TlsCertificates>> {
        if self.first_set_field().is_none() {
            return Ok(None);
        }
        self.check_scheme(url)?;
        let root_cert = match (&self.ca_cert_pem, &self.ca_cert_path) {
            (Some(pem), _) => Some(pem.clone().into_bytes()),
            (None, Some(path)) => Some(read_ca_file(path)?),
            (None, None) => None,
        };
        let client_tls = self
            .client_cert_pem
            .as_ref()
            .zip(self.client_key_pem.as_ref())
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone().into_bytes(),
                client_key: key.clone().into_bytes(),
            });
        Ok(Some(redis::TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

/// Whether `url` asks for TLS: `rediss://`, `rediss-cluster://` or `rediss-sentinel://`.
pub(crate) fn is_tls_url(url: &str) -> bool {
    ["rediss://", "rediss-cluster://", "rediss-sentinel://"]
        .iter()
        .any(|scheme| url.starts_with(scheme))
}

/// Reads and checks the CA file named by `tls.ca_cert_path`.
fn read_ca_file(path: &Path) -> Result<Vec<u8>> {
    let what = || format!("config field tls.ca_cert_path ({})", path.display());
    let pem = std::fs::read(path).map_err(|err| {
        Error::invalid_input(
            what(),
            format!("cannot be read: {err}; it must name a readable PEM file"),
        )
    })?;
    check_certificates(&what(), &pem)?;
    Ok(pem)
}

/// At least one certificate, and every `CERTIFICATE` section well formed.
fn check_certificates(what: &str, pem: &[u8]) -> Result<()> {
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|err| {
            Error::invalid_input(what.to_owned(), format!("is not valid PEM: {err}"))
        })?;
        found += 1;
    }
    if found == 0 {
        return Err(Error::invalid_input(
            what.to_owned(),
            "holds no certificate (expected a -----BEGIN CERTIFICATE----- section)",
        ));
    }
    Ok(())
}

/// Opens a redis-rs client for `url`, with the certificates of `tls` when any is set.
///
/// Fails with [`InvalidInput`](crate::ErrorKind::InvalidInput) naming the field when a TLS
/// option is set for a URL that is not `rediss://`, or when `ca_cert_path` cannot be read; the
/// URL in messages is redacted. For `rediss://` URLs it makes sure rustls has a crypto provider.
pub fn open_client(url: &str, tls: &TlsOptions) -> Result<Client> {
    let certificates = tls.certificates(url)?;
    if url.starts_with("rediss://") {
        ensure_crypto_provider();
    }
    let client = match certificates {
        Some(certificates) => Client::build_with_tls(url, certificates),
        None => Client::open(url),
    };
    client.map_err(|err| Error::from_redis("open client", RedactedUrl(url).to_string(), err))
}

/// Makes sure rustls has a process-level crypto provider before the first TLS handshake.
/// Called before any client for a TLS URL is built (here and in `connection`).
///
/// redis-rs builds its TLS configuration with `rustls::ClientConfig::builder()`, which panics
/// when no provider is installed and the rustls features do not name exactly one. Ours enable
/// `ring`, but another crate in the application may enable `aws-lc-rs` too, which makes the
/// choice ambiguous. So: if the application installed a provider, it is used; otherwise `ring`'s
/// is installed. Losing a race with another installer is fine: a provider is installed either way.
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
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

/// When the TLS handshake failed on a certificate (the server's was not trusted, or the server
/// refused or required the client's), what to do about it. `None` for every other error.
///
/// Such failures stay until the configuration changes, so the classification makes them
/// [`Auth`](crate::ErrorKind::Auth) errors, not retryable connection errors.
pub(crate) fn certificate_rejection_hint(err: &RedisError) -> Option<&'static str> {
    use rustls::AlertDescription as Alert;
    match tls_failure(err)? {
        rustls::Error::InvalidCertificate(_) => Some(
            "the server's certificate was rejected: if a private CA signed it, give that CA in \
             the TLS options, field ca_cert_pem or ca_cert_path; the certificate must also name \
             the host of the URL",
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
            "the server requires a client certificate, or rejected this one: set the TLS \
             options' client_cert_pem and client_key_pem to a certificate signed by a CA the \
             server trusts",
        ),
        _ => None,
    }
}
