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
