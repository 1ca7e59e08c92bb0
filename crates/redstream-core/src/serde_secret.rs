//! Serde for secret fields of configuration files (`sentinel_password`): a value of the wrong
//! type is refused without being shown.
//!
//! Serde's own error for a field that wants a string and gets `sentinel_password: 20240611`
//! is ``invalid type: integer `20240611`, expected a string``: the secret, in a message that
//! ends up in logs and on terminals. Here the same mistake says what was wrong and not the
//! value. Use it with `#[serde(deserialize_with = "redstream_core::serde_secret::deserialize")]`
//! on an `Option<String>`.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// What a refused value says instead of itself.
const NOT_SHOWN: &str = "invalid type: expected a string (the value is a secret and is not shown; \
     quote it in the file)";

/// Reads an optional secret string: absent or `null` is `None`; anything but a string is an
/// error that does not show the value.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_option(Secret)
}

struct Secret;

impl<'de> Visitor<'de> for Secret {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(E::custom(NOT_SHOWN))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_SHOWN))
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Self::Value, E> {
        Err(E::custom(NOT_SHOWN))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_SHOWN))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Self::Value, E> {
        Err(E::custom(NOT_SHOWN))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(E::custom(NOT_SHOWN))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
        Err(E::custom(NOT_SHOWN))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(NOT_SHOWN))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(NOT_SHOWN))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Holder {
        #[serde(default, deserialize_with = "super::deserialize")]
        secret: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    struct Outer {
        #[serde(flatten)]
        inner: Holder,
    }

    #[test]
    fn strings_are_read_and_nothing_else_is_shown() {
        let read = |json: &str| serde_json::from_str::<Holder>(json).map(|h| h.secret);
        assert_eq!(
            read(r#"{"secret":"s3cret"}"#).unwrap().as_deref(),
            Some("s3cret")
        );
        assert_eq!(read(r#"{"secret":null}"#).unwrap(), None);
        assert_eq!(read("{}").unwrap(), None);
        for value in [
            "20240611",
            "-20240611",
            "20240611.5",
            "true",
            "[20240611]",
            r#"{"a":20240611}"#,
        ] {
            let err = read(&format!(r#"{{"secret":{value}}}"#))
                .unwrap_err()
                .to_string();
            assert!(!err.contains("20240611") && !err.contains("true"), "{err}");
            assert!(err.contains("not shown"), "{err}");
        }
        // Flattened, as every crate's config embeds the connection fields: serde buffers the
        // value first, and it must still not be shown.
        let err = serde_json::from_str::<Outer>(r#"{"secret":20240611}"#)
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("20240611") && err.contains("not shown"),
            "{err}"
        );
        let ok = serde_json::from_str::<Outer>(r#"{"secret":"s3cret"}"#).unwrap();
        assert_eq!(ok.inner.secret.as_deref(), Some("s3cret"));
    }
}
