//! A dead letter opened whole, the Nodes panel's hit ratio, and pending entries that follow
//! the refresh, in Chromium.

use fantoccini::{Client, Locator};
use redstream_core::{Event, EventMetadata};
use redstream_testkit::RedisServer;
use serde_json::json;

use super::pages::assert_fits;
use super::{
    LIVE, attr, browser, browser_sized, click, group_reads, screenshot_when, scroll_to,
    start_chromedriver, start_dashboard, text, texts_together, transport, wait_for,
};

/// Elements the page would hold had it parsed text from Redis as HTML.
async fn injected(client: &Client) -> usize {
    client
        .find_all(Locator::Css("main img, main b, main i, main script"))
        .await
        .unwrap()
        .len()
}

const LOADED: &str = r#"[data-testid="dlq-detail"]:not([hidden])[data-state="loaded"]"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_opens_whole_and_stays_text() {
    let (_driver, driver_url) = start_chromedriver().await;
    let redis = RedisServer::start().await.unwrap();
    let events = transport(&redis.url()).await;
    let payload = json!({
        "html": "</script><script>document.title='pwned'</script>",
        "order": { "id": "o-17", "lines": [{ "sku": "<b>bold</b>", "qty": 2 }] },
        "note": "a long line of text that goes on without a break: ".repeat(4),
    });
    let error = r#"<img src=x onerror="document.title='pwned'"> card issuer timed out"#;
    let dead = events
        .publish_to_dlq(
            Event::new("payment.captured", payload, EventMetadata::default()),
            error,
        )
        .await
        .unwrap();
    let (_dashboard, base) = start_dashboard(&redis.url(), &["--refresh", "1s"]);
    let client = browser(&driver_url).await;
    client.goto(&format!("{base}/")).await.unwrap();
    // The dead letter's id in its row opens it.
    click(
        &client,
        &format!(r#"tr[data-testid="dlq-row"][data-id="{dead}"] a[data-testid="dlq-link"]"#),
    )
    .await;
    wait_for(&client, LOADED).await;
    assert_eq!(
        client.current_url().await.unwrap().fragment(),
        Some(format!("/dlq/{dead}").as_str())
    );
    assert_eq!(
        text(&client, r#"[data-testid="dlq-detail-id"]"#).await,
        dead
    );
    assert_eq!(text(&client, "#dlq-detail-type").await, "payment.captured");
    assert_eq!(
        text(&client, r#"[data-testid="dlq-detail-error"]"#).await,
        error
    );
    // The payload as indented JSON, markup and all as text.
    let shown = text(&client, r#"[data-testid="dlq-detail-payload"]"#).await;
    assert!(
        shown.contains("\n  \"html\": \"</script><script>document.title='pwned'</script>\""),
        "{shown}"
    );
    assert!(shown.contains("\"sku\": \"<b>bold</b>\""), "{shown}");
    let fields = text(&client, r#"[data-testid="dlq-detail-fields"]"#).await;
    assert!(
        fields.contains("original_type") && fields.contains("card issuer timed out"),
        "{fields}"
    );
    assert_eq!(injected(&client).await, 0);
    assert_eq!(
        client.title().await.unwrap(),
        format!("Dead letter {dead} · redstream dashboard")
    );
    screenshot_when(&client, "dead-letter-detail.png", &[LOADED]).await;

    // Back to the overview; an id that is not there says so.
    click(&client, r#"[data-testid="dlq-back-link"]"#).await;
    wait_for(&client, r#"[data-testid="overview"]:not([hidden])"#).await;
    client.goto(&format!("{base}/#/dlq/1-0")).await.unwrap();
    let problem = text(&client, "#dlq-detail-problem:not([hidden])").await;
    assert!(problem.contains("no dead letter has the id"), "{problem}");
    client.close().await.unwrap();

    // At 400 px: nothing wider than the screen.
    let narrow = browser_sized(&driver_url, Some(400)).await;
    narrow.goto(&format!("{base}/#/dlq/{dead}")).await.unwrap();
    screenshot_when(&narrow, "narrow-dead-letter-detail.png", &[LOADED]).await;
    assert_fits(&narrow, "the dead letter's page").await;
    // Its stored fields further down, names above values.
    scroll_to(&narrow, "#dlq-detail-fields-title").await;
    screenshot_when(&narrow, "narrow-dead-letter-fields.png", &[]).await;
    assert_eq!(injected(&narrow).await, 0);
    narrow.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_nodes_panel_shows_the_hit_ratio() {
    let (_driver, driver_url) = start_chromedriver().await;
    let redis = RedisServer::start().await.unwrap();
    let events = transport(&redis.url()).await;
    events
        .publish(Event::new(
            "order.created",
            json!({ "n": 1 }),
            EventMetadata::default(),
        ))
        .await
        .unwrap();
    let mut conn = redis.connection().await.unwrap();
    for key in ["cache:missing", "cache:gone", "cache:none"] {
        let _: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let (_dashboard, base) = start_dashboard(&redis.url(), &["--refresh", "1s"]);
    let client = browser(&driver_url).await;
    client.goto(&format!("{base}/")).await.unwrap();
    wait_for(&client, LIVE).await;
    let address = format!("{}:{}", redis.host(), redis.port());
    let cell = format!(
        r#"tr[data-testid="node-row"][data-node="{address}"] [data-testid="node-hit-ratio"]"#
    );
    // The misses above and the dashboard's own reads: some lookups, not all of them hits.
    let shown = text(&client, &cell).await;
    let percent: f64 = shown
        .strip_suffix(" %")
        .unwrap_or_else(|| panic!("{shown:?}"))
        .parse()
        .unwrap();
    assert!((0.0..100.0).contains(&percent), "{shown}");
    let title = attr(&client, &cell, "title").await.unwrap_or_default();
    assert!(
        title.contains("hits") && title.contains("misses"),
        "{title}"
    );
    // The dashboard's own reads move the ratio: the two are read from one refresh.
    let [total, card]: [String; 2] = texts_together(
        &client,
        &[
            r#"[data-testid="nodes-total-hit-ratio"]"#,
            r#"[data-testid="redis-hit-ratio"]"#,
        ],
    )
    .await
    .try_into()
    .unwrap();
    assert!(total.ends_with(" %"), "{total}");
    assert_eq!(card, total);
    screenshot_when(
        &client,
        "nodes-hit-ratio.png",
        &[r#"tr[data-testid="nodes-total"]"#],
    )
    .await;
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_entries_follow_the_refresh() {
    let (_driver, driver_url) = start_chromedriver().await;
    let redis = RedisServer::start().await.unwrap();
    let events = transport(&redis.url()).await;
    let mut conn = redis.connection().await.unwrap();
    for n in 0..8 {
        events
            .publish(Event::new(
                "order.created",
                json!({ "n": n }),
                EventMetadata::default(),
            ))
            .await
            .unwrap();
    }
    // billing-1 holds three.
    group_reads(&mut conn, "events:order.created", 3).await;
    let (_dashboard, base) = start_dashboard(&redis.url(), &["--refresh", "1s"]);
    let client = browser(&driver_url).await;
    client
        .goto(&format!("{base}/#/stream/order.created"))
        .await
        .unwrap();
    wait_for(&client, "#pending-body tr:nth-child(3)").await;
    // Another consumer takes two more: the table shows them without a click or a reload.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("billing")
        .arg("billing-2")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg("events:order.created")
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let fifth = r#"#pending-body tr[data-testid="pending-row"]:nth-child(5)"#;
    let row = text(&client, fifth).await;
    assert!(row.contains("billing-2"), "{row}");
    // The snapshot follows too: the group's second consumer is listed.
    let second = r#"tr[data-testid="stream-group-row"] li[data-testid="consumer"]:nth-child(2)"#;
    screenshot_when(&client, "stream-page-pending-live.png", &[fifth, second]).await;
    // Everything acknowledged: the table empties by itself.
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg("events:order.created")
        .arg("billing")
        .arg("-")
        .arg("+")
        .arg(10)
        .query_async(&mut conn)
        .await
        .unwrap();
    let ids: Vec<&str> = pending.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(ids.len(), 5);
    let acked: u64 = redis::cmd("XACK")
        .arg("events:order.created")
        .arg("billing")
        .arg(&ids)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(acked, 5);
    let empty = text(&client, "#pending-empty:not([hidden])").await;
    assert_eq!(empty, "Nothing is pending in this group.");
    client.close().await.unwrap();
}
