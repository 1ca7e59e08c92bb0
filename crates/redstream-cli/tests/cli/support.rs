//! Running the built `redstream` binary against a private server, and reading what it printed.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redstream_testkit::RedisServer;
use redstream_transport::{RedisConfig, RedisTransport};

/// How long a test waits for anything before it fails as hung. Never a performance limit.
pub(crate) const HANG: Duration = Duration::from_secs(60);

/// A name unique in this test binary.
pub(crate) fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// What one run of the binary did.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Output {
    fn of(output: std::process::Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub(crate) fn ok(self) -> String {
        assert_eq!(self.code, Some(0), "expected success: {self:#?}");
        self.stdout
    }

    /// Asserts a failed command (exit 1, an `error: ` line on stderr mentioning `needle`, nothing
    /// on stdout, no panic) and returns stderr.
    #[track_caller]
    pub(crate) fn fails_with(self, needle: &str) -> String {
        assert_eq!(self.code, Some(1), "expected exit code 1: {self:#?}");
        assert!(self.stderr.contains("error: "), "{self:#?}");
        assert!(
            self.stderr.contains(needle),
            "stderr should mention {needle:?}: {self:#?}"
        );
        assert!(!self.stderr.contains("panicked"), "{self:#?}");
        assert_eq!(self.stdout, "", "{self:#?}");
        self.stderr
    }

    /// Parses stdout as one JSON value (after asserting success).
    #[track_caller]
    pub(crate) fn json(self) -> serde_json::Value {
        let stdout = self.ok();
        serde_json::from_str(&stdout).unwrap_or_else(|err| panic!("{err}: {stdout}"))
    }
}

/// The binary with a server's URL and a prefix of its own.
pub(crate) struct Cli {
    pub(crate) url: String,
    pub(crate) prefix: String,
}

impl Cli {
    /// Commands against `server` under a fresh prefix.
    pub(crate) fn new(server: &RedisServer) -> Self {
        Self::with_url(server.url())
    }

    /// Commands against `url` under a fresh prefix.
    pub(crate) fn with_url(url: String) -> Self {
        Self {
            url,
            prefix: unique("cli"),
        }
    }

    /// The stream of `event_type` under this prefix: `<prefix>:<event type>`.
    pub(crate) fn stream(&self, event_type: &str) -> String {
        format!("{}:{event_type}", self.prefix)
    }

    /// The dead-letter stream of this prefix: `<prefix>:dlq`.
    pub(crate) fn dlq(&self) -> String {
        format!("{}:dlq", self.prefix)
    }

    /// `redstream --url <url> --prefix <prefix> <args>`, stdin empty (not a terminal), and no
    /// environment that could point it elsewhere.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_redstream"));
        command
            .env_remove("REDIS_URL")
            .env_remove("REDSTREAM_PREFIX")
            .env_remove("REDSTREAM_STATE_PREFIX")
            .env_remove("RUST_LOG")
            .args(["--url", &self.url, "--prefix", &self.prefix])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs to completion.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        Output::of(self.command(args).output().unwrap())
    }

    /// Runs to completion with `input` on stdin.
    pub(crate) fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self.command(args).stdin(Stdio::piped()).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        Output::of(child.wait_with_output().unwrap())
    }

    /// Runs with `--json` and parses stdout.
    #[track_caller]
    pub(crate) fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        self.run(&with_json).json()
    }

    /// A transport on the same server and prefix, to set things up and check them.
    pub(crate) async fn transport(&self) -> RedisTransport {
        RedisTransport::new(
            RedisConfig::default()
                .with_url(self.url.clone())
                .with_stream_prefix(self.prefix.clone()),
        )
        .await
        .unwrap()
    }
}

/// A running `redstream` (a `tail`), with its stderr read line by line on a thread (and its
/// stdout too, once [`wait_for_stdout_line`](Self::wait_for_stdout_line) is called).
pub(crate) struct Running {
    child: Child,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
    stdout: Option<mpsc::Receiver<String>>,
    printed: Vec<String>,
}

/// The lines of `reader`, read on a thread until its end.
fn lines_of(reader: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Running {
    /// Starts `command`.
    pub(crate) fn start(mut command: Command) -> Self {
        let mut child = command.spawn().unwrap();
        let stderr = lines_of(child.stderr.take().unwrap());
        Self {
            child,
            stderr,
            seen: Vec::new(),
            stdout: None,
            printed: Vec::new(),
        }
    }

    /// Waits for a line on stderr containing `needle` (the readiness signal of `tail`).
    pub(crate) fn wait_for_stderr(&mut self, needle: &str) {
        let deadline = Instant::now() + HANG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(err) => panic!(
                    "no stderr line containing {needle:?} ({err}); saw {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits for the next line on stdout and returns it.
    pub(crate) fn wait_for_stdout_line(&mut self) -> String {
        let stdout = self
            .stdout
            .get_or_insert_with(|| lines_of(self.child.stdout.take().unwrap()));
        let line = stdout
            .recv_timeout(HANG)
            .unwrap_or_else(|err| panic!("no line on stdout ({err}); stderr: {:?}", self.seen));
        self.printed.push(line.clone());
        line
    }

    /// The process id, for signals.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes the read end of its stdout, as `head` does when it has read enough.
    pub(crate) fn close_stdout(&mut self) {
        drop(self.child.stdout.take());
    }

    /// Sends `signal` (`INT`, `TERM`...) with `kill`.
    pub(crate) fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Waits until the process exits (failing as hung after [`HANG`]) and returns its output.
    pub(crate) fn finish(mut self) -> Output {
        let deadline = Instant::now() + HANG;
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "redstream did not exit within {HANG:?}; stderr so far: {:?}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let output = self.child.wait_with_output().unwrap();
        let mut stderr: Vec<String> = self.seen;
        stderr.extend(self.stderr.iter());
        let stdout = match self.stdout {
            // The process is gone, so its stdout ends and so does the reading thread.
            Some(rest) => {
                let mut lines = self.printed;
                lines.extend(rest.iter());
                lines.iter().map(|line| format!("{line}\n")).collect()
            }
            None => String::from_utf8(output.stdout).unwrap(),
        };
        Output {
            code: output.status.code(),
            stdout,
            stderr: stderr.join("\n"),
        }
    }
}

/// A plain connection to the server, for raw commands.
pub(crate) async fn connection(server: &RedisServer) -> MultiplexedConnection {
    server.connection().await.unwrap()
}

/// Runs one raw command and returns its reply.
pub(crate) async fn raw<T: redis::FromRedisValue>(
    conn: &mut MultiplexedConnection,
    args: &[&str],
) -> T {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(conn).await.unwrap()
}

/// `XLEN`.
pub(crate) async fn xlen(conn: &mut MultiplexedConnection, stream: &str) -> u64 {
    raw(conn, &["XLEN", stream]).await
}

/// The payloads of a stream's entries, in order.
pub(crate) async fn payloads(
    conn: &mut MultiplexedConnection,
    stream: &str,
) -> Vec<serde_json::Value> {
    let entries: Vec<(String, Vec<(String, String)>)> =
        raw(conn, &["XRANGE", stream, "-", "+"]).await;
    entries
        .into_iter()
        .map(|(_, fields)| {
            let envelope: serde_json::Value = serde_json::from_str(&fields[0].1).unwrap();
            envelope["payload"].clone()
        })
        .collect()
}
