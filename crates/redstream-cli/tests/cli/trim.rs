//! `redstream trim` (and each refusal: no confirmation, entries still pending, a bad minimum
//! id) and `redstream range`, including `--latest`, against a real server.

use redstream_testkit::RedisServer;
use serde_json::json;

use crate::support::{Cli, connection, raw, xlen};

/// Five events in `order.created`; consumer `c1` of group `billing` read the first two.
async fn setup(server: &RedisServer, cli: &Cli) -> (String, Vec<String>) {
    let mut conn = connection(server).await;
    let stream = cli.stream("order.created");
    let mut ids = Vec::new();
    for n in 0..5 {
        let out = cli.json(&["publish", "order.created", &format!(r#"{{"n":{n}}}"#)]);
        ids.push(out["ids"][0].as_str().unwrap().to_owned());
    }
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
    (stream, ids)
}

#[tokio::test]
async fn trim_refuses_to_delete_pending_entries_unless_forced() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    let (stream, ids) = setup(&server, &cli).await;

    cli.run(&["trim", "order.created", "--maxlen", "3"])
        .fails_with("--yes");
    // Keeping 4 would delete the first entry, pending for c1: refused, nothing deleted.
    let refused = cli
        .run(&["trim", "order.created", "--maxlen", "4", "--yes"])
        .fails_with("billing (1 pending)");
    assert!(refused.contains("--force"), "{refused}");
    cli.run(&["trim", "order.created", "--minid", &ids[2], "--yes"])
        .fails_with("billing (2 pending)");
    assert_eq!(xlen(&mut conn, &stream).await, 5);
    cli.run(&["trim", "order.created", "--minid", "soon", "--yes"])
        .fails_with("minimum id");
    cli.run(&["trim", "missing.type", "--maxlen", "1", "--yes"])
        .fails_with("no such stream");

    // Once the first is acknowledged, keeping 4 deletes it.
    let _: u64 = raw(&mut conn, &["XACK", &stream, "billing", &ids[0]]).await;
    let out = cli.json(&["trim", "order.created", "--maxlen", "4", "--yes"]);
    assert_eq!(out, json!({ "stream": stream, "removed": 1 }));
    // Entries not delivered to the group are not pending: keeping ids[2].. still hits ids[1].
    cli.run(&["trim", "order.created", "--minid", &ids[2], "--yes"])
        .fails_with("billing (1 pending)");
    // Forced: the pending entry goes too.
    let text = cli
        .run(&[
            "trim",
            "order.created",
            "--minid",
            &ids[3],
            "--force",
            "--yes",
        ])
        .ok();
    assert!(text.contains("removed 2 entries"), "{text}");
    assert_eq!(xlen(&mut conn, &stream).await, 2);
    // Nothing left to trim is no refusal.
    let none = cli.json(&["trim", "order.created", "--maxlen", "10", "--yes"]);
    assert_eq!(none["removed"], 0);
    let all = cli.json(&["trim", "order.created", "--maxlen", "0", "--yes"]);
    assert_eq!(all["removed"], 2);
}

#[tokio::test]
async fn range_reads_by_id_and_the_latest() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let (_, ids) = setup(&server, &cli).await;

    let latest = cli.json(&["range", "order.created", "--latest", "2"]);
    let got: Vec<&str> = latest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[3].as_str(), ids[4].as_str()], "oldest first");
    assert_eq!(latest["entries"][1]["event"]["payload"], json!({ "n": 4 }));

    let from = cli.json(&[
        "range",
        "order.created",
        "--from",
        &format!("({}", ids[0]),
        "--count",
        "2",
    ]);
    assert_eq!(from["entries"][0]["id"], ids[1].as_str());
    assert_eq!(from["entries"].as_array().unwrap().len(), 2);

    let text = cli.run(&["range", "order.created", "--latest", "1"]).ok();
    assert!(text.starts_with(&ids[4]), "{text}");
    assert!(text.contains(r#"{"n":4}"#), "{text}");
    cli.run(&["range", "missing.type", "--latest", "1"])
        .fails_with("no such stream");
    let bad = cli.run(&["range", "order.created", "--latest", "0"]);
    assert_eq!(bad.code, Some(2), "{bad:#?}");
}

/// Finding where `--maxlen` cuts means reading entries inside Redis; past 100,000 of them the
/// trim is refused (a long script blocks the server) and `--minid` or `--force` do it. Without
/// pending entries there is nothing to find, and a long stream trims at once.
#[tokio::test]
async fn a_maxlen_check_too_long_for_one_script_is_refused() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    let stream = cli.stream("bulk");
    for chunk in 0..20_u32 {
        let mut pipe = redis::pipe();
        for n in 0..10_000_u32 {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("n")
                .arg(chunk * 10_000 + n)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    let _: String = raw(&mut conn, &["XADD", &stream, "*", "n", "200000"]).await;
    let _: String = raw(&mut conn, &["XADD", &stream, "*", "n", "200001"]).await;
    // A group that reads nothing: no entry is pending, so no check and no read.
    let _: () = raw(&mut conn, &["XGROUP", "CREATE", &stream, "idle", "$"]).await;
    let out = cli.json(&["trim", &stream, "--maxlen", "200001", "--yes"]);
    assert_eq!(out["removed"], json!(1));
    // One pending entry: keeping 100,001 of 200,001 means reading 100,001 entries.
    let _: redis::Value = raw(
        &mut conn,
        &[
            "XREADGROUP",
            "GROUP",
            "idle",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            &stream,
            "0",
        ],
    )
    .await;
    let _: () = raw(&mut conn, &["XGROUP", "SETID", &stream, "idle", "0"]).await;
    let _: redis::Value = raw(
        &mut conn,
        &[
            "XREADGROUP",
            "GROUP",
            "idle",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            &stream,
            ">",
        ],
    )
    .await;
    let refused = cli
        .run(&["trim", &stream, "--maxlen", "100001", "--yes"])
        .fails_with("100001 entries");
    assert!(refused.contains("trim by id"), "{refused}");
    assert_eq!(xlen(&mut conn, &stream).await, 200_001);
    // Forced, it trims.
    let out = cli.json(&["trim", &stream, "--maxlen", "100001", "--force", "--yes"]);
    assert_eq!(out["removed"], json!(100_000));
}
