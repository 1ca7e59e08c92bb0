//! Embedding the connection fields in a crate's config, flat, with unknown fields refused.
//!
//! Every config that reaches Redis embeds [`ConnectionOptions`] (when its URL is its own) or
//! [`ConnectionSettings`] (when the URL lives elsewhere) as a field, flattened, so that a
//! file stays flat:
//!
//! ```yaml
//! id: orders-redis          # the crate's own fields
//! stream: orders.events
//! url: redis://cache:6379   # the embedded connection fields
//! response_timeout: 2s
//! ```
//!
//! serde's `deny_unknown_fields` does not work together with `flatten` (serde hands a
//! flattened struct only the fields it knows and silently drops the rest), so the embedding
//! field is read with [`deserialize`], which takes every field the crate's own struct did not,
//! hands the connection's to the embedded struct and refuses any other with serde's
//! `unknown field` message, listing the crate's fields and the connection's. An [`Embedding`]
//! says what the config has besides: its own fields (for that message), old names of
//! connection fields a file may still use (the sink's `uri` for `url`; giving both names is
//! refused), and fields that are gone, refused with a hint (the transport's `sentinel:`
//! section).
//!
//! ```
//! use redstream_core::connection::{embed::{self, Embedding}, ConnectionOptions};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(default)] // no deny_unknown_fields: `connection` refuses unknown fields
//! struct MyConfig {
//!     stream: String,
//!     #[serde(flatten, deserialize_with = "connection")]
//!     connection: ConnectionOptions,
//! }
//! # impl Default for MyConfig {
//! #     fn default() -> Self { Self { stream: "s".into(), connection: Default::default() } }
//! # }
//!
//! const EMBEDDING: Embedding = Embedding::new(&["stream"]).with_renamed(&[("uri", "url")]);
//!
//! fn connection<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ConnectionOptions, D::Error> {
//!     embed::deserialize(d, &EMBEDDING)
//! }
//!
//! let config: MyConfig = serde_json::from_str(r#"{"stream": "s", "uri": "redis://h"}"#).unwrap();
//! assert_eq!(config.connection.url, "redis://h");
//! let err = serde_json::from_str::<MyConfig>(r#"{"strem": "s"}"#).err().unwrap();
//! assert!(err.to_string().starts_with("unknown field `strem`, expected one of `stream`, `url`"));
//! ```
//!
//! # Error paths
//!
//! Errors in a flattened field are raised after serde has left the field's key, so a
//! path-tracking reader (`serde_path_to_error`) reports them at the embedding struct. To keep
//! the path, an error in a connection field starts with ``in `field`: `` (``in `tls`:
//! unknown field `ca_file`, ...``), and an unknown field's error with serde's
//! ``unknown field `name` ``; [`error_path`] turns both back into a path.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{ConnectionOptions, ConnectionSettings};

/// The structs [`deserialize`] embeds: [`ConnectionOptions`] and [`ConnectionSettings`].
pub trait Embeddable: sealed::Sealed {
    /// The names of the struct's fields in files.
    const FIELDS: &'static [&'static str];
}

impl Embeddable for ConnectionOptions {
    const FIELDS: &'static [&'static str] = ConnectionOptions::FIELDS;
}

impl Embeddable for ConnectionSettings {
    const FIELDS: &'static [&'static str] = ConnectionSettings::FIELDS;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ConnectionOptions {}
    impl Sealed for super::ConnectionSettings {}
}

/// What a config embedding the connection fields has besides them.
#[derive(Debug, Clone, Copy)]
pub struct Embedding {
    own_fields: &'static [&'static str],
    renamed: &'static [(&'static str, &'static str)],
    removed: &'static [(&'static str, &'static str)],
}

impl Embedding {
    /// A config with these fields of its own (for the message of an unknown field).
    #[must_use]
    pub const fn new(own_fields: &'static [&'static str]) -> Self {
        Self {
            own_fields,
            renamed: &[],
            removed: &[],
        }
    }

    /// `(old, new)` pairs: a file may give connection field `new` under its old name `old`
    /// (a warning is logged). Giving both names is an error naming both.
    #[must_use]
    pub const fn with_renamed(mut self, renamed: &'static [(&'static str, &'static str)]) -> Self {
        self.renamed = renamed;
        self
    }

    /// `(field, hint)` pairs: fields earlier versions had, refused with a hint saying what
    /// replaced them.
    #[must_use]
    pub const fn with_removed(mut self, removed: &'static [(&'static str, &'static str)]) -> Self {
        self.removed = removed;
        self
    }
}

/// Reads the embedded connection fields of a config: use it as the `deserialize_with` of a
/// `#[serde(flatten)]` field of type [`ConnectionOptions`] or [`ConnectionSettings`], through a
/// function of the config that gives its [`Embedding`].
///
/// # Errors
///
/// ``unknown field `x`, expected one of ...`` (the embedding struct's fields, then the
/// connection's) for a field neither knows, ``unknown field `x`: `` and the hint for a removed
/// one; both names of a renamed field; and the embedded struct's own errors, prefixed with
/// ``in `field`: ``.
pub fn deserialize<'de, D, T>(deserializer: D, embedding: &Embedding) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Embeddable,
{
    deserializer.deserialize_map(EmbeddedVisitor {
        embedding: *embedding,
        marker: PhantomData,
    })
}

/// The path of a config error that [`deserialize`] raised, relative to the embedding
/// struct, and the error without its ``in `field`: `` prefix: ``("tls.ca_file", "unknown field
/// `ca_file`, ...")`` for ``in `tls`: unknown field `ca_file`, ...``; `("strem", ...)` for an
/// unknown field `strem`. The path is empty for other errors.
#[must_use]
pub fn error_path(message: &str) -> (String, &str) {
    let mut path = Vec::new();
    let mut rest = message;
    while let Some((field, tail)) = rest
        .strip_prefix("in `")
        .and_then(|tail| tail.split_once("`: "))
    {
        path.push(field);
        rest = tail;
    }
    if let Some((field, _)) = rest
        .strip_prefix("unknown field `")
        .and_then(|tail| tail.split_once('`'))
    {
        path.push(field);
    }
    (path.join("."), rest)
}

struct EmbeddedVisitor<T> {
    embedding: Embedding,
    marker: PhantomData<T>,
}

impl<'de, T> Visitor<'de> for EmbeddedVisitor<T>
where
    T: Deserialize<'de> + Embeddable,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of configuration fields")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        let mut fields = Fields {
            map,
            embedding: self.embedding,
            known: T::FIELDS,
            seen: Vec::new(),
            current: String::new(),
        };
        T::deserialize(de::value::MapAccessDeserializer::new(&mut fields))
    }
}

/// The fields the embedding struct left, as a map of only the embedded struct's fields.
struct Fields<A> {
    map: A,
    embedding: Embedding,
    known: &'static [&'static str],
    /// The embedded fields given so far: (name in the struct, name in the file).
    seen: Vec<(&'static str, String)>,
    /// The field whose value is read next, as the file names it.
    current: String,
}

impl<A> Fields<A> {
    fn unknown<E: de::Error>(&self, key: &str) -> E {
        if let Some((_, hint)) = self.embedding.removed.iter().find(|(name, _)| *name == key) {
            return E::custom(format_args!("unknown field `{key}`: {hint}"));
        }
        let expected: Vec<String> = self
            .embedding
            .own_fields
            .iter()
            .chain(self.known)
            .map(|name| format!("`{name}`"))
            .collect();
        E::custom(format_args!(
            "unknown field `{key}`, expected one of {}",
            expected.join(", ")
        ))
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Fields<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let Some(key) = self.map.next_key::<String>()? else {
            return Ok(None);
        };
        let name = match self.embedding.renamed.iter().find(|(old, _)| *old == key) {
            Some(&(_, new)) => new,
            None => match self.known.iter().find(|name| **name == key) {
                Some(name) => name,
                None => return Err(self.unknown(&key)),
            },
        };
        if let Some((_, earlier)) = self.seen.iter().find(|(seen, _)| *seen == name) {
            if *earlier == key {
                return Err(de::Error::custom(format_args!(
                    "in `{key}`: duplicate field `{key}`"
                )));
            }
            let old = if key == name {
                earlier.as_str()
            } else {
                key.as_str()
            };
            return Err(de::Error::custom(format_args!(
                "in `{old}`: `{old}` is the old name of `{name}`, and both are given: give it \
                 once, as `{name}`"
            )));
        }
        if key != name {
            tracing::warn!(
                "config field `{key}` is deprecated: it is the old name of `{name}`, which it \
                 sets; call it `{name}`"
            );
        }
        self.seen.push((name, key.clone()));
        self.current = key;
        seed.deserialize(name.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map
            .next_value_seed(seed)
            .map_err(|err| de::Error::custom(format_args!("in `{}`: {err}", self.current)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Config {
        stream: String,
        #[serde(flatten, deserialize_with = "connection")]
        connection: ConnectionOptions,
    }

    const EMBEDDING: Embedding = Embedding::new(&["stream"])
        .with_renamed(&[("uri", "url"), ("send_timeout", "response_timeout")])
        .with_removed(&[("sentinel", "its fields are top-level fields now")]);

    fn connection<'de, D: Deserializer<'de>>(d: D) -> Result<ConnectionOptions, D::Error> {
        deserialize(d, &EMBEDDING)
    }

    fn parse(json: &str) -> Result<Config, String> {
        serde_json::from_str(json).map_err(|err| err.to_string())
    }

    /// The field lists are the ones serde reads and writes.
    #[test]
    fn the_field_lists_are_the_structs_fields() {
        let keys = |value: serde_json::Value| -> BTreeSet<String> {
            value.as_object().unwrap().keys().cloned().collect()
        };
        let options = keys(serde_json::to_value(ConnectionOptions::default()).unwrap());
        let listed: BTreeSet<String> = ConnectionOptions::FIELDS
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(options, listed);
        let settings = keys(serde_json::to_value(ConnectionSettings::default()).unwrap());
        let listed: BTreeSet<String> = ConnectionSettings::FIELDS
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(settings, listed);
        assert_eq!(&ConnectionOptions::FIELDS[1..], ConnectionSettings::FIELDS);
    }

    #[test]
    fn flat_fields_old_names_and_unknown_fields() {
        let config = parse(
            r#"{"stream":"s","url":"redis-sentinel://s1","connect_timeout":"1s",
                "response_timeout":"2s","tls":{},"master_name":"m",
                "sentinel_username":"u","sentinel_password":"p"}"#,
        )
        .unwrap();
        assert_eq!(config.stream, "s");
        assert_eq!(
            config.connection,
            ConnectionOptions::new("redis-sentinel://s1")
                .with_connect_timeout(Duration::from_secs(1))
                .with_response_timeout(Duration::from_secs(2))
                .with_master_name("m")
                .with_sentinel_username("u")
                .with_sentinel_password("p")
        );
        let old = parse(r#"{"uri":"redis://h","send_timeout":"3s"}"#).unwrap();
        assert_eq!(old.connection.url, "redis://h");
        assert_eq!(old.connection.response_timeout, Duration::from_secs(3));
        let defaults = parse("{}").unwrap();
        assert_eq!(defaults.connection, ConnectionOptions::default());

        for (json, wanted) in [
            (
                r#"{"strem":"s"}"#,
                "unknown field `strem`, expected one of `stream`, `url`, `connect_timeout`",
            ),
            (
                r#"{"url":"redis://a","uri":"redis://b"}"#,
                "`uri` is the old name of `url`, and both are given: give it once, as `url`",
            ),
            (
                r#"{"send_timeout":"1s","response_timeout":"2s"}"#,
                "`send_timeout` is the old name of `response_timeout`",
            ),
            (
                r#"{"url":"redis://a","url":"redis://b"}"#,
                "duplicate field `url`",
            ),
            (
                r#"{"tls":{"ca_file":"x"}}"#,
                "in `tls`: unknown field `ca_file`",
            ),
            (r#"{"send_timeout":5}"#, "in `send_timeout`: invalid type"),
            (
                r#"{"sentinel":{}}"#,
                "unknown field `sentinel`: its fields are top-level fields now",
            ),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(wanted), "{json}: {err}");
        }
    }

    #[test]
    fn error_paths() {
        assert_eq!(
            error_path("in `tls`: unknown field `ca_file`, expected one of"),
            (
                "tls.ca_file".to_owned(),
                "unknown field `ca_file`, expected one of"
            )
        );
        assert_eq!(
            error_path("unknown field `strem`, expected"),
            ("strem".to_owned(), "unknown field `strem`, expected")
        );
        assert_eq!(
            error_path("in `connect_timeout`: invalid duration"),
            ("connect_timeout".to_owned(), "invalid duration")
        );
        assert_eq!(
            error_path("something else"),
            (String::new(), "something else")
        );
    }
}
