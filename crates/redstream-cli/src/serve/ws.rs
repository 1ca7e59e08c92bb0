//! `GET /ws`: a WebSocket that sends a [`Snapshot`](super::snapshot::Snapshot) as soon as it
//! opens and then one every refresh interval.
//!
//! One poller builds the periodic snapshots for every client, so ten open pages cost Redis no
//! more than one. It starts with the first client and stops when the last one leaves. A client
//! that reads slowly skips snapshots rather than queueing them: the feed is a
//! `tokio::sync::watch` channel holding only the latest one, serialized once.
//!
//! Messages are JSON text: `{"type": "snapshot", ...}`, or `{"type": "error", "error": {"kind",
//! "message"}}` when Redis could not be read (the connection stays open and the next refresh
//! tries again). A client may send the text `refresh` to get a snapshot at once (the page does
//! after a redrive); such requests are served at most every 250 ms. Clients beyond
//! `max_ws_clients` get 503 before the upgrade, and a client that does not accept a message
//! within `ws_send_timeout` is disconnected, which frees its slot.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::MissedTickBehavior;

use super::error::ApiError;
use super::state::{AppState, Counters};

/// The least time between two snapshots a client asks for with `refresh`.
const MIN_ASKED_INTERVAL: Duration = Duration::from_millis(250);

/// The latest periodic snapshot, and whether a poller is building them.
pub(crate) struct Feed {
    latest: watch::Sender<Option<Utf8Bytes>>,
    poller_running: Mutex<bool>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            latest: watch::Sender::new(None),
            poller_running: Mutex::new(false),
        }
    }
}

impl Feed {
    /// A receiver of the periodic snapshots; starts the poller when none runs.
    fn subscribe(state: &AppState) -> watch::Receiver<Option<Utf8Bytes>> {
        let feed = state.feed();
        // Subscribe before looking at the flag: a poller that is about to stop for lack of
        // receivers either sees this one, or has cleared the flag, so one is started here.
        let receiver = feed.latest.subscribe();
        let mut running = feed
            .poller_running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !*running {
            *running = true;
            tokio::spawn(poll(state.clone()));
        }
        receiver
    }
}

/// Builds a snapshot every refresh interval while anyone listens.
async fn poll(state: AppState) {
    let shutdown = state.shutdown_token();
    let mut ticker = tokio::time::interval(state.config().refresh);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate; each client got its own first snapshot already.
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => break,
        }
        {
            let feed = state.feed();
            let mut running = feed
                .poller_running
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if feed.latest.receiver_count() == 0 {
                *running = false;
                return;
            }
        }
        let message = message(&state).await;
        state.feed().latest.send_replace(Some(message));
    }
    *state
        .feed()
        .poller_running
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = false;
}

/// A snapshot or an error, as the JSON text sent to clients.
async fn message(state: &AppState) -> Utf8Bytes {
    match state.snapshot().await {
        Ok(snapshot) => match serde_json::to_string(&snapshot) {
            Ok(text) => Utf8Bytes::from(text),
            // Only maps with non-string keys fail to serialize, and a snapshot has none.
            Err(error) => {
                tracing::error!(%error, "cannot serialize a snapshot");
                Utf8Bytes::from_static(
                    r#"{"type":"error","error":{"kind":"internal","message":"the snapshot could not be serialized"}}"#,
                )
            }
        },
        Err(error) => {
            let error = state.fail(error);
            let message = json!({
                "type": "error",
                "error": { "kind": error.kind, "message": error.message },
            });
            Utf8Bytes::from(message.to_string())
        }
    }
}

/// `GET /ws`.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return ApiError::from(rejection).into_response(),
    };
    let Ok(permit) = state.ws_slots().clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_clients",
            format!(
                "the dashboard already serves {} live clients; close a page and retry",
                state.config().max_ws_clients
            ),
        )
        .into_response();
    };
    upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| serve(state, socket, permit))
}

async fn serve(state: AppState, mut socket: WebSocket, _permit: OwnedSemaphorePermit) {
    let counters = state.counters();
    Counters::add(&counters.ws_connections, 1);
    counters.ws_clients.fetch_add(1, Ordering::Relaxed);
    let mut updates = Feed::subscribe(&state);
    let shutdown = state.shutdown_token();
    let send_timeout = state.config().ws_send_timeout;
    let mut last_asked: Option<Instant> = None;
    let mut outgoing = Some(message(&state).await);
    loop {
        if let Some(text) = outgoing.take()
            && !send(&mut socket, Message::Text(text), send_timeout).await
        {
            break;
        }
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    break;
                }
                outgoing = updates.borrow_and_update().clone();
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) if text.as_str().trim() == "refresh" => {
                    let now = Instant::now();
                    if last_asked.is_none_or(|t| now.duration_since(t) >= MIN_ASKED_INTERVAL) {
                        last_asked = Some(now);
                        outgoing = Some(message(&state).await);
                    }
                }
                // Pings are answered by the WebSocket layer; other messages mean nothing.
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            () = shutdown.cancelled() => {
                let frame = CloseFrame {
                    code: close_code::AWAY,
                    reason: Utf8Bytes::from_static("the dashboard is shutting down"),
                };
                send(&mut socket, Message::Close(Some(frame)), send_timeout).await;
                break;
            }
        }
    }
    counters.ws_clients.fetch_sub(1, Ordering::Relaxed);
}

/// Sends `message`; false when the client is gone or has not taken it within `timeout`.
///
/// The wait covers a client that stopped reading: once the socket's buffers are full, a send
/// waits until it reads again, and the feed's `watch` channel cannot help with that.
async fn send(socket: &mut WebSocket, message: Message, timeout: Duration) -> bool {
    match tokio::time::timeout(timeout, socket.send(message)).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::debug!(%error, "a WebSocket client went away");
            false
        }
        Err(_) => {
            tracing::debug!(
                timeout_ms = timeout.as_millis(),
                "a WebSocket client did not take a message in time: disconnected"
            );
            false
        }
    }
}
