//! `redstream serve`: the dashboard.

use clap::Args;

use crate::GlobalArgs;

/// Options of `redstream serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: String,
}

/// Runs the dashboard until Ctrl-C.
pub async fn run(_global: &GlobalArgs, _args: ServeArgs) -> crate::CliResult<()> {
    Ok(())
}
