//! `redstream tail <type>`: print events as they are added.
//!
//! Without `--group` it reads with plain `XREAD` (the transport's `follow`): nothing is
//! acknowledged and no group is created, so the services reading the stream are not affected.
//! With `--group` it reads as a consumer of that group (`follow_group`) and acknowledges what
//! it printed. Once it is reading, it says so on stderr (`following ...`); everything added
//! after that line is printed. Entries that are not redstream events are printed with their
//! decoding error.

use clap::Args;
use redstream_transport::{FollowedEntry, Follower, RedisTransport};
use serde::Serialize;

use super::{interrupted, output};
use crate::{CliResult, GlobalArgs, connect};

/// Entries asked for per read (per stream).
const READ_COUNT: u64 = 100;

/// Options of `redstream tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// What to follow: an event type (all four of its priority lanes), one lane
    /// (`order.created#high`), a full stream key (`{events}:order.created`), or `dlq`.
    #[arg(value_name = "TYPE")]
    pub name: String,
    /// Read as a member of this consumer group and acknowledge what is printed. A missing group
    /// is created at the end of the stream (new events only).
    #[arg(long)]
    pub group: Option<String>,
    /// The consumer name within --group (default: redstream-tail-PID).
    #[arg(long, requires = "group")]
    pub consumer: Option<String>,
    /// Start at this entry id (inclusive) instead of at new events: `-` for the whole stream,
    /// `1700000000000-0`, a millisecond time, or `(id` to start after `id`. Not with --group.
    #[arg(long, conflicts_with = "group", allow_hyphen_values = true)]
    pub from: Option<String>,
    /// Stop after this many events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// One line of `tail --json`.
#[derive(Serialize)]
struct Line<'a> {
    stream: &'a str,
    id: &'a str,
    /// The envelope, or null when the entry is not a redstream event.
    event: Option<&'a redstream_core::Event>,
    decode_error: Option<&'a str>,
    /// The entry's fields when `event` is null; null otherwise.
    fields: Option<&'a [(String, String)]>,
}

/// Follows until `--count` events were printed, Ctrl-C or SIGTERM.
pub async fn run(global: &GlobalArgs, args: TailArgs) -> CliResult<()> {
    let transport = connect::transport(global).await?;
    let streams = streams_of(&transport, &args.name)?;
    let mut follower = match &args.group {
        Some(group) => {
            let consumer = args
                .consumer
                .clone()
                .unwrap_or_else(|| format!("redstream-tail-{}", std::process::id()));
            transport.follow_group(&streams, group, &consumer).await?
        }
        None => transport.follow(&streams, args.from.as_deref()).await?,
    };
    let from = match (&args.group, &args.from) {
        (Some(group), _) => format!("as a member of group {group}"),
        (None, Some(from)) => format!("from {from}"),
        (None, None) => "from new entries".to_owned(),
    };
    let stop = interrupted();
    tokio::pin!(stop);
    eprintln!(
        "following {} {from} (Ctrl-C to stop)",
        follower.streams().join(", ")
    );

    let mut printed = 0_u64;
    loop {
        let want = args
            .count
            .map_or(READ_COUNT, |count| (count - printed).min(READ_COUNT));
        let entries = tokio::select! {
            entries = follower.next(usize::try_from(want).unwrap_or(usize::MAX)) => entries?,
            () = &mut stop => break,
        };
        let room = args.count.map_or(u64::MAX, |count| count - printed);
        let take = entries
            .len()
            .min(usize::try_from(room).unwrap_or(usize::MAX));
        let (shown, extra) = entries.split_at(take);
        for entry in shown {
            print(global, entry)?;
        }
        acknowledge(&mut follower, args.group.as_deref(), shown, extra).await?;
        printed += take as u64;
        if args.count.is_some_and(|count| printed >= count) {
            break;
        }
    }
    Ok(())
}

/// The streams `name` stands for: every lane of a bare event type, otherwise the one stream
/// `stream_key_for` resolves.
fn streams_of(transport: &RedisTransport, name: &str) -> CliResult<Vec<String>> {
    let key = transport.stream_key_for(name)?;
    let bare_type = !name.starts_with('{') && !name.contains('#') && name != "dlq";
    if bare_type {
        Ok(transport
            .keys()
            .lanes(name)
            .into_iter()
            .map(|(_, key)| key)
            .collect())
    } else {
        Ok(vec![key])
    }
}

/// Acknowledges what was printed (a no-op without a group). Entries read beyond `--count`
/// stay pending for this consumer: they were delivered but not shown, so they are left for
/// `redstream claim` or the group's own claiming rather than acknowledged unseen.
async fn acknowledge(
    follower: &mut Follower,
    group: Option<&str>,
    shown: &[FollowedEntry],
    extra: &[FollowedEntry],
) -> CliResult<()> {
    follower.ack(shown).await?;
    if let Some(group) = group
        && !extra.is_empty()
    {
        let ids: Vec<&str> = extra.iter().map(|e| e.id.as_str()).collect();
        tracing::warn!(
            group,
            ids = %ids.join(", "),
            "read beyond --count: these entries stay pending for this consumer, unacknowledged"
        );
    }
    Ok(())
}

fn print(global: &GlobalArgs, entry: &FollowedEntry) -> CliResult<()> {
    if global.json {
        return output::json(&Line {
            stream: &entry.stream,
            id: &entry.id,
            event: entry.event.as_ref(),
            decode_error: entry.decode_error.as_deref(),
            fields: entry.event.is_none().then_some(entry.fields.as_slice()),
        });
    }
    let text = match &entry.event {
        Some(event) => {
            let lane = match event.priority() {
                redstream_core::Priority::Normal => String::new(),
                other => format!(" [{other}]"),
            };
            format!(
                "{}  {}{lane}  {}  {}",
                entry.id,
                event.event_type(),
                output::time(Some(event.metadata().timestamp)),
                event.payload()
            )
        }
        None => {
            let fields: serde_json::Map<String, serde_json::Value> = entry
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            format!(
                "{}  {}  undecodable: {}  {}",
                entry.id,
                entry.stream,
                entry.decode_error.as_deref().unwrap_or("unknown error"),
                serde_json::Value::Object(fields)
            )
        }
    };
    output::line(text)
}
