//! Checkpoints: a processor's position in its input and a snapshot of its state, saved and
//! loaded as one consistent pair.
//!
//! [`StateStore::save_checkpoint`](crate::StateStore::save_checkpoint)`(name, position,
//! snapshot)` writes, all or nothing (one script that checks the user's permissions before it
//! writes anything, with the guarantees of `redstream_core::atomic`):
//!
//! - every `(key, value)` of the snapshot to its state key, as [`put`](crate::StateStore::put)
//!   would (so `get(key)` reads it afterwards), and
//! - the checkpoint record (`myapp#checkpoint:<name>`, or `{myapp}#checkpoint:<name>` in the
//!   cluster layout, see [`keys`](crate::keys)), a hash holding the position, the time of
//!   saving and a copy of the snapshot.
//!
//! [`load_checkpoint`](crate::StateStore::load_checkpoint) reads the record with one
//! `HGETALL`: the position and the snapshot as they were saved together, even if the state
//! keys changed since. A processor that restarts loads its last checkpoint, takes the snapshot
//! as its state and resumes reading after the position; [`restore_checkpoint`] also writes the
//! snapshot back to the state keys.
//!
//! The record's fields are `format` (`1`), `position` (text), `saved_at_ms` (milliseconds
//! since the Unix epoch) and one `state:{key}` per snapshot key holding the value's JSON.
//! Checkpoint records never expire.
//!
//! [`restore_checkpoint`]: crate::StateStore::restore_checkpoint

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redstream_core::{Error, ErrorKind, Result};
use serde::de::DeserializeOwned;

use crate::value::decode;

/// A checkpoint as loaded: the position and the snapshot saved with it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Checkpoint<V> {
    /// The checkpoint's name.
    pub name: String,
    /// Where the processor was: a stream entry id, a source offset... as given when saved.
    pub position: String,
    /// When it was saved (the saving process's clock, to the millisecond).
    pub saved_at: SystemTime,
    /// The snapshot: the state keys and their values when the checkpoint was saved.
    pub state: BTreeMap<String, V>,
}

/// The record of a checkpoint with its snapshot still encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawCheckpoint {
    pub(crate) position: String,
    pub(crate) saved_at_ms: u64,
    pub(crate) state: Vec<(String, Vec<u8>)>,
}

const FORMAT: &str = "format";
const FORMAT_VERSION: &[u8] = b"1";
const POSITION: &str = "position";
const SAVED_AT: &str = "saved_at_ms";
const STATE: &str = "state:";

impl RawCheckpoint {
    /// The fields of the record hash.
    pub(crate) fn to_fields(&self) -> Vec<(String, Vec<u8>)> {
        let mut fields = Vec::with_capacity(3 + self.state.len());
        fields.push((FORMAT.to_owned(), FORMAT_VERSION.to_vec()));
        fields.push((POSITION.to_owned(), self.position.clone().into_bytes()));
        fields.push((
            SAVED_AT.to_owned(),
            self.saved_at_ms.to_string().into_bytes(),
        ));
        for (key, value) in &self.state {
            fields.push((format!("{STATE}{key}"), value.clone()));
        }
        fields
    }

    /// Reads a record hash; `None` when it is empty (the checkpoint does not exist).
    pub(crate) fn from_fields(
        target: &str,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Option<Self>> {
        if fields.is_empty() {
            return Ok(None);
        }
        let bad = |reason: String| {
            Error::backend(
                ErrorKind::Decode,
                "load checkpoint",
                target.to_owned(),
                format!("not a checkpoint record of this crate: {reason}"),
            )
        };
        let mut format = None;
        let mut position = None;
        let mut saved_at_ms = None;
        let mut state = Vec::new();
        for (field, value) in fields {
            let field = String::from_utf8(field)
                .map_err(|_| bad("a field name is not UTF-8".to_owned()))?;
            if field == FORMAT {
                format = Some(value);
            } else if field == POSITION {
                position = Some(
                    String::from_utf8(value)
                        .map_err(|_| bad("the position is not UTF-8".to_owned()))?,
                );
            } else if field == SAVED_AT {
                let text = String::from_utf8_lossy(&value).into_owned();
                saved_at_ms = Some(
                    text.parse::<u64>()
                        .map_err(|_| bad(format!("saved_at_ms is {text:?}")))?,
                );
            } else if let Some(key) = field.strip_prefix(STATE) {
                state.push((key.to_owned(), value));
            }
        }
        match format.as_deref() {
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(bad(format!(
                    "format {:?}; this version reads format 1",
                    String::from_utf8_lossy(other)
                )));
            }
            None => return Err(bad("no format field".to_owned())),
        }
        state.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Some(Self {
            position: position.ok_or_else(|| bad("no position field".to_owned()))?,
            saved_at_ms: saved_at_ms.ok_or_else(|| bad("no saved_at_ms field".to_owned()))?,
            state,
        }))
    }

    /// Decodes the snapshot's values; `target` names a state key in errors.
    pub(crate) fn decode<V: DeserializeOwned>(
        self,
        name: &str,
        target: impl Fn(&str) -> String,
    ) -> Result<Checkpoint<V>> {
        let mut state = BTreeMap::new();
        for (key, value) in self.state {
            let decoded = decode(
                || format!("{} in checkpoint {name:?}", target(&key)),
                &value,
            )?;
            state.insert(key, decoded);
        }
        Ok(Checkpoint {
            name: name.to_owned(),
            position: self.position,
            saved_at: UNIX_EPOCH + Duration::from_millis(self.saved_at_ms),
            state,
        })
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A checkpoint name: non-empty, without whitespace or control characters.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_input(
            "checkpoint name \"\"",
            "must not be empty",
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid_input(
            format!("checkpoint name {name:?}"),
            format!("must not contain {c:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawCheckpoint {
        RawCheckpoint {
            position: "1700000000000-3".into(),
            saved_at_ms: 1_700_000_000_123,
            state: vec![
                ("a".into(), b"1".to_vec()),
                ("b:c".into(), b"\"x\"".to_vec()),
            ],
        }
    }

    fn as_bytes(fields: Vec<(String, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
        fields
            .into_iter()
            .map(|(k, v)| (k.into_bytes(), v))
            .collect()
    }

    #[test]
    fn records_round_trip() {
        let fields = as_bytes(raw().to_fields());
        assert_eq!(
            RawCheckpoint::from_fields("t", fields).unwrap(),
            Some(raw())
        );
        assert_eq!(RawCheckpoint::from_fields("t", Vec::new()).unwrap(), None);
        let checkpoint: Checkpoint<serde_json::Value> =
            raw().decode("c", |k| format!("key {k:?}")).unwrap();
        assert_eq!(checkpoint.position, "1700000000000-3");
        assert_eq!(checkpoint.state["a"], 1);
        assert_eq!(
            checkpoint.saved_at,
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
        );
    }

    #[test]
    fn foreign_records_are_decode_errors() {
        let mut fields = as_bytes(raw().to_fields());
        fields.retain(|(k, _)| k != b"format");
        let err = RawCheckpoint::from_fields("the record", fields).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
        assert!(err.to_string().contains("the record"), "{err}");
        let mut fields = as_bytes(raw().to_fields());
        fields[0].1 = b"2".to_vec();
        let err = RawCheckpoint::from_fields("t", fields).unwrap_err();
        assert!(err.to_string().contains("format \"2\""), "{err}");
    }

    #[test]
    fn names_are_checked() {
        check_name("orders-consumer:partition-3").unwrap();
        for bad in ["", "a b", "a\nb"] {
            assert_eq!(
                check_name(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
    }
}
