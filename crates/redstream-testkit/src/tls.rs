//! Throw-away certificates for TLS servers.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// The certificate files of a TLS server, written into its data directory.
pub(crate) struct TlsFiles {
    /// The self-signed CA that issued the server certificate.
    pub(crate) ca_cert_path: PathBuf,
    /// The CA certificate, PEM encoded.
    pub(crate) ca_cert_pem: String,
    /// The server certificate (SAN: `127.0.0.1`, `localhost`).
    pub(crate) cert_path: PathBuf,
    /// The server's private key.
    pub(crate) key_path: PathBuf,
}

/// Generates a CA and a server certificate signed by it, and writes both into `dir`.
pub(crate) fn generate(dir: &Path) -> Result<TlsFiles> {
    let tls_err = |err: rcgen::Error| Error::Tls(err.to_string());

    let mut ca_params = CertificateParams::new(Vec::new()).map_err(tls_err)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "redstream-testkit CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(tls_err)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .map_err(tls_err)?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "redstream-testkit server");
    server_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.use_authority_key_identifier_extension = true;
    let server_key = KeyPair::generate().map_err(tls_err)?;
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .map_err(tls_err)?;

    let files = TlsFiles {
        ca_cert_path: dir.join("ca.crt"),
        ca_cert_pem: ca_cert.pem(),
        cert_path: dir.join("server.crt"),
        key_path: dir.join("server.key"),
    };
    write(&files.ca_cert_path, &files.ca_cert_pem)?;
    write(&files.cert_path, &server_cert.pem())?;
    write(&files.key_path, &server_key.serialize_pem())?;
    Ok(files)
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).map_err(|err| Error::io(format!("writing {}", path.display()), err))
}
