//! The ACL docs/dashboard.md gives a read-only dashboard user runs every view, and one with a
//! command left out gets an answer that names it.

use redstream_cli::serve::ServeConfig;
use redstream_testkit::RedisServer;
use serde_json::json;

use crate::support::{Dashboard, read_as};
use crate::websocket::next_json;

const USER: &str = "redstream-dashboard";
const PASSWORD: &str = "acl-pw-71c0d2e4";

/// The rules of the documented `ACL SETUSER redstream-dashboard on >CHANGE-ME ...` line.
fn documented_rules() -> Vec<String> {
    let doc = include_str!("../../../../docs/dashboard.md");
    let line = doc
        .lines()
        .find(|line| line.starts_with(&format!("ACL SETUSER {USER} on >")))
        .expect("docs/dashboard.md has the dashboard's ACL SETUSER line");
    line.split_whitespace().skip(5).map(str::to_owned).collect()
}

/// The rules docs/dashboard.md adds for `--allow-writes` ("With `--allow-writes`, add `...`").
fn documented_write_rules() -> Vec<String> {
    let doc = include_str!("../../../../docs/dashboard.md");
    let (_, rest) = doc
        .split_once("With `--allow-writes`, add `")
        .expect("docs/dashboard.md says what --allow-writes adds");
    let (rules, _) = rest.split_once('`').unwrap();
    rules.split_whitespace().map(str::to_owned).collect()
}

/// A server with the dashboard's user holding `rules`, and streams, a group with a pending
/// entry, and dead letters written by the default user.
async fn server_with(rules: &[String]) -> RedisServer {
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    RedisServer::builder()
        .acl_user_rules(USER, PASSWORD, &rules)
        .start()
        .await
        .unwrap()
}

async fn dashboard(rules: &[String], config: ServeConfig) -> (Dashboard, String) {
    let redis = server_with(rules).await;
    let url = redis.url_with_user(USER, PASSWORD);
    let d = Dashboard::start_as(redis, &url, config).await;
    d.publish("order.created", json!({ "order_id": "1" })).await;
    d.publish("order.created", json!({ "order_id": "2" })).await;
    let mut conn = d.conn().await;
    read_as(&mut conn, "events:order.created", "billing", "c1", 1).await;
    let dead = d
        .dead_letter("payment.failed", json!({ "card": "x" }), "card declined")
        .await;
    (d, dead)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_acl_runs_the_dashboard() {
    let rules = documented_rules();
    assert!(rules.iter().any(|r| r == "-@all"), "{rules:?}");
    let (d, dead) = dashboard(&rules, ServeConfig::default()).await;

    let (mut socket, _) = tokio_tungstenite::connect_async(d.ws_url("/ws"))
        .await
        .unwrap();
    let snapshot = next_json(&mut socket).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["dlq"]["length"], 1);
    assert_eq!(snapshot["dlq"]["entries"][0]["error"], "card declined");
    let streams = snapshot["streams"].as_array().unwrap();
    let orders = streams
        .iter()
        .find(|s| s["name"] == "events:order.created")
        .unwrap();
    assert_eq!(orders["pending"], 1);
    assert!(orders["consumer_groups"][0]["oldest_pending_age_secs"].is_f64());
    assert_eq!(orders["consumer_groups"][0]["consumers"][0]["name"], "c1");
    socket.close(None).await.unwrap();

    for path in [
        "/health".to_owned(),
        "/metrics".to_owned(),
        "/api/streams".to_owned(),
        "/api/streams/info".to_owned(),
        "/api/stream/order.created".to_owned(),
        "/api/streams/order.created?count=5".to_owned(),
        "/api/streams/order.created/pending?group=billing".to_owned(),
        "/api/pending/order.created/billing".to_owned(),
        "/api/metrics".to_owned(),
        "/api/dlq".to_owned(),
        format!("/api/dlq/{dead}"),
    ] {
        let answer = d.get(&path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        if path == "/metrics" {
            assert!(
                answer.text.contains("redstream_redis_up 1"),
                "{}",
                answer.text
            );
            // `+xinfo|stream` gives the entries-added counter.
            assert!(
                answer.text.contains(
                    "redstream_stream_entries_added_total{stream=\"events:order.created\"} 2"
                ),
                "{}",
                answer.text
            );
        }
    }
    // A read-only user writes nothing, even through a script.
    let mut as_user = redis::Client::open(d.redis.url_with_user(USER, PASSWORD))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let refused = redis::cmd("XADD")
        .arg("events:order.created")
        .arg("*")
        .arg("a")
        .arg("b")
        .query_async::<String>(&mut as_user)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("NOPERM"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_acl_with_writes_redrives_and_purges() {
    let rules: Vec<String> = documented_rules()
        .into_iter()
        .chain(documented_write_rules())
        .collect();
    let (d, dead) = dashboard(
        &rules,
        ServeConfig {
            allow_writes: true,
            ..ServeConfig::default()
        },
    )
    .await;
    let redriven = d.post("/api/dlq/redrive", json!({ "ids": [dead] })).await;
    assert_eq!(redriven.status, 200, "{}", redriven.text);
    assert_eq!(redriven.json()["redriven"], 1, "{}", redriven.text);
    d.dead_letter("payment.failed", json!({}), "again").await;
    let purged = d.post("/api/dlq/purge", json!({})).await;
    assert_eq!(purged.status, 200, "{}", purged.text);
    assert_eq!(purged.json()["purged"], 1);
}

/// Without `+xinfo|stream` the summaries read `XLEN`, `XRANGE` and `XREVRANGE` instead: every
/// view works, and `/metrics` leaves out the entries-added counters rather than failing.
#[tokio::test(flavor = "multi_thread")]
async fn without_xinfo_stream_the_counters_are_left_out() {
    let rules: Vec<String> = documented_rules()
        .into_iter()
        .filter(|rule| rule != "+xinfo|stream")
        .collect();
    let (d, _) = dashboard(&rules, ServeConfig::default()).await;
    let streams = d.get("/api/streams").await;
    assert_eq!(streams.status, 200, "{}", streams.text);
    let orders = crate::support::stream(&streams.json()["streams"], "events:order.created").clone();
    assert_eq!(orders["length"], 2, "{orders}");
    assert!(orders["first_id"].is_string() && orders["last_id"].is_string());
    let text = d.get("/metrics").await.text;
    assert!(text.contains("redstream_redis_up 1"), "{text}");
    assert!(
        text.contains("redstream_stream_length{stream=\"events:order.created\"} 2"),
        "{text}"
    );
    assert!(!text.contains("entries_added_total"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_left_out_is_named() {
    for missing in ["+time", "+evalsha", "+xinfo|consumers"] {
        let rules: Vec<String> = documented_rules()
            .into_iter()
            .filter(|rule| rule != missing)
            .collect();
        let (d, _) = dashboard(&rules, ServeConfig::default()).await;
        let answer = d.get("/api/streams").await;
        answer.assert_error(503, "redis_unavailable");
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        println!("without {missing}: {message}");
        let command = missing.trim_start_matches('+');
        assert!(
            message.contains(&format!("'{command}'")),
            "without {missing}: {message}"
        );
        assert!(!message.contains(PASSWORD), "{message}");
    }
}
