//! The write actions: refused without `allow_writes`, and what they do with it.

use redstream_cli::serve::ServeConfig;
use serde_json::json;

use crate::support::{Dashboard, payloads};

fn writable() -> ServeConfig {
    ServeConfig {
        allow_writes: true,
        ..ServeConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_without_allow_writes() {
    let d = Dashboard::start(ServeConfig::default()).await;
    let dead = d.dead_letter("a", json!({ "n": 1 }), "boom").await;
    for (path, body) in [
        ("/api/dlq/redrive", json!({ "ids": [dead] })),
        ("/api/dlq/redrive", json!({ "all": true })),
        ("/api/dlq/redrive", json!({ "type": "a" })),
        ("/api/dlq/purge", json!({})),
        // Even a bad body is refused as a write first.
        ("/api/dlq/redrive", json!({ "nonsense": 1 })),
    ] {
        let answer = d.post(path, body).await;
        answer.assert_error(403, "writes_disabled");
        assert!(
            answer.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("--allow-writes")
        );
    }
    let dlq = d.get("/api/dlq").await.json();
    assert_eq!(dlq["length"], 1, "nothing was touched");
    let mut conn = d.conn().await;
    assert!(payloads(&mut conn, "events:a").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn redrive_by_ids_type_and_all_then_purge() {
    let d = Dashboard::start(writable()).await;
    let a = d.dead_letter("a", json!({ "n": "a1" }), "boom").await;
    d.dead_letter("b", json!({ "n": "b1" }), "boom").await;
    d.dead_letter("b", json!({ "n": "b2" }), "boom").await;
    d.dead_letter("c", json!({ "n": "c1" }), "boom").await;
    let mut conn = d.conn().await;

    let by_id = d.post("/api/dlq/redrive", json!({ "ids": [a] })).await;
    assert_eq!(by_id.status, 200, "{}", by_id.text);
    assert_eq!(by_id.json(), json!({ "redriven": 1, "skipped": [] }));
    assert_eq!(
        payloads(&mut conn, "events:a").await,
        [json!({ "n": "a1" })]
    );

    let by_type = d.post("/api/dlq/redrive", json!({ "type": "b" })).await;
    assert_eq!(by_type.status, 200, "{}", by_type.text);
    assert_eq!(by_type.json()["redriven"], 2);
    assert_eq!(
        payloads(&mut conn, "events:b").await,
        [json!({ "n": "b1" }), json!({ "n": "b2" })]
    );

    // An id that is not there is reported, not an error.
    let missing = d.post("/api/dlq/redrive", json!({ "ids": ["1-0"] })).await;
    assert_eq!(missing.status, 200, "{}", missing.text);
    let missing = missing.json();
    assert_eq!(missing["redriven"], 0);
    assert_eq!(missing["skipped"][0]["id"], "1-0");
    assert!(missing["skipped"][0]["reason"].is_string());

    let all = d.post("/api/dlq/redrive", json!({ "all": true })).await;
    assert_eq!(all.json()["redriven"], 1, "{}", all.text);
    assert_eq!(
        payloads(&mut conn, "events:c").await,
        [json!({ "n": "c1" })]
    );
    assert_eq!(d.get("/api/dlq").await.json()["length"], 0);

    d.dead_letter("d", json!({}), "x").await;
    d.dead_letter("d", json!({}), "y").await;
    let purged = d.post("/api/dlq/purge", json!({})).await;
    assert_eq!(purged.status, 200, "{}", purged.text);
    assert_eq!(purged.json(), json!({ "purged": 2 }));
    assert_eq!(d.get("/api/dlq").await.json()["length"], 0);

    let counters = d.get("/api/metrics").await.json()["dashboard"].clone();
    assert_eq!(counters["dlq_redriven_total"], 4);
    assert_eq!(counters["dlq_purged_total"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bodies_are_4xx() {
    let d = Dashboard::start(writable()).await;
    d.dead_letter("a", json!({}), "boom").await;
    for body in [
        json!({}),
        json!({ "ids": [] }),
        json!({ "ids": ["not-an-id"] }),
        json!({ "ids": ["1-0", "(1-0"] }),
        json!({ "all": false }),
        json!({ "all": true, "type": "a" }),
        json!({ "ids": ["1-0"], "type": "a" }),
        json!({ "unknown": true }),
        json!({ "ids": "1-0" }),
        json!([1, 2]),
    ] {
        let answer = d.post("/api/dlq/redrive", body.clone()).await;
        answer.assert_error(400, "invalid_body");
        assert!(!answer.text.contains("panicked"), "{body}");
    }
    let too_many: Vec<String> = (0..1001).map(|n| format!("{n}-0")).collect();
    d.post("/api/dlq/redrive", json!({ "ids": too_many }))
        .await
        .assert_error(400, "invalid_body");
    // An event type the transport refuses.
    d.post("/api/dlq/redrive", json!({ "type": "a b" }))
        .await
        .assert_error(400, "invalid_input");
    d.post("/api/dlq/purge", json!({ "everything": true }))
        .await
        .assert_error(400, "invalid_body");

    // Not JSON: a form post (what a cross-site page could send) or no body at all.
    for request in [
        d.http
            .post(d.url("/api/dlq/purge"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("a=1"),
        d.http.post(d.url("/api/dlq/purge")),
        d.http
            .post(d.url("/api/dlq/redrive"))
            .header("content-type", "text/plain")
            .body("{\"all\":true}"),
    ] {
        crate::support::answer(request.send().await.unwrap())
            .await
            .assert_error(415, "unsupported_media_type");
    }
    let broken = d
        .http
        .post(d.url("/api/dlq/redrive"))
        .header("content-type", "application/json")
        .body("{\"all\":")
        .send()
        .await
        .unwrap();
    crate::support::answer(broken)
        .await
        .assert_error(400, "invalid_body");
    let huge = d
        .http
        .post(d.url("/api/dlq/redrive"))
        .header("content-type", "application/json")
        .body(format!("{{\"type\":\"{}\"}}", "x".repeat(100 * 1024)))
        .send()
        .await
        .unwrap();
    crate::support::answer(huge)
        .await
        .assert_error(413, "payload_too_large");
    d.get("/api/dlq/redrive")
        .await
        .assert_error(405, "method_not_allowed");
    d.post("/api/streams", json!({}))
        .await
        .assert_error(405, "method_not_allowed");
    assert_eq!(
        d.get("/api/dlq").await.json()["length"],
        1,
        "nothing happened"
    );
}
