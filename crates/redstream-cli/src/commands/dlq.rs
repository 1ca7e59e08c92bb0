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
    /// List dead letters, newest first, a page at a time; filter by type, group and error.
    List(ListArgs),
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

/// Options of `redstream dlq list`: which page, which dead letters.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// At most this many (at most 1000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub count: u16,
    /// Only dead letters older than this one (an id in the dead-letter stream): the next page
    /// of a listing, whose last line gives the command.
    #[arg(long, value_name = "ID", conflicts_with = "after")]
    pub before: Option<String>,
    /// Only dead letters newer than this one: the page before, going back up.
    #[arg(long, value_name = "ID")]
    pub after: Option<String>,
    /// Print the oldest first, and start at the oldest when no --before or --after is given.
    #[arg(long)]
    pub oldest_first: bool,
    /// Which dead letters.
    #[command(flatten)]
    pub filter: Filter,
}

/// Filters on dead letters; given together, a dead letter must match every one.
#[derive(Debug, Clone, Default, Args)]
pub struct Filter {
    /// Only the dead letters of this event type (their `original_type`, or their event's type).
    #[arg(long = "type", value_name = "EVENT_TYPE")]
    pub event_type: Option<String>,
    /// Only the dead letters a consumer of this group gave up on.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Only the dead letters whose error contains this text (ignoring ASCII case).
    #[arg(long = "error", value_name = "TEXT")]
    pub error: Option<String>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.event_type.is_none() && self.group.is_none() && self.error.is_none()
    }

    /// Whether `entry` passes every filter given (and came from `stream`, when given).
    fn matches(&self, entry: &DeadLetterEntry, stream: Option<&str>) -> bool {
        let of_type = |t: &String| {
            entry.original_type == *t || entry.event.as_ref().is_some_and(|e| e.event_type() == t)
        };
        self.event_type.as_ref().is_none_or(of_type)
            && self.group.as_ref().is_none_or(|g| entry.group == *g)
            && self.error.as_ref().is_none_or(|text| {
                entry
                    .error
                    .to_ascii_lowercase()
                    .contains(&text.to_ascii_lowercase())
            })
            && stream.is_none_or(|s| entry.stream == s)
    }

    /// The filters as command-line options, for the next page's command.
    fn options(&self) -> String {
        let mut text = String::new();
        for (flag, value) in [
            ("--type", &self.event_type),
            ("--group", &self.group),
            ("--error", &self.error),
        ] {
            if let Some(value) = value {
                text.push_str(&format!(" {flag} {}", shell_word(value)));
            }
        }
        text
    }

    /// What the filters select, for people: ` of type a in group g with "timeout" in the error`.
    fn describe(&self) -> String {
        let mut text = String::new();
        if let Some(t) = &self.event_type {
            text.push_str(&format!(" of type {t}"));
        }
        if let Some(g) = &self.group {
            text.push_str(&format!(" of group {g}"));
        }
        if let Some(e) = &self.error {
            text.push_str(&format!(" with {e:?} in the error"));
        }
        text
    }
}

/// `word` as one shell word: as it is when it is plain, single-quoted otherwise.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/@%+=,-".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Options of `redstream dlq redrive`: which dead letters. The filters (`--type`, `--stream`,
/// `--group`, `--error`) combine: a dead letter must match each one given.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("which")
        .required(true)
        .multiple(true)
        .args(["all", "ids", "event_type", "stream", "group", "error"])
))]
pub struct RedriveArgs {
    /// Every dead letter present now.
    #[arg(long, conflicts_with_all = ["ids", "event_type", "stream", "group", "error"])]
    pub all: bool,
    /// These dead letters (repeat --id, or give several ids after it).
    #[arg(long = "id", value_name = "ID", num_args = 1.., conflicts_with_all = ["event_type", "stream", "group", "error"])]
    pub ids: Vec<String>,
    /// The dead letters that came from this stream: a full stream name (`events.raw`), or an
    /// event type for its stream, resolved as `redstream info` does.
    #[arg(long, value_name = "STREAM")]
    pub stream: Option<String>,
    /// Which dead letters, by type, group and error.
    #[command(flatten)]
    pub filter: Filter,
    /// Do not ask; required when stdin is not a terminal.
    #[arg(long)]
    pub yes: bool,
}

/// Runs a `dlq` subcommand.
pub async fn run(global: &GlobalArgs, command: DlqCommand) -> CliResult<()> {
    match command {
        DlqCommand::List(args) => list(global, args).await,
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

async fn list(global: &GlobalArgs, args: ListArgs) -> CliResult<()> {
    let ListArgs {
        count,
        before,
        after,
        oldest_first,
        filter,
    } = args;
    check_filter(&filter)?;
    for id in before.iter().chain(&after) {
        check_entry_id(id)?;
    }
    let transport = connect::transport(global).await?;
    let total = total(&transport).await?;
    // The reading goes away from the cursor; without one it starts at the end shown first.
    let newest_first = match (&before, &after) {
        (Some(_), _) => true,
        (_, Some(_)) => false,
        _ => !oldest_first,
    };
    let from = before.as_deref().or(after.as_deref());
    let (mut entries, more) = transport
        .dlq_page(newest_first, from, usize::from(count), |entry| {
            filter.matches(entry, None)
        })
        .await?;
    // Cursors: the page past the last entry read when there is more that way, and the page
    // back towards the cursor given.
    let (far, near) = (entries.last(), entries.first());
    let onward = more.then(|| far.map(|e| e.id.clone())).flatten();
    let back = from.and(near.map(|e| e.id.clone()));
    let (older, newer) = if newest_first {
        (onward, back)
    } else {
        (back, onward)
    };
    if newest_first == oldest_first {
        entries.reverse();
    }
    if global.json {
        #[derive(Serialize)]
        struct List<'a> {
            stream: String,
            total: u64,
            order: &'static str,
            dead_letters: Vec<DeadLetter<'a>>,
            /// The id to pass as --before for the next older page; null when none is left.
            next_before: Option<String>,
            /// The id to pass as --after for the next newer page; null when not known to exist.
            next_after: Option<String>,
        }
        return output::json(&List {
            stream: transport.names().dlq(),
            total,
            order: if oldest_first {
                "oldest_first"
            } else {
                "newest_first"
            },
            dead_letters: entries.iter().map(DeadLetter::of).collect(),
            next_before: older,
            next_after: newer,
        });
    }
    let dlq = transport.names().dlq();
    let which = filter.describe();
    let page = if from.is_some() { " on this page" } else { "" };
    if entries.is_empty() {
        output::line(format!(
            "no dead letters{which}{page} in {dlq} ({total} in total)"
        ))?;
    } else {
        output::line(format!(
            "{} dead letter(s){which} of {total} in {dlq}, {} first",
            entries.len(),
            if oldest_first { "oldest" } else { "newest" }
        ))?;
        let mut table =
            output::table(&["ID", "TYPE", "GROUP", "DELIVERIES", "LAST FAILURE", "ERROR"]);
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
        output::print_table(&table)?;
    }
    let mut command = "redstream dlq list".to_owned();
    if count != 20 {
        command.push_str(&format!(" --count {count}"));
    }
    if oldest_first {
        command.push_str(" --oldest-first");
    }
    command.push_str(&filter.options());
    if let Some(id) = older {
        output::line(format!("older: {command} --before {id}"))?;
    }
    if let Some(id) = newer {
        output::line(format!("newer: {command} --after {id}"))?;
    }
    Ok(())
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

/// Whether a redrive can move this dead letter: an event, or the fields of a raw entry (not a
/// preview of one). The rest stay, named in the report.
fn movable(entry: &DeadLetterEntry) -> bool {
    entry.event.is_some() || (entry.raw && entry.field_bytes.is_some())
}

async fn redrive(global: &GlobalArgs, args: RedriveArgs) -> CliResult<()> {
    let filtered = args.stream.is_some() || !args.filter.is_empty();
    let what = if args.all {
        "redrive every dead letter".to_owned()
    } else if filtered {
        let from = args
            .stream
            .as_ref()
            .map(|s| format!(" from {s}"))
            .unwrap_or_default();
        format!("redrive the dead letters{}{from}", args.filter.describe())
    } else {
        format!("redrive {} dead letter(s)", args.ids.len())
    };
    check_selection(&args)?;
    check_can_confirm(&what, args.yes)?;
    let transport = connect::transport(global).await?;
    let dlq = transport.names().dlq();
    let stream = match &args.stream {
        Some(stream) => Some(transport.resolve_stream(stream).await?),
        None => None,
    };
    // The dead letters a filter selects, read once: what the question counts is what moves.
    // Each is held as its id and whether it can move, not whole: a filter may match millions.
    let selected = if filtered || (args.all && !args.yes) {
        let filter = &args.filter;
        let stream = stream.as_deref();
        Some(
            transport
                .dlq_select_map(|entry| {
                    filter
                        .matches(&entry, stream)
                        .then(|| (movable(&entry), entry.id))
                })
                .await?,
        )
    } else {
        None
    };
    if !args.yes {
        let total = total(&transport).await?;
        let (moving, staying) = match &selected {
            Some(entries) => {
                let moving = entries.iter().filter(|(can_move, _)| *can_move).count();
                (moving, entries.len() - moving)
            }
            None => {
                let mut moving = 0;
                for id in &args.ids {
                    if transport.dlq_entry(id).await?.as_ref().is_some_and(movable) {
                        moving += 1;
                    }
                }
                (moving, 0)
            }
        };
        let staying = if staying == 0 {
            String::new()
        } else {
            format!("; {staying} more match but cannot be redriven (undecodable or cut) and stay")
        };
        confirm(
            &format!(
                "{what}: move {moving} of the {total} dead letter(s) in {dlq} to the streams they \
                 came from{staying}?"
            ),
            args.yes,
        )?;
    }
    let report = if args.all {
        transport.redrive_all().await
    } else if let Some(entries) = &selected {
        if entries.is_empty() {
            Ok(RedriveReport::default())
        } else {
            let ids: Vec<&str> = entries.iter().map(|(_, id)| id.as_str()).collect();
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

/// Refuses a malformed `--type` filter before connecting.
fn check_filter(filter: &Filter) -> CliResult<()> {
    if let Some(event_type) = &filter.event_type {
        redstream_transport::validate_event_type(event_type, &TransportOptions::default().limits)?;
    }
    Ok(())
}

/// Refuses an id that is not a stream entry id, before connecting.
fn check_entry_id(id: &str) -> CliResult<()> {
    let is_entry_id = id.split_once('-').is_some_and(|(ms, seq)| {
        [ms, seq].iter().all(|n| {
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && n.parse::<u64>().is_ok()
        })
    });
    if is_entry_id {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "invalid dead-letter entry id {id:?}: expected a stream entry id such as \
             1700000000000-0 (`redstream dlq list` shows them)"
        )))
    }
}

/// Refuses a malformed `--type` or `--id` before connecting or asking, as the transport would
/// after (having redriven nothing).
fn check_selection(args: &RedriveArgs) -> CliResult<()> {
    check_filter(&args.filter)?;
    args.ids.iter().try_for_each(|id| check_entry_id(id))
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
