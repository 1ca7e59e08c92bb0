//! What the sink's two benches share: the seed-sized event and the raw baseline that calls the
//! sink's own batch script by hand.

use redis::aio::MultiplexedConnection;
use redstream_core::{Event, EventLimits, EventMetadata, wire};
use serde_json::json;

/// The id under which the benches' sinks record their progress.
pub(crate) const SINK_ID: &str = "bench";

/// The sink's own `batch.lua`, for the raw side.
static BATCH_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("../../src/batch.lua")));

/// The `n`th event of a bench: a seed-sized order.
pub(crate) fn seed_event(n: u64) -> Event {
    Event::new(
        "order.created",
        json!({ "order_id": n.to_string(), "total": 99.99, "items": 3 }),
        EventMetadata::default(),
    )
}

/// The progress a raw batch checks and records, as a sink with exactly-once on does.
pub(crate) struct Progress<'a> {
    /// The progress hash (`redstream_sink::keys::progress_key`).
    pub(crate) key: &'a str,
    /// What the batch before this one recorded: its last event id and its position.
    pub(crate) previous: Option<&'a (String, String)>,
    /// This batch's last event id.
    pub(crate) last: &'a str,
    /// This batch's source position.
    pub(crate) position: &'a str,
}

/// One batch through `batch.lua`, its arguments built by hand with redis-rs's `Script` (the
/// events encoded with `wire::encode`, as the sink encodes them); with `progress`, checked and
/// recorded as exactly-once does. Returns how many entries it wrote.
pub(crate) async fn raw_script_batch(
    conn: &mut MultiplexedConnection,
    stream: &str,
    progress: Option<Progress<'_>>,
    events: &[Event],
) -> usize {
    let limits = EventLimits::default();
    let mut invocation = BATCH_SCRIPT.prepare_invoke();
    invocation.key(stream);
    if let Some(progress) = &progress {
        invocation.key(progress.key);
    }
    invocation.arg("").arg("").arg("");
    match progress.as_ref().and_then(|p| p.previous) {
        Some((last, position)) => invocation.arg("1").arg(last).arg(position),
        None => invocation.arg("0").arg("").arg(""),
    };
    match &progress {
        Some(progress) => invocation.arg(progress.last).arg(progress.position),
        None => invocation.arg("").arg(""),
    };
    for event in events {
        invocation.arg(wire::encode(event, &limits).unwrap());
    }
    // `{'written', '<id> <id> ...'}`: the ids as strings, as the sink returns them.
    let reply: Vec<String> = invocation.invoke_async(conn).await.unwrap();
    assert_eq!(reply[0], "written");
    let ids: Vec<String> = reply[1]
        .split_ascii_whitespace()
        .map(str::to_owned)
        .collect();
    ids.len()
}
