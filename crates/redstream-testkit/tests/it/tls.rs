//! TLS servers.

use std::time::Duration;

use redis::TlsCertificates;
use redstream_testkit::{Error, RedisServer};

fn install_crypto_provider() {
    // Several tests may race to install it; losing the race is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::test]
async fn tls_client_trusting_the_ca_connects() {
    install_crypto_provider();
    let server = RedisServer::builder()
        .tls(true)
        .password("tls-pw")
        .start()
        .await
        .unwrap();
    assert!(server.is_tls());
    assert!(server.url().starts_with("rediss://"), "{}", server.url());
    assert!(!server.url().contains("#insecure"));
    let pem = server.ca_cert_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        std::fs::read_to_string(server.ca_cert_path().unwrap()).unwrap(),
        pem
    );

    let client = redis::Client::build_with_tls(
        server.url(),
        TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.as_bytes().to_vec()),
        },
    )
    .unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    assert_eq!(
        crate::set_get(&mut con, "k", "over tls").await.unwrap(),
        "over tls"
    );
}

#[tokio::test]
async fn plain_connection_to_the_tls_port_fails() {
    let server = RedisServer::builder().tls(true).start().await.unwrap();
    let plain = redis::Client::open(format!("redis://127.0.0.1:{}", server.port())).unwrap();
    // The outer timeout only detects a hang.
    let attempt = tokio::time::timeout(Duration::from_secs(10), async {
        let mut con = plain.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut con).await
    })
    .await
    .expect("the plain-text attempt hung");
    assert!(attempt.is_err(), "plain text was accepted on the TLS port");
}

#[tokio::test]
async fn a_client_without_the_ca_is_rejected() {
    install_crypto_provider();
    let server = RedisServer::builder().tls(true).start().await.unwrap();
    let other = RedisServer::builder().tls(true).start().await.unwrap();
    // Trusting a different CA must not be enough.
    let client = redis::Client::build_with_tls(
        server.url(),
        TlsCertificates {
            client_tls: None,
            root_cert: Some(other.ca_cert_pem().unwrap().as_bytes().to_vec()),
        },
    )
    .unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("the TLS handshake hung");
    assert!(
        result.is_err(),
        "a certificate from an untrusted CA was accepted"
    );
}

#[tokio::test]
async fn tls_server_survives_restart() {
    install_crypto_provider();
    let server = RedisServer::builder()
        .tls(true)
        .appendonly(true)
        .start()
        .await
        .unwrap();
    let client = redis::Client::build_with_tls(
        server.url(),
        TlsCertificates {
            client_tls: None,
            root_cert: Some(server.ca_cert_pem().unwrap().as_bytes().to_vec()),
        },
    )
    .unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    crate::set_get(&mut con, "k", "kept").await.unwrap();

    server.kill().unwrap();
    server.restart().await.unwrap();

    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let value: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(value, "kept");
}

#[tokio::test]
async fn builtin_client_refuses_tls_servers() {
    let server = RedisServer::builder().tls(true).start().await.unwrap();
    assert!(matches!(server.client(), Err(Error::Unsupported(_))));
}
