//! The command line: global options shared by every command, and the subcommands.

use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use clap::{Args, Parser, Subcommand};

/// Operations for redstream on Redis: streams, consumer groups, dead letters, state, sinks,
/// and a live dashboard.
#[derive(Debug, Parser)]
#[command(name = "redstream", version, about, propagate_version = true)]
pub struct Cli {
    /// Options every command accepts.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts, listed under their own heading in every `--help`.
///
/// Its `Debug` shows the URL with its password masked, as every message does.
#[derive(Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Redis URL, e.g. redis://127.0.0.1:6379, redis://user:password@host:6379/0, or rediss://
    /// for TLS. A password in it is never printed.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true,
        hide_env_values = true
    )]
    pub url: String,
    /// Stream prefix: the stream of an event type is `<prefix>:<event type>`
    /// (`events:order.created`) and dead letters go to `<prefix>:dlq`. May be empty (`--prefix
    /// ''`): an event type is then its stream's name. Streams named otherwise (`events.raw`) are
    /// reached by their full name.
    #[arg(
        long,
        env = "REDSTREAM_PREFIX",
        default_value = "events",
        global = true,
        hide_env_values = true
    )]
    pub prefix: String,
    /// How a stream's name is built from the prefix and an event type, as the transport's
    /// `key_layout`: `plain` (`events:order.created`) or `cluster` (`events:{order.created}`:
    /// one hash tag per stream). Default: `cluster` on a Redis Cluster (`redis-cluster://`),
    /// `plain` elsewhere. Streams named in full are used as they are either way.
    #[arg(
        long,
        env = "REDSTREAM_KEY_LAYOUT",
        global = true,
        hide_env_values = true,
        value_parser = PossibleValuesParser::new(["plain", "cluster"])
            .try_map(|name| name.parse::<redstream_core::keys::KeyLayout>())
    )]
    pub key_layout: Option<redstream_core::keys::KeyLayout>,
    /// Time allowed to connect to Redis, e.g. `5s`, `500ms` (100 ms to 5 min).
    #[arg(
        long,
        env = "REDSTREAM_CONNECT_TIMEOUT",
        default_value = "5s",
        global = true,
        hide_env_values = true,
        value_parser = parse_timeout
    )]
    pub connect_timeout: std::time::Duration,
    /// Time allowed for each reply from Redis, e.g. `5s` (100 ms to 5 min).
    #[arg(
        long,
        env = "REDSTREAM_RESPONSE_TIMEOUT",
        default_value = "5s",
        global = true,
        hide_env_values = true,
        value_parser = parse_timeout
    )]
    pub response_timeout: std::time::Duration,
    /// A PEM file with the CA certificate(s) to trust for `rediss://` (a private CA); the
    /// system's roots are trusted otherwise.
    #[arg(
        long,
        env = "REDSTREAM_TLS_CA_CERT",
        global = true,
        hide_env_values = true,
        value_name = "PATH"
    )]
    pub tls_ca_cert: Option<std::path::PathBuf>,
    /// A PEM file with the client certificate, for servers that require one (mutual TLS);
    /// needs --tls-client-key.
    #[arg(
        long,
        env = "REDSTREAM_TLS_CLIENT_CERT",
        global = true,
        hide_env_values = true,
        value_name = "PATH"
    )]
    pub tls_client_cert: Option<std::path::PathBuf>,
    /// A PEM file with the client certificate's private key; needs --tls-client-cert.
    #[arg(
        long,
        env = "REDSTREAM_TLS_CLIENT_KEY",
        global = true,
        hide_env_values = true,
        value_name = "PATH"
    )]
    pub tls_client_key: Option<std::path::PathBuf>,
    /// Print JSON for scripts instead of tables for people.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log filter for stderr (`RUST_LOG` wins when set), e.g. `warn` or `redstream=debug`.
    #[arg(long, default_value = "warn", global = true)]
    pub log: String,
    /// Where `url` came from; set by [`Cli::parse_with_sources`], `Default` otherwise.
    #[arg(skip)]
    pub url_source: Source,
    /// Where `prefix` came from; set by [`Cli::parse_with_sources`], `Default` otherwise.
    #[arg(skip)]
    pub prefix_source: Source,
}

impl std::fmt::Debug for GlobalArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalArgs")
            .field("url", &redstream_core::redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("key_layout", &self.key_layout)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("tls_ca_cert", &self.tls_ca_cert)
            .field("tls_client_cert", &self.tls_client_cert)
            .field("tls_client_key", &self.tls_client_key)
            .field("json", &self.json)
            .field("log", &self.log)
            .field("url_source", &self.url_source)
            .field("prefix_source", &self.prefix_source)
            .finish()
    }
}

/// A connection timeout from the command line: humane text, 100 ms to 5 min.
fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 5s, 500ms)"))?;
    let range = std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(300);
    if !range.contains(&timeout) {
        return Err("must be from 100ms to 5m".to_owned());
    }
    Ok(timeout)
}

/// Where a global option's value came from. `redstream sink` needs to know: its Redis URL is
/// the configuration file's `url` unless `--url` is given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Source {
    /// The built-in default (or not known).
    #[default]
    Default,
    /// An environment variable (`REDIS_URL`, `REDSTREAM_PREFIX`).
    Environment,
    /// The command line.
    CommandLine,
}

impl Cli {
    /// Parses the process's arguments like `Cli::parse`, and records where `--url` and
    /// `--prefix` came from. Exits with clap's message on a bad command line.
    pub fn parse_with_sources() -> Self {
        Self::parse_from_with_sources(std::env::args_os())
    }

    /// [`parse_with_sources`](Self::parse_with_sources) over the given arguments.
    pub fn parse_from_with_sources<I, T>(args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let matches = Self::command()
            .try_get_matches_from(&args)
            .unwrap_or_else(|err| exit_on(&err, &args));
        let mut cli = Self::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
        cli.global.url_source = source_of(&matches, "url");
        cli.global.prefix_source = source_of(&matches, "prefix");
        cli
    }
}

/// Exits on a command line clap refused, or on `--help`/`--version`: clap's own output and exit
/// code, except that an error is one line of JSON on stderr (`{"error":{"kind":"usage",...}}`,
/// still exit code 2) when `--json` is among the arguments.
fn exit_on(err: &clap::Error, args: &[std::ffi::OsString]) -> ! {
    let json = args
        .iter()
        .skip(1)
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "--json");
    if json && err.use_stderr() {
        let rendered = err.render().to_string();
        let message = rendered
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ");
        crate::error::report(true, "usage", message);
        std::process::exit(err.exit_code());
    }
    err.exit()
}

/// The most specific source of a global option: the parent's matches or the subcommand's
/// (a global option may be written before or after the subcommand).
fn source_of(matches: &clap::ArgMatches, id: &str) -> Source {
    let mut best = Source::Default;
    let mut current = Some(matches);
    while let Some(m) = current {
        let source = match m.try_get_raw(id).ok().and_then(|_| m.value_source(id)) {
            Some(clap::parser::ValueSource::CommandLine) => Source::CommandLine,
            Some(clap::parser::ValueSource::EnvVariable) => Source::Environment,
            _ => Source::Default,
        };
        best = match (best, source) {
            (Source::CommandLine, _) | (_, Source::CommandLine) => Source::CommandLine,
            (Source::Environment, _) | (_, Source::Environment) => Source::Environment,
            _ => Source::Default,
        };
        current = m.subcommand().map(|(_, sub)| sub);
    }
    best
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the live dashboard and its JSON, WebSocket and Prometheus endpoints.
    Serve(crate::serve::ServeArgs),
    /// Write JSON lines from a file or stdin into a stream, resuming where a stopped run ended.
    Sink(crate::sink::SinkArgs),
    /// Operations on streams, groups, dead letters and state.
    #[command(flatten)]
    Ops(crate::commands::OpsCommand),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell, e.g.
    /// `redstream completions bash > /etc/bash_completion.d/redstream`.
    Completions(crate::commands::completions::CompletionsArgs),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_of_global_options_are_recorded() {
        let parse = |args: &[&str]| {
            Cli::parse_from_with_sources(std::iter::once("redstream").chain(args.iter().copied()))
        };
        let given = parse(&["--url", "redis://h:1", "sink", "-c", "x.yaml"]);
        assert_eq!(given.global.url_source, Source::CommandLine);
        assert_eq!(given.global.prefix_source, Source::Default);
        let after = parse(&[
            "sink",
            "-c",
            "x.yaml",
            "--url",
            "redis://h:1",
            "--prefix",
            "p",
        ]);
        assert_eq!(after.global.url, "redis://h:1");
        assert_eq!(after.global.url_source, Source::CommandLine);
        assert_eq!(after.global.prefix_source, Source::CommandLine);
    }

    #[test]
    fn debug_masks_the_password_of_the_url() {
        let cli = Cli::parse_from_with_sources([
            "redstream",
            "--url",
            "redis://app:s3cr3t-pw/x@redis.internal:6380/2",
            "sink",
            "-c",
            "x.yaml",
        ]);
        let shown = format!("{cli:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("redis://app:***@redis.internal:6380/2"),
            "{shown}"
        );
    }
}
