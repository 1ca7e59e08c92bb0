//! `rediss://` against the test kit's TLS servers, whose certificates are signed by a CA of
//! their own that no system trusts: the CA given in `TransportOptions::tls`, mutual TLS, and
//! the ways a TLS connection is refused.
//!
//! Nothing here installs a rustls `CryptoProvider`: the transport must work without one.

use std::path::PathBuf;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use redstream_core::{ErrorKind, Event};
use redstream_testkit::RedisServer;
use redstream_transport::{Error, RedisConfig, RedisTransport, TransportOptions};
use tempfile::TempDir;
use tokio::sync::mpsc;

use crate::support::{capture_logs, event, fast, number, recv_n, unique, within};

fn config(url: String, prefix: &str) -> RedisConfig {
    RedisConfig::default()
        .with_url(url)
        .with_stream_prefix(prefix)
        .with_consumer_group("tls")
        .with_consumer_name(unique("consumer"))
}

/// Short timeouts: a refused connection must fail fast, not wait for the defaults.
fn impatient() -> TransportOptions {
    fast()
        .with_connect_timeout(Duration::from_secs(2))
        .with_response_timeout(Duration::from_secs(2))
}

/// Connects and expects a failure; a hang fails the test.
async fn refused(config: RedisConfig, options: TransportOptions, what: &str) -> Error {
    capture_logs();
    let result = within(what, RedisTransport::with_options(config, options)).await;
    match result {
        Ok(_) => panic!("{what}: the connection was accepted"),
        Err(err) => err,
    }
}

/// Events published over TLS by a transport given the CA as PEM text reach a subscriber given
/// it as a file: both the shared connection and the subscriber's blocking-read connection
/// trust the private CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_subscribe_over_tls_with_a_private_ca() {
    const EVENTS: usize = 5;
    capture_logs();
    let server = RedisServer::builder().tls(true).start().await.unwrap();
    assert!(server.url().starts_with("rediss://"), "{}", server.url());
    let prefix = unique("tls");

    let mut by_path = fast();
    by_path.connection.tls.ca_cert_path = Some(server.ca_cert_path().unwrap().to_path_buf());
    let consumer = RedisTransport::with_options(config(server.url(), &prefix), by_path)
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = consumer
        .subscribe(vec!["secure.thing".to_owned()], move |event: Event| {
            let _ = tx.send(number(&event));
            async { Ok(()) }
        })
        .await
        .unwrap();

    let mut by_pem = fast();
    by_pem.connection.tls.ca_cert_pem = Some(server.ca_cert_pem().unwrap().to_owned());
    let publisher = RedisTransport::with_options(config(server.url(), &prefix), by_pem)
        .await
        .unwrap();
    for n in 0..EVENTS {
        publisher.publish(event("secure.thing", n)).await.unwrap();
    }

    let mut handled = recv_n(&mut rx, EVENTS, "events over TLS").await;
    handled.sort_unstable();
    assert_eq!(handled, (0..EVENTS).collect::<Vec<_>>());
    within("unsubscribe", consumer.unsubscribe(&handle))
        .await
        .unwrap();
}

/// A plain-text client on the TLS port: the server drops it and `with_options` fails with a
/// transient connection error instead of hanging.
#[tokio::test]
async fn plain_text_url_to_a_tls_server_fails_fast() {
    let server = RedisServer::builder().tls(true).start().await.unwrap();
    let url = format!("redis://127.0.0.1:{}", server.port());
    let err = refused(
        config(url, &unique("tls-plain")),
        impatient(),
        "a plain-text connection to the TLS port",
    )
    .await;
    println!("plain text to the TLS port: kind {:?}: {err}", err.kind());
    assert!(
        matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout),
        "{:?}: {err}",
        err.kind()
    );
    assert!(err.to_string().contains("connect"), "{err}");
}

/// Without the CA (default options: the system's roots) the server's certificate is not
/// trusted, and the error says which option to set.
///
/// The kind is `Auth`, not retryable: a certificate that is not trusted stays untrusted until
/// the configuration changes (the core's classification reads rustls's message, which redis-rs
/// passes on as an `io::Error`).
#[tokio::test]
async fn tls_without_the_ca_is_refused_with_a_certificate_error() {
    let server = RedisServer::builder().tls(true).start().await.unwrap();
    let err = refused(
        config(server.url(), &unique("tls-noca")),
        impatient(),
        "a TLS connection without the CA",
    )
    .await;
    println!("TLS without the CA: kind {:?}: {err}", err.kind());
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    assert!(err.to_string().contains("ca_cert_pem"), "{err}");

    // Trusting another CA is no better.
    let other = RedisServer::builder().tls(true).start().await.unwrap();
    let mut wrong = impatient();
    wrong.connection.tls.ca_cert_pem = Some(other.ca_cert_pem().unwrap().to_owned());
    let err = refused(
        config(server.url(), &unique("tls-wrongca")),
        wrong,
        "a TLS connection trusting another CA",
    )
    .await;
    println!("TLS trusting another CA: kind {:?}: {err}", err.kind());
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    assert!(err.to_string().contains("ca_cert_pem"), "{err}");
}

/// Certificates given with a URL that is not `rediss://` are refused before anything is sent,
/// naming the field; so are unreadable or malformed certificate settings.
#[tokio::test]
async fn misplaced_or_malformed_tls_options_are_rejected_at_with_options() {
    let server = RedisServer::start().await.unwrap();
    let tls_server = RedisServer::builder().tls(true).start().await.unwrap();
    let pem = tls_server.ca_cert_pem().unwrap().to_owned();

    let mut ca_for_plain = impatient();
    ca_for_plain.connection.tls.ca_cert_pem = Some(pem.clone());
    let err = refused(
        config(server.url(), &unique("tls-misplaced")),
        ca_for_plain,
        "a CA for a redis:// URL",
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("tls.ca_cert_pem"), "{err}");
    assert!(err.to_string().contains("rediss://"), "{err}");

    let missing = dir_that_does_not_exist().join("ca.pem");
    let mut unreadable = impatient();
    unreadable.connection.tls.ca_cert_path = Some(missing.clone());
    let err = refused(
        config(tls_server.url(), &unique("tls-unreadable")),
        unreadable,
        "an unreadable CA file",
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("tls.ca_cert_path"), "{err}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let mut garbage = impatient();
    garbage.connection.tls.ca_cert_path = Some(not_pem);
    let err = refused(
        config(tls_server.url(), &unique("tls-garbage")),
        garbage,
        "a CA file without a certificate",
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("tls.ca_cert_path"), "{err}");

    let mut both = impatient();
    both.connection.tls.ca_cert_pem = Some(pem.clone());
    both.connection.tls.ca_cert_path = Some(tls_server.ca_cert_path().unwrap().to_path_buf());
    let err = refused(
        config(tls_server.url(), &unique("tls-both")),
        both,
        "a CA given twice",
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("tls.ca_cert_path"), "{err}");

    let mut half = impatient();
    half.connection.tls.ca_cert_pem = Some(pem);
    half.connection.tls.client_cert_pem = Some(tls_server.ca_cert_pem().unwrap().to_owned());
    let err = refused(
        config(tls_server.url(), &unique("tls-half")),
        half,
        "a client certificate without its key",
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("tls.client_key_pem"), "{err}");
}

/// A server that requires client certificates (`tls-auth-clients yes`) accepts a transport that
/// presents one signed by the CA it trusts, and refuses one that presents none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() {
    capture_logs();
    let client_ca = ClientCa::generate();
    let server = RedisServer::builder()
        .tls(true)
        .config("tls-auth-clients", "yes")
        .config(
            "tls-ca-cert-file",
            format!("\"{}\"", client_ca.cert_path.display()),
        )
        .start()
        .await
        .unwrap();
    let prefix = unique("mtls");

    let mut with_cert = impatient();
    with_cert.connection.tls.ca_cert_pem = Some(server.ca_cert_pem().unwrap().to_owned());
    with_cert.connection.tls.client_cert_pem = Some(client_ca.client_cert_pem.clone());
    with_cert.connection.tls.client_key_pem = Some(client_ca.client_key_pem.clone());
    let debug = format!("{with_cert:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    let transport = RedisTransport::with_options(config(server.url(), &prefix), with_cert)
        .await
        .unwrap();
    let id = transport.publish(event("mtls.thing", 1)).await.unwrap();
    assert!(!id.is_empty());

    let mut without_cert = impatient();
    without_cert.connection.tls.ca_cert_pem = Some(server.ca_cert_pem().unwrap().to_owned());
    let err = refused(
        config(server.url(), &prefix),
        without_cert,
        "a TLS connection without the required client certificate",
    )
    .await;
    println!(
        "mutual TLS without a client certificate: kind {:?}: {err}",
        err.kind()
    );
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("client_cert_pem"), "{err}");
}

/// A CA for client certificates, written to a file for the server, and one client certificate
/// signed by it.
struct ClientCa {
    _dir: TempDir,
    cert_path: PathBuf,
    client_cert_pem: String,
    client_key_pem: String,
}

impl ClientCa {
    fn generate() -> Self {
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "redstream test client CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let mut client_params = CertificateParams::new(Vec::new()).unwrap();
        client_params
            .distinguished_name
            .push(DnType::CommonName, "redstream test client");
        client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        client_params.use_authority_key_identifier_extension = true;
        let client_key = KeyPair::generate().unwrap();
        let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let cert_path = dir.path().join("client-ca.pem");
        std::fs::write(&cert_path, ca_cert.pem()).unwrap();
        Self {
            _dir: dir,
            cert_path,
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }
}

/// A path under the system's temp dir that names nothing.
fn dir_that_does_not_exist() -> PathBuf {
    let path = std::env::temp_dir().join(unique("redstream-no-such-dir"));
    assert!(!path.exists(), "{}", path.display());
    path
}
