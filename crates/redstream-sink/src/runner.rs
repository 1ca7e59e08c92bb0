//! A runnable pipeline: JSON lines from a file or stdin, through a [`RedisSink`], with the
//! source checkpoint kept in a file. `redstream sink --config sink.yaml` runs it.
//!
//! # Resuming without losing or duplicating a line
//!
//! The source position of a batch is the byte offset of the input just after its last line.
//! The sink writes it into its progress key in the same `MULTI` as the batch, and the
//! checkpoint file is rewritten (write, fsync, rename) once the batch is acknowledged. On
//! start the runner resumes from the larger of the two offsets:
//!
//! - killed after the `EXEC` and before the checkpoint file was renamed: the progress key is
//!   one batch ahead and wins, so that batch is not written again;
//! - killed before the `EXEC`: both agree, and the batch is read and written again.
//!
//! When the progress key is gone (deleted, or a Redis that lost its data) the run resumes from
//! the checkpoint file alone, and does not write again the lines before it, even if their
//! entries were lost with the key. Reading stdin, the offset counts bytes of stdin, so a
//! restart must be given the same input again.

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
///   uri: ${REDIS_URI}
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
    /// `${NAME}` in the sink's `uri`, and validates it. Relative paths in `source` are taken
    /// relative to the file's directory.
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
    let file_offset = read_checkpoint(source).await?;
    let recorded = recorded_offset(&sink).await?;
    let start = file_offset.max(recorded.unwrap_or(0));
    tracing::info!(
        sink = %config.sink.id,
        input = %source.input.display(),
        checkpoint_file = file_offset,
        progress_key = ?recorded,
        start,
        "resuming"
    );
    let reader: Box<dyn AsyncRead + Unpin + Send> = if source.is_stdin() {
        let mut stdin = tokio::io::stdin();
        skip_bytes(&mut stdin, start).await?;
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
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|err| input_error(source, &err))?;
        Box::new(file)
    };
    // Only once the input is known to reach `start`: a truncated or replaced input must not
    // get a checkpoint it cannot honour.
    if recorded.is_some_and(|r| r > file_offset) {
        // The last run was stopped between a batch's EXEC and its checkpoint.
        write_checkpoint(source, start).await?;
    }
    let mut pipeline = Pipeline {
        sink: &sink,
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
    };
    pipeline.read_all(BufReader::new(reader), shutdown).await?;
    Ok(pipeline.report)
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
}

impl Pipeline<'_> {
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
        // Bytes of the complete lines read but not yet checkpointed: the pending batch's.
        let mut pending_bytes: u64 = 0;
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
                    self.flush(pending_bytes).await?;
                    self.report.interrupted = true;
                    return Ok(());
                }
                Step::Linger => {
                    // No new line for a while: send what there is.
                    self.flush(pending_bytes).await?;
                    pending_bytes = 0;
                    continue;
                }
                Step::Read(Err(err)) => return Err(input_error(self.source, &err)),
                Step::Read(Ok(n)) => n == 0,
            };
            if eof && line.is_empty() {
                self.flush(pending_bytes).await?;
                return Ok(());
            }
            // A complete line, or at the end of the input the last one, without its newline.
            let len = line.len() as u64;
            self.report.lines += 1;
            if let Some(number) = &mut self.line_number {
                *number += 1;
            }
            let parsed = self.parse(&line);
            line.clear();
            match parsed {
                Ok(None) => {}
                Ok(Some((event, size))) => {
                    // The sink refuses a batch over max_batch_bytes: send the batch before
                    // this event would take it over (a single event over it is refused as an
                    // invalid line by `parse`).
                    if !self.batch.is_empty()
                        && self.batch_bytes + size > self.sink.config().max_batch_bytes
                    {
                        self.flush(pending_bytes).await?;
                        pending_bytes = 0;
                    }
                    self.batch.push(event);
                    self.batch_bytes += size;
                }
                Err(reason) => {
                    let at = self.describe_line(pending_bytes);
                    match self.source.on_invalid {
                        OnInvalid::Fail => {
                            // Everything before the bad line is written and checkpointed.
                            self.flush(pending_bytes).await?;
                            return Err(Error::invalid_input(at, reason));
                        }
                        OnInvalid::Skip => {
                            tracing::warn!(line = %at, %reason, "invalid line skipped");
                            self.report.skipped_lines += 1;
                        }
                    }
                }
            }
            pending_bytes += len;
            if self.batch.len() >= self.source.batch_events {
                self.flush(pending_bytes).await?;
                pending_bytes = 0;
            }
        }
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

    /// Sends the pending batch and moves the checkpoint `consumed` bytes forward.
    async fn flush(&mut self, consumed: u64) -> Result<()> {
        if consumed == 0 {
            return Ok(());
        }
        let offset = self.report.offset + consumed;
        let position = SourcePosition::new(offset.to_string());
        let events = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let count = events.len() as u64;
        if count == 0 {
            // Only blank or skipped lines: move the file checkpoint alone.
            write_checkpoint(self.source, offset).await?;
        } else {
            let source = self.source;
            let hook = |position: SourcePosition| async move {
                let offset = parse_offset(&position)?;
                write_checkpoint(source, offset).await
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

/// The sink's recorded progress as a byte offset, if there is one.
async fn recorded_offset(sink: &RedisSink) -> Result<Option<u64>> {
    let mut attempt = 1;
    let progress = loop {
        match sink.recorded_progress().await {
            Ok(progress) => break progress,
            Err(err) if sink.config().retry.should_retry(attempt, &err) => {
                tracing::warn!(error = %err, attempt, "reading the sink's progress failed, retrying");
                tokio::time::sleep(sink.config().retry.delay_for(attempt)).await;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    };
    progress
        .and_then(|p| p.position)
        .map(|position| parse_offset(&position))
        .transpose()
}

fn parse_offset(position: &SourcePosition) -> Result<u64> {
    position.as_str().parse().map_err(|_| {
        Error::invalid_input(
            "the sink's recorded source position",
            format!(
                "{:?} is not a byte offset: the progress key was written by another source",
                position.as_str()
            ),
        )
    })
}

async fn read_checkpoint(source: &SourceConfig) -> Result<u64> {
    let what = || format!("checkpoint file {}", source.checkpoint.display());
    let text = match tokio::fs::read_to_string(&source.checkpoint).await {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
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
    Ok(file.offset)
}

/// Replaces the checkpoint file: write a temporary file, fsync it, rename it over the old one.
/// A crash leaves either the old checkpoint or the new one, never a torn file.
async fn write_checkpoint(source: &SourceConfig, offset: u64) -> Result<()> {
    let path = &source.checkpoint;
    let what = || format!("checkpoint file {}", path.display());
    let body = serde_json::to_vec(&CheckpointFile {
        input: source.input.clone(),
        offset,
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

async fn skip_bytes(reader: &mut (impl AsyncRead + Unpin), count: u64) -> Result<()> {
    let mut limited = tokio::io::AsyncReadExt::take(reader, count);
    let skipped = tokio::io::copy(&mut limited, &mut tokio::io::sink())
        .await
        .map_err(|err| Error::invalid_input("stdin", format!("cannot be read: {err}")))?;
    if skipped < count {
        return Err(Error::invalid_input(
            "stdin",
            format!(
                "ended after {skipped} bytes, before the checkpoint ({count}): give the run the \
                 same input again"
            ),
        ));
    }
    Ok(())
}

fn input_error(source: &SourceConfig, err: &std::io::Error) -> Error {
    Error::invalid_input(
        format!("input {}", source.input.display()),
        format!("cannot be read: {err}"),
    )
}
