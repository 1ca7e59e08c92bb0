//! `redstream completions <shell>`: the shell completion script of the whole command line,
//! written by `clap_complete` from the same definition the parser uses, so it never drifts.

use clap::{Args, CommandFactory as _};

use super::output;
use crate::{Cli, CliError, CliResult};

/// Options of `redstream completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    pub shell: clap_complete::Shell,
}

/// Writes the completion script to stdout. It needs no server.
pub fn run(args: &CompletionsArgs) -> CliResult<()> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "redstream", &mut script);
    let script = String::from_utf8(script)
        .map_err(|err| CliError::io("writing the completion script", std::io::Error::other(err)))?;
    match output::text(&script) {
        // Read by `head` or a pager that quit: nothing is left to say.
        Err(CliError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(())
        }
        other => other,
    }
}
