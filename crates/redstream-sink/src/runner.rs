//! A runnable pipeline: JSON lines from a file or stdin, through a [`RedisSink`], with the
//! source checkpoint kept in a file. `redstream sink --config sink.yaml` runs it.
//!
//! # Resuming without losing or duplicating a line
//!
//! The source position of a batch is the byte offset of the input just after its last line,
//! with a fingerprint of the bytes it covers (see [Positions](#positions)). The sink writes it
//! into its progress key in the same script as the batch, and the checkpoint file is
//! rewritten (write, fsync, rename) once the batch is acknowledged. On start the runner
//! resumes from the larger of the two offsets:
//!
//! - killed after the batch's script ran and before the checkpoint file was renamed: the
//!   progress key is one batch ahead and wins, so that batch is not written again;
//! - killed before it ran: both agree, and the batch is read and written again.
//!
//! With `durability`, a progress key ahead of the checkpoint file may record a batch whose
//! `WAIT` never returned: the runner confirms it with [`RedisSink::confirm_recorded`] before it
//! moves the checkpoint file there, and stops with `NotDurable` when the replicas do not have
//! it. With `exactly_once` off the progress key is not read: the checkpoint file alone counts.
//!
//! A last line without a newline is written as complete when the input ends there; an input
//! that then grows would continue it, so the next run refuses it before writing anything.
//!
//! When the progress key is gone (deleted, or a Redis that lost its data) the run resumes from
//! the checkpoint file alone, and does not write again the lines before it, even if their
//! entries were lost with the key.
//!
//! # Positions
//!
//! An offset alone is not tied to the input: an input replaced or rotated by a file at least
//! as long would have its first bytes skipped without a word. So a position is
//! `<offset>:<len>:<fnv1a64>`: the `len` bytes of the input just before `offset` (the lines
//! of the batch, blank and skipped ones included) and their 64-bit FNV-1a hash, 16 hex
//! digits. The checkpoint file holds the same as `offset` and `tail: {len, fnv1a64}`. Before
//! writing anything, a run reads those bytes of its input again, for the checkpoint file and
//! for the progress key, and stops with an [`ErrorKind::InvalidInput`] error naming the input,
//! the offset and the record that does not match when they differ. The check covers the last
//! batch's bytes, not the whole input: an input rewritten before them, or replaced by one that
//! holds the same bytes at the same place, is not noticed.
//!
//! A plain `<offset>` (and a checkpoint file without `tail`), written by earlier versions, is
//! still read; such a resume is unverified and logged as a warning. The next batch writes a
//! fingerprinted position.
//!
//! Reading stdin, the offset counts bytes of stdin, so a restart must be given the same input
//! again. The runner reads (and discards) stdin up to the offset, hashing the fingerprinted
//! bytes on the way, so a different input piped in is refused like a replaced file, after
//! reading up to the offset and before writing anything.
//!
//! [`ErrorKind::InvalidInput`]: redstream_core::ErrorKind::InvalidInput

use std::path::{Path, PathBuf};
use std::time::Duration;

use redstream_core::{
    Error, Event, EventLimits, EventMetadata, Result, SourcePosition, validate_event_type, wire,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncSeekExt, BufReader};

use crate::config::{ConfigFormat, config_format, parse_toml, parse_yaml, read_config_file};
use crate::{Delivery, RedisSink, SinkConfig};

/// A runner's configuration file: where to read, and the sink to write to.
///
/// ```yaml
/// source:
///   input: orders.jsonl          # "-" reads stdin
///   checkpoint: orders.checkpoint
///   format: payload              # each line is an event's payload...
///   event_type: order.created    # ...of this type
/// sink:
///   id: orders-redis
///   url: ${REDIS_URL}            # or uri, its name in earlier versions
///   stream: "{orders}.events"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RunnerConfig {
    /// Where the lines come from and where the checkpoint is kept.
    pub source: SourceConfig,
    /// The sink the events are written through.
    pub sink: SinkConfig,
}

/// The JSON-lines source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SourceConfig {
    /// The file to read, or `-` for stdin.
    pub input: PathBuf,
    /// The checkpoint file: the byte offset of the input up to which every line is written.
    pub checkpoint: PathBuf,
    /// How a line becomes an event.
    pub format: LineFormat,
    /// The event type of every event with [`LineFormat::Payload`].
    pub event_type: Option<String>,
    /// Events per batch; at most the sink's `max_batch_events` (default 500). A batch is also
    /// sent early when the next event would take it over the sink's `max_batch_bytes`.
    pub batch_events: usize,
    /// How long a partly filled batch waits for more lines before it is sent (default 200 ms).
    /// Matters when the input is a pipe that writes slowly.
    #[serde(with = "redstream_core::serde_duration")]
    pub linger: Duration,
    /// What to do with a line that is not valid JSON or not a valid event.
    pub on_invalid: OnInvalid,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            input: PathBuf::from("-"),
            checkpoint: PathBuf::new(),
            format: LineFormat::Payload,
            event_type: None,
            batch_events: 500,
            linger: Duration::from_millis(200),
            on_invalid: OnInvalid::Fail,
        }
    }
}

/// How a line becomes an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LineFormat {
    /// The line is the payload; the event gets a new id and `source.event_type`.
    #[default]
    Payload,
    /// The line is a whole event envelope in the wire format (`id`, `type`, `payload`,
    /// `metadata`...), kept as it is, id included.
    Envelope,
}

/// What to do with an invalid line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnInvalid {
    /// Write every line before it, checkpoint, and stop with an error naming the line.
    #[default]
    Fail,
    /// Log it with its line number, count it, and go on.
    Skip,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RunReport {
    /// The byte offset the run started from.
    pub resumed_from: u64,
    /// The byte offset every line before which is written.
    pub offset: u64,
    /// Lines read by this run, blank and skipped ones included.
    pub lines: u64,
    /// Events written by this run.
    pub events: u64,
    /// Batches acknowledged by this run.
    pub batches: u64,
    /// Invalid lines skipped (`on_invalid: skip`).
    pub skipped_lines: u64,
    /// Batches dropped by a sink with `required = false`.
    pub dropped_batches: u64,
    /// Whether the run stopped because it was asked to, before the end of the input.
    pub interrupted: bool,
}

/// The checkpoint file's content.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointFile {
    /// The input it belongs to, as configured.
    input: PathBuf,
    /// Every line before this byte offset is written.
    offset: u64,
    /// The fingerprint of the bytes before `offset`; absent in files of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tail: Option<TailFile>,
}

/// [`Tail`] in the checkpoint file: the hash as 16 hex digits, as in a position.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TailFile {
    len: u64,
    fnv1a64: String,
}

/// A source position: every line before `offset` is written, and, unless it was recorded by
/// an earlier version, what the input held just before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    offset: u64,
    tail: Option<Tail>,
}

/// The fingerprint of the `len` bytes of the input just before a mark's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tail {
    len: u64,
    fnv1a64: u64,
}

impl Mark {
    /// `<offset>:<len>:<fnv1a64 in 16 hex digits>`, or `<offset>` without a tail.
    fn to_position(self) -> SourcePosition {
        SourcePosition::new(match self.tail {
            Some(tail) => format!("{}:{}:{:016x}", self.offset, tail.len, tail.fnv1a64),
            None => self.offset.to_string(),
        })
    }

    /// Reads what [`Mark::to_position`] writes; a plain `<offset>` is an earlier version's.
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let offset = parse_decimal(parts.next()?)?;
        let tail = match (parts.next(), parts.next(), parts.next()) {
            (None, ..) => None,
            (Some(len), Some(hash), None) => Some(Tail {
                len: parse_decimal(len)?,
                fnv1a64: parse_hash(hash)?,
            }),
            _ => return None,
        };
        if tail.is_some_and(|t| t.len == 0 || t.len > offset) {
            return None;
        }
        Some(Self { offset, tail })
    }
}

/// Digits only (`u64::from_str` would take a `+`).
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Exactly 16 hex digits.
fn parse_hash(text: &str) -> Option<u64> {
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// 64-bit FNV-1a: small, stable across versions and platforms, and enough to tell an input
/// that was replaced from the one a position was recorded on (it is not a defence against
/// anyone crafting collisions).
#[derive(Debug, Clone, Copy)]
struct Fnv1a64(u64);

impl Fnv1a64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Self(Self::OFFSET_BASIS)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn finish(self) -> u64 {
        self.0
    }
}

impl RunnerConfig {
    /// A configuration reading `input` (`-` for stdin) into `sink`, checkpointing to
    /// `checkpoint`, each line being a payload of `event_type`.
    #[must_use]
    pub fn new(
        input: impl Into<PathBuf>,
        checkpoint: impl Into<PathBuf>,
        event_type: impl Into<String>,
        sink: SinkConfig,
    ) -> Self {
        Self {
            source: SourceConfig {
                input: input.into(),
                checkpoint: checkpoint.into(),
                event_type: Some(event_type.into()),
                ..SourceConfig::default()
            },
            sink,
        }
    }

    /// Reads a configuration file (YAML for `.yaml`/`.yml`, TOML for `.toml`), expands
    /// `${NAME}` in the sink's `url` (or `uri`) and `sentinel_password`, and validates it.
    /// Relative paths in `source` are taken relative to the file's directory.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read_config_file(path)?;
        let mut config: Self = match config_format(path)? {
            ConfigFormat::Toml => parse_toml(&text)?,
            ConfigFormat::Yaml => parse_yaml(&text)?,
        };
        config.sink = config.sink.expanded()?;
        if let Some(dir) = path.parent() {
            config.source.resolve_relative_to(dir);
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every field, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        self.sink.validate()?;
        let source = &self.source;
        if source.input.as_os_str().is_empty() {
            return Err(Error::invalid_input(
                "config field source.input",
                "must name a file, or \"-\" for stdin",
            ));
        }
        if source.checkpoint.as_os_str().is_empty() {
            return Err(Error::invalid_input(
                "config field source.checkpoint",
                "must name the checkpoint file, e.g. \"orders.checkpoint\"",
            ));
        }
        match (source.format, &source.event_type) {
            (LineFormat::Payload, None) => {
                return Err(Error::invalid_input(
                    "config field source.event_type",
                    "is required with format \"payload\": the type of every event",
                ));
            }
            (LineFormat::Payload, Some(event_type)) => {
                validate_event_type(event_type, EventLimits::default().max_event_type_len)
                    .map_err(|err| {
                        Error::invalid_input("config field source.event_type", err.to_string())
                    })?;
            }
            (LineFormat::Envelope, _) => {}
        }
        if source.batch_events == 0 || source.batch_events > self.sink.max_batch_events {
            return Err(Error::invalid_input(
                "config field source.batch_events",
                format!(
                    "must be between 1 and the sink's max_batch_events ({}), got {}",
                    self.sink.max_batch_events, source.batch_events
                ),
            ));
        }
        if source.linger.is_zero() {
            return Err(Error::invalid_input(
                "config field source.linger",
                "must be positive (e.g. \"200ms\")",
            ));
        }
        Ok(())
    }
}

impl SourceConfig {
    fn resolve_relative_to(&mut self, dir: &Path) {
        if self.input != Path::new("-") && self.input.is_relative() {
            self.input = dir.join(&self.input);
        }
        if self.checkpoint.is_relative() {
            self.checkpoint = dir.join(&self.checkpoint);
        }
    }

    fn is_stdin(&self) -> bool {
        self.input == Path::new("-")
    }
}

/// Runs the pipeline until the input ends, a batch fails for good, or `shutdown` completes.
///
/// On `shutdown` the batch being read is written and checkpointed before returning, so a
/// stopped run resumes exactly where it ended.
pub async fn run(config: RunnerConfig, shutdown: impl Future<Output = ()>) -> Result<RunReport> {
    config.validate()?;
    let sink = RedisSink::new(config.sink.clone())?;
    let source = &config.source;
    let file_mark = read_checkpoint(source).await?;
    // Without exactly_once the sink neither writes nor reads its progress key: a key left by
    // an earlier configuration is not trusted.
    let key_mark = if config.sink.exactly_once {
        recorded_mark(&sink).await?
    } else {
        None
    };
    let file_offset = file_mark.map_or(0, |m| m.offset);
    let start = file_offset.max(key_mark.map_or(0, |m| m.offset));
    tracing::info!(
        sink = %config.sink.id,
        input = %source.input.display(),
        checkpoint_file = ?file_mark,
        progress_key = ?key_mark,
        start,
        "resuming"
    );
    let checks = Checks::new(source, sink.progress_key(), file_mark, key_mark);
    // The byte just before `start`: not a newline when the last run ended on a line without
    // one, which the input must not continue (see `Pipeline::resumed_mid_line`).
    let byte_before_start;
    let reader: Box<dyn AsyncRead + Unpin + Send> = if source.is_stdin() {
        let mut stdin = tokio::io::stdin();
        byte_before_start = checks.skip_stdin(&mut stdin, start).await?;
        Box::new(stdin)
    } else {
        let mut file = tokio::fs::File::open(&source.input).await.map_err(|err| {
            Error::invalid_input(
                format!("input {}", source.input.display()),
                format!("cannot be opened: {err}"),
            )
        })?;
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(u64::MAX);
        if start > len {
            return Err(Error::invalid_input(
                format!("input {}", source.input.display()),
                format!(
                    "is {len} bytes, shorter than the checkpoint ({start}): was it truncated or \
                     replaced? Remove the checkpoint file and the sink's progress key to start over"
                ),
            ));
        }
        checks.verify_file(&mut file).await?;
        byte_before_start = byte_before(&mut file, start)
            .await
            .map_err(|err| input_error(source, &err))?;
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|err| input_error(source, &err))?;
        Box::new(file)
    };
    let mut pipeline = Pipeline::new(&sink, source, start);
    pipeline.resumed_mid_line = byte_before_start.is_some_and(|byte| byte != b'\n');
    // Only once the input is known to reach `start` and to hold what the progress key says:
    // a truncated or replaced input must not get a checkpoint it cannot honour.
    if let Some(key_mark) = key_mark.filter(|k| k.offset > file_offset) {
        // The last run was stopped between a batch's script and its checkpoint, or, with
        // durability, before its WAIT said the batch was on enough replicas (or when it said
        // it was not): the batch is acknowledged only once that is confirmed.
        match sink.confirm_recorded().await {
            Ok(()) => {}
            Err(err) if !config.sink.required => {
                tracing::warn!(
                    sink = %config.sink.id,
                    error = %err,
                    "the recorded batch could not be confirmed; dropped by a sink that is not \
                     required"
                );
                pipeline.report.dropped_batches += 1;
            }
            Err(err) => return Err(err),
        }
        write_checkpoint(source, key_mark).await?;
    }
    pipeline.read_all(BufReader::new(reader), shutdown).await?;
    Ok(pipeline.report)
}

/// The byte of `file` just before `offset` (`None` at 0); leaves the file's cursor anywhere.
async fn byte_before(file: &mut tokio::fs::File, offset: u64) -> std::io::Result<Option<u8>> {
    use tokio::io::AsyncReadExt;
    let Some(at) = offset.checked_sub(1) else {
        return Ok(None);
    };
    file.seek(std::io::SeekFrom::Start(at)).await?;
    let mut byte = [0; 1];
    file.read_exact(&mut byte).await?;
    Ok(Some(byte[0]))
}

/// The lines read since the last checkpoint: their size and their fingerprint.
struct Pending {
    bytes: u64,
    hash: Fnv1a64,
}

impl Pending {
    fn new() -> Self {
        Self {
            bytes: 0,
            hash: Fnv1a64::new(),
        }
    }

    fn push(&mut self, line: &[u8]) {
        self.bytes += line.len() as u64;
        self.hash.update(line);
    }

    /// The mark after these lines, which start at `offset`; empties `self`.
    fn take(&mut self, offset: u64) -> Mark {
        let pending = std::mem::replace(self, Self::new());
        Mark {
            offset: offset + pending.bytes,
            tail: Some(Tail {
                len: pending.bytes,
                fnv1a64: pending.hash.finish(),
            }),
        }
    }
}

struct Pipeline<'a> {
    sink: &'a RedisSink,
    source: &'a SourceConfig,
    limits: EventLimits,
    batch: Vec<Event>,
    /// The encoded size of the events in `batch`.
    batch_bytes: usize,
    report: RunReport,
    /// Line numbers count from the start of the input only when the run started there.
    line_number: Option<u64>,
    /// The run resumed just after a line that had no newline (the last run ended on it, at
    /// the end of the input, and wrote it as a complete line): the input must not continue
    /// that line. Checked, then cleared, at the first line read.
    resumed_mid_line: bool,
}

impl<'a> Pipeline<'a> {
    fn new(sink: &'a RedisSink, source: &'a SourceConfig, start: u64) -> Self {
        Self {
            sink,
            source,
            limits: EventLimits::default(),
            batch: Vec::with_capacity(source.batch_events),
            batch_bytes: 0,
            report: RunReport {
                resumed_from: start,
                offset: start,
                ..RunReport::default()
            },
            line_number: None,
            resumed_mid_line: false,
        }
    }

    async fn read_all(
        &mut self,
        mut reader: BufReader<Box<dyn AsyncRead + Unpin + Send>>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        enum Step {
            Read(std::io::Result<usize>),
            Linger,
            Shutdown,
        }
        let mut shutdown = std::pin::pin!(shutdown);
        if self.report.resumed_from == 0 {
            self.line_number = Some(0);
        }
        // `read_until` is cancel-safe: bytes of a line read before a linger or a shutdown stay
        // in `line`, and the next call goes on appending to it.
        let mut line = Vec::new();
        // The complete lines read but not yet checkpointed: the pending batch's.
        let mut pending = Pending::new();
        loop {
            let step = {
                let next = reader.read_until(b'\n', &mut line);
                if self.batch.is_empty() {
                    tokio::select! {
                        read = next => Step::Read(read),
                        () = &mut shutdown => Step::Shutdown,
                    }
                } else {
                    tokio::select! {
                        read = next => Step::Read(read),
                        () = &mut shutdown => Step::Shutdown,
                        () = tokio::time::sleep(self.source.linger) => Step::Linger,
                    }
                }
            };
            let eof = match step {
                Step::Shutdown => {
                    self.flush(&mut pending).await?;
                    self.report.interrupted = true;
                    return Ok(());
                }
                Step::Linger => {
                    // No new line for a while: send what there is.
                    self.flush(&mut pending).await?;
                    continue;
                }
                Step::Read(Err(err)) => return Err(input_error(self.source, &err)),
                Step::Read(Ok(n)) => n == 0,
            };
            if eof && line.is_empty() {
                self.flush(&mut pending).await?;
                return Ok(());
            }
            if std::mem::take(&mut self.resumed_mid_line) && line.first() != Some(&b'\n') {
                return Err(self.continued_line());
            }
            // A complete line, or at the end of the input the last one, without its newline.
            self.report.lines += 1;
            if let Some(number) = &mut self.line_number {
                *number += 1;
            }
            let parsed = self.parse(&line);
            match parsed {
                Ok(None) => {}
                Ok(Some((event, size))) => {
                    // The sink refuses a batch over max_batch_bytes: send the batch before
                    // this event would take it over (a single event over it is refused as an
                    // invalid line by `parse`).
                    if !self.batch.is_empty()
                        && self.batch_bytes + size > self.sink.config().max_batch_bytes
                    {
                        self.flush(&mut pending).await?;
                    }
                    self.batch.push(event);
                    self.batch_bytes += size;
                }
                Err(reason) => {
                    let at = self.describe_line(pending.bytes);
                    match self.source.on_invalid {
                        OnInvalid::Fail => {
                            // Everything before the bad line is written and checkpointed.
                            self.flush(&mut pending).await?;
                            return Err(Error::invalid_input(at, reason));
                        }
                        OnInvalid::Skip => {
                            tracing::warn!(line = %at, %reason, "invalid line skipped");
                            self.report.skipped_lines += 1;
                        }
                    }
                }
            }
            pending.push(&line);
            line.clear();
            if self.batch.len() >= self.source.batch_events {
                self.flush(&mut pending).await?;
            }
        }
    }

    /// The error for an input that continues the unterminated line the last run ended on.
    fn continued_line(&self) -> Error {
        let at = self.report.resumed_from;
        Error::invalid_input(
            format!("input {}", self.source.input.display()),
            format!(
                "the last line written had no newline and the input has grown since: the bytes \
                 from byte {at} on continue that line, which the last run wrote as a complete \
                 one when the input ended there. Nothing more was written. If they begin a new \
                 line, insert the missing newline at byte {at}; if a writer was still writing \
                 that line, its first part is in the stream already: insert a newline at byte \
                 {at} to write the rest as a line of its own, or remove the rest. Inputs that \
                 grow should be written a whole line, newline included, at a time"
            ),
        )
    }

    /// `line N of <input>` when the run started at the beginning, else the byte offset.
    fn describe_line(&self, bytes_before: u64) -> String {
        match self.line_number {
            Some(number) => format!("line {number} of {}", self.source.input.display()),
            None => format!(
                "the line at byte {} of {}",
                self.report.offset + bytes_before,
                self.source.input.display()
            ),
        }
    }

    /// The event of a line and its encoded size in bytes; `Ok(None)` for a blank line. A line
    /// whose event alone encodes to more than the sink's `max_batch_bytes` is invalid: no
    /// batch could carry it.
    fn parse(&self, line: &[u8]) -> std::result::Result<Option<(Event, usize)>, String> {
        let text = line.trim_ascii();
        if text.is_empty() {
            return Ok(None);
        }
        let event = match self.source.format {
            LineFormat::Payload => {
                let payload: serde_json::Value = serde_json::from_slice(text)
                    .map_err(|err| format!("is not valid JSON: {err}"))?;
                let event_type = self.source.event_type.as_deref().unwrap_or_default();
                Event::new(event_type, payload, EventMetadata::default())
            }
            LineFormat::Envelope => wire::decode_envelope(text, &self.limits)
                .map_err(|err| format!("is not a valid event envelope: {err}"))?,
        };
        let size = wire::encode(&event, &self.limits)
            .map_err(|err| err.to_string())?
            .len();
        let max = self.sink.config().max_batch_bytes;
        if size > max {
            return Err(format!(
                "encodes to {size} bytes, over the sink's max_batch_bytes ({max})"
            ));
        }
        Ok(Some((event, size)))
    }

    /// Sends the pending batch and moves the checkpoint past the `pending` lines.
    async fn flush(&mut self, pending: &mut Pending) -> Result<()> {
        if pending.bytes == 0 {
            return Ok(());
        }
        let mark = pending.take(self.report.offset);
        let offset = mark.offset;
        let position = mark.to_position();
        let events = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let count = events.len() as u64;
        if count == 0 {
            // Only blank or skipped lines: move the file checkpoint alone.
            write_checkpoint(self.source, mark).await?;
        } else {
            let source = self.source;
            let hook = |position: SourcePosition| async move {
                let mark = parse_position(&position, "the position given to the checkpoint")?;
                write_checkpoint(source, mark).await
            };
            match self
                .sink
                .send_and_checkpoint(events, Some(position), &hook)
                .await?
            {
                Delivery::Acknowledged(ack) => {
                    self.report.events += ack.written as u64;
                    self.report.batches += 1;
                }
                Delivery::Dropped(_) => self.report.dropped_batches += 1,
            }
        }
        self.report.offset = offset;
        self.batch.reserve(self.source.batch_events);
        Ok(())
    }
}

/// The sink's recorded progress as a mark, if there is one. Read with the sink's retry
/// policy, within its `batch_timeout` if it has one (so that a sink that is not required does
/// not hold the run for ever at its start either).
async fn recorded_mark(sink: &RedisSink) -> Result<Option<Mark>> {
    let read = sink.recorded_progress_retried();
    let progress = match sink.config().batch_timeout {
        None => read.await?,
        Some(limit) => tokio::time::timeout(limit, read)
            .await
            .map_err(|_| Error::Timeout {
                operation: format!(
                    "reading the sink's progress key {} at start (batch_timeout)",
                    sink.progress_key()
                )
                .into(),
                after: limit,
            })??,
    };
    progress
        .and_then(|p| p.position)
        .map(|position| parse_position(&position, "the sink's recorded source position"))
        .transpose()
}

fn parse_position(position: &SourcePosition, what: &'static str) -> Result<Mark> {
    Mark::parse(position.as_str()).ok_or_else(|| {
        Error::invalid_input(
            what,
            format!(
                "{:?} is not a byte offset of a JSON-lines input (\"<offset>\" or \
                 \"<offset>:<len>:<fnv1a64>\"): the progress key was written by another source",
                position.as_str()
            ),
        )
    })
}

async fn read_checkpoint(source: &SourceConfig) -> Result<Option<Mark>> {
    let what = || format!("checkpoint file {}", source.checkpoint.display());
    let text = match tokio::fs::read_to_string(&source.checkpoint).await {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(Error::invalid_input(
                what(),
                format!("cannot be read: {err}"),
            ));
        }
    };
    let file: CheckpointFile = serde_json::from_str(&text)
        .map_err(|err| Error::invalid_input(what(), format!("is not a checkpoint: {err}")))?;
    if file.input != source.input {
        return Err(Error::invalid_input(
            what(),
            format!(
                "belongs to input {}, not {}",
                file.input.display(),
                source.input.display()
            ),
        ));
    }
    let tail = match file.tail {
        None => None,
        Some(tail) => {
            let fnv1a64 =
                parse_hash(&tail.fnv1a64).filter(|_| tail.len > 0 && tail.len <= file.offset);
            Some(Tail {
                len: tail.len,
                fnv1a64: fnv1a64.ok_or_else(|| {
                    Error::invalid_input(
                        what(),
                        format!(
                            "is not a checkpoint: tail {{len: {}, fnv1a64: {:?}}} does not fit \
                             offset {} (len must be 1 to offset, fnv1a64 16 hex digits)",
                            tail.len, tail.fnv1a64, file.offset
                        ),
                    )
                })?,
            })
        }
    };
    Ok(Some(Mark {
        offset: file.offset,
        tail,
    }))
}

/// Replaces the checkpoint file: write a temporary file, fsync it, rename it over the old one.
/// A crash leaves either the old checkpoint or the new one, never a torn file.
async fn write_checkpoint(source: &SourceConfig, mark: Mark) -> Result<()> {
    let path = &source.checkpoint;
    let what = || format!("checkpoint file {}", path.display());
    let body = serde_json::to_vec(&CheckpointFile {
        input: source.input.clone(),
        offset: mark.offset,
        tail: mark.tail.map(|tail| TailFile {
            len: tail.len,
            fnv1a64: format!("{:016x}", tail.fnv1a64),
        }),
    })
    .map_err(|err| Error::invalid_input(what(), err.to_string()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = async {
        use tokio::io::AsyncWriteExt;
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(&body).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, path).await
    };
    write
        .await
        .map_err(|err| Error::invalid_input(what(), format!("cannot be written: {err}")))
}

/// The fingerprints a run checks before writing anything: the checkpoint file's and the
/// progress key's, once each (once in all when they are the same mark).
struct Checks<'a> {
    source: &'a SourceConfig,
    progress_key: &'a str,
    /// Each fingerprinted mark, with the records that hold it.
    marks: Vec<(Mark, Tail, &'static str)>,
}

impl<'a> Checks<'a> {
    fn new(
        source: &'a SourceConfig,
        progress_key: &'a str,
        file: Option<Mark>,
        key: Option<Mark>,
    ) -> Self {
        const FILE: &str = "the checkpoint file";
        const KEY: &str = "the sink's progress key";
        const BOTH: &str = "the checkpoint file and the sink's progress key";
        let records: Vec<(Mark, &'static str)> = match (file, key) {
            (Some(file), Some(key)) if file == key => vec![(file, BOTH)],
            (file, key) => file
                .map(|m| (m, FILE))
                .into_iter()
                .chain(key.map(|m| (m, KEY)))
                .collect(),
        };
        let mut marks = Vec::new();
        for (mark, record) in records {
            match mark.tail {
                Some(tail) => marks.push((mark, tail, record)),
                None if mark.offset > 0 => tracing::warn!(
                    input = %source.input.display(),
                    offset = mark.offset,
                    record,
                    "resuming from a plain offset written by an earlier version: the input \
                     cannot be checked against it (the next batch records a fingerprint)"
                ),
                None => {}
            }
        }
        Self {
            source,
            progress_key,
            marks,
        }
    }

    /// Reads the fingerprinted bytes of `file` again; an error if they differ.
    async fn verify_file(&self, file: &mut tokio::fs::File) -> Result<()> {
        for &(mark, tail, record) in &self.marks {
            let from = mark.offset - tail.len;
            file.seek(std::io::SeekFrom::Start(from))
                .await
                .map_err(|err| input_error(self.source, &err))?;
            let mut window = [Window::new(from, mark.offset)];
            read_through(file, from, mark.offset, &mut window)
                .await
                .map_err(|err| input_error(self.source, &err))?;
            if window[0].hash() != Some(tail.fnv1a64) {
                return Err(self.mismatch(mark, tail, record));
            }
        }
        Ok(())
    }

    /// Reads and discards `count` bytes of stdin, checking the fingerprinted ones on the way.
    /// Returns the last byte skipped.
    async fn skip_stdin(
        &self,
        stdin: &mut (impl AsyncRead + Unpin),
        count: u64,
    ) -> Result<Option<u8>> {
        let mut windows: Vec<Window> = self
            .marks
            .iter()
            .map(|&(mark, tail, _)| Window::new(mark.offset - tail.len, mark.offset))
            .collect();
        if let Some(last) = count.checked_sub(1) {
            windows.push(Window::new(last, count));
        }
        let skipped = read_through(stdin, 0, count, &mut windows)
            .await
            .map_err(|err| Error::invalid_input("stdin", format!("cannot be read: {err}")))?;
        if skipped < count {
            return Err(Error::invalid_input(
                "stdin",
                format!(
                    "ended after {skipped} bytes, before the checkpoint ({count}): give the run \
                     the same input again"
                ),
            ));
        }
        for (&(mark, tail, record), window) in self.marks.iter().zip(&windows) {
            if window.hash() != Some(tail.fnv1a64) {
                return Err(self.mismatch(mark, tail, record));
            }
        }
        Ok(windows.get(self.marks.len()).and_then(|window| window.last))
    }

    fn mismatch(&self, mark: Mark, tail: Tail, record: &str) -> Error {
        let source = self.source;
        let instead = if source.is_stdin() {
            "to resume, give the run the same input again"
        } else {
            "to resume the input that run read, point source.input at it again"
        };
        Error::invalid_input(
            format!("input {}", source.input.display()),
            format!(
                "does not hold, in its {} bytes before byte {}, the lines {record} recorded \
                 as written: it was replaced, rotated or rewritten since that run. Nothing was \
                 written. To write this input from its start, delete the checkpoint file {} and \
                 the progress key {:?} (redis-cli DEL), or use another checkpoint file and sink \
                 id; {instead}",
                tail.len,
                mark.offset,
                source.checkpoint.display(),
                self.progress_key,
            ),
        )
    }
}

/// A byte range of the input being hashed.
struct Window {
    from: u64,
    to: u64,
    /// Bytes of the range seen so far.
    seen: u64,
    hasher: Fnv1a64,
    /// The last byte of the range seen so far.
    last: Option<u8>,
}

impl Window {
    fn new(from: u64, to: u64) -> Self {
        Self {
            from,
            to,
            seen: 0,
            hasher: Fnv1a64::new(),
            last: None,
        }
    }

    /// The hash of the range, if all of it was seen.
    fn hash(&self) -> Option<u64> {
        (self.seen == self.to - self.from).then(|| self.hasher.finish())
    }
}

/// Reads `reader`, positioned at byte `at` of the input, up to byte `to` (or its end), and
/// feeds each window the bytes that fall in it. Returns how many bytes were read.
async fn read_through(
    reader: &mut (impl AsyncRead + Unpin),
    at: u64,
    to: u64,
    windows: &mut [Window],
) -> std::io::Result<u64> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0; 64 * 1024];
    let mut pos = at;
    while pos < to {
        let want = usize::try_from(to - pos).map_or(buf.len(), |left| left.min(buf.len()));
        let n = reader.read(&mut buf[..want]).await?;
        if n == 0 {
            break;
        }
        let end = pos + n as u64;
        for window in windows.iter_mut() {
            let (from, until) = (window.from.max(pos), window.to.min(end));
            if from < until {
                // Both within `buf`, whose length is a usize.
                let (a, b) = ((from - pos) as usize, (until - pos) as usize);
                window.hasher.update(&buf[a..b]);
                window.seen += until - from;
                window.last = Some(buf[b - 1]);
            }
        }
        pos = end;
    }
    Ok(pos - at)
}

fn input_error(source: &SourceConfig, err: &std::io::Error) -> Error {
    Error::invalid_input(
        format!("input {}", source.input.display()),
        format!("cannot be read: {err}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(bytes: &[u8]) -> u64 {
        let mut hasher = Fnv1a64::new();
        hasher.update(bytes);
        hasher.finish()
    }

    /// The published FNV-1a 64 test vectors: positions written by one version are checked by
    /// the next, so the hash must never change.
    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn positions_round_trip_and_plain_offsets_still_parse() {
        let mark = Mark {
            offset: 17,
            tail: Some(Tail {
                len: 9,
                fnv1a64: 0xaf63_dc4c_8601_ec8c,
            }),
        };
        assert_eq!(mark.to_position().as_str(), "17:9:af63dc4c8601ec8c");
        assert_eq!(Mark::parse("17:9:af63dc4c8601ec8c"), Some(mark));
        assert_eq!(
            Mark::parse("42"),
            Some(Mark {
                offset: 42,
                tail: None
            })
        );
        for bad in [
            "",
            "x",
            "+4",
            "17:",
            "17:9",
            "17:9:af63",
            "17:18:af63dc4c8601ec8c",
            "17:0:af63dc4c8601ec8c",
            "17:9:af63dc4c8601ec8c:1",
            "17:9:zz63dc4c8601ec8c",
        ] {
            assert_eq!(Mark::parse(bad), None, "{bad:?}");
        }
    }

    fn stdin_source() -> SourceConfig {
        SourceConfig {
            checkpoint: PathBuf::from("c"),
            ..SourceConfig::default()
        }
    }

    fn mark_after(input: &[u8], from: usize, to: usize) -> Mark {
        Mark {
            offset: to as u64,
            tail: Some(Tail {
                len: (to - from) as u64,
                fnv1a64: hash(&input[from..to]),
            }),
        }
    }

    /// Reading stdin, the bytes skipped are hashed on the way: the same input resumes, another
    /// one of the same length is refused, and a short one too.
    #[tokio::test]
    async fn stdin_is_checked_while_it_is_skipped() {
        let input = b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n";
        let source = stdin_source();
        let file = mark_after(input, 0, 8);
        let key = mark_after(input, 8, 16);
        let checks = Checks::new(&source, "k", Some(file), Some(key));

        let mut same = &input[..];
        assert_eq!(checks.skip_stdin(&mut same, 16).await.unwrap(), Some(b'\n'));
        assert_eq!(same, b"{\"n\":3}\n", "stdin is left at the offset");

        let other = b"{\"n\":1}\n{\"n\":9}\n{\"n\":3}\n";
        let err = checks.skip_stdin(&mut &other[..], 16).await.unwrap_err();
        assert!(err.to_string().contains("before byte 16"), "{err}");
        assert!(err.to_string().contains("the sink's progress key"), "{err}");

        let err = checks.skip_stdin(&mut &input[..10], 16).await.unwrap_err();
        assert!(err.to_string().contains("ended after 10 bytes"), "{err}");

        // A plain offset of an earlier version is not checked.
        let legacy = Mark {
            offset: 16,
            tail: None,
        };
        let checks = Checks::new(&source, "k", Some(legacy), Some(legacy));
        checks.skip_stdin(&mut &other[..], 16).await.unwrap();
    }

    /// A progress key replaced by another type between two batches: the batch script finds it
    /// before its first write, so the second batch is refused whole and the checkpoint file
    /// stays before it; once the key is removed, the same batch is written, once. (Driven
    /// batch by batch here: a whole run reads its input too fast for the key to be replaced
    /// between two of its batches.)
    #[tokio::test]
    async fn a_progress_key_replaced_between_batches_stops_the_run_before_any_write() {
        let server = redstream_testkit::RedisServer::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let source = SourceConfig {
            input: dir.path().join("in.jsonl"),
            checkpoint: dir.path().join("in.checkpoint"),
            event_type: Some("line.read".into()),
            ..SourceConfig::default()
        };
        let sink = RedisSink::new(SinkConfig::new("s", server.url(), "{wt}.events")).unwrap();
        let mut pipeline = Pipeline::new(&sink, &source, 0);
        let mut pending = Pending::new();
        let read = |pipeline: &mut Pipeline<'_>, pending: &mut Pending, line: &[u8]| {
            let (event, size) = pipeline.parse(line).unwrap().unwrap();
            pipeline.batch.push(event);
            pipeline.batch_bytes += size;
            pending.push(line);
        };
        read(&mut pipeline, &mut pending, b"{\"n\":1}\n");
        pipeline.flush(&mut pending).await.unwrap();
        let mut conn = server.connection().await.unwrap();
        let () = redis::cmd("SET")
            .arg(sink.progress_key())
            .arg("not a hash")
            .query_async(&mut conn)
            .await
            .unwrap();

        read(&mut pipeline, &mut pending, b"{\"n\":2}\n");
        read(&mut pipeline, &mut pending, b"{\"n\":3}\n");
        let err = pipeline.flush(&mut pending).await.unwrap_err();
        assert_eq!(err.kind(), redstream_core::ErrorKind::WrongType, "{err}");
        assert!(err.to_string().contains(sink.progress_key()), "{err}");
        async fn xlen(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
            redis::cmd("XLEN")
                .arg("{wt}.events")
                .query_async(conn)
                .await
                .unwrap()
        }
        assert_eq!(xlen(&mut conn).await, 1, "nothing of the second batch");
        let mark = read_checkpoint(&source).await.unwrap().unwrap();
        assert_eq!(
            mark.offset, 8,
            "the checkpoint file is before the batch refused"
        );
        let value: String = redis::cmd("GET")
            .arg(sink.progress_key())
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(value, "not a hash", "the foreign key is left as it was");

        // The key removed, a run resumed from the checkpoint file writes the batch once.
        let () = redis::cmd("DEL")
            .arg(sink.progress_key())
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut pipeline = Pipeline::new(&sink, &source, 8);
        read(&mut pipeline, &mut pending, b"{\"n\":2}\n");
        read(&mut pipeline, &mut pending, b"{\"n\":3}\n");
        pipeline.flush(&mut pending).await.unwrap();
        assert_eq!(xlen(&mut conn).await, 3);
        assert_eq!(read_checkpoint(&source).await.unwrap().unwrap().offset, 24);
    }
}
