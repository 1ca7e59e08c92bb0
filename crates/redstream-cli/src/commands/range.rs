//! `redstream range <stream>`: entries of a stream, oldest first from `--from`, or the newest
//! `--latest N` (`XREVRANGE`). Read-only; entries are decoded when they are redstream events and
//! shown raw otherwise, as `tail` shows them.

use clap::Args;
use redstream_transport::StreamEntry;
use serde::Serialize;

use super::{not_found, output};
use crate::{CliResult, GlobalArgs, connect};

/// Options of `redstream range`.
#[derive(Debug, Args)]
pub struct RangeArgs {
    /// The stream: a full stream name (`events.raw`), an event type (`order.created`), or `dlq`.
    pub stream: String,
    /// The newest N entries (at most 1000), printed oldest first.
    #[arg(long, value_name = "N", conflicts_with_all = ["from", "to", "count"], value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub latest: Option<u16>,
    /// The first entry: `-` (the oldest, the default), an id, a millisecond time, or `(id` for
    /// after it.
    #[arg(long, default_value = "-", allow_hyphen_values = true)]
    pub from: String,
    /// The last entry: `+` (the newest, the default), an id, or `(id` for before it.
    #[arg(long, default_value = "+", allow_hyphen_values = true)]
    pub to: String,
    /// At most this many entries (at most 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub count: u16,
}

/// One entry in `range --json`.
#[derive(Serialize)]
struct Entry<'a> {
    id: &'a str,
    /// The envelope, or null when the entry is not a redstream event.
    event: Option<&'a redstream_core::Event>,
    decode_error: Option<&'a str>,
    /// The entry's fields when `event` is null.
    fields: Option<&'a [(String, String)]>,
}

/// `redstream range`.
pub async fn run(global: &GlobalArgs, args: RangeArgs) -> CliResult<()> {
    let transport = connect::transport(global).await?;
    let key = transport.resolve_stream(&args.stream).await?;
    let mut entries = match args.latest {
        Some(n) => transport.read_range(&key, "-", "+", usize::from(n), true),
        None => transport.read_range(&key, &args.from, &args.to, usize::from(args.count), false),
    }
    .await
    .map_err(not_found)?;
    if args.latest.is_some() {
        entries.reverse();
    }
    if global.json {
        #[derive(Serialize)]
        struct Range<'a> {
            stream: &'a str,
            entries: Vec<Entry<'a>>,
        }
        return output::json(&Range {
            stream: &key,
            entries: entries.iter().map(entry).collect(),
        });
    }
    if entries.is_empty() {
        return output::line(format!("no entries of {key} in that range"));
    }
    for e in &entries {
        output::line(line(e))?;
    }
    Ok(())
}

fn entry(e: &StreamEntry) -> Entry<'_> {
    Entry {
        id: &e.id,
        event: e.event.as_ref(),
        decode_error: e.decode_error.as_deref(),
        fields: e.event.is_none().then_some(e.fields.as_slice()),
    }
}

/// A line like `tail`'s: id, type, time and payload; or the raw fields of a foreign entry.
fn line(e: &StreamEntry) -> String {
    match &e.event {
        Some(event) => format!(
            "{}  {}  {}  {}",
            e.id,
            event.event_type(),
            output::time(Some(event.metadata().timestamp)),
            event.payload()
        ),
        None => {
            let fields: serde_json::Map<String, serde_json::Value> = e
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            format!(
                "{}  undecodable: {}  {}",
                e.id,
                e.decode_error.as_deref().unwrap_or("unknown error"),
                serde_json::Value::Object(fields)
            )
        }
    }
}
