//! `redstream serve`: the live dashboard, its JSON and WebSocket endpoints, and Prometheus
//! metrics, over the streams of one prefix and any others `--streams` names. The user guide is
//! `docs/dashboard.md`.
//!
//! The router is a library function, [`router`], over an [`AppState`] (a connected transport
//! and a [`ServeConfig`]), so tests drive it in-process as well as through the binary. One file
//! per role:
//!
//! | file | what |
//! |---|---|
//! | `config.rs` | [`ServeConfig`] and the limits ([`MAX_COUNT`]) |
//! | `state.rs` | [`AppState`]: transport, token digest, counters, secrets to scrub |
//! | `routes.rs` | [`router`]: the routes and the order of the middleware |
//! | `guard.rs` | security headers; Host, Origin and token checks; request counting |
//! | `error.rs` | `ApiError`: the `{ "error": { "kind", "message" } }` answers |
//! | `params.rs` | stream names, counts, group names, dead-letter ids |
//! | `summary.rs` | stream summaries without entries (`scripts/summary.lua`) |
//! | `preview.rs` | bounded reads of entries: fields cut to previews on the server (`scripts/previews.lua`) |
//! | `snapshot.rs` | the JSON views of streams, groups, consumers and dead letters |
//! | `entry.rs` | the JSON view of a stream entry |
//! | `api.rs` | the read-only JSON endpoints of seeds 002 and 004 |
//! | `newest.rs` | a stream's entries newest first, in pages (the stream page) |
//! | `dlq.rs` | dead letters: list, one opened whole (all its fields), redrive, purge |
//! | `dlq_page.rs` | dead letters newest first, in pages, searched over a bounded window |
//! | `ws.rs` | the WebSocket feed and its shared poller |
//! | `history.rs` | the throughput of the last hour, a ring buffer sampled from the snapshots |
//! | `prometheus.rs` | `/metrics` (docs/observability.md) |
//! | `origins.rs` | dead letters counted by the stream they came from, for `/metrics` |
//! | `page.rs` | the embedded page (`assets/`) and its Content Security Policy |
//! | `server.rs` | [`serve`]: the HTTP server, with a header-read timeout and a connection cap |

mod api;
mod config;
mod dlq;
mod dlq_page;
mod entry;
mod error;
mod guard;
mod history;
mod newest;
mod origins;
mod page;
mod params;
mod preview;
mod prometheus;
mod routes;
mod server;
mod snapshot;
mod state;
mod summary;
mod ws;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use redstream_core::redact_url;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{MAX_COUNT, MAX_REDRIVE_IDS, ServeConfig};
pub use routes::router;
pub use server::serve;
pub use state::AppState;

use crate::{CliError, CliResult, GlobalArgs, connect};

/// The shortest `--refresh` accepted.
const MIN_REFRESH: Duration = Duration::from_millis(100);
/// The longest `--refresh` accepted.
const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// How long in-flight requests get to finish after Ctrl-C or SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Options of `redstream serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on, `ip:port` (port 0 picks a free one). Anything but a loopback
    /// address exposes the dashboard to the network: use --token then.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: String,
    /// How often the page receives a snapshot, e.g. `5s`, `500ms`.
    #[arg(long, default_value = "5s", value_parser = parse_refresh)]
    pub refresh: Duration,
    /// Enable the write actions: redriving and purging dead letters.
    #[arg(long)]
    pub allow_writes: bool,
    /// Require this bearer token on every request (`Authorization: Bearer <token>`; the page
    /// and /ws also take `?token=<token>`).
    #[arg(long, env = "REDSTREAM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Without --token, answer requests for these host names too (besides IP addresses and
    /// localhost): `dashboard.internal`, `.corp.example` for a domain and every name under it,
    /// or `*` for any name. Other names get 403, which blocks DNS rebinding.
    #[arg(long = "allowed-hosts", value_name = "NAME", value_delimiter = ',', value_parser = parse_allowed_host)]
    pub allowed_hosts: Vec<String>,
    /// Also show these streams: a glob (`events.*`) or a stream name (`orders.events`); repeat
    /// it, or give a comma-separated list. Streams under the prefix are always shown.
    #[arg(long = "streams", value_name = "PATTERN", value_delimiter = ',', value_parser = crate::select::parse_pattern)]
    pub streams: Vec<String>,
    /// The most HTTP connections open at once (1 to 65535); further ones wait in the system's
    /// listen backlog until one closes.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_connections: u16,
    /// The most WebSocket clients at once (1 to 65535); more get 503.
    #[arg(long = "max-ws-clients", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_ws_clients: u16,
    /// How long a client may take to send a request's line and headers before its connection
    /// is closed, e.g. `10s`; 1 s to 5 min. A write action's body has as long again.
    #[arg(long, default_value = "10s", value_parser = parse_header_read_timeout)]
    pub header_read_timeout: Duration,
}

impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeArgs")
            .field("listen", &self.listen)
            .field("refresh", &self.refresh)
            .field("allow_writes", &self.allow_writes)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("allowed_hosts", &self.allowed_hosts)
            .field("streams", &self.streams)
            .field("max_connections", &self.max_connections)
            .field("max_ws_clients", &self.max_ws_clients)
            .field("header_read_timeout", &self.header_read_timeout)
            .finish()
    }
}

fn parse_refresh(text: &str) -> Result<Duration, String> {
    let refresh = humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 5s, 500ms)"))?;
    if !(MIN_REFRESH..=MAX_REFRESH).contains(&refresh) {
        return Err(format!(
            "must be from {} to {}",
            humantime::format_duration(MIN_REFRESH),
            humantime::format_duration(MAX_REFRESH)
        ));
    }
    Ok(refresh)
}

fn parse_allowed_host(text: &str) -> Result<String, String> {
    let name = text.strip_prefix('.').unwrap_or(text);
    let valid = text == "*"
        || (!name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    if valid {
        Ok(text.to_owned())
    } else {
        Err(
            "must be a host name without a port (dashboard.internal), .domain for every name \
             under it, or *"
                .to_owned(),
        )
    }
}

fn parse_header_read_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 10s)"))?;
    if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&timeout) {
        return Err("must be from 1s to 5m".to_owned());
    }
    Ok(timeout)
}

/// The shortest bearer token accepted: a guessable token is no protection, and every message is
/// scrubbed of the token's value, which must not be a common word.
const MIN_TOKEN_CHARS: usize = 16;

/// Runs the dashboard until Ctrl-C or SIGTERM.
///
/// Connects to Redis first (an unreachable server or refused credentials fail here), then binds
/// and prints `listening on http://<address>` on stderr.
pub async fn run(global: &GlobalArgs, args: ServeArgs) -> CliResult<()> {
    if let Some(token) = &args.token
        && (token.chars().count() < MIN_TOKEN_CHARS
            || token.chars().any(|c| c.is_control() || c.is_whitespace()))
    {
        return Err(CliError::usage(format!(
            "--token (or REDSTREAM_TOKEN) must be at least {MIN_TOKEN_CHARS} characters, without \
             spaces or control characters (e.g. `openssl rand -hex 16`)"
        )));
    }
    let transport = connect::transport(global).await?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| CliError::io(format!("listening on {}", args.listen), e))?;
    let address = listener
        .local_addr()
        .map_err(|e| CliError::io("reading the listening address", e))?;
    let loopback = address.ip().is_loopback();
    if !loopback {
        if args.token.is_none() && args.allow_writes {
            return Err(CliError::usage(format!(
                "refusing to serve write actions on {address}, which is not a loopback address, \
                 without --token: anyone who reaches it could redrive or purge dead letters"
            )));
        }
        if args.token.is_none() {
            tracing::warn!(
                %address,
                "the dashboard listens on a non-loopback address without --token: anyone who \
                 reaches it can read the streams and dead letters"
            );
        }
    }
    let config = ServeConfig {
        allow_writes: args.allow_writes,
        token: args.token,
        refresh: args.refresh,
        allowed_hosts: args.allowed_hosts,
        streams: args.streams,
        max_connections: args.max_connections.into(),
        max_ws_clients: args.max_ws_clients.into(),
        header_read_timeout: args.header_read_timeout,
        body_read_timeout: args.header_read_timeout,
        ..ServeConfig::default()
    };
    let state = AppState::new(transport, config);
    let shutdown = state.shutdown_token();
    // The handlers are installed before the listening line: whoever reads that line as "ready"
    // may stop the dashboard at once, and must get the graceful stop, not the default action.
    let signal = shutdown_signal(shutdown.clone())?;
    tracing::info!(
        redis = %redact_url(&global.url),
        prefix = %global.prefix,
        streams = ?state.config().streams,
        allowed_hosts = ?state.config().allowed_hosts,
        writes = args.allow_writes,
        max_connections = state.config().max_connections,
        max_ws_clients = state.config().max_ws_clients,
        header_read_timeout = ?state.config().header_read_timeout,
        "dashboard ready"
    );
    crate::commands::output::note(format_args!("listening on http://{address}"));
    run_server(listener, address, state, signal, shutdown).await
}

async fn run_server(
    listener: TcpListener,
    address: SocketAddr,
    state: AppState,
    signal: impl Future<Output = ()> + Send + 'static,
    shutdown: CancellationToken,
) -> CliResult<()> {
    let server = serve(listener, state.clone(), signal);
    let stopped = async {
        server
            .await
            .map_err(|e| CliError::io(format!("serving on {address}"), e))?;
        // Upgraded connections are not the server's any more: wait for the WebSocket tasks,
        // which send their close frames on `shutdown`.
        state.websockets_closed().await;
        CliResult::Ok(())
    };
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        stopped = stopped => stopped?,
        () = deadline => tracing::warn!(
            "requests still running {}s after the shutdown signal were dropped",
            SHUTDOWN_GRACE.as_secs()
        ),
    }
    crate::commands::output::note("stopped");
    Ok(())
}

/// A future that resolves on Ctrl-C or SIGTERM, after cancelling `shutdown` (which closes the
/// WebSockets). The handlers are installed by this call, not when the future is first polled.
#[cfg(unix)]
fn shutdown_signal(shutdown: CancellationToken) -> CliResult<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| CliError::io(format!("listening for {name}"), e))
    };
    let mut interrupt = listen(SignalKind::interrupt(), "Ctrl-C (SIGINT)")?;
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        crate::commands::output::note("shutting down");
        shutdown.cancel();
    })
}

/// A future that resolves on Ctrl-C, after cancelling `shutdown` (which closes the WebSockets).
#[cfg(not(unix))]
fn shutdown_signal(shutdown: CancellationToken) -> CliResult<impl Future<Output = ()>> {
    Ok(async move {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        crate::commands::output::note("shutting down");
        shutdown.cancel();
    })
}
