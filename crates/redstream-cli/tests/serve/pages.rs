//! The stream page's endpoints (entries newest first, pending entries in pages) and the dead
//! letters newest first, in pages, searched over a bounded window.

use redstream_cli::serve::ServeConfig;
use redstream_core::{Event, EventLimits, EventMetadata, wire};
use serde_json::{Value, json};

use crate::support::{Dashboard, read_as};

/// Every page of `path` (which ends in `?...&` or `?`), following `next_before`: the ids in
/// order, and the pages' answers.
async fn all_pages(d: &Dashboard, path: &str, list: &str) -> (Vec<String>, Vec<Value>) {
    let mut ids = Vec::new();
    let mut pages = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let url = match &before {
            None => path.to_owned(),
            Some(id) => format!("{path}before={id}"),
        };
        let answer = d.get(&url).await;
        assert_eq!(answer.status, 200, "{url}: {}", answer.text);
        let json = answer.json();
        for item in json[list].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        before = json["next_before"].as_str().map(str::to_owned);
        pages.push(json);
        if before.is_none() {
            return (ids, pages);
        }
        assert!(pages.len() < 100, "the pages never end: {ids:?}");
    }
}

async fn xrevrange(d: &Dashboard, stream: &str) -> Vec<String> {
    let mut conn = d.conn().await;
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .query_async(&mut conn)
        .await
        .unwrap();
    entries.into_iter().map(|(id, _)| id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_newest_first_in_pages() {
    let d = Dashboard::start(ServeConfig::default()).await;
    for n in 0..7 {
        d.publish(
            "order.created",
            json!({ "order_id": n, "items": [n, n + 1] }),
        )
        .await;
    }
    let (ids, pages) =
        all_pages(&d, "/api/stream/order.created/entries?count=3&", "messages").await;
    assert_eq!(ids, xrevrange(&d, "events:order.created").await);
    assert_eq!(pages.len(), 3, "3 + 3 + 1");
    let first = &pages[0];
    assert_eq!(first["stream"], "events:order.created");
    assert_eq!(first["length"], 7);
    assert_eq!(first["before"], Value::Null);
    assert_eq!(first["count"], 3);
    // Newest first, decoded.
    assert_eq!(first["messages"][0]["event"]["payload"]["order_id"], 6);
    assert_eq!(first["messages"][0]["decode_error"], Value::Null);
    assert_eq!(pages[2]["next_before"], Value::Null);
    assert_eq!(pages[1]["before"], first["next_before"]);

    // Default count, and a full last page that is followed by an empty one.
    let all = d.get("/api/stream/order.created/entries").await.json();
    assert_eq!(all["count"], 7);
    assert_eq!(all["next_before"], Value::Null);
    let exact = d
        .get("/api/stream/order.created/entries?count=7")
        .await
        .json();
    let oldest = exact["next_before"].as_str().unwrap();
    let past = d
        .get(&format!(
            "/api/stream/order.created/entries?before={oldest}"
        ))
        .await
        .json();
    assert_eq!(past["count"], 0);
    assert_eq!(past["next_before"], Value::Null);

    // A foreign entry: raw fields, no event, the reason.
    d.transport
        .publish_fields(
            "orders.events",
            &[("order", "o-1"), ("payload", "{\"a\":1}")],
        )
        .await
        .unwrap();
    let foreign = d.get("/api/stream/orders.events/entries").await.json();
    let entry = &foreign["messages"][0];
    assert_eq!(entry["event"], Value::Null);
    assert_eq!(
        entry["fields"],
        json!([["order", "o-1"], ["payload", "{\"a\":1}"]])
    );
    assert!(
        entry["decode_error"].as_str().unwrap().contains("event"),
        "{entry}"
    );

    // Bad input and missing streams.
    for bad in ["before=x", "before=1", "before=-", "count=0", "count=1001"] {
        d.get(&format!("/api/stream/order.created/entries?{bad}"))
            .await
            .assert_error(400, "invalid_parameter");
    }
    d.get("/api/stream/no.such/entries")
        .await
        .assert_error(404, "not_found");
    let mut conn = d.conn().await;
    let _: () = redis::cmd("SET")
        .arg("events:plain")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    d.get("/api/stream/events:plain/entries")
        .await
        .assert_error(409, "wrong_type");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_entries_are_previewed_and_read_whole_on_request() {
    let d = Dashboard::start(ServeConfig::default()).await;
    let big = "x".repeat(300 * 1024);
    let id = d.publish("blob.stored", json!({ "blob": big })).await;
    d.publish("blob.stored", json!({ "blob": "small" })).await;
    let answer = d.get("/api/stream/blob.stored/entries").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    // Previews: the 300 KiB event is not in the answer.
    assert!(answer.text.len() < 32 * 1024, "{} bytes", answer.text.len());
    let json = answer.json();
    assert_eq!(json["messages"][0]["event"]["payload"]["blob"], "small");
    let large = &json["messages"][1];
    assert_eq!(large["id"], id);
    assert_eq!(large["event"], Value::Null);
    assert_eq!(large["truncated"], true);
    let why = large["decode_error"].as_str().unwrap();
    assert!(why.contains("startId=") && why.contains(&id), "{why}");
    assert_eq!(json["event_preview_bytes"], 64 * 1024);
    // The whole entry, through the bounded entry endpoint.
    let whole = d
        .get(&format!("/api/streams/blob.stored?startId={id}&count=1"))
        .await
        .json();
    assert_eq!(whole["messages"][0]["event"]["payload"]["blob"], big);
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_entries_in_pages() {
    let d = Dashboard::start(ServeConfig::default()).await;
    for n in 0..5 {
        d.publish("order.created", json!({ "n": n })).await;
    }
    let mut conn = d.conn().await;
    read_as(&mut conn, "events:order.created", "billing", "c1", 5).await;
    let mut ids = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let path =
            format!("/api/streams/order.created/pending?group=billing&count=2&startId={start}");
        let json = d.get(&path).await.json();
        for p in json["pending"].as_array().unwrap() {
            assert_eq!(p["consumer"], "c1");
            assert_eq!(p["deliveries"], 1);
            assert!(p["idle_ms"].is_u64());
            ids.push(p["id"].as_str().unwrap().to_owned());
        }
        match json["next_start_id"].as_str() {
            Some(next) => start = next.to_owned(),
            None => break,
        }
    }
    let mut oldest_first = xrevrange(&d, "events:order.created").await;
    oldest_first.reverse();
    assert_eq!(ids, oldest_first);
    let by_path = d
        .get("/api/pending/order.created/billing?count=5")
        .await
        .json();
    assert_eq!(by_path["count"], 5);
    assert!(by_path["next_start_id"].is_string());
}

/// A dead letter written by a test: its id, type, group and error.
type Written = (String, &'static str, &'static str, String);

/// A dead letter written by hand, as the transport writes them, with `group` and `error`.
async fn dead_letter(
    conn: &mut redis::aio::MultiplexedConnection,
    event_type: &str,
    group: &str,
    error: &str,
) -> String {
    let event = Event::new(event_type, json!({ "k": group }), EventMetadata::default());
    let envelope = wire::encode(&event, &EventLimits::default()).unwrap();
    redis::cmd("XADD")
        .arg("events:dlq")
        .arg("*")
        .arg("event")
        .arg(envelope)
        .arg("error")
        .arg(error)
        .arg("original_type")
        .arg(event_type)
        .arg("stream")
        .arg(format!("events:{event_type}"))
        .arg("entry_id")
        .arg("1-0")
        .arg("group")
        .arg(group)
        .arg("consumer")
        .arg(format!("{group}-1"))
        .arg("deliveries")
        .arg(3)
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_newest_first_paged_and_searched() {
    let d = Dashboard::start(ServeConfig::default()).await;
    let mut conn = d.conn().await;
    // Empty: no dead-letter stream yet.
    let empty = d.get("/api/dlq/page").await.json();
    assert_eq!(
        (empty["count"].clone(), empty["length"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(empty["next_before"], Value::Null);
    let mut written = Vec::new();
    for n in 0..30 {
        let (kind, group) = if n % 3 == 0 {
            ("payment.failed", "billing")
        } else {
            ("order.created", "shipping")
        };
        let error = if n % 5 == 0 {
            format!("Card issuer TIMED OUT ({n})")
        } else {
            format!("bad address ({n})")
        };
        written.push((
            dead_letter(&mut conn, kind, group, &error).await,
            kind,
            group,
            error,
        ));
    }
    let newest_first: Vec<String> = written.iter().rev().map(|w| w.0.clone()).collect();
    let (ids, pages) = all_pages(&d, "/api/dlq/page?count=10&", "entries").await;
    assert_eq!(ids, newest_first);
    // A full page says where to go on; the fourth is empty.
    assert_eq!(pages.len(), 4);
    assert_eq!(pages[3]["count"], 0);
    let first = &pages[0];
    assert_eq!(first["length"], 30);
    assert_eq!(first["scanned"], 10);
    assert_eq!(first["entries"][0]["original_type"], written[29].1);
    assert_eq!(first["entries"][0]["group"], written[29].2);
    assert!(first["entries"][0]["payload_preview"].is_string());

    // By type, group and error text (ignoring case), together too.
    let expect = |keep: &dyn Fn(&Written) -> bool| -> Vec<String> {
        written
            .iter()
            .rev()
            .filter(|w| keep(w))
            .map(|w| w.0.clone())
            .collect()
    };
    let (ids, pages) = all_pages(&d, "/api/dlq/page?count=4&type=payment.failed&", "entries").await;
    assert_eq!(ids, expect(&|w| w.1 == "payment.failed"));
    assert_eq!(pages[0]["filters"]["type"], "payment.failed");
    assert_eq!(pages[0]["window"], 1000);
    let (ids, _) = all_pages(&d, "/api/dlq/page?group=shipping&", "entries").await;
    assert_eq!(ids, expect(&|w| w.2 == "shipping"));
    let (ids, _) = all_pages(&d, "/api/dlq/page?q=timed%20out&", "entries").await;
    assert_eq!(ids, expect(&|w| w.3.contains("TIMED OUT")));
    assert_eq!(ids.len(), 6);
    let (ids, _) = all_pages(
        &d,
        "/api/dlq/page?q=timed%20out&type=payment.failed&",
        "entries",
    )
    .await;
    assert_eq!(
        ids,
        expect(&|w| w.3.contains("TIMED OUT") && w.1 == "payment.failed")
    );
    assert_eq!(ids.len(), 2);
    let none = d.get("/api/dlq/page?type=nothing.like.it").await.json();
    assert_eq!(
        (none["count"].clone(), none["scanned"].clone()),
        (json!(0), json!(30))
    );
    assert_eq!(none["next_before"], Value::Null);

    for bad in ["before=nope", "count=0", "type=a%0Ab"] {
        d.get(&format!("/api/dlq/page?{bad}"))
            .await
            .assert_error(400, "invalid_parameter");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_search_reads_a_bounded_window_and_goes_on_from_it() {
    let d = Dashboard::start(ServeConfig::default()).await;
    let mut conn = d.conn().await;
    let rare = dead_letter(&mut conn, "rare.event", "g", "rare failure").await;
    let mut pipe = redis::pipe();
    for n in 0..1200 {
        pipe.cmd("XADD")
            .arg("events:dlq")
            .arg("*")
            .arg("original_type")
            .arg("common.event")
            .arg("error")
            .arg(format!("common failure {n}"))
            .ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
    let first = d.get("/api/dlq/page?q=rare").await.json();
    // The first request looks at 1000 dead letters, finds nothing, and says where to go on.
    assert_eq!(first["scanned"], 1000);
    assert_eq!(first["count"], 0);
    let next = first["next_before"].as_str().unwrap();
    let second = d
        .get(&format!("/api/dlq/page?q=rare&before={next}"))
        .await
        .json();
    assert_eq!(second["scanned"], 201);
    assert_eq!(second["count"], 1);
    assert_eq!(second["entries"][0]["id"], rare);
    assert_eq!(second["next_before"], Value::Null);
}
