//! `redstream group create|destroy|set-id|delete-consumer`, `ack` and `claim --id` against a
//! real server: what they change, and each refusal (no confirmation, pending entries, a group
//! that exists or does not, a bad position or id).

use redis::aio::MultiplexedConnection;
use redstream_testkit::RedisServer;
use serde_json::json;

use crate::support::{Cli, connection, raw};

/// `XINFO GROUPS` of `stream` as (name, last-delivered id, pending) triples.
async fn groups(conn: &mut MultiplexedConnection, stream: &str) -> Vec<(String, String, u64)> {
    let reply: Vec<std::collections::HashMap<String, redis::Value>> =
        raw(conn, &["XINFO", "GROUPS", stream]).await;
    reply
        .into_iter()
        .map(|g| {
            let text = |k: &str| redis::from_redis_value::<String>(g[k].clone()).unwrap();
            let number = |k: &str| redis::from_redis_value::<u64>(g[k].clone()).unwrap();
            (text("name"), text("last-delivered-id"), number("pending"))
        })
        .collect()
}

/// Three events in `order.created`; consumer `c1` of group `billing` (created at `0`) read two.
/// Returns the stream and the three ids.
async fn setup(server: &RedisServer, cli: &Cli) -> (String, Vec<String>) {
    let mut conn = connection(server).await;
    let stream = cli.stream("order.created");
    let mut ids = Vec::new();
    for n in 0..3 {
        let out = cli.json(&["publish", "order.created", &format!(r#"{{"n":{n}}}"#)]);
        ids.push(out["ids"][0].as_str().unwrap().to_owned());
    }
    cli.run(&[
        "group",
        "create",
        "order.created",
        "billing",
        "--start",
        "0",
    ])
    .ok();
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
async fn groups_are_created_at_the_end_the_start_or_an_id() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    let stream = cli.stream("order.created");

    // No stream: refused without --mkstream, created with it.
    cli.run(&["group", "create", "order.created", "g0"])
        .fails_with("--mkstream");
    let made = cli.json(&["group", "create", "order.created", "g0", "--mkstream"]);
    assert_eq!(made["stream"], stream.as_str());
    assert_eq!(made["created"], true);
    assert_eq!(made["start"], "$");
    assert_eq!(groups(&mut conn, &stream).await[0].1, "0-0");

    let first = cli.json(&["publish", "order.created", "{}"])["ids"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let second = cli.json(&["publish", "order.created", "{}"])["ids"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let text = cli
        .run(&["group", "create", "order.created", "at-end"])
        .ok();
    assert!(text.contains("created group at-end"), "{text}");
    cli.run(&[
        "group",
        "create",
        "order.created",
        "at-start",
        "--start",
        "0",
    ])
    .ok();
    cli.run(&[
        "group",
        "create",
        "order.created",
        "after",
        "--start",
        &first,
    ])
    .ok();
    let listed = groups(&mut conn, &stream).await;
    let last = |name: &str| listed.iter().find(|g| g.0 == name).unwrap().1.clone();
    assert_eq!(last("at-end"), second);
    assert_eq!(last("at-start"), "0-0");
    assert_eq!(last("after"), first);

    // Refusals: the group exists, a position that is not one.
    cli.run(&["group", "create", "order.created", "at-end"])
        .fails_with("already exists");
    cli.run(&["group", "create", "order.created", "g9", "--start", "soon"])
        .fails_with("position");
    assert_eq!(groups(&mut conn, &stream).await.len(), 4);
}

#[tokio::test]
async fn destroy_and_set_id_confirm_and_change_the_group() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    let (stream, ids) = setup(&server, &cli).await;

    // Without --yes and without a terminal: refused before connecting, nothing changed.
    cli.run(&["group", "set-id", "order.created", "billing", "0"])
        .fails_with("--yes");
    cli.run(&["group", "destroy", "order.created", "billing"])
        .fails_with("--yes");
    assert_eq!(groups(&mut conn, &stream).await[0].1, ids[1]);

    let moved = cli.json(&["group", "set-id", "order.created", "billing", "$", "--yes"]);
    assert_eq!(moved["previous_id"], ids[1].as_str());
    assert_eq!(groups(&mut conn, &stream).await[0].1, ids[2]);
    let rewound = cli
        .run(&[
            "group",
            "set-id",
            "order.created",
            "billing",
            &ids[0],
            "--yes",
        ])
        .ok();
    assert!(
        rewound.contains(&format!("moved from {} to {}", ids[2], ids[0])),
        "{rewound}"
    );
    let (_, last, pending) = groups(&mut conn, &stream).await.remove(0);
    assert_eq!((last, pending), (ids[0].clone(), 2), "pending entries stay");
    cli.run(&["group", "set-id", "order.created", "billing", "+", "--yes"])
        .fails_with("position");
    cli.run(&["group", "set-id", "order.created", "nope", "0", "--yes"])
        .fails_with("no such consumer group");

    let destroyed = cli.json(&["group", "destroy", "order.created", "billing", "--yes"]);
    assert_eq!(destroyed["destroyed"], true);
    assert_eq!(destroyed["pending"], 2);
    assert_eq!(destroyed["consumers"], 1);
    assert!(groups(&mut conn, &stream).await.is_empty());
    let len: u64 = raw(&mut conn, &["XLEN", &stream]).await;
    assert_eq!(len, 3, "the entries stay");
    cli.run(&["group", "destroy", "order.created", "billing", "--yes"])
        .fails_with("no such consumer group");
    cli.run(&["group", "destroy", "missing.type", "billing", "--yes"])
        .fails_with("no such stream");
}

#[tokio::test]
async fn a_consumer_with_pending_entries_is_deleted_only_when_forced() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    let (stream, _) = setup(&server, &cli).await;
    let _: () = raw(
        &mut conn,
        &["XGROUP", "CREATECONSUMER", &stream, "billing", "idle"],
    )
    .await;

    let refused = cli
        .run(&["group", "delete-consumer", "order.created", "billing", "c1"])
        .fails_with("holds 2 pending entries");
    assert!(refused.contains("--force"), "{refused}");
    assert_eq!(groups(&mut conn, &stream).await[0].2, 2, "nothing lost");
    // --force needs a confirmation too.
    cli.run(&[
        "group",
        "delete-consumer",
        "order.created",
        "billing",
        "c1",
        "--force",
    ])
    .fails_with("--yes");

    // A consumer without pending entries goes without --force or a question.
    let gone = cli.json(&[
        "group",
        "delete-consumer",
        "order.created",
        "billing",
        "idle",
    ]);
    assert_eq!(gone["deleted"], true);
    assert_eq!(gone["pending_dropped"], 0);
    cli.run(&[
        "group",
        "delete-consumer",
        "order.created",
        "billing",
        "idle",
    ])
    .fails_with("no such consumer");

    let forced = cli.json(&[
        "group",
        "delete-consumer",
        "order.created",
        "billing",
        "c1",
        "--force",
        "--yes",
    ]);
    assert_eq!(forced["pending_dropped"], 2);
    assert_eq!(groups(&mut conn, &stream).await[0].2, 0);
    let consumers: Vec<redis::Value> =
        raw(&mut conn, &["XINFO", "CONSUMERS", &stream, "billing"]).await;
    assert!(consumers.is_empty());
}

#[tokio::test]
async fn ack_and_claim_by_id() {
    let server = RedisServer::start().await.unwrap();
    let cli = Cli::new(&server);
    let mut conn = connection(&server).await;
    let (stream, ids) = setup(&server, &cli).await;

    // Claim one pending entry by id for c2; an id that is not pending is reported, not claimed.
    let claimed = cli.json(&[
        "claim",
        "order.created",
        "billing",
        "c2",
        "--id",
        &ids[1],
        "--id",
        &ids[2],
    ]);
    assert_eq!(claimed["claimed"], json!([ids[1]]));
    assert_eq!(claimed["not_claimed"], json!([ids[2]]));
    let pending = cli.json(&["pending", "order.created", "billing", "--consumer", "c2"]);
    assert_eq!(pending["entries"][0]["id"], ids[1].as_str());
    // Not idle long enough: nothing moves.
    let recent = cli.json(&[
        "claim",
        "order.created",
        "billing",
        "c3",
        "--id",
        &ids[0],
        "--min-idle",
        "1h",
    ]);
    assert_eq!(recent["claimed"], json!([]));
    cli.run(&["claim", "order.created", "billing", "c3", "--id", "x-1"])
        .fails_with("entry id");
    cli.run(&["claim", "order.created", "nope", "c3", "--id", &ids[0]])
        .fails_with("no such consumer group");

    // Ack: one was pending, one was not; the stream keeps both.
    let acked = cli.json(&["ack", "order.created", "billing", &ids[0], &ids[2]]);
    assert_eq!(acked["asked"], 2);
    assert_eq!(acked["acknowledged"], 1);
    assert_eq!(groups(&mut conn, &stream).await[0].2, 1);
    let len: u64 = raw(&mut conn, &["XLEN", &stream]).await;
    assert_eq!(len, 3);
    let text = cli.run(&["ack", "order.created", "billing", &ids[1]]).ok();
    assert!(text.contains("acknowledged 1 of 1 entry"), "{text}");
    cli.run(&["ack", "order.created", "nope", &ids[1]])
        .fails_with("no such consumer group");
    cli.run(&["ack", "order.created", "billing", "12"])
        .fails_with("entry id");
    cli.run(&["ack", "missing.type", "billing", &ids[1]])
        .fails_with("no such stream");
}
