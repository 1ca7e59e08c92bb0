//! The `redstream serve` binary: the listening line, the options, logs without secrets, and a
//! graceful stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redstream_testkit::RedisServer;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::TOKEN;
use crate::websocket::next_json;

const PASSWORD: &str = "bin-pw-3a8f0e11";

/// A running `redstream serve` and its stderr, line by line.
pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) base: String,
    lines: mpsc::Receiver<String>,
    pub(crate) stderr: Vec<String>,
}

impl Served {
    /// Starts `redstream --url <url> [global] serve --listen 127.0.0.1:0 [args]` (without that
    /// `--listen` when `args` has one) and waits for its `listening on http://...` line.
    pub(crate) fn start(url: &str, global: &[&str], args: &[&str]) -> Self {
        Self::start_with_env(url, global, args, &[])
    }

    /// [`start`](Self::start) with these environment variables set.
    pub(crate) fn start_with_env(
        url: &str,
        global: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_redstream"))
            .arg("--url")
            .arg(url)
            .args(global)
            .arg("serve")
            .args(if args.contains(&"--listen") {
                &[][..]
            } else {
                &["--listen", "127.0.0.1:0"][..]
            })
            .args(args)
            .env_remove("REDSTREAM_TOKEN")
            .env_remove("REDSTREAM_PREFIX")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut served = Self {
            child,
            base: String::new(),
            lines,
            stderr: Vec::new(),
        };
        let line = served
            .wait_for("listening on http://", Duration::from_secs(30))
            .unwrap_or_else(|| panic!("no listening line; stderr: {:?}", served.stderr));
        served.base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .to_owned();
        served
    }

    /// The first line (from now on) containing `needle`, within `timeout`.
    pub(crate) fn wait_for(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    pub(crate) fn send_sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (at most 20 s) for the exit; returns whether it exited with status 0.
    pub(crate) fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Collect what is left of stderr.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
                    self.stderr.push(line);
                }
                return status.success();
            }
            assert!(Instant::now() < deadline, "did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_then_stops_on_sigterm_without_leaking_secrets() {
    let redis = RedisServer::builder()
        .password(PASSWORD)
        .start()
        .await
        .unwrap();
    let mut served = Served::start(
        &redis.url(),
        &["--log", "debug"],
        &["--token", TOKEN, "--refresh", "1s"],
    );
    assert!(
        served.base.starts_with("http://127.0.0.1:"),
        "{}",
        served.base
    );
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/health", served.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let refused = http
        .get(format!("{}/api/streams", served.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let page = http
        .get(format!("{}/?token={TOKEN}", served.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    // Writes are off by default.
    let write = http
        .post(format!("{}/api/dlq/purge", served.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 403);

    // SIGTERM: open WebSockets get a close frame ("going away") before the process exits.
    // With no HTTP connection left, the server itself stops at once: a process that did not
    // wait for its WebSocket tasks would exit before most of these eight got their frame.
    drop(http);
    let ws = format!(
        "ws{}/ws?token={TOKEN}",
        served.base.trim_start_matches("http")
    );
    let mut sockets = Vec::new();
    for _ in 0..8 {
        let (mut socket, _) = tokio_tungstenite::connect_async(&ws).await.unwrap();
        assert_eq!(next_json(&mut socket).await["type"], "snapshot");
        sockets.push(socket);
    }
    served.send_sigterm();
    for socket in &mut sockets {
        let close = loop {
            let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .expect("no close frame within 10 s of SIGTERM")
                .expect("the connection ended without a close frame")
                .expect("the connection failed without a close frame");
            match message {
                Message::Close(frame) => break frame,
                Message::Text(_) | Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected message {other:?}"),
            }
        };
        assert_eq!(
            close.map(|frame| frame.code),
            Some(CloseCode::Away),
            "stderr: {:?}",
            served.stderr
        );
    }
    let exited = tokio::task::block_in_place(|| served.wait_exit());
    assert!(exited, "exit status; stderr: {:?}", served.stderr);
    let log = served.stderr.join("\n");
    assert!(log.contains("stopped"), "{log}");
    assert!(log.contains("request"), "debug logs were on: {log}");
    assert!(
        !log.contains(PASSWORD),
        "the password leaked into the log:\n{log}"
    );
    assert!(
        !log.contains(TOKEN),
        "the token leaked into the log:\n{log}"
    );
}

#[test]
fn help_hides_the_token() {
    let output = Command::new(env!("CARGO_BIN_EXE_redstream"))
        .args(["serve", "--help"])
        .env("REDSTREAM_TOKEN", "env-token-should-not-show")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(
        help.contains("--token") && help.contains("REDSTREAM_TOKEN"),
        "{help}"
    );
    assert!(help.contains("--allow-writes") && help.contains("--refresh"));
    assert!(help.contains("127.0.0.1:8090"), "{help}");
    assert!(!help.contains("env-token-should-not-show"), "{help}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unsafe_or_invalid_options_are_refused() {
    let redis = RedisServer::start().await.unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_redstream"))
            .arg("--url")
            .arg(redis.url())
            .arg("serve")
            .args(args)
            .env_remove("REDSTREAM_TOKEN")
            .output()
            .unwrap()
    };
    let open = run(&["--listen", "0.0.0.0:0", "--allow-writes"]);
    assert!(!open.status.success());
    let stderr = String::from_utf8_lossy(&open.stderr);
    assert!(
        stderr.contains("refusing") && stderr.contains("--token"),
        "{stderr}"
    );
    for bad in [
        ["--refresh", "1ms"],
        ["--refresh", "soon"],
        ["--listen", "not-an-address"],
        ["--token", ""],
        ["--token", "short-token"],
        ["--streams", ""],
        ["--streams", "events raw"],
        ["--max-connections", "0"],
        ["--max-connections", "70000"],
        ["--max-ws-clients", "0"],
        ["--header-read-timeout", "0s"],
        ["--header-read-timeout", "1h"],
        ["--allowed-hosts", ""],
        ["--allowed-hosts", "dashboard.internal:8090"],
        ["--allowed-hosts", "http://dashboard.internal"],
        ["--allowed-hosts", "a..b"],
    ] {
        let output = run(&bad);
        assert!(!output.status.success(), "{bad:?}");
        assert!(!output.stderr.is_empty());
    }
}

/// The docker-compose setting: listening on every interface, without a token. A page whose DNS
/// name was re-pointed at the machine (DNS rebinding) is refused; the addresses, localhost and
/// the names of `--allowed-hosts` are answered.
#[tokio::test(flavor = "multi_thread")]
async fn on_every_interface_other_host_names_are_refused() {
    let redis = RedisServer::start().await.unwrap();
    let served = Served::start(
        &redis.url(),
        &[],
        &[
            "--listen",
            "0.0.0.0:0",
            "--allowed-hosts",
            "dashboard.internal",
        ],
    );
    let port = served.base.rsplit(':').next().unwrap().to_owned();
    let http = reqwest::Client::new();
    let status = |host: String| {
        let request = http
            .get(format!("http://127.0.0.1:{port}/health"))
            .header("host", host)
            .send();
        async move { request.await.unwrap().status().as_u16() }
    };
    assert_eq!(status(format!("evil.example:{port}")).await, 403);
    assert_eq!(status(format!("127.0.0.1:{port}")).await, 200);
    assert_eq!(status(format!("localhost:{port}")).await, 200);
    assert_eq!(status(format!("dashboard.internal:{port}")).await, 200);
}

/// `--max-connections`, `--max-ws-clients` and `--header-read-timeout` reach the server: the
/// ready line logs them, and with one slot and a 1 s limit, a second client waits until the
/// first, which sent half a request head, is dropped.
#[tokio::test(flavor = "multi_thread")]
async fn connection_limits_from_the_command_line() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let redis = RedisServer::start().await.unwrap();
    let mut served = Served::start(
        &redis.url(),
        &["--log", "info"],
        &[
            "--max-connections",
            "1",
            "--max-ws-clients",
            "3",
            "--header-read-timeout",
            "1s",
        ],
    );
    let ready = served
        .stderr
        .iter()
        .find(|line| line.contains("dashboard ready"))
        .cloned()
        .or_else(|| served.wait_for("dashboard ready", Duration::from_secs(30)))
        .unwrap();
    for field in [
        "max_connections=1",
        "max_ws_clients=3",
        "header_read_timeout=1s",
    ] {
        assert!(ready.contains(field), "{field} missing from {ready}");
    }
    let address = served.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    // Accepted into the listen backlog, served only once the slow client's slot is free.
    let mut next = tokio::net::TcpStream::connect(&address).await.unwrap();
    next.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), next.read_to_end(&mut answer))
        .await
        .expect("no answer on the freed slot")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // By then the slow client was dropped without an answer: its socket reads end-of-file (or
    // a reset), not "would block".
    // A direct, non-blocking read (the runtime's cached readiness could say "would block").
    let mut slow = slow.into_std().unwrap();
    let mut buf = [0_u8; 64];
    match std::io::Read::read(&mut slow, &mut buf) {
        Ok(n) => assert_eq!(n, 0, "{:?}", &buf[..n]),
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
    }
}

/// `--streams` (repeated, and as a comma list) and `--prefix ''` reach the dashboard: seed 004's
/// streams are listed, next to the streams of event types under the empty prefix.
#[tokio::test(flavor = "multi_thread")]
async fn streams_patterns_and_the_empty_prefix() {
    let redis = RedisServer::start().await.unwrap();
    let mut conn = redis.connection().await.unwrap();
    for stream in [
        "events.raw",
        "profiles.merge_requests",
        "orders.events",
        "other.stream",
    ] {
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("event_id")
            .arg("e1")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let http = reqwest::Client::new();
    let names = |info: &serde_json::Value| -> Vec<String> {
        info["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let served = Served::start(
        &redis.url(),
        &[],
        &[
            "--streams",
            "events.*",
            "--streams",
            "profiles.*,orders.events",
        ],
    );
    let info: serde_json::Value = http
        .get(format!("{}/api/streams/info", served.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["prefix"], "events");
    assert_eq!(
        info["patterns"],
        serde_json::json!(["events.*", "profiles.*", "orders.events"])
    );
    assert_eq!(
        names(&info),
        ["events.raw", "orders.events", "profiles.merge_requests"]
    );
    drop(served);

    // The empty prefix lists every stream (`*`): an event type is its stream's name.
    let served = Served::start(&redis.url(), &["--prefix", ""], &[]);
    let info: serde_json::Value = http
        .get(format!("{}/api/streams/info", served.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["prefix"], "");
    assert_eq!(
        names(&info),
        [
            "events.raw",
            "orders.events",
            "other.stream",
            "profiles.merge_requests"
        ]
    );
}

/// `REDSTREAM_TOKEN` protects the dashboard like `--token` does.
#[tokio::test(flavor = "multi_thread")]
async fn the_token_from_the_environment_is_enforced() {
    let redis = RedisServer::start().await.unwrap();
    let mut served = Served::start_with_env(&redis.url(), &[], &[], &[("REDSTREAM_TOKEN", TOKEN)]);
    let http = reqwest::Client::new();
    let open = http
        .get(format!("{}/health", served.base))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 401);
    let wrong = http
        .get(format!("{}/health", served.base))
        .bearer_auth("not-the-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = http
        .get(format!("{}/health", served.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    served.send_sigterm();
    assert!(tokio::task::block_in_place(|| served.wait_exit()));
}

/// `serve` connects before it listens: an unreachable server or a refused password ends it at
/// once with exit status 1 and a message that says what failed, without the password.
#[tokio::test(flavor = "multi_thread")]
async fn unreachable_or_refused_redis_stops_serve_at_start() {
    let run = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_redstream"))
            .arg("--url")
            .arg(url)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_remove("REDSTREAM_TOKEN")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let gone = RedisServer::start().await.unwrap();
    let gone_url = gone.url();
    gone.kill().unwrap();
    let output = tokio::task::block_in_place(|| run(&gone_url));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("listening on"), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("connect") || stderr.contains("refused"),
        "{stderr}"
    );

    let locked = RedisServer::builder()
        .password(PASSWORD)
        .start()
        .await
        .unwrap();
    let wrong = locked.url().replace(PASSWORD, "wrong-pw-77c1");
    assert_ne!(wrong, locked.url());
    let output = tokio::task::block_in_place(|| run(&wrong));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("listening on"), "{stderr}");
    assert!(
        stderr.contains("WRONGPASS") || stderr.contains("password"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-pw-77c1"), "{stderr}");
}
