//! `GET /api/dlq/{id}`: one dead letter opened whole, with every field it was stored with,
//! bounded, and user data returned as JSON text only.

use redstream_cli::serve::ServeConfig;
use redstream_core::{Event, EventMetadata};
use serde_json::{Value, json};

use crate::support::Dashboard;

/// The `fields` of an answer, as (name, value) pairs.
fn fields(answer: &Value) -> Vec<(String, String)> {
    serde_json::from_value(answer["fields"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_is_opened_whole_with_its_fields() {
    let d = Dashboard::start(ServeConfig::default()).await;
    // Payload and error are user data that would be markup if anyone parsed them as HTML.
    let payload = json!({
        "html": "</script><script>alert(1)</script>",
        "order": { "id": "o-1", "lines": [{ "sku": "a", "qty": 2 }] },
        "note": "ünïcødé ✓",
    });
    let error = r#"<img src=x onerror="alert(1)"> failed"#;
    let event = Event::new("order.created", payload.clone(), EventMetadata::default());
    let event_id = event.id().to_string();
    let id = d.transport.publish_to_dlq(event, error).await.unwrap();

    let answer = d.get(&format!("/api/dlq/{id}")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(
        answer
            .header("content-type")
            .starts_with("application/json"),
        "{:?}",
        answer.headers
    );
    assert_eq!(answer.header("x-content-type-options"), "nosniff");
    let json = answer.json();
    assert_eq!(json["id"], id);
    assert_eq!(json["event_id"], event_id);
    assert_eq!(json["event"]["payload"], payload, "the payload as JSON");
    assert_eq!(json["error"], error);
    assert_eq!(json["redrivable"], true);
    assert_eq!(json["fields_truncated"], false, "{json}");
    let fields = fields(&json);
    let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names.contains(&"event") && names.contains(&"error"),
        "{names:?}"
    );
    let stored = &fields.iter().find(|(name, _)| name == "error").unwrap().1;
    assert_eq!(stored, error);
    // The stored envelope, verbatim, carries the payload.
    let envelope = &fields.iter().find(|(name, _)| name == "event").unwrap().1;
    let envelope: Value = serde_json::from_str(envelope).unwrap();
    assert_eq!(envelope["payload"], payload);
}

#[tokio::test(flavor = "multi_thread")]
async fn other_writers_fields_are_shown_and_bounded() {
    let d = Dashboard::start(ServeConfig::default()).await;
    let mut conn = d.conn().await;
    // A dead letter written by hand: the documented fields, an extra note, a long trace, and
    // far more fields than the view shows.
    let trace = "frame::".repeat(2000);
    let mut add = redis::cmd("XADD");
    add.arg("events:dlq")
        .arg("*")
        .arg("error")
        .arg("handler panicked")
        .arg("original_type")
        .arg("order.created")
        .arg("note")
        .arg("moved by hand")
        .arg("trace")
        .arg(&trace);
    for n in 0..300 {
        add.arg(format!("extra-{n:03}")).arg(n);
    }
    let id: String = add.query_async(&mut conn).await.unwrap();

    let answer = d.get(&format!("/api/dlq/{id}")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let json = answer.json();
    assert_eq!(json["error"], "handler panicked");
    assert_eq!(json["original_type"], "order.created");
    assert_eq!(json["redrivable"], false, "no event: {json}");
    assert_eq!(json["fields_truncated"], true);
    let fields = fields(&json);
    assert_eq!(fields.len(), 256, "at most 256 fields");
    assert_eq!(fields[2], ("note".to_owned(), "moved by hand".to_owned()));
    let (name, shown) = &fields[3];
    assert_eq!(name, "trace");
    assert_eq!(shown.len(), 4096, "cut at 4 KiB");
    assert!(trace.starts_with(shown.as_str()));
    assert_eq!(fields[4], ("extra-000".to_owned(), "0".to_owned()));
    assert!(answer.text.len() < 64 * 1024, "{} bytes", answer.text.len());

    // Absent, and not an id.
    d.get("/api/dlq/1-0").await.assert_error(404, "not_found");
    d.get("/api/dlq/%3Cscript%3E")
        .await
        .assert_error(400, "invalid_parameter");
}
