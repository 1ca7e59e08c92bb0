//! Writing results to stdout: tables for people, JSON for scripts, and the formatting of
//! durations and times in tables.
//!
//! Everything goes through a locked `stdout` with `writeln!` rather than `println!` (so no
//! `clippy::print_stdout` allowance is needed): a closed pipe (`redstream tail | head`) is then
//! an error the command stops on (and `commands::run` treats as a normal end), not a panic.
//! Messages for people (`following ...`, prompts) go to stderr through [`note`], which never
//! panics either (`eprintln!` does when stderr is a closed pipe).

use std::fmt::Display;
use std::io::Write;
use std::time::{Duration, SystemTime};

use comfy_table::{ColumnConstraint, ContentArrangement, Table, Width, presets};
use serde::Serialize;

use crate::{CliError, CliResult};

fn stdout_error(err: std::io::Error) -> CliError {
    CliError::io("writing to stdout", err)
}

/// Writes `value` as one line of compact JSON.
pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> CliResult<()> {
    let text = serde_json::to_string(value)
        .map_err(|err| CliError::io("writing JSON", std::io::Error::other(err)))?;
    line(text)
}

/// Writes one line.
pub(crate) fn line(text: impl Display) -> CliResult<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Writes `text` as it is, with no newline added.
pub(crate) fn text(text: &str) -> CliResult<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Writes one line to stderr: a message for the person at the terminal, not data. A failure to
/// write it is ignored (there is nowhere left to report it).
pub(crate) fn note(text: impl Display) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}").and_then(|()| err.flush());
}

/// An empty table with this header, in the house style.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    table
}

/// A two-column table of names and values, for one object.
pub(crate) fn fields<'a>(rows: impl IntoIterator<Item = (&'a str, String)>) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    for (name, value) in rows {
        table.add_row(vec![name.to_owned(), value]);
    }
    table
}

/// The width tables must fit: `COLUMNS` when it is set (as `ls` reads it), otherwise the
/// terminal's when stdout is one; none for a pipe or a file, whose lines are never wrapped.
fn width() -> Option<u16> {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|columns| columns.trim().parse::<u16>().ok())
        .filter(|&columns| columns > 0)
        .or_else(|| {
            std::io::IsTerminal::is_terminal(&std::io::stdout())
                .then(|| Table::new().width())
                .flatten()
        })
}

/// Writes a table that fits the width ([`width`]). Cells wrap between words, never inside one,
/// so ids, names and timestamps stay whole (each column is at least as wide as its longest
/// word); when the table cannot fit that way, each row is printed as a block of `NAME: value`
/// lines instead (stacked), one block per row.
pub(crate) fn print_table(table: &Table) -> CliResult<()> {
    let Some(width) = width() else {
        let mut table = table.clone();
        table.set_content_arrangement(ContentArrangement::Disabled);
        return line(table);
    };
    let mut fitted = table.clone();
    fitted.set_width(width).force_no_tty();
    let columns = fitted.column_count();
    for index in 0..columns {
        let word = fitted
            .column_cells_with_header_iter(index)
            .flatten()
            .flat_map(|cell| {
                cell.content()
                    .split_whitespace()
                    .map(|w| w.chars().count())
                    .max()
            })
            .max()
            .unwrap_or(0);
        // The boundary counts the cell's padding, one space on each side.
        let word = u16::try_from(word + 2).unwrap_or(u16::MAX);
        if let Some(column) = fitted.column_mut(index) {
            column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(word)));
        }
    }
    let rendered = fitted.to_string();
    if rendered
        .lines()
        .all(|l| l.chars().count() <= usize::from(width))
    {
        return line(rendered);
    }
    line(stacked(table))
}

/// A table as blocks of `NAME: value` lines, one block per row, blank lines between blocks; a
/// table without a header (a [`fields`] table) as `name: value` lines.
fn stacked(table: &Table) -> String {
    let names: Vec<String> = table
        .header()
        .map(|header| header.cell_iter().map(comfy_table::Cell::content).collect())
        .unwrap_or_default();
    let mut blocks = Vec::new();
    for row in table.row_iter() {
        let cells: Vec<String> = row.cell_iter().map(comfy_table::Cell::content).collect();
        let block = if names.is_empty() {
            // name, value
            cells.join(": ")
        } else {
            names
                .iter()
                .zip(&cells)
                .map(|(name, value)| format!("{name}: {value}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        blocks.push(block);
    }
    let separator = if names.is_empty() { "\n" } else { "\n\n" };
    blocks.join(separator)
}

/// A duration for people, to the millisecond: `1h 2m 3s 400ms`.
pub(crate) fn duration(duration: Duration) -> String {
    let rounded = Duration::from_millis(super::millis(duration));
    if rounded.is_zero() {
        return "0s".to_owned();
    }
    humantime::format_duration(rounded).to_string()
}

/// Milliseconds as a duration, `-` for none.
pub(crate) fn ms(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| duration(Duration::from_millis(ms)))
}

/// Seconds as a duration, `-` for none.
pub(crate) fn secs(secs: Option<f64>) -> String {
    secs.and_then(|s| Duration::try_from_secs_f64(s).ok())
        .map_or_else(|| "-".to_owned(), duration)
}

/// A time as RFC 3339 with milliseconds, UTC; `-` for none.
pub(crate) fn time(time: Option<SystemTime>) -> String {
    time.map_or_else(
        || "-".to_owned(),
        |t| humantime::format_rfc3339_millis(t).to_string(),
    )
}

/// Milliseconds since the Unix epoch, for JSON.
pub(crate) fn unix_ms(time: Option<SystemTime>) -> Option<u64> {
    time.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(super::millis)
}

/// A value or `-`.
pub(crate) fn or_dash<T: Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `text` cut to `max` characters, with `…` when cut.
pub(crate) fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Bytes for people, as Redis's `used_memory_human` writes them: `512B`, `1.17M`, `2.00G`.
pub(crate) fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    #[allow(clippy::cast_precision_loss)] // two decimals are shown
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_read_like_redis() {
        use super::bytes;
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(1023), "1023B");
        assert_eq!(bytes(1024), "1.00K");
        assert_eq!(bytes(1_228_800), "1.17M");
        assert_eq!(bytes(2 * 1024 * 1024 * 1024), "2.00G");
        assert_eq!(bytes(u64::MAX), "16.00E");
    }
}
