//! The dashboard page in a real headless Chromium, driven over WebDriver by `chromedriver`.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`/usr/bin/chromium`,
//! `/usr/bin/chromedriver`); `CHROMEDRIVER` and `CHROMIUM` override the paths. Without
//! chromedriver the test fails and says what to install: it never passes without a browser.
//!
//! Every wait is a WebDriver wait on a CSS selector (bounded, polled), never a fixed sleep. The
//! screenshots land in `target/browser-artifacts/`.

#![allow(clippy::unwrap_used)]

mod detail;
mod pages;

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use redstream_core::{Event, EventMetadata};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport};
use serde_json::{Value, json};

/// How long any one thing may take to show up on the page (the feed refreshes every second).
const WAIT: Duration = Duration::from_secs(20);

/// A child process killed when the test ends, however it ends.
struct Process {
    child: Child,
    name: &'static str,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&dirs).chain([PathBuf::from("/usr/bin")]) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// chromedriver on a port it picks itself (`--port=0`, no race for a free one), once it
/// answers `/status` as ready.
async fn start_chromedriver() -> (Process, String) {
    let Some(binary) = find_program("CHROMEDRIVER", &["chromedriver"]) else {
        panic!(
            "chromedriver was not found (PATH, /usr/bin, or $CHROMEDRIVER): install the Debian \
             packages chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
        );
    };
    let mut child = Command::new(&binary)
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let stdout = child.stdout.take().unwrap();
    let process = Process {
        child,
        name: "chromedriver",
    };
    // "ChromeDriver was started successfully on port 35601."
    let port = wait_for_line(stdout, process.name, |line| {
        line.split_once("started successfully on port ")
            .map(|(_, port)| port.trim().trim_end_matches('.').to_owned())
    });
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(response) = http.get(format!("{url}/status")).send().await
            && let Ok(status) = response.json::<Value>().await
            && status["value"]["ready"] == true
        {
            return (process, url);
        }
        assert!(
            Instant::now() < deadline,
            "{} did not become ready on port {port}",
            process.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first value `pick` finds in the lines of `output`, within [`WAIT`]. The rest of the
/// output is drained in the background, so the process never blocks on a full pipe.
fn wait_for_line(
    output: impl std::io::Read + Send + 'static,
    name: &str,
    pick: impl Fn(&str) -> Option<String>,
) -> String {
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(value) = pick(&line) {
                    return value;
                }
            }
            Err(_) => panic!("{name} did not print the expected line within {WAIT:?}"),
        }
    }
}

/// `redstream serve` on a free port, once it prints its listening line.
fn start_dashboard(redis_url: &str, args: &[&str]) -> (Process, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_redstream"))
        .args(["--url", redis_url, "serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("REDSTREAM_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let process = Process {
        child,
        name: "redstream serve",
    };
    let base = wait_for_line(stderr, process.name, |line| {
        line.trim().strip_prefix("listening on ").map(str::to_owned)
    });
    (process, base)
}

async fn browser(driver: &str) -> Client {
    browser_sized(driver, None).await
}

/// A Chromium session; with `width`, it emulates a phone's screen that many CSS pixels wide
/// (a desktop window cannot be made that narrow).
async fn browser_sized(driver: &str, width: Option<u32>) -> Client {
    let mut chrome = json!({
        "args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1440,2000",
            "--force-device-scale-factor=1",
            "--lang=en-US",
        ]
    });
    if let Some(width) = width {
        chrome["mobileEmulation"] = json!({
            "deviceMetrics": { "width": width, "height": 860, "pixelRatio": 1.0, "touch": false }
        });
    }
    if let Some(binary) = find_program("CHROMIUM", &["chromium", "chromium-browser"]) {
        chrome["binary"] = json!(binary.display().to_string());
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert("goog:chromeOptions".into(), chrome);
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(driver)
        .await
        .unwrap_or_else(|e| panic!("cannot open a Chromium session through chromedriver: {e}"))
}

/// Waits (bounded) until `css` matches an element, and returns it.
async fn wait_for(client: &Client, css: &str) -> fantoccini::elements::Element {
    match client
        .wait()
        .at_most(WAIT)
        .every(Duration::from_millis(100))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(element) => element,
        Err(e) => {
            save_screenshot(client, "failure.png").await;
            let body = client
                .find(Locator::Css("body"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap_or_default();
            panic!("nothing matched {css:?} within {WAIT:?} ({e}); the page shows:\n{body}");
        }
    }
}

fn artifacts_dir() -> PathBuf {
    // target/debug/deps/browser-<hash> -> target/
    let exe = std::env::current_exe().unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap();
    let dir = target.join("browser-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn save_screenshot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.unwrap();
    let path = artifacts_dir().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&png)
        .unwrap();
    path
}

/// The smallest screenshot taken as a picture of the page: a blank one is a few KiB.
const MIN_SCREENSHOT_BYTES: u64 = 10_000;

/// Waits (bounded) for each of `ready` in turn, then saves a screenshot named `name` in
/// `target/browser-artifacts/` and checks that it is not blank. The one way the tests take
/// their pictures: what a picture must show is what it waits for.
async fn screenshot_when(client: &Client, name: &str, ready: &[&str]) -> PathBuf {
    for css in ready {
        wait_for(client, css).await;
    }
    let path = save_screenshot(client, name).await;
    let bytes = std::fs::metadata(&path).unwrap().len();
    assert!(
        bytes > MIN_SCREENSHOT_BYTES,
        "{} is {bytes} bytes: a blank page?",
        path.display()
    );
    path
}

/// Waits (bounded) for `css` and clicks it.
async fn click(client: &Client, css: &str) {
    wait_for(client, css).await.click().await.unwrap();
}

/// The connection badge once the WebSocket feed is live.
const LIVE: &str = r#"[data-testid="connection-status"][data-state="live"]"#;

/// Scrolls the element `css` matches (waited for) to the top of the window.
async fn scroll_to(client: &Client, css: &str) {
    let element = wait_for(client, css).await;
    let element = serde_json::to_value(&element).unwrap();
    client
        .execute("arguments[0].scrollIntoView()", vec![element])
        .await
        .unwrap();
}

async fn transport(url: &str) -> RedisTransport {
    RedisTransport::new(RedisConfig {
        url: url.to_owned(),
        ..RedisConfig::default()
    })
    .await
    .unwrap()
}

async fn group_reads(conn: &mut redis::aio::MultiplexedConnection, stream: &str, count: usize) {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("billing")
        .arg("0")
        .query_async(conn)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("billing")
        .arg("billing-1")
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_follows_streams_and_redrives_a_dead_letter() {
    let (_driver, driver_url) = start_chromedriver().await;
    let redis = RedisServer::start().await.unwrap();
    let events = transport(&redis.url()).await;
    let mut conn = redis.connection().await.unwrap();

    // Something in every table before the page opens: a stream with a group holding pending
    // entries.
    for n in 0..6 {
        events
            .publish(Event::new(
                "order.created",
                json!({ "order_id": n }),
                EventMetadata::default(),
            ))
            .await
            .unwrap();
    }
    group_reads(&mut conn, "events:order.created", 2).await;

    let (_dashboard, base) = start_dashboard(
        &redis.url(),
        &["--allow-writes", "--refresh", "1s", "--streams", "events.*"],
    );
    let client = browser(&driver_url).await;
    client.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(client.title().await.unwrap(), "redstream dashboard");
    wait_for(&client, LIVE).await;
    wait_for(
        &client,
        r#"tr[data-testid="stream-row"][data-stream="events:order.created"]"#,
    )
    .await;
    wait_for(
        &client,
        r#"tr[data-testid="group-row"][data-group="billing"]"#,
    )
    .await;
    let writes = wait_for(&client, r#"[data-testid="writes-badge"]"#).await;
    assert_eq!(writes.text().await.unwrap(), "Writes enabled");

    // The Nodes panel: the one server, with its stream and entries, and the totals.
    let address = format!("{}:{}", redis.host(), redis.port());
    let node = wait_for(
        &client,
        &format!(r#"tr[data-testid="node-row"][data-node="{address}"]"#),
    )
    .await;
    let text = node.text().await.unwrap();
    assert!(text.contains("master"), "{text}");
    assert!(text.contains('6'), "six entries: {text}");
    let total = wait_for(&client, r#"tr[data-testid="nodes-total"]"#).await;
    let text = total.text().await.unwrap();
    assert!(text.starts_with("Total"), "{text}");
    assert!(text.contains('6'), "{text}");

    // A new stream appears without a reload.
    events
        .publish(Event::new(
            "user.signed_up",
            json!({ "user": "ada" }),
            EventMetadata::default(),
        ))
        .await
        .unwrap();
    let row = wait_for(
        &client,
        r#"tr[data-testid="stream-row"][data-stream="events:user.signed_up"]"#,
    )
    .await;
    assert!(row.text().await.unwrap().contains("user.signed_up"));
    // One row per stream: a high-priority event goes to the type's row, no lane row appears.
    events
        .publish(
            Event::new(
                "user.signed_up",
                json!({ "user": "bob" }),
                EventMetadata::default(),
            )
            .with_priority(redstream_core::Priority::High),
        )
        .await
        .unwrap();
    // A stream of another writer, matched by --streams, shown by its own name.
    events
        .publish_fields("events.raw", &[("event_id", "e1"), ("brand_id", "b1")])
        .await
        .unwrap();
    let raw = wait_for(
        &client,
        r#"tr[data-testid="stream-row"][data-stream="events.raw"]"#,
    )
    .await;
    assert!(raw.text().await.unwrap().contains("events.raw"));
    let header = wait_for(&client, r#"[data-testid="prefix"]"#).await;
    assert_eq!(
        header.text().await.unwrap(),
        "prefix events · also events.*"
    );
    let rows = client
        .find_all(fantoccini::Locator::Css(r#"tr[data-testid="stream-row"]"#))
        .await
        .unwrap();
    let mut streams = Vec::new();
    for row in rows {
        streams.push(row.attr("data-stream").await.unwrap().unwrap());
    }
    streams.sort();
    assert_eq!(
        streams,
        [
            "events.raw",
            "events:order.created",
            "events:user.signed_up"
        ]
    );

    // A dead letter appears, with its error.
    let dead = events
        .publish_to_dlq(
            Event::new(
                "payment.captured",
                json!({ "payment": "p-77", "amount": 12.5 }),
                EventMetadata::default(),
            ),
            "card issuer timed out after 3 attempts",
        )
        .await
        .unwrap();
    let dead_row_css = format!(r#"tr[data-testid="dlq-row"][data-id="{dead}"]"#);
    let dead_row = wait_for(&client, &dead_row_css).await;
    let text = dead_row.text().await.unwrap();
    assert!(
        text.contains("card issuer timed out after 3 attempts"),
        "{text}"
    );
    assert!(text.contains("payment.captured"), "{text}");
    let button = dead_row
        .find(Locator::Css(r#"button[data-testid="redrive-button"]"#))
        .await
        .unwrap();
    assert!(button.is_enabled().await.unwrap());
    // Let a few snapshots build the throughput chart, then keep a picture of the page.
    screenshot_when(&client, "dashboard.png", &["#throughput-legend li"]).await;

    // Redrive it: it leaves the table, a snapshot confirms the dead-letter stream is empty, and
    // the event is back on its stream.
    button.click().await.unwrap();
    let notice = wait_for(&client, r#"[data-testid="notice"]:not([hidden])"#).await;
    assert!(notice.text().await.unwrap().contains("Redriven 1"));
    wait_for(
        &client,
        &format!(r#"#dlq-body:not(:has(tr[data-id="{dead}"]))"#),
    )
    .await;
    let redriven = r#"tr[data-testid="stream-row"][data-stream="events:payment.captured"]"#;
    screenshot_when(
        &client,
        "dashboard-after-redrive.png",
        &["#dlq-empty:not([hidden])", redriven],
    )
    .await;
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("events:payment.captured")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let envelope: Value = serde_json::from_str(&entries[0].1[0].1).unwrap();
    assert_eq!(envelope["payload"]["payment"], "p-77");
    let left: u64 = redis::cmd("XLEN")
        .arg("events:dlq")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_pages_disable_the_redrive_buttons() {
    let (_driver, driver_url) = start_chromedriver().await;
    let redis = RedisServer::start().await.unwrap();
    let events = transport(&redis.url()).await;
    // Text from Redis that would run or render if the page parsed it as HTML: an error, a
    // payload, and a stream name written by another producer.
    let error = r#"<img src=x onerror="document.title='pwned'"><b>boom</b>"#;
    let dead = events
        .publish_to_dlq(
            Event::new(
                "a.b",
                json!({ "html": "</script><script>document.title='pwned'</script>" }),
                EventMetadata::default(),
            ),
            error,
        )
        .await
        .unwrap();
    let html_stream = "events:<i>x</i><script>document.title='pwned'</script>";
    let mut conn = redis.connection().await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(html_stream)
        .arg("*")
        .arg("event")
        .arg("{}")
        .query_async(&mut conn)
        .await
        .unwrap();
    let token = "browser-token-1b7e";
    let (_dashboard, base) = start_dashboard(&redis.url(), &["--refresh", "1s", "--token", token]);
    let client = browser(&driver_url).await;
    // The page passes its ?token= on to the WebSocket.
    client
        .goto(&format!("{base}/?token={token}"))
        .await
        .unwrap();
    let row = wait_for(
        &client,
        &format!(r#"tr[data-testid="dlq-row"][data-id="{dead}"]"#),
    )
    .await;
    let button = row
        .find(Locator::Css(r#"button[data-testid="redrive-button"]"#))
        .await
        .unwrap();
    assert!(!button.is_enabled().await.unwrap());
    let wrap = row.find(Locator::Css(".action-wrap")).await.unwrap();
    let tooltip = wrap.attr("title").await.unwrap().unwrap_or_default();
    assert!(tooltip.contains("--allow-writes"), "{tooltip}");
    let badge = wait_for(&client, r#"[data-testid="writes-badge"]"#).await;
    assert_eq!(badge.text().await.unwrap(), "Read-only");

    // Everything from Redis is shown as text, and nothing of it became markup.
    let text = row.text().await.unwrap();
    assert!(text.contains(error), "{text}");
    assert!(text.contains("</script><script>"), "{text}");
    let stream_row = wait_for(
        &client,
        &format!(r#"tr[data-testid="stream-row"][data-stream="{html_stream}"]"#),
    )
    .await;
    assert!(stream_row.text().await.unwrap().contains("<i>x</i>"));
    let injected = client
        .find_all(Locator::Css("main img, main b, main i, main script"))
        .await
        .unwrap();
    assert!(injected.is_empty(), "{} injected elements", injected.len());
    assert_eq!(client.title().await.unwrap(), "redstream dashboard");
    // The Content Security Policy let the embedded style in (its hash matches): the skip link
    // is moved off screen by it.
    let left = client
        .execute(
            "return getComputedStyle(document.querySelector('.skip')).left",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(left, json!("-999px"));
    screenshot_when(&client, "dashboard-read-only.png", &[]).await;

    // Without the token, the page is refused.
    client.goto(&format!("{base}/")).await.unwrap();
    let body = client.source().await.unwrap();
    assert!(body.contains("unauthorized"), "{body}");
    client.close().await.unwrap();
}
