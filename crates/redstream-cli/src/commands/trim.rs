//! `redstream trim <stream> --maxlen N | --minid ID`: deletes a stream's oldest entries, and
//! refuses (nothing deleted) when some of them are still pending in a consumer group, unless
//! `--force`. It changes data, so it asks first on a terminal and otherwise needs `--yes`.

use clap::{ArgGroup, Args};
use redstream_transport::{Trim, TrimOutcome};
use serde::Serialize;

use super::{check_can_confirm, confirm, not_found, output};
use crate::{CliError, CliResult, GlobalArgs, connect};

/// Options of `redstream trim`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("keep").required(true).args(["maxlen", "minid"])))]
pub struct TrimArgs {
    /// The stream: a full stream name (`events.raw`), an event type (`order.created`), or `dlq`.
    pub stream: String,
    /// Keep the newest N entries (exact `XTRIM ... MAXLEN N`).
    #[arg(long, value_name = "N")]
    pub maxlen: Option<u64>,
    /// Keep the entries whose id is at least ID (`XTRIM ... MINID ID`): an entry id or a
    /// millisecond time.
    #[arg(long, value_name = "ID")]
    pub minid: Option<String>,
    /// Trim even entries still pending in a consumer group (their consumers can then neither
    /// read nor claim them).
    #[arg(long)]
    pub force: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// `redstream trim`.
pub async fn run(global: &GlobalArgs, args: TrimArgs) -> CliResult<()> {
    let keep = match (args.maxlen, &args.minid) {
        (Some(n), _) => Trim::MaxLen(n),
        (None, Some(id)) => Trim::MinId(id.clone()),
        (None, None) => return Err(CliError::usage("give --maxlen or --minid")),
    };
    let what = match &keep {
        Trim::MaxLen(n) => format!("keep the newest {n}"),
        Trim::MinId(id) => format!("keep the entries from {id} on"),
        _ => "trim".to_owned(),
    };
    check_can_confirm(&format!("trim {}", args.stream), args.yes)?;
    let transport = connect::transport(global).await?;
    let key = transport.resolve_stream(&args.stream).await?;
    let length = transport.stream_info(&key).await.map_err(not_found)?.length;
    confirm(
        &format!(
            "Delete the oldest entries of {key} ({length} now) to {what}{}?",
            if args.force {
                ", pending ones included"
            } else {
                ""
            }
        ),
        args.yes,
    )?;
    match transport
        .trim(&key, &keep, args.force)
        .await
        .map_err(not_found)?
    {
        TrimOutcome::Trimmed { removed } => {
            if global.json {
                #[derive(Serialize)]
                struct Trimmed<'a> {
                    stream: &'a str,
                    removed: u64,
                }
                return output::json(&Trimmed {
                    stream: &key,
                    removed,
                });
            }
            output::line(format!(
                "removed {removed} entr{} from {key}",
                if removed == 1 { "y" } else { "ies" }
            ))
        }
        TrimOutcome::Refused { groups } => {
            let list: Vec<String> = groups
                .iter()
                .map(|(group, n)| {
                    let n = if *n >= 1000 {
                        "1000 or more".to_owned()
                    } else {
                        n.to_string()
                    };
                    format!("{group} ({n} pending)")
                })
                .collect();
            Err(CliError::usage(format!(
                "refusing to trim {key}: entries it would delete are still pending in group{} {}; \
                 acknowledge or handle them first (`redstream pending {key} <group>` lists \
                 them), or pass --force; nothing was deleted",
                if groups.len() == 1 { "" } else { "s" },
                list.join(", ")
            )))
        }
        _ => Ok(()),
    }
}
