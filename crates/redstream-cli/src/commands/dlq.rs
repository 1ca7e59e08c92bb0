//! `redstream dlq list|show|redrive|purge`: the dead-letter stream `<prefix>:dlq`
//! (`events:dlq`).
//!
//! `redrive` and `purge` change data: on a terminal they ask first, otherwise they need
//! `--yes` and refuse without it (before connecting).

use clap::{ArgGroup, Args, Subcommand};
use redstream_core::ErrorKind;
use redstream_transport::{DeadLetterEntry, RedisTransport, RedriveReport, TransportOptions};
use serde::Serialize;

use super::{check_can_confirm, confirm, output};
use crate::{CliError, CliResult, GlobalArgs, connect};

/// `redstream dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List the oldest dead letters.
    List {
        /// At most this many (at most 1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
        count: u16,
    },
    /// Show one dead letter with its event.
    Show {
        /// The dead letter's id in the dead-letter stream, e.g. `1700000000000-0`.
        id: String,
    },
    /// Publish dead letters again to the streams they came from and delete them from the
    /// dead-letter stream.
    Redrive(RedriveArgs),
    /// Delete every dead letter.
    Purge {
        /// Do not ask; required when stdin is not a terminal.
        #[arg(long)]
        yes: bool,
    },
}

/// Options of `redstream dlq redrive`: which dead letters.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["all", "ids", "event_type", "stream"])))]
pub struct RedriveArgs {
    /// Every dead letter present now.
    #[arg(long)]
    pub all: bool,
    /// These dead letters (repeat --id, or give several ids after it).
    #[arg(long = "id", value_name = "ID", num_args = 1..)]
    pub ids: Vec<String>,
    /// The dead letters of this event type.
    #[arg(long = "type", value_name = "EVENT_TYPE")]
    pub event_type: Option<String>,
    /// The dead letters that came from this stream: a full stream name (`events.raw`), or an
    /// event type for its stream, resolved as `redstream info` does.
    #[arg(long, value_name = "STREAM")]
    pub stream: Option<String>,
    /// Do not ask; required when stdin is not a terminal.
    #[arg(long)]
    pub yes: bool,
}

/// Runs a `dlq` subcommand.
pub async fn run(global: &GlobalArgs, command: DlqCommand) -> CliResult<()> {
    match command {
        DlqCommand::List { count } => list(global, usize::from(count)).await,
        DlqCommand::Show { id } => show(global, &id).await,
        DlqCommand::Redrive(args) => redrive(global, args).await,
        DlqCommand::Purge { yes } => purge(global, yes).await,
    }
}

/// One dead letter in `--json` output.
#[derive(Serialize)]
struct DeadLetter<'a> {
    id: &'a str,
    /// The `original_type` field: the type of the stream it came from.
    event_type: &'a str,
    stream: &'a str,
    entry_id: &'a str,
    group: &'a str,
    consumer: &'a str,
    deliveries: u32,
    error: &'a str,
    first_failure_ms: Option<u64>,
    last_failure_ms: Option<u64>,
    /// The envelope; null when it cannot be decoded.
    event: Option<&'a redstream_core::Event>,
    decode_error: Option<&'a str>,
    /// The stored `event` field when `event` is null; null otherwise.
    raw_event: Option<&'a str>,
}

impl<'a> DeadLetter<'a> {
    fn of(entry: &'a DeadLetterEntry) -> Self {
        Self {
            id: &entry.id,
            event_type: &entry.original_type,
            stream: &entry.stream,
            entry_id: &entry.entry_id,
            group: &entry.group,
            consumer: &entry.consumer,
            deliveries: entry.deliveries,
            error: &entry.error,
            first_failure_ms: output::unix_ms(entry.first_failure),
            last_failure_ms: output::unix_ms(entry.last_failure),
            event: entry.event.as_ref(),
            decode_error: entry.decode_error.as_deref(),
            raw_event: entry.event.is_none().then_some(entry.raw_event.as_str()),
        }
    }
}

/// Entries in the dead-letter stream now; 0 when it does not exist.
async fn total(transport: &RedisTransport) -> CliResult<u64> {
    let dlq = transport.names().dlq();
    match transport.stream_info(&dlq).await {
        Ok(summary) => Ok(summary.length),
        Err(err) if err.kind() == redstream_core::ErrorKind::NotFound => Ok(0),
        Err(err) => Err(err.into()),
    }
}

async fn list(global: &GlobalArgs, count: usize) -> CliResult<()> {
    let transport = connect::transport(global).await?;
    let total = total(&transport).await?;
    let entries = transport.dlq_entries(count).await?;
    if global.json {
        #[derive(Serialize)]
        struct List<'a> {
            stream: String,
            total: u64,
            dead_letters: Vec<DeadLetter<'a>>,
        }
        return output::json(&List {
            stream: transport.names().dlq(),
            total,
            dead_letters: entries.iter().map(DeadLetter::of).collect(),
        });
    }
    if entries.is_empty() {
        return output::line(format!("no dead letters in {}", transport.names().dlq()));
    }
    output::line(format!(
        "{} of {total} dead letter(s) in {}, oldest first",
        entries.len(),
        transport.names().dlq()
    ))?;
    let mut table = output::table(&["ID", "TYPE", "GROUP", "DELIVERIES", "LAST FAILURE", "ERROR"]);
    for entry in &entries {
        table.add_row(vec![
            entry.id.clone(),
            entry.original_type.clone(),
            entry.group.clone(),
            entry.deliveries.to_string(),
            output::time(entry.last_failure),
            output::cut(&entry.error, 60),
        ]);
    }
    output::print_table(&table)
}

async fn show(global: &GlobalArgs, id: &str) -> CliResult<()> {
    let transport = connect::transport(global).await?;
    let entry = transport.dlq_entry(id).await?.ok_or_else(|| {
        CliError::NotFound(format!(
            "no dead letter {id} in {}: `redstream dlq list` lists them",
            transport.names().dlq()
        ))
    })?;
    if global.json {
        return output::json(&DeadLetter::of(&entry));
    }
    output::print_table(&output::fields([
        ("id", entry.id.clone()),
        ("event type", entry.original_type.clone()),
        ("stream", entry.stream.clone()),
        ("entry id", entry.entry_id.clone()),
        ("group", entry.group.clone()),
        ("consumer", entry.consumer.clone()),
        ("deliveries", entry.deliveries.to_string()),
        ("first failure", output::time(entry.first_failure)),
        ("last failure", output::time(entry.last_failure)),
        ("error", entry.error.clone()),
    ]))?;
    match &entry.event {
        Some(event) => {
            let pretty = serde_json::to_string_pretty(event)
                .map_err(|err| CliError::io("writing JSON", std::io::Error::other(err)))?;
            output::line(format!("event:\n{pretty}"))
        }
        None => output::line(format!(
            "event (undecodable: {}):\n{}",
            entry.decode_error.as_deref().unwrap_or("unknown error"),
            entry.raw_event
        )),
    }
}

async fn redrive(global: &GlobalArgs, args: RedriveArgs) -> CliResult<()> {
    let what = match (&args.all, &args.event_type, &args.stream, args.ids.len()) {
        (true, ..) => "redrive every dead letter".to_owned(),
        (false, Some(event_type), ..) => format!("redrive the dead letters of type {event_type}"),
        (false, None, Some(stream), _) => format!("redrive the dead letters from {stream}"),
        (false, None, None, n) => format!("redrive {n} dead letter(s)"),
    };
    check_selection(&args)?;
    check_can_confirm(&what, args.yes)?;
    let transport = connect::transport(global).await?;
    if !args.yes {
        let total = total(&transport).await?;
        confirm(
            &format!(
                "{what} of {} ({total} in total) to the streams they came from?",
                transport.names().dlq()
            ),
            args.yes,
        )?;
    }
    let report = if args.all {
        transport.redrive_all().await
    } else if let Some(event_type) = &args.event_type {
        transport.redrive_type(event_type).await
    } else if let Some(stream) = &args.stream {
        let stream = transport.resolve_stream(stream).await?;
        let ids = from_stream(&transport, &stream).await?;
        if ids.is_empty() {
            Ok(RedriveReport::default())
        } else {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            transport.redrive_ids(&ids).await
        }
    } else {
        let ids: Vec<&str> = args.ids.iter().map(String::as_str).collect();
        transport.redrive_ids(&ids).await
    };
    let report = report.map_err(|err| redrive_failed(&transport, err))?;
    print_report(global, &report)?;
    // Dead letters asked for by id that did not move: the command did not do what it was told,
    // as `dlq show` of a missing id.
    if !args.ids.is_empty() && !report.skipped.is_empty() {
        let ids: Vec<&str> = report.skipped.iter().map(|s| s.id.as_str()).collect();
        return Err(CliError::NotFound(format!(
            "{} of the {} dead letter(s) asked for not redriven: {} (see above why)",
            ids.len(),
            args.ids.len(),
            ids.join(", ")
        )));
    }
    Ok(())
}

/// The ids of the dead letters present now whose recorded stream (their `stream` field) is
/// `stream`, oldest first: the dead-letter stream read in pages of 1000.
async fn from_stream(transport: &RedisTransport, stream: &str) -> CliResult<Vec<String>> {
    const PAGE: usize = RedisTransport::MAX_INSPECT_COUNT;
    let dlq = transport.names().dlq();
    let mut ids = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let entries = match transport.read_range(&dlq, &start, "+", PAGE, false).await {
            Ok(entries) => entries,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(ids),
            Err(err) => return Err(err.into()),
        };
        let full = entries.len() == PAGE;
        for entry in &entries {
            if entry
                .fields
                .iter()
                .any(|(name, value)| name == "stream" && value == stream)
            {
                ids.push(entry.id.clone());
            }
        }
        match entries.last() {
            Some(last) if full => start = format!("({}", last.id),
            _ => return Ok(ids),
        }
    }
}

/// Refuses a malformed `--type` or `--id` before connecting or asking, as the transport would
/// after (having redriven nothing).
fn check_selection(args: &RedriveArgs) -> CliResult<()> {
    if let Some(event_type) = &args.event_type {
        redstream_transport::validate_event_type(event_type, &TransportOptions::default().limits)?;
    }
    let is_entry_id = |id: &str| {
        id.split_once('-').is_some_and(|(ms, seq)| {
            [ms, seq].iter().all(|n| {
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && n.parse::<u64>().is_ok()
            })
        })
    };
    match args.ids.iter().find(|id| !is_entry_id(id)) {
        Some(id) => Err(CliError::usage(format!(
            "invalid dead-letter entry id {id:?}: expected a stream entry id such as \
             1700000000000-0 (`redstream dlq list` shows them)"
        ))),
        None => Ok(()),
    }
}

/// A redrive that failed midway: each dead letter moves atomically, so those before the failure
/// are redriven and the rest are still dead letters; say so, and how to carry on.
fn redrive_failed(transport: &RedisTransport, err: redstream_core::Error) -> CliError {
    if err.kind() == ErrorKind::InvalidInput {
        return err.into();
    }
    let dlq = transport.names().dlq();
    CliError::Redstream(redstream_core::Error::backend(
        err.kind(),
        "redrive",
        &dlq,
        format!(
            "{err}. Each dead letter is moved atomically: those redriven before the failure are \
             gone from {dlq}, every other one is still there; `redstream dlq list` shows what is \
             left, and running the command again redrives it"
        ),
    ))
}

fn print_report(global: &GlobalArgs, report: &RedriveReport) -> CliResult<()> {
    if global.json {
        #[derive(Serialize)]
        struct Skipped<'a> {
            id: &'a str,
            reason: &'a str,
        }
        #[derive(Serialize)]
        struct Report<'a> {
            redriven: usize,
            skipped: Vec<Skipped<'a>>,
        }
        return output::json(&Report {
            redriven: report.redriven,
            skipped: report
                .skipped
                .iter()
                .map(|s| Skipped {
                    id: &s.id,
                    reason: &s.reason,
                })
                .collect(),
        });
    }
    output::line(format!(
        "redriven {} dead letter(s); {} left in place",
        report.redriven,
        report.skipped.len()
    ))?;
    if report.skipped.is_empty() {
        return Ok(());
    }
    let mut table = output::table(&["SKIPPED ID", "REASON"]);
    for skipped in &report.skipped {
        table.add_row(vec![skipped.id.as_str(), skipped.reason.as_str()]);
    }
    output::print_table(&table)
}

async fn purge(global: &GlobalArgs, yes: bool) -> CliResult<()> {
    check_can_confirm("purge the dead-letter stream", yes)?;
    let transport = connect::transport(global).await?;
    if !yes {
        let total = total(&transport).await?;
        confirm(
            &format!(
                "delete all {total} dead letter(s) of {}? This cannot be undone.",
                transport.names().dlq()
            ),
            yes,
        )?;
    }
    let purged = transport.dlq_purge().await?;
    if global.json {
        #[derive(Serialize)]
        struct Purged {
            purged: u64,
        }
        return output::json(&Purged { purged });
    }
    output::line(format!(
        "purged {purged} dead letter(s) from {}",
        transport.names().dlq()
    ))
}
