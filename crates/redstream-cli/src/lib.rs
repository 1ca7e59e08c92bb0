//! The library half of the `redstream` binary: argument parsing, the operations commands and
//! the dashboard server. See the crate README for the commands.

pub mod args;
pub mod commands;
pub mod connect;
mod error;
pub mod select;
pub mod serve;
pub mod sink;

use std::process::ExitCode;

pub use args::{Cli, Command, GlobalArgs};
pub use error::{CliError, CliResult};

/// Exit status for a failed command (bad input, unreachable server, refused credentials...).
pub const EXIT_FAILURE: u8 = 1;

/// Installs a `tracing` subscriber writing to stderr; `RUST_LOG` overrides `--log`.
pub fn init_tracing(global: &GlobalArgs) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&global.log));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs one parsed command line to completion and maps its outcome to an exit code. Errors
/// are printed to stderr as `error: ...`, or with `--json` as
/// `{"error":{"kind":"...","message":"..."}}` (the same exit code); they never contain a
/// password.
pub async fn run(cli: Cli) -> ExitCode {
    let outcome = match cli.command {
        Command::Serve(args) => serve::run(&cli.global, args).await,
        Command::Sink(args) => sink::run(&cli.global, args).await,
        Command::Ops(command) => commands::run(&cli.global, command).await,
        Command::Completions(args) => commands::completions::run(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error::report(cli.global.json, error.kind(), &error.to_string());
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
