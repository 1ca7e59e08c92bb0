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

    let out = cli.json(&["dlq", "list", "--count", "3", "--oldest-first"]);
    assert_eq!(out["total"], 4);
    assert_eq!(out["stream"], cli.dlq().as_str());
    assert_eq!(out["order"], "oldest_first");
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
    assert!(
        table.contains("4 dead letter(s) of 4 in") && table.contains("newest first"),
        "{table}"
    );
    assert!(
        !table.contains("older:"),
        "one page holds them all: {table}"
    );
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

    let listed = cli.json(&["dlq", "list", "--oldest-first"]);
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

/// 25 dead letters, oldest first: types `a` and `b` in turn, groups `billing` (every third) and
/// `shipping`, errors `Timeout after 5s` (every fifth) and `card declined`. Returns their ids.
async fn many_dead_letters(cli: &Cli) -> Vec<String> {
    let mut transports = Vec::new();
    for group in ["billing", "shipping"] {
        transports.push(
            redstream_transport::RedisTransport::new(
                redstream_transport::RedisConfig::default()
                    .with_url(cli.url.clone())
                    .with_stream_prefix(cli.prefix.clone())
                    .with_consumer_group(group),
            )
            .await
            .unwrap(),
        );
    }
    let mut ids = Vec::new();
    for n in 0..25 {
        let event_type = if n % 2 == 0 { "a" } else { "b" };
        let transport = &transports[usize::from(n % 3 != 0)];
        let error = if n % 5 == 0 {
            "Timeout after 5s"
        } else {
            "card declined"
        };
        let event = Event::new(event_type, json!({ "n": n }), EventMetadata::default());
        ids.push(transport.publish_to_dlq(event, error).await.unwrap());
    }
    ids
}

fn listed_ids(out: &serde_json::Value) -> Vec<String> {
    out["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn list_pages_newest_first_with_a_cursor() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let ids = many_dead_letters(&cli).await;
    let newest: Vec<String> = ids.iter().rev().cloned().collect();

    let first = cli.json(&["dlq", "list", "--count", "10"]);
    assert_eq!(first["order"], "newest_first");
    assert_eq!(first["total"], 25);
    assert_eq!(listed_ids(&first), newest[..10]);
    assert_eq!(first["next_before"], newest[9].as_str());
    assert_eq!(first["next_after"], serde_json::Value::Null);

    let second = cli.json(&["dlq", "list", "--count", "10", "--before", &newest[9]]);
    assert_eq!(listed_ids(&second), newest[10..20]);
    assert_eq!(second["next_before"], newest[19].as_str());
    assert_eq!(second["next_after"], newest[10].as_str());
    let last = cli.json(&["dlq", "list", "--count", "10", "--before", &newest[19]]);
    assert_eq!(listed_ids(&last), newest[20..]);
    assert_eq!(
        last["next_before"],
        serde_json::Value::Null,
        "the oldest is shown"
    );

    // Back up: the page newer than the second page's first entry is the first page.
    let back = cli.json(&["dlq", "list", "--count", "10", "--after", &newest[10]]);
    assert_eq!(listed_ids(&back), newest[..10]);
    assert_eq!(
        back["next_after"],
        serde_json::Value::Null,
        "the newest is shown"
    );
    assert_eq!(back["next_before"], newest[9].as_str());

    // Oldest first pages forwards.
    let oldest = cli.json(&["dlq", "list", "--count", "10", "--oldest-first"]);
    assert_eq!(listed_ids(&oldest), ids[..10]);
    assert_eq!(oldest["next_after"], ids[9].as_str());

    // For people: the table, then the next page's command, which does what it says.
    let table = cli.run(&["dlq", "list", "--count", "10"]).ok();
    assert!(
        table.contains(&format!(
            "10 dead letter(s) of 25 in {}, newest first",
            cli.dlq()
        )),
        "{table}"
    );
    let older = table
        .lines()
        .find_map(|line| line.strip_prefix("older: "))
        .unwrap_or_else(|| panic!("no next-page command: {table}"));
    assert_eq!(
        older,
        format!("redstream dlq list --count 10 --before {}", newest[9])
    );
    let args: Vec<&str> = older.split(' ').skip(1).collect();
    let mut with_json = vec!["--json"];
    with_json.extend(args);
    assert_eq!(listed_ids(&cli.run(&with_json).json()), newest[10..20]);
    let table = cli.run(&["dlq", "list", "--before", &newest[24]]).ok();
    assert!(
        table.contains("no dead letters on this page") && table.contains("(25 in total)"),
        "{table}"
    );
    assert!(
        !table.contains("older:") && !table.contains("newer:"),
        "an empty page names no other: {table}"
    );
}

#[tokio::test]
async fn list_filters_by_type_group_and_error() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let ids = many_dead_letters(&cli).await;
    let expect = |keep: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..25)
            .rev()
            .filter(|&n| keep(n))
            .map(|n| ids[n].clone())
            .collect()
    };

    let by_type = cli.json(&["dlq", "list", "--count", "100", "--type", "b"]);
    assert_eq!(listed_ids(&by_type), expect(&|n| n % 2 == 1));
    assert_eq!(by_type["total"], 25, "total counts every dead letter");
    let by_group = cli.json(&["dlq", "list", "--count", "100", "--group", "billing"]);
    assert_eq!(listed_ids(&by_group), expect(&|n| n % 3 == 0));
    // The error text is matched as a substring, whatever its ASCII case.
    let by_error = cli.json(&["dlq", "list", "--count", "100", "--error", "timeout"]);
    assert_eq!(listed_ids(&by_error), expect(&|n| n % 5 == 0));
    let all_three = cli.json(&[
        "dlq", "list", "--type", "a", "--group", "billing", "--error", "TIME",
    ]);
    assert_eq!(listed_ids(&all_three), expect(&|n| n % 30 == 0));
    let none = cli.json(&["dlq", "list", "--group", "nobody"]);
    assert_eq!(listed_ids(&none), Vec::<String>::new());
    assert_eq!(none["next_before"], serde_json::Value::Null);

    // Paging keeps the filters: the next page's command carries them.
    let page = cli
        .run(&[
            "dlq",
            "list",
            "--count",
            "2",
            "--type",
            "a",
            "--error",
            "card declined",
        ])
        .ok();
    let a_declined = expect(&|n| n % 2 == 0 && n % 5 != 0);
    assert!(
        page.contains("2 dead letter(s) of type a with \"card declined\" in the error of 25"),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            "older: redstream dlq list --count 2 --type a --error 'card declined' --before {}",
            a_declined[1]
        )),
        "{page}"
    );
    let next = cli.json(&[
        "dlq",
        "list",
        "--count",
        "2",
        "--type",
        "a",
        "--error",
        "card declined",
        "--before",
        &a_declined[1],
    ]);
    assert_eq!(listed_ids(&next), a_declined[2..4]);
}

#[tokio::test]
async fn list_refuses_bad_cursors_and_filters() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    cli.run(&["dlq", "list", "--before", "latest"])
        .fails_with("invalid dead-letter entry id \"latest\"");
    cli.run(&["dlq", "list", "--after", "12"])
        .fails_with("invalid dead-letter entry id \"12\"");
    cli.run(&["dlq", "list", "--type", "bad type"])
        .fails_with("bad type");
    let both = cli.run(&["dlq", "list", "--before", "1-0", "--after", "2-0"]);
    assert_eq!(
        both.code,
        Some(2),
        "--before and --after conflict: {both:#?}"
    );
    let zero = cli.run(&["dlq", "list", "--count", "0"]);
    assert_eq!(zero.code, Some(2), "{zero:#?}");
    let conflict = cli.run(&["dlq", "redrive", "--all", "--type", "a", "--yes"]);
    assert_eq!(
        conflict.code,
        Some(2),
        "--all takes no filter: {conflict:#?}"
    );
    let conflict = cli.run(&["dlq", "redrive", "--id", "1-0", "--group", "g", "--yes"]);
    assert_eq!(
        conflict.code,
        Some(2),
        "--id takes no filter: {conflict:#?}"
    );
}

#[tokio::test]
async fn redrive_by_filters_moves_only_the_matches() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    many_dead_letters(&cli).await;

    // Type a (13 of them) of group billing (n = 0, 6, 12, 18, 24) without a timeout (not 0).
    let out = cli.json(&[
        "dlq", "redrive", "--type", "a", "--group", "billing", "--error", "declined", "--yes",
    ]);
    assert_eq!(out, json!({ "redriven": 4, "skipped": [] }));
    assert_eq!(
        payloads(&mut conn, &cli.stream("a")).await,
        [
            json!({ "n": 6 }),
            json!({ "n": 12 }),
            json!({ "n": 18 }),
            json!({ "n": 24 })
        ]
    );
    assert_eq!(xlen(&mut conn, &cli.dlq()).await, 21);
    let out = cli.json(&["dlq", "redrive", "--error", "timeout", "--yes"]);
    assert_eq!(out["redriven"], 5);
    assert_eq!(xlen(&mut conn, &cli.dlq()).await, 16);
    let out = cli.json(&["dlq", "redrive", "--group", "nobody", "--yes"]);
    assert_eq!(out, json!({ "redriven": 0, "skipped": [] }));
    assert_eq!(xlen(&mut conn, &cli.dlq()).await, 16);
}

/// On a terminal, the redrive's question counts what the filters select, not the whole
/// dead-letter stream, and says what cannot move.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn on_a_terminal_redrive_counts_what_it_moves() {
    use std::process::{Command, Stdio};

    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    many_dead_letters(&cli).await;
    dead_letters(&server, &cli).await; // a, a, b, and an undecodable a: 29 in all
    let ask = |args: &str| {
        let command = format!(
            "'{}' --url '{}' --prefix '{}' dlq redrive {args}",
            env!("CARGO_BIN_EXE_redstream"),
            cli.url,
            cli.prefix
        );
        let out = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env_remove("REDIS_URL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("util-linux `script` runs the command on a pseudo-terminal");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, screen) = ask("--group billing");
    assert_eq!(code, Some(1), "no answer: not confirmed: {screen}");
    assert!(
        screen.contains("move 9 of the 29 dead letter(s)"),
        "{screen}"
    );
    let (_, screen) = ask("--type a");
    assert!(
        screen.contains("move 15 of the 29 dead letter(s)"),
        "{screen}"
    );
    assert!(
        screen.contains("1 more match but cannot be redriven"),
        "{screen}"
    );
    let (_, screen) = ask("--id 1-0");
    assert!(
        screen.contains("move 0 of the 29 dead letter(s)"),
        "{screen}"
    );
    assert_eq!(xlen(&mut conn, &cli.dlq()).await, 29, "nothing moved");
}
