//! [`ServerVersion`]: which server a binary is (Redis or Valkey) and its version, read from
//! `--version` once per binary and announced once in the test log.

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};

/// Which server a binary is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerName {
    /// Redis (`Redis server v=7.0.15 ...`).
    Redis,
    /// Valkey (`Valkey server v=8.0.1 ...`).
    Valkey,
    /// Something else that answers `--version` like them, by the first word of its answer.
    Other(String),
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis => f.write_str("Redis"),
            Self::Valkey => f.write_str("Valkey"),
            Self::Other(name) => f.write_str(name),
        }
    }
}

/// The name and version of a server binary, as its `--version` reports them.
///
/// Tests that depend on a server's features (Redis 8.2's stream additions, which Valkey does
/// not have) can ask before they start anything:
///
/// ```no_run
/// # fn demo() -> redstream_testkit::Result<()> {
/// use redstream_testkit::{ServerName, ServerVersion};
///
/// let version = ServerVersion::detect()?;
/// let has_xackdel = version.name == ServerName::Redis && version.at_least(8, 2);
/// # let _ = has_xackdel;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerVersion {
    /// Redis or Valkey.
    pub name: ServerName,
    /// `(major, minor, patch)`, e.g. `(7, 0, 15)`.
    pub version: (u32, u32, u32),
    /// The binary that was asked.
    pub binary: PathBuf,
}

impl ServerVersion {
    /// The version of the binary [`RedisServer::start`](crate::RedisServer::start) would run:
    /// `REDSTREAM_REDIS_SERVER`, else `redis-server` on `PATH`.
    ///
    /// # Errors
    ///
    /// [`Error::NotInstalled`] when there is no such binary, [`Error::Io`] when it cannot be
    /// run, [`Error::Unsupported`] when its answer cannot be read.
    pub fn detect() -> Result<Self> {
        match crate::server::find_binary(None)? {
            Some(binary) => Self::of_binary(&binary),
            None => Err(Error::NotInstalled {
                detail: format!(
                    "redis-server is not on PATH and {} is not set",
                    crate::server::BINARY_ENV
                ),
            }),
        }
    }

    /// Runs `binary --version` (once per binary and test process; later calls answer from
    /// memory) and reads the answer.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it cannot be run, [`Error::Unsupported`] when its answer cannot be
    /// read.
    pub fn of_binary(binary: &Path) -> Result<Self> {
        static KNOWN: Mutex<Option<HashMap<PathBuf, ServerVersion>>> = Mutex::new(None);
        let mut known = KNOWN.lock().unwrap_or_else(PoisonError::into_inner);
        let known = known.get_or_insert_with(HashMap::new);
        if let Some(version) = known.get(binary) {
            return Ok(version.clone());
        }
        let output = Command::new(binary)
            .arg("--version")
            .output()
            .map_err(|err| Error::io(format!("running {} --version", binary.display()), err))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let (name, version) = parse(&text).ok_or_else(|| {
            Error::Unsupported(format!(
                "cannot read the version of {} from {:?}",
                binary.display(),
                text.trim()
            ))
        })?;
        let version = Self {
            name,
            version,
            binary: binary.to_owned(),
        };
        // Written to the process's stderr directly, not through eprintln!, so that the test
        // harness does not capture it: the log of every test run names the server it ran on.
        let _ = writeln!(std::io::stderr(), "redstream-testkit: using {version}");
        known.insert(binary.to_owned(), version.clone());
        Ok(version)
    }

    /// Whether the version is `major.minor` or newer (whatever the server's name).
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.version.0, self.version.1) >= (major, minor)
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor, patch) = self.version;
        write!(
            f,
            "{} {major}.{minor}.{patch} ({})",
            self.name,
            self.binary.display()
        )
    }
}

/// Reads `Redis server v=7.0.15 sha=...` or `Valkey server v=8.0.1 sha=...`.
fn parse(text: &str) -> Option<(ServerName, (u32, u32, u32))> {
    let mut words = text.split_whitespace();
    let name = match words.next()? {
        "Redis" => ServerName::Redis,
        "Valkey" => ServerName::Valkey,
        other => ServerName::Other(other.to_owned()),
    };
    let number = words.find_map(|word| word.strip_prefix("v="))?;
    let mut parts = number.split('.').map(|part| {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((name, (major, minor, patch)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_and_valkey() {
        assert_eq!(
            parse("Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64"),
            Some((ServerName::Redis, (7, 0, 15)))
        );
        assert_eq!(
            parse("Valkey server v=9.1.2 sha=00000000:1 malloc=libc bits=64 build=1536"),
            Some((ServerName::Valkey, (9, 1, 2)))
        );
        assert_eq!(
            parse("KeyDB server v=6.3 sha=0"),
            Some((ServerName::Other("KeyDB".to_owned()), (6, 3, 0)))
        );
        assert_eq!(parse("usage: redis-server [options]"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn at_least_compares_major_then_minor() {
        let version = ServerVersion {
            name: ServerName::Redis,
            version: (7, 2, 4),
            binary: PathBuf::from("redis-server"),
        };
        assert!(version.at_least(7, 2));
        assert!(version.at_least(6, 9));
        assert!(!version.at_least(7, 4));
        assert!(!version.at_least(8, 0));
    }
}
