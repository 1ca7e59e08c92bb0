//! `redstream dlq list|show|redrive|purge`: both output forms, redrive by id, type and all, and
//! the confirmation that destructive commands need when stdin is not a terminal.

use redstream_core::{Event, EventMetadata};
use redstream_testkit::RedisServer;
use serde_json::json;

use crate::support::{Cli, connection, payloads, raw, xlen};

/// Dead letters of two types (two `a`, one `b`) written through the transport, and one
/// undecodable dead letter of type `a` written by hand. Returns their ids in that order.
async fn dead_letters(server: &RedisServer, cli: &Cli) -> Vec<String> {
    let transport = cli.transport().await;
    let mut ids = Vec::new();
    for (event_type, n) in [("a", 1), ("a", 2), ("b", 3)] {
        let event = Event::new(event_type, json!({ "n": n }), EventMetadata::default());
        ids.push(
            transport
                .publish_to_dlq(event, "card declined")
                .await
                .unwrap(),
        );
    }
    let mut conn = connection(server).await;
    let dlq = cli.dlq();
    ids.push(
        raw(
            &mut conn,
            &[
                "XADD",
                &dlq,
                "*",
                "event",
                r#"{"foo":"bar"}"#,
                "error",
                "no event field",
                "original_type",
                "a",
                "undecodable",
                "true",
            ],
        )
        .await,
    );
    ids
}

#[tokio::test]
async fn list_and_show() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let empty = cli.run(&["dlq", "list"]).ok();
    assert!(empty.contains("no dead letters"), "{empty}");
    let ids = dead_letters(&server, &cli).await;

    let out = cli.json(&["dlq", "list", "--count", "3"]);
    assert_eq!(out["total"], 4);
    assert_eq!(out["stream"], cli.dlq().as_str());
    let listed = out["dead_letters"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["id"], ids[0].as_str());
    assert_eq!(listed[0]["event_type"], "a");
    assert_eq!(listed[0]["error"], "card declined");
    assert_eq!(listed[0]["stream"], cli.stream("a").as_str());
    assert_eq!(listed[0]["event"]["payload"], json!({ "n": 1 }));
    assert_eq!(listed[0]["raw_event"], serde_json::Value::Null);
    assert!(listed[0]["last_failure_ms"].as_u64().is_some());

    let table = cli.run(&["dlq", "list"]).ok();
    assert!(table.contains("4 of 4 dead letter(s)"), "{table}");
    for id in &ids {
        assert!(table.contains(id.as_str()), "{table}");
    }

    let shown = cli.json(&["dlq", "show", &ids[3]]);
    assert_eq!(shown["event"], serde_json::Value::Null);
    assert_eq!(shown["raw_event"], r#"{"foo":"bar"}"#);
    assert!(shown["decode_error"].as_str().is_some());
    let table = cli.run(&["dlq", "show", &ids[1]]).ok();
    assert!(table.contains("card declined"), "{table}");
    assert!(table.contains("\"n\": 2"), "the event is printed: {table}");

    cli.run(&["dlq", "show", "1-0"])
        .fails_with("no dead letter 1-0");
    cli.run(&["dlq", "show", "latest"]).fails_with("latest");
}

#[tokio::test]
async fn redrive_by_id_type_and_all() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    let ids = dead_letters(&server, &cli).await;

    let by_id = cli.json(&["dlq", "redrive", "--id", &ids[2], "--yes"]);
    assert_eq!(by_id, json!({ "redriven": 1, "skipped": [] }));
    assert_eq!(
        payloads(&mut conn, &cli.stream("b")).await,
        [json!({ "n": 3 })]
    );

    let by_type = cli.json(&["dlq", "redrive", "--type", "a", "--yes"]);
    assert_eq!(by_type["redriven"], 2);
    assert_eq!(by_type["skipped"][0]["id"], ids[3].as_str());
    assert!(
        by_type["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot be decoded")
    );
    assert_eq!(
        payloads(&mut conn, &cli.stream("a")).await,
        [json!({ "n": 1 }), json!({ "n": 2 })]
    );

    let all = cli.run(&["dlq", "redrive", "--all", "--yes"]).ok();
    assert!(
        all.contains("redriven 0 dead letter(s); 1 left in place"),
        "{all}"
    );
    assert!(all.contains(&ids[3]), "{all}");
    // An id that is not there: the report on stdout, and a failure (exit 1) naming it.
    let missing = cli.run(&["--json", "dlq", "redrive", "--id", "1-0", "--yes"]);
    assert_eq!(missing.code, Some(1), "{missing:#?}");
    assert!(missing.stderr.contains("not redriven: 1-0"), "{missing:#?}");
    let report: serde_json::Value = serde_json::from_str(&missing.stdout).unwrap();
    assert_eq!(report["redriven"], 0);
    assert_eq!(report["skipped"][0]["id"], "1-0");

    let none = cli.run(&["dlq", "redrive", "--yes"]);
    assert_eq!(none.code, Some(2), "one of --all, --id, --type: {none:#?}");
}

#[tokio::test]
async fn destructive_commands_need_yes_without_a_terminal() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    dead_letters(&server, &cli).await;
    let dlq = cli.dlq();

    // stdin is /dev/null here: not a terminal, nobody to ask.
    cli.run(&["dlq", "purge"]).fails_with("pass --yes");
    cli.run(&["dlq", "redrive", "--all"])
        .fails_with("pass --yes");
    cli.run_with_stdin(&["dlq", "purge"], "y\n")
        .fails_with("stdin is not a terminal");
    assert_eq!(xlen(&mut conn, &dlq).await, 4, "nothing was deleted");
    assert_eq!(
        xlen(&mut conn, &cli.stream("a")).await,
        0,
        "nothing was redriven"
    );

    let purged = cli.json(&["dlq", "purge", "--yes"]);
    assert_eq!(purged, json!({ "purged": 4 }));
    assert_eq!(xlen(&mut conn, &dlq).await, 0);
    let again = cli.run(&["dlq", "purge", "--yes"]).ok();
    assert!(again.contains("purged 0 dead letter(s)"), "{again}");
}

/// On a terminal (a pseudo-terminal from util-linux's `script`), `purge` asks, and only `y`
/// goes ahead.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn on_a_terminal_purge_asks_first() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    dead_letters(&server, &cli).await;
    let dlq = cli.dlq();
    let answer = |typed: &str| {
        let command = format!(
            "'{}' --url '{}' --prefix '{}' dlq purge",
            env!("CARGO_BIN_EXE_redstream"),
            cli.url,
            cli.prefix
        );
        let mut child = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env_remove("REDIS_URL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("util-linux `script` runs the command on a pseudo-terminal");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(typed.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    let (code, screen) = answer("n\n");
    assert_eq!(code, Some(1), "{screen}");
    assert!(screen.contains("delete all 4 dead letter(s)"), "{screen}");
    assert!(screen.contains("not confirmed"), "{screen}");
    assert_eq!(xlen(&mut conn, &dlq).await, 4);

    let (code, screen) = answer("y\n");
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("purged 4 dead letter(s)"), "{screen}");
    assert_eq!(xlen(&mut conn, &dlq).await, 0);
}

#[tokio::test]
async fn redrive_by_stream_takes_a_full_name() {
    use redstream_core::HandlerResult;
    use redstream_transport::{RedisConfig, RedisTransport, StartFrom, TransportOptions};

    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    // A subscription to seed 004's events.raw whose handler refuses its one entry: the dead
    // letter records events.raw as its stream.
    let options = TransportOptions::default()
        .with_dead_letter_on_first_failure(true)
        .with_start_from(StartFrom::Beginning);
    let config = RedisConfig::default()
        .with_url(server.url())
        .with_stream_prefix(cli.prefix.clone());
    let transport = RedisTransport::with_options(config, options).await.unwrap();
    let event = Event::new("page_view", json!({ "n": 1 }), EventMetadata::default());
    transport.publish_to("events.raw", event).await.unwrap();
    let handle = transport
        .subscription()
        .streams(["events.raw"])
        .group("event-processors")
        .handle(|_| async { HandlerResult::Err("feature store down".into()) })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + crate::support::HANG;
    while xlen(&mut conn, &cli.dlq()).await == 0 {
        assert!(std::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    transport.unsubscribe(&handle).await.unwrap();
    dead_letters(&server, &cli).await;

    let listed = cli.json(&["dlq", "list"]);
    assert_eq!(listed["dead_letters"][0]["stream"], "events.raw");
    let none = cli.json(&["dlq", "redrive", "--stream", "orders.events", "--yes"]);
    assert_eq!(none["redriven"], 0);
    let out = cli.json(&["dlq", "redrive", "--stream", "events.raw", "--yes"]);
    assert_eq!(out, json!({ "redriven": 1, "skipped": [] }));
    assert_eq!(xlen(&mut conn, "events.raw").await, 2);
    // The others stay; a type's stream by its type works too.
    assert_eq!(xlen(&mut conn, &cli.dlq()).await, 4);
    let by_type_stream = cli.json(&["dlq", "redrive", "--stream", "b", "--yes"]);
    assert_eq!(by_type_stream["redriven"], 1);
    assert_eq!(
        payloads(&mut conn, &cli.stream("b")).await,
        [json!({ "n": 3 })]
    );
}
