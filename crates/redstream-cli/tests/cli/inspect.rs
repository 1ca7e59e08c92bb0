//! `redstream streams`, `info`, `groups`, `pending` and `claim`, in both output forms, with the
//! stream named by type, lane, full key or `dlq`; unknown streams and groups fail.

use redstream_testkit::RedisServer;
use serde_json::json;

use crate::support::{Cli, connection, raw};

/// Two events of `order.created` read by consumer `c1` of group `billing` and not acknowledged,
/// a third one not delivered, and one high-priority event.
async fn pending_setup(server: &RedisServer, cli: &Cli) {
    let mut conn = connection(server).await;
    let stream = cli.stream("order.created");
    for n in 0..3 {
        cli.run(&["publish", "order.created", &format!(r#"{{"n":{n}}}"#)])
            .ok();
    }
    cli.run(&["publish", "order.created", "{}", "--priority", "high"])
        .ok();
    let _: () = raw(&mut conn, &["XGROUP", "CREATE", &stream, "billing", "0"]).await;
    let _: redis::Value = raw(
        &mut conn,
        &[
            "XREADGROUP",
            "GROUP",
            "billing",
            "c1",
            "COUNT",
            "2",
            "STREAMS",
            &stream,
            ">",
        ],
    )
    .await;
}

#[tokio::test]
async fn streams_lists_every_stream_of_the_prefix() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let empty = cli.run(&["streams"]).ok();
    assert!(empty.contains("no streams"), "{empty}");
    assert_eq!(cli.json(&["streams"])["streams"], json!([]));

    pending_setup(&server, &cli).await;
    // Another prefix's stream is not listed.
    Cli::with_url(server.url())
        .run(&["publish", "order.created", "{}"])
        .ok();

    let out = cli.json(&["streams"]);
    assert_eq!(out["prefix"], cli.prefix.as_str());
    let streams = out["streams"].as_array().unwrap();
    let names: Vec<&str> = streams
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    let normal = cli.stream("order.created");
    let high = format!("{normal}#high");
    assert_eq!(names, [normal.as_str(), high.as_str()]);
    let normal = &streams[0];
    assert_eq!(normal["event_type"], "order.created");
    assert_eq!(normal["priority"], "normal");
    assert_eq!(normal["length"], 3);
    let group = &normal["groups"][0];
    assert_eq!(group["name"], "billing");
    assert_eq!(group["pending"], 2);
    assert_eq!(group["lag"], 1);
    assert!(group["oldest_pending_age_secs"].as_f64().is_some());
    assert_eq!(streams[1]["priority"], "high");

    let table = cli.run(&["streams"]).ok();
    let row = table
        .lines()
        .find(|l| l.contains(&format!("{}:order.created ", cli.tag())))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row
        .split(['│', '┆'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    // STREAM, LENGTH, GROUPS, MAX LAG, PENDING, OLDEST PENDING
    assert_eq!(&cells[1..5], ["3", "1", "1", "2"], "{table}");
    assert!(table.contains("OLDEST PENDING"), "{table}");
}

#[tokio::test]
async fn info_takes_a_type_a_lane_or_a_full_key() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    pending_setup(&server, &cli).await;

    let by_type = cli.json(&["info", "order.created"]);
    let by_key = cli.json(&["info", &cli.stream("order.created")]);
    assert_eq!(by_type["name"], cli.stream("order.created").as_str());
    assert_eq!(by_type["length"], by_key["length"]);
    assert_eq!(by_type["groups"][0]["name"], "billing");
    let high = cli.json(&["info", "order.created#high"]);
    assert_eq!(high["length"], 1);
    assert_eq!(high["groups"], json!([]));

    let table = cli.run(&["info", "order.created"]).ok();
    assert!(table.contains("length"), "{table}");
    assert!(table.contains("billing"), "{table}");

    cli.run(&["info", "order.missing"])
        .fails_with("no such stream");
    cli.run(&["info", "dlq"]).fails_with("no such stream");
    cli.run(&["info", "{another}:order.created"])
        .fails_with("not under the prefix");
    cli.run(&["info", "order.created#urgent"])
        .fails_with("critical, high or low");
}

#[tokio::test]
async fn groups_lists_consumers() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    pending_setup(&server, &cli).await;

    let out = cli.json(&["groups", "order.created"]);
    assert_eq!(out["stream"], cli.stream("order.created").as_str());
    let group = &out["groups"][0];
    assert_eq!(group["name"], "billing");
    assert_eq!(group["pending"], 2);
    assert_eq!(group["consumers"][0]["name"], "c1");
    assert_eq!(group["consumers"][0]["pending"], 2);

    let table = cli.run(&["groups", "order.created"]).ok();
    assert!(table.contains("c1"), "{table}");
    let none = cli.run(&["groups", "order.created#high"]).ok();
    assert!(none.contains("no consumer groups"), "{none}");
    cli.run(&["groups", "nothing.here"])
        .fails_with("no such stream");
}

#[tokio::test]
async fn pending_lists_and_filters_entries() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    pending_setup(&server, &cli).await;

    let out = cli.json(&["pending", "order.created", "billing"]);
    let entries = out["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["consumer"], "c1");
    assert_eq!(entries[0]["deliveries"], 1);
    let one = cli.json(&["pending", "order.created", "billing", "--count", "1"]);
    assert_eq!(one["entries"].as_array().unwrap().len(), 1);
    let nobody = cli.json(&["pending", "order.created", "billing", "--consumer", "c9"]);
    assert_eq!(nobody["entries"], json!([]));
    let idle = cli.json(&["pending", "order.created", "billing", "--min-idle", "1h"]);
    assert_eq!(idle["entries"], json!([]));
    // More than Redis takes (i64 milliseconds) is capped, not a server error.
    let forever = cli.json(&[
        "pending",
        "order.created",
        "billing",
        "--min-idle",
        "500000000years",
    ]);
    assert_eq!(forever["entries"], json!([]));

    let table = cli.run(&["pending", "order.created", "billing"]).ok();
    assert!(
        table.contains(entries[1]["id"].as_str().unwrap()),
        "{table}"
    );

    cli.run(&["pending", "order.created", "nobody"])
        .fails_with("no such consumer group");
    cli.run(&["pending", "order.none", "billing"])
        .fails_with("no such stream");
    let bad = cli.run(&["pending", "order.created", "billing", "--min-idle", "soon"]);
    assert_eq!(bad.code, Some(2), "clap refuses a bad duration: {bad:#?}");
}

#[tokio::test]
async fn claim_hands_idle_entries_to_a_consumer() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    pending_setup(&server, &cli).await;

    let none = cli.json(&[
        "claim",
        "order.created",
        "billing",
        "c2",
        "--min-idle",
        "1h",
    ]);
    assert_eq!(none["claimed"], json!([]));
    let forever = cli.json(&[
        "claim",
        "order.created",
        "billing",
        "c2",
        "--min-idle",
        "500000000years",
    ]);
    assert_eq!(forever["claimed"], json!([]));

    let out = cli.json(&[
        "claim",
        "order.created",
        "billing",
        "c2",
        "--min-idle",
        "0s",
        "--count",
        "1",
    ]);
    assert_eq!(out["consumer"], "c2");
    let claimed = out["claimed"].as_array().unwrap();
    assert_eq!(claimed.len(), 1);
    let pending = cli.json(&["pending", "order.created", "billing", "--consumer", "c2"]);
    assert_eq!(pending["entries"][0]["id"], claimed[0]);
    assert_eq!(
        pending["entries"][0]["deliveries"], 1,
        "claiming is not a delivery"
    );

    let table = cli
        .run(&[
            "claim",
            "order.created",
            "billing",
            "c3",
            "--min-idle",
            "0s",
        ])
        .ok();
    assert!(table.contains("claimed 2 entries"), "{table}");

    cli.run(&["claim", "order.created", "nobody", "c2", "--min-idle", "0s"])
        .fails_with("no such consumer group");
    cli.run(&["claim", "order.none", "billing", "c2", "--min-idle", "0s"])
        .fails_with("no such stream");
    let missing = cli.run(&["claim", "order.created", "billing", "c2"]);
    assert_eq!(
        missing.code,
        Some(2),
        "--min-idle is required: {missing:#?}"
    );
    assert!(missing.stderr.contains("--min-idle"), "{missing:#?}");
}
