//! `redstream publish`: one payload, a file, stdin; ids in both output forms; a bad line fails
//! with its number and publishes nothing.

use std::io::Write;

use redstream_testkit::RedisServer;
use serde_json::json;

use crate::support::{Cli, connection, payloads, raw, xlen};

#[tokio::test]
async fn one_payload_is_published_with_its_metadata_and_ids_are_printed() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;

    let table = cli
        .run(&["publish", "order.created", r#"{"order_id":"1"}"#])
        .ok();
    let entries: Vec<(String, Vec<(String, String)>)> = raw(
        &mut conn,
        &["XRANGE", &cli.stream("order.created"), "-", "+"],
    )
    .await;
    assert_eq!(entries.len(), 1);
    assert!(table.contains("published 1 event(s)"), "{table}");
    assert!(
        table.contains(&entries[0].0),
        "the entry id is printed: {table}"
    );

    let out = cli.json(&[
        "publish",
        "order.created",
        r#"{"order_id":"2"}"#,
        "--priority",
        "high",
        "--source",
        "checkout",
        "--correlation-id",
        "req-42",
    ]);
    // Priority is a field of the event: the same stream.
    let stream = cli.stream("order.created");
    assert_eq!(out["stream"], stream.as_str());
    assert_eq!(out["published"], 1);
    let entries: Vec<(String, Vec<(String, String)>)> =
        raw(&mut conn, &["XRANGE", &stream, "-", "+"]).await;
    assert_eq!(entries.len(), 2);
    assert_eq!(out["ids"], json!([entries[1].0]));
    let envelope: serde_json::Value = serde_json::from_str(&entries[1].1[0].1).unwrap();
    assert_eq!(out["event_ids"], json!([envelope["id"]]));
    assert_eq!(envelope["payload"], json!({ "order_id": "2" }));
    assert_eq!(envelope["metadata"]["priority"], "high");
    assert_eq!(envelope["metadata"]["source"], "checkout");
    assert_eq!(envelope["metadata"]["correlation_id"], "req-42");

    // Any JSON value is a payload, including ones that look like options.
    cli.run(&["publish", "numbers", "-5"]).ok();
    assert_eq!(
        payloads(&mut conn, &cli.stream("numbers")).await,
        [json!(-5)]
    );
}

#[tokio::test]
async fn stream_names_a_stream_of_any_name() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    let out = cli.json(&[
        "publish",
        "page_view",
        r#"{"brand_id":"b1"}"#,
        "--stream",
        "events.raw",
    ]);
    assert_eq!(out["stream"], "events.raw");
    assert_eq!(out["published"], 1);
    assert_eq!(
        payloads(&mut conn, "events.raw").await,
        [json!({ "brand_id": "b1" })]
    );
    assert_eq!(xlen(&mut conn, &cli.stream("page_view")).await, 0);

    // A file goes there too, in order.
    let table = cli
        .run_with_stdin(
            &[
                "publish",
                "page_view",
                "--file",
                "-",
                "--stream",
                "events.raw",
            ],
            "1\n2\n",
        )
        .ok();
    assert!(
        table.contains("published 2 event(s) to events.raw"),
        "{table}"
    );
    assert_eq!(
        payloads(&mut conn, "events.raw").await,
        [json!({ "brand_id": "b1" }), json!(1), json!(2)]
    );
    cli.run(&["publish", "page_view", "{}", "--stream", "events raw"])
        .fails_with("stream name \"events raw\"");
}

#[tokio::test]
async fn a_file_is_published_in_batches_in_order() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    for n in 0..1200 {
        writeln!(file, r#"{{"n":{n}}}"#).unwrap();
        if n == 600 {
            writeln!(file, "   ").unwrap(); // blank lines are skipped
        }
    }
    drop(file);

    let out = cli.json(&[
        "publish",
        "line.read",
        "--file",
        path.to_str().unwrap(),
        "--batch-size",
        "500",
    ]);
    assert_eq!(out["published"], 1200);
    assert_eq!(out["ids"].as_array().unwrap().len(), 1200);
    assert_eq!(out["event_ids"].as_array().unwrap().len(), 1200);
    let stored = payloads(&mut conn, &cli.stream("line.read")).await;
    let expected: Vec<serde_json::Value> = (0..1200).map(|n| json!({ "n": n })).collect();
    assert_eq!(stored, expected);
}

#[tokio::test]
async fn stdin_is_read_with_a_dash() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    let table = cli
        .run_with_stdin(
            &["publish", "audit", "--file", "-"],
            "{\"a\":1}\n\n{\"a\":2}\n",
        )
        .ok();
    assert!(table.contains("published 2 event(s)"), "{table}");
    assert_eq!(
        payloads(&mut conn, &cli.stream("audit")).await,
        [json!({ "a": 1 }), json!({ "a": 2 })]
    );
}

#[tokio::test]
async fn a_bad_line_is_reported_by_number_and_nothing_is_published() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(&path, "{\"n\":1}\n\n{\"n\":2\n{\"n\":3}\n").unwrap();

    let stderr = cli
        .run(&["publish", "order.created", "--file", path.to_str().unwrap()])
        .fails_with("line 3");
    assert!(stderr.contains("invalid JSON"), "{stderr}");
    assert!(stderr.contains("bad.jsonl"), "{stderr}");
    assert_eq!(xlen(&mut conn, &cli.stream("order.created")).await, 0);

    // Too large for the wire format: also caught before anything is sent.
    let big = format!("{{\"n\":1}}\n\"{}\"\n", "x".repeat(2 * 1024 * 1024));
    cli.run_with_stdin(&["publish", "order.created", "--file", "-"], &big)
        .fails_with("stdin line 2");
    assert_eq!(xlen(&mut conn, &cli.stream("order.created")).await, 0);

    cli.run(&["publish", "order.created", "{nope"])
        .fails_with("invalid JSON");
    cli.run(&["publish", "bad type", "{}"])
        .fails_with("event type");
    cli.run(&["publish", "dlq", "{}"]).fails_with("reserved");
    cli.run_with_stdin(&["publish", "order.created", "--file", "-"], "\n\n")
        .fails_with("no payloads");
    cli.run(&[
        "publish",
        "order.created",
        "--file",
        "/nonexistent/events.jsonl",
    ])
    .fails_with("/nonexistent/events.jsonl");
}
