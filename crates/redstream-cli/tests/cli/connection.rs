//! The global connection options: `--tls-ca-cert` (and the client certificate pair),
//! `--connect-timeout` and `--response-timeout`, through the transport's commands and the state
//! store's alike.

use crate::support::Cli;
use redstream_testkit::RedisServer;

/// A `rediss://` server with a private CA: trusted with `--tls-ca-cert` (or its environment
/// variable), refused without it, for a transport command and a state command.
#[tokio::test(flavor = "multi_thread")]
async fn rediss_with_a_private_ca_from_the_command_line() {
    let server = RedisServer::builder().tls(true).start().await.unwrap();
    let ca = server.ca_cert_path().unwrap().to_str().unwrap().to_owned();
    let cli = Cli::new(&server);
    assert!(cli.url.starts_with("rediss://"), "{}", cli.url);

    let listed = cli.json(&["--tls-ca-cert", &ca, "streams"]);
    assert!(listed.is_array() || listed.is_object(), "{listed}");
    cli.run(&[
        "--tls-ca-cert",
        &ca,
        "state",
        "--state-prefix",
        "app",
        "put",
        "k",
        "1",
    ])
    .ok();

    let mut with_env = cli.command(&["streams"]);
    with_env.env("REDSTREAM_TLS_CA_CERT", &ca);
    let output = with_env.output().unwrap();
    assert!(output.status.success(), "{output:?}");

    // The system's roots do not know the test CA.
    let refused = cli.run(&["streams"]);
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(!refused.stderr.contains("panicked"), "{refused:#?}");
}

#[test]
fn bad_connection_options_are_refused() {
    let cli = Cli::with_url("redis://127.0.0.1:1".to_owned());
    for bad in [
        ["--connect-timeout", "1ms"],
        ["--connect-timeout", "soon"],
        ["--response-timeout", "1h"],
    ] {
        let output = cli.run(&[bad[0], bad[1], "streams"]);
        assert_eq!(output.code, Some(2), "{bad:?}: {output:#?}");
        assert!(output.stderr.contains(bad[0]), "{bad:?}: {output:#?}");
    }
    // A client certificate needs its key, and a file that cannot be read is named.
    cli.run(&["--tls-client-cert", "/nonexistent.pem", "streams"])
        .fails_with("--tls-client-key");
    cli.run(&[
        "--tls-client-cert",
        "/nonexistent-cert.pem",
        "--tls-client-key",
        "/nonexistent-key.pem",
        "streams",
    ])
    .fails_with("/nonexistent-cert.pem");
}

/// The timeouts reach the clients: the debug log says which were used.
#[tokio::test(flavor = "multi_thread")]
async fn timeouts_reach_the_clients() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let output = cli.run(&[
        "--log",
        "redstream_cli=debug",
        "--connect-timeout",
        "300ms",
        "--response-timeout",
        "2s",
        "streams",
    ]);
    assert_eq!(output.code, Some(0), "{output:#?}");
    assert!(
        output.stderr.contains("connect_timeout=300ms")
            && output.stderr.contains("response_timeout=2s"),
        "{}",
        output.stderr
    );
}
