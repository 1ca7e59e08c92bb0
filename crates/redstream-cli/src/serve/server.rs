//! [`serve`]: the dashboard's HTTP server, with limits on what a client may hold.
//!
//! `axum::serve` sets no timeout for reading a request's headers and no cap on open
//! connections: 300 clients that each sent half a header held 300 tasks and file descriptors
//! for as long as they liked. This server is hyper's HTTP/1 connection (hyper-util's builder,
//! with upgrades for `/ws`) behind an accept loop of its own:
//!
//! - **Header-read timeout** ([`ServeConfig::header_read_timeout`]): a connection that has not
//!   sent a whole request head within it is closed. The clock runs from the start of each
//!   request head, including the wait for the next request on a kept-alive connection, so an
//!   idle connection is closed after the same time.
//! - **Connection cap** ([`ServeConfig::max_connections`]): the loop accepts a connection only
//!   while fewer are open; beyond that, new ones wait in the listening socket's backlog until
//!   one closes (or the client gives up). A WebSocket stops counting once it is upgraded; the
//!   WebSocket clients have their own cap ([`ServeConfig::max_ws_clients`]).
//!
//! [`ServeConfig::header_read_timeout`]: super::ServeConfig::header_read_timeout
//! [`ServeConfig::max_connections`]: super::ServeConfig::max_connections
//! [`ServeConfig::max_ws_clients`]: super::ServeConfig::max_ws_clients

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::routes::router;
use super::state::{AppState, Counters};
use super::ws::Sampling;

/// How long the accept loop pauses after the system refused a connection for lack of
/// resources (too many open files): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(500);

/// Serves the dashboard of `state` on `listener` until `signal` resolves, then stops accepting,
/// lets the requests in flight finish, and returns.
///
/// While it serves, the throughput history is sampled every refresh interval whether or not a
/// page is open (`GET /api/throughput`); the sampling stops when this returns (or its future is
/// dropped) and on `state`'s shutdown token.
///
/// WebSocket connections are not waited for: they stop on `state`'s shutdown token (see
/// [`AppState::shutdown_token`]).
///
/// # Errors
///
/// None so far: a failed accept is logged and retried. The `Result` leaves room for the
/// listener's own errors.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    signal: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    // Held until this returns or is dropped: the poller samples while the server serves.
    let _sampling = Sampling::start(&state);
    let config = state.config();
    let slots = Arc::new(Semaphore::new(
        config.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let app = router(state.clone());
    let graceful = GracefulShutdown::new();
    let mut signal = pin!(signal);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut signal => break,
        };
        // Only fails on a closed semaphore, and this one is never closed.
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let counters = state.counters();
        Counters::add(&counters.http_connections_total, 1);
        Counters::add(&counters.http_connections, 1);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // Timeouts, resets, malformed requests: the client's business.
                tracing::debug!(%peer, %error, "an HTTP connection ended with an error");
            }
            state
                .counters()
                .http_connections
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Logs a failed accept; pauses when the system is out of resources.
async fn accept_failed(error: &io::Error) {
    // ECONNABORTED and friends concern one connection; running out of file descriptors or
    // memory concerns every next one.
    let per_connection = matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
    );
    if per_connection {
        tracing::debug!(%error, "a connection failed while being accepted");
    } else {
        tracing::warn!(%error, "cannot accept connections; retrying shortly");
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}
