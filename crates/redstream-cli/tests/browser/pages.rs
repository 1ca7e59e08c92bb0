//! The stream page, the dead letters' pages and search, and the layout at 400 px, in Chromium.

use fantoccini::{Client, Locator};
use redstream_core::{Event, EventMetadata};
use redstream_testkit::RedisServer;
use serde_json::{Value, json};

use super::{
    LIVE, browser, browser_sized, click, group_reads, screenshot_when, scroll_to,
    start_chromedriver, start_dashboard, text, transport, wait_for,
};

async fn count(client: &Client, css: &str) -> usize {
    client.find_all(Locator::Css(css)).await.unwrap().len()
}

/// The `data-id`s of the rows `css` matches, in order. Read in one script, in the page: the
/// pending entries refresh on their own, and rows found in one WebDriver call could be
/// replaced before the next call reads them (a stale element).
async fn ids(client: &Client, css: &str) -> Vec<String> {
    let ids = client
        .execute(
            "return Array.from(document.querySelectorAll(arguments[0]), \
             row => row.getAttribute('data-id'))",
            vec![Value::String(css.to_owned())],
        )
        .await
        .unwrap();
    serde_json::from_value(ids).unwrap()
}

async fn newest_first(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> Vec<String> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .query_async(conn)
        .await
        .unwrap();
    entries.into_iter().map(|(id, _)| id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_page_shows_entries_groups_and_pending_entries() {
    let (_driver, driver_url) = start_chromedriver().await;
    let redis = RedisServer::start().await.unwrap();
    let events = transport(&redis.url()).await;
    let mut conn = redis.connection().await.unwrap();
    for n in 0..30 {
        events
            .publish(Event::new(
                "order.created",
                json!({ "order_id": n, "lines": [{ "sku": format!("sku-{n}"), "qty": 1 }] }),
                EventMetadata::default(),
            ))
            .await
            .unwrap();
    }
    // Three of them delivered to billing-1 and not acknowledged.
    group_reads(&mut conn, "events:order.created", 3).await;
    // A large event: previewed on the page, read whole on request.
    let big = "z".repeat(100 * 1024);
    let large = events
        .publish(Event::new(
            "order.created",
            json!({ "order_id": "large", "blob": big }),
            EventMetadata::default(),
        ))
        .await
        .unwrap();
    events
        .publish(Event::new(
            "order.created",
            json!({ "order_id": "last" }),
            EventMetadata::default(),
        ))
        .await
        .unwrap();
    // Another writer's stream, with a JSON field.
    events
        .publish_fields(
            "orders.events",
            &[
                ("order", "o-9"),
                ("payload", r#"{"total":12.5,"currency":"EUR"}"#),
            ],
        )
        .await
        .unwrap();
    let ordered = newest_first(&mut conn, "events:order.created").await;
    assert_eq!(ordered.len(), 32);

    let (_dashboard, base) =
        start_dashboard(&redis.url(), &["--refresh", "1s", "--streams", "orders.*"]);
    let client = browser(&driver_url).await;
    client.goto(&format!("{base}/")).await.unwrap();
    // From the overview, the stream's name opens its page.
    click(
        &client,
        r#"tr[data-stream="events:order.created"] a[data-testid="stream-link"]"#,
    )
    .await;
    wait_for(&client, r#"[data-testid="stream-page"]:not([hidden])"#).await;
    assert_eq!(
        client.current_url().await.unwrap().fragment(),
        Some("/stream/events%3Aorder.created")
    );
    assert!(count(&client, r#"[data-testid="overview"]:not([hidden])"#).await == 0);
    wait_for(
        &client,
        &format!(r#"tr[data-testid="entry-row"][data-id="{}"]"#, ordered[0]),
    )
    .await;
    // Newest first, 25 to a page.
    assert_eq!(
        ids(&client, r#"tr[data-testid="entry-row"]"#).await,
        ordered[..25]
    );
    assert_eq!(text(&client, "#stream-title").await, "order.created");
    assert_eq!(text(&client, "#stream-length").await, "32");
    // The payload as formatted JSON.
    let payload = text(
        &client,
        &format!(
            r#"tr[data-id="{}"] [data-testid="entry-payload"]"#,
            ordered[2]
        ),
    )
    .await;
    assert!(payload.contains("\n  \"order_id\": 29\n}"), "{payload}");
    assert!(payload.contains("\"sku\": \"sku-29\""), "{payload}");
    // The group, its consumer, and its pending entries with idle time and deliveries.
    let group = text(
        &client,
        r#"tr[data-testid="stream-group-row"][data-group="billing"]"#,
    )
    .await;
    assert!(
        group.contains("billing-1") && group.contains("3 pending"),
        "{group}"
    );
    wait_for(&client, r#"tr[data-testid="pending-row"]"#).await;
    let mut oldest = ordered.clone();
    oldest.reverse();
    assert_eq!(
        ids(&client, r#"tr[data-testid="pending-row"]"#).await,
        oldest[..3]
    );
    let pending = text(
        &client,
        &format!(r#"tr[data-testid="pending-row"][data-id="{}"]"#, oldest[0]),
    )
    .await;
    assert!(
        pending.contains("billing-1") && pending.ends_with('1'),
        "{pending}"
    );
    screenshot_when(&client, "stream-page.png", &[]).await;

    // The large event is cut to a preview; Whole entry reads it whole.
    let large_row = format!(r#"tr[data-testid="entry-row"][data-id="{large}"]"#);
    let preview = text(&client, &large_row).await;
    assert!(
        preview.contains("event cut to a preview") && preview.contains("Cut to a preview"),
        "{preview}"
    );
    assert!(preview.len() < 20 * 1024, "{} characters", preview.len());
    click(
        &client,
        &format!(r#"{large_row} [data-testid="whole-entry-button"]"#),
    )
    .await;
    let whole = text(
        &client,
        &format!(r#"tr.whole-read[data-id="{large}"] [data-testid="entry-payload"]"#),
    )
    .await;
    assert!(whole.contains(&big), "{} characters", whole.len());

    // Older and newer pages.
    click(&client, r#"[data-testid="entries-older"]:not([disabled])"#).await;
    wait_for(
        &client,
        &format!(r#"tr[data-testid="entry-row"][data-id="{}"]"#, ordered[25]),
    )
    .await;
    assert_eq!(
        ids(&client, r#"tr[data-testid="entry-row"]"#).await,
        ordered[25..]
    );
    screenshot_when(
        &client,
        "stream-page-older.png",
        &[r#"[data-testid="entries-older"][disabled]"#],
    )
    .await;
    click(&client, r#"[data-testid="entries-newer"]:not([disabled])"#).await;
    wait_for(
        &client,
        &format!(r#"tr[data-testid="entry-row"][data-id="{}"]"#, ordered[0]),
    )
    .await;

    // Another writer's entries: raw fields, JSON formatted; the page opened from its address.
    client
        .goto(&format!("{base}/#/stream/orders.events"))
        .await
        .unwrap();
    let fields = text(
        &client,
        r#"tr[data-testid="entry-row"] [data-testid="entry-fields"]"#,
    )
    .await;
    assert!(
        fields.contains("order") && fields.contains("o-9"),
        "{fields}"
    );
    assert!(fields.contains("\"currency\": \"EUR\""), "{fields}");
    // No pending entries, and no group to choose: the picker is hidden.
    screenshot_when(
        &client,
        "stream-page-foreign.png",
        &[
            "#pending-empty:not([hidden])",
            "label:has(#pending-group)[hidden]",
        ],
    )
    .await;

    // Back to the overview.
    click(&client, r#"[data-testid="back-link"]"#).await;
    wait_for(&client, r#"[data-testid="overview"]:not([hidden])"#).await;
    wait_for(
        &client,
        r#"tr[data-testid="stream-row"][data-stream="orders.events"]"#,
    )
    .await;
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_paged_newest_first_and_searched() {
    let (_driver, driver_url) = start_chromedriver().await;
    let redis = RedisServer::start().await.unwrap();
    let events = transport(&redis.url()).await;
    let mut conn = redis.connection().await.unwrap();
    for n in 0..60 {
        let kind = if n % 4 == 0 {
            "payment.captured"
        } else {
            "order.created"
        };
        let error = if n % 4 == 0 {
            format!("card issuer timed out (attempt {n})")
        } else {
            format!("address {n} not found")
        };
        events
            .publish_to_dlq(
                Event::new(kind, json!({ "n": n }), EventMetadata::default()),
                &error,
            )
            .await
            .unwrap();
    }
    let ordered = newest_first(&mut conn, "events:dlq").await;
    let (_dashboard, base) = start_dashboard(&redis.url(), &["--refresh", "1s"]);
    let client = browser(&driver_url).await;
    client.goto(&format!("{base}/")).await.unwrap();
    wait_for(
        &client,
        &format!(r#"tr[data-testid="dlq-row"][data-id="{}"]"#, ordered[0]),
    )
    .await;
    assert_eq!(
        ids(&client, r#"tr[data-testid="dlq-row"]"#).await,
        ordered[..25]
    );
    let note = text(&client, r#"[data-testid="dlq-note"]"#).await;
    assert_eq!(note, "25 of 60 dead letters, newest first.");
    screenshot_when(
        &client,
        "dlq-page-1.png",
        &[r#"[data-testid="dlq-newer"][disabled]"#],
    )
    .await;

    // Older, older, newer, newest.
    let older = r#"[data-testid="dlq-older"]:not([disabled])"#;
    click(&client, older).await;
    wait_for(
        &client,
        &format!(r#"tr[data-testid="dlq-row"][data-id="{}"]"#, ordered[25]),
    )
    .await;
    assert_eq!(
        ids(&client, r#"tr[data-testid="dlq-row"]"#).await,
        ordered[25..50]
    );
    click(&client, older).await;
    wait_for(
        &client,
        &format!(r#"tr[data-testid="dlq-row"][data-id="{}"]"#, ordered[50]),
    )
    .await;
    assert_eq!(
        ids(&client, r#"tr[data-testid="dlq-row"]"#).await,
        ordered[50..]
    );
    screenshot_when(
        &client,
        "dlq-page-3.png",
        &[r#"[data-testid="dlq-older"][disabled]"#],
    )
    .await;
    click(&client, r#"[data-testid="dlq-newer"]:not([disabled])"#).await;
    wait_for(
        &client,
        &format!(r#"tr[data-testid="dlq-row"][data-id="{}"]"#, ordered[25]),
    )
    .await;
    click(&client, r#"[data-testid="dlq-newest"]:not([disabled])"#).await;
    wait_for(
        &client,
        &format!(r#"tr[data-testid="dlq-row"][data-id="{}"]"#, ordered[0]),
    )
    .await;

    // Search: by type and error text, on the server.
    wait_for(&client, r#"[data-testid="dlq-filter-type"]"#)
        .await
        .send_keys("payment.captured")
        .await
        .unwrap();
    wait_for(&client, r#"[data-testid="dlq-filter-q"]"#)
        .await
        .send_keys("TIMED OUT")
        .await
        .unwrap();
    click(&client, r#"[data-testid="dlq-search-button"]"#).await;
    let expected: Vec<String> = ordered.iter().skip(3).step_by(4).cloned().collect();
    assert_eq!(expected.len(), 15);
    wait_for(
        &client,
        &format!(r#"#dlq-body:not(:has(tr[data-id="{}"]))"#, ordered[1]),
    )
    .await;
    wait_for(
        &client,
        &format!(r#"tr[data-testid="dlq-row"][data-id="{}"]"#, expected[14]),
    )
    .await;
    assert_eq!(ids(&client, r#"tr[data-testid="dlq-row"]"#).await, expected);
    let note = text(&client, r#"[data-testid="dlq-note"]"#).await;
    assert!(
        note.starts_with("15 matches among 60 dead letters looked at, newest first."),
        "{note}"
    );
    assert!(note.contains("up to 1,000 dead letters per page"), "{note}");
    screenshot_when(&client, "dlq-search.png", &[]).await;
    // Nothing matches: said so.
    let group = wait_for(&client, r#"[data-testid="dlq-filter-group"]"#).await;
    group.send_keys("nobody").await.unwrap();
    click(&client, r#"[data-testid="dlq-search-button"]"#).await;
    let empty = text(&client, "#dlq-empty:not([hidden])").await;
    assert_eq!(empty, "No dead letter matches on this page.");
    client.close().await.unwrap();
}

/// What sticks out of the viewport horizontally: the document's own overflow, and every
/// element (outside the panels' scrolling areas) whose right edge is past the window's.
const OVERFLOW: &str = r"
    const width = window.screen.width;
    const out = [];
    if (document.documentElement.scrollWidth > width) out.push(`document ${document.documentElement.scrollWidth} > ${width}`);
    for (const node of document.querySelectorAll('body *')) {
      if (node.closest('.scroll') && !node.classList.contains('scroll')) continue;
      const box = node.getBoundingClientRect();
      if (box.width && box.right > width + 0.5 && getComputedStyle(node).position !== 'fixed') {
        out.push(`${node.tagName.toLowerCase()}#${node.id}.${node.className} right ${Math.round(box.right)}`);
      }
    }
    return { width: window.innerWidth, screen: window.screen.width, client: document.documentElement.clientWidth, scroll: document.documentElement.scrollWidth, out };
";

pub(crate) async fn assert_fits(client: &Client, what: &str) {
    let result: Value = client.execute(OVERFLOW, vec![]).await.unwrap();
    assert_eq!(
        result["out"],
        json!([]),
        "{what}: wider than 400 px: {result}"
    );
    assert_eq!(
        result["screen"], 400,
        "{what}: the emulated screen: {result}"
    );
    assert_eq!(
        result["width"], 400,
        "{what}: the window was zoomed out: {result}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_fits_400_px_and_its_banner_is_punctuated() {
    let (_driver, driver_url) = start_chromedriver().await;
    let redis = RedisServer::start().await.unwrap();
    let events = transport(&redis.url()).await;
    let mut conn = redis.connection().await.unwrap();
    for n in 0..4 {
        events
            .publish(Event::new(
                "order.created.with.a.rather.long.event.type.name",
                json!({ "order_id": n, "note": "a fairly long line of payload text that does not break anywhere-at-all-really" }),
                EventMetadata::default(),
            ))
            .await
            .unwrap();
    }
    group_reads(
        &mut conn,
        "events:order.created.with.a.rather.long.event.type.name",
        2,
    )
    .await;
    events
        .publish_to_dlq(
            Event::new(
                "payment.captured",
                json!({ "payment": "p-77" }),
                EventMetadata::default(),
            ),
            &format!("card issuer timed out: {}", "stack-frame::".repeat(40)),
        )
        .await
        .unwrap();
    let (_dashboard, base) = start_dashboard(&redis.url(), &["--refresh", "1s", "--allow-writes"]);
    let client = browser_sized(&driver_url, Some(400)).await;
    client.goto(&format!("{base}/")).await.unwrap();
    screenshot_when(
        &client,
        "narrow-overview.png",
        &[
            LIVE,
            r#"tr[data-testid="dlq-row"]"#,
            r#"tr[data-testid="group-row"]"#,
        ],
    )
    .await;
    assert_fits(&client, "the overview").await;
    // The dead letters further down.
    scroll_to(&client, "#dlq-title").await;
    screenshot_when(&client, "narrow-dead-letters.png", &[]).await;

    client
        .goto(&format!(
            "{base}/#/stream/order.created.with.a.rather.long.event.type.name"
        ))
        .await
        .unwrap();
    screenshot_when(
        &client,
        "narrow-stream-page.png",
        &[
            r#"tr[data-testid="entry-row"]"#,
            r#"tr[data-testid="pending-row"]"#,
        ],
    )
    .await;
    assert_fits(&client, "the stream page").await;

    // Redis goes away: the banner says so in whole sentences.
    client.goto(&format!("{base}/")).await.unwrap();
    wait_for(&client, LIVE).await;
    redis.kill().unwrap();
    let banner = text(&client, r#"[data-testid="alert"]:not([hidden])"#).await;
    assert!(
        banner.ends_with(
            "the dashboard tries again on the next request. Showing the last data received."
        ),
        "{banner}"
    );
    assert_fits(&client, "the overview with the banner").await;
    scroll_to(&client, "body").await;
    screenshot_when(&client, "narrow-banner.png", &[]).await;
    client.close().await.unwrap();
}

/// Holds the reply to the page's `GET /api/throughput` (sent when the live feed opens) until
/// the live feed has brought two samples of its own, one of them newer than that history: the
/// order a loaded machine gives now and then, made certain.
const HOLD_HISTORY: &str = r"
    const fetchNow = window.fetch.bind(window);
    const samples = () => Number(document.getElementById('throughput-chart')?.dataset.samples || 0);
    window.fetch = async (input, init) => {
      const response = await fetchNow(input, init);
      if (String(input).includes('/api/throughput')) {
        await new Promise((resolve) => {
          const check = () => (samples() >= 2 ? resolve() : setTimeout(check, 50));
          check();
        });
      }
      return response;
    };
";

/// Runs `script` in every page `client` opens from now on, before the page's own scripts
/// (Chromium's `Page.addScriptToEvaluateOnNewDocument`, through chromedriver).
async fn before_each_page(client: &Client, driver_url: &str, script: &str) {
    let session = client.session_id().await.unwrap().unwrap();
    let response = reqwest::Client::new()
        .post(format!("{driver_url}/session/{session}/goog/cdp/execute"))
        .json(&json!({
            "cmd": "Page.addScriptToEvaluateOnNewDocument",
            "params": { "source": script },
        }))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_throughput_history_outlives_a_reload() {
    let (_driver, driver_url) = start_chromedriver().await;
    let redis = RedisServer::start().await.unwrap();
    let events = transport(&redis.url()).await;
    let mut conn = redis.connection().await.unwrap();
    events
        .publish(Event::new(
            "order.created",
            json!({ "n": 0 }),
            EventMetadata::default(),
        ))
        .await
        .unwrap();
    group_reads(&mut conn, "events:order.created", 1).await;
    let (_dashboard, base) = start_dashboard(&redis.url(), &["--refresh", "1s"]);
    let client = browser(&driver_url).await;
    client.goto(&format!("{base}/")).await.unwrap();
    wait_for(&client, LIVE).await;
    // Events, acknowledgements and a dead letter between two snapshots.
    for n in 1..=20 {
        events
            .publish(Event::new(
                "order.created",
                json!({ "n": n }),
                EventMetadata::default(),
            ))
            .await
            .unwrap();
    }
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("billing")
        .arg("billing-1")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg("events:order.created")
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg("events:order.created")
        .arg("billing")
        .arg("-")
        .arg("+")
        .arg(6)
        .query_async(&mut conn)
        .await
        .unwrap();
    let ids: Vec<&str> = pending.iter().map(|p| p.0.as_str()).collect();
    let _: u64 = redis::cmd("XACK")
        .arg("events:order.created")
        .arg("billing")
        .arg(&ids)
        .query_async(&mut conn)
        .await
        .unwrap();
    events
        .publish_to_dlq(
            Event::new(
                "order.created",
                json!({ "n": 99 }),
                EventMetadata::default(),
            ),
            "boom",
        )
        .await
        .unwrap();
    wait_for(&client, "#throughput-legend li").await;
    wait_for(&client, "#flow-legend li").await;
    wait_for(&client, "#lag-legend li").await;
    let flow = text(&client, "#flow-legend").await;
    assert!(
        flow.contains("acknowledged") && flow.contains("dead-lettered"),
        "{flow}"
    );
    let points = |client: &Client| {
        let client = client.clone();
        async move {
            let value = client
                .execute(
                    "return document.querySelector('#throughput-chart polyline').getAttribute('points').split(' ').length",
                    vec![],
                )
                .await
                .unwrap();
            value.as_u64().unwrap()
        }
    };
    // Three samples or more before the reload.
    wait_for(
        &client,
        r#"#throughput-chart:not([data-samples="0"]):not([data-samples="1"]):not([data-samples="2"])"#,
    )
    .await;
    scroll_to(&client, "#throughput-title").await;
    screenshot_when(&client, "throughput.png", &[]).await;
    let before = points(&client).await;
    assert!(before >= 3, "{before}");
    // A reload draws the server's history at once, not only what arrives from now on, even
    // when the live feed's samples reach the page before the history does.
    before_each_page(&client, &driver_url, HOLD_HISTORY).await;
    client.refresh().await.unwrap();
    wait_for(
        &client,
        "#throughput-chart[data-history=\"loaded\"] polyline",
    )
    .await;
    let after = points(&client).await;
    assert!(
        after >= before,
        "{after} points after the reload, {before} before"
    );
    wait_for(&client, "#flow-legend li").await;
    client.close().await.unwrap();
}
