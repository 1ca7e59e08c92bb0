//! Serde for [`Duration`] fields of configuration files, written as humane text.
//!
//! `"250ms"`, `"30s"`, `"1m 30s"` are accepted; bare numbers are refused because they do not
//! say their unit. Use it with `#[serde(with = "redstream_core::serde_duration")]`.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

/// Writes `d` as humane text, e.g. `"1m 30s"`.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// Reads humane text such as `"250ms"` or `"30s"`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = <Cow<'de, str>>::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|err| {
        D::Error::custom(format!(
            "invalid duration {text:?}: {err} (write e.g. \"250ms\", \"30s\" or \"1m 30s\")"
        ))
    })
}

/// The same for `Option<Duration>` fields: absent or `null` is `None`. Use it with
/// `#[serde(default, with = "redstream_core::serde_duration::option")]`.
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some(d)` as humane text and `None` as nothing (a unit).
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads humane text, or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Humane(#[serde(with = "super")] Duration);
        Ok(Option::<Humane>::deserialize(d)?.map(|Humane(d)| d))
    }
}
