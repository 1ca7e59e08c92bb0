//! `GET /ws`: a WebSocket that sends a [`Snapshot`](super::snapshot::Snapshot) as soon as it
//! opens and then one every refresh interval; and the one poller behind it, which also samples
//! the throughput history while no page is open.
//!
//! One poller builds every snapshot, for every client, so ten open pages, or a thousand
//! connects, cost Redis no more than one page. [`serve`](super::serve) starts it and it runs
//! until the server stops: every refresh interval it builds a snapshot when a client listens
//! (which samples the history as it goes) and otherwise reads only the stream summaries the
//! history needs, so Redis is read once per interval either way. A router served without
//! [`serve`](super::serve) starts the poller with its first WebSocket client and stops it when
//! the last one leaves. The latest snapshot is kept, serialized once, in a
//! `tokio::sync::watch` channel: a client that connects gets it at once when it is younger than
//! the refresh interval, and otherwise asks the poller for a fresh one and gets it as soon as it
//! is built (connects that ask together share it). A client that reads slowly skips snapshots
//! rather than queueing them.
//!
//! Messages are JSON text: `{"type": "snapshot", ...}`, or `{"type": "error", "error": {"kind",
//! "message"}}` when Redis could not be read (the connection stays open and the next refresh
//! tries again). A client may send the text `refresh` to have a snapshot built at once (the page
//! does after a redrive); each client is heard at most every 250 ms, and the poller builds at
//! most one snapshot per 250 ms for all of them. Clients beyond `max_ws_clients` get 503 before
//! the upgrade, and a client that does not accept a message within `ws_send_timeout` is
//! disconnected, which frees its slot.

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

use super::error::ApiError;
use super::state::{AppState, Counters};

/// The least time between two snapshots built because clients asked (on connect, or with
/// `refresh`).
const MIN_ASKED_INTERVAL: Duration = Duration::from_millis(250);

/// A snapshot (or an error message) as sent to clients, and when its building started.
#[derive(Clone)]
pub(crate) struct Built {
    started: Instant,
    text: Utf8Bytes,
}

/// The latest snapshot, the clients' requests for a fresh one, and whether a poller runs.
pub(crate) struct Feed {
    latest: watch::Sender<Option<Built>>,
    /// When a client last asked for a snapshot newer than the latest.
    asked: watch::Sender<Option<Instant>>,
    /// Whether the poller keeps sampling while no client listens: true while
    /// [`serve`](super::serve) runs (see [`Sampling`]).
    background: watch::Sender<bool>,
    poller_running: Mutex<bool>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            latest: watch::Sender::new(None),
            asked: watch::Sender::new(None),
            background: watch::Sender::new(false),
            poller_running: Mutex::new(false),
        }
    }
}

impl Feed {
    /// A receiver of the snapshots; starts the poller when none runs.
    fn subscribe(state: &AppState) -> watch::Receiver<Option<Built>> {
        // Subscribe before looking at the flag: a poller that is about to stop for lack of
        // receivers either sees this one, or has cleared the flag, so one is started here.
        let receiver = state.feed().latest.subscribe();
        Self::start(state);
        receiver
    }

    /// Starts the poller unless one runs.
    fn start(state: &AppState) {
        let mut running = state
            .feed()
            .poller_running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !*running {
            *running = true;
            tokio::spawn(poll(state.clone()));
        }
    }

    /// Asks the poller for a snapshot whose building starts from now on.
    fn ask(&self) {
        self.asked.send_replace(Some(Instant::now()));
    }
}

/// While it lives, the poller samples the throughput history every refresh interval, whether
/// or not a page is open; [`serve`](super::serve) holds one for as long as it serves. Dropping
/// it lets the poller stop once no WebSocket client is left (at once when none is).
pub(crate) struct Sampling {
    state: AppState,
}

impl Sampling {
    /// Starts the poller (unless it runs) and keeps it sampling.
    pub(crate) fn start(state: &AppState) -> Self {
        // Set before the start: a poller that sees no receivers looks at this flag.
        state.feed().background.send_replace(true);
        Feed::start(state);
        Self {
            state: state.clone(),
        }
    }
}

impl Drop for Sampling {
    fn drop(&mut self) {
        self.state.feed().background.send_replace(false);
    }
}

/// Every refresh interval (and when clients ask), builds a snapshot while anyone listens, or
/// else samples the history alone while [`Sampling`] keeps it going; stops on shutdown, or when
/// neither holds.
async fn poll(state: AppState) {
    let feed = state.feed();
    let refresh = state.config().refresh;
    let shutdown = state.shutdown_token();
    let mut asked = feed.asked.subscribe();
    let mut background = feed.background.subscribe();
    // When the last snapshot's building started, and when the last snapshot or sample did.
    let mut last_built = feed.latest.borrow().as_ref().map(|built| built.started);
    let mut last_tick = last_built;
    loop {
        {
            // Decided under the flag's lock: a client that subscribes now either is counted
            // here, or finds the flag cleared and starts a poller of its own.
            let mut running = feed
                .poller_running
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if feed.latest.receiver_count() == 0 && !*background.borrow_and_update() {
                *running = false;
                return;
            }
        }
        // Whether a client waits for a snapshot newer than the last one.
        let wanted = {
            let when = *asked.borrow();
            when.is_some_and(|when| last_built.is_none_or(|started| when > started))
        };
        let due = if wanted {
            last_built.map_or_else(Instant::now, |started| started + MIN_ASKED_INTERVAL)
        } else {
            last_tick.map_or_else(Instant::now, |started| started + refresh)
        };
        tokio::select! {
            () = tokio::time::sleep_until(due.into()) => {}
            changed = asked.changed() => {
                if changed.is_err() {
                    break;
                }
                // Decided again at the top: a request may be for a snapshot already built,
                // or come too soon after the last one.
                continue;
            }
            // `serve` stopped (or started): whether to go on is decided at the top.
            changed = background.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
            () = shutdown.cancelled() => break,
        }
        let started = Instant::now();
        last_tick = Some(started);
        if feed.latest.receiver_count() == 0 {
            // Nobody looks: only the history's sample. The next client asks for a snapshot.
            if let Err(error) = state.sample_history().await {
                let _ = state.fail(error);
            }
            continue;
        }
        let text = message(&state).await;
        last_built = Some(started);
        feed.latest.send_replace(Some(Built { started, text }));
    }
    *feed
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
    let feed = state.feed();
    // The latest snapshot if it is fresh; otherwise the next one, asked for before subscribing
    // so that a poller started by this client builds it at once.
    let fresh = feed
        .latest
        .borrow()
        .as_ref()
        .filter(|built| built.started.elapsed() < state.config().refresh)
        .map(|built| built.text.clone());
    if fresh.is_none() {
        feed.ask();
    }
    let mut updates = Feed::subscribe(&state);
    let shutdown = state.shutdown_token();
    let send_timeout = state.config().ws_send_timeout;
    let mut last_asked: Option<Instant> = None;
    let mut outgoing = fresh;
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
                outgoing = updates.borrow_and_update().as_ref().map(|built| built.text.clone());
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) if text.as_str().trim() == "refresh" => {
                    let now = Instant::now();
                    if last_asked.is_none_or(|t| now.duration_since(t) >= MIN_ASKED_INTERVAL) {
                        last_asked = Some(now);
                        feed.ask();
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
