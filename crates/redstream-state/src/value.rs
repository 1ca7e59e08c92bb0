//! How values are stored: JSON text, and [`Value`], a seed-style dynamic value.
//!
//! Every value is stored as the UTF-8 JSON text of its `serde` serialization, in a Redis
//! string (or a hash field): `42` for an integer, `"token"` for a string, `{"id":7}` for a
//! struct. There is no header or version byte, so other clients read and write the same data
//! with any JSON library, and an integer's encoding is exactly the decimal text Redis's
//! `INCRBY` and `HINCRBY` work on: a counter written with `put(key, 41)` can be incremented,
//! and one made by `incr` can be read with `get::<i64>`.

use std::collections::BTreeMap;
use std::fmt;

use redstream_core::{Error, ErrorKind, Result};
use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A dynamic value, as seed 001's store holds: `store.put("counter", Value::Integer(42))`.
///
/// It is stored as plain JSON, like any other value: `Integer(42)` is `42`, `Number(1.5)` is
/// `1.5`, `String("a")` is `"a"`, `Null` is `null`, arrays and objects are JSON arrays and
/// objects. Reading it back gives the same variant: a JSON number without a fraction or
/// exponent that fits an `i64` is an `Integer`, any other number is a `Number`.
///
/// Non-finite numbers (`NaN`, infinities) have no JSON form: writing one fails with an
/// [`InvalidInput`](ErrorKind::InvalidInput) error rather than being stored as `null`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// No value (`null`).
    #[default]
    Null,
    /// A boolean.
    Boolean(bool),
    /// A whole number that fits an `i64`. Counters read back as this variant.
    Integer(i64),
    /// Any other number (finite).
    Number(f64),
    /// A string.
    String(String),
    /// A list of values.
    Array(Vec<Value>),
    /// Named values, in key order.
    Object(BTreeMap<String, Value>),
}

impl Value {
    /// The integer, for [`Value::Integer`].
    #[must_use]
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Self::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The number, for [`Value::Number`] and [`Value::Integer`] (converted).
    #[must_use]
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Self::Number(n) => Some(*n),
            Self::Integer(n) => Some(*n as f64),
            _ => None,
        }
    }

    /// The text, for [`Value::String`].
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, for [`Value::Boolean`].
    #[must_use]
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// Whether this is [`Value::Null`].
    #[must_use]
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::Null => serializer.serialize_unit(),
            Self::Boolean(b) => serializer.serialize_bool(*b),
            Self::Integer(n) => serializer.serialize_i64(*n),
            Self::Number(n) if n.is_finite() => serializer.serialize_f64(*n),
            Self::Number(n) => Err(serde::ser::Error::custom(format!(
                "the number {n} has no JSON form (only finite numbers can be stored)"
            ))),
            Self::String(s) => serializer.serialize_str(s),
            Self::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Self::Object(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> std::result::Result<Value, E> {
        Ok(Value::Boolean(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Value, E> {
        Ok(Value::Integer(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<Value, E> {
        Ok(i64::try_from(n).map_or(Value::Number(n as f64), Value::Integer))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> std::result::Result<Value, E> {
        Ok(Value::Number(n))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> std::result::Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut fields = BTreeMap::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            fields.insert(k, v);
        }
        Ok(Value::Object(fields))
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident $(as $via:ty)?),* $(,)?) => {
        $(
            impl From<$t> for Value {
                fn from(v: $t) -> Self {
                    Self::$variant(v $(as $via)?.into())
                }
            }
        )*
    };
}

value_from! {
    bool => Boolean,
    i64 => Integer,
    i32 => Integer,
    u32 => Integer,
    f64 => Number,
    String => String,
    &str => String,
    Vec<Value> => Array,
    BTreeMap<String, Value> => Object,
}

/// The JSON text of `value`; `target` names the key in the error (it is only called then:
/// naming a key allocates, and encoding is on every write's path).
pub(crate) fn encode<V: Serialize + ?Sized>(
    target: impl FnOnce() -> String,
    value: &V,
) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|err| {
        Error::invalid_input(
            format!("value for {}", target()),
            format!("cannot be encoded as JSON: {err}"),
        )
    })
}

/// Appends the JSON text of `value` (for `target`, named in the error) to `out`.
pub(crate) fn encode_into<V: Serialize + ?Sized>(
    target: impl FnOnce() -> String,
    value: &V,
    out: &mut Vec<u8>,
) -> Result<()> {
    serde_json::to_writer(out, value).map_err(|err| {
        Error::invalid_input(
            format!("value for {}", target()),
            format!("cannot be encoded as JSON: {err}"),
        )
    })
}

/// Reads the JSON text `bytes` stored under `target` as a `T`.
pub(crate) fn decode<T: DeserializeOwned>(
    target: impl FnOnce() -> String,
    bytes: &[u8],
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|err| {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned();
        let more = if bytes.len() > 64 { "..." } else { "" };
        Error::backend(
            ErrorKind::Decode,
            "decode",
            target(),
            format!(
                "the stored value {shown:?}{more} is not the JSON of a {}: {err}",
                std::any::type_name::<T>()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> String {
        "k".to_owned()
    }

    fn round_trip(value: &Value) -> Value {
        let bytes = encode(k, value).unwrap();
        decode(k, &bytes).unwrap()
    }

    #[test]
    fn values_are_plain_json() {
        let cases = [
            (Value::Integer(42), "42"),
            (Value::Number(1.5), "1.5"),
            (Value::Number(2.0), "2.0"),
            (Value::String("token".into()), "\"token\""),
            (Value::Boolean(true), "true"),
            (Value::Null, "null"),
            (
                Value::Array(vec![Value::Integer(1), Value::Null]),
                "[1,null]",
            ),
            (
                Value::Object(BTreeMap::from([("a".to_owned(), Value::Integer(1))])),
                "{\"a\":1}",
            ),
        ];
        for (value, json) in cases {
            assert_eq!(String::from_utf8(encode(k, &value).unwrap()).unwrap(), json);
            assert_eq!(round_trip(&value), value, "{json}");
        }
    }

    #[test]
    fn integers_and_numbers_keep_their_variant() {
        assert_eq!(decode::<Value>(k, b"7").unwrap(), Value::Integer(7));
        assert_eq!(decode::<Value>(k, b"-7").unwrap(), Value::Integer(-7));
        assert_eq!(decode::<Value>(k, b"7.0").unwrap(), Value::Number(7.0));
        assert_eq!(
            decode::<Value>(k, b"18446744073709551615").unwrap(),
            Value::Number(u64::MAX as f64)
        );
        // What INCRBY leaves behind reads as an integer of any integer type.
        assert_eq!(decode::<i64>(k, b"43").unwrap(), 43);
        assert_eq!(decode::<u8>(k, b"43").unwrap(), 43);
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        for n in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = encode(|| "key \"k\"".to_owned(), &Value::Number(n)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(err.to_string().contains("key \"k\""), "{err}");
        }
    }

    #[test]
    fn decode_errors_name_the_key_and_the_type() {
        let err = decode::<i64>(|| "key \"n\"".to_owned(), b"\"text\"").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
        let text = err.to_string();
        assert!(text.contains("key \"n\""), "{text}");
        assert!(text.contains("i64"), "{text}");
    }
}
