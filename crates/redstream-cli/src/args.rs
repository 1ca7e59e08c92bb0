//! The command line: global options shared by every command, and the subcommands.

use clap::{Args, Parser, Subcommand};

/// Operations for redstream on Redis: streams, consumer groups, dead letters, state, sinks,
/// and a live dashboard.
#[derive(Debug, Parser)]
#[command(name = "redstream", version, about, propagate_version = true)]
pub struct Cli {
    /// Options every command accepts.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Redis URL, e.g. redis://127.0.0.1:6379, redis://user:password@host:6379/0, or rediss://
    /// for TLS. A password in it is never printed.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true,
        hide_env_values = true
    )]
    pub url: String,
    /// Stream prefix: streams are named `{prefix}:<event type>`.
    #[arg(
        long,
        env = "REDSTREAM_PREFIX",
        default_value = "events",
        global = true
    )]
    pub prefix: String,
    /// Print JSON for scripts instead of tables for people.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log filter for stderr (`RUST_LOG` wins when set), e.g. `warn` or `redstream=debug`.
    #[arg(long, default_value = "warn", global = true)]
    pub log: String,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the live dashboard and its JSON, WebSocket and Prometheus endpoints.
    Serve(crate::serve::ServeArgs),
    /// Write JSON lines from a file or stdin into a stream, resuming where a stopped run ended.
    Sink(crate::sink::SinkArgs),
    /// Operations on streams, groups, dead letters and state.
    #[command(flatten)]
    Ops(crate::commands::OpsCommand),
}
