//! Checks shared by the admin methods: the key's type, entry ids.

use redstream_core::{Error, ErrorKind, Result};

use crate::commands::Commands;
use crate::inspect::parse_id;

/// Fails unless `stream` exists and is a stream.
pub(super) async fn require_stream(reads: &Commands, stream: &str) -> Result<()> {
    match key_type(reads, stream).await?.as_str() {
        "stream" => Ok(()),
        "none" => Err(Error::not_found(
            format!("stream {stream:?}"),
            "the key does not exist (list_streams() shows the streams)",
        )),
        other => Err(wrong_type(stream, other)),
    }
}

/// Fails if `stream` exists and is not a stream.
pub(super) async fn require_stream_or_missing(reads: &Commands, stream: &str) -> Result<()> {
    match key_type(reads, stream).await?.as_str() {
        "stream" | "none" => Ok(()),
        other => Err(wrong_type(stream, other)),
    }
}

pub(super) async fn key_type(reads: &Commands, key: &str) -> Result<String> {
    let mut cmd = redis::cmd("TYPE");
    cmd.arg(key);
    reads.query("TYPE", key, &cmd).await
}

pub(super) fn wrong_type(stream: &str, actual: &str) -> Error {
    Error::backend(
        ErrorKind::WrongType,
        "TYPE",
        stream,
        format!("the key holds a {actual}, not a stream"),
    )
}

pub(super) fn check_entry_id(what: &'static str, id: &str) -> Result<()> {
    match parse_id(id) {
        Some(_) => Ok(()),
        None => Err(Error::invalid_input(
            format!("{what} {id:?}"),
            "expected a stream entry id such as 1700000000000-0",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_are_checked() {
        check_entry_id("id", "1700000000000-0").unwrap();
        for bad in [
            "",
            "1",
            "1-",
            "-1",
            "a-1",
            "1-0 ",
            "(1-0",
            "99999999999999999999-0",
        ] {
            assert!(check_entry_id("id", bad).is_err(), "{bad:?}");
        }
    }
}
