//! The operations commands (publish, tail, streams, nodes, info, groups, group, pending, claim,
//! ack, range, trim, dlq, state, bench, migrate) and `completions`. Each prints a table for people, or with `--json` one JSON object for scripts
//! (`tail`: one per line); the shapes are documented in the crate README.

pub mod bench;
pub mod completions;
pub mod dlq;
pub mod group;
pub mod inspect;
pub mod migrate;
pub mod nodes;
pub(crate) mod output;
pub mod publish;
pub mod range;
pub mod state;
pub mod tail;
pub mod trim;

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Subcommand;

use crate::{CliError, CliResult, GlobalArgs};

/// Operations commands.
#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Publish one event, or one per line of a JSON-lines file.
    Publish(publish::PublishArgs),
    /// Print new entries of a stream (an event type's, or any by name) as they arrive.
    Tail(tail::TailArgs),
    /// List the streams under the prefix (and any --streams): length, groups, lag, pending,
    /// oldest pending age.
    Streams(inspect::StreamsArgs),
    /// Show each master of a cluster (or the one server): memory, ops/s, clients, keys, and the
    /// streams it holds; then the totals.
    Nodes(nodes::NodesArgs),
    /// Print entries of a stream: a range by id, or the latest N.
    Range(range::RangeArgs),
    /// Delete a stream's oldest entries (MAXLEN or MINID); refused while some of them are
    /// pending in a group, unless --force.
    Trim(trim::TrimArgs),
    /// Show one stream: length, first and last id, consumer groups.
    Info(inspect::InfoArgs),
    /// Show the consumer groups of a stream and their consumers.
    Groups(inspect::GroupsArgs),
    /// List the pending (delivered, unacknowledged) entries of a group.
    Pending(inspect::PendingArgs),
    /// Hand idle pending entries of a group (or the entries --id names) to a consumer.
    Claim(inspect::ClaimArgs),
    /// Acknowledge entries of a group by id (they leave its pending list; the stream keeps
    /// them).
    Ack(group::AckArgs),
    /// Create, destroy, reposition consumer groups and delete consumers.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// List, show, redrive and purge dead letters.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Read and write the key/value state of stream processors (redstream-state).
    State(state::StateArgs),
    /// Publish and consume events against the server and report throughput and latency.
    Bench(bench::BenchArgs),
    /// Rename the keys of redstream 0.1's layout to the current names (dry run by default).
    Migrate(migrate::MigrateArgs),
}

/// Runs one operations command.
pub async fn run(global: &GlobalArgs, command: OpsCommand) -> CliResult<()> {
    let outcome = match command {
        OpsCommand::Publish(args) => publish::run(global, args).await,
        OpsCommand::Tail(args) => tail::run(global, args).await,
        OpsCommand::Streams(args) => inspect::streams(global, args).await,
        OpsCommand::Nodes(args) => nodes::run(global, args).await,
        OpsCommand::Info(args) => inspect::info(global, args).await,
        OpsCommand::Range(args) => range::run(global, args).await,
        OpsCommand::Trim(args) => trim::run(global, args).await,
        OpsCommand::Groups(args) => inspect::groups(global, args).await,
        OpsCommand::Pending(args) => inspect::pending(global, args).await,
        OpsCommand::Claim(args) => inspect::claim(global, args).await,
        OpsCommand::Ack(args) => group::ack(global, args).await,
        OpsCommand::Group(command) => group::run(global, command).await,
        OpsCommand::Dlq(command) => dlq::run(global, command).await,
        OpsCommand::State(args) => state::run(global, args).await,
        OpsCommand::Bench(args) => bench::run(global, args).await,
        OpsCommand::Migrate(args) => migrate::run(global, args).await,
    };
    match outcome {
        // The reader of our output went away (`redstream tail | head`): nothing is left to say.
        Err(CliError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(())
        }
        other => other,
    }
}

/// Parses a duration such as `30s`, `10m` or `1h 30m` (humantime's syntax).
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("{err} (expected e.g. 30s, 10m, 1h)"))
}

/// Parses an idle time (`--min-idle`) like [`duration`], capped at what Redis accepts: it reads
/// idle times as signed 64-bit milliseconds and refuses larger ones, and nothing is idle for
/// 292 million years anyway.
fn idle_time(text: &str) -> Result<Duration, String> {
    const MAX: Duration = Duration::from_millis(i64::MAX as u64);
    duration(text).map(|idle| idle.min(MAX))
}

/// Milliseconds of a duration, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Turns a "not found" from the redstream crates into the CLI's own, with a hint naming the
/// command that lists what exists.
fn not_found(err: redstream_core::Error) -> CliError {
    match err {
        redstream_core::Error::NotFound { what, .. } => {
            let hint = if what.starts_with("consumer group") {
                "`redstream groups <stream>` lists the groups of a stream"
            } else {
                "`redstream streams` lists the streams under the prefix (add `--streams <pattern>` \
                 for others)"
            };
            CliError::NotFound(format!("no such {what}: {hint}"))
        }
        other => CliError::Redstream(other),
    }
}

/// Asks before a destructive command. With `--yes` it goes ahead; on a terminal it asks
/// `question` and goes ahead on `y`/`yes`; otherwise (stdin is a pipe or a file) it refuses.
/// Call [`check_can_confirm`] first, before connecting, so a script fails fast.
fn confirm(question: &str, yes: bool) -> CliResult<()> {
    if yes {
        return Ok(());
    }
    let mut stderr = std::io::stderr().lock();
    write!(stderr, "{question} [y/N] ")
        .and_then(|()| stderr.flush())
        .map_err(|err| CliError::io("writing the question to stderr", err))?;
    drop(stderr);
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|err| CliError::io("reading the confirmation from stdin", err))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(CliError::usage("not confirmed: nothing was changed")),
    }
}

/// Refuses a destructive command that cannot be confirmed: no `--yes` and stdin is not a
/// terminal. `what` says what would have been done.
fn check_can_confirm(what: &str, yes: bool) -> CliResult<()> {
    if yes || std::io::stdin().is_terminal() {
        return Ok(());
    }
    Err(CliError::usage(format!(
        "refusing to {what} without confirmation: stdin is not a terminal, so pass --yes"
    )))
}

/// Completes on Ctrl-C or, on Unix, SIGTERM. The handlers are installed by this call, not
/// when the future is first polled: a signal that arrives in between (say, right after `tail`
/// said it is ready) still stops the command cleanly instead of killing the process.
fn interrupted() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        async fn recv(signal: Option<Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            tokio::select! {
                () = recv(interrupt) => {}
                () = recv(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
