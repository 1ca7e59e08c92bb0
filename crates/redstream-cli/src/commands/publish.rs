//! `redstream publish <type> <json>` and `redstream publish <type> --file events.jsonl`.
//!
//! Every payload is parsed and checked (type, metadata, encoded size) before anything is sent,
//! so a bad line fails the command with its line number and nothing published. A file is then
//! published in batches, each all or nothing (`publish_batch`): a failed batch wrote nothing
//! (or, when its reply was lost, either everything or nothing), and the error says so and how
//! many events the batches before it published.
//!
//! `--stream <name>` writes to that stream instead of the type's (`events.raw` rather than
//! `events:order.created`), one `XADD` per event in input order (`publish_to`); a failure stops
//! there, and the error says how many were published before it.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use clap::Args;
use redstream_core::{Error, ErrorKind, Event, EventMetadata, Priority, wire};
use redstream_transport::TransportOptions;
use serde::Serialize;

use super::output;
use crate::{CliError, CliResult, GlobalArgs, connect};

/// Options of `redstream publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The event type, e.g. `order.created`. The events go to its stream,
    /// `<prefix>:<event type>`, unless --stream names another.
    pub event_type: String,
    /// Publish to this stream, named in full (e.g. `events.raw`), instead of the type's.
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
    /// The payload: one JSON value, e.g. '{"order_id":"12345"}'. Give this or --file.
    #[arg(
        required_unless_present = "file",
        conflicts_with = "file",
        allow_hyphen_values = true
    )]
    pub payload: Option<String>,
    /// A JSON-lines file, one payload per line (blank lines are skipped); `-` reads stdin.
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// The events' priority: low, normal, high or critical. A field of the event: every
    /// priority goes to the same stream, and consumers hand urgent events they hold first.
    #[arg(long, default_value = "normal", value_parser = parse_priority)]
    pub priority: Priority,
    /// The events' `metadata.source`, e.g. the name of the publishing service.
    #[arg(long)]
    pub source: Option<String>,
    /// The events' `metadata.correlation_id`.
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// Events per batch (each written all or nothing) when publishing a file.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..))]
    pub batch_size: u16,
}

fn parse_priority(text: &str) -> Result<Priority, String> {
    text.parse::<Priority>().map_err(|err| err.to_string())
}

/// What `publish --json` prints.
#[derive(Serialize)]
struct Published<'a> {
    stream: &'a str,
    published: usize,
    /// Stream entry ids, in input order.
    ids: &'a [String],
    /// Event ids (UUIDv7), in the same order.
    event_ids: Vec<&'a str>,
}

/// One payload to publish, and where it came from.
struct Line {
    number: usize,
    event: Event,
}

/// Publishes and prints the ids.
pub async fn run(global: &GlobalArgs, args: PublishArgs) -> CliResult<()> {
    // The transport's limits, so that what passes here passes when published.
    let limits = TransportOptions::default().limits;
    redstream_transport::validate_event_type(&args.event_type, &limits)?;
    if let Some(stream) = &args.stream {
        redstream_core::keys::validate_stream_name(stream)?;
    }
    let (source, lines) = match (&args.payload, &args.file) {
        (Some(payload), _) => (
            "the payload argument".to_owned(),
            vec![(1, payload.clone())],
        ),
        (None, Some(path)) => read_lines(path)?,
        (None, None) => return Err(CliError::usage("give a JSON payload or --file")),
    };
    let mut events = Vec::with_capacity(lines.len());
    for (number, text) in lines {
        let at = |what: String| {
            if args.file.is_some() {
                CliError::usage(format!("{source} line {number}: {what}"))
            } else {
                CliError::usage(format!("{source}: {what}"))
            }
        };
        let payload: serde_json::Value =
            serde_json::from_str(&text).map_err(|err| at(json_error(&err)))?;
        let event = build_event(&args, payload);
        wire::encode(&event, &limits).map_err(|err| at(err.to_string()))?;
        events.push(Line { number, event });
    }
    if events.is_empty() {
        return Err(CliError::usage(format!("{source} holds no payloads")));
    }

    let transport = connect::transport(global).await?;
    let mut ids = Vec::with_capacity(events.len());
    let stream = if let Some(stream) = &args.stream {
        for line in &events {
            match transport.publish_to(stream, line.event.clone()).await {
                Ok(id) => ids.push(id),
                Err(err) => return Err(one_failed(&source, line, ids.len(), &err)),
            }
        }
        stream.clone()
    } else {
        for batch in events.chunks(usize::from(args.batch_size)) {
            let published = transport
                .publish_batch(batch.iter().map(|line| line.event.clone()).collect())
                .await;
            match published {
                Ok(batch_ids) => ids.extend(batch_ids),
                Err(err) => return Err(batch_failed(&source, batch, ids.len(), &err)),
            }
        }
        transport.names().stream(&args.event_type)
    };

    let event_ids: Vec<&str> = events.iter().map(|l| l.event.id().as_str()).collect();
    if global.json {
        return output::json(&Published {
            stream: &stream,
            published: ids.len(),
            ids: &ids,
            event_ids,
        });
    }
    output::line(format!("published {} event(s) to {stream}", ids.len()))?;
    let mut table = output::table(&["ENTRY ID", "EVENT ID"]);
    for (id, event_id) in ids.iter().zip(event_ids) {
        table.add_row(vec![id.as_str(), event_id]);
    }
    output::print_table(&table)
}

/// serde_json's message with the position as a column of the line (its "line 1" is the line's
/// own first line, which would read as a contradiction next to the file's line number).
fn json_error(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let position = format!(" at line {} column {}", err.line(), err.column());
    match text.strip_suffix(&position) {
        Some(message) if err.line() == 1 => {
            format!("invalid JSON at column {}: {message}", err.column())
        }
        _ => format!("invalid JSON: {text}"),
    }
}

fn build_event(args: &PublishArgs, payload: serde_json::Value) -> Event {
    let mut event = Event::new(&args.event_type, payload, EventMetadata::default())
        .with_priority(args.priority);
    if let Some(source) = &args.source {
        event = event.with_source(source);
    }
    if let Some(id) = &args.correlation_id {
        event = event.with_correlation_id(id);
    }
    event
}

/// The error of a failed batch: which lines, what became of them, and how many events went out
/// before it.
fn batch_failed(source: &str, batch: &[Line], done: usize, err: &Error) -> CliError {
    let (first, last) = (
        batch.first().map_or(0, |l| l.number),
        batch.last().map_or(0, |l| l.number),
    );
    // A transaction is all or nothing, but after a lost connection or a timeout the EXEC may
    // have run without its reply arriving: say so rather than claim nothing was written.
    let this_batch = match err.kind() {
        ErrorKind::Connection | ErrorKind::Timeout => {
            "its reply was lost, so this batch was written either in full or not at all: check \
             the stream before publishing these lines again"
        }
        _ => "this batch wrote nothing",
    };
    CliError::Redstream(Error::backend(
        err.kind(),
        "publishing",
        format!("lines {first}-{last} of {source}"),
        format!("{err}; {this_batch}; the {done} event(s) of the batches before it were published"),
    ))
}

/// The error of a failed `--stream` publish: which line, and how many went out before it.
fn one_failed(source: &str, line: &Line, done: usize, err: &Error) -> CliError {
    let this_one = match err.kind() {
        ErrorKind::Connection | ErrorKind::Timeout => {
            "its reply was lost, so it may have been written: check the stream before publishing \
             it again"
        }
        _ => "it was not written",
    };
    CliError::Redstream(Error::backend(
        err.kind(),
        "publishing",
        format!("line {} of {source}", line.number),
        format!("{err}; {this_one}; the {done} event(s) before it were published"),
    ))
}

/// The non-blank lines of a file or stdin, with their 1-based line numbers, and a name for
/// messages.
fn read_lines(path: &Path) -> CliResult<(String, Vec<(usize, String)>)> {
    let (name, reader): (String, Box<dyn BufRead>) = if path == Path::new("-") {
        ("stdin".to_owned(), Box::new(std::io::stdin().lock()))
    } else {
        let file = std::fs::File::open(path)
            .map_err(|err| CliError::io(format!("opening {}", path.display()), err))?;
        (
            path.display().to_string(),
            Box::new(std::io::BufReader::new(file)),
        )
    };
    let mut lines = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|err| match err.kind() {
            std::io::ErrorKind::InvalidData => {
                CliError::usage(format!("{name} line {number}: not UTF-8 text"))
            }
            _ => CliError::io(format!("reading {name}"), err),
        })?;
        if !line.trim().is_empty() {
            lines.push((number, line));
        }
    }
    Ok((name, lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> Vec<Line> {
        (3..=5)
            .map(|number| Line {
                number,
                event: Event::new("t", serde_json::json!({}), EventMetadata::default()),
            })
            .collect()
    }

    #[test]
    fn a_failed_batch_says_what_became_of_it() {
        let failed = |kind| {
            let err = Error::backend(kind, "transaction of XADDs", "events:order.created", "boom");
            batch_failed("events.jsonl", &lines(), 500, &err).to_string()
        };
        let refused = failed(ErrorKind::OutOfMemory);
        assert!(refused.contains("lines 3-5 of events.jsonl"), "{refused}");
        assert!(refused.contains("this batch wrote nothing"), "{refused}");
        assert!(refused.contains("the 500 event(s)"), "{refused}");
        for kind in [ErrorKind::Timeout, ErrorKind::Connection] {
            let lost = failed(kind);
            assert!(lost.contains("either in full or not at all"), "{lost}");
            assert!(!lost.contains("wrote nothing"), "{lost}");
        }
    }
}
