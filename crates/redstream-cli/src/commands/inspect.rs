//! `redstream streams`, `info`, `groups`, `pending` and `claim`: the transport's inspection API
//! and its `claim`.
//!
//! A `<STREAM>` argument is resolved by the transport's `resolve_stream`: a stream name that
//! exists is used as it is (`events.raw`, `orders.events`, `events:order.created`); otherwise
//! `dlq` is the dead-letter stream (`events:dlq`) and an event type is its stream under the
//! prefix (`order.created` -> `events:order.created`). A stream or group that does not exist is
//! an error (exit 1), never an empty result.

use std::collections::HashMap;
use std::time::Duration;

use clap::Args;
use redstream_transport::{
    ConsumerSummary, GroupSummary, PendingEntry, PendingQuery, RedisTransport, StreamSummary,
    Topology,
};
use serde::Serialize;

use super::{idle_time, not_found, output};
use crate::{CliError, CliResult, GlobalArgs, connect, select};

/// Options of `redstream info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The stream: a full stream name (`events.raw`), an event type (`order.created`), or `dlq`.
    pub stream: String,
}

/// Options of `redstream groups`.
#[derive(Debug, Args)]
pub struct GroupsArgs {
    /// The stream: a full stream name (`events.raw`), an event type (`order.created`), or `dlq`.
    pub stream: String,
}

/// Options of `redstream pending`.
#[derive(Debug, Args)]
pub struct PendingArgs {
    /// The stream: a full stream name (`events.raw`), an event type (`order.created`), or `dlq`.
    pub stream: String,
    /// The consumer group.
    pub group: String,
    /// Only entries pending for this consumer.
    #[arg(long)]
    pub consumer: Option<String>,
    /// Only entries not delivered again for at least this long, e.g. `30s`.
    #[arg(long, value_parser = idle_time)]
    pub min_idle: Option<Duration>,
    /// At most this many entries, oldest first (at most 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub count: u16,
}

/// Options of `redstream claim`.
#[derive(Debug, Args)]
pub struct ClaimArgs {
    /// The stream: a full stream name (`events.raw`), an event type (`order.created`), or `dlq`.
    pub stream: String,
    /// The consumer group.
    pub group: String,
    /// The consumer that gets the entries (created in the group if new).
    pub consumer: String,
    /// Only entries idle (not delivered again) for at least this long, e.g. `60s`. Required
    /// without --id; with --id it defaults to 0 (claim them however recently delivered).
    #[arg(long, value_parser = idle_time, required_unless_present = "ids")]
    pub min_idle: Option<Duration>,
    /// At most this many entries, oldest first (at most 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000), conflicts_with = "ids")]
    pub count: u16,
    /// Claim exactly these pending entries (`XCLAIM`) instead of the oldest idle ones; repeat
    /// it or give several (at most 1000). Ids that are not pending in the group are left out.
    #[arg(long = "id", value_name = "ID", num_args = 1.., action = clap::ArgAction::Append)]
    pub ids: Vec<String>,
}

/// Options of `redstream streams`.
#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Also list these streams: a glob (`events.*`) or a stream name (`orders.events`);
    /// repeat it, or give a comma-separated list.
    #[arg(long = "streams", value_name = "PATTERN", value_delimiter = ',', value_parser = select::parse_pattern)]
    pub patterns: Vec<String>,
    /// Print the listing again every INTERVAL (e.g. `2s`), to watch lag and pending entries
    /// change, until Ctrl-C; with --json one object per line.
    #[arg(long, value_name = "INTERVAL", value_parser = watch_interval)]
    pub watch: Option<Duration>,
    /// With --watch: stop after this many listings.
    #[arg(long, value_name = "N", requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_count: Option<u64>,
}

/// A `--watch` interval: a duration of at least 100 ms.
fn watch_interval(text: &str) -> Result<Duration, String> {
    let interval = super::duration(text)?;
    if interval < Duration::from_millis(100) {
        return Err("must be at least 100ms".to_owned());
    }
    Ok(interval)
}

/// `redstream streams [--streams <pattern>]... [--watch <interval> [--watch-count N]]`. On a
/// Redis Cluster each stream also names the master it sits on (`node`, a `NODE` column);
/// elsewhere the output has no such field. With `--watch` the listing is printed again every
/// interval (each table after a line with the time) until Ctrl-C, SIGTERM or `--watch-count`.
pub async fn streams(global: &GlobalArgs, args: StreamsArgs) -> CliResult<()> {
    let transport = connect::transport(global).await?;
    let Some(interval) = args.watch else {
        return list_streams(global, &transport, &args).await;
    };
    let stop = super::interrupted();
    tokio::pin!(stop);
    let mut printed = 0u64;
    loop {
        if !global.json {
            output::line(format!(
                "{} every {}:",
                output::time(Some(std::time::SystemTime::now())),
                output::duration(interval)
            ))?;
        }
        list_streams(global, &transport, &args).await?;
        printed += 1;
        if args.watch_count.is_some_and(|count| printed >= count) {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = &mut stop => return Ok(()),
        }
    }
}

/// One listing of `redstream streams`.
async fn list_streams(
    global: &GlobalArgs,
    transport: &RedisTransport,
    args: &StreamsArgs,
) -> CliResult<()> {
    let (streams, node_of) = if transport.topology() == Topology::Cluster {
        // One SCAN per master lists the streams and says where each one is.
        let nodes = select::nodes(transport, &args.patterns).await?;
        let names = select::names_on(&nodes);
        (
            transport.streams_info(&names).await?,
            select::node_of(&nodes),
        )
    } else {
        (
            select::describe(transport, &args.patterns).await?,
            HashMap::new(),
        )
    };
    let node = |name: &str| node_of.get(name).map(String::as_str);
    if global.json {
        /// A stream, with its node on a cluster.
        #[derive(Serialize)]
        struct Listed<'a> {
            #[serde(flatten)]
            summary: &'a StreamSummary,
            #[serde(skip_serializing_if = "Option::is_none")]
            node: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Streams<'a> {
            prefix: &'a str,
            patterns: &'a [String],
            streams: Vec<Listed<'a>>,
        }
        return output::json(&Streams {
            prefix: &global.prefix,
            patterns: &args.patterns,
            streams: streams
                .iter()
                .map(|summary| Listed {
                    summary,
                    node: node(&summary.name),
                })
                .collect(),
        });
    }
    if streams.is_empty() {
        let mut text = format!(
            "no streams under the prefix {:?} ({})",
            global.prefix,
            transport.names().scan_pattern()
        );
        if !args.patterns.is_empty() {
            text.push_str(&format!(" or matching {}", args.patterns.join(", ")));
        }
        return output::line(text);
    }
    let mut header = vec![
        "STREAM",
        "LENGTH",
        "GROUPS",
        "MAX LAG",
        "PENDING",
        "OLDEST PENDING",
    ];
    let clustered = !node_of.is_empty();
    if clustered {
        header.insert(1, "NODE");
    }
    let mut table = output::table(&header);
    for stream in &streams {
        let groups = &stream.groups;
        // The slowest group is what an operator looks for; lag is unknown if any group's is.
        let lag = if groups.is_empty() {
            None
        } else {
            groups
                .iter()
                .map(|g| g.lag)
                .collect::<Option<Vec<u64>>>()
                .and_then(|lags| lags.into_iter().max())
                .map(|lag| lag.to_string())
                .or_else(|| Some("?".to_owned()))
        };
        let oldest = groups
            .iter()
            .filter_map(|g| g.oldest_pending_age_secs)
            .reduce(f64::max);
        let mut row = vec![
            stream.name.clone(),
            stream.length.to_string(),
            groups.len().to_string(),
            output::or_dash(lag),
            groups.iter().map(|g| g.pending).sum::<u64>().to_string(),
            output::secs(oldest),
        ];
        if clustered {
            row.insert(1, output::or_dash(node(&stream.name)));
        }
        table.add_row(row);
    }
    output::print_table(&table)
}

/// Resolves a `<STREAM>` argument (see the module docs).
async fn stream_key(transport: &RedisTransport, name: &str) -> CliResult<String> {
    Ok(transport.resolve_stream(name).await?)
}

/// What `XINFO STREAM` says of a stream beyond the summary: its counters since it was created.
/// The last three are Redis 7's; `None` before.
#[derive(Debug, Default, Serialize)]
struct StreamCounters {
    /// The id the next `XADD *` must be greater than (`last-generated-id`).
    last_generated_id: Option<String>,
    /// Entries ever added, deleted or not (`entries-added`).
    entries_added: Option<u64>,
    /// The largest id deleted by `XDEL` or a trim (`max-deleted-entry-id`; `0-0` for none).
    max_deleted_entry_id: Option<String>,
    /// The first entry's id as Redis records it (`recorded-first-entry-id`), the origin of
    /// its lag arithmetic.
    recorded_first_entry_id: Option<String>,
}

/// Reads `XINFO STREAM` for [`StreamCounters`]. redis-rs's typed `StreamInfoStreamReply` has no
/// field for Redis 7's counters, so the reply is read as a map by name.
async fn counters(transport: &RedisTransport, key: &str) -> CliResult<StreamCounters> {
    use redis::Value;
    let mut conn = transport.connection();
    let reply: HashMap<String, Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(key)
        .query_async(&mut conn)
        .await
        .map_err(|err| redstream_core::Error::from_redis("XINFO STREAM", key.to_owned(), err))
        .map_err(not_found)?;
    let text = |name: &str| match reply.get(name) {
        Some(Value::BulkString(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Some(Value::SimpleString(text)) => Some(text.clone()),
        _ => None,
    };
    let number = |name: &str| match reply.get(name) {
        Some(Value::Int(n)) => u64::try_from(*n).ok(),
        _ => None,
    };
    Ok(StreamCounters {
        last_generated_id: text("last-generated-id"),
        entries_added: number("entries-added"),
        max_deleted_entry_id: text("max-deleted-entry-id"),
        recorded_first_entry_id: text("recorded-first-entry-id"),
    })
}

/// `redstream info <stream>`.
pub async fn info(global: &GlobalArgs, args: InfoArgs) -> CliResult<()> {
    let transport = connect::transport(global).await?;
    let key = stream_key(&transport, &args.stream).await?;
    let summary = transport.stream_info(&key).await.map_err(not_found)?;
    let counters = counters(&transport, &key).await?;
    if global.json {
        #[derive(Serialize)]
        struct Info<'a> {
            #[serde(flatten)]
            summary: &'a StreamSummary,
            #[serde(flatten)]
            counters: &'a StreamCounters,
        }
        return output::json(&Info {
            summary: &summary,
            counters: &counters,
        });
    }
    output::print_table(&output::fields([
        ("stream", summary.name.clone()),
        ("event type", output::or_dash(summary.event_type.as_deref())),
        ("dead letters", summary.dead_letter.to_string()),
        ("length", summary.length.to_string()),
        ("first id", output::or_dash(summary.first_id.as_deref())),
        ("last id", output::or_dash(summary.last_id.as_deref())),
        (
            "last generated id",
            output::or_dash(counters.last_generated_id.as_deref()),
        ),
        ("entries added", output::or_dash(counters.entries_added)),
        (
            "max deleted id",
            output::or_dash(counters.max_deleted_entry_id.as_deref()),
        ),
        (
            "recorded first id",
            output::or_dash(counters.recorded_first_entry_id.as_deref()),
        ),
        ("groups", summary.groups.len().to_string()),
    ]))?;
    if !summary.groups.is_empty() {
        output::print_table(&groups_table(&summary.groups))?;
    }
    Ok(())
}

fn groups_table(groups: &[GroupSummary]) -> comfy_table::Table {
    let mut table = output::table(&[
        "GROUP",
        "CONSUMERS",
        "PENDING",
        "LAG",
        "LAST DELIVERED",
        "OLDEST PENDING",
        "OLDEST UNDELIVERED",
    ]);
    for group in groups {
        table.add_row(vec![
            group.name.clone(),
            group.consumers.to_string(),
            group.pending.to_string(),
            output::or_dash(group.lag),
            group.last_delivered_id.clone(),
            output::secs(group.oldest_pending_age_secs),
            output::secs(group.oldest_undelivered_age_secs),
        ]);
    }
    table
}

/// One group in `groups --json`: the group's summary, with its consumers listed.
#[derive(Serialize)]
struct GroupWithConsumers<'a> {
    name: &'a str,
    pending: u64,
    lag: Option<u64>,
    last_delivered_id: &'a str,
    oldest_pending_age_secs: Option<f64>,
    oldest_pending_idle_ms: Option<u64>,
    oldest_undelivered_age_secs: Option<f64>,
    consumers: &'a [ConsumerSummary],
}

/// `redstream groups <stream>`.
pub async fn groups(global: &GlobalArgs, args: GroupsArgs) -> CliResult<()> {
    let transport = connect::transport(global).await?;
    let key = stream_key(&transport, &args.stream).await?;
    let summary = transport.stream_info(&key).await.map_err(not_found)?;
    let mut consumers = Vec::with_capacity(summary.groups.len());
    for group in &summary.groups {
        consumers.push(
            transport
                .consumers(&key, &group.name)
                .await
                .map_err(not_found)?,
        );
    }
    if global.json {
        #[derive(Serialize)]
        struct Groups<'a> {
            stream: &'a str,
            groups: Vec<GroupWithConsumers<'a>>,
        }
        let groups = summary
            .groups
            .iter()
            .zip(&consumers)
            .map(|(g, consumers)| GroupWithConsumers {
                name: &g.name,
                pending: g.pending,
                lag: g.lag,
                last_delivered_id: &g.last_delivered_id,
                oldest_pending_age_secs: g.oldest_pending_age_secs,
                oldest_pending_idle_ms: g.oldest_pending_idle_ms,
                oldest_undelivered_age_secs: g.oldest_undelivered_age_secs,
                consumers,
            })
            .collect();
        return output::json(&Groups {
            stream: &key,
            groups,
        });
    }
    if summary.groups.is_empty() {
        return output::line(format!("{key} has no consumer groups"));
    }
    output::print_table(&groups_table(&summary.groups))?;
    let mut table = output::table(&["GROUP", "CONSUMER", "PENDING", "IDLE", "INACTIVE"]);
    for (group, consumers) in summary.groups.iter().zip(&consumers) {
        for consumer in consumers {
            table.add_row(vec![
                group.name.clone(),
                consumer.name.clone(),
                consumer.pending.to_string(),
                output::ms(Some(consumer.idle_ms)),
                output::ms(consumer.inactive_ms),
            ]);
        }
    }
    if table.row_count() > 0 {
        output::print_table(&table)?;
    }
    Ok(())
}

/// `redstream pending <stream> <group>`.
pub async fn pending(global: &GlobalArgs, args: PendingArgs) -> CliResult<()> {
    let transport = connect::transport(global).await?;
    let key = stream_key(&transport, &args.stream).await?;
    let mut query = PendingQuery::new(usize::from(args.count));
    if let Some(consumer) = &args.consumer {
        query = query.with_consumer(consumer);
    }
    if let Some(min_idle) = args.min_idle {
        query = query.with_min_idle(min_idle);
    }
    let entries = transport
        .pending(&key, &args.group, query)
        .await
        .map_err(not_found)?;
    if global.json {
        #[derive(Serialize)]
        struct Pending<'a> {
            stream: &'a str,
            group: &'a str,
            entries: &'a [PendingEntry],
        }
        return output::json(&Pending {
            stream: &key,
            group: &args.group,
            entries: &entries,
        });
    }
    if entries.is_empty() {
        return output::line(format!(
            "no pending entries in group {} of {key} match",
            args.group
        ));
    }
    let mut table = output::table(&["ID", "CONSUMER", "IDLE", "DELIVERIES"]);
    for entry in &entries {
        table.add_row(vec![
            entry.id.clone(),
            entry.consumer.clone(),
            output::ms(Some(entry.idle_ms)),
            entry.deliveries.to_string(),
        ]);
    }
    output::print_table(&table)
}

/// `redstream claim <stream> <group> <consumer> --min-idle 60s`, or `--id <id>...`.
pub async fn claim(global: &GlobalArgs, args: ClaimArgs) -> CliResult<()> {
    let transport = connect::transport(global).await?;
    let key = stream_key(&transport, &args.stream).await?;
    let min_idle = args.min_idle.unwrap_or_default();
    let claimed = if args.ids.is_empty() {
        transport
            .claim(
                &key,
                &args.group,
                &args.consumer,
                min_idle,
                usize::from(args.count),
            )
            .await
            .map_err(|err| claim_failed(err, &key, &args))?
    } else {
        transport
            .claim_ids(&key, &args.group, &args.consumer, min_idle, &args.ids)
            .await
            .map_err(not_found)?
    };
    if global.json {
        #[derive(Serialize)]
        struct Claimed<'a> {
            stream: &'a str,
            group: &'a str,
            consumer: &'a str,
            claimed: &'a [String],
            /// With --id: the ids asked for that were not claimed.
            #[serde(skip_serializing_if = "Option::is_none")]
            not_claimed: Option<Vec<&'a str>>,
        }
        let not_claimed = (!args.ids.is_empty()).then(|| {
            args.ids
                .iter()
                .filter(|id| !claimed.contains(id))
                .map(String::as_str)
                .collect()
        });
        return output::json(&Claimed {
            stream: &key,
            group: &args.group,
            consumer: &args.consumer,
            claimed: &claimed,
            not_claimed,
        });
    }
    let which = if args.ids.is_empty() {
        format!("idle for at least {}", output::duration(min_idle))
    } else {
        format!("of the {} asked for", args.ids.len())
    };
    output::line(format!(
        "claimed {} entr{} of group {} {which}; now pending for {}",
        claimed.len(),
        if claimed.len() == 1 { "y" } else { "ies" },
        args.group,
        args.consumer
    ))?;
    for id in &claimed {
        output::line(id)?;
    }
    Ok(())
}

/// A failed claim. A large pending list takes several `XAUTOCLAIM`s: when one fails, those
/// before it have already moved their entries, so say where to look.
fn claim_failed(err: redstream_core::Error, key: &str, args: &ClaimArgs) -> CliError {
    use redstream_core::ErrorKind;
    match err.kind() {
        ErrorKind::NotFound => not_found(err),
        ErrorKind::InvalidInput | ErrorKind::WrongType => err.into(),
        kind => CliError::Redstream(redstream_core::Error::backend(
            kind,
            "claim",
            key,
            format!(
                "{err}; entries claimed before the failure stay with {consumer} (`redstream \
                 pending {key} {group} --consumer {consumer}` lists them); running the command \
                 again claims the rest",
                consumer = args.consumer,
                group = args.group,
            ),
        )),
    }
}
