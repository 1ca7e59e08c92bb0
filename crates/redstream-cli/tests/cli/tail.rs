//! `redstream tail`: following without a group (nothing created or acknowledged), with a group
//! (acknowledged), from a start id, undecodable entries, and stopping on Ctrl-C.

use redstream_testkit::RedisServer;
use serde_json::json;

use crate::support::{Cli, Running, connection, raw};

/// Waits until a client of `server` is blocked in `command` (`CLIENT LIST`: `cmd=<command>`
/// with the `b` flag).
async fn blocked_in(server: &RedisServer, command: &str) {
    let conn = connection(server).await;
    let what = format!("a client blocked in {command}");
    redstream_testkit::wait_until(&what, std::time::Duration::from_secs(30), || {
        let mut conn = conn.clone();
        let command = command.to_owned();
        async move {
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut conn)
                .await
                .map_err(|err| err.to_string())?;
            let blocked = clients.lines().any(|client| {
                let field = |name: &str| {
                    client
                        .split(' ')
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                };
                field("cmd") == Some(command.as_str())
                    && field("flags").is_some_and(|f| f.contains('b'))
            });
            if blocked { Ok(()) } else { Err(clients) }
        }
    })
    .await
    .unwrap();
}

/// Starts `tail` and waits for its readiness line: everything added afterwards is printed.
fn tail(cli: &Cli, args: &[&str]) -> Running {
    let mut tail = Running::start(cli.command(args));
    tail.wait_for_stderr("following");
    tail
}

#[tokio::test]
async fn events_published_after_it_starts_are_printed_and_nothing_is_created() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    cli.run(&["publish", "order.created", r#"{"n":0}"#]).ok();

    let running = tail(&cli, &["tail", "order.created", "--count", "3"]);
    cli.run(&["publish", "order.created", r#"{"n":1}"#]).ok();
    cli.run(&[
        "publish",
        "order.created",
        r#"{"n":2}"#,
        "--priority",
        "critical",
    ])
    .ok();
    // Written by someone else: shown with its decoding error.
    let stream = cli.stream("order.created");
    let _: String = raw(&mut conn, &["XADD", &stream, "*", "foo", "bar"]).await;

    let out = running.finish();
    let stdout = out.ok();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#"{"n":1}"#) && l.contains("order.created")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#"{"n":2}"#) && l.contains("[critical]")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("undecodable") && l.contains(r#"{"foo":"bar"}"#)),
        "{stdout}"
    );
    assert!(
        !stdout.contains(r#"{"n":0}"#),
        "events from before are not followed"
    );

    let groups: Vec<redis::Value> = raw(&mut conn, &["XINFO", "GROUPS", &stream]).await;
    assert!(groups.is_empty(), "plain tail creates no group: {groups:?}");
    let keys: Vec<String> = raw(&mut conn, &["KEYS", &format!("{}:*", cli.prefix)]).await;
    assert_eq!(
        keys,
        [stream],
        "nor streams: priority is a field of the event"
    );
}

#[tokio::test]
async fn a_stream_by_name_with_a_group_and_a_hint_while_it_does_not_exist() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    // Seed 004: events.raw does not exist yet, so the name is read as an event type; the tail
    // says so, and how to name the stream instead.
    let running = tail(&cli, &["tail", "events.raw"]);
    running.signal("INT");
    let out = running.finish();
    let hint = out
        .stderr
        .lines()
        .find(|l| l.contains("does not exist yet"))
        .unwrap_or_else(|| panic!("{out:#?}"));
    assert!(hint.contains(&cli.stream("events.raw")), "{hint}");
    assert!(hint.contains("--stream events.raw"), "{hint}");

    let mut running = Running::start(cli.command(&[
        "--json",
        "tail",
        "--stream",
        "events.raw",
        "--group",
        "event-processors",
        "--count",
        "1",
    ]));
    running.wait_for_stderr("does not exist yet");
    running.wait_for_stderr("following");
    // The seed's flat fields, written by its ingestion service.
    let id: String = raw(
        &mut conn,
        &[
            "XADD",
            "events.raw",
            "*",
            "event_id",
            "e1",
            "brand_id",
            "b1",
            "event_type",
            "purchase",
        ],
    )
    .await;
    let out = running.finish();
    let hint = out
        .stderr
        .lines()
        .find(|l| l.contains("does not exist yet"))
        .unwrap();
    assert!(
        hint.contains("stream events.raw does not exist yet"),
        "{hint}"
    );
    let line: serde_json::Value = serde_json::from_str(out.ok().trim()).unwrap();
    assert_eq!(line["stream"], "events.raw");
    assert_eq!(line["id"], id.as_str());
    assert_eq!(line["event"], json!(null));
    assert_eq!(
        line["fields"],
        json!([
            ["event_id", "e1"],
            ["brand_id", "b1"],
            ["event_type", "purchase"]
        ])
    );
    // Read in group event-processors, and acknowledged.
    let pending: Vec<redis::Value> = raw(
        &mut conn,
        &["XPENDING", "events.raw", "event-processors", "-", "+", "10"],
    )
    .await;
    assert!(pending.is_empty(), "{pending:?}");
    let groups = cli.json(&["groups", "events.raw"]);
    assert_eq!(groups["groups"][0]["name"], "event-processors");
    // Now that it exists, the name alone finds it.
    let stdout = cli
        .run(&[
            "--json",
            "tail",
            "events.raw",
            "--from",
            "-",
            "--count",
            "1",
        ])
        .ok();
    assert!(stdout.contains(&id), "{stdout}");

    // A type whose stream exists prints no hint.
    cli.run(&["publish", "audit", "{}"]).ok();
    let running = tail(&cli, &["tail", "audit"]);
    running.signal("INT");
    let out = running.finish();
    assert!(!out.stderr.contains("does not exist"), "{out:#?}");
}

#[tokio::test]
async fn json_lines_from_a_start_id() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    for n in 0..3 {
        cli.run(&["publish", "audit", &format!(r#"{{"n":{n}}}"#)])
            .ok();
    }
    let stdout = cli
        .run(&["--json", "tail", "audit", "--from", "-", "--count", "2"])
        .ok();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["stream"], cli.stream("audit").as_str());
    assert_eq!(lines[0]["event"]["payload"], json!({ "n": 0 }));
    assert_eq!(lines[0]["event"]["type"], "audit");
    assert_eq!(lines[1]["event"]["payload"], json!({ "n": 1 }));
    assert_eq!(lines[1]["decode_error"], serde_json::Value::Null);
    assert_eq!(lines[1]["fields"], serde_json::Value::Null);

    // Inclusive start at the second entry: the second and third.
    let second = lines[1]["id"].as_str().unwrap();
    let stdout = cli
        .run(&["--json", "tail", "audit", "--from", second, "--count", "2"])
        .ok();
    let payloads: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["payload"].clone())
        .collect();
    assert_eq!(payloads, [json!({ "n": 1 }), json!({ "n": 2 })]);

    cli.run(&["tail", "audit", "--from", "yesterday", "--count", "1"])
        .fails_with("yesterday");
}

#[tokio::test]
async fn with_a_group_it_reads_as_a_consumer_and_acknowledges() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    let running = tail(
        &cli,
        &[
            "--json",
            "tail",
            "payment",
            "--group",
            "ops",
            "--consumer",
            "me",
            "--count",
            "2",
        ],
    );
    cli.run(&["publish", "payment", r#"{"n":1}"#]).ok();
    cli.run(&["publish", "payment", r#"{"n":2}"#]).ok();
    let stdout = running.finish().ok();
    let payloads: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["payload"].clone())
        .collect();
    assert_eq!(payloads, [json!({ "n": 1 }), json!({ "n": 2 })]);

    let groups = cli.json(&["groups", "payment"]);
    let group = &groups["groups"][0];
    assert_eq!(group["name"], "ops");
    assert_eq!(group["pending"], 0, "what was printed is acknowledged");
    assert_eq!(group["consumers"][0]["name"], "me");

    // Another run of the group gets only what is new to the group.
    cli.run(&["publish", "payment", r#"{"n":3}"#]).ok();
    let stdout = cli
        .run(&[
            "--json", "tail", "payment", "--group", "ops", "--count", "1",
        ])
        .ok();
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["event"]["payload"], json!({ "n": 3 }));
    let pending: Vec<redis::Value> = raw(
        &mut conn,
        &["XPENDING", &cli.stream("payment"), "ops", "-", "+", "10"],
    )
    .await;
    assert!(pending.is_empty(), "{pending:?}");
}

#[tokio::test]
async fn ctrl_c_stops_it_cleanly() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let running = tail(&cli, &["tail", "quiet"]);
    running.signal("INT");
    let out = running.finish();
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(out.stdout, "");
    // SIGTERM too, with a group: what it printed is acknowledged on the way out.
    let mut running = tail(&cli, &["tail", "quiet", "--group", "ops", "--count", "5"]);
    cli.run(&["publish", "quiet", "{}"]).ok();
    running.wait_for_stdout_line();
    running.signal("TERM");
    let out = running.finish();
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(out.stdout.lines().count(), 1, "{out:#?}");
    let mut conn = connection(&server).await;
    let pending: Vec<redis::Value> = raw(
        &mut conn,
        &["XPENDING", &cli.stream("quiet"), "ops", "-", "+", "10"],
    )
    .await;
    assert!(
        pending.is_empty(),
        "printed means acknowledged: {pending:?}"
    );
}

#[tokio::test]
async fn it_stops_when_its_reader_goes_away() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    // Nothing is published: it is waiting, writing nothing, when `head` (here: the test) goes.
    let mut running = tail(&cli, &["tail", "quiet"]);
    running.close_stdout();
    let out = running.finish();
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(!out.stderr.contains("error"), "{out:#?}");
}

#[tokio::test]
async fn it_resumes_after_the_server_restarts() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut running = tail(&cli, &["--json", "tail", "audit", "--count", "1"]);
    // Once its read is waiting on the server (not before: a connection replaced before the
    // first read would never see the restart), killed and started again, without
    // persistence: the tail's blocked read dies with it.
    blocked_in(&server, "xread").await;
    server.restart().await.unwrap();
    running.wait_for_stderr("retrying until the server is back");
    cli.run(&["publish", "audit", r#"{"n":1}"#]).ok();
    running.wait_for_stderr("reconnected");
    let out = running.finish();
    let stdout = out.ok();
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["event"]["payload"], json!({ "n": 1 }));
}

#[tokio::test]
async fn with_a_group_a_server_that_lost_the_group_ends_it() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let running = tail(&cli, &["tail", "audit", "--group", "ops"]);
    // Restarted without persistence: the group is gone, which waiting cannot fix.
    server.restart().await.unwrap();
    running.finish().fails_with("no such consumer group");
}

/// `--from` with `--group` creates the group there (refused when it exists), and `--no-ack`
/// leaves what it printed pending.
#[tokio::test]
async fn a_group_from_a_position_and_without_acknowledging() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut ids = Vec::new();
    for n in 0..3 {
        let out = cli.json(&["publish", "refund", &format!(r#"{{"n":{n}}}"#)]);
        ids.push(out["ids"][0].as_str().unwrap().to_owned());
    }
    let payloads = |stdout: &str| -> Vec<serde_json::Value> {
        stdout
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["payload"]["n"]
                    .clone()
            })
            .collect()
    };

    let whole = cli
        .run(&[
            "--json",
            "tail",
            "refund",
            "--group",
            "audit",
            "--consumer",
            "me",
            "--from",
            "-",
            "--count",
            "2",
            "--no-ack",
        ])
        .ok();
    assert_eq!(payloads(&whole), [json!(0), json!(1)]);
    let pending = cli.json(&["pending", "refund", "audit", "--consumer", "me"]);
    let held: Vec<&str> = pending["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        held,
        [ids[0].as_str(), ids[1].as_str()],
        "--no-ack leaves them pending"
    );

    // The group exists: a start position is refused, nothing read.
    cli.run(&[
        "tail", "refund", "--group", "audit", "--from", "-", "--count", "1",
    ])
    .fails_with("exists already");

    // A new group from an id (inclusive), acknowledging as usual.
    let from = cli
        .run(&[
            "--json", "tail", "refund", "--group", "late", "--from", &ids[1], "--count", "2",
        ])
        .ok();
    assert_eq!(payloads(&from), [json!(1), json!(2)]);
    let groups = cli.json(&["groups", "refund"]);
    let late = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "late")
        .unwrap();
    assert_eq!(late["pending"], 0);

    let bad = cli.run(&["tail", "refund", "--no-ack", "--count", "1"]);
    assert_eq!(bad.code, Some(2), "--no-ack needs --group: {bad:#?}");
}
