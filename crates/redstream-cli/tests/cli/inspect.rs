//! `redstream streams`, `info`, `groups`, `pending` and `claim`, in both output forms, with the
//! stream named by type, by full name (seed 004's `events.raw`, any stream) or `dlq`, under a
//! prefix or the empty one; `--streams` patterns; unknown streams and groups fail.

use redstream_core::{Event, EventMetadata};
use redstream_testkit::RedisServer;
use serde_json::json;

use crate::support::{Cli, connection, raw};

/// Two events of `order.created` read by consumer `c1` of group `billing` and not acknowledged,
/// then two not delivered: a normal one and a high-priority one (in the same stream).
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
    // One stream per type: every priority is in it.
    let stream = cli.stream("order.created");
    assert_eq!(names, [stream.as_str()]);
    let summary = &streams[0];
    assert_eq!(summary["event_type"], "order.created");
    assert_eq!(summary["length"], 4);
    let group = &summary["groups"][0];
    assert_eq!(group["name"], "billing");
    assert_eq!(group["pending"], 2);
    assert_eq!(group["lag"], 2);
    assert!(group["oldest_pending_age_secs"].as_f64().is_some());

    let table = cli.run(&["streams"]).ok();
    let row = table
        .lines()
        .find(|l| l.contains(&format!("{stream} ")))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row
        .split(['│', '┆'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    // STREAM, LENGTH, GROUPS, MAX LAG, PENDING, OLDEST PENDING
    assert_eq!(&cells[1..5], ["4", "1", "2", "2"], "{table}");
    assert!(table.contains("OLDEST PENDING"), "{table}");
}

#[tokio::test]
async fn streams_shows_the_streams_a_pattern_or_a_name_points_at() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    // Seed 004's and seed 003's streams, written by someone else; and a key that is no stream.
    for stream in [
        "events.raw",
        "events.normalized",
        "profiles.merge_requests",
        "orders.events",
    ] {
        let _: String = raw(&mut conn, &["XADD", stream, "*", "event_id", "e1"]).await;
    }
    let _: () = raw(&mut conn, &["SET", "events.note", "not a stream"]).await;
    cli.run(&["publish", "order.created", "{}"]).ok();
    let names = |out: serde_json::Value| -> Vec<String> {
        out["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };

    // Only the prefix's streams by default.
    assert_eq!(names(cli.json(&["streams"])), [cli.stream("order.created")]);
    // Globs, repeated; names; comma lists; a name that does not exist is left out.
    let out = cli.json(&[
        "streams",
        "--streams",
        "events.*",
        "--streams",
        "profiles.*",
    ]);
    assert_eq!(out["patterns"], json!(["events.*", "profiles.*"]));
    assert_eq!(
        names(out),
        [
            cli.stream("order.created").as_str(),
            "events.normalized",
            "events.raw",
            "profiles.merge_requests"
        ]
    );
    assert_eq!(
        names(cli.json(&["streams", "--streams", "orders.events,events.raw,no.such"])),
        [
            cli.stream("order.created").as_str(),
            "events.raw",
            "orders.events"
        ]
    );
    let table = cli.run(&["streams", "--streams", "orders.*"]).ok();
    assert!(table.contains("orders.events"), "{table}");
    let none = Cli::with_url(server.url())
        .run(&["streams", "--streams", "nothing.*"])
        .ok();
    assert!(none.contains("or matching nothing.*"), "{none}");

    let bad = cli.run(&["streams", "--streams", ""]);
    assert_eq!(bad.code, Some(2), "an empty pattern is refused: {bad:#?}");
}

#[tokio::test]
async fn info_takes_a_type_a_full_name_or_dlq() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    pending_setup(&server, &cli).await;

    let by_type = cli.json(&["info", "order.created"]);
    let by_key = cli.json(&["info", &cli.stream("order.created")]);
    assert_eq!(by_type["name"], cli.stream("order.created").as_str());
    assert_eq!(by_type["length"], by_key["length"]);
    assert_eq!(by_type["groups"][0]["name"], "billing");

    // Any stream by its full name: seed 004's events.raw, in group event-processors.
    let mut conn = connection(&server).await;
    let _: String = raw(&mut conn, &["XADD", "events.raw", "*", "event_id", "e1"]).await;
    let _: () = raw(
        &mut conn,
        &["XGROUP", "CREATE", "events.raw", "event-processors", "0"],
    )
    .await;
    let named = cli.json(&["info", "events.raw"]);
    assert_eq!(named["name"], "events.raw");
    assert_eq!(named["event_type"], json!(null));
    assert_eq!(named["length"], 1);
    assert_eq!(named["groups"][0]["name"], "event-processors");
    let pending = cli.json(&["pending", "events.raw", "event-processors"]);
    assert_eq!(pending["stream"], "events.raw");

    // The empty prefix: an event type is its stream's name.
    let bare = Cli {
        url: server.url(),
        prefix: String::new(),
    };
    bare.run(&["publish", "order.placed", "{}"]).ok();
    let placed: u64 = raw(&mut conn, &["XLEN", "order.placed"]).await;
    assert_eq!(placed, 1);
    assert_eq!(bare.json(&["info", "order.placed"])["name"], "order.placed");
    let listed = bare.json(&["streams"]);
    assert_eq!(listed["prefix"], "");
    assert!(
        listed["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "order.placed"),
        "{listed}"
    );

    let table = cli.run(&["info", "order.created"]).ok();
    assert!(table.contains("length"), "{table}");
    assert!(table.contains("billing"), "{table}");

    cli.run(&["info", "order.missing"])
        .fails_with("no such stream");
    cli.run(&["info", "dlq"]).fails_with("no such stream");
    cli.run(&["info", "{another}:order.created"])
        .fails_with("no such stream");
    cli.run(&["info", "order created"])
        .fails_with("stream name \"order created\"");
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
    cli.run(&["publish", "order.shipped", "{}"]).ok();
    let none = cli.run(&["groups", "order.shipped"]).ok();
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

#[tokio::test]
async fn key_layout_cluster_names_type_streams_with_a_tag_each() {
    use redstream_transport::{RedisConfig, RedisTransport, TransportOptions};

    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    fn with<'a>(args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["--key-layout", "cluster"];
        all.extend_from_slice(args);
        all
    }
    cli.run(&with(&["publish", "order.created", "{}"])).ok();
    let tagged = format!("{}:{{order.created}}", cli.prefix);
    let mut conn = connection(&server).await;
    let len: u64 = raw(&mut conn, &["XLEN", &tagged]).await;
    assert_eq!(len, 1);
    assert_eq!(
        cli.json(&with(&["info", "order.created"]))["name"],
        tagged.as_str()
    );
    let listed = cli.json(&with(&["streams"]));
    assert_eq!(listed["streams"][0]["name"], tagged.as_str());
    assert_eq!(listed["streams"][0]["event_type"], "order.created");
    // A transport in the cluster layout dead-letters to <prefix>:{dlq}, where dlq list looks.
    let transport = RedisTransport::with_options(
        RedisConfig::default()
            .with_url(server.url())
            .with_stream_prefix(cli.prefix.clone()),
        TransportOptions::default().with_key_layout("cluster".parse().unwrap()),
    )
    .await
    .unwrap();
    let event = Event::new("a", json!({}), EventMetadata::default());
    transport.publish_to_dlq(event, "boom").await.unwrap();
    let dlq = cli.json(&with(&["dlq", "list"]));
    assert_eq!(dlq["stream"], format!("{}:{{dlq}}", cli.prefix).as_str());
    assert_eq!(dlq["total"], 1);
    // The environment sets it too; a layout that does not exist is refused.
    let by_env = cli
        .command(&["--json", "info", "order.created"])
        .env("REDSTREAM_KEY_LAYOUT", "cluster")
        .output()
        .unwrap();
    assert!(by_env.status.success(), "{by_env:?}");
    let bad = cli.run(&["--key-layout", "sharded", "streams"]);
    assert_eq!(bad.code, Some(2), "{bad:#?}");
}

/// `info` shows what `XINFO STREAM` counts beside the summary: entries ever added, the largest
/// deleted id, the last generated id and the recorded first id (Redis 7).
#[tokio::test]
async fn info_shows_the_stream_counters() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = crate::support::connection(&server).await;
    let stream = cli.stream("audit");
    let mut ids = Vec::new();
    for n in 0..3 {
        let id: String =
            crate::support::raw(&mut conn, &["XADD", &stream, "*", "n", &n.to_string()]).await;
        ids.push(id);
    }
    let _: u64 = crate::support::raw(&mut conn, &["XDEL", &stream, &ids[0]]).await;

    let info = cli.json(&["info", "audit"]);
    assert_eq!(info["length"], 2);
    assert_eq!(info["first_id"], ids[1].as_str());
    assert_eq!(info["last_generated_id"], ids[2].as_str());
    assert_eq!(info["entries_added"], 3, "{info}");
    assert_eq!(info["max_deleted_entry_id"], ids[0].as_str(), "{info}");
    assert_eq!(info["recorded_first_entry_id"], ids[1].as_str(), "{info}");
    let table = cli.run(&["info", "audit"]).ok();
    for (name, value) in [
        ("entries added", "3"),
        ("max deleted id", ids[0].as_str()),
        ("recorded first id", ids[1].as_str()),
        ("last generated id", ids[2].as_str()),
    ] {
        assert!(
            table
                .lines()
                .any(|line| line.contains(name) && line.contains(value)),
            "{name} {value}: {table}"
        );
    }
}

/// `streams --watch` prints the listing again every interval: lag and pending as they change,
/// until `--watch-count` listings or Ctrl-C.
#[tokio::test]
async fn streams_watch_reprints_until_stopped() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    let stream = cli.stream("audit");
    let _: String = raw(&mut conn, &["XADD", &stream, "*", "n", "0"]).await;
    let _: String = raw(&mut conn, &["XGROUP", "CREATE", &stream, "ops", "0"]).await;

    let bounded = cli
        .run(&[
            "--json",
            "streams",
            "--watch",
            "100ms",
            "--watch-count",
            "3",
        ])
        .ok();
    let rounds: Vec<serde_json::Value> = bounded
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rounds.len(), 3, "{bounded}");
    for round in &rounds {
        assert_eq!(round["streams"][0]["groups"][0]["lag"], 1, "{round}");
    }
    let table = cli
        .run(&["streams", "--watch", "100ms", "--watch-count", "2"])
        .ok();
    assert_eq!(table.matches(" every 100ms:").count(), 2, "{table}");
    assert_eq!(table.matches(stream.as_str()).count(), 2, "{table}");

    // Unbounded: the lag grows in a later listing once entries are added; Ctrl-C ends it (0).
    let mut running =
        crate::support::Running::start(cli.command(&["--json", "streams", "--watch", "100ms"]));
    let first: serde_json::Value = serde_json::from_str(&running.wait_for_stdout_line()).unwrap();
    assert_eq!(first["streams"][0]["groups"][0]["lag"], 1);
    for n in 1..=2 {
        let _: String = raw(&mut conn, &["XADD", &stream, "*", "n", &n.to_string()]).await;
    }
    loop {
        let round: serde_json::Value =
            serde_json::from_str(&running.wait_for_stdout_line()).unwrap();
        if round["streams"][0]["groups"][0]["lag"] == 3 {
            break;
        }
    }
    running.signal("INT");
    let out = running.finish();
    assert_eq!(out.code, Some(0), "{out:#?}");

    let refused = cli.run(&["streams", "--watch-count", "2"]);
    assert_eq!(
        refused.code,
        Some(2),
        "--watch-count needs --watch: {refused:#?}"
    );
    let refused = cli.run(&["streams", "--watch", "1ms"]);
    assert_eq!(refused.code, Some(2), "{refused:#?}");
    assert!(refused.stderr.contains("at least 100ms"), "{refused:#?}");
}
