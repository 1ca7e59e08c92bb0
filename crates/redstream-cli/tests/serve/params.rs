//! Bad parameters: 4xx JSON errors, never a 500.

use redstream_cli::serve::ServeConfig;
use serde_json::json;

use crate::support::{Dashboard, read_as};

async fn with_a_stream() -> Dashboard {
    let d = Dashboard::start(ServeConfig::default()).await;
    d.publish("orders", json!({ "n": 1 })).await;
    let mut conn = d.conn().await;
    read_as(&mut conn, "events:orders", "billing", "c1", 1).await;
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_are_bounded() {
    let d = with_a_stream().await;
    for count in [
        "0",
        "1001",
        "-1",
        "ten",
        "1.5",
        "",
        "99999999999999999999999",
    ] {
        for path in [
            format!("/api/dlq?count={count}"),
            format!("/api/streams/orders?count={count}"),
            format!("/api/pending/orders/billing?count={count}"),
            format!("/api/streams/orders/pending?group=billing&count={count}"),
        ] {
            let answer = d.get(&path).await;
            answer.assert_error(400, "invalid_parameter");
            assert!(
                answer.json()["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("1 to 1000"),
                "{path}"
            );
        }
    }
    // The bounds themselves are accepted.
    for count in ["1", "1000"] {
        assert_eq!(d.get(&format!("/api/dlq?count={count}")).await.status, 200);
        assert_eq!(
            d.get(&format!("/api/streams/orders?count={count}"))
                .await
                .status,
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_names_are_validated() {
    let d = with_a_stream().await;
    // Whitespace and control characters cannot name a stream.
    for name in ["a%20b", "tab%09here", "nbsp%C2%A0here", "nul%00"] {
        for path in [
            format!("/api/stream/{name}"),
            format!("/api/streams/{name}"),
            format!("/api/streams/{name}/pending?group=billing"),
            format!("/api/pending/{name}/billing"),
        ] {
            d.get(&path).await.assert_error(400, "invalid_stream_name");
        }
    }
    // Anything else is a stream name, used as it is (no lanes, no prefix required): a name
    // that is no stream is a 404.
    for name in [
        "%7Bother%7D%3Aorders",
        "events%3A",
        "orders%23high",
        "%23high",
    ] {
        for path in [
            format!("/api/stream/{name}"),
            format!("/api/streams/{name}"),
            format!("/api/streams/{name}/pending?group=billing"),
            format!("/api/pending/{name}/billing"),
        ] {
            d.get(&path).await.assert_error(404, "not_found");
        }
    }
    let long = "x".repeat(600);
    d.get(&format!("/api/stream/{long}"))
        .await
        .assert_error(400, "invalid_stream_name");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_things_are_404() {
    let d = with_a_stream().await;
    for path in [
        "/api/stream/nope",
        "/api/streams/nope",
        "/api/streams/nope?startId=0&count=5",
        "/api/pending/nope/billing",
        "/api/streams/nope/pending?group=billing",
        // An existing stream without that group.
        "/api/pending/orders/nobody",
        "/api/streams/orders/pending?group=nobody",
        "/api/dlq/1700000000000-0",
        "/no/such/endpoint",
        "/api",
    ] {
        d.get(path).await.assert_error(404, "not_found");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn other_bad_input() {
    let d = with_a_stream().await;
    d.get("/api/streams/orders/pending")
        .await
        .assert_error(400, "invalid_parameter");
    d.get("/api/streams/orders/pending?group=")
        .await
        .assert_error(400, "invalid_parameter");
    // Malformed and overflowing ids, exclusive ids with nothing after them, and the ends of a
    // stream where an id is needed: a 400 naming startId, never Redis's refusal (a 502).
    for start in [
        "abc",
        "1-2-3",
        "%2B1",
        "%2B",
        "(-",
        "(%2B",
        "((1-0",
        "(18446744073709551615-18446744073709551615",
        "18446744073709551616",
        "1-18446744073709551616",
        "99999999999999999999999-0",
    ] {
        let answer = d.get(&format!("/api/streams/orders?startId={start}")).await;
        answer.assert_error(400, "invalid_parameter");
        assert!(
            answer.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("startId")
        );
    }
    // The largest ids themselves are valid: nothing is there.
    for start in [
        "18446744073709551615-18446744073709551615",
        "(18446744073709551615",
        "(18446744073709551615-18446744073709551614",
    ] {
        let answer = d.get(&format!("/api/streams/orders?startId={start}")).await;
        assert_eq!(answer.status, 200, "{start}: {}", answer.text);
        assert_eq!(answer.json()["count"], 0, "{start}");
    }
    // Over-long startIds are refused without being echoed back whole.
    let long = "1".repeat(5000);
    let answer = d.get(&format!("/api/streams/orders?startId={long}")).await;
    answer.assert_error(400, "invalid_parameter");
    assert!(answer.text.len() < 1000, "{}", answer.text.len());
    // Ids that look like ids but are out of Redis's range are the dashboard's 400 too.
    for id in [
        "not-an-id",
        "18446744073709551616-0",
        "1-18446744073709551616",
        "+1-0",
    ] {
        d.get(&format!("/api/dlq/{id}"))
            .await
            .assert_error(400, "invalid_parameter");
    }
    // A key under the prefix that is not a stream.
    let mut conn = d.conn().await;
    let _: () = redis::cmd("SET")
        .arg("events:plain")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    d.get("/api/stream/plain")
        .await
        .assert_error(409, "wrong_type");
    d.get("/api/streams/plain")
        .await
        .assert_error(409, "wrong_type");
    // A malformed query string.
    d.get("/api/dlq?count=%zz")
        .await
        .assert_error(400, "invalid_parameter");
}
