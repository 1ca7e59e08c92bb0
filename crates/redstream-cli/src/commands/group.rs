//! `redstream group create|destroy|set-id|delete-consumer` and `redstream ack`: managing
//! consumer groups by hand, through the transport's group administration.
//!
//! `destroy`, `set-id` and `delete-consumer --force` can lose track of entries (a destroyed
//! group's pending list, entries skipped or delivered again, a consumer's pending entries), so
//! they ask first on a terminal and otherwise need `--yes` (refused before connecting without
//! it). `delete-consumer` refuses a consumer that holds pending entries unless `--force`.

use clap::{Args, Subcommand};
use redstream_transport::{ConsumerDeletion, GroupSummary, RedisTransport};
use serde::Serialize;

use super::{check_can_confirm, confirm, not_found, output};
use crate::{CliError, CliResult, GlobalArgs, connect};

/// `redstream group ...`.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a consumer group, starting at the end of the stream (`$`, the default), its start
    /// (`0`) or after an entry id.
    Create(CreateArgs),
    /// Delete a consumer group with its consumers and pending entries (the stream's entries
    /// stay).
    Destroy(DestroyArgs),
    /// Move a group's last-delivered id: `$` skips what was not delivered yet, `0` delivers the
    /// whole stream again, an id delivers what follows it.
    SetId(SetIdArgs),
    /// Delete a consumer from a group; refused while it holds pending entries unless --force.
    DeleteConsumer(DeleteConsumerArgs),
}

/// The stream and group every subcommand names.
#[derive(Debug, Args)]
pub struct Target {
    /// The stream: a full stream name (`events.raw`), an event type (`order.created`), or `dlq`.
    pub stream: String,
    /// The consumer group.
    pub group: String,
}

/// Options of `redstream group create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The stream and the group.
    #[command(flatten)]
    pub target: Target,
    /// Where the group's first read starts: `$` (entries added from now on), `0` (every entry)
    /// or an entry id (the entries after it).
    #[arg(long, default_value = "$", allow_hyphen_values = true)]
    pub start: String,
    /// Create the stream, empty, when it does not exist (otherwise that is an error).
    #[arg(long)]
    pub mkstream: bool,
}

/// Options of `redstream group destroy`.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// The stream and the group.
    #[command(flatten)]
    pub target: Target,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// Options of `redstream group set-id`.
#[derive(Debug, Args)]
pub struct SetIdArgs {
    /// The stream and the group.
    #[command(flatten)]
    pub target: Target,
    /// The new last-delivered id: `$`, `0` or an entry id.
    #[arg(allow_hyphen_values = true)]
    pub position: String,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// Options of `redstream group delete-consumer`.
#[derive(Debug, Args)]
pub struct DeleteConsumerArgs {
    /// The stream and the group.
    #[command(flatten)]
    pub target: Target,
    /// The consumer to delete.
    pub consumer: String,
    /// Delete it even when it holds pending entries, which then leave the group's pending list
    /// (nobody will acknowledge or claim them). Asks first, or needs --yes.
    #[arg(long)]
    pub force: bool,
    /// Do not ask for confirmation (with --force).
    #[arg(long)]
    pub yes: bool,
}

/// Options of `redstream ack`.
#[derive(Debug, Args)]
pub struct AckArgs {
    /// The stream: a full stream name (`events.raw`), an event type (`order.created`), or `dlq`.
    pub stream: String,
    /// The consumer group.
    pub group: String,
    /// The entry ids to acknowledge (at most 1000).
    #[arg(required = true, num_args = 1..=1000)]
    pub ids: Vec<String>,
}

/// Runs one `group` subcommand.
pub async fn run(global: &GlobalArgs, command: GroupCommand) -> CliResult<()> {
    match command {
        GroupCommand::Create(args) => create(global, args).await,
        GroupCommand::Destroy(args) => destroy(global, args).await,
        GroupCommand::SetId(args) => set_id(global, args).await,
        GroupCommand::DeleteConsumer(args) => delete_consumer(global, args).await,
    }
}

/// The stream a `<STREAM>` names (see "Naming a stream" in the README).
async fn stream_key(transport: &RedisTransport, name: &str) -> CliResult<String> {
    Ok(transport.resolve_stream(name).await?)
}

/// The summary of `group` of `key`: a typed "not found" when either is missing.
async fn group_summary(
    transport: &RedisTransport,
    key: &str,
    group: &str,
) -> CliResult<GroupSummary> {
    let summary = transport.stream_info(key).await.map_err(not_found)?;
    summary
        .groups
        .into_iter()
        .find(|g| g.name == group)
        .ok_or_else(|| {
            CliError::NotFound(format!(
                "no such consumer group {group:?} of stream {key:?}: `redstream groups {key}` \
                 lists its groups"
            ))
        })
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[derive(Serialize)]
struct Done<'a> {
    stream: &'a str,
    group: &'a str,
    #[serde(flatten)]
    detail: serde_json::Value,
}

async fn create(global: &GlobalArgs, args: CreateArgs) -> CliResult<()> {
    let transport = connect::transport(global).await?;
    let key = stream_key(&transport, &args.target.stream).await?;
    let group = &args.target.group;
    transport
        .create_group(&key, group, &args.start, args.mkstream)
        .await
        .map_err(|err| match err.kind() {
            redstream_core::ErrorKind::NotFound => CliError::NotFound(format!(
                "no such stream {key:?}: pass --mkstream to create it empty with the group"
            )),
            _ => err.into(),
        })?;
    if global.json {
        return output::json(&Done {
            stream: &key,
            group,
            detail: serde_json::json!({ "created": true, "start": args.start }),
        });
    }
    output::line(format!(
        "created group {group} of {key}, starting at {}",
        args.start
    ))
}

async fn destroy(global: &GlobalArgs, args: DestroyArgs) -> CliResult<()> {
    let group = &args.target.group;
    check_can_confirm(&format!("destroy consumer group {group}"), args.yes)?;
    let transport = connect::transport(global).await?;
    let key = stream_key(&transport, &args.target.stream).await?;
    let summary = group_summary(&transport, &key, group).await?;
    confirm(
        &format!(
            "Destroy consumer group {group} of {key}, with {} and {}?",
            plural(summary.consumers, "consumer", "consumers"),
            plural(summary.pending, "pending entry", "pending entries"),
        ),
        args.yes,
    )?;
    transport
        .destroy_group(&key, group)
        .await
        .map_err(not_found)?;
    if global.json {
        return output::json(&Done {
            stream: &key,
            group,
            detail: serde_json::json!({
                "destroyed": true,
                "consumers": summary.consumers,
                "pending": summary.pending,
            }),
        });
    }
    output::line(format!(
        "destroyed group {group} of {key} ({}, {})",
        plural(summary.consumers, "consumer", "consumers"),
        plural(summary.pending, "pending entry", "pending entries"),
    ))
}

async fn set_id(global: &GlobalArgs, args: SetIdArgs) -> CliResult<()> {
    let group = &args.target.group;
    check_can_confirm(&format!("move the position of group {group}"), args.yes)?;
    let transport = connect::transport(global).await?;
    let key = stream_key(&transport, &args.target.stream).await?;
    let summary = group_summary(&transport, &key, group).await?;
    let effect = match args.position.as_str() {
        "$" => "entries not delivered yet will be skipped".to_owned(),
        "0" | "0-0" => "the whole stream will be delivered to the group again".to_owned(),
        id => format!("entries after {id} will be delivered (again, for those already read)"),
    };
    confirm(
        &format!(
            "Move group {group} of {key} from {} to {}: {effect}?",
            summary.last_delivered_id, args.position
        ),
        args.yes,
    )?;
    transport
        .set_group_id(&key, group, &args.position)
        .await
        .map_err(not_found)?;
    if global.json {
        return output::json(&Done {
            stream: &key,
            group,
            detail: serde_json::json!({
                "previous_id": summary.last_delivered_id,
                "position": args.position,
            }),
        });
    }
    output::line(format!(
        "group {group} of {key} moved from {} to {}",
        summary.last_delivered_id, args.position
    ))
}

async fn delete_consumer(global: &GlobalArgs, args: DeleteConsumerArgs) -> CliResult<()> {
    let (group, consumer) = (&args.target.group, &args.consumer);
    if args.force {
        check_can_confirm(
            &format!("delete consumer {consumer} with its pending entries"),
            args.yes,
        )?;
    }
    let transport = connect::transport(global).await?;
    let key = stream_key(&transport, &args.target.stream).await?;
    if args.force {
        let pending = transport
            .consumers(&key, group)
            .await
            .map_err(not_found)?
            .into_iter()
            .find(|c| &c.name == consumer)
            .map_or(0, |c| c.pending);
        if pending > 0 {
            confirm(
                &format!(
                    "Delete consumer {consumer} of group {group} of {key} and drop its {}?",
                    plural(pending, "pending entry", "pending entries")
                ),
                args.yes,
            )?;
        }
    }
    let outcome = transport
        .delete_consumer(&key, group, consumer, args.force)
        .await
        .map_err(not_found)?;
    let dropped = match outcome {
        ConsumerDeletion::Deleted { pending } => pending,
        ConsumerDeletion::Refused { pending } => {
            return Err(CliError::usage(format!(
                "refusing to delete consumer {consumer} of group {group} of {key}: it holds {} \
                 that would be lost; acknowledge them (`redstream ack`), hand them to another \
                 consumer (`redstream claim {key} {group} <consumer> --min-idle 0s`), or pass \
                 --force",
                plural(pending, "pending entry", "pending entries")
            )));
        }
        _ => 0,
    };
    if global.json {
        return output::json(&Done {
            stream: &key,
            group,
            detail: serde_json::json!({
                "consumer": consumer,
                "deleted": true,
                "pending_dropped": dropped,
            }),
        });
    }
    output::line(format!(
        "deleted consumer {consumer} of group {group} of {key}{}",
        if dropped > 0 {
            format!(
                "; {} dropped",
                plural(dropped, "pending entry", "pending entries")
            )
        } else {
            String::new()
        }
    ))
}

/// `redstream ack <stream> <group> <id>...`.
pub async fn ack(global: &GlobalArgs, args: AckArgs) -> CliResult<()> {
    let transport = connect::transport(global).await?;
    let key = stream_key(&transport, &args.stream).await?;
    let acked = transport
        .ack(&key, &args.group, &args.ids)
        .await
        .map_err(not_found)?;
    if global.json {
        return output::json(&Done {
            stream: &key,
            group: &args.group,
            detail: serde_json::json!({ "asked": args.ids.len(), "acknowledged": acked }),
        });
    }
    output::line(format!(
        "acknowledged {acked} of {} in group {} of {key}{}",
        plural(args.ids.len() as u64, "entry", "entries"),
        args.group,
        if acked < args.ids.len() as u64 {
            " (the others were not pending)"
        } else {
            ""
        }
    ))
}
