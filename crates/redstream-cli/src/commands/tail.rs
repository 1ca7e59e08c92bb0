//! `redstream tail <stream>`: print entries as they are added to a stream: an event type's
//! (`order.created` -> `events:order.created`) or any stream by its full name (`events.raw`),
//! resolved as in `inspect.rs`.
//!
//! Without `--group` it reads with plain `XREAD` (the transport's `follow`): nothing is
//! acknowledged and no group is created, so the services reading the stream are not affected.
//! With `--group` it reads as a consumer of that group (`follow_group`) and acknowledges what
//! it printed. Once it is reading, it says so on stderr (`following ...`); everything added
//! after that line is printed. Entries that are not redstream events are printed with their
//! decoding error and their fields (another writer's entries, e.g. seed 004's flat fields).
//! When the stream does not exist yet, a one-line hint on stderr says which name it waits for
//! (`tail events.raw` before anything wrote `events.raw` waits for the event type's stream
//! `events:events.raw`; `tail --stream events.raw` waits for `events.raw`).
//!
//! It stops after `--count` events, on Ctrl-C or SIGTERM, and when its reader goes away
//! (`redstream tail x | head -1`), all with exit status 0. When the server goes away (a
//! restart, a failover) it says so on stderr and keeps trying, with pauses growing to
//! 5 seconds, until the server is back, then resumes where it stopped; errors that
//! retrying cannot fix (a refused password, a deleted group) end it with status 1.

use std::time::Duration;

use clap::Args;
use redstream_transport::{FollowedEntry, Follower, RedisTransport};
use serde::Serialize;

use super::{interrupted, output};
use crate::{CliError, CliResult, GlobalArgs, connect};

/// Entries asked for per read (per stream).
const READ_COUNT: u64 = 100;

/// The pause before the first attempt to reach the server again; it doubles after each failed
/// attempt, up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The longest pause between attempts to reach the server again.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// Options of `redstream tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// What to follow: a full stream name (`events.raw`, `events:order.created`), an event type
    /// (`order.created`, whose stream is `<prefix>:order.created`), or `dlq`.
    #[arg(
        value_name = "STREAM",
        required_unless_present = "stream",
        conflicts_with = "stream"
    )]
    pub name: Option<String>,
    /// Follow the stream of exactly this name (`events.raw`), whether or not it exists yet, with
    /// no event-type resolution.
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
    /// Read as a member of this consumer group and acknowledge what is printed. A missing group
    /// is created at the end of the stream (new events only).
    #[arg(long)]
    pub group: Option<String>,
    /// The consumer name within --group (default: redstream-tail-PID).
    #[arg(long, requires = "group")]
    pub consumer: Option<String>,
    /// Start at this entry id (inclusive) instead of at new events: `-` for the whole stream,
    /// `1700000000000-0`, a millisecond time, or `(id` to start after `id`. With --group: where
    /// the group is created (refused when the group exists: `redstream group set-id` moves it).
    #[arg(long, allow_hyphen_values = true)]
    pub from: Option<String>,
    /// With --group: leave what is printed pending for the consumer instead of acknowledging
    /// it (a look at the group's flow that `redstream claim` or `ack` can settle later).
    #[arg(long, requires = "group")]
    pub no_ack: bool,
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

/// Follows until `--count` events were printed, Ctrl-C, SIGTERM or a closed stdout.
pub async fn run(global: &GlobalArgs, args: TailArgs) -> CliResult<()> {
    let transport = connect::transport(global).await?;
    let streams = match (&args.stream, &args.name) {
        (Some(stream), _) => vec![stream.clone()],
        (None, Some(name)) => streams_of(&transport, name).await?,
        (None, None) => return Err(CliError::usage("name a stream: <STREAM> or --stream")),
    };
    for stream in &streams {
        hint_if_missing(&transport, args.name.as_deref(), stream).await?;
    }
    let mut follower = match &args.group {
        Some(group) => {
            let consumer = args
                .consumer
                .clone()
                .unwrap_or_else(|| format!("redstream-tail-{}", std::process::id()));
            transport
                .follow_group_from(&streams, group, &consumer, args.from.as_deref())
                .await?
        }
        None => transport.follow(&streams, args.from.as_deref()).await?,
    };
    let from = match (&args.group, &args.from) {
        (Some(group), _) if args.no_ack => {
            format!("as a member of group {group}, leaving entries pending (--no-ack)")
        }
        (Some(group), _) => format!("as a member of group {group}"),
        (None, Some(from)) => format!("from {from}"),
        (None, None) => "from new entries".to_owned(),
    };
    let stop = interrupted();
    tokio::pin!(stop);
    let closed = output_closed();
    tokio::pin!(closed);
    output::note(format!(
        "following {} {from} (Ctrl-C to stop)",
        follower.streams().join(", ")
    ));

    let mut printed = 0_u64;
    // With a group: entries printed and not acknowledged yet. They are acknowledged before the
    // next read, and again after a failure (acknowledging twice is harmless).
    let mut unacked: Vec<FollowedEntry> = Vec::new();
    // The current pause between attempts while the server cannot be reached.
    let mut retrying: Option<Duration> = None;
    loop {
        let left = args.count.map(|count| count - printed);
        if left == Some(0) && unacked.is_empty() {
            break;
        }
        let want = left.map_or(READ_COUNT, |left| left.min(READ_COUNT));
        let outcome = tokio::select! {
            outcome = step(&mut follower, &mut unacked, want) => outcome,
            () = &mut stop => break,
            () = &mut closed => break,
        };
        let entries = match outcome {
            Ok(entries) => entries,
            Err(err) if err.is_retryable() => {
                let pause = match retrying {
                    None => {
                        output::note(format!(
                            "warning: {err}; retrying until the server is back (Ctrl-C to stop)"
                        ));
                        FIRST_RETRY_PAUSE
                    }
                    Some(pause) => {
                        tracing::debug!(error = %err, "the server is still unreachable");
                        (pause * 2).min(MAX_RETRY_PAUSE)
                    }
                };
                retrying = Some(pause);
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = &mut stop => break,
                    () = &mut closed => break,
                }
            }
            Err(err) => return Err(err.into()),
        };
        if retrying.take().is_some() {
            output::note("reconnected: following again");
        }
        let room = left.map_or(usize::MAX, |left| {
            usize::try_from(left).unwrap_or(usize::MAX)
        });
        let (shown, extra) = entries.split_at(entries.len().min(room));
        for entry in shown {
            print(global, entry)?;
        }
        printed += shown.len() as u64;
        if let Some(group) = &args.group
            && !args.no_ack
        {
            unacked.extend_from_slice(shown);
            warn_unshown(group, extra);
        }
    }
    if !unacked.is_empty() {
        // Stopped between printing and acknowledging: acknowledge what was printed, unless a
        // second Ctrl-C says not to wait.
        let again = interrupted();
        let acked = tokio::select! {
            acked = follower.ack(&unacked) => acked.is_ok(),
            () = again => false,
        };
        if !acked {
            let ids: Vec<&str> = unacked.iter().map(|e| e.id.as_str()).collect();
            tracing::warn!(
                group = args.group.as_deref().unwrap_or_default(),
                ids = %ids.join(", "),
                "stopped before acknowledging these printed entries: they stay pending for \
                 this consumer (`redstream claim` hands them to another)"
            );
        }
    }
    Ok(())
}

/// Acknowledges what was printed (a no-op without a group), then reads up to `want` entries
/// per stream; reads nothing once `want` is 0 (`--count` reached).
async fn step(
    follower: &mut Follower,
    unacked: &mut Vec<FollowedEntry>,
    want: u64,
) -> redstream_core::Result<Vec<FollowedEntry>> {
    if !unacked.is_empty() {
        follower.ack(unacked).await?;
        unacked.clear();
    }
    if want == 0 {
        return Ok(Vec::new());
    }
    follower
        .next(usize::try_from(want).unwrap_or(usize::MAX))
        .await
}

/// Entries a group read returned beyond `--count`: delivered but not shown, so they are left
/// pending for `redstream claim` or the group's own claiming rather than acknowledged unseen.
fn warn_unshown(group: &str, extra: &[FollowedEntry]) {
    if extra.is_empty() {
        return;
    }
    let ids: Vec<&str> = extra.iter().map(|e| e.id.as_str()).collect();
    tracing::warn!(
        group,
        ids = %ids.join(", "),
        "read beyond --count: these entries stay pending for this consumer, unacknowledged"
    );
}

/// Completes when stdout is a pipe whose reader has gone (`redstream tail x | head -1` once
/// `head` has exited). A follower waiting for new entries writes nothing, so without this it
/// would notice only at its next line, which may never come. Never completes when stdout is
/// not a pipe (a file, a terminal), or off Unix.
fn output_closed() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        let pipe = stdout_pipe();
        async move {
            if let Some(pipe) = pipe {
                // The write end of a pipe reports an error once no reader is left.
                while let Ok(ready) = pipe.ready(tokio::io::Interest::ERROR).await {
                    if ready.is_error() {
                        return;
                    }
                }
            }
            std::future::pending::<()>().await;
        }
    }
    #[cfg(not(unix))]
    {
        std::future::pending::<()>()
    }
}

/// A duplicate of stdout registered with the runtime, to watch for its reader going away; `None`
/// when stdout is not a pipe. Only its readiness is used: nothing is written through it, and
/// its mode is left alone (stdout stays blocking for the writes of [`output`]).
#[cfg(unix)]
fn stdout_pipe() -> Option<tokio::net::unix::pipe::Sender> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    let file = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned().ok()?);
    if !file.metadata().ok()?.file_type().is_fifo() {
        return None;
    }
    tokio::net::unix::pipe::Sender::from_file_unchecked(file).ok()
}

/// The streams `name` stands for: the one stream `resolve_stream` names. (Every priority of
/// an event type is in its one stream.)
async fn streams_of(transport: &RedisTransport, name: &str) -> CliResult<Vec<String>> {
    Ok(vec![transport.resolve_stream(name).await?])
}

/// Prints a one-line hint on stderr when `stream` does not exist yet: the follower waits for it,
/// and the user may have meant a stream of that very name rather than an event type's.
async fn hint_if_missing(
    transport: &RedisTransport,
    name: Option<&str>,
    stream: &str,
) -> CliResult<()> {
    match transport.stream_info(stream).await {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == redstream_core::ErrorKind::NotFound => {
            let hint = match name {
                Some(name) if name != stream => format!(
                    "note: stream {stream} (of event type {name:?}) does not exist yet: waiting \
                     for its first entry; `--stream {name}` follows a stream named {name} instead"
                ),
                _ => format!(
                    "note: stream {stream} does not exist yet: waiting for its first entry \
                     (`redstream streams --streams '*'` lists every stream)"
                ),
            };
            output::note(hint);
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
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
            let priority = match event.priority() {
                redstream_core::Priority::Normal => String::new(),
                other => format!(" [{other}]"),
            };
            format!(
                "{}  {}{priority}  {}  {}",
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
