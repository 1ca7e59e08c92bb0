//! How every command fails: an unreachable server, a refused password, bad arguments. The exit
//! code is 1 (2 for arguments clap refuses), stderr says what went wrong, and no password is
//! ever printed, not even in debug logs.

use std::process::{Command, Stdio};

use redstream_testkit::RedisServer;

use crate::support::{Cli, Output};

const PASSWORD: &str = "s3cret-Pa55word";

/// One invocation of every operations command, each of which needs the server.
const EVERY_COMMAND: &[&[&str]] = &[
    &["publish", "order.created", "{}"],
    &["tail", "order.created", "--count", "1"],
    &["tail", "order.created", "--group", "g", "--count", "1"],
    &["streams"],
    &["info", "order.created"],
    &["groups", "order.created"],
    &["pending", "order.created", "g"],
    &["claim", "order.created", "g", "c", "--min-idle", "1m"],
    &["dlq", "list"],
    &["dlq", "show", "1-0"],
    &["dlq", "redrive", "--all", "--yes"],
    &["dlq", "purge", "--yes"],
    &["state", "--state-prefix", "app", "get", "k"],
    &["state", "--state-prefix", "app", "put", "k", "1"],
    &["state", "--state-prefix", "app", "keys"],
    &["bench", "--events", "1"],
];

#[track_caller]
fn assert_no_password(out: &Output) {
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(PASSWORD), "the password leaked: {out:#?}");
        assert!(
            !text.contains("wrong-Pa55word"),
            "the password leaked: {out:#?}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_server_fails_every_command_clearly() {
    let server = RedisServer::builder()
        .password(PASSWORD)
        .start()
        .await
        .unwrap();
    let cli = Cli::new(&server);
    server.kill().unwrap();
    for args in EVERY_COMMAND {
        let out = cli.run(args);
        assert_no_password(&out);
        let stderr = out.fails_with("connect");
        assert!(
            stderr.contains(&format!("127.0.0.1:{}", server.port())),
            "{args:?} names the server: {stderr}"
        );
        assert!(
            stderr.to_lowercase().contains("refused"),
            "{args:?} says why: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_wrong_or_missing_password_fails_every_command_as_auth() {
    let server = RedisServer::builder()
        .password(PASSWORD)
        .start()
        .await
        .unwrap();
    let wrong = Cli::with_url(format!(
        "redis://:wrong-Pa55word@127.0.0.1:{}",
        server.port()
    ));
    for args in EVERY_COMMAND {
        let out = wrong.run(args);
        assert_no_password(&out);
        let stderr = out.fails_with("auth");
        assert!(
            stderr.contains(":***@"),
            "{args:?}: the URL is redacted: {stderr}"
        );
    }
    let none = Cli::with_url(server.url_without_auth());
    none.run(&["streams"]).fails_with("auth");
    none.run(&["state", "--state-prefix", "app", "get", "k"])
        .fails_with("auth");
}

#[tokio::test]
async fn the_password_never_appears_even_in_debug_logs() {
    let server = RedisServer::builder()
        .password(PASSWORD)
        .start()
        .await
        .unwrap();
    let cli = Cli::new(&server);
    for args in [
        &["--log", "debug", "publish", "order.created", "{}"][..],
        &["--log", "debug", "streams"],
        &[
            "--log",
            "debug",
            "--json",
            "tail",
            "order.created",
            "--from",
            "-",
            "--count",
            "1",
        ],
        &[
            "--log",
            "debug",
            "state",
            "--state-prefix",
            "app",
            "put",
            "k",
            "1",
        ],
        &["--log", "debug", "info", "order.missing"],
    ] {
        let out = cli.run(args);
        assert_no_password(&out);
        assert!(matches!(out.code, Some(0 | 1)), "{out:#?}");
        // The logs do name the server, redacted.
        assert!(out.stderr.contains(":***@127.0.0.1"), "{out:#?}");
    }

    // REDIS_URL works like --url.
    let out = Command::new(env!("CARGO_BIN_EXE_redstream"))
        .env("REDIS_URL", server.url())
        .env_remove("RUST_LOG")
        .args([
            "--prefix",
            &cli.prefix,
            "--json",
            "--log",
            "debug",
            "streams",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("order.created"), "{stdout}");
    assert!(
        !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
        "{stderr}"
    );
    // Nor in --help, which shows the environment variable but not its value.
    let help = Command::new(env!("CARGO_BIN_EXE_redstream"))
        .env("REDIS_URL", server.url())
        .arg("--help")
        .output()
        .unwrap();
    assert!(!String::from_utf8(help.stdout).unwrap().contains(PASSWORD));
}

#[tokio::test]
async fn bad_arguments_are_refused_before_connecting() {
    // No server at all: these fail on their arguments.
    let cli = Cli::with_url("redis://127.0.0.1:1".to_owned());
    for args in [
        &["nonsense"][..],
        &["publish"],
        &["publish", "t", "{}", "--file", "x.jsonl"],
        &["pending", "t", "g", "--count", "0"],
        &["tail", "t", "--count", "0"],
        &["tail", "t", "--no-ack"],
        &["claim", "t", "g", "c"],
        &["claim", "t", "g", "c", "--id", "1-0", "--count", "5"],
        &["trim", "t"],
        &["trim", "t", "--maxlen", "1", "--minid", "1-0"],
        &["range", "t", "--latest", "5", "--from", "1-0"],
        &["group", "create", "t"],
        &["ack", "t", "g"],
        &["tail", "t", "--consumer", "c"],
        &["tail"],
        &["tail", "t", "--stream", "events.raw"],
        &["streams", "--streams", ""],
        &["publish", "t", "{}", "--priority", "urgent"],
        &[
            "state",
            "put",
            "k",
            "1",
            "--ttl",
            "forever",
            "--state-prefix",
            "app",
        ],
    ] {
        let out = cli.run(args);
        assert_eq!(out.code, Some(2), "{args:?}: {out:#?}");
        assert!(out.stderr.contains("error"), "{out:#?}");
    }
    // Checked by the command itself, still before connecting.
    cli.run(&["publish", "bad type", "{}"])
        .fails_with("event type");
    cli.run(&["dlq", "purge"]).fails_with("pass --yes");
    cli.run(&["trim", "t", "--maxlen", "1"])
        .fails_with("pass --yes");
    cli.run(&["group", "destroy", "t", "g"])
        .fails_with("pass --yes");
    cli.run(&["group", "set-id", "t", "g", "0"])
        .fails_with("pass --yes");
    cli.run(&["group", "delete-consumer", "t", "g", "c", "--force"])
        .fails_with("pass --yes");
    cli.run(&["dlq", "redrive", "--id", "latest", "--yes"])
        .fails_with("latest");
    cli.run(&["dlq", "redrive", "--type", "bad type", "--yes"])
        .fails_with("event type");
    let bad_url = Cli::with_url("http://example.com".to_owned());
    bad_url.run(&["streams"]).fails_with("redis://");
}

#[test]
fn help_names_streams_as_the_seeds_do() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_redstream"))
            .env_remove("REDSTREAM_PREFIX")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // clap wraps help to the terminal's width (or 100 columns without one):
        // compare words, not line breaks.
        let text = String::from_utf8(out.stdout).unwrap();
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let top = help(&["--help"]);
    assert!(top.contains("<prefix>:<event type>"), "{top}");
    assert!(!top.contains("{prefix}"), "{top}");
    for command in [
        "info", "groups", "pending", "claim", "tail", "streams", "publish",
    ] {
        let text = help(&[command, "--help"]);
        assert!(!text.contains("lane"), "{command}: {text}");
        assert!(!text.contains("{events}"), "{command}: {text}");
    }
    assert!(help(&["streams", "--help"]).contains("--streams"));
    assert!(help(&["tail", "--help"]).contains("--stream"));
    assert!(help(&["publish", "--help"]).contains("--stream"));
    assert!(help(&["dlq", "redrive", "--help"]).contains("--stream"));
    assert!(help(&["serve", "--help"]).contains("--streams"));
}
