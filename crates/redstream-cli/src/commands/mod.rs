//! The operations commands (publish, tail, streams, info, groups, pending, claim, dlq, state,
//! bench).

use clap::Subcommand;

use crate::GlobalArgs;

/// Operations commands.
#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// List every stream under the prefix.
    Streams,
}

/// Runs one operations command.
pub async fn run(_global: &GlobalArgs, command: OpsCommand) -> crate::CliResult<()> {
    match command {
        OpsCommand::Streams => Ok(()),
    }
}
