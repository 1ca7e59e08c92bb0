//! [`ServeConfig`]: what the router needs besides a transport, and the fixed limits.

use std::fmt;
use std::time::Duration;

/// The most entries, pending entries or dead letters one request may ask for (`count`); a
/// larger `count` is refused with 400, not capped, so a client learns the limit.
pub const MAX_COUNT: usize = 1000;

/// The most dead-letter ids one redrive request may name.
pub const MAX_REDRIVE_IDS: usize = 1000;

/// The largest request body accepted (only the write actions take one).
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// `count` when a request gives none: entries read from a stream (seed 004's example).
pub(crate) const DEFAULT_READ_COUNT: usize = 10;

/// `count` when a request gives none: a page of the stream page's entries, or of dead letters
/// newest first.
pub(crate) const DEFAULT_PAGE_COUNT: usize = 25;

/// `count` when a request gives none: pending entries and dead letters.
pub(crate) const DEFAULT_LIST_COUNT: usize = 100;

/// Dead letters one request of `GET /api/dlq/page` looks at when it filters (newest first from
/// its cursor); the answer says how many it looked at and where to go on.
pub(crate) const DLQ_SEARCH_WINDOW: usize = 1000;

/// Dead letters a snapshot carries (the oldest ones); the page says when there are more.
pub(crate) const SNAPSHOT_DEAD_LETTERS: usize = 100;

/// Bytes of a dead letter's `error` a snapshot carries (cut on a character boundary, with `...`);
/// `GET /api/dlq/{id}` has the whole text. Errors are written by handlers and can be long (stack
/// traces): a hundred of them whole would make every snapshot as large as they are.
pub(crate) const SNAPSHOT_ERROR_BYTES: usize = 1024;

/// Bytes of a field the REST views show (`fields` of a stream entry, a dead letter's
/// `raw_event` and short fields): longer values are read and shown as their first 4 KiB.
pub(crate) const PREVIEW_BYTES: usize = 4096;

/// Bytes of a dead letter's `error` the REST endpoints return whole; longer ones are cut, with
/// `...`. (redstream writes at most 8 KiB; other writers may write anything.)
pub(crate) const REST_ERROR_BYTES: usize = 64 * 1024;

/// Bytes of a dead letter's stored event a snapshot reads when it does not read it whole: enough
/// for the start of its payload.
pub(crate) const SNAPSHOT_EVENT_PREVIEW: usize = 1024;

/// Bytes of whole values one snapshot reads of its dead letters: events within the wire
/// format's size limit are read whole, and decoded, while this lasts; after that a snapshot
/// reads their first [`SNAPSHOT_EVENT_PREVIEW`] bytes.
pub(crate) const SNAPSHOT_READ_BUDGET: usize = 1024 * 1024;

/// Bytes of whole values one REST answer reads: a page of entries or dead letters ends before
/// the entry that would go past it (there is always one), and says where to go on.
pub(crate) const REST_READ_BUDGET: usize = 2 * 1024 * 1024;

/// Bytes of entries one read may have the server read (a snapshot's dead letters, a page of
/// entries): it stops after the entry that reaches this. Redis copies every entry it reads for
/// the dashboard into the script's memory, about 2.5 ms per MiB on the machine the tests run
/// on, so eleven dead letters of 40 MiB would hold the server for over a second per snapshot.
pub(crate) const SERVER_READ_LIMIT: usize = 64 * 1024 * 1024;

/// The largest event `/api/streams/info` reads whole for the first and last entry of every
/// stream; a larger one is shown by its fields' first 4 KiB.
pub(crate) const OVERVIEW_EVENT_BYTES: usize = 64 * 1024;

/// Fields of one entry the REST views return; an entry with more is marked `truncated`.
pub(crate) const MAX_FIELDS: usize = 256;

/// Concurrent Redis calls for per-group or per-stream questions (consumers, first and last
/// entries): enough to hide round trips, few enough not to crowd the server.
pub(crate) const FAN_OUT: usize = 16;

/// Consumer groups whose consumers a snapshot lists (one `XINFO CONSUMERS` each); groups past
/// this many show their consumer count only.
pub(crate) const SNAPSHOT_GROUPS_WITH_CONSUMERS: usize = 256;

/// How the dashboard behaves: write actions, authentication, refresh interval, limits.
///
/// Build it with a struct literal and `..Default::default()`. The defaults are the safe ones:
/// read-only, and answering only to IP addresses and `localhost` as host names.
#[derive(Clone)]
pub struct ServeConfig {
    /// Whether `POST /api/dlq/redrive` and `POST /api/dlq/purge` run; when false they answer
    /// 403 `writes_disabled`.
    pub allow_writes: bool,
    /// The bearer token every request must carry (header `Authorization: Bearer <token>`, or
    /// `?token=` on `/` and `/ws`); `None` leaves the dashboard open to whoever can reach it.
    pub token: Option<String>,
    /// How often WebSocket clients receive a snapshot.
    pub refresh: Duration,
    /// Host names answered besides IP addresses and `localhost` (with `*.localhost`), when no
    /// token is set: a request whose `Host` is any other name gets 403 `forbidden_host`. This
    /// is what defeats DNS rebinding, on every listening address: a rebinding page reaches the
    /// dashboard through a DNS name of its own, never through an IP address. An entry is a name
    /// (`dashboard.internal`, any case), `.example.com` for that name and every name under it,
    /// or `*` for any name (which turns the check off). With a token, every `Host` is answered:
    /// a rebinding page does not have the token.
    pub allowed_hosts: Vec<String>,
    /// The most WebSocket clients served at once; more get 503. Values above `u32::MAX` count
    /// as `u32::MAX`.
    pub max_ws_clients: usize,
    /// The most HTTP connections open at once; further ones wait in the listening socket's
    /// backlog until one closes. Upgraded WebSockets do not count (see `max_ws_clients`).
    /// Values above `Semaphore::MAX_PERMITS` count as that; 0 counts as 1.
    pub max_connections: usize,
    /// How long a client may take to send a request's head (request line and headers), from
    /// its first byte, or from the end of the previous request on a kept-alive connection; a
    /// connection that takes longer is closed.
    pub header_read_timeout: Duration,
    /// How long a client may take to send the body of a write action (`POST`), from the end of
    /// its head; a slower one gets 408 `body_timeout` and its connection is closed.
    pub body_read_timeout: Duration,
    /// How long a WebSocket client may take to accept one message (a snapshot, or the close
    /// frame at shutdown) before it is disconnected. A client that stops reading would
    /// otherwise hold its slot, and a task, for as long as its connection lives.
    pub ws_send_timeout: Duration,
    /// Streams shown besides those under the prefix: `SCAN` globs (`events.*`) or stream names
    /// (`orders.events`), as `redstream serve --streams` takes them (see `redstream_cli::select`).
    /// Any stream can be asked for by its full name in a path whether or not it is listed.
    pub streams: Vec<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            allow_writes: false,
            token: None,
            refresh: Duration::from_secs(5),
            allowed_hosts: Vec::new(),
            max_ws_clients: 64,
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            ws_send_timeout: Duration::from_secs(30),
            streams: Vec::new(),
        }
    }
}

impl fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeConfig")
            .field("allow_writes", &self.allow_writes)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("refresh", &self.refresh)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("max_ws_clients", &self.max_ws_clients)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("ws_send_timeout", &self.ws_send_timeout)
            .field("streams", &self.streams)
            .finish()
    }
}
