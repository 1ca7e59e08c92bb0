//! The batch script: a batch's `XADD`s and the `HSET` of its progress, all or nothing.
//!
//! A batch is one `EVALSHA` of the script in this crate's `src/batch.lua`, which first checks
//! everything, and only then writes:
//!
//! - that the user may run every command the script runs, with its keys and arguments
//!   (`redis.acl_check_cmd`): a refusal is a `NOPERM` naming the command and the key;
//! - that the stream is a stream and the progress key a hash, or that they do not exist
//!   (`TYPE`): otherwise a `WRONGTYPE` naming the key;
//! - what the progress key records (`HMGET`): when it already records this batch, the script
//!   writes nothing and says so; when it records something other than what the sink expected
//!   (an older attempt of a batch landed since the sink read it, another writer, or a server
//!   that lost its data), it writes nothing and answers what it found;
//! - and, before it starts, that the server is not out of memory and not a read-only replica:
//!   the script is declared with `#!lua` and no flags, so Redis refuses it as a whole (`OOM`,
//!   `READONLY`) rather than let it write part of a batch.
//!
//! A script runs with no other client's command in between, so the read of the progress and
//! the writes it decides on cannot be separated, on this connection or any other. If the server
//! refuses the `EVALSHA` itself (an ACL user without `+evalsha`; `NOSCRIPT` and then a user
//! without `+script|load`), nothing runs. `MULTI`/`EXEC` could not promise this: a refused
//! `MULTI` lets the queued commands run alone, and a command that fails inside `EXEC` does not
//! stop the others. This is `redstream_core::atomic`'s design, with the sink's progress check
//! added, which is why the sink has a script of its own.
//!
//! Both keys are declared as the script's keys, so on a Redis Cluster the server would refuse
//! (`CROSSSLOT`) a batch whose keys are in different slots; the progress key is named to share
//! its stream's slot ([`keys::progress_key`](crate::keys::progress_key)).

use std::sync::LazyLock;

use redis::{Cmd, Script, Value};
use redstream_core::SourcePosition;

use crate::sink::Progress;

/// The source of the script, `#!lua` line first.
const SOURCE: &str = include_str!("batch.lua");

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// The hash fields of the progress key.
pub(crate) const POSITION_FIELD: &str = "position";
pub(crate) const LAST_EVENT_FIELD: &str = "last_event_id";

/// One batch, as the script takes it.
pub(crate) struct Batch<'a> {
    pub(crate) stream: &'a str,
    /// `MAXLEN ~` bound, if trimming is on.
    pub(crate) max_len: Option<usize>,
    /// The events, each its wire-format JSON.
    pub(crate) events: &'a [String],
    /// With `durability`, the replicas and timeout (ms) of the `WAIT` sent after the script,
    /// whose permission the script checks with its own commands'.
    pub(crate) wait: Option<(u32, u64)>,
    /// With `exactly_once` on: the progress key and what the sink expects it to record.
    pub(crate) progress: Option<ProgressCheck<'a>>,
}

/// The progress part of a batch: where it is recorded and what is expected there.
pub(crate) struct ProgressCheck<'a> {
    pub(crate) key: &'a str,
    /// What the sink knows the key records (`None`: nothing).
    pub(crate) expected: Option<&'a Progress>,
    /// The batch's last event id and position, recorded with it.
    pub(crate) last_event_id: &'a str,
    pub(crate) position: Option<&'a SourcePosition>,
}

/// What a batch script did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The batch was written; the new entries' ids.
    Written(Vec<String>),
    /// The progress key already records this batch: nothing was written.
    Recorded,
    /// The progress key records something other than what the sink expected: nothing was
    /// written. What it records.
    Changed(Option<Progress>),
}

/// `EVALSHA` of the batch script for `batch`.
pub(crate) fn call(batch: &Batch<'_>) -> Cmd {
    // Sized up front: the events make most of the command, and appending them to buffers
    // that grow as they go would copy them again at every doubling.
    let events: usize = batch.events.iter().map(String::len).sum();
    let progress = batch.progress.as_ref().map_or(0, |progress| {
        let expected = progress.expected.map_or(0, |expected| {
            expected.last_event_id.len() + position_arg(expected.position.as_ref()).len()
        });
        progress.key.len()
            + expected
            + progress.last_event_id.len()
            + position_arg(progress.position).len()
    });
    // The name, the digest, the key count, the stream, 20 digits for each of MAXLEN, WAIT's
    // replicas and timeout, and the progress flag.
    let fixed = "EVALSHA".len() + SCRIPT.get_hash().len() + 1 + batch.stream.len() + 4 * 20;
    let mut cmd = Cmd::with_capacity(14 + batch.events.len(), fixed + progress + events);
    cmd.arg("EVALSHA").arg(SCRIPT.get_hash());
    match &batch.progress {
        Some(progress) => cmd.arg(2).arg(batch.stream).arg(progress.key),
        None => cmd.arg(1).arg(batch.stream),
    };
    match batch.max_len {
        Some(max) => cmd.arg(max),
        None => cmd.arg(""),
    };
    match batch.wait {
        Some((replicas, timeout_ms)) => cmd.arg(replicas).arg(timeout_ms),
        None => cmd.arg("").arg(""),
    };
    match &batch.progress {
        Some(progress) => {
            match progress.expected {
                Some(expected) => cmd
                    .arg("1")
                    .arg(&expected.last_event_id)
                    .arg(position_arg(expected.position.as_ref())),
                None => cmd.arg("0").arg("").arg(""),
            };
            cmd.arg(progress.last_event_id)
                .arg(position_arg(progress.position));
        }
        None => {
            cmd.arg("0").arg("").arg("").arg("").arg("");
        }
    }
    for json in batch.events {
        cmd.arg(json);
    }
    cmd
}

/// `SCRIPT LOAD` of the batch script, for a server that answered `NOSCRIPT` (after a restart,
/// a failover or `SCRIPT FLUSH`).
pub(crate) fn load() -> Cmd {
    let mut cmd = redis::cmd("SCRIPT");
    cmd.arg("LOAD").arg(SOURCE);
    cmd
}

/// How a position is stored: its text, or empty for none.
pub(crate) fn position_arg(position: Option<&SourcePosition>) -> &str {
    position.map_or("", SourcePosition::as_str)
}

/// Reads the script's reply; the error says what was unexpected about it.
pub(crate) fn parse(value: Value) -> Result<Reply, String> {
    let items: Vec<String> = redis::from_redis_value(value)
        .map_err(|err| format!("the batch script answered something other than strings: {err}"))?;
    let mut items = items.into_iter();
    let reply = match items.next().as_deref() {
        Some("written") => match (items.next(), items.next()) {
            // The ids, one string separated by spaces (entry ids hold digits and `-` only).
            (Some(ids), None) => {
                return Ok(Reply::Written(
                    ids.split_ascii_whitespace().map(str::to_owned).collect(),
                ));
            }
            other => return Err(format!("the batch script answered written with {other:?}")),
        },
        Some("recorded") => Reply::Recorded,
        Some("changed") => {
            let (last, position, present) = (items.next(), items.next(), items.next());
            match (last, position, present.as_deref()) {
                (Some(_), Some(_), Some("0")) => Reply::Changed(None),
                (Some(last_event_id), Some(position), Some("1")) => {
                    Reply::Changed(Some(Progress {
                        position: (!position.is_empty()).then(|| SourcePosition::new(position)),
                        last_event_id,
                    }))
                }
                other => return Err(format!("the batch script answered changed with {other:?}")),
            }
        }
        other => return Err(format!("the batch script answered {other:?}")),
    };
    match items.next() {
        None => Ok(reply),
        Some(extra) => Err(format!(
            "the batch script answered {reply:?} and then {extra:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Value {
        Value::Array(
            items
                .iter()
                .map(|s| Value::BulkString(s.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn replies_are_read_and_odd_ones_refused() {
        assert_eq!(
            parse(strings(&["written", "1-0 1-1"])),
            Ok(Reply::Written(vec!["1-0".into(), "1-1".into()]))
        );
        assert_eq!(parse(strings(&["written", ""])), Ok(Reply::Written(vec![])));
        assert_eq!(parse(strings(&["recorded"])), Ok(Reply::Recorded));
        assert_eq!(
            parse(strings(&["changed", "", "", "0"])),
            Ok(Reply::Changed(None))
        );
        assert_eq!(
            parse(strings(&["changed", "e1", "7", "1"])),
            Ok(Reply::Changed(Some(Progress {
                position: Some(SourcePosition::new("7")),
                last_event_id: "e1".into(),
            })))
        );
        assert_eq!(
            parse(strings(&["changed", "e1", "", "1"])),
            Ok(Reply::Changed(Some(Progress {
                position: None,
                last_event_id: "e1".into(),
            })))
        );
        for odd in [
            strings(&[]),
            strings(&["nope"]),
            strings(&["recorded", "x"]),
            strings(&["written"]),
            strings(&["written", "1-0", "1-1"]),
            strings(&["changed", "e1"]),
            Value::Int(1),
            Value::Nil,
        ] {
            assert!(parse(odd.clone()).is_err(), "{odd:?}");
        }
    }

    #[test]
    fn the_script_declares_itself_with_no_flags() {
        // `#!lua` with no flags: Redis refuses it whole when out of memory or on a replica.
        assert_eq!(SOURCE.lines().next(), Some("#!lua"));
    }
}
