//! `redstream migrate`: renames the keys written by redstream 0.1 (`{prefix}:<type>`,
//! `{prefix}:dlq`, `{state}:<key>`, `{state}#checkpoint:<name>`,
//! `<stream>:redstream-sink:<id>`) to the names of the current layout, deletes the empty
//! priority lanes, and refuses, changing nothing, when a new name is taken or a lane still holds
//! entries. A dry run by default; `--apply` does it. See docs/migration.md.
//!
//! - [`plan`](plan::plan) reads the keyspace and decides the fate of every key;
//! - [`apply`](apply::apply) runs the plan in one Lua script that checks and changes atomically;
//! - `print` shows a plan as tables or JSON.
//!
//! It talks to Redis through redis-rs and `redstream_core::keys` only, not through the
//! transport, state or sink crates: it must know the 0.1 names, which those crates no longer
//! write.

pub mod apply;
pub mod plan;
mod print;

use std::time::Duration;

use clap::Args;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use redstream_core::keys::{self, KeyLayout};
use redstream_core::{Error, RedactedUrl, TlsOptions};

pub use apply::{Outcome, Problem};
pub use plan::Plan;

use crate::{CliError, CliResult, GlobalArgs};

/// How long one reply may take. Generous: the apply script renames every key in one call.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of `redstream migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// A state store's key prefix whose keys (`{prefix}:<key>`, `{prefix}#checkpoint:<name>`)
    /// are migrated too. Repeat for several stores.
    #[arg(long = "state-prefix", value_name = "PREFIX")]
    pub state_prefixes: Vec<String>,
    /// The layout to migrate to: `plain` (`events:order.created`, `myapp:counter`) or
    /// `cluster` (`events:{order.created}`; state keys keep their names).
    #[arg(long, default_value_t = KeyLayout::Plain, value_name = "plain|cluster")]
    pub layout: KeyLayout,
    /// Do it. Without this flag the command only prints what it would do.
    #[arg(long)]
    pub apply: bool,
}

/// What to migrate: the stream prefix, the state prefixes and the target layout.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// The stream prefix `P` of the 0.1 keys `{P}:<type>`.
    pub prefix: String,
    /// The state prefixes `S` of the 0.1 keys `{S}:<key>`.
    pub state_prefixes: Vec<String>,
    /// The layout to migrate to.
    pub layout: KeyLayout,
}

impl Options {
    /// Checks the prefixes: each as the 0.1 crates accepted it (not empty, no `{`, `}`,
    /// whitespace; no `#` in a state prefix).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the option.
    pub fn new(
        prefix: &str,
        state_prefixes: Vec<String>,
        layout: KeyLayout,
    ) -> Result<Self, Error> {
        check_prefix("--prefix", prefix)?;
        for state_prefix in &state_prefixes {
            check_prefix("--state-prefix", state_prefix)?;
            if state_prefix.contains('#') {
                return Err(Error::invalid_input(
                    format!("--state-prefix ({state_prefix:?})"),
                    "must not contain '#' (redstream-state 0.1 refused it)",
                ));
            }
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            state_prefixes,
            layout,
        })
    }
}

fn check_prefix(field: &str, prefix: &str) -> Result<(), Error> {
    if prefix.is_empty() {
        return Err(Error::invalid_input(
            field.to_owned(),
            "must not be empty: redstream 0.1 wrote no keys without a prefix",
        ));
    }
    keys::validate_prefix(field, prefix)
}

/// Runs `redstream migrate`.
pub async fn run(global: &GlobalArgs, args: MigrateArgs) -> CliResult<()> {
    let options = Options::new(&global.prefix, args.state_prefixes, args.layout)?;
    let mut conn = connect(&global.url).await?;
    refuse_cluster(&mut conn, &global.url).await?;
    let mut plan = plan::plan(&mut conn, &options).await?;
    if !args.apply {
        return print::plan(global.json, &plan);
    }
    if plan.is_blocked() {
        return Err(CliError::usage(print::refusal(&plan)));
    }
    match apply::apply(&mut conn, &plan).await? {
        Outcome::Applied { .. } => {
            plan.applied = true;
            print::plan(global.json, &plan)
        }
        Outcome::Refused(problems) => Err(CliError::usage(print::changed_since(&problems))),
    }
}

/// One connection to the node at `url`.
async fn connect(url: &str) -> CliResult<MultiplexedConnection> {
    let target = RedactedUrl(url).to_string();
    let client = redstream_core::open_client(url, &TlsOptions::default())?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    let conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|err| Error::from_redis("connect", target, err))?;
    Ok(conn)
}

/// Refuses a Redis Cluster node: `SCAN` would see one node's keys and the script's keys span
/// many slots.
async fn refuse_cluster(conn: &mut MultiplexedConnection, url: &str) -> CliResult<()> {
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(conn)
        .await
        .map_err(|err| Error::from_redis("INFO cluster", RedactedUrl(url).to_string(), err))?;
    if info.lines().any(|line| line.trim() == "cluster_enabled:1") {
        return Err(CliError::usage(format!(
            "{} is a Redis Cluster node: redstream migrate works on a single Redis node (the \
             0.1 layout had no cluster support); nothing was changed",
            RedactedUrl(url)
        )));
    }
    Ok(())
}
