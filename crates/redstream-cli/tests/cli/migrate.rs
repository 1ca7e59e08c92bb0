//! `redstream migrate` on a server filled by hand in redstream 0.1's layout (`{events}:<type>`,
//! lanes `#high`..., `{events}:dlq`, `{myapp}:<key>`, `{myapp}#checkpoint:<name>`,
//! `<stream>:redstream-sink:<id>`): the dry run, the apply, what an operator's `redis-cli` finds
//! afterwards, and the refusals (a taken name, a lane that still holds entries, a keyspace that
//! changed under the plan, a cluster node).

use redis::aio::MultiplexedConnection;
use redstream_cli::commands::migrate::{Options, Outcome, Problem, apply, plan};
use redstream_core::keys::{self, KeyLayout};
use redstream_testkit::RedisServer;
use serde_json::{Value, json};

use crate::support::{Cli, connection, raw, xlen};

/// A stream entry as `XRANGE` returns it.
type Entry = (String, Vec<(String, String)>);

/// The CLI on `server` with the prefix the 0.1 data was written under.
fn cli(server: &RedisServer) -> Cli {
    let mut cli = Cli::new(server);
    cli.prefix = "events".to_owned();
    cli
}

/// Fills `conn` as redstream 0.1 left it under stream prefix `events` and state prefix
/// `myapp`: three orders of which two are delivered to `billing` and unacknowledged, two empty
/// lanes (one with a group), a dead letter, state keys and a checkpoint, two sink progress keys;
/// and keys that are not the migration's business.
async fn fill_old_layout(conn: &mut MultiplexedConnection) {
    for n in 1..=3 {
        let event =
            format!(r#"{{"v":1,"id":"e{n}","type":"order.created","payload":{{"n":{n}}}}}"#);
        raw::<String>(
            conn,
            &["XADD", "{events}:order.created", "*", "event", &event],
        )
        .await;
    }
    raw::<()>(
        conn,
        &["XGROUP", "CREATE", "{events}:order.created", "billing", "0"],
    )
    .await;
    raw::<redis::Value>(
        conn,
        &[
            "XREADGROUP",
            "GROUP",
            "billing",
            "c1",
            "COUNT",
            "2",
            "STREAMS",
            "{events}:order.created",
            ">",
        ],
    )
    .await;
    raw::<()>(
        conn,
        &[
            "XGROUP",
            "CREATE",
            "{events}:order.created#high",
            "billing",
            "$",
            "MKSTREAM",
        ],
    )
    .await;
    // An empty lane without a group: what is left after a trim.
    raw::<String>(
        conn,
        &["XADD", "{events}:order.created#low", "1-1", "event", "{}"],
    )
    .await;
    raw::<u64>(conn, &["XDEL", "{events}:order.created#low", "1-1"]).await;
    raw::<String>(
        conn,
        &[
            "XADD",
            "{events}:dlq",
            "*",
            "event",
            "{}",
            "error",
            "boom",
            "original_type",
            "order.created",
        ],
    )
    .await;
    raw::<()>(conn, &["SET", "{myapp}:counter", "3"]).await;
    raw::<u64>(conn, &["HSET", "{myapp}:profile", "name", "ann"]).await;
    raw::<()>(conn, &["SET", "{myapp}:session", "s", "PX", "600000"]).await;
    raw::<u64>(
        conn,
        &[
            "HSET",
            "{myapp}#checkpoint:daily",
            "format",
            "1",
            "position",
            "1-0",
            "saved_at_ms",
            "1",
        ],
    )
    .await;
    // A sink writing to its own stream, and one writing into the transport's stream.
    raw::<String>(conn, &["XADD", "orders.events", "*", "event", "{}"]).await;
    raw::<u64>(
        conn,
        &["HSET", "orders.events:redstream-sink:s1", "offset", "10"],
    )
    .await;
    raw::<u64>(
        conn,
        &[
            "HSET",
            "{events}:order.created:redstream-sink:s2",
            "offset",
            "3",
        ],
    )
    .await;
    // Not the migration's business: another prefix, a foreign key.
    raw::<String>(conn, &["XADD", "{events2}:order.created", "*", "f", "v"]).await;
    raw::<()>(conn, &["SET", "other:thing", "x"]).await;
}

/// Every key with its type: what "nothing changed" compares.
async fn snapshot(conn: &mut MultiplexedConnection) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for key in keys::scan(conn, "*", None, "test").await.unwrap() {
        let kind: String = raw(conn, &["TYPE", &key]).await;
        out.push((key, kind));
    }
    out
}

/// `redis-cli -p <port> <args>` as an operator would type it.
fn redis_cli(server: &RedisServer, args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .args(["-h", server.host(), "-p", &server.port().to_string()])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The `(kind, from, to)` of the plan's renames.
fn renames(plan: &Value) -> Vec<(String, String, String)> {
    plan["renames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["from"].as_str().unwrap().to_owned(),
                r["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn triples(items: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    items
        .iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect()
}

/// What the plain layout renames in [`fill_old_layout`]'s data.
const PLAIN_RENAMES: [(&str, &str, &str); 8] = [
    ("stream", "{events}:order.created", "events:order.created"),
    ("dlq", "{events}:dlq", "events:dlq"),
    ("state", "{myapp}:counter", "myapp:counter"),
    ("state", "{myapp}:profile", "myapp:profile"),
    ("state", "{myapp}:session", "myapp:session"),
    (
        "checkpoint",
        "{myapp}#checkpoint:daily",
        "myapp#checkpoint:daily",
    ),
    (
        "sink_progress",
        "orders.events:redstream-sink:s1",
        "{orders.events}:redstream-sink:s1",
    ),
    (
        "sink_progress",
        "{events}:order.created:redstream-sink:s2",
        "{events:order.created}:redstream-sink:s2",
    ),
];

#[tokio::test]
async fn the_dry_run_lists_the_plan_and_changes_nothing() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = connection(&server).await;
    fill_old_layout(&mut conn).await;
    let before = snapshot(&mut conn).await;
    let cli = cli(&server);

    let plan = cli.json(&["migrate", "--state-prefix", "myapp"]);
    assert_eq!(plan["applied"], false);
    assert_eq!(plan["layout"], "plain");
    assert_eq!(plan["prefix"], "events");
    assert_eq!(renames(&plan), triples(&PLAIN_RENAMES));
    assert_eq!(
        plan["deletions"],
        json!([
            { "kind": "lane", "key": "{events}:order.created#high" },
            { "kind": "lane", "key": "{events}:order.created#low" },
        ])
    );
    assert_eq!(plan["blockers"], json!([]));
    assert_eq!(plan["conflicts"], json!([]));

    let table = cli.run(&["migrate", "--state-prefix", "myapp"]).ok();
    for (_, from, to) in PLAIN_RENAMES {
        assert!(table.contains(from) && table.contains(to), "{table}");
    }
    assert!(table.contains("{events}:order.created#high"), "{table}");
    assert!(
        table.contains("dry run, nothing changed (8 to rename, 2 to delete)"),
        "{table}"
    );
    assert!(table.contains("--apply"), "{table}");

    assert_eq!(snapshot(&mut conn).await, before);
}

#[tokio::test]
async fn apply_renames_everything_and_pending_entries_stay_pending() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = connection(&server).await;
    fill_old_layout(&mut conn).await;
    let cli = cli(&server);

    let applied = cli.json(&["migrate", "--state-prefix", "myapp", "--apply"]);
    assert_eq!(applied["applied"], true);
    assert_eq!(renames(&applied), triples(&PLAIN_RENAMES));

    // What an operator types, from seed 000 and 001.
    let pending = redis_cli(&server, &["XPENDING", "events:order.created", "billing"]);
    assert_eq!(pending.lines().next(), Some("2"), "{pending}");
    assert!(pending.contains("c1"), "{pending}");
    assert_eq!(redis_cli(&server, &["XLEN", "events:dlq"]).trim(), "1");
    assert_eq!(redis_cli(&server, &["GET", "myapp:counter"]).trim(), "3");
    let groups = redis_cli(&server, &["XINFO", "GROUPS", "events:order.created"]);
    assert!(groups.contains("billing"), "{groups}");

    // The group resumes where it was: the one undelivered entry is next.
    let next: Vec<(String, Vec<Entry>)> = raw(
        &mut conn,
        &[
            "XREADGROUP",
            "GROUP",
            "billing",
            "c2",
            "STREAMS",
            "events:order.created",
            ">",
        ],
    )
    .await;
    assert_eq!(next[0].1.len(), 1);
    assert!(next[0].1[0].1[0].1.contains(r#""id":"e3""#), "{next:?}");

    assert_eq!(xlen(&mut conn, "events:order.created").await, 3);
    let name: String = raw(&mut conn, &["HGET", "myapp:profile", "name"]).await;
    assert_eq!(name, "ann");
    // RENAME keeps a key's time to live.
    let ttl: i64 = raw(&mut conn, &["PTTL", "myapp:session"]).await;
    assert!(ttl > 0 && ttl <= 600_000, "{ttl}");
    let position: String = raw(&mut conn, &["HGET", "myapp#checkpoint:daily", "position"]).await;
    assert_eq!(position, "1-0");
    let offset: String = raw(
        &mut conn,
        &["HGET", "{orders.events}:redstream-sink:s1", "offset"],
    )
    .await;
    assert_eq!(offset, "10");
    let offset: String = raw(
        &mut conn,
        &["HGET", "{events:order.created}:redstream-sink:s2", "offset"],
    )
    .await;
    assert_eq!(offset, "3");

    // Nothing of the old layout is left; the lanes are gone; the rest is untouched.
    for (_, from, _) in PLAIN_RENAMES {
        let exists: u64 = raw(&mut conn, &["EXISTS", from]).await;
        assert_eq!(exists, 0, "{from}");
    }
    let lanes: u64 = raw(
        &mut conn,
        &[
            "EXISTS",
            "{events}:order.created#high",
            "{events}:order.created#low",
        ],
    )
    .await;
    assert_eq!(lanes, 0);
    assert_eq!(xlen(&mut conn, "{events2}:order.created").await, 1);
    assert_eq!(xlen(&mut conn, "orders.events").await, 1);
    let other: String = raw(&mut conn, &["GET", "other:thing"]).await;
    assert_eq!(other, "x");

    // A second run has nothing left to do, and says so.
    let again = cli
        .run(&["migrate", "--state-prefix", "myapp", "--apply"])
        .ok();
    assert!(again.contains("nothing to migrate"), "{again}");
    assert!(
        again.contains("already named as the sink names it"),
        "{again}"
    );
}

#[tokio::test]
async fn the_cluster_layout_tags_each_stream_and_keeps_state_names() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = connection(&server).await;
    fill_old_layout(&mut conn).await;
    let cli = cli(&server);

    let applied = cli.json(&[
        "migrate",
        "--state-prefix",
        "myapp",
        "--layout",
        "cluster",
        "--apply",
    ]);
    assert_eq!(applied["layout"], "cluster");
    assert_eq!(
        renames(&applied),
        triples(&[
            ("stream", "{events}:order.created", "events:{order.created}"),
            ("dlq", "{events}:dlq", "events:{dlq}"),
            (
                "sink_progress",
                "orders.events:redstream-sink:s1",
                "{orders.events}:redstream-sink:s1",
            ),
            (
                "sink_progress",
                "{events}:order.created:redstream-sink:s2",
                "events:{order.created}:redstream-sink:s2",
            ),
        ])
    );
    let pending: (u64, String, String, Vec<(String, String)>) = raw(
        &mut conn,
        &["XPENDING", "events:{order.created}", "billing"],
    )
    .await;
    assert_eq!(pending.0, 2);
    assert_eq!(xlen(&mut conn, "events:{dlq}").await, 1);
    let counter: String = raw(&mut conn, &["GET", "{myapp}:counter"]).await;
    assert_eq!(counter, "3");
    assert!(keys::same_slot(
        "events:{order.created}",
        "events:{order.created}:redstream-sink:s2"
    ));
}

#[tokio::test]
async fn a_taken_name_refuses_the_whole_migration() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = connection(&server).await;
    fill_old_layout(&mut conn).await;
    // A consumer of the new version already created its stream, and a state key exists twice.
    raw::<()>(
        &mut conn,
        &[
            "XGROUP",
            "CREATE",
            "events:order.created",
            "billing",
            "$",
            "MKSTREAM",
        ],
    )
    .await;
    raw::<()>(&mut conn, &["SET", "myapp:counter", "0"]).await;
    let before = snapshot(&mut conn).await;
    let cli = cli(&server);

    let plan = cli.json(&["migrate", "--state-prefix", "myapp"]);
    assert_eq!(
        plan["conflicts"],
        json!([
            { "from": "{events}:order.created", "to": "events:order.created", "reason": "target_exists" },
            { "from": "{myapp}:counter", "to": "myapp:counter", "reason": "target_exists" },
        ])
    );

    let stderr = cli
        .run(&["migrate", "--state-prefix", "myapp", "--apply"])
        .fails_with("refusing to migrate, nothing was changed");
    assert!(
        stderr.contains("{events}:order.created -> events:order.created: target exists"),
        "{stderr}"
    );
    assert!(
        stderr.contains("{myapp}:counter -> myapp:counter: target exists"),
        "{stderr}"
    );
    assert_eq!(snapshot(&mut conn).await, before);
    let counter: String = raw(&mut conn, &["GET", "myapp:counter"]).await;
    assert_eq!(counter, "0");
}

#[tokio::test]
async fn a_lane_that_holds_entries_blocks_until_drained() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = connection(&server).await;
    fill_old_layout(&mut conn).await;
    // A high-priority order delivered to billing and not acknowledged, and a low one unread.
    raw::<String>(
        &mut conn,
        &["XADD", "{events}:order.created#high", "*", "event", "{}"],
    )
    .await;
    raw::<redis::Value>(
        &mut conn,
        &[
            "XREADGROUP",
            "GROUP",
            "billing",
            "c1",
            "STREAMS",
            "{events}:order.created#high",
            ">",
        ],
    )
    .await;
    raw::<String>(
        &mut conn,
        &["XADD", "{events}:order.created#low", "*", "event", "{}"],
    )
    .await;
    let before = snapshot(&mut conn).await;
    let cli = cli(&server);

    let plan = cli.json(&["migrate"]);
    assert_eq!(plan["deletions"], json!([]));
    assert_eq!(
        plan["blockers"],
        json!([
            {
                "key": "{events}:order.created#high",
                "entries": 1,
                "groups": [{ "group": "billing", "pending": 1, "lag": 0 }],
            },
            { "key": "{events}:order.created#low", "entries": 1, "groups": [] },
        ])
    );
    let table = cli.run(&["migrate"]).ok();
    assert!(table.contains("billing: 1 pending, lag 0"), "{table}");
    assert!(table.contains("--apply is refused"), "{table}");

    let stderr = cli
        .run(&["migrate", "--apply"])
        .fails_with("refusing to migrate, nothing was changed: 2 blocked lanes");
    assert!(
        stderr.contains(
            "lane {events}:order.created#high: 1 entries, 1 pending (billing: 1 pending, lag 0)"
        ),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("lane {events}:order.created#low: 1 entries, 0 pending (no consumer groups)"),
        "{stderr}"
    );
    assert_eq!(snapshot(&mut conn).await, before);

    // Drained (acknowledged and trimmed by the operator): the migration goes through.
    let ids: Vec<Entry> = raw(
        &mut conn,
        &["XRANGE", "{events}:order.created#high", "-", "+"],
    )
    .await;
    raw::<u64>(
        &mut conn,
        &["XACK", "{events}:order.created#high", "billing", &ids[0].0],
    )
    .await;
    for lane in ["{events}:order.created#high", "{events}:order.created#low"] {
        raw::<u64>(&mut conn, &["XTRIM", lane, "MAXLEN", "0"]).await;
    }
    let applied = cli.json(&["migrate", "--apply"]);
    assert_eq!(applied["deletions"].as_array().unwrap().len(), 2);
    let lanes: u64 = raw(
        &mut conn,
        &[
            "EXISTS",
            "{events}:order.created#high",
            "{events}:order.created#low",
        ],
    )
    .await;
    assert_eq!(lanes, 0);
}

#[tokio::test]
async fn the_script_checks_again_and_refuses_what_changed_since_the_plan() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = connection(&server).await;
    fill_old_layout(&mut conn).await;
    let options = Options::new("events", vec!["myapp".to_owned()], KeyLayout::Plain).unwrap();
    let plan = plan::plan(&mut conn, &options).await.unwrap();
    assert!(!plan.is_blocked());

    // Between the plan and the apply: a new name is taken, an empty lane gets an entry, and a
    // key to rename disappears.
    raw::<()>(&mut conn, &["SET", "events:dlq", "taken"]).await;
    raw::<String>(
        &mut conn,
        &["XADD", "{events}:order.created#low", "*", "event", "{}"],
    )
    .await;
    raw::<u64>(&mut conn, &["DEL", "{myapp}:profile"]).await;
    let before = snapshot(&mut conn).await;

    let outcome = apply::apply(&mut conn, &plan).await.unwrap();
    let Outcome::Refused(mut problems) = outcome else {
        panic!("applied over a changed keyspace: {outcome:?}");
    };
    problems.sort_by_key(|p| format!("{p:?}"));
    assert_eq!(
        problems,
        vec![
            Problem::Exists("events:dlq".to_owned()),
            Problem::LaneNotEmpty("{events}:order.created#low".to_owned()),
            Problem::Missing("{myapp}:profile".to_owned()),
        ]
    );
    assert_eq!(snapshot(&mut conn).await, before);
}

#[tokio::test]
async fn a_cluster_node_and_bad_prefixes_are_refused() {
    let server = RedisServer::builder()
        .config("cluster-enabled", "yes")
        .start()
        .await
        .unwrap();
    cli(&server)
        .run(&["migrate"])
        .fails_with("is a Redis Cluster node: redstream migrate works on a single Redis node");

    let server = RedisServer::start().await.unwrap();
    let mut empty = cli(&server);
    empty.prefix = String::new();
    empty.run(&["migrate"]).fails_with("must not be empty");
    cli(&server)
        .run(&["migrate", "--state-prefix", "a#b"])
        .fails_with("must not contain '#'");
    let bad_layout = cli(&server).run(&["migrate", "--layout", "hash"]);
    assert_eq!(bad_layout.code, Some(2), "{bad_layout:?}");

    // An empty server: nothing to do, and --apply is fine with that.
    let nothing = cli(&server).run(&["migrate", "--apply"]).ok();
    assert!(nothing.contains("nothing to migrate"), "{nothing}");
}

#[tokio::test]
async fn prefixes_match_literally_and_may_be_shared_by_streams_and_state() {
    let server = RedisServer::start().await.unwrap();
    let mut conn = connection(&server).await;
    // The prefix `ev[1]*` holds glob characters; `{ev1zz}:...` matches it as a pattern, not
    // as a name. The state store shares the stream prefix.
    raw::<String>(
        &mut conn,
        &["XADD", "{ev[1]*}:order.created", "*", "event", "{}"],
    )
    .await;
    raw::<()>(
        &mut conn,
        &[
            "XGROUP",
            "CREATE",
            "{ev[1]*}:order.created#low",
            "g",
            "$",
            "MKSTREAM",
        ],
    )
    .await;
    raw::<()>(&mut conn, &["SET", "{ev[1]*}:counter", "1"]).await;
    raw::<String>(
        &mut conn,
        &["XADD", "{ev1zz}:order.created", "*", "event", "{}"],
    )
    .await;
    let mut cli = Cli::new(&server);
    cli.prefix = "ev[1]*".to_owned();

    let applied = cli.json(&["migrate", "--state-prefix", "ev[1]*", "--apply"]);
    assert_eq!(
        renames(&applied),
        triples(&[
            ("stream", "{ev[1]*}:order.created", "ev[1]*:order.created"),
            ("state", "{ev[1]*}:counter", "ev[1]*:counter"),
        ])
    );
    assert_eq!(
        applied["deletions"],
        json!([{ "kind": "lane", "key": "{ev[1]*}:order.created#low" }])
    );
    assert_eq!(xlen(&mut conn, "ev[1]*:order.created").await, 1);
    assert_eq!(xlen(&mut conn, "{ev1zz}:order.created").await, 1);
    let counter: String = raw(&mut conn, &["GET", "ev[1]*:counter"]).await;
    assert_eq!(counter, "1");
}
