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

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use redstream_core::{Event, EventMetadata};
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport};
use serde_json::{Value, json};

/// How long any one thing may take to show up on the page (the feed refreshes every second).
const WAIT: Duration = Duration::from_secs(20);

/// How long a process (chromedriver, `redstream serve`) may take to say it is ready: longer than
/// [`WAIT`], as starting one on a loaded 2-core machine can take a while.
const START: Duration = Duration::from_secs(60);

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
    let deadline = Instant::now() + START;
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

/// The first value `pick` finds in the lines of `output`, within [`START`]. The rest of the
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
    let deadline = Instant::now() + START;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(value) = pick(&line) {
                    return value;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{name} did not print the expected line within {START:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("{name} closed its output (exited?) before printing the expected line")
            }
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
async fn wait_for(client: &Client, css: &str) -> Element {
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

/// Runs `act` on the element `css` matches, once it shows up (bounded).
///
/// The page re-renders a row whenever its data changes (an idle time ticks, a length grows),
/// so an element found in one WebDriver call can be gone by the next: on a stale element the
/// selector is looked up again, until [`WAIT`] has passed. Tests hold selectors, never
/// elements, across calls.
async fn with_element<T, F, Fut>(client: &Client, css: &str, act: F) -> T
where
    F: Fn(Element) -> Fut,
    Fut: Future<Output = Result<T, CmdError>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        let element = wait_for(client, css).await;
        match act(element).await {
            Ok(value) => return value,
            Err(e) if e.is_stale_element_reference() && Instant::now() < deadline => {}
            Err(e) => panic!("on {css:?}: {e}"),
        }
    }
}

/// The text of the element `css` matches, as the browser renders it.
async fn text(client: &Client, css: &str) -> String {
    with_element(client, css, |element| async move { element.text().await }).await
}

/// The rendered texts of the elements the selectors match, read together in one script in the
/// page: parts that one refresh updates together (a total and the card that repeats it) are
/// read from the same refresh.
async fn texts_together(client: &Client, selectors: &[&str]) -> Vec<String> {
    for css in selectors {
        wait_for(client, css).await;
    }
    let texts = client
        .execute(
            "return Array.from(arguments, css => document.querySelector(css).innerText)",
            selectors
                .iter()
                .map(|css| Value::String((*css).to_owned()))
                .collect(),
        )
        .await
        .unwrap();
    serde_json::from_value(texts).unwrap()
}

/// The attribute `name` of the element `css` matches.
async fn attr(client: &Client, css: &str, name: &str) -> Option<String> {
    with_element(
        client,
        css,
        |element| async move { element.attr(name).await },
    )
    .await
}

/// Whether the control `css` matches is enabled.
async fn is_enabled(client: &Client, css: &str) -> bool {
    with_element(
        client,
        css,
        |element| async move { element.is_enabled().await },
    )
    .await
}

/// Waits (bounded) for `css` and clicks it.
async fn click(client: &Client, css: &str) {
    with_element(client, css, |element| async move { element.click().await }).await;
}

/// The connection badge once the WebSocket feed is live.
const LIVE: &str = r#"[data-testid="connection-status"][data-state="live"]"#;

/// Scrolls the element `css` matches (waited for) to the top of the window.
async fn scroll_to(client: &Client, css: &str) {
    wait_for(client, css).await;
    // Found again in the page, so a row re-rendered meanwhile is not a stale element.
    client
        .execute(
            "document.querySelector(arguments[0]).scrollIntoView()",
            vec![Value::String(css.to_owned())],
        )
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
    assert_eq!(
        text(&client, r#"[data-testid="writes-badge"]"#).await,
        "Writes enabled"
    );

    // The Nodes panel: the one server, with its stream and entries, and the totals.
    let address = format!("{}:{}", redis.host(), redis.port());
    let node = text(
        &client,
        &format!(r#"tr[data-testid="node-row"][data-node="{address}"]"#),
    )
    .await;
    assert!(node.contains("master"), "{node}");
    assert!(node.contains('6'), "six entries: {node}");
    let total = text(&client, r#"tr[data-testid="nodes-total"]"#).await;
    assert!(total.starts_with("Total"), "{total}");
    assert!(total.contains('6'), "{total}");

    // A new stream appears without a reload.
    events
        .publish(Event::new(
            "user.signed_up",
            json!({ "user": "ada" }),
            EventMetadata::default(),
        ))
        .await
        .unwrap();
    let row = text(
        &client,
        r#"tr[data-testid="stream-row"][data-stream="events:user.signed_up"]"#,
    )
    .await;
    assert!(row.contains("user.signed_up"), "{row}");
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
    let raw = text(
        &client,
        r#"tr[data-testid="stream-row"][data-stream="events.raw"]"#,
    )
    .await;
    assert!(raw.contains("events.raw"), "{raw}");
    assert_eq!(
        text(&client, r#"[data-testid="prefix"]"#).await,
        "prefix events · also events.*"
    );
    // Read in one script in the page: a row whose length changes is re-rendered.
    let streams = client
        .execute(
            r#"return Array.from(document.querySelectorAll('tr[data-testid="stream-row"]'),
                row => row.getAttribute('data-stream'))"#,
            vec![],
        )
        .await
        .unwrap();
    let mut streams: Vec<String> = serde_json::from_value(streams).unwrap();
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
    let dead_row = text(&client, &dead_row_css).await;
    assert!(
        dead_row.contains("card issuer timed out after 3 attempts"),
        "{dead_row}"
    );
    assert!(dead_row.contains("payment.captured"), "{dead_row}");
    let button = format!(r#"{dead_row_css} button[data-testid="redrive-button"]"#);
    assert!(is_enabled(&client, &button).await);
    // Let a few snapshots build the throughput chart, then keep a picture of the page.
    screenshot_when(&client, "dashboard.png", &["#throughput-legend li"]).await;

    // Redrive it: it leaves the table, a snapshot confirms the dead-letter stream is empty, and
    // the event is back on its stream.
    click(&client, &button).await;
    let notice = text(&client, r#"[data-testid="notice"]:not([hidden])"#).await;
    assert!(notice.contains("Redriven 1"), "{notice}");
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
    let row = format!(r#"tr[data-testid="dlq-row"][data-id="{dead}"]"#);
    assert!(
        !is_enabled(
            &client,
            &format!(r#"{row} button[data-testid="redrive-button"]"#)
        )
        .await
    );
    let tooltip = attr(&client, &format!("{row} .action-wrap"), "title")
        .await
        .unwrap_or_default();
    assert!(tooltip.contains("--allow-writes"), "{tooltip}");
    assert_eq!(
        text(&client, r#"[data-testid="writes-badge"]"#).await,
        "Read-only"
    );

    // Everything from Redis is shown as text, and nothing of it became markup.
    let shown = text(&client, &row).await;
    assert!(shown.contains(error), "{shown}");
    assert!(shown.contains("</script><script>"), "{shown}");
    let stream_row = text(
        &client,
        &format!(r#"tr[data-testid="stream-row"][data-stream="{html_stream}"]"#),
    )
    .await;
    assert!(stream_row.contains("<i>x</i>"), "{stream_row}");
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
