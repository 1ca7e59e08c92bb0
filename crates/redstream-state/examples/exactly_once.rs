//! Effects applied exactly once over at-least-once delivery.
//!
//! A stream consumer may see an event again: it applied the event, then crashed (or lost its
//! connection) before acknowledging it, and the event was delivered again. If applying the
//! effect and recording "done up to here" are two separate writes, a crash between them
//! applies the effect twice. Here they are one: the processor keeps its state (revenue per
//! customer) in memory, and after each event saves the new state *and* the event's position
//! with `save_checkpoint`, in one `MULTI`/`EXEC`. A restarted processor restores that
//! checkpoint and skips every event at or before its position.
//!
//! `cargo run -p redstream-state --example exactly_once` starts a private redis-server (the
//! test kit's); set `REDIS_URL` to use another server.

// An example reports on stdout and stops loudly on failure.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::cmp::Ordering;
use std::collections::BTreeMap;

use redstream_state::{Result, StateBackend, StateStore};

/// A stream entry id, `<milliseconds>-<sequence>`, ordered as Redis orders entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntryId {
    ms: u64,
    seq: u64,
}

impl EntryId {
    fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.split_once('-')?;
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl PartialOrd for EntryId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EntryId {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.ms, self.seq).cmp(&(other.ms, other.seq))
    }
}

/// An order paid by a customer, as it would arrive from a stream.
#[derive(Debug, Clone)]
struct Event {
    id: String,
    customer: &'static str,
    cents: i64,
}

/// Revenue per customer, with its position in the stream.
struct Processor {
    store: StateStore,
    name: String,
    revenue: BTreeMap<String, i64>,
    position: Option<EntryId>,
}

impl Processor {
    /// Starts from the last checkpoint, if any: its snapshot is the state, its position the
    /// last event applied. `restore_checkpoint` also writes the snapshot back to the state
    /// keys, undoing anything written after the checkpoint by a previous run.
    async fn start(store: StateStore, name: &str) -> Result<Self> {
        let (revenue, position) = match store.restore_checkpoint::<i64>(name).await? {
            Some(checkpoint) => (checkpoint.state, EntryId::parse(&checkpoint.position)),
            None => (BTreeMap::new(), None),
        };
        Ok(Self {
            store,
            name: name.to_owned(),
            revenue,
            position,
        })
    }

    /// Applies `event` unless it was applied before; returns whether it was.
    async fn handle(&mut self, event: &Event) -> Result<bool> {
        let id = EntryId::parse(&event.id).expect("a stream entry id");
        if self.position.is_some_and(|done| id <= done) {
            return Ok(false);
        }
        let mut next = self.revenue.clone();
        *next.entry(event.customer.to_owned()).or_default() += event.cents;
        // The effect and the position in one transaction: both are written, or neither is
        // and the event, delivered again, is applied then.
        self.store
            .save_checkpoint(&self.name, &event.id, &next)
            .await?;
        self.revenue = next;
        self.position = Some(id);
        Ok(true)
    }
}

fn events() -> Vec<Event> {
    let customers = ["ada", "bob", "cyd"];
    (1..=10)
        .map(|n| Event {
            id: format!("1700000000{n:03}-0"),
            customer: customers[n % 3],
            cents: 1_000 * n as i64,
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    let server = match std::env::var("REDIS_URL") {
        Ok(_) => None,
        Err(_) => Some(redstream_testkit::RedisServer::start().await.unwrap()),
    };
    let url = std::env::var("REDIS_URL")
        .unwrap_or_else(|_| server.as_ref().map(|s| s.url()).unwrap_or_default());
    let prefix = format!("exactly-once-{}", std::process::id());
    let store = StateStore::new(StateBackend::redis(url, prefix)).await?;
    let events = events();

    // The first run applies events 1 to 6, but acknowledges only up to 3 before it crashes.
    let mut first = Processor::start(store.clone(), "revenue").await?;
    for event in &events[..6] {
        first.handle(event).await?;
    }
    println!("first run: applied events 1-6, acknowledged 1-3, then crashed");
    drop(first);

    // The stream delivers everything not acknowledged again: 4 to 10.
    let mut second = Processor::start(store.clone(), "revenue").await?;
    let (mut applied, mut skipped) = (0, 0);
    for event in &events[3..] {
        if second.handle(event).await? {
            applied += 1;
        } else {
            skipped += 1;
        }
    }
    println!("second run: {skipped} redelivered events skipped, {applied} applied");

    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for event in &events {
        *expected.entry(event.customer.to_owned()).or_default() += event.cents;
    }
    let checkpoint = store
        .load_checkpoint::<i64>("revenue")
        .await?
        .expect("saved by the runs above");
    for (customer, cents) in &expected {
        let stored: Option<i64> = store.get(customer).await?;
        println!("{customer}: {cents} cents, stored {stored:?}");
        assert_eq!(stored, Some(*cents), "every effect applied exactly once");
    }
    assert_eq!(checkpoint.state, expected);
    assert_eq!(checkpoint.position, events[9].id);
    assert_eq!((skipped, applied), (3, 4));
    println!(
        "checkpoint position {}: every event applied exactly once",
        checkpoint.position
    );
    Ok(())
}
