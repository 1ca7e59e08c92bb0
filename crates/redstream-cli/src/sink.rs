//! `redstream sink --config sink.yaml`: JSON lines from a file or stdin into a Redis stream,
//! through `redstream-sink`, with a checkpoint file. See `redstream_sink::runner` for the
//! configuration and how a killed run resumes without losing or duplicating a line.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;
use redstream_sink::runner::{self, RunReport, RunnerConfig};

use crate::args::Source;
use crate::{CliError, CliResult, GlobalArgs};

/// Options of `redstream sink`.
#[derive(Debug, Args)]
pub struct SinkArgs {
    /// The configuration file, YAML (.yaml, .yml) or TOML (.toml): a `source` section (input,
    /// checkpoint, format, event_type...) and a `sink` section (id, url, stream...). The
    /// Redis URL is the sink's `url` (or its deprecated old name `uri`; it may say `${REDIS_URL}`); `--url`
    /// on the command line replaces it. `--prefix` does not apply: the sink writes the configured stream.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Read this file instead of the configured `source.input`; `-` reads stdin.
    #[arg(long)]
    pub input: Option<PathBuf>,
}

/// Runs the sink until the input ends or Ctrl-C/SIGTERM, then prints what it did.
pub async fn run(global: &GlobalArgs, args: SinkArgs) -> CliResult<()> {
    if global.prefix_source == Source::CommandLine {
        return Err(CliError::usage(
            "redstream sink writes to the stream named in its configuration (`sink.stream`); \
             --prefix does not apply to it",
        ));
    }
    let mut config = RunnerConfig::from_file(&args.config)?;
    if global.url_source == Source::CommandLine {
        tracing::info!(
            url = %redstream_core::RedactedUrl(&global.url),
            "--url replaces the configuration's sink.url"
        );
        config.sink = config.sink.with_url(global.url.clone());
        config.sink.validate()?;
    }
    if let Some(input) = args.input {
        config.source.input = input;
    }
    let report = runner::run(config, shutdown_signal()).await?;
    print_report(global, &report);
    Ok(())
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Prints the report on stdout; a closed stdout is not an error worth failing the run for,
/// since the run's work is done and checkpointed.
fn print_report(global: &GlobalArgs, report: &RunReport) {
    let text = if global.json {
        serde_json::to_string(report).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
    } else {
        let state = if report.interrupted {
            "stopped"
        } else {
            "end of input"
        };
        format!(
            "{state}: {} events in {} batches from {} lines ({} skipped, {} batches dropped); \
             resumed at byte {}, checkpoint at byte {}",
            report.events,
            report.batches,
            report.lines,
            report.skipped_lines,
            report.dropped_batches,
            report.resumed_from,
            report.offset
        )
    };
    let _ = writeln!(std::io::stdout(), "{text}");
}
