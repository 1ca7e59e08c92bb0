//! Checks shared by the inspection methods: names, ids and counts, the `TYPE` check before a
//! stream command, and the errors they give.

use redis::{Cmd, RedisResult, Value};
use redstream_core::{Error, ErrorKind, Result};

use crate::commands::Traffic;
use crate::keys::validate_stream_name;
use crate::reply::text;
use crate::transport::RedisTransport;

/// What a key holds, from the reply of `TYPE`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum KeyType {
    Stream,
    Missing,
    Other(String),
}

impl KeyType {
    pub(super) fn of(op: &'static str, key: &str, reply: RedisResult<Value>) -> Result<Self> {
        let reply = reply.map_err(|err| Error::from_redis(op, key.to_owned(), err))?;
        match text(&reply).as_deref() {
            Some("stream") => Ok(Self::Stream),
            Some("none") => Ok(Self::Missing),
            Some(other) => Ok(Self::Other(other.to_owned())),
            None => Err(unexpected(op, key, "a reply that is not text")),
        }
    }

    /// Nothing for a stream; a clear error otherwise.
    pub(super) fn require_stream(self, op: &'static str, stream: &str) -> Result<()> {
        match self {
            Self::Stream => Ok(()),
            Self::Missing => Err(Error::not_found(
                format!("stream {stream:?}"),
                "the key does not exist (list_streams() shows the streams)",
            )),
            Self::Other(other) => Err(Error::backend(
                ErrorKind::WrongType,
                op,
                stream,
                format!("the key holds a {other}, not a stream"),
            )),
        }
    }
}

pub(crate) fn no_such_group(stream: &str, group: &str) -> Error {
    Error::not_found(
        format!("consumer group {group:?} of stream {stream:?}"),
        "the server answered NOGROUP; stream_info() lists the stream's groups",
    )
}

pub(super) fn unexpected(op: &'static str, target: &str, what: &str) -> Error {
    Error::backend(
        ErrorKind::Unexpected,
        op,
        target,
        format!("unexpected reply from the server: {what}"),
    )
}

pub(crate) fn check_non_empty(what: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid_input(what, "must not be empty"));
    }
    Ok(())
}

/// Refuses 0; caps at [`RedisTransport::MAX_INSPECT_COUNT`].
pub(super) fn bounded_count(count: usize) -> Result<usize> {
    if count == 0 {
        return Err(Error::invalid_input(
            "count 0",
            format!(
                "must be between 1 and {} (larger counts are capped)",
                RedisTransport::MAX_INSPECT_COUNT
            ),
        ));
    }
    Ok(count.min(RedisTransport::MAX_INSPECT_COUNT))
}

/// Accepts `-`, `+`, `ms`, `ms-seq`, and `(ms[-seq])`.
pub(super) fn check_id(what: &'static str, id: &str) -> Result<()> {
    if id == "-" || id == "+" {
        return Ok(());
    }
    let number = |s: &str| s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok();
    let bare = id.strip_prefix('(').unwrap_or(id);
    let valid = match bare.split_once('-') {
        Some((ms, seq)) => number(ms) && number(seq),
        None => number(bare),
    };
    if !valid {
        return Err(Error::invalid_input(
            format!("{what} {id:?}"),
            "expected -, +, or a stream entry id like 1700000000000-0 or 1700000000000, \
             optionally after ( to exclude it",
        ));
    }
    Ok(())
}

/// `<ms>-<seq>`, both decimal numbers that fit a u64, as a pair that sorts like the ids.
pub(crate) fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    Some((number(ms)?, number(seq)?))
}

impl RedisTransport {
    /// Refuses names that cannot name a stream.
    pub(super) fn check_stream_name(&self, stream: &str) -> Result<()> {
        validate_stream_name(stream)
    }

    /// Runs `TYPE stream` and `cmd` in one round trip, and turns a missing stream, a key of
    /// another type and a missing group (`NOGROUP`) into clear errors.
    pub(super) async fn query_stream(
        &self,
        op: &'static str,
        stream: &str,
        group: Option<&str>,
        cmd: Cmd,
    ) -> Result<Value> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("TYPE").arg(stream);
        pipe.add_command(cmd);
        let replies: Vec<RedisResult<Value>> =
            self.commands(Traffic::Read).pipe(op, stream, &pipe).await?;
        let [key_type, reply]: [RedisResult<Value>; 2] = replies
            .try_into()
            .map_err(|_| unexpected(op, stream, "a pipeline reply of the wrong length"))?;
        KeyType::of("TYPE", stream, key_type)?.require_stream(op, stream)?;
        reply.map_err(|err| match group {
            Some(group) if err.code() == Some("NOGROUP") => no_such_group(stream, group),
            _ => Error::from_redis(op, stream.to_owned(), err),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        for good in [
            "-",
            "+",
            "0",
            "0-0",
            "1700000000000-5",
            "(1700000000000-5",
            "(17",
        ] {
            check_id("id", good).unwrap();
        }
        for bad in [
            "", "(", "(-", "(+", "abc", "1-", "-1", "1-2-3", "+1", "1-+2", " 1",
        ] {
            assert_eq!(
                check_id("id", bad).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn counts_are_bounded() {
        assert!(bounded_count(0).is_err());
        assert_eq!(bounded_count(1).unwrap(), 1);
        assert_eq!(
            bounded_count(1_000_000).unwrap(),
            RedisTransport::MAX_INSPECT_COUNT
        );
    }
}
