//! Redrives: dead letters written back to the stream they came from, once.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`RedriveReport`], `redrive_all`, `redrive_ids`, `redrive_range`, the ids they take |
//! | `plan.rs` | what each dead letter becomes: its target stream, its fields, its record field |
//! | `script.rs` | the redrive script, the redrive record of the cluster layout, and running them |
//! | `slots.rs` | the redrive on a Redis Cluster: one command at a time across slots, and its repeat rule |

mod plan;
mod script;
mod slots;

use std::collections::HashSet;

use redis::Value;
use redstream_core::{Error, ErrorKind, Result};

use super::PAGE;
use crate::commands::Traffic;
use crate::reply;
use crate::transport::RedisTransport;

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedriveReport {
    /// Dead letters published again and removed from the dead-letter stream.
    pub redriven: usize,
    /// Dead letters removed without being published: repeats of a dead letter of the same
    /// entry (same `stream` and `entry_id`) that was redriven already. Only the cluster layout
    /// writes such repeats (see the module docs) and keeps the record that finds them.
    pub repeats: usize,
    /// Dead letters left in the dead-letter stream, with the reason.
    pub skipped: Vec<SkippedDeadLetter>,
}

/// A dead letter a redrive left where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedDeadLetter {
    /// Its id in the dead-letter stream (or the id asked for, when there is no such entry).
    pub id: String,
    /// Why it was not redriven.
    pub reason: String,
}

impl RedriveReport {
    fn skip(&mut self, id: impl Into<String>, reason: impl Into<String>) {
        let (id, reason) = (id.into(), reason.into());
        tracing::warn!(dlq_id = %id, reason = %reason, "dead letter not redriven");
        self.skipped.push(SkippedDeadLetter { id, reason });
    }
}

/// Checks an id given to a redrive: `<ms>-<seq>`, or for ranges also `<ms>`, `-`, `+` and an
/// exclusive `(` prefix.
fn check_id(id: &str, range: bool) -> Result<()> {
    let valid = |id: &str| {
        let (ms, seq) = id
            .split_once('-')
            .map_or((id, None), |(ms, seq)| (ms, Some(seq)));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        digits(ms) && seq.is_none_or(digits) && (range || seq.is_some())
    };
    let ok = if range {
        matches!(id, "-" | "+") || valid(id.strip_prefix('(').unwrap_or(id))
    } else {
        valid(id)
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(
            format!("dead-letter entry id {id:?}"),
            if range {
                "expected a stream id such as 1700000000000-0, a millisecond time, - or +, \
                 optionally prefixed with ( for an exclusive bound"
            } else {
                "expected a stream entry id such as 1700000000000-0"
            },
        ))
    }
}

impl RedisTransport {
    /// Redrives every dead letter present when it starts (dead letters added meanwhile are left
    /// for the next call).
    pub async fn redrive_all(&self) -> Result<RedriveReport> {
        self.redrive_range("-", "+").await
    }

    /// Redrives the dead letters with these ids. Ids that are not in the dead-letter stream are
    /// reported as skipped.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an id that is not a stream entry id (nothing is redriven
    /// then); a Redis error if reading or writing fails.
    pub async fn redrive_ids(&self, ids: &[&str]) -> Result<RedriveReport> {
        for id in ids {
            check_id(id, false)?;
        }
        let dlq = self.inner.names.dlq();
        let mut report = RedriveReport::default();
        // The record fields of the dead letters handled in this call: a second dead letter of
        // the same entry is a repeat.
        let mut seen = HashSet::new();
        for chunk in ids.chunks(PAGE) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("XRANGE").arg(&dlq).arg(*id).arg(*id);
            }
            let replies: Vec<Value> = self
                .commands(Traffic::Write)
                .pipe("XRANGE", &dlq, &pipe)
                .await?;
            let mut found = Vec::with_capacity(chunk.len());
            for (id, reply) in chunk.iter().zip(replies) {
                let entries = reply::entries(reply).map_err(|reason| {
                    Error::backend(ErrorKind::Unexpected, "XRANGE", dlq.clone(), reason)
                })?;
                match entries.into_iter().next() {
                    Some(entry) => found.push(entry),
                    None => report.skip(*id, "not in the dead-letter stream"),
                }
            }
            self.redrive_entries(found, &mut report, &mut seen).await?;
        }
        Ok(report)
    }

    /// Redrives the dead letters with ids from `start` to `end`, inclusive (`XRANGE` syntax: `-`
    /// and `+` for the ends of the stream, a `(` prefix for an exclusive bound). With `+`, the end
    /// is the last dead letter present when the call starts.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a malformed bound; a Redis error if reading or writing
    /// fails (batches done before the error stay done).
    pub async fn redrive_range(&self, start: &str, end: &str) -> Result<RedriveReport> {
        check_id(start, true)?;
        check_id(end, true)?;
        let dlq = self.inner.names.dlq();
        let mut report = RedriveReport::default();
        // The record fields of the dead letters handled in this call: a second dead letter of
        // the same entry is a repeat.
        let mut seen = HashSet::new();
        let end = if end == "+" {
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(&dlq).arg("+").arg("-").arg("COUNT").arg(1);
            let reply: Value = self
                .commands(Traffic::Write)
                .query("XREVRANGE", &dlq, &cmd)
                .await?;
            let last = reply::entries(reply).map_err(|reason| {
                Error::backend(ErrorKind::Unexpected, "XREVRANGE", dlq.clone(), reason)
            })?;
            match last.into_iter().next() {
                Some(entry) => entry.id,
                None => return Ok(report),
            }
        } else {
            end.to_owned()
        };
        let mut from = start.to_owned();
        loop {
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&dlq).arg(&from).arg(&end).arg("COUNT").arg(PAGE);
            let reply: Value = self
                .commands(Traffic::Write)
                .query("XRANGE", &dlq, &cmd)
                .await?;
            let entries = reply::entries(reply).map_err(|reason| {
                Error::backend(ErrorKind::Unexpected, "XRANGE", dlq.clone(), reason)
            })?;
            let Some(last) = entries.last().map(|e| e.id.clone()) else {
                break;
            };
            let full = entries.len() == PAGE;
            self.redrive_entries(entries, &mut report, &mut seen)
                .await?;
            if !full || last == end {
                break;
            }
            from = format!("({last}");
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redstream_core::ErrorKind;

    #[test]
    fn ids_are_checked() {
        for ok in ["1-0", "1700000000000-12"] {
            check_id(ok, false).unwrap();
            check_id(ok, true).unwrap();
        }
        for ok in ["-", "+", "(1-0", "1700000000000"] {
            check_id(ok, true).unwrap();
        }
        for bad in ["", "-", "+", "1", "a-1", "1-", "1-0 ", "(1-0"] {
            assert_eq!(
                check_id(bad, false).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
        for bad in ["", "x", "((1-0", "1-a"] {
            assert!(check_id(bad, true).is_err(), "{bad:?}");
        }
    }
}
