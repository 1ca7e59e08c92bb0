//! The error every command returns. Its Display is what the user reads after `error: `, so it
//! says what went wrong and, where it can, what to do; it never contains a password.

/// A failed command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// An error from the redstream crates (connection, auth, Redis, validation...).
    #[error(transparent)]
    Redstream(#[from] redstream_core::Error),
    /// The command line or its input is wrong: names the argument and what is expected.
    #[error("{0}")]
    Usage(String),
    /// Something the command looked for does not exist (a stream, a group, an entry).
    #[error("{0}")]
    NotFound(String),
    /// Reading or writing a local file or the terminal failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. `reading events.jsonl`.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl CliError {
    /// A usage error with the given message.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    /// What kind of failure this is, as `--json` names it in `{"error": {"kind": ...}}`: the
    /// redstream crates' `ErrorKind` (`connection`, `auth`, `not_found`, `invalid_input`...),
    /// or `usage` for a wrong command line or input, `not_found`, and `io` for a local file or
    /// the terminal.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Redstream(err) => err.kind().as_str(),
            Self::Usage(_) => "usage",
            Self::NotFound(_) => "not_found",
            Self::Io { .. } => "io",
        }
    }

    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Writes a failure to stderr: `error: <message>`, or with `--json` one line of JSON,
/// `{"error":{"kind":"...","message":"..."}}`. A failure to write it is ignored (there is nowhere
/// left to report it); `eprintln!` would panic when stderr is a closed pipe.
pub(crate) fn report(json: bool, kind: &str, message: &str) {
    use std::io::Write as _;
    let text = if json {
        serde_json::json!({ "error": { "kind": kind, "message": message } }).to_string()
    } else {
        format!("error: {message}")
    };
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// The result of a command.
pub type CliResult<T> = Result<T, CliError>;
